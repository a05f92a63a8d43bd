//! Values exchanged between the actors and the ports.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

/// A reminder claimed for delivery, with what the database computed about it
/// at claim time (with its own clock, so that no host's clock can make a
/// reminder early).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DueReminder {
    /// The schedule row's id; also the message id consumers de-duplicate on.
    pub id: Uuid,
    /// The game's id as text: a UUID, or a legacy string id in adopted databases.
    pub game_id: String,
    /// Minutes before the game start.
    pub reminder_minutes: i32,
    /// When the reminder was due.
    pub notification_time: DateTime<Utc>,
    /// The game has started and the reminder is past its grace period: it is
    /// recorded as skipped instead of being published.
    pub stale: bool,
    /// How long the message stays useful (until the game starts). `None` for
    /// rows without a game start, which never expire.
    pub expires_in: Option<Duration>,
    /// Claim time minus `notification_time`.
    pub lateness: Duration,
    /// W3C trace context of the request that scheduled the reminder.
    pub traceparent: Option<String>,
}

/// The earliest pending reminder, as seen by the database.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NextDue {
    /// Its notification time.
    pub at: DateTime<Utc>,
    /// Time left until `at` by the database clock; zero when already due.
    pub delay: Duration,
}

/// What a change notification says. Always a hint: the table is the truth.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeHint {
    /// A statement added, moved or removed pending reminders, the earliest of
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
