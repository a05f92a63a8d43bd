//! Every kind through the one pipeline: status transitions written by plain
//! SQL or through the games API are delivered at their time, never early,
//! once, and never skipped or expired however late; the API keeps a game's
//! transitions in step with it; a mixed backlog goes out in due order across
//! kinds, also with replicas and a crash.

pub mod common;

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use common::api::{TOKEN, TestApi, in_seconds, json};
use common::process::{LogTail, Running, free_port, signal, terminate, wait_exit};
use common::rig::{Rig, WINDOW, drain_settings, take_until_quiet};
use common::schedule::{backlog, count, sent_at_least, start_daemon, wait_for, wait_for_count};
use common::{TestBroker, TestDb, WAIT};
use serde_json::{Value, json};
use uuid::Uuid;

/// A status transition as written.
struct Transition {
    id: Uuid,
    game_id: Uuid,
    target_status: String,
    at: DateTime<Utc>,
}

/// One game and a transition to each of `statuses`, due `offsets_ms` from
/// now by the database clock (negative: overdue).
async fn transitions(
    client: &tokio_postgres::Client,
    statuses: &[&str],
    offsets_ms: &[i64],
) -> Vec<Transition> {
    let game_id: Uuid = client
        .query_one(
            "INSERT INTO game_sessions (title, scheduled_at) VALUES ('kinds', now()) RETURNING id",
            &[],
        )
        .await
        .expect("insert game")
        .get(0);
    let statuses: Vec<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
    let rows = client
        .query(
            "INSERT INTO game_status_schedule (game_id, target_status, transition_time) \
             SELECT $1, s, now() + o * interval '1 ms' \
               FROM unnest($2::text[], $3::bigint[]) AS t(s, o) \
             RETURNING id, target_status, transition_time",
            &[&game_id, &statuses, &offsets_ms],
        )
        .await
        .expect("insert transitions");
    rows.iter()
        .map(|row| Transition {
            id: row.get(0),
            game_id,
            target_status: row.get(1),
            at: row.get(2),
        })
        .collect()
}

fn assert_transitions_delivered(received: &[common::Received], expected: &[Transition]) {
    let by_id: HashMap<String, &Transition> =
        expected.iter().map(|t| (t.id.to_string(), t)).collect();
    for message in received {
        let transition = by_id
            .get(&message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            message.received_at >= transition.at,
            "received {} before its time {}",
            message.received_at,
            transition.at
        );
        assert_eq!(message.body["event_type"], "game.status_transition_due");
        assert_eq!(
            message.body["data"]["game_id"],
            transition.game_id.to_string()
        );
        assert_eq!(
            message.body["data"]["target_status"],
            transition.target_status
        );
        let transition_time: DateTime<Utc> = message.body["data"]["transition_time"]
            .as_str()
            .expect("transition_time")
            .parse()
            .expect("ISO 8601");
        assert_eq!(transition_time, transition.at);
        assert_eq!(message.expiration, None, "a transition never expires");
    }
}

#[tokio::test]
async fn status_transitions_are_delivered_at_their_time_never_early_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    // Written after the daemon armed its timer: only the transition channel's
    // notification can wake it in time.
    let written = transitions(
        &client,
        &["IN_PROGRESS", "COMPLETED", "ARCHIVED"],
        &[1_500, 1_700, 1_900],
    )
    .await;
    let received = consumer.take(3).await;
    assert_transitions_delivered(&received, &written);
    consumer.assert_quiet(Duration::from_millis(300)).await;
    assert_eq!(count(&client, "sent").await, 0, "no reminder was touched");
    let executed: i64 = client
        .query_one(
            "SELECT count(*) FROM game_status_schedule \
              WHERE executed AND outcome = 'published' AND executed_at >= transition_time",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(executed, 3);
    daemon.shutdown().await;
}

