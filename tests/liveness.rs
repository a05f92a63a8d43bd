//! Liveness means delivery: /healthz fails, naming why, when claims cannot
//! make progress although PostgreSQL and RabbitMQ answer (a table locked by
//! another connection, as a long migration would), and recovers by itself
//! once they can; /readyz stays the dependency view.

pub mod common;

use std::time::Duration;

use common::schedule::{schedule, start_daemon, wait_for};
use common::{TestBroker, TestDb, WAIT};

/// Status and JSON body of `path` on the daemon's health server.
async fn get(address: std::net::SocketAddr, path: &str) -> (u16, serde_json::Value) {
    let response = reqwest::get(format!("http://{address}{path}"))
        .await
        .expect("the health server answers");
    let status = response.status().as_u16();
    (status, response.json().await.expect("a JSON body"))
}

#[tokio::test]
async fn a_locked_table_fails_liveness_with_the_reason_until_the_lock_is_released() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(
        &db,
        &broker,
        &[
            "--query-timeout",
            "500ms",
            "--rabbitmq-confirm-timeout",
            "500ms",
            "--claim-timeout",
            "2s",
            "--watchdog-timeout",
            "1s",
            "--liveness-stall-timeout",
            "2s",
            "--restart-backoff-max",
            "200ms",
        ],
    )
    .await;
    let health = daemon.health_addr;
    assert_eq!(get(health, "/healthz").await.0, 200);
    let client = db.client().await;
    let reminders = schedule(&client, 3_600_000, &[300, 400]).await;

    let mut locker = db.client().await;
    let lock = locker.transaction().await.unwrap();
    lock.batch_execute("LOCK TABLE notification_schedule IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    wait_for("liveness to fail", WAIT, || async {
        get(health, "/healthz").await.0 == 503
    })
    .await;
    let (_, body) = get(health, "/healthz").await;
    assert_eq!(body["status"], "stalled");
    let reason = body["reason"].as_str().expect("a reason");
    assert!(reason.contains("no delivery progress"), "{reason}");
    assert!(
        reason.contains("PostgreSQL and RabbitMQ answer"),
        "{reason}"
    );
    assert!(reason.contains("claim"), "names the failing step: {reason}");
    let (ready, readiness) = get(health, "/readyz").await;
    assert_eq!(ready, 503, "the database view: {readiness}");
    assert_eq!(readiness["listener"]["ready"], true);
    assert_eq!(readiness["broker"]["ready"], true);

    lock.rollback().await.unwrap();
    let received = consumer.take(reminders.len()).await;
    assert_eq!(received.len(), reminders.len());
    wait_for("liveness to recover", WAIT, || async {
        get(health, "/healthz").await.0 == 200
    })
    .await;
    consumer.assert_quiet(Duration::from_millis(200)).await;
    daemon.shutdown().await;
}
