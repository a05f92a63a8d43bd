//! Deletes delivered and skipped rows of every kind older than the retention,
//! a small batch per transaction, skipping rows others have locked: it never
//! holds up a claim.
//!
//! Rows marked sent by older daemons have no sent_at; their due time stands in. There is deliberately no index for this: the sweep runs every few
//! minutes off the delivery path, while an index on sent rows would cost every
//! claim an extra index write.

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
    client: &tokio_postgres::Client,
    kind: &Kind,
    retention: Duration,
) -> Result<u64, tokio_postgres::Error> {
    let seconds = retention.as_secs_f64();
    let statement = client.prepare(&kind_sql::delete_expired(kind)).await?;
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
