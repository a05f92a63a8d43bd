//! The idle scenario: what a daemon with nothing due costs its database, at
//! a given size of the schedule (docs/scaling.md, "Idle cost").
//!
//! The server's own counters for the bench database (pg_stat_database) are
//! read once the daemon has started and settled, and again after it has
//! stopped: a backend reports its counters when it exits, so nothing the
//! daemon did in the window is missing. Its metrics are exported (to a
//! closed port), so that the schedule gauges are observed as a monitored
//! daemon observes them, and its retention sweep runs every 15 s instead of
//! every 10 minutes, so that every window holds sweeps.

use std::time::{Duration, Instant};

use serde::Serialize;

use notification_scheduler::db;

use crate::harness::{BenchEnv, DaemonProcess, counters, sessions_gone};
use crate::scenarios;

/// One idle window.
#[derive(Debug, Clone, Serialize)]
pub struct IdleRun {
    /// Pending rows across the kinds, none due within the window.
    pub pending_rows: i64,
    pub window_s: f64,
    /// Transactions committed or rolled back in the bench database: every
    /// statement of an idle daemon is one.
    pub transactions_per_minute: f64,
    /// Rows and index entries of the schedule's tables read
    /// (pg_stat_user_tables and pg_stat_user_indexes): what the statements
    /// read.
    pub table_tuples_read_per_minute: f64,
    /// Every tuple read in the database (pg_stat_database's tup_returned and
    /// tup_fetched), the system catalogs' included: mostly the catalog
    /// caches of sessions, whatever the size of the schedule.
    pub tuples_read_per_minute: f64,
}

/// Tops the schedule up to `pending_rows` pending rows far in the future
/// (half reminders, half scheduled messages; nothing else is pending when
/// it runs, after the other scenarios), then measures a daemon idle
/// for `window` after it has settled.
pub async fn idle(
    env: &BenchEnv,
    pending_rows: u64,
    window: Duration,
    daemon_args: &[String],
) -> anyhow::Result<IdleRun> {
    let before_top_up = far_future_pending(env).await?;
    if let Some(missing) = pending_rows.checked_sub(before_top_up).filter(|&n| n > 0) {
        let reminders = missing / 2;
        scenarios::add_future_rows(env, reminders).await?;
        scenarios::add_future_messages(env, missing - reminders).await?;
    }
    let pending = far_future_pending(env).await?;
    let own_pid = env.flush_own_counters().await?;
    let admin = db::connect(&env.server, Duration::from_secs(10)).await?;
    let daemon = DaemonProcess::start_with_env(
        env,
        daemon_args,
        &[
            (
                "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
                "http://127.0.0.1:9/v1/metrics",
            ),
            ("RETENTION_INTERVAL", "15s"),
        ],
    )?;
    daemon.ready(Duration::from_secs(30)).await?;
    // Start-up (migration check, first next-due, first observation) is over
    // and reported: a backend reports within a second of going idle.
    tokio::time::sleep(window.min(Duration::from_secs(11))).await;
    let tables_before = table_tuples_read(env).await?;
    let before = counters(&admin, &env.database).await?;
    let started = Instant::now();
    tokio::time::sleep(window).await;
    daemon.stop().await?;
    let window_s = started.elapsed().as_secs_f64();
    sessions_gone(&admin, &env.database, own_pid).await?;
    let after = counters(&admin, &env.database).await?;
    let tables_after = table_tuples_read(env).await?;
    let per_minute = |count: i64| count as f64 * 60.0 / window_s;
    Ok(IdleRun {
        pending_rows: i64::try_from(pending)?,
        window_s,
        transactions_per_minute: per_minute(after.transactions - before.transactions),
        table_tuples_read_per_minute: per_minute(tables_after - tables_before),
        tuples_read_per_minute: per_minute(after.tuples_read - before.tuples_read),
    })
}

/// Rows and index entries read from the bench database's own tables so far.
/// The statement reports our session's counters at once, so that what it
/// reads of the catalogs is not counted in the window that follows.
async fn table_tuples_read(env: &BenchEnv) -> anyhow::Result<i64> {
    Ok(env
        .client
        .query_one(
            "SELECT ((SELECT coalesce(sum(coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0)), 0) \
                        FROM pg_stat_user_tables) \
                   + (SELECT coalesce(sum(idx_tup_read), 0) FROM pg_stat_user_indexes))::bigint \
               FROM (SELECT pg_stat_force_next_flush()) AS flushed",
            &[],
        )
        .await?
        .get(0))
}

/// Pending rows more than a day ahead, across the kinds.
async fn far_future_pending(env: &BenchEnv) -> anyhow::Result<u64> {
    let rows: i64 = env.beside().await?.iter().map(|t| t.future_pending).sum();
    Ok(rows.unsigned_abs())
}
