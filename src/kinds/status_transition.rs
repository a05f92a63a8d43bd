//! Game status transitions: "game G becomes STATUS" at its time (IN_PROGRESS
//! at the start, COMPLETED after the expected duration, ARCHIVED later). A
//! transition never expires: a daemon that was down delivers it however late.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;
use tokio_postgres::Row;

use super::{EnvelopeMessage, Expiry, Kind, Message, Progress, Subject};

/// The routing key of status transitions.
pub const ROUTING_KEY: &str = "game.status_transition_due";

/// The status transition kind.
pub const KIND: Kind = Kind {
    name: "status_transition",
    table: "game_status_schedule",
    time_column: "transition_time",
    progress: Progress::Flag("executed"),
    done_at_column: "executed_at",
    channel: "game_status_schedule_changed",
    message: Message::Envelope(EnvelopeMessage {
        event_type: "game.status_transition_due",
        default_routing_key: ROUTING_KEY,
        // The game's id as text: a UUID, or a legacy string id in adopted databases.
        data_columns: "s.game_id::text AS game_id, s.target_status",
        data,
    }),
    expiry: Expiry::Never,
    subject: Subject::Game {
        label: "'to ' || s.target_status",
    },
};

fn data(row: &Row) -> serde_json::Value {
    message_data(
        row.get("game_id"),
        row.get("target_status"),
        row.get("transition_time"),
    )
}

/// The envelope's `data`: `{"game_id": …, "target_status": …,
/// "transition_time": …}`, the time in UTC ISO 8601 like the envelope's
/// `timestamp`.
pub fn message_data(
    game_id: &str,
    target_status: &str,
    transition_time: DateTime<Utc>,
) -> serde_json::Value {
    json!({
        "game_id": game_id,
        "target_status": target_status,
        "transition_time": transition_time.to_rfc3339_opts(SecondsFormat::Micros, false),
    })
}
