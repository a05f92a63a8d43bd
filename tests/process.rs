//! The daemon as an operator runs it: a separate process, stopped by signals.

pub mod common;

use std::time::Duration;

use common::process::{free_port, signal, spawn_daemon, stderr_of, wait_exit};
use common::schedule::{backlog, count, wait_for};
use common::{TestBroker, TestDb, WAIT};

async fn ready(port: u16) -> Option<serde_json::Value> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    (response.status() == 200).then_some(())?;
    response.json().await.ok()
}

#[tokio::test]
async fn sigterm_during_a_backlog_exits_zero_and_a_restart_delivers_the_rest() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let client = db.client().await;
    backlog(&client, 20_000).await;
    let port = free_port();
    let mut daemon = spawn_daemon(&db, &broker, port, &["--batch-size", "200"]);
    wait_for("delivery to start", WAIT, || async {
        count(&client, "sent").await > 0
    })
    .await;
    signal(&daemon, "TERM");
    let status = wait_exit(&mut daemon).await;
    assert_eq!(status.code(), Some(0), "{}", stderr_of(&mut daemon));
    let sent_before_restart = count(&client, "sent").await;
    assert!(sent_before_restart < 20_000, "stopped mid-backlog");
    let open_claims: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name LIKE 'notification-scheduler%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(open_claims, 0, "every connection closed");

    let mut restarted = spawn_daemon(&db, &broker, port, &[]);
    let received = consumer.take(20_000).await;
    consumer.assert_quiet(Duration::from_millis(500)).await;
    let mut ids: Vec<&str> = received.iter().map(|m| m.message_id.as_str()).collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 20_000, "nothing lost, nothing twice");
    signal(&restarted, "INT");
    assert_eq!(wait_exit(&mut restarted).await.code(), Some(0));
}

#[tokio::test]
async fn the_daemon_refuses_an_unmigrated_database_unless_told_to_migrate() {
    let (db, broker) = (TestDb::empty().await, TestBroker::new().await);
    let port = free_port();
    let mut refused = spawn_daemon(&db, &broker, port, &[]);
    let status = wait_exit(&mut refused).await;
    let stderr = stderr_of(&mut refused);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("notification-scheduler migrate"),
        "{stderr}"
    );

    let mut migrating = spawn_daemon(&db, &broker, port, &["--migrate"]);
    wait_for("the daemon to be ready", WAIT, || async {
        ready(port).await.is_some()
    })
    .await;
    let report = ready(port).await.expect("ready");
    assert_eq!(report["ready"], true);
    assert_eq!(report["database"]["ready"], true);
    let alive = reqwest::get(format!("http://127.0.0.1:{port}/healthz"))
        .await
        .expect("healthz");
    assert_eq!(alive.status(), 200);
    signal(&migrating, "TERM");
    assert_eq!(wait_exit(&mut migrating).await.code(), Some(0));
}

#[tokio::test]
async fn readiness_names_an_unreachable_broker_without_its_password() {
    let db = TestDb::migrated().await;
    let broker = TestBroker::new().await;
    let dead_broker = broker.via(format!("amqp://guest:guest@127.0.0.1:{}/%2f", free_port()));
    let port = free_port();
    let mut daemon = spawn_daemon(&db, &dead_broker, port, &[]);
    let deadline = tokio::time::Instant::now() + WAIT;
    let body = loop {
        if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{port}/readyz")).await
            && response.status() == 503
            && let Ok(body) = response.json::<serde_json::Value>().await
            && body["broker"]["detail"].is_string()
        {
            break body;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no readiness answer"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(body["ready"], false);
    assert_eq!(body["broker"]["ready"], false);
    let detail = body["broker"]["detail"].as_str().unwrap();
    assert!(
        detail.contains("cannot reach RabbitMQ at 127.0.0.1:"),
        "{detail}"
    );
    assert!(!detail.contains("guest:guest"), "{detail}");
    signal(&daemon, "TERM");
    assert_eq!(
        wait_exit(&mut daemon).await.code(),
        Some(0),
        "{}",
        stderr_of(&mut daemon)
    );
}
