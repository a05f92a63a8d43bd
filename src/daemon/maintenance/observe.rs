//! Pending, overdue, next-due and dead-letter gauges per kind, observed from the tables (a
//! dashboard must see a stuck backlog even when nothing is being delivered).

use std::collections::BTreeMap;
use std::sync::{Mutex, OnceLock};

use deadpool_postgres::Pool;
use opentelemetry::KeyValue;
use opentelemetry::metrics::ObservableGauge;

use crate::db::kind_sql;
use crate::kinds;

/// The latest observation of each kind, read by the gauges at each export. A
/// gauge with nothing to report (no observation yet, nothing pending) exports
/// no point rather than repeating a stale value.
static LATEST: Mutex<BTreeMap<&'static str, Observation>> = Mutex::new(BTreeMap::new());

#[derive(Clone, Copy)]
struct Observation {
    pending: u64,
    overdue: u64,
    next_due_s: Option<f64>,
    dead_lettered: u64,
}

/// Each kind's latest observation, with its `kind` attribute.
fn latest() -> Vec<([KeyValue; 1], Observation)> {
    LATEST
        .lock()
        .unwrap_or_else(|poison| poison.into_inner())
        .iter()
        .map(|(kind, observation)| ([KeyValue::new("kind", *kind)], *observation))
        .collect()
}

struct Gauges {
    _pending: ObservableGauge<u64>,
    _overdue: ObservableGauge<u64>,
    _next_due: ObservableGauge<f64>,
    _dead_lettered: ObservableGauge<u64>,
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
                .with_description("Pending events in the tables, by kind")
                .with_callback(|gauge| {
                    for (kind, latest) in latest() {
                        gauge.observe(latest.pending, &kind);
                    }
                })
                .build(),
            _overdue: meter
                .u64_observable_gauge("notification_scheduler.reminders.overdue")
                .with_unit("{reminder}")
                .with_description("Pending events whose time has passed, by kind")
                .with_callback(|gauge| {
                    for (kind, latest) in latest() {
                        gauge.observe(latest.overdue, &kind);
                    }
                })
                .build(),
            _next_due: meter
                .f64_observable_gauge("notification_scheduler.next_due")
                .with_unit("s")
                .with_description(
                    "Seconds until the earliest pending event, by kind (negative when overdue; absent when none)",
                )
                .with_callback(|gauge| {
                    for (kind, latest) in latest() {
                        if let Some(seconds) = latest.next_due_s {
                            gauge.observe(seconds, &kind);
                        }
                    }
                })
                .build(),
            _dead_lettered: meter
                .u64_observable_gauge("notification_scheduler.dead_lettered")
                .with_unit("{event}")
                .with_description(
                    "Dead-lettered events in the tables, waiting to be retried or discarded, by kind",
                )
                .with_callback(|gauge| {
                    for (kind, latest) in latest() {
                        gauge.observe(latest.dead_lettered, &kind);
                    }
                })
                .build(),
        }
    });
}

/// Observes every kind with one statement (docs/scaling.md, "Idle cost").
pub async fn run(pool: Pool) {
    static OBSERVE: OnceLock<String> = OnceLock::new();
    let Some(client) = super::connection(&pool, "observe").await else {
        return;
    };
    let sql = OBSERVE.get_or_init(|| kind_sql::observe(kinds::ALL));
    let rows = async {
        let statement = client.prepare_cached(sql).await?;
        client.query(&statement, &[]).await
    };
    let rows = match rows.await {
        Ok(rows) => rows,
        Err(err) => {
            tracing::debug!(error = %crate::db::describe(&err), "observing the schedule failed");
            return;
        }
    };
    let mut latest = LATEST.lock().unwrap_or_else(|poison| poison.into_inner());
    for row in rows {
        let name: &str = row.get("kind");
        let Some(kind) = kinds::by_name(name) else {
            continue;
        };
        latest.insert(
            kind.name,
            Observation {
                pending: row.get::<_, i64>("pending").unsigned_abs(),
                overdue: row.get::<_, i64>("overdue").unsigned_abs(),
                next_due_s: row.get("next_due_s"),
                dead_lettered: row.get::<_, i64>("dead_lettered").unsigned_abs(),
            },
        );
    }
}
