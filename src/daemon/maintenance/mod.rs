//! Periodic work beside delivery, on its own small connection pool so that it
//! never takes a connection the delivery path needs: the heartbeat the
//! operator console reads, observing the schedule for metrics, and deleting
//! old sent rows.

pub mod heartbeat;
mod observe;
mod retention;

use std::time::Duration;

use actors::readiness::Readiness;
use deadpool_postgres::Pool;
use tokio::task::JoinHandle;

use crate::config::DaemonArgs;
use crate::db;

/// The running maintenance tasks; aborted when dropped.
pub struct Maintenance {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Maintenance {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Starts the heartbeat, the retention sweep (unless RETENTION is 0) and,
/// when metrics are exported, the schedule observations.
pub fn start(args: &DaemonArgs, readiness: Readiness) -> Maintenance {
    let pool = db::pool(
        &args.database.database_url,
        1,
        args.database.database_connect_timeout,
    );
    let mut tasks = vec![tokio::spawn(heartbeat::run(pool.clone(), readiness))];
    if !args.retention.is_zero() {
        let (pool, retention) = (pool.clone(), args.retention);
        // The first sweep waits a period: a daemon starting after downtime
        // has a backlog to drain first, and a sweep after a long downtime has
        // a long history to delete (before the sweep had its index it read
        // the whole table, and at 10,000,000 rows slowed such a drain by a
        // quarter, docs/scaling.md).
        let period = args.retention_interval;
        tasks.push(every(period, period, move || {
            retention::run(pool.clone(), retention)
        }));
    }
    if crate::telemetry::metrics_exported() {
        observe::register();
        let pool = pool.clone();
        tasks.push(every(
            Duration::ZERO,
            args.schedule_observe_interval,
            move || observe::run(pool.clone()),
        ));
    }
    Maintenance { tasks }
}

/// Runs `work` after `first`, then every `period`, never two at once.
fn every<F, Fut>(first: Duration, period: Duration, mut work: F) -> JoinHandle<()>
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send,
{
    tokio::spawn(async move {
        let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + first, period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            ticks.tick().await;
            work().await;
        }
    })
}

/// A connection from the maintenance pool, or a logged reason why not.
async fn connection(pool: &Pool, task: &'static str) -> Option<deadpool_postgres::Object> {
    match pool.get().await {
        Ok(client) => Some(client),
        Err(err) => {
            tracing::debug!(task, error = %err, "no database connection; will try again next period");
            None
        }
    }
}
