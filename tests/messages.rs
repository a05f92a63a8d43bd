//! Scheduled messages through the pipeline: rows written by plain SQL are
//! published at their time, never early, once, byte for byte with their
//! headers and expiration; an expired one is marked, not published; a cancel
//! or a move that commits before the claim is honoured, and one that races
//! with delivery is either honoured or the message is delivered once, never
//! both; a message for a missing exchange or a full queue does not break
//! the others.

pub mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::schedule::{Reminder, start_daemon, wait_for};
use common::{Received, TestBroker, TestConsumer, TestDb, WAIT};
use futures_util::future::join_all;
use lapin::types::{AMQPValue, ShortString};
use notification_scheduler::daemon::RunningDaemon;
use uuid::Uuid;

/// A scheduled message as written.
#[derive(Debug, Clone)]
struct Written {
    id: Uuid,
    payload: String,
    at: DateTime<Utc>,
}

/// Writes one message per offset (milliseconds from the database's now) to
/// `routing_key`, with `payload` written as is.
async fn write(
    client: &tokio_postgres::Client,
    routing_key: &str,
    payload: &str,
    offsets_ms: &[i64],
) -> Vec<Written> {
    let rows = client
        .query(
            "INSERT INTO scheduled_message (routing_key, payload, deliver_at) \
             SELECT $1, $2::text::json, now() + o * interval '1 ms' FROM unnest($3::bigint[]) AS o \
             RETURNING id, payload::text, deliver_at",
            &[&routing_key, &payload, &offsets_ms],
        )
        .await
        .expect("insert scheduled messages");
    rows.iter()
        .map(|row| Written {
            id: row.get(0),
            payload: row.get(1),
            at: row.get(2),
        })
        .collect()
}

/// Asserts each received message is one written, not early, byte for byte.
fn assert_delivered(received: &[Received], written: &[Written]) {
    let by_id: HashMap<String, &Written> = written.iter().map(|w| (w.id.to_string(), w)).collect();
    let mut seen = HashSet::new();
    for message in received {
        let expected = by_id
            .get(&message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            seen.insert(&message.message_id),
            "delivered twice: {message:?}"
        );
        assert!(
            message.received_at >= expected.at,
            "received {} before its time {}",
            message.received_at,
            expected.at
        );
        assert_eq!(
            String::from_utf8_lossy(&message.raw_body),
            expected.payload,
            "the payload unchanged"
        );
    }
}

