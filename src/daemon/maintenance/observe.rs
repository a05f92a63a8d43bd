//! Pending, overdue and next-due gauges, observed from the table (a dashboard
//! must see a stuck backlog even when nothing is being delivered).

use std::sync::{Mutex, OnceLock};

use deadpool_postgres::Pool;
use opentelemetry::metrics::ObservableGauge;

/// One scan of the partial index on pending rows.
const OBSERVE: &str = "SELECT count(*)::bigint, \
       count(*) FILTER (WHERE notification_time <= clock_timestamp())::bigint, \
       extract(epoch FROM min(notification_time) - clock_timestamp())::float8 \
  FROM notification_schedule WHERE NOT sent";

/// The latest observation, read by the gauges at each export. A gauge with
/// nothing to report (no observation yet, nothing pending) exports no point
/// rather than repeating a stale value.
static LATEST: Mutex<Option<Observation>> = Mutex::new(None);

#[derive(Clone, Copy)]
struct Observation {
    pending: u64,
    overdue: u64,
    next_due_s: Option<f64>,
}

fn latest() -> Option<Observation> {
    *LATEST.lock().unwrap_or_else(|poison| poison.into_inner())
}

struct Gauges {
    _pending: ObservableGauge<u64>,
    _overdue: ObservableGauge<u64>,
    _next_due: ObservableGauge<f64>,
}

/// Registers the gauges with the global meter provider (once).
pub fn register() {
    static GAUGES: OnceLock<Gauges> = OnceLock::new();
    GAUGES.get_or_init(|| {
        let meter = opentelemetry::global::meter(actors::metrics::METER_NAME);
        Gauges {
            _pending: meter
                .u64_observable_gauge("notification_scheduler.reminders.pending")
                .with_unit("{reminder}")
                .with_description("Unsent reminders in the table")
                .with_callback(|gauge| {
                    if let Some(latest) = latest() {
                        gauge.observe(latest.pending, &[]);
                    }
                })
                .build(),
            _overdue: meter
                .u64_observable_gauge("notification_scheduler.reminders.overdue")
                .with_unit("{reminder}")
                .with_description("Unsent reminders whose notification_time has passed")
                .with_callback(|gauge| {
                    if let Some(latest) = latest() {
                        gauge.observe(latest.overdue, &[]);
                    }
                })
                .build(),
            _next_due: meter
                .f64_observable_gauge("notification_scheduler.next_due")
                .with_unit("s")
                .with_description(
                    "Seconds until the earliest unsent reminder (negative when overdue; absent when none)",
                )
                .with_callback(|gauge| {
                    if let Some(seconds) = latest().and_then(|latest| latest.next_due_s) {
                        gauge.observe(seconds, &[]);
                    }
                })
                .build(),
        }
    });
}

pub async fn run(pool: Pool) {
    let Some(client) = super::connection(&pool, "observe").await else {
        return;
    };
    match client.query_one(OBSERVE, &[]).await {
        Ok(row) => {
            let observation = Observation {
                pending: row.get::<_, i64>(0).unsigned_abs(),
                overdue: row.get::<_, i64>(1).unsigned_abs(),
                next_due_s: row.get(2),
            };
            *LATEST.lock().unwrap_or_else(|poison| poison.into_inner()) = Some(observation);
        }
        Err(err) => tracing::debug!(error = %err, "observing the schedule failed"),
    }
}
