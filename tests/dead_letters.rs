//! Dead letters: the `dead-letters` subcommand and the API list, retry and
//! discard them across kinds and name what they cannot find; a dead letter
//! retried once its queue is bound is delivered at once.

pub mod common;

use std::process::{Command, Output};

use common::api::{TOKEN, TestApi, json};
use common::process::BINARY;
use common::schedule::{schedule, start_daemon, wait_for};
use common::{TestBroker, TestDb, WAIT};
use notification_scheduler::broker::consumer::{QueueKind, ReminderConsumer};
use serde_json::json;
use uuid::Uuid;

/// Runs `notification-scheduler dead-letters ARGS` on `db`.
fn dead_letters(db: &TestDb, args: &[&str]) -> Output {
    Command::new(BINARY)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .arg("dead-letters")
        .args(args)
        .output()
        .expect("the binary runs")
}

fn stdout(output: &Output) -> String {
    String::from_utf8_lossy(&output.stdout).into_owned()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// A reminder and a scheduled message, dead-lettered as the daemon leaves them.
async fn two_dead_letters(client: &tokio_postgres::Client) -> (Uuid, Uuid) {
    let reminder = schedule(client, 3_600_000, &[-60_000]).await[0].id;
    client
        .execute(
            "UPDATE notification_schedule \
                SET attempts = 10, last_error = 'returned unroutable', \
                    dead_lettered_at = now() - interval '1 minute', outcome = 'dead_lettered' \
              WHERE id = $1",
            &[&reminder],
        )
        .await
        .unwrap();
    let message: Uuid = client
        .query_one(
            "INSERT INTO scheduled_message \
                 (routing_key, payload, deliver_at, state, attempts, last_error, dead_lettered_at, outcome) \
             VALUES ('nowhere', '{}', now() - interval '1 hour', 'dead_lettered', 10, \
                     'nacked', now(), 'dead_lettered') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    (reminder, message)
}

#[tokio::test]
async fn the_subcommand_lists_retries_and_discards_dead_letters_of_every_kind() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let (reminder, message) = two_dead_letters(&client).await;

    let listed = dead_letters(&db, &["list"]);
    assert!(listed.status.success(), "{}", stderr(&listed));
    let lines: Vec<String> = stdout(&listed).lines().map(str::to_owned).collect();
    assert_eq!(lines.len(), 2, "{lines:?}");
    assert!(
        lines[0].starts_with(&format!("reminder\t{reminder}\t")),
        "oldest first: {lines:?}"
    );
    assert!(lines[0].ends_with("\t10\treturned unroutable"));
    assert!(lines[1].starts_with(&format!("scheduled_message\t{message}\t")));

    let only = dead_letters(&db, &["list", "--kind", "scheduled_message"]);
    assert_eq!(stdout(&only).lines().count(), 1);
    let bad_kind = dead_letters(&db, &["list", "--kind", "reminders"]);
    assert_eq!(bad_kind.status.code(), Some(2));
    assert!(stderr(&bad_kind).contains("'reminders' is not a kind"));

    let unknown = Uuid::new_v4();
    let retried = dead_letters(&db, &["retry", &reminder.to_string(), &unknown.to_string()]);
    assert_eq!(
        retried.status.code(),
        Some(1),
        "one id is not a dead letter"
    );
    assert!(stderr(&retried).contains(&unknown.to_string()));
    assert_eq!(
        stdout(&retried).trim(),
        format!("retried\treminder\t{reminder}")
    );
    let row = client
        .query_one(
            "SELECT sent, dead_lettered_at IS NULL, attempts, outcome FROM notification_schedule WHERE id = $1",
            &[&reminder],
        )
        .await
        .unwrap();
    assert!(!row.get::<_, bool>(0));
    assert!(row.get::<_, bool>(1), "no longer a dead letter");
    assert_eq!(row.get::<_, i32>(2), 0, "a fresh count of attempts");
    assert_eq!(row.get::<_, Option<String>>(3), None);

    let discarded = dead_letters(&db, &["discard", &message.to_string()]);
    assert!(discarded.status.success(), "{}", stderr(&discarded));
    let row = client
        .query_one(
            "SELECT state, outcome, dead_lettered_at IS NULL FROM scheduled_message WHERE id = $1",
            &[&message],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "cancelled");
    assert_eq!(row.get::<_, String>(1), "discarded");
    assert!(row.get::<_, bool>(2));
    let empty = dead_letters(&db, &["list"]);
    assert_eq!(stdout(&empty), "");
}

#[tokio::test]
async fn a_dead_letter_retried_after_its_queue_is_bound_is_delivered_at_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let daemon = start_daemon(&db, &broker, &["--max-attempts", "1"]).await;
    let client = db.client().await;
    let routing_key = format!("late.{}", Uuid::new_v4().simple());
    let id: Uuid = client
        .query_one(
            "INSERT INTO scheduled_message (routing_key, payload, deliver_at) \
             VALUES ($1, '{\"late\": true}', now()) RETURNING id",
            &[&routing_key],
        )
        .await
        .unwrap()
        .get(0);
    wait_for("the message dead-lettered", WAIT, || async {
        client
            .query_one(
                "SELECT state = 'dead_lettered' FROM scheduled_message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    })
    .await;
    let mut consumer = ReminderConsumer::bind(
        &broker.url.parse().unwrap(),
        &broker.exchange,
        &[&routing_key],
        QueueKind::Temporary,
        10,
    )
    .await
    .expect("bind the late queue");
    let retried = dead_letters(&db, &["retry", "--all"]);
    assert!(retried.status.success(), "{}", stderr(&retried));
    // Only the trigger's notification wakes the daemon: nothing else is due.
    let message = tokio::time::timeout(WAIT, consumer.next())
        .await
        .expect("delivered after the retry")
        .expect("a message")
        .expect("a delivery");
    assert_eq!(message.message_id.as_deref(), Some(id.to_string().as_str()));
    assert_eq!(message.body, b"{\"late\": true}");
    wait_for("the retried message recorded as sent", WAIT, || async {
        client
            .query_one(
                "SELECT state = 'sent' AND attempts = 1 FROM scheduled_message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0)
    })
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn the_api_lists_retries_and_discards_dead_letters() {
    let db = TestDb::migrated().await;
    let client = db.client().await;
    let (reminder, message) = two_dead_letters(&client).await;
    let api = TestApi::start(&db, Some(TOKEN)).await;

    let (status, page) = json(api.get("/dead-letters?limit=1").await).await;
    assert_eq!(status, 200, "{page}");
    assert_eq!(page["dead_letters"][0]["kind"], "reminder");
    assert_eq!(page["dead_letters"][0]["id"], reminder.to_string());
    assert_eq!(page["dead_letters"][0]["attempts"], 10);
    assert_eq!(page["dead_letters"][0]["last_error"], "returned unroutable");
    let cursor = page["next_cursor"].as_str().expect("a second page");
    let (_, next) = json(api.get(&format!("/dead-letters?cursor={cursor}")).await).await;
    assert_eq!(next["dead_letters"][0]["id"], message.to_string());
    assert_eq!(next["next_cursor"], serde_json::Value::Null);
    let (status, error) = json(api.get("/dead-letters?kind=nope").await).await;
    assert_eq!((status, error["field"].as_str()), (400, Some("kind")));

    let (status, retried) = json(
        api.post_json(&format!("/dead-letters/{reminder}/retry"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{retried}");
    assert_eq!(retried["changed"][0]["kind"], "reminder");
    let (status, _) = json(
        api.post_json(&format!("/dead-letters/{reminder}/retry"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 404, "no longer a dead letter");
    let (status, discarded) = json(
        api.post_json(&format!("/dead-letters/{message}/discard"), &json!({}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{discarded}");
    let (_, state) = json(api.get(&format!("/messages/{message}")).await).await;
    assert_eq!(state["state"], "cancelled");

    two_dead_letters(&client).await;
    let (status, all) = json(
        api.post_json("/dead-letters/retry", &json!({"kind": "scheduled_message"}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{all}");
    assert_eq!(all["changed"].as_array().unwrap().len(), 1);
    let (_, left) = json(api.get("/dead-letters").await).await;
    assert_eq!(
        left["dead_letters"][0]["kind"], "reminder",
        "only the kind asked"
    );
}
