//! The kinds of scheduled event. Each is declared once, as a [`Kind`]: its
//! table and columns, its notification channel, its message, its expiry rule.
//! The one delivery pipeline (claims, the deadline, confirms, retention,
//! metrics) works from these declarations, so adding a kind is a migration
//! plus one declaration here.
//!
//! - [`reminder`]: "game G starts in N minutes" (`notification_schedule`).
//! - [`status_transition`]: "game G becomes STATUS" (`game_status_schedule`).
//! - [`scheduled_message`]: any message an application wants published at a
//!   time (`scheduled_message`).

pub mod reminder;
pub mod scheduled_message;
pub mod status_transition;

use std::sync::Arc;

use serde_json::Value;
use tokio_postgres::Row;

/// One kind of scheduled event.
#[derive(Debug)]
pub struct Kind {
    /// Its name in metrics, spans, logs and `watch` (`kind="…"`).
    pub name: &'static str,
    /// The table of its rows. Every such table has `id uuid`, `outcome text`
    /// and `traceparent text` beside the columns named below.
    pub table: &'static str,
    /// When a row is due (`timestamptz`).
    pub time_column: &'static str,
    /// How a row records that it has been dealt with.
    pub progress: Progress,
    /// When it was dealt with (`timestamptz`).
    pub done_at_column: &'static str,
    /// The channel its statement-level trigger notifies, with the payload
    /// `{"operation": …, "earliest_<time_column>": …}`.
    pub channel: &'static str,
    /// What is published for a row.
    pub message: Message,
    /// When a late row is no longer worth publishing.
    pub expiry: Expiry,
    /// What a row is about, as the operator console shows it.
    pub subject: Subject,
}

/// What a kind's rows are about, for the operator console.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Subject {
    /// An event of the game in the row's `game_id` column; `label` is an SQL
    /// expression on the row (alias `s`) saying which event, as text.
    Game { label: &'static str },
    /// A message of its own, shown by its routing key.
    Message,
}

/// How a kind's rows record that they have been dealt with. Every kind's
/// table also has `attempts`, `last_error`, `next_attempt_at` and
/// `dead_lettered_at` (migrations/0007_delivery_attempts.sql).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// A boolean column, true once the row was published or skipped. A dead
    /// letter keeps it false and has `dead_lettered_at` set.
    Flag(&'static str),
    /// A `state` text column, `'pending'` until the daemon publishes the row
    /// (`'sent'`), finds it expired (`'expired'`) or dead-letters it
    /// (`'dead_lettered'`), or its writer cancels it (`'cancelled'`).
    State,
}

impl Progress {
    /// SQL predicate: the row is still to be delivered.
    pub fn pending(self) -> String {
        self.pending_of("")
    }

    /// [`Self::pending`] with the columns qualified by `alias` (`"s."`).
    pub fn pending_of(self, alias: &str) -> String {
        match self {
            Self::Flag(done) => format!("NOT {alias}{done} AND {alias}dead_lettered_at IS NULL"),
            Self::State => format!("{alias}state = 'pending'"),
        }
    }

    /// SQL predicate: the row is finished with (the retention sweep's); dead
    /// letters are not.
    pub fn done(self) -> String {
        self.done_of("")
    }

    /// [`Self::done`] with the columns qualified by `alias` (`"s."`).
    pub fn done_of(self, alias: &str) -> String {
        match self {
            Self::Flag(done) => format!("{alias}{done}"),
            Self::State => format!("{alias}state IN ('sent', 'expired', 'cancelled')"),
        }
    }

    /// SQL assignment marking a claimed row of table alias `s` dealt with;
    /// `stale` is the SQL predicate saying it came too late to be published.
    pub fn mark_done(self, stale: &str) -> String {
        match self {
            Self::Flag(done) => format!("{done} = true"),
            Self::State => format!("state = CASE WHEN {stale} THEN 'expired' ELSE 'sent' END"),
        }
    }

