//! Deletes sent and skipped rows older than the retention, a small batch per
//! transaction, skipping rows others have locked: it never holds up a claim.
//!
//! Rows marked sent by older daemons have no sent_at; their notification_time
//! stands in. There is deliberately no index for this: the sweep runs every few
//! minutes off the delivery path, while an index on sent rows would cost every
//! claim an extra index write.

use std::time::Duration;

use deadpool_postgres::Pool;

/// Rows deleted per statement: short transactions, short locks.
const DELETE_BATCH: i64 = 1_000;

const DELETE_EXPIRED: &str = "DELETE FROM notification_schedule \
 WHERE ctid = ANY (ARRAY( \
       SELECT ctid FROM notification_schedule \
        WHERE sent AND coalesce(sent_at, notification_time) < clock_timestamp() - make_interval(secs => $1) \
        LIMIT $2 FOR UPDATE SKIP LOCKED))";

pub async fn run(pool: Pool, retention: Duration) {
    let Some(client) = super::connection(&pool, "retention").await else {
        return;
    };
    match sweep(&client, retention).await {
        Ok(0) => {}
        Ok(deleted) => tracing::info!(
            deleted,
            ?retention,
            "deleted sent reminders past their retention"
        ),
        Err(err) => {
            tracing::warn!(error = %crate::db::describe(&err), "retention sweep failed; will try again next period")
        }
    }
}

/// Deletes every sent row older than `retention`, batch by batch; returns how
/// many it deleted.
async fn sweep(
    client: &tokio_postgres::Client,
    retention: Duration,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    let mut deleted = 0;
    loop {
        let batch = client
            .execute(DELETE_EXPIRED, &[&seconds, &DELETE_BATCH])
            .await?;
        deleted += batch;
        if batch < DELETE_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}
