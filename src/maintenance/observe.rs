//! Pending, overdue and next-due gauges, observed from the table (a dashboard
//! must see a stuck backlog even when nothing is being delivered).

use std::sync::OnceLock;

use deadpool_postgres::Pool;
use opentelemetry::metrics::Gauge;

/// One scan of the partial index on pending rows.
const OBSERVE: &str = "SELECT count(*)::bigint, \
       count(*) FILTER (WHERE notification_time <= clock_timestamp())::bigint, \
       extract(epoch FROM min(notification_time) - clock_timestamp())::float8 \
  FROM notification_schedule WHERE NOT sent";

struct Gauges {
    pending: Gauge<u64>,
    overdue: Gauge<u64>,
    next_due: Gauge<f64>,
}

fn gauges() -> &'static Gauges {
    static GAUGES: OnceLock<Gauges> = OnceLock::new();
    GAUGES.get_or_init(|| {
        let meter = opentelemetry::global::meter(actors::metrics::METER_NAME);
        Gauges {
            pending: meter
                .u64_gauge("notification_scheduler.reminders.pending")
                .with_unit("{reminder}")
                .with_description("Unsent reminders in the table")
                .build(),
            overdue: meter
                .u64_gauge("notification_scheduler.reminders.overdue")
                .with_unit("{reminder}")
                .with_description("Unsent reminders whose notification_time has passed")
                .build(),
            next_due: meter
                .f64_gauge("notification_scheduler.next_due")
                .with_unit("s")
                .with_description(
                    "Seconds until the earliest unsent reminder (negative when overdue; absent when none)",
                )
                .build(),
        }
    })
}

pub async fn run(pool: Pool) {
    let Some(client) = super::connection(&pool, "observe").await else {
        return;
    };
    match client.query_one(OBSERVE, &[]).await {
        Ok(row) => {
            let gauges = gauges();
            gauges
                .pending
                .record(row.get::<_, i64>(0).unsigned_abs(), &[]);
            gauges
                .overdue
                .record(row.get::<_, i64>(1).unsigned_abs(), &[]);
            if let Some(seconds) = row.get::<_, Option<f64>>(2) {
                gauges.next_due.record(seconds, &[]);
            }
        }
        Err(err) => tracing::debug!(error = %err, "observing the schedule failed"),
    }
}
