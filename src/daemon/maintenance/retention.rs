//! Deletes delivered and skipped rows of every kind older than the retention,
//! a small batch per transaction, oldest first, skipping rows others have
//! locked: it never holds up a claim.
//!
//! It finds them through each table's index of finished rows
//! (migrations/0008_idle_cost.sql), so a sweep reads the rows it deletes and
//! not the pending ones: its cost follows what delivery finished, not the size
//! of the schedule. Rows marked sent by older daemons have no sent_at; their
//! due time stands in.

use std::time::Duration;

use deadpool_postgres::Pool;

use crate::db::kind_sql;
use crate::kinds::{self, Kind};

/// Rows deleted per statement: short transactions, short locks.
const DELETE_BATCH: i64 = 1_000;

pub async fn run(pool: Pool, retention: Duration) {
    let Some(client) = super::connection(&pool, "retention").await else {
        return;
    };
    for kind in kinds::ALL {
        match sweep(&client, kind, retention).await {
            Ok(0) => {}
            Ok(deleted) => tracing::info!(
                kind = kind.name,
                deleted,
                ?retention,
                "deleted delivered events past their retention"
            ),
            Err(err) => {
                tracing::warn!(kind = kind.name, error = %crate::db::describe(&err), "retention sweep failed; will try again next period")
            }
        }
    }
}

/// Deletes every dealt-with row of `kind` older than `retention`, batch by
/// batch; returns how many it deleted.
async fn sweep(
    client: &deadpool_postgres::Client,
    kind: &Kind,
    retention: Duration,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    // Cached on the connection: preparing is a transaction of its own.
    let statement = client
        .prepare_cached(&kind_sql::delete_expired(kind))
        .await?;
    let mut deleted = 0;
    loop {
        let batch = client
            .execute(&statement, &[&seconds, &DELETE_BATCH])
            .await?;
        deleted += batch;
        if batch < DELETE_BATCH.unsigned_abs() {
            return Ok(deleted);
        }
    }
}
