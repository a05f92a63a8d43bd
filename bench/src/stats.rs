//! Percentiles and per-message accounting.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use serde::Serialize;
use uuid::Uuid;

use notification_scheduler::broker::consumer::Received;

/// Lateness of received messages against their notification time, in
/// milliseconds, plus what was early, missing or repeated.
#[derive(Debug, Clone, Serialize)]
pub struct Lateness {
    pub expected: usize,
    pub received: usize,
    /// The earliest: with every row due at one instant, the first delivery.
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub early: usize,
    pub missing: usize,
    pub duplicates: usize,
    pub unexpected: usize,
    /// The same by the envelope's `timestamp` (the daemon's clock as it hands
    /// each message to the broker) instead of the consumer's receipt: the
    /// daemon's share, without the broker hop and the consumer's wake-up.
    /// NaN where no message has an envelope (scheduled messages go out as
    /// written).
    pub published: Published,
}

/// Lateness by the envelope's publish time, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Published {
    pub min_ms: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Delivery accounting without timing: for the backlog and ceiling runs.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Accounting {
    pub missing: usize,
    pub duplicates: usize,
    pub unexpected: usize,
}

impl Accounting {
    pub fn is_clean(&self) -> bool {
        self.missing == 0 && self.duplicates == 0 && self.unexpected == 0
    }
}

/// Counts missing, repeated and unknown message ids.
pub fn account(expected: &HashMap<Uuid, DateTime<Utc>>, received: &[Received]) -> Accounting {
    let mut seen: HashMap<Uuid, usize> = HashMap::with_capacity(received.len());
    let mut unexpected = 0;
    for message in received {
        match message
            .message_id
            .as_deref()
            .and_then(|id| id.parse::<Uuid>().ok())
        {
            Some(id) if expected.contains_key(&id) => *seen.entry(id).or_default() += 1,
            _ => unexpected += 1,
        }
    }
    Accounting {
        missing: expected.len() - seen.len(),
        duplicates: seen.values().map(|count| count - 1).sum(),
        unexpected,
    }
}

/// Lateness of the first delivery of each expected message.
pub fn lateness(expected: &HashMap<Uuid, DateTime<Utc>>, received: &[Received]) -> Lateness {
    let accounting = account(expected, received);
    let mut first: HashMap<Uuid, &Received> = HashMap::with_capacity(received.len());
    for message in received {
        if let Some(id) = message
            .message_id
            .as_deref()
            .and_then(|id| id.parse::<Uuid>().ok())
        {
            first.entry(id).or_insert(message);
        }
    }
    let mut late_ms: Vec<f64> = Vec::with_capacity(first.len());
    let mut published_ms: Vec<f64> = Vec::new();
    let mut early = 0;
    for (id, message) in &first {
        let Some(due) = expected.get(id) else {
            continue;
        };
        let ms = milliseconds(message.received_at - *due);
        if ms < 0.0 {
            early += 1;
        }
        late_ms.push(ms);
        if let Some(published_at) = envelope_timestamp(&message.body) {
            published_ms.push(milliseconds(published_at - *due));
        }
    }
    late_ms.sort_by(f64::total_cmp);
    published_ms.sort_by(f64::total_cmp);
    Lateness {
        expected: expected.len(),
        received: received.len(),
        min_ms: late_ms.first().copied().unwrap_or(f64::NAN),
        p50_ms: percentile(&late_ms, 50.0),
        p90_ms: percentile(&late_ms, 90.0),
        p99_ms: percentile(&late_ms, 99.0),
        max_ms: late_ms.last().copied().unwrap_or(f64::NAN),
        early,
        missing: accounting.missing,
        duplicates: accounting.duplicates,
        unexpected: accounting.unexpected,
        published: Published {
            min_ms: published_ms.first().copied().unwrap_or(f64::NAN),
            p50_ms: percentile(&published_ms, 50.0),
            p99_ms: percentile(&published_ms, 99.0),
        },
    }
}

fn milliseconds(duration: chrono::Duration) -> f64 {
    duration.num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0
}

/// The `timestamp` of an event envelope (docs/WIRE.md), set as the daemon
/// encodes the message for its publish.
pub fn envelope_timestamp(body: &[u8]) -> Option<DateTime<Utc>> {
    #[derive(serde::Deserialize)]
    struct Stamped<'a> {
        timestamp: &'a str,
    }
    let stamped: Stamped = serde_json::from_slice(body).ok()?;
    stamped.timestamp.parse().ok()
}

/// Nearest-rank percentile of sorted values.
// Not hdrhistogram: lateness is negative for early messages, and a few thousand samples sort exactly.
pub fn percentile(sorted: &[f64], percent: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((percent / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
        assert!(percentile(&[], 50.0).is_nan());
    }

    fn received(id: Uuid, at: DateTime<Utc>) -> Received {
        Received {
            message_id: Some(id.to_string()),
            body: Vec::new(),
            properties: lapin::BasicProperties::default(),
            received_at: at,
        }
    }

    #[test]
    fn accounting_finds_early_missing_repeated_and_unknown_messages() {
        let due: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let (on_time, early, missing) = (Uuid::new_v4(), Uuid::new_v4(), Uuid::new_v4());
        let expected: HashMap<_, _> = [(on_time, due), (early, due), (missing, due)].into();
        let messages = [
            received(on_time, due + chrono::Duration::milliseconds(3)),
            received(on_time, due + chrono::Duration::milliseconds(9)),
            received(early, due - chrono::Duration::milliseconds(1)),
            received(Uuid::new_v4(), due),
        ];
        let stats = lateness(&expected, &messages);
        assert_eq!(
            (
                stats.early,
                stats.missing,
                stats.duplicates,
                stats.unexpected
            ),
            (1, 1, 1, 1)
        );
        assert_eq!(stats.max_ms, 3.0);
        assert!(
            stats.published.min_ms.is_nan(),
            "no envelope, no publish time"
        );
    }

    #[test]
    fn the_publish_time_is_the_envelope_timestamp() {
        let due: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        let id = Uuid::new_v4();
        let mut message = received(id, due + chrono::Duration::milliseconds(4));
        message.body = br#"{"event_type":"game.reminder_due","timestamp":"2030-01-01T00:00:00.000250+00:00","data":{}}"#.to_vec();
        let stats = lateness(&[(id, due)].into(), &[message]);
        assert_eq!(stats.min_ms, 4.0);
        assert_eq!(
            (stats.published.min_ms, stats.published.p99_ms),
            (0.25, 0.25)
        );
    }
}
