//! The retention sweep: old sent rows go, in batches, without waiting on rows
//! someone holds; pending and recent rows stay.

pub mod common;

use common::schedule::{count, insert_reminders, start_daemon, wait_for_count};
use common::{TestBroker, TestDb};

#[tokio::test]
async fn sent_rows_past_the_retention_are_deleted_and_nothing_else() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let client = db.client().await;
    // More than one delete batch of old rows, plus rows of older daemons that
    // recorded no sent_at.
    insert_reminders(
        &client,
        2_500,
        "now() - interval '9 days', true, now() - interval '8 days'",
    )
    .await;
    insert_reminders(&client, 10, "now() - interval '9 days', true, NULL").await;
    insert_reminders(
        &client,
        20,
        "now() - interval '2 hours', true, now() - interval '1 hour'",
    )
    .await;
    insert_reminders(&client, 30, "now() + interval '1 hour', false, NULL").await;
    let old = "sent AND coalesce(sent_at, notification_time) < now() - interval '7 days'";

    // A row someone holds (an operator's transaction) must not stall the sweep.
    let mut holder = db.client().await;
    let holding = holder.transaction().await.unwrap();
    holding
        .execute(
            &format!("SELECT id FROM notification_schedule WHERE {old} LIMIT 1 FOR UPDATE"),
            &[],
        )
        .await
        .unwrap();

    let daemon = start_daemon(&db, &broker, &["--retention-interval", "100ms"]).await;
    wait_for_count(&client, old, 1).await;
    holding.rollback().await.unwrap();
    wait_for_count(&client, old, 0).await;

    assert_eq!(
        count(&client, "sent AND sent_at > now() - interval '1 day'").await,
        20
    );
    assert_eq!(count(&client, "NOT sent").await, 30);
    daemon.shutdown().await;
}

#[tokio::test]
async fn a_retention_of_zero_keeps_every_row() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let client = db.client().await;
    insert_reminders(
        &client,
        5,
        "now() - interval '400 days', true, now() - interval '400 days'",
    )
    .await;
    let daemon = start_daemon(
        &db,
        &broker,
        &["--retention", "0s", "--retention-interval", "10ms"],
    )
    .await;
    // A pending reminder delivered proves the daemon has been running rounds
    // meanwhile; the sweep would have run many times over.
    let mut consumer = broker.consumer().await;
    common::schedule::backlog(&client, 1).await;
    assert!(consumer.next_within(common::WAIT).await.is_some());
    assert_eq!(
        count(&client, "sent AND sent_at < now() - interval '1 day'").await,
        5
    );
    daemon.shutdown().await;
}