async fn state_counts(client: &tokio_postgres::Client) -> HashMap<String, i64> {
    client
        .query(
            "SELECT state, count(*) FROM scheduled_message GROUP BY state",
            &[],
        )
        .await
        .expect("count states")
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test]
async fn messages_written_by_sql_are_delivered_at_their_time_byte_for_byte_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    // Whitespace, key order, escapes and a number beyond f64 precision: only
    // a body kept as text survives this unchanged.
    let payload = r#"{ "z": 1, "a" : ["\u00e9", 12345678901234567890123], "nested": {"k": null} }"#;
    let mut written = write(&client, "scheduled.plain", payload, &[1_200, 1_400]).await;
    let with_extras: Written = {
        let row = client
            .query_one(
                "INSERT INTO scheduled_message \
                     (exchange, routing_key, payload, headers, deliver_at, expires_at) \
                 VALUES ($1, 'scheduled.extras', '[1, 2, 3]', \
                         '{\"tenant\": \"eu-1\", \"attempt\": 3, \"ratio\": 0.25, \"urgent\": true}', \
                         now() + interval '1600 ms', now() + interval '61600 ms') \
                 RETURNING id, payload::text, deliver_at",
                &[&broker.exchange],
            )
            .await
            .expect("insert a message with headers");
        Written {
            id: row.get(0),
            payload: row.get(1),
            at: row.get(2),
        }
    };
    written.push(with_extras.clone());

    let received = consumer.take(3).await;
    assert_delivered(&received, &written);
    consumer.assert_quiet(Duration::from_millis(300)).await;

    for message in &received {
        let properties = &message.properties;
        assert_eq!(properties.delivery_mode(), &Some(2), "persistent");
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
    }
    let extras = received
        .iter()
        .find(|m| m.message_id == with_extras.id.to_string())
        .expect("the message with headers");
    assert_eq!(extras.text_header("tenant").as_deref(), Some("eu-1"));
    assert_eq!(extras.header("attempt"), Some(&AMQPValue::LongLongInt(3)));
    assert_eq!(extras.header("ratio"), Some(&AMQPValue::Double(0.25)));
    assert_eq!(extras.header("urgent"), Some(&AMQPValue::Boolean(true)));
    let expiration: u64 = extras
        .expiration
        .as_deref()
        .expect("an expiration")
        .parse()
        .expect("milliseconds");
    assert!(
        (55_000..=60_000).contains(&expiration),
        "about the minute left until expires_at: {expiration}"
    );
    let plain = received
        .iter()
        .find(|m| m.message_id != with_extras.id.to_string())
        .unwrap();
    assert_eq!(plain.expiration, None, "no expires_at, no expiration");

    let recorded = client
        .query(
            "SELECT state, attempts, outcome, sent_at >= deliver_at FROM scheduled_message",
            &[],
        )
        .await
        .unwrap();
    for row in recorded {
        assert_eq!(row.get::<_, String>(0), "sent");
        assert_eq!(row.get::<_, i32>(1), 1);
        assert_eq!(row.get::<_, String>(2), "published");
        assert!(row.get::<_, bool>(3));
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_message_due_after_its_expiry_is_marked_expired_not_published() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    let expired = client
        .query_one(
            "INSERT INTO scheduled_message (routing_key, payload, deliver_at, expires_at) \
             VALUES ('scheduled.late', '{}', now() - interval '2 s', now() - interval '1 s') \
             RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get::<_, Uuid>(0);
    let live = write(&client, "scheduled.late", "{\"live\": true}", &[-500]).await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let received = consumer.take(1).await;
    assert_delivered(&received, &live);
    consumer.assert_quiet(Duration::from_millis(300)).await;
    let row = client
        .query_one(
            "SELECT state, outcome, attempts, sent_at IS NOT NULL FROM scheduled_message WHERE id = $1",
            &[&expired],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "expired");
    assert_eq!(row.get::<_, String>(1), "expired");
    assert_eq!(row.get::<_, i32>(2), 0, "never sent to the broker");
    assert!(row.get::<_, bool>(3));
    daemon.shutdown().await;
}

#[tokio::test]
async fn cancels_and_moves_that_commit_before_the_claim_are_honoured() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let cancelled = write(&client, "scheduled.cancel", "1", &[1_000]).await;
    let later = write(&client, "scheduled.move", "2", &[1_000]).await;
    let sooner = write(&client, "scheduled.move", "3", &[3_600_000]).await;
    client
        .execute(
            "UPDATE scheduled_message SET state = 'cancelled' WHERE id = $1",
            &[&cancelled[0].id],
        )
        .await
        .unwrap();
    let new_times = client
        .query(
            "UPDATE scheduled_message \
                SET deliver_at = now() + CASE WHEN id = $1 THEN interval '1800 ms' ELSE interval '600 ms' END \
              WHERE id = ANY (ARRAY[$1, $2]::uuid[]) RETURNING id, payload::text, deliver_at",
            &[&later[0].id, &sooner[0].id],
        )
        .await
        .unwrap();
    let moved: Vec<Written> = new_times
        .iter()
        .map(|row| Written {
            id: row.get(0),
            payload: row.get(1),
            at: row.get(2),
        })
        .collect();
    // Moved an hour earlier, only the notification can wake the daemon for it.
    let received = consumer.take(2).await;
    assert_delivered(&received, &moved);
    assert_eq!(
        received[0].message_id,
        sooner[0].id.to_string(),
        "the message moved earlier goes first"
    );
    consumer.assert_quiet(Duration::from_millis(500)).await;
    assert_eq!(state_counts(&client).await.get("cancelled"), Some(&1));
    daemon.shutdown().await;
}

