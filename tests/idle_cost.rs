//! What the daemon's periodic statements read does not grow with the
//! schedule: the gauges estimate large counts, and the retention sweep reads
//! the rows it deletes, not the pending ones (docs/scaling.md, "Idle cost").
//! Each statement runs in a transaction of its own that reads the server's
//! count of tuples this transaction read before and after it.

pub mod common;

use std::collections::BTreeMap;

use common::TestDb;
use common::schedule::insert_reminders;
use notification_scheduler::db::kind_sql;
use notification_scheduler::kinds::{self, reminder, scheduled_message};

/// Inserts `count` reminders due `due` from now (an SQL interval), with the
/// given `sent, sent_at`.
async fn reminders(client: &tokio_postgres::Client, count: i64, due: &str, sent: &str) {
    insert_reminders(client, count, &format!("now() + interval '{due}', {sent}")).await;
}

/// Inserts `count` pending scheduled messages due `due` from now.
async fn messages(client: &tokio_postgres::Client, count: i64, due: &str) {
    client
        .batch_execute(&format!(
            "INSERT INTO scheduled_message (routing_key, payload, deliver_at)
             SELECT 'idle.cost', '{{}}', now() + interval '{due}' FROM generate_series(1, {count})"
        ))
        .await
        .expect("insert messages");
}

/// Tuples of this schema's tables and index entries read by `statement`
/// (with no parameters but `params`), and the rows it returned.
async fn tuples_read(
    client: &mut tokio_postgres::Client,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (i64, Vec<tokio_postgres::Row>) {
    tuples_read_after(client, "", statement, params).await
}

/// As [`tuples_read`], with `setup` run first in the same transaction.
async fn tuples_read_after(
    client: &mut tokio_postgres::Client,
    setup: &str,
    statement: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
) -> (i64, Vec<tokio_postgres::Row>) {
    // The per-transaction counters are only flushed between transactions, so
    // their difference inside one is exactly what the statement read.
    let read = "SELECT (coalesce(sum(pg_stat_get_xact_tuples_returned(c.oid) \
                        + pg_stat_get_xact_tuples_fetched(c.oid)), 0))::bigint \
                  FROM pg_class c WHERE c.relnamespace = current_schema()::regnamespace \
                   AND c.relkind IN ('r', 'i')";
    let transaction = client.transaction().await.expect("begin");
    transaction.batch_execute(setup).await.expect("setup");
    let before: i64 = transaction.query_one(read, &[]).await.unwrap().get(0);
    let rows = transaction
        .query(statement, params)
        .await
        .expect("the statement runs");
    let after: i64 = transaction.query_one(read, &[]).await.unwrap().get(0);
    transaction.commit().await.expect("commit");
    (after - before, rows)
}

struct Observed {
    pending: i64,
    overdue: i64,
    next_due_s: Option<f64>,
    dead_lettered: i64,
}

/// The gauges' statement for every kind, and what it read.
async fn observe(client: &mut tokio_postgres::Client) -> (i64, BTreeMap<String, Observed>) {
    let (read, rows) = tuples_read(client, &kind_sql::observe(kinds::ALL), &[]).await;
    let observed = rows
        .iter()
        .map(|row| {
            (
                row.get("kind"),
                Observed {
                    pending: row.get("pending"),
                    overdue: row.get("overdue"),
                    next_due_s: row.get("next_due_s"),
                    dead_lettered: row.get("dead_lettered"),
                },
            )
        })
        .collect();
    (read, observed)
}

fn within_a_tenth(estimate: i64, actual: i64) -> bool {
    (estimate - actual).abs() * 10 <= actual
}

#[tokio::test]
async fn observing_a_large_schedule_estimates_it_and_reads_a_bounded_number_of_rows() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    reminders(&client, 30_000, "1 day", "false, NULL").await;
    reminders(&client, 3, "-1 minute", "false, NULL").await;
    messages(&client, 15_000, "2 days").await;
    client
        .batch_execute("ANALYZE game_sessions, notification_schedule, scheduled_message")
        .await
        .unwrap();

    let (read, observed) = observe(&mut client).await;

    assert!(
        read < 1_000,
        "observing 45,003 pending rows read {read} tuples"
    );
    let reminders = &observed[reminder::KIND.name];
    assert!(
        within_a_tenth(reminders.pending, 30_003),
        "pending reminders estimated at {} for 30,003",
        reminders.pending
    );
    assert_eq!(reminders.overdue, 3, "overdue rows are counted exactly");
    assert!(reminders.next_due_s.is_some_and(|s| s < 0.0));
    assert_eq!(reminders.dead_lettered, 0);
    let messages = &observed[scheduled_message::KIND.name];
    assert!(
        within_a_tenth(messages.pending, 15_000),
        "pending messages estimated at {} for 15,000",
        messages.pending
    );
    assert_eq!(messages.overdue, 0);
}

