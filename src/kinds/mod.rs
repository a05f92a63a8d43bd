//! The kinds of scheduled event. Each is declared once, as a [`Kind`]: its
//! table and columns, its notification channel, its message, its expiry rule.
//! The one delivery pipeline (claims, the deadline, confirms, retention,
//! metrics) works from these declarations, so adding a kind is a migration
//! plus one declaration here.
//!
//! - [`reminder`]: "game G starts in N minutes" (`notification_schedule`).
//! - [`status_transition`]: "game G becomes STATUS" (`game_status_schedule`).

pub mod reminder;
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
    /// Whether a row has been dealt with (`boolean`).
    pub done_column: &'static str,
    /// When it was dealt with (`timestamptz`).
    pub done_at_column: &'static str,
    /// The channel its statement-level trigger notifies, with the payload
    /// `{"operation": …, "earliest_<time_column>": …}`.
    pub channel: &'static str,
    /// The envelope's `event_type`.
    pub event_type: &'static str,
    /// The routing key its messages are published with, unless configured.
    pub default_routing_key: &'static str,
    /// Row columns (as the claim returns them, qualified by `s.`) that the
    /// message's `data` is built from.
    pub data_columns: &'static str,
    /// Builds the envelope's `data` object from a claimed row.
    pub data: fn(&Row) -> Value,
    /// When a late row is no longer worth publishing.
    pub expiry: Expiry,
}

/// When an event of a kind stops being useful.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Once its game has started (`game_scheduled_at`) and it is more than
    /// the stale grace late, it is skipped; its message expires then. Rows
    /// without a game start never expire.
    AtGameStart,
    /// Never: delivered however late, without an AMQP expiration.
    Never,
}

/// Every kind this daemon delivers.
pub const ALL: [&Kind; 2] = [&reminder::KIND, &status_transition::KIND];

/// A kind as one daemon runs it: with the routing key its messages get.
#[derive(Debug, Clone)]
pub struct Delivered {
    pub kind: &'static Kind,
    pub routing_key: Arc<str>,
}

/// Every kind with its routing key; reminders use `reminder_routing_key`
/// (`RABBITMQ_ROUTING_KEY`), the others their declared key.
pub fn delivered(reminder_routing_key: &str) -> Vec<Delivered> {
    ALL.iter()
        .map(|&kind| Delivered {
            kind,
            routing_key: if kind.name == reminder::KIND.name {
                Arc::from(reminder_routing_key)
            } else {
                Arc::from(kind.default_routing_key)
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
        let keys: Vec<(&str, &str)> = delivered
            .iter()
            .map(|d| (d.kind.name, &*d.routing_key))
            .collect();
        assert_eq!(
            keys,
            [
                ("reminder", "custom.reminders"),
                ("status_transition", "game.status_transition_due"),
            ]
        );
    }
}
