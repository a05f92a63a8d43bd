//! The delivery daemon against real PostgreSQL and RabbitMQ: one database and
//! one exchange per test.

pub mod common;

use std::collections::HashMap;
use std::time::Duration;

use common::proxy::FaultProxy;
use common::schedule::{backlog, count, schedule, start_daemon, wait_for, wait_for_count};
use common::{TestBroker, TestDb, WAIT};

/// Every received message: at or after its notification time, with the wire body.
fn assert_delivered_on_time(
    received: &[common::Received],
    expected: &[common::schedule::Reminder],
) {
    let by_id: HashMap<String, &common::schedule::Reminder> =
        expected.iter().map(|r| (r.id.to_string(), r)).collect();
    for message in received {
        let reminder = by_id
            .get(&message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            message.received_at >= reminder.at,
            "received {} before its time {}",
            message.received_at,
            reminder.at
        );
        assert_eq!(message.body["event_type"], "game.reminder_due");
        assert_eq!(
            message.body["data"]["game_id"],
            reminder.game_id.to_string()
        );
        assert_eq!(message.body["data"]["reminder_minutes"], reminder.minutes);
        assert!(message.expiration.is_some(), "expires when the game starts");
    }
}

#[tokio::test]
async fn reminders_are_delivered_at_their_time_never_early() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let offsets: Vec<i64> = (0..20).map(|n| 1_500 + n * 100).collect();
    let reminders = schedule(&client, 3_600_000, &offsets).await;
    let received = consumer.take(20).await;
    assert_delivered_on_time(&received, &reminders);
    consumer.assert_quiet(Duration::from_millis(300)).await;
    wait_for_count(
        &client,
        "sent AND outcome = 'published' AND sent_at IS NOT NULL",
        20,
    )
    .await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn an_insert_earlier_than_the_armed_reminder_fires_first() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    let late = schedule(&client, 3_600_000, &[60_000]).await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let early = schedule(&client, 3_600_000, &[1_000]).await;
    let received = consumer.take(1).await;
    assert_eq!(received[0].message_id, early[0].id.to_string());
    assert_delivered_on_time(&received, &early);
    assert_eq!(
        count(&client, &format!("id = '{}' AND NOT sent", late[0].id)).await,
        1
    );
    daemon.shutdown().await;
}

#[tokio::test]
async fn deleted_reminders_are_not_sent_and_moved_ones_fire_at_their_new_time() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let reminders = schedule(&client, 3_600_000, &[1_500, 1_500, 3_000]).await;
    let (deleted, moved, marker) = (&reminders[0], &reminders[1], &reminders[2]);
    client
        .execute(
            "DELETE FROM notification_schedule WHERE id = $1",
            &[&deleted.id],
        )
        .await
        .unwrap();
    let new_time: chrono::DateTime<chrono::Utc> = client
        .query_one(
            "UPDATE notification_schedule SET notification_time = notification_time + interval '2500 ms' \
             WHERE id = $1 RETURNING notification_time",
            &[&moved.id],
        )
        .await
        .unwrap()
        .get(0);
    let received = consumer.take(2).await;
    let ids: Vec<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    assert_eq!(ids, [marker.id.to_string(), moved.id.to_string()]);
    assert!(
        received[1].received_at >= new_time,
        "the moved reminder kept its old time"
    );
    consumer.assert_quiet(Duration::from_millis(500)).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_backlog_present_at_start_is_delivered_once_and_stale_reminders_are_skipped() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    backlog(&client, 1_200).await;
    // The game started ten minutes ago: its 60-minute reminder is useless now.
    let stale = schedule(&client, -600_000, &[-3_600_000]).await;
    let daemon = start_daemon(&db, &broker, &["--batch-size", "100"]).await;
    let received = consumer.take(1_200).await;
    let mut ids: Vec<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 1_200, "no duplicates");
    assert!(!ids.contains(&stale[0].id.to_string().as_str()));
    consumer.assert_quiet(Duration::from_millis(300)).await;
    wait_for_count(&client, "outcome = 'skipped_stale'", 1).await;
    wait_for_count(&client, "NOT sent", 0).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_started_daemon_has_every_claim_connection_open_before_anything_is_due() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let daemon = start_daemon(&db, &broker, &["--max-in-flight-batches", "3"]).await;
    let client = db.client().await;
    // One per batch awaiting confirms, one for the round, one spare: opened
    // at start, so the first burst of claims does not open them while its
    // rows are due. Lazily, an idle start opened one.
    let open: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity
              WHERE datname = current_database() AND application_name = 'notification-scheduler'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(open >= 5, "{open} of the daemon's connections are open");
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_malformed_notification_changes_nothing() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    for payload in ["not json", "{\"operation\": 5}", &"x".repeat(7_000)] {
        client
            .execute(
                "SELECT pg_notify('notification_schedule_changed', $1)",
                &[&payload],
            )
            .await
            .unwrap();
    }
    let reminders = schedule(&client, 3_600_000, &[1_000]).await;
    let received = consumer.take(1).await;
    assert_delivered_on_time(&received, &reminders);
    assert!(daemon.readiness.report().ready());
    daemon.shutdown().await;
}

