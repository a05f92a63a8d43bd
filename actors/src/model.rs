//! Values exchanged between the actors and the ports.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A scheduled event of any kind, claimed for delivery, with what the
/// database computed about it at claim time (with its own clock, so that no
/// host's clock can make an event early).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueEvent {
    /// Its kind's name (`reminder`, `status_transition`): an attribute of every
    /// metric and span of its delivery.
    pub kind: &'static str,
    /// The schedule row's id; also the message id consumers de-duplicate on.
    pub id: Uuid,
    /// When the event was due.
    pub due_at: DateTime<Utc>,
    /// Its kind's expiry rule says it is too late to be useful: it is recorded
    /// as skipped instead of being published.
    pub stale: bool,
    /// How long the message stays useful. `None` for events that never expire.
    pub expires_in: Option<Duration>,
    /// How late the event was by the claim's latest database clock reading;
    /// zero for an event claimed ahead.
    pub lateness: Duration,
    /// How long before `due_at` that reading was: an event claimed ahead of
    /// its time is published this long after the claim's answer arrived,
    /// which is after the reading, so never early by the database clock.
    /// Zero for an event already due.
    pub ahead: Duration,
    /// W3C trace context of the request that scheduled the event.
    pub traceparent: Option<String>,
    /// What to publish, built by the store from the row.
    pub message: Outbound,
}

/// The message of a due event: where it goes and what it says. The actors
/// pass it through; the broker adapter encodes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outbound {
    /// The exchange; `None` for the configured one.
    pub exchange: Option<Arc<str>>,
    /// The routing key.
    pub routing_key: Arc<str>,
    /// What the message says.
    pub body: Body,
}

/// The body of an outbound message. Shared, as the claim keeps the event
/// while its copy is published.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// The service's envelope around an event of one of its own kinds.
    Envelope {
        /// The envelope's `event_type`.
        event_type: &'static str,
        /// The envelope's `data` object.
        data: Arc<serde_json::Value>,
    },
    /// A payload published byte for byte as its writer stored it.
    Stored {
        /// The JSON text of the body.
        payload: Arc<str>,
        /// The writer's AMQP headers: a JSON object of string, number and
        /// boolean values.
        headers: Option<Arc<serde_json::Map<String, serde_json::Value>>>,
    },
}

/// The earliest pending event of any kind, as seen by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDue {
    /// When it is due.
    pub at: DateTime<Utc>,
    /// Time left until `at` by the database clock; zero when already due.
    pub delay: Duration,
}

/// What a change notification says. Always a hint: the table is the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeHint {
    /// A statement added, moved or removed pending events, the earliest of
    /// which (old or new time) is `earliest`.
    Changed { earliest: DateTime<Utc> },
    /// A payload this version does not understand (an older writer's trigger,
    /// a hand-sent NOTIFY): something may have changed.
    Unrecognised {
        /// The payload, truncated for logging.
        payload: String,
    },
}

/// What the broker said about one published message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublishOutcome {
    /// Routed and confirmed.
    Confirmed,
    /// The broker refused it (negative acknowledgement).
    Nacked,
    /// Confirmed, but returned as unroutable: no queue is bound for it.
    Returned,
    /// Not published: the broker adapter found it cannot be (its exchange
    /// does not exist).
    Unpublishable(String),
    /// No answer: timeout, or the channel or connection closed first.
    Unknown(String),
}

/// Truncates a string to at most `max` bytes on a character boundary, for logs.
pub fn truncate_for_log(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_owned();
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &text[..end], text.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate_for_log("short", 10), "short");
        assert_eq!(truncate_for_log("ééé", 3), "é… (6 bytes)");
    }
}