#[tokio::test]
async fn transitions_a_day_late_are_all_delivered_oldest_first_none_skipped() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    let day_ms = 86_400_000;
    let mut written = Vec::new();
    for game in 0..20 {
        written.extend(
            transitions(
                &client,
                &["IN_PROGRESS", "COMPLETED"],
                &[-day_ms + game * 1_000, -day_ms + game * 1_000 + 500],
            )
            .await,
        );
    }
    let daemon = start_daemon(&db, &broker, &[]).await;
    let received = consumer.take(written.len()).await;
    assert_transitions_delivered(&received, &written);
    let times: Vec<DateTime<Utc>> = received
        .iter()
        .map(|m| {
            m.body["data"]["transition_time"]
                .as_str()
                .unwrap()
                .parse()
                .unwrap()
        })
        .collect();
    assert!(times.is_sorted(), "oldest first: {times:?}");
    consumer.assert_quiet(Duration::from_millis(300)).await;
    let skipped: i64 = client
        .query_one(
            "SELECT count(*) FROM game_status_schedule WHERE outcome IS DISTINCT FROM 'published'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(skipped, 0);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_mixed_backlog_goes_out_in_due_order_across_kinds() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    // Overdue reminders of a game that starts in an hour (never stale) and
    // overdue transitions, their times interleaved 100 ms apart.
    let reminders = common::schedule::schedule(
        &client,
        3_600_000,
        &[-10_000, -9_800, -9_600, -9_400, -9_200],
    )
    .await;
    let written = transitions(
        &client,
        &["A", "B", "C", "D", "E"],
        &[-9_900, -9_700, -9_500, -9_300, -9_100],
    )
    .await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let received = consumer.take(10).await;
    let order: Vec<&str> = received
        .iter()
        .map(|m| m.body["event_type"].as_str().unwrap())
        .collect();
    assert_eq!(
        order,
        ["game.reminder_due", "game.status_transition_due",].repeat(5),
        "in due order across kinds"
    );
    assert_transitions_delivered(
        &received
            .iter()
            .filter(|m| m.body["event_type"] == "game.status_transition_due")
            .cloned()
            .collect::<Vec<_>>(),
        &written,
    );
    wait_for_count(&client, "sent", reminders.len() as i64).await;
    consumer.assert_quiet(Duration::from_millis(300)).await;
    daemon.shutdown().await;
}

/// `count` overdue status transitions, one game each, as a backlog after
/// downtime (interleaved in time with [`backlog`]'s reminders).
async fn transition_backlog(client: &tokio_postgres::Client, count: i64) {
    client
        .batch_execute(&format!(
            "WITH games AS (
                 INSERT INTO game_sessions (title, scheduled_at)
                 SELECT 'backlog', now() FROM generate_series(1, {count})
                 RETURNING id)
             INSERT INTO game_status_schedule (game_id, target_status, transition_time)
             SELECT id, 'IN_PROGRESS', now() - interval '1 minute' - row_number() OVER () * interval '1 ms' + interval '500 us'
               FROM games"
        ))
        .await
        .expect("insert the transition backlog");
}

/// Every pending row of both kinds: message id to (event type, due time).
async fn every_pending(
    client: &tokio_postgres::Client,
) -> HashMap<String, (&'static str, DateTime<Utc>)> {
    let mut expected = HashMap::new();
    for (event_type, query) in [
        (
            "game.reminder_due",
            "SELECT id, notification_time FROM notification_schedule WHERE NOT sent",
        ),
        (
            "game.status_transition_due",
            "SELECT id, transition_time FROM game_status_schedule WHERE NOT executed",
        ),
    ] {
        for row in client.query(query, &[]).await.expect("read pending rows") {
            let id: Uuid = row.get(0);
            expected.insert(id.to_string(), (event_type, row.get(1)));
        }
    }
    expected
}

/// Waits for every `expected` row to arrive (within 40 s), then for every row
/// of both kinds to be recorded as done, then takes late repeats; checks each
/// message (known, of its kind's event type, not early) and returns how many
/// were repeats.
async fn receive_every_row(
    rig: &mut Rig,
    expected: &HashMap<String, (&'static str, DateTime<Utc>)>,
) -> usize {
    let mut received = Vec::new();
    let mut missing: HashSet<&str> = expected.keys().map(String::as_str).collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let message = rig
            .consumer
            .next_within(left.min(WAIT))
            .await
            .unwrap_or_else(|| panic!("{} rows never arrived", missing.len()));
        missing.remove(message.message_id.as_str());
        received.push(message);
    }
    wait_for("every row of every kind to be done", WAIT, || async {
        count(&rig.client, "NOT sent").await == 0
            && rig
                .client
                .query_one(
                    "SELECT count(*) FROM game_status_schedule WHERE NOT executed",
                    &[],
                )
                .await
                .unwrap()
                .get::<_, i64>(0)
                == 0
    })
    .await;
    take_until_quiet(&mut rig.consumer, &mut received).await;
    let mut seen = HashSet::new();
    let mut duplicates = 0;
    for message in &received {
        let (event_type, at) = expected
            .get(&message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert_eq!(message.body["event_type"], *event_type, "{message:?}");
        assert!(message.received_at >= *at, "{message:?} before {at}");
        if !seen.insert(message.message_id.as_str()) {
            duplicates += 1;
        }
    }
    duplicates
}

/// A backlog of `rows` rows of each kind, and what the consumer must receive.
async fn mixed_backlog(rig: &Rig, rows: i64) -> HashMap<String, (&'static str, DateTime<Utc>)> {
    backlog(&rig.client, rows).await;
    transition_backlog(&rig.client, rows).await;
    let expected = every_pending(&rig.client).await;
    assert_eq!(expected.len(), 2 * rows as usize);
    expected
}

/// A claim takes up to a batch of each kind, so a failed claimer held at most
/// twice the one-kind window.
const MIXED_WINDOW: usize = 2 * WINDOW;

const REPLICA_SETTINGS: [&str; 4] = ["--batch-size", "100", "--max-in-flight-batches", "4"];

/// Two replicas share a backlog of both kinds: each row goes out exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_deliver_a_mixed_backlog_without_duplicates() {
    let mut rig = Rig::new().await;
    let expected = mixed_backlog(&rig, 5_000).await;
    let mut replicas: Vec<(Running, LogTail)> = (0..2)
        .map(|_| rig.spawn_daemon(free_port(), &REPLICA_SETTINGS))
        .collect();
    let duplicates = receive_every_row(&mut rig, &expected).await;
    assert_eq!(duplicates, 0, "replicas never deliver a row twice");
    for (replica, log) in &mut replicas {
        terminate(replica, log).await;
    }
}