#[tokio::test]
async fn two_daemons_on_one_backlog_deliver_each_reminder_exactly_once() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    backlog(&client, 2_000).await;
    let settings = ["--batch-size", "50", "--max-in-flight-batches", "2"];
    let (first, second) = tokio::join!(
        start_daemon(&db, &broker, &settings),
        start_daemon(&db, &broker, &settings)
    );
    let received = consumer.take(2_000).await;
    consumer.assert_quiet(Duration::from_millis(500)).await;
    let mut ids: Vec<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 2_000, "each reminder exactly once");
    wait_for_count(&client, "NOT sent", 0).await;
    tokio::join!(first.shutdown(), second.shutdown());
}

#[tokio::test]
async fn a_killed_listen_backend_is_replaced_and_changes_made_meanwhile_are_found() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    // Kill the listener, then write at once, before it can have reconnected:
    // the notification is lost and only the resync finds the row.
    let killed: i64 = client
        .query_one(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE datname = current_database() AND application_name = 'notification-scheduler listener'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(killed, 1);
    let reminders = schedule(&client, 3_600_000, &[-1]).await;
    let received = consumer.take(1).await;
    assert_delivered_on_time(&received, &reminders);
    wait_for("a new LISTEN connection", WAIT, || async {
        client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
                 AND application_name = 'notification-scheduler listener'",
                &[],
            )
            .await
            .unwrap()
            .get::<_, i64>(0)
            == 1
    })
    .await;
    let later = schedule(&client, 3_600_000, &[500]).await;
    assert_delivered_on_time(&consumer.take(1).await, &later);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_cut_broker_connection_is_replaced_and_nothing_is_lost() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let proxy = FaultProxy::start(common::rabbitmq_address()).await;
    let via_proxy = broker.via(proxy.url_for(&broker.url));
    let daemon = start_daemon(&db, &via_proxy, &[]).await;
    let client = db.client().await;
    let first = schedule(&client, 3_600_000, &[300]).await;
    assert_delivered_on_time(&consumer.take(1).await, &first);
    // Recorded as sent too: a cut before that commit would repeat it.
    wait_for_count(&client, "NOT sent", 0).await;
    proxy.cut();
    let second = schedule(&client, 3_600_000, &[200, 400, 600]).await;
    let received = consumer.take(3).await;
    assert_delivered_on_time(&received, &second);
    assert!(proxy.accepted() >= 2, "the daemon reconnected");
    wait_for_count(&client, "NOT sent", 0).await;
    daemon.shutdown().await;
}

#[tokio::test]
async fn reminders_after_an_idle_period_longer_than_the_heartbeat_timeout_are_delivered() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &["--rabbitmq-heartbeat", "1s"]).await;
    let client = db.client().await;
    // Idle for well over two heartbeat intervals, the broker's timeout: the
    // original daemon lost its connection exactly this way.
    let reminders = schedule(&client, 3_600_000, &[4_000, 4_100, 4_200]).await;
    let received = consumer.take(3).await;
    assert_delivered_on_time(&received, &reminders);
    assert!(daemon.readiness.report().broker.ready);
    daemon.shutdown().await;
}

/// A supervisor that stops (stopped from outside here, as a bug in it would
/// stop it) is fatal: the daemon reports why, so the process exits non-zero
/// instead of living on, alive to its health check, delivering nothing.
#[tokio::test]
async fn a_stopped_supervisor_is_fatal_not_a_silent_stall() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut daemon = start_daemon(&db, &broker, &[]).await;
    daemon
        .supervisor()
        .stop(Some("stopped by the test".to_owned()));
    let reason = tokio::time::timeout(WAIT, daemon.fatal())
        .await
        .expect("the stopped supervisor is noticed");
    assert!(reason.contains("the supervisor stopped"), "{reason}");
    tokio::time::timeout(WAIT, daemon.shutdown())
        .await
        .expect("shutdown after a fatal stop does not hang");
}