/// Runs `statement` (with one uuid parameter) for each id over `connections`
/// connections at once; returns the ids for which it changed a row.
async fn race(db: &TestDb, statement: &str, ids: &[Uuid], connections: usize) -> HashSet<Uuid> {
    let mut clients = Vec::new();
    for _ in 0..connections {
        clients.push(db.client().await);
    }
    let chunks: Vec<Vec<Uuid>> = ids
        .chunks(ids.len().div_ceil(connections))
        .map(<[Uuid]>::to_vec)
        .collect();
    let changed = join_all(
        clients
            .iter()
            .zip(chunks)
            .map(|(client, chunk)| async move {
                let statement = client.prepare(statement).await.expect("prepare");
                let mut changed = Vec::new();
                for id in chunk {
                    if client.execute(&statement, &[&id]).await.expect("race") == 1 {
                        changed.push(id);
                    }
                }
                changed
            }),
    )
    .await;
    changed.into_iter().flatten().collect()
}

/// Takes messages until none arrives for a while; fails on a duplicate.
async fn take_all(
    consumer: &mut common::TestConsumer,
    expected: usize,
) -> HashMap<String, Received> {
    let mut received = HashMap::new();
    while received.len() < expected {
        let Some(message) = consumer.next_within(Duration::from_secs(3)).await else {
            break;
        };
        let id = message.message_id.clone();
        assert!(
            received.insert(id, message).is_none(),
            "a message delivered twice"
        );
    }
    consumer.assert_quiet(Duration::from_millis(500)).await;
    received
}

#[tokio::test]
async fn cancels_racing_with_delivery_are_honoured_or_the_message_is_delivered_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let written = write(&client, "scheduled.race", "{}", &vec![700; 2_000]).await;
    let ids: Vec<Uuid> = written.iter().map(|w| w.id).collect();
    // Start cancelling just before the messages come due, so that some
    // cancels commit first and others meet claimed rows.
    tokio::time::sleep(Duration::from_millis(650)).await;
    let cancelled = race(
        &db,
        "UPDATE scheduled_message SET state = 'cancelled' WHERE id = $1 AND state = 'pending'",
        &ids,
        4,
    )
    .await;
    let received = take_all(&mut consumer, ids.len() - cancelled.len()).await;
    for id in &ids {
        let delivered = received.contains_key(&id.to_string());
        assert!(
            delivered != cancelled.contains(id),
            "message {id}: delivered {delivered}, reported cancelled {}",
            cancelled.contains(id)
        );
    }
    assert_delivered(&received.into_values().collect::<Vec<_>>(), &written);
    let states = state_counts(&client).await;
    assert_eq!(
        states.get("cancelled").copied().unwrap_or(0),
        cancelled.len() as i64
    );
    assert_eq!(
        states.get("sent").copied().unwrap_or(0),
        (ids.len() - cancelled.len()) as i64
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn moves_racing_with_delivery_deliver_each_message_once_never_before_its_time() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let written = write(&client, "scheduled.move", "{}", &vec![700; 2_000]).await;
    let ids: Vec<Uuid> = written.iter().map(|w| w.id).collect();
    tokio::time::sleep(Duration::from_millis(650)).await;
    let moved = race(
        &db,
        "UPDATE scheduled_message SET deliver_at = deliver_at + interval '1 s' \
          WHERE id = $1 AND state = 'pending'",
        &ids,
        4,
    )
    .await;
    let received = take_all(&mut consumer, ids.len()).await;
    assert_eq!(received.len(), ids.len(), "every message delivered once");
    for w in &written {
        let message = &received[&w.id.to_string()];
        let due = if moved.contains(&w.id) {
            w.at + chrono::Duration::seconds(1)
        } else {
            w.at
        };
        assert!(
            message.received_at >= due,
            "message {} received {} before its time {due}",
            w.id,
            message.received_at
        );
    }
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_message_for_a_missing_exchange_waits_for_a_retry_and_the_others_go_out_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    let missing = format!("missing.{}", Uuid::new_v4().simple());
    let stuck: Uuid = client
        .query_one(
            "INSERT INTO scheduled_message (exchange, routing_key, payload, deliver_at) \
             VALUES ($1, 'scheduled.lost', '{}', now() - interval '1 s') RETURNING id",
            &[&missing],
        )
        .await
        .unwrap()
        .get(0);
    let others = write(&client, "scheduled.fine", "{}", &vec![-500; 50]).await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    // Publishing to a missing exchange would close the channel under the
    // other messages of its batch, and they would be published again.
    let received = take_all(&mut consumer, others.len()).await;
    assert_eq!(received.len(), others.len());
    assert_delivered(&received.into_values().collect::<Vec<_>>(), &others);
    wait_for("the stuck message counted as attempted", WAIT, || async {
        let row = client
            .query_one(
                "SELECT state, attempts, last_error, next_attempt_at > now() \
                   FROM scheduled_message WHERE id = $1",
                &[&stuck],
            )
            .await
            .unwrap();
        row.get::<_, String>(0) == "pending"
            && row.get::<_, i32>(1) >= 1
            && row.get::<_, Option<String>>(2).is_some_and(|error| {
                error.contains(&format!("exchange '{missing}' does not exist"))
            })
            && row.get::<_, Option<bool>>(3) == Some(true)
    })
    .await;
    daemon.shutdown().await;
}