/// Three replicas share a backlog of both kinds; one is killed (-9) midway.
/// The other two finish it: every row of every kind arrives, none early,
/// each with its kind's event type, repeats only within the killed
/// replica's batches in flight, and every row ends recorded as done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_with_one_killed_deliver_a_mixed_backlog_within_the_window() {
    const ROWS: i64 = 5_000;
    let mut rig = Rig::new().await;
    let expected = mixed_backlog(&rig, ROWS).await;
    let mut replicas: Vec<(Running, LogTail)> = (0..3)
        .map(|_| rig.spawn_daemon(free_port(), &REPLICA_SETTINGS))
        .collect();

    sent_at_least(&rig.client, ROWS / 4).await;
    let (victim, victim_log) = &mut replicas[0];
    signal(&victim.0, "KILL");
    assert_eq!(wait_exit(&mut victim.0).await.code(), None, "killed");
    assert!(
        victim_log.contains("daemon started"),
        "the victim was running"
    );

    let duplicates = receive_every_row(&mut rig, &expected).await;
    assert!(
        duplicates <= MIXED_WINDOW,
        "{duplicates} duplicates, more than the window of {MIXED_WINDOW}"
    );
    eprintln!(
        "mixed kinds, three replicas, one killed: {} rows, {duplicates} duplicates",
        expected.len()
    );
    for (survivor, log) in &mut replicas[1..] {
        terminate(survivor, log).await;
    }
}

/// The broker connection cut during a mixed drain: the publisher reconnects,
/// every row of both kinds arrives, repeats only within one window.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_broker_connection_during_a_mixed_drain_loses_nothing() {
    const ROWS: i64 = 5_000;
    let mut rig = Rig::new().await.with_rabbitmq_proxy().await;
    let expected = mixed_backlog(&rig, ROWS).await;
    let daemon = rig.start_daemon(&drain_settings()).await;
    sent_at_least(&rig.client, ROWS / 10).await;
    let proxy = rig.rabbitmq_proxy();
    let connections_before = proxy.accepted();
    proxy.cut();
    wait_for(
        "a new broker connection",
        Duration::from_secs(10),
        || async { proxy.accepted() > connections_before },
    )
    .await;
    let duplicates = receive_every_row(&mut rig, &expected).await;
    assert!(
        duplicates <= MIXED_WINDOW,
        "{duplicates} duplicates, more than the window of {MIXED_WINDOW}"
    );
    daemon.shutdown().await;
}