#[tokio::test]
async fn a_claim_among_many_rows_due_at_once_reads_about_what_it_claims() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    // Not analysed: the planner knows nothing of how many rows are due.
    reminders(&client, 20_000, "-1 second", "false, NULL").await;
    let (limit, ahead_us, grace_ms) = (32i64, 5_000i64, 60_000i64);

    let (read, claimed) = tuples_read_after(
        &mut client,
        kind_sql::CLAIM_PLANNING,
        &kind_sql::claim(&reminder::KIND),
        &[&limit, &ahead_us, &grace_ms],
    )
    .await;

    assert_eq!(claimed.len(), 32);
    assert!(
        read < 500,
        "claiming 32 of 20,000 due rows read {read} tuples"
    );
}

#[tokio::test]
async fn a_small_schedule_is_counted_exactly_with_a_row_for_every_kind() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    reminders(&client, 6, "1 hour", "false, NULL").await;
    reminders(&client, 2, "-5 seconds", "false, NULL").await;
    reminders(&client, 4, "-1 hour", "true, now()").await;
    client
        .batch_execute(
            "UPDATE notification_schedule SET dead_lettered_at = now(), attempts = 5 \
              WHERE id = (SELECT id FROM notification_schedule WHERE NOT sent \
                           ORDER BY notification_time DESC LIMIT 1)",
        )
        .await
        .unwrap();
    messages(&client, 3, "10 minutes").await;

    let (_, observed) = observe(&mut client).await;

    assert_eq!(
        observed.keys().map(String::as_str).collect::<Vec<_>>(),
        {
            let mut names: Vec<&str> = kinds::ALL.iter().map(|kind| kind.name).collect();
            names.sort_unstable();
            names
        },
        "one row per kind"
    );
    let reminders = &observed[reminder::KIND.name];
    assert_eq!(
        (
            reminders.pending,
            reminders.overdue,
            reminders.dead_lettered
        ),
        (7, 2, 1)
    );
    let messages = &observed[scheduled_message::KIND.name];
    assert_eq!((messages.pending, messages.overdue), (3, 0));
    assert!(messages.next_due_s.is_some_and(|s| s > 500.0 && s <= 600.0));
    for (name, empty) in observed.iter().filter(|(name, _)| {
        ![reminder::KIND.name, scheduled_message::KIND.name].contains(&name.as_str())
    }) {
        assert_eq!(
            (
                empty.pending,
                empty.overdue,
                empty.next_due_s,
                empty.dead_lettered
            ),
            (0, 0, None, 0),
            "{name} has nothing scheduled"
        );
    }
}

#[tokio::test]
async fn the_retention_sweep_reads_the_rows_it_deletes_not_the_pending_ones() {
    let db = TestDb::migrated().await;
    let mut client = db.client().await;
    reminders(&client, 30_000, "1 day", "false, NULL").await;
    reminders(&client, 500, "-9 days", "true, now() - interval '8 days'").await;
    reminders(&client, 20, "-2 hours", "true, now() - interval '1 hour'").await;
    client
        .batch_execute("ANALYZE game_sessions, notification_schedule")
        .await
        .unwrap();
    let week = 7.0 * 24.0 * 3600.0;

    let (read, _) = tuples_read(
        &mut client,
        &format!("{} RETURNING 1", kind_sql::delete_expired(&reminder::KIND)),
        &[&week, &1_000_i64],
    )
    .await;

    assert!(
        read < 2_500,
        "deleting 500 rows beside 30,000 pending read {read} tuples"
    );
    let left: i64 = client
        .query_one(
            "SELECT count(*) FILTER (WHERE sent) FROM notification_schedule",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(left, 20, "only the rows past the retention are deleted");
}
