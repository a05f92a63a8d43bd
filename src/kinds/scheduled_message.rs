//! Scheduled messages: any RabbitMQ message an application wants published at
//! `deliver_at`, written by SQL or through the API (`/messages`). The row's
//! payload is published unchanged, with its headers, to its exchange and
//! routing key; a message whose `expires_at` has passed when it comes due is
//! marked expired instead (docs/scheduled-messages.md).

use super::{Expiry, Kind, Message, Progress, Subject};

/// The scheduled message kind.
pub const KIND: Kind = Kind {
    name: "scheduled_message",
    table: "scheduled_message",
    time_column: "deliver_at",
    progress: Progress::State,
    done_at_column: "sent_at",
    channel: "scheduled_message_changed",
    message: Message::Stored,
    expiry: Expiry::AtColumn("expires_at"),
    subject: Subject::Message,
};
