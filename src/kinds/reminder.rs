//! Reminders: "game G starts in N minutes", the original kind. Its table,
//! channel, routing key and body are the wire contract with existing writers
//! and consumers (docs/ARCHITECTURE.md, "Schema").

use serde_json::json;
use tokio_postgres::Row;

use super::{EnvelopeMessage, Expiry, Kind, Message, Progress, Subject};

/// The reminder kind.
pub const KIND: Kind = Kind {
    name: "reminder",
    table: "notification_schedule",
    time_column: "notification_time",
    progress: Progress::Flag("sent"),
    done_at_column: "sent_at",
    channel: "notification_schedule_changed",
    message: Message::Envelope(EnvelopeMessage {
        event_type: "game.reminder_due",
        default_routing_key: "game.reminder_due",
        // The game's id as text: a UUID, or a legacy string id in adopted databases.
        data_columns: "s.game_id::text AS game_id, s.reminder_minutes",
        data,
    }),
    expiry: Expiry::AtGameStart,
    subject: Subject::Game {
        label: "s.reminder_minutes || ' min before'",
    },
};

fn data(row: &Row) -> serde_json::Value {
    message_data(row.get("game_id"), row.get("reminder_minutes"))
}

/// The envelope's `data`: `{"game_id": …, "reminder_minutes": …}`.
pub fn message_data(game_id: &str, reminder_minutes: i32) -> serde_json::Value {
    json!({ "game_id": game_id, "reminder_minutes": reminder_minutes })
}