/// A task that ends if the daemon's broker session is ever down: replacing
/// it shows as a moment without it.
fn watch_broker_session(daemon: &RunningDaemon) -> tokio::task::JoinHandle<()> {
    let readiness = daemon.readiness.clone();
    tokio::spawn(async move {
        while readiness.report().broker.ready {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    })
}

/// Refused messages retried within a second or two: four attempts, 100 ms
/// doubling to 400 ms apart.
const QUICK_RETRIES: &[&str] = &[
    "--retry-base",
    "100ms",
    "--retry-max",
    "400ms",
    "--max-attempts",
    "4",
];

/// Waits until every message of `ids` is dead-lettered after the four
/// attempts of [`QUICK_RETRIES`]; returns the last error of each, in order.
async fn dead_lettered(client: &tokio_postgres::Client, ids: &[Uuid]) -> Vec<String> {
    let expected = i64::try_from(ids.len()).expect("a few ids");
    wait_for("the refused messages dead-lettered", WAIT, || async {
        client
            .query_one(
                "SELECT count(*) = $2 FROM scheduled_message \
                  WHERE id = ANY($1) AND state = 'dead_lettered' AND attempts = 4",
                &[&ids, &expected],
            )
            .await
            .unwrap()
            .get(0)
    })
    .await;
    client
        .query(
            "SELECT last_error FROM scheduled_message m \
               JOIN unnest($1::uuid[]) WITH ORDINALITY AS i(id, n) USING (id) ORDER BY n",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Takes the reminders and messages due beside a refused message, and
/// nothing else, and asserts none came early.
async fn take_the_others(
    consumer: &mut TestConsumer,
    reminders: &[Reminder],
    messages: &[Written],
) {
    let received = consumer.take(reminders.len() + messages.len()).await;
    consumer.assert_quiet(Duration::from_millis(300)).await;
    let due: HashMap<String, DateTime<Utc>> = reminders
        .iter()
        .map(|r| (r.id.to_string(), r.at))
        .chain(messages.iter().map(|m| (m.id.to_string(), m.at)))
        .collect();
    for message in &received {
        let late = message.received_at - due[&message.message_id];
        assert!(
            late >= chrono::Duration::zero(),
            "{} was early",
            message.message_id
        );
    }
}

#[tokio::test]
async fn an_unroutable_message_is_retried_then_dead_lettered_while_the_rest_go_out_on_time() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, QUICK_RETRIES).await;
    let client = db.client().await;
    // No queue is bound for this key: the broker returns it on every attempt.
    let unroutable = write(&client, "unbound.nobody", "{}", &[0]).await[0].id;
    let reminders = common::schedule::schedule(&client, 3_600_000, &[300, 600, 900]).await;
    let messages = write(&client, "scheduled.meanwhile", "{}", &[450, 750]).await;
    dead_lettered(&client, &[unroutable]).await;
    take_the_others(&mut consumer, &reminders, &messages).await;
    let row = client
        .query_one(
            "SELECT attempts, last_error, outcome, dead_lettered_at IS NOT NULL, next_attempt_at \
               FROM scheduled_message WHERE id = $1",
            &[&unroutable],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, i32>(0), 4);
    assert!(
        row.get::<_, String>(1)
            .contains("no queue is bound for routing key 'unbound.nobody'")
    );
    assert_eq!(row.get::<_, String>(2), "dead_lettered");
    assert!(row.get::<_, bool>(3));
    assert_eq!(row.get::<_, Option<DateTime<Utc>>>(4), None);
    daemon.shutdown().await;
}

/// A queue at its length limit with `reject-publish` (here a limit of 0)
/// bound to `routing_key` on the test exchange; it lives as long as the
/// returned connection.
async fn full_queue(broker: &TestBroker, routing_key: &str) -> lapin::Connection {
    use lapin::options::{QueueBindOptions, QueueDeclareOptions};
    use lapin::types::FieldTable;
    let connection =
        lapin::Connection::connect(&broker.url, lapin::ConnectionProperties::default())
            .await
            .expect("connect to RabbitMQ");
    let channel = connection.create_channel().await.expect("a channel");
    let mut arguments = FieldTable::default();
    arguments.insert("x-max-length".into(), AMQPValue::LongLongInt(0));
    arguments.insert(
        "x-overflow".into(),
        AMQPValue::LongString("reject-publish".into()),
    );
    let queue = format!("full.{}", Uuid::new_v4().simple());
    channel
        .queue_declare(
            queue.as_str().into(),
            QueueDeclareOptions {
                exclusive: true,
                ..QueueDeclareOptions::default()
            },
            arguments,
        )
        .await
        .expect("declare the full queue");
    channel
        .queue_bind(
            queue.as_str().into(),
            broker.exchange.as_str().into(),
            routing_key.into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await
        .expect("bind the full queue");
    connection
}

#[tokio::test]
async fn a_full_queue_refusing_every_attempt_holds_up_nothing_else() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    // The consumer declares the exchange the full queue binds to.
    let mut consumer = broker.consumer().await;
    let full_key = format!("full.{}", Uuid::new_v4().simple());
    let _full = full_queue(&broker, &full_key).await;
    let daemon = start_daemon(&db, &broker, QUICK_RETRIES).await;
    let session_kept = watch_broker_session(&daemon);
    let client = db.client().await;
    // Due together, so their batches are refused whole; each attempt again.
    let refused = write(&client, &full_key, "{}", &[0, 0, 0]).await;
    let reminders = common::schedule::schedule(&client, 3_600_000, &[300, 900, 1_500]).await;
    let messages = write(&client, "scheduled.meanwhile", "{}", &[600, 1_200]).await;
    let refused_ids: Vec<Uuid> = refused.iter().map(|m| m.id).collect();
    let errors = dead_lettered(&client, &refused_ids).await;
    take_the_others(&mut consumer, &reminders, &messages).await;
    assert_eq!(errors, ["refused (nacked) by the broker"; 3]);
    assert!(
        !session_kept.is_finished(),
        "the broker session was replaced: every event waited for the reconnect"
    );
    session_kept.abort();
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_message_over_the_brokers_size_limit_is_refused_unpublished_and_holds_up_nothing_else() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let settings = [QUICK_RETRIES, &["--rabbitmq-max-message-bytes", "1024"]].concat();
    let daemon = start_daemon(&db, &broker, &settings).await;
    let session_kept = watch_broker_session(&daemon);
    let client = db.client().await;
    let large = format!("\"{}\"", "x".repeat(1_100));
    let oversized = write(&client, "scheduled.large", &large, &[0]).await[0].id;
    // At the limit: published.
    let at_limit = format!("\"{}\"", "y".repeat(1_022));
    let mut messages = write(&client, "scheduled.meanwhile", &at_limit, &[0]).await;
    let reminders = common::schedule::schedule(&client, 3_600_000, &[300, 900]).await;
    messages.extend(write(&client, "scheduled.meanwhile", "{}", &[600]).await);
    let errors = dead_lettered(&client, &[oversized]).await;
    take_the_others(&mut consumer, &reminders, &messages).await;
    assert_eq!(
        errors,
        ["a body of 1102 bytes is over RABBITMQ_MAX_MESSAGE_BYTES (1024)"]
    );
    assert!(
        !session_kept.is_finished(),
        "the broker session was replaced"
    );
    session_kept.abort();
    daemon.shutdown().await;
}
