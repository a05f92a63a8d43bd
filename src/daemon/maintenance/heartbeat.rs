//! The daemon's heartbeat: it writes its instance, version and readiness to
//! `scheduler_daemon` (migrations/0009_daemon_heartbeat.sql), which the
//! operator console shows as the daemons seen recently: every
//! [`HEARTBEAT_INTERVAL`], and within a second of its readiness changing. One
//! row per daemon, so its cost does not grow with anything; rows of daemons
//! gone for a day are deleted on the way.

use std::time::{Duration, Instant};

use actors::readiness::{ComponentStatus, Readiness};
use chrono::{DateTime, Utc};
use deadpool_postgres::Pool;

/// How often a daemon reports itself when nothing changes. The console counts
/// a daemon as seen recently for several periods.
pub const HEARTBEAT_INTERVAL: Duration = Duration::from_secs(10);

/// How often readiness is compared with what was last written.
const READINESS_CHECK: Duration = Duration::from_secs(1);

const BEAT: &str = "WITH beat AS ( \
       INSERT INTO scheduler_daemon (instance, version, started_at, seen_at, ready, detail) \
       VALUES ($1, $2, $3, statement_timestamp(), $4, $5) \
       ON CONFLICT (instance) DO UPDATE \
          SET version = excluded.version, started_at = excluded.started_at, \
              seen_at = excluded.seen_at, ready = excluded.ready, detail = excluded.detail) \
     DELETE FROM scheduler_daemon \
      WHERE seen_at < statement_timestamp() - interval '1 day' AND instance <> $1";

/// Writes this daemon's row at start, whenever its readiness changes, and
/// every [`HEARTBEAT_INTERVAL`]; runs until aborted.
pub async fn run(pool: Pool, readiness: Readiness) {
    let started_at = Utc::now();
    let mut written: Option<(Instant, Beat)> = None;
    let mut checks = tokio::time::interval(READINESS_CHECK);
    checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        checks.tick().await;
        let beat = Beat::of(&readiness);
        let due = written
            .as_ref()
            .is_none_or(|(at, last)| at.elapsed() >= HEARTBEAT_INTERVAL || *last != beat);
        if due && write(&pool, &beat, started_at).await {
            written = Some((Instant::now(), beat));
        }
    }
}

/// What a heartbeat says.
#[derive(Debug, PartialEq)]
struct Beat {
    ready: bool,
    /// What is not ready and why.
    detail: Option<serde_json::Value>,
}

impl Beat {
    fn of(readiness: &Readiness) -> Self {
        let report = readiness.report();
        let mut detail = serde_json::Map::new();
        for (name, status) in [
            ("database", &report.database),
            ("listener", &report.listener),
            ("broker", &report.broker),
        ] {
            if let ComponentStatus {
                ready: false,
                detail: why,
            } = status
            {
                let why = why.clone().unwrap_or_else(|| "not ready".to_owned());
                detail.insert(name.to_owned(), serde_json::Value::String(why));
            }
        }
        Self {
            ready: report.ready(),
            detail: (!detail.is_empty()).then_some(serde_json::Value::Object(detail)),
        }
    }
}

/// Writes the row; whether it was written.
async fn write(pool: &Pool, beat: &Beat, started_at: DateTime<Utc>) -> bool {
    let Some(client) = super::connection(pool, "heartbeat").await else {
        return false;
    };
    let written = async {
        let statement = client.prepare_cached(BEAT).await?;
        client
            .execute(
                &statement,
                &[
                    &crate::telemetry::instance_id(),
                    &env!("CARGO_PKG_VERSION"),
                    &started_at,
                    &beat.ready,
                    &beat.detail,
                ],
            )
            .await
    };
    match written.await {
        Ok(_) => true,
        Err(err) => {
            tracing::debug!(error = %crate::db::describe(&err), "heartbeat failed; will try again");
            false
        }
    }
}
