//! The daemon's OpenTelemetry instruments (names and units in
//! docs/observability.md).
//!
//! Instruments come from the global meter provider, created on first use, so
//! they export wherever the binary installed a provider and cost nothing where
//! none is installed (tests, or no collector configured).

use std::sync::OnceLock;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::metrics::{Counter, Histogram, ObservableGauge};

/// Instrumentation scope of every instrument.
pub const METER_NAME: &str = "notification-scheduler";

/// Millisecond bucket bounds of the lateness histogram: fine below 25 ms
/// (the product's target) and coarse up to a minute (backlogs).
const LATENESS_BUCKETS_MS: [f64; 22] = [
    0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 7.5, 10.0, 15.0, 25.0, 50.0, 75.0, 100.0, 250.0, 500.0, 1_000.0,
    2_500.0, 5_000.0, 10_000.0, 30_000.0, 60_000.0, 300_000.0,
];

const BATCH_SIZE_BUCKETS: [f64; 12] = [
    1.0, 2.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1_000.0, 2_500.0, 10_000.0,
];

/// What became of a claimed event.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Outcome {
    /// Confirmed by the broker and recorded as sent.
    Sent,
    /// Its game had started: recorded as skipped, not published.
    SkippedStale,
    /// Returned by the broker as unroutable; pending again.
    Returned,
    /// Refused or left unconfirmed by the broker; pending again.
    Failed,
}

impl Outcome {
    fn as_str(self) -> &'static str {
        match self {
            Self::Sent => "sent",
            Self::SkippedStale => "skipped_stale",
            Self::Returned => "returned",
            Self::Failed => "failed",
        }
    }
}

struct Instruments {
    delivered: Counter<u64>,
    retries: Counter<u64>,
    dead_letters: Counter<u64>,
    lateness: Histogram<f64>,
    batch_size: Histogram<u64>,
    reconnects: Counter<u64>,
    restarts: Counter<u64>,
    _broker_blocked: ObservableGauge<u64>,
}

/// Read by the broker-blocked gauge at each export, so the series exists (as
/// 0) before the first alarm.
static BROKER_BLOCKED: AtomicBool = AtomicBool::new(false);

fn instruments() -> &'static Instruments {
    static INSTRUMENTS: OnceLock<Instruments> = OnceLock::new();
    INSTRUMENTS.get_or_init(|| {
        let meter = opentelemetry::global::meter(METER_NAME);
        Instruments {
            delivered: meter
                .u64_counter("notification_scheduler.reminders")
                .with_unit("{reminder}")
                .with_description(
                    "Claimed events by kind and outcome: sent, skipped_stale, returned, failed",
                )
                .build(),
            retries: meter
                .u64_counter("notification_scheduler.retries")
                .with_unit("{event}")
                .with_description(
                    "Events the broker refused, by kind, that wait for another attempt",
                )
                .build(),
            dead_letters: meter
                .u64_counter("notification_scheduler.dead_letters")
                .with_unit("{event}")
                .with_description("Events dead-lettered after their last attempt, by kind")
                .build(),
            lateness: meter
                .f64_histogram("notification_scheduler.reminder.lateness")
                .with_unit("ms")
                .with_description("Time from an event's due time to the broker's confirm, by kind")
                .with_boundaries(LATENESS_BUCKETS_MS.to_vec())
                .build(),
            batch_size: meter
                .u64_histogram("notification_scheduler.batch.size")
                .with_unit("{reminder}")
                .with_description("Events claimed per delivery batch")
                .with_boundaries(BATCH_SIZE_BUCKETS.to_vec())
                .build(),
            reconnects: meter
                .u64_counter("notification_scheduler.reconnects")
                .with_unit("{connection}")
                .with_description(
                    "New connections after a lost one, by component: listener, publisher",
                )
                .build(),
            restarts: meter
                .u64_counter("notification_scheduler.actor.restarts")
                .with_unit("{restart}")
                .with_description("Actor restarts by the supervisor, by actor")
                .build(),
            _broker_blocked: meter
                .u64_observable_gauge("notification_scheduler.broker.blocked")
                .with_unit("{state}")
                .with_description("1 while the broker blocks publishing (resource alarm), else 0")
                .with_callback(|gauge| {
                    gauge.observe(u64::from(BROKER_BLOCKED.load(Ordering::Relaxed)), &[]);
                })
                .build(),
        }
    })
}

/// Counts `count` events of `kind` that ended with `outcome`. The instrument
/// keeps the name it had when reminders were the only kind, so existing
/// dashboards and alerts go on working; `kind` tells the kinds apart.
pub fn events(kind: &'static str, outcome: Outcome, count: usize) {
    if count > 0 {
        instruments().delivered.add(
            count as u64,
            &[
                KeyValue::new("kind", kind),
                KeyValue::new("outcome", outcome.as_str()),
            ],
        );
    }
}

/// Counts `count` refused events of `kind` that will be tried again.
pub fn retries(kind: &'static str, count: usize) {
    if count > 0 {
        instruments()
            .retries
            .add(count as u64, &[KeyValue::new("kind", kind)]);
    }
}

/// Counts `count` events of `kind` dead-lettered after their last attempt.
pub fn dead_lettered(kind: &'static str, count: usize) {
    if count > 0 {
        instruments()
            .dead_letters
            .add(count as u64, &[KeyValue::new("kind", kind)]);
    }
}

/// Records how late an event of `kind` was confirmed.
pub fn lateness(kind: &'static str, late: Duration) {
    instruments()
        .lateness
        .record(late.as_secs_f64() * 1_000.0, &[KeyValue::new("kind", kind)]);
}

/// Records the size of a claimed batch.
pub fn batch_size(size: usize) {
    instruments().batch_size.record(size as u64, &[]);
}

/// Counts a new connection of `component` after a lost one.
pub fn reconnected(component: &'static str) {
    instruments()
        .reconnects
        .add(1, &[KeyValue::new("component", component)]);
}

/// Counts a restart of `actor`.
pub fn restarted(actor: &'static str) {
    instruments()
        .restarts
        .add(1, &[KeyValue::new("actor", actor)]);
}

/// Records whether the broker blocks publishing.
pub fn broker_blocked(blocked: bool) {
    BROKER_BLOCKED.store(blocked, Ordering::Relaxed);
}

/// Creates the instruments now, so that every series is exported from the
/// start rather than from its first event.
pub fn register() {
    instruments();
}