/// (status, time, state) of each transition a game body shows, in time order.
fn transitions_of(game: &Value) -> Vec<(String, DateTime<Utc>, String)> {
    game["status_transitions"]
        .as_array()
        .expect("status_transitions")
        .iter()
        .map(|t| {
            (
                t["target_status"].as_str().unwrap().to_owned(),
                t["transition_time"].as_str().unwrap().parse().unwrap(),
                t["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn start_of(game: &Value) -> DateTime<Utc> {
    game["scheduled_at"].as_str().unwrap().parse().unwrap()
}

async fn create_game(api: &TestApi, body: Value) -> Value {
    let (status, body) = json(api.post_json("/games", &body).await).await;
    assert_eq!(status, 201, "{body}");
    body
}

#[tokio::test]
async fn the_api_schedules_moves_and_clears_a_games_transitions() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let game = create_game(
        &api,
        json!({"title": "t", "scheduled_at": in_seconds(7_200), "expected_duration_minutes": 90}),
    )
    .await;
    let start = start_of(&game);
    let minutes = |m: i64| chrono::Duration::minutes(m);
    assert_eq!(game["effective_expected_duration_minutes"], 90);
    assert_eq!(
        transitions_of(&game),
        [
            ("IN_PROGRESS".to_owned(), start, "pending".to_owned()),
            (
                "COMPLETED".to_owned(),
                start + minutes(90),
                "pending".to_owned()
            ),
        ]
    );
    let path = format!("/games/{}", game["id"].as_str().unwrap());

    // Moving the game moves both; ids stay (the rows move in place).
    let ids: Vec<&str> = game["status_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    let (status, moved) = json(
        api.patch_json(&path, &json!({"scheduled_at": in_seconds(10_800)}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    let new_start = start_of(&moved);
    assert_eq!(
        transitions_of(&moved),
        [
            ("IN_PROGRESS".to_owned(), new_start, "pending".to_owned()),
            (
                "COMPLETED".to_owned(),
                new_start + minutes(90),
                "pending".to_owned()
            ),
        ]
    );
    let moved_ids: Vec<&str> = moved["status_transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["id"].as_str().unwrap())
        .collect();
    assert_eq!(moved_ids, ids);

    // Back to the default duration (60 minutes in the test API).
    let (status, defaulted) = json(
        api.patch_json(&path, &json!({"expected_duration_minutes": null}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{defaulted}");
    assert_eq!(defaulted["expected_duration_minutes"], Value::Null);
    assert_eq!(transitions_of(&defaulted)[1].1, new_start + minutes(60));

    let (status, invalid) = json(
        api.patch_json(&path, &json!({"expected_duration_minutes": 0}))
            .await,
    )
    .await;
    assert_eq!(status, 422, "{invalid}");
    assert_eq!(invalid["field"], "expected_duration_minutes");

    let client = db.client().await;
    assert_eq!(api.delete(&path).await.status(), 204);
    let left: i64 = client
        .query_one("SELECT count(*) FROM game_status_schedule", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 0, "deleting the game clears its transitions");
}

/// The application's own bug: editing a game in progress dropped its
/// COMPLETED transition. Here the edit moves it and keeps what happened.
#[tokio::test]
async fn editing_a_game_in_progress_keeps_its_completed_transition() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let game = create_game(
        &api,
        json!({"title": "t", "scheduled_at": in_seconds(7_200)}),
    )
    .await;
    let id: Uuid = game["id"].as_str().unwrap().parse().unwrap();
    let client = db.client().await;
    // The game started ten minutes ago and its IN_PROGRESS went out.
    client
        .batch_execute(&format!(
            "UPDATE game_sessions SET scheduled_at = now() - interval '10 minutes' WHERE id = '{id}';
             UPDATE game_status_schedule SET transition_time = now() - interval '10 minutes',
                    executed = true, executed_at = now() - interval '10 minutes', outcome = 'published'
              WHERE game_id = '{id}' AND target_status = 'IN_PROGRESS';
             UPDATE game_status_schedule SET transition_time = now() + interval '50 minutes'
              WHERE game_id = '{id}' AND target_status = 'COMPLETED';"
        ))
        .await
        .unwrap();
    let path = format!("/games/{id}");
    let (status, renamed) = json(api.patch_json(&path, &json!({"title": "renamed"})).await).await;
    assert_eq!(status, 200, "{renamed}");
    let states: Vec<(String, String)> = transitions_of(&renamed)
        .into_iter()
        .map(|(target, _, state)| (target, state))
        .collect();
    assert_eq!(
        states,
        [
            ("IN_PROGRESS".to_owned(), "executed".to_owned()),
            ("COMPLETED".to_owned(), "pending".to_owned()),
        ]
    );
    let (status, longer) = json(
        api.patch_json(&path, &json!({"expected_duration_minutes": 120}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{longer}");
    let transitions = transitions_of(&longer);
    assert_eq!(transitions[1].0, "COMPLETED");
    assert_eq!(transitions[1].2, "pending", "still pending, never dropped");
    assert_eq!(
        transitions[1].1,
        start_of(&longer) + chrono::Duration::minutes(120)
    );
}

#[tokio::test]
async fn a_game_created_through_the_api_goes_in_progress_at_its_start() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let game = create_game(
        &api,
        json!({"title": "soon", "scheduled_at": in_seconds(2), "reminder_minutes": []}),
    )
    .await;
    let start = start_of(&game);
    let message = consumer
        .next_within(WAIT)
        .await
        .expect("the IN_PROGRESS transition arrives");
    assert_eq!(message.body["event_type"], "game.status_transition_due");
    assert_eq!(message.body["data"]["target_status"], "IN_PROGRESS");
    assert_eq!(message.body["data"]["game_id"], game["id"]);
    assert!(message.received_at >= start, "never before the start");
    assert_eq!(
        message.message_id,
        game["status_transitions"][0]["id"].as_str().unwrap()
    );
    consumer.assert_quiet(Duration::from_millis(300)).await;
    daemon.shutdown().await;
}