    /// SQL assignment returning a claimed row to pending, or to the dead
    /// letters when `dead` (an SQL predicate) holds.
    pub fn mark_undelivered(self, dead: &str) -> String {
        match self {
            Self::Flag(done) => format!("{done} = false"),
            Self::State => {
                format!("state = CASE WHEN {dead} THEN 'dead_lettered' ELSE 'pending' END")
            }
        }
    }

    /// SQL assignment finishing a dead letter without delivering it.
    pub fn discard(self) -> String {
        match self {
            Self::Flag(done) => format!("{done} = true"),
            Self::State => "state = 'cancelled'".to_owned(),
        }
    }

    /// SQL assignment taking a dead letter back to pending.
    pub fn requeue(self) -> &'static str {
        match self {
            Self::Flag(_) => "dead_lettered_at = NULL",
            Self::State => "state = 'pending', dead_lettered_at = NULL",
        }
    }
}

/// What a kind publishes for a row.
#[derive(Debug)]
pub enum Message {
    /// The service's envelope (`{"event_type", "timestamp", "data",
    /// "trace_id"}`) on the configured exchange.
    Envelope(EnvelopeMessage),
    /// The row's own `payload`, `headers`, `exchange` and `routing_key`,
    /// published as written.
    Stored,
}

/// How an envelope kind builds its message.
#[derive(Debug)]
pub struct EnvelopeMessage {
    /// The envelope's `event_type`.
    pub event_type: &'static str,
    /// The routing key its messages are published with, unless configured.
    pub default_routing_key: &'static str,
    /// Row columns (as the claim returns them, qualified by `s.`) that the
    /// message's `data` is built from.
    pub data_columns: &'static str,
    /// Builds the envelope's `data` object from a claimed row.
    pub data: fn(&Row) -> Value,
}

impl Message {
    /// Row columns (qualified by `s.`) the claim returns to build the message.
    pub fn columns(&self) -> &'static str {
        match self {
            Self::Envelope(envelope) => envelope.data_columns,
            Self::Stored => "s.exchange, s.routing_key, s.payload::text AS payload, s.headers",
        }
    }
}

/// When an event of a kind stops being useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Once its game has started (`game_scheduled_at`) and it is more than
    /// the stale grace late, it is skipped; its message expires then. Rows
    /// without a game start never expire.
    AtGameStart,
    /// At the time in this (nullable) column: a row that comes due after it
    /// is not published, and its message expires then.
    AtColumn(&'static str),
    /// Never: delivered however late, without an AMQP expiration.
    Never,
}

/// Every kind this daemon delivers.
pub const ALL: [&Kind; 3] = [
    &reminder::KIND,
    &status_transition::KIND,
    &scheduled_message::KIND,
];

/// The kind named `name`.
pub fn by_name(name: &str) -> Option<&'static Kind> {
    ALL.iter().copied().find(|kind| kind.name == name)
}

/// A kind as one daemon runs it: with the routing key its envelope messages
/// get (`None` for kinds whose rows name their own).
#[derive(Debug, Clone)]
pub struct Delivered {
    pub kind: &'static Kind,
    pub routing_key: Option<Arc<str>>,
}

/// Every kind with its routing key; reminders use `reminder_routing_key`
/// (`RABBITMQ_ROUTING_KEY`), the other envelope kinds their declared key.
pub fn delivered(reminder_routing_key: &str) -> Vec<Delivered> {
    ALL.iter()
        .map(|&kind| Delivered {
            kind,
            routing_key: match &kind.message {
                Message::Envelope(_) if kind.name == reminder::KIND.name => {
                    Some(Arc::from(reminder_routing_key))
                }
                Message::Envelope(envelope) => Some(Arc::from(envelope.default_routing_key)),
                Message::Stored => None,
            },
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_reminders_take_the_configured_routing_key() {
        let delivered = delivered("custom.reminders");
        let keys: Vec<(&str, Option<&str>)> = delivered
            .iter()
            .map(|d| (d.kind.name, d.routing_key.as_deref()))
            .collect();
        assert_eq!(
            keys,
            [
                ("reminder", Some("custom.reminders")),
                ("status_transition", Some("game.status_transition_due")),
                ("scheduled_message", None),
            ]
        );
    }
}
