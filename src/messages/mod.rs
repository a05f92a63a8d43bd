//! The scheduled-messages domain: rows of `scheduled_message` (migration
//! 0006), any RabbitMQ message an application wants published at
//! `deliver_at`, as the API creates, reads, edits and cancels them. The daemon
//! publishes them; [`allowed`] says where the API may schedule them.
//!
//! A daemon may claim a pending row at any moment: its claim locks the row
//! (`FOR UPDATE SKIP LOCKED`) in a transaction kept open until the broker
//! confirms, then marks it `sent`. So every change here is one `UPDATE … WHERE
//! id = $1 AND state = 'pending'`. It waits for a claim in flight and then,
//! under READ COMMITTED, re-checks the state of the row as the claim left it:
//! a change that commits first is what the daemon finds, one that loses the
//! race finds the row sent and changes nothing. The wait is bounded by a lock
//! timeout, which ends the change with [`MessageError::Busy`].

pub mod allowed;

use std::time::Duration;

use allowed::Refusal;
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Transaction};
use serde_json::value::RawValue;
use tokio_postgres::Row;
use tokio_postgres::error::SqlState;
use uuid::Uuid;

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum MessageState {
    /// Waiting for `deliver_at`.
    Pending,
    /// Published and confirmed by the broker.
    Sent,
    /// Came due after `expires_at`; not published.
    Expired,
    /// Cancelled before it was claimed, or discarded as a dead letter; never
    /// published.
    Cancelled,
    /// Refused by the broker on every attempt; kept until an operator retries
    /// or discards it (`notification-scheduler dead-letters`).
    DeadLettered,
}

impl MessageState {
    /// The `state` column's value.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Sent => "sent",
            Self::Expired => "expired",
            Self::Cancelled => "cancelled",
            Self::DeadLettered => "dead_lettered",
        }
    }

    /// The state a `state` column value names.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "pending" => Some(Self::Pending),
            "sent" => Some(Self::Sent),
            "expired" => Some(Self::Expired),
            "cancelled" => Some(Self::Cancelled),
            "dead_lettered" => Some(Self::DeadLettered),
            _ => None,
        }
    }
}

/// A failed message operation.
#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("no message with this id")]
    NotFound,
    /// A create whose key names a message with other content.
    #[error("a message with this key exists with different content")]
    KeyTaken,
    /// A change to a message that has left the pending state.
    #[error("the message is {}, no longer pending", .0.as_str())]
    NotPending(MessageState),
    /// A daemon's claim held the row longer than the lock timeout: the message
    /// is being published.
    #[error("the message is being delivered now")]
    Busy,
    /// A change would leave `expires_at` at or before `deliver_at`.
    #[error("expires_at must be after deliver_at")]
    ExpiresBeforeDelivery,
    /// The row changed between the statements of one request (a concurrent
    /// change or a direct SQL write); the request may be retried.
    #[error("the message changed while the request ran")]
    Changed,
    /// The message goes where the caller may not send messages.
    #[error(transparent)]
    Refused(Refusal),
    #[error("the stored payload of message {id} is not JSON: {source}")]
    StoredPayload {
        id: Uuid,
        #[source]
        source: serde_json::Error,
    },
    #[error("the stored state of message {id} is unknown: {state}")]
    StoredState { id: Uuid, state: String },
    #[error("{context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn failed(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MessageError {
    move |source| MessageError::Database { context, source }
}

/// Like [`failed`], but a lock timeout is a claim in flight.
fn failed_or_busy(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> MessageError {
    move |source| {
        if source.code() == Some(&SqlState::LOCK_NOT_AVAILABLE) {
            MessageError::Busy
        } else {
            MessageError::Database { context, source }
        }
    }
}

/// A message as stored.
#[derive(Debug)]
pub struct Message {
    pub id: Uuid,
    pub key: Option<String>,
    /// `None`: the daemon's configured exchange.
    pub exchange: Option<String>,
    pub routing_key: String,
    /// The body, as the client wrote it.
    pub payload: Box<RawValue>,
    /// AMQP headers: an object of string, number and boolean values.
    pub headers: Option<serde_json::Value>,
    pub deliver_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub state: MessageState,
    pub attempts: i32,
    pub sent_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the broker last refused it.
    pub last_error: Option<String>,
    /// When it is tried again after a refusal.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

// The payload as text: the json column keeps the bytes it was given.
const MESSAGE_COLUMNS: &str = "id, key, exchange, routing_key, payload::text, headers, deliver_at, \
     expires_at, state, attempts, sent_at, outcome, created_at, updated_at, last_error, \
     next_attempt_at, dead_lettered_at";

fn message_from_row(row: &Row) -> Result<Message, MessageError> {
    let id: Uuid = row.get(0);
    let state: String = row.get(8);
    Ok(Message {
        id,
        key: row.get(1),
        exchange: row.get(2),
        routing_key: row.get(3),
        payload: RawValue::from_string(row.get(4))
            .map_err(|source| MessageError::StoredPayload { id, source })?,
        headers: row.get(5),
        deliver_at: row.get(6),
        expires_at: row.get(7),
        state: MessageState::parse(&state).ok_or_else(|| MessageError::StoredState {
            id,
            state: state.clone(),
        })?,
        attempts: row.get(9),
        sent_at: row.get(10),
        outcome: row.get(11),
        created_at: row.get(12),
        updated_at: row.get(13),
        last_error: row.get(14),
        next_attempt_at: row.get(15),
        dead_lettered_at: row.get(16),
    })
}

/// A message to schedule, validated by the caller.
#[derive(Debug)]
pub struct NewMessage {
    pub key: Option<String>,
    pub exchange: Option<String>,
    pub routing_key: String,
    pub payload: Box<RawValue>,
    pub headers: Option<serde_json::Value>,
    pub deliver_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// What a create did.
#[derive(Debug)]
pub enum Created {
    /// A new row.
    New(Message),
    /// The row its key already named, with the same content: a retry.
    Existing(Message),
}

/// Changes to a pending message; `None` leaves a field as it is.
#[derive(Debug, Default)]
pub struct MessageChanges {
    pub deliver_at: Option<DateTime<Utc>>,
    pub payload: Option<Box<RawValue>>,
    /// `Some(None)` clears the expiry.
    pub expires_at: Option<Option<DateTime<Utc>>>,
}

impl MessageChanges {
    /// Whether the changes leave `expires_at` after `deliver_at` for a row
    /// holding `deliver_at` and `expires_at`. Only a change of either time is
    /// judged: a row written by SQL with other times can still have its
    /// payload edited.
    fn keep_expiry_after_delivery(
        &self,
        deliver_at: DateTime<Utc>,
        expires_at: Option<DateTime<Utc>>,
    ) -> bool {
        if self.deliver_at.is_none() && self.expires_at.is_none() {
            return true;
        }
        let deliver_at = self.deliver_at.unwrap_or(deliver_at);
        match self.expires_at.unwrap_or(expires_at) {
            Some(expires_at) => expires_at > deliver_at,
            None => true,
        }
    }
}

/// Which messages to list: optionally by state, routing key and key, after
/// the cursor, in (created_at, id) order.
#[derive(Debug, Default)]
pub struct MessageFilter {
    pub state: Option<MessageState>,
    pub routing_key: Option<String>,
    pub key: Option<String>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Schedules a message. With a key, a second create is idempotent: the same
/// content again returns the existing row, other content is
/// [`MessageError::KeyTaken`]. Concurrent creates with one key make one row:
/// the insert waits for a concurrent one with its key and then does nothing,
/// and the following read sees the row that won.
pub async fn create(
    client: &Object,
    message: &NewMessage,
    traceparent: Option<&str>,
) -> Result<Created, MessageError> {
    let inserted = client
        .query_opt(
            &format!(
                "INSERT INTO scheduled_message \
                        (key, exchange, routing_key, payload, headers, deliver_at, expires_at, traceparent) \
                 VALUES ($1, $2, $3, $4::text::json, $5::jsonb, $6, $7, $8) \
                 ON CONFLICT (key) DO NOTHING RETURNING {MESSAGE_COLUMNS}"
            ),
            &[
                &message.key,
                &message.exchange,
                &message.routing_key,
                &message.payload.get(),
                &message.headers,
                &message.deliver_at,
                &message.expires_at,
                &traceparent,
            ],
        )
        .await
        .map_err(failed("scheduling the message"))?;
    if let Some(row) = inserted {
        return message_from_row(&row).map(Created::New);
    }
    // The payload is compared as written, since it is published as written;
    // the headers as JSON values, since jsonb keeps no more than that.
    let existing = client
        .query_opt(
            &format!(
                "SELECT {MESSAGE_COLUMNS}, \
                        exchange IS NOT DISTINCT FROM $2 AND routing_key = $3 \
                        AND payload::text = $4 AND headers IS NOT DISTINCT FROM $5::jsonb \
                        AND deliver_at = $6 AND expires_at IS NOT DISTINCT FROM $7 AS same \
                   FROM scheduled_message WHERE key = $1"
            ),
            &[
                &message.key,
                &message.exchange,
                &message.routing_key,
                &message.payload.get(),
                &message.headers,
                &message.deliver_at,
                &message.expires_at,
            ],
        )
        .await
        .map_err(failed("reading the message with this key"))?
        // Deleted by SQL since the insert found it.
        .ok_or(MessageError::Changed)?;
    if existing.get::<_, bool>("same") {
        message_from_row(&existing).map(Created::Existing)
    } else {
        Err(MessageError::KeyTaken)
    }
}

/// A message, if it exists.
pub async fn get(client: &Object, id: Uuid) -> Result<Option<Message>, MessageError> {
    client
        .query_opt(
            &format!("SELECT {MESSAGE_COLUMNS} FROM scheduled_message WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(failed("reading the message"))?
        .as_ref()
        .map(message_from_row)
        .transpose()
}

/// Messages matching the filter.
pub async fn list(client: &Object, filter: &MessageFilter) -> Result<Vec<Message>, MessageError> {
    let (after_time, after_id) = filter.after.unzip();
    client
        .query(
            &format!(
                "SELECT {MESSAGE_COLUMNS} FROM scheduled_message \
                  WHERE ($1::text IS NULL OR state = $1) \
                    AND ($2::text IS NULL OR routing_key = $2) \
                    AND ($3::text IS NULL OR key = $3) \
                    AND ($4::timestamptz IS NULL OR (created_at, id) > ($4, $5::uuid)) \
                  ORDER BY created_at, id LIMIT $6"
            ),
            &[
                &filter.state.map(MessageState::as_str),
                &filter.routing_key,
                &filter.key,
                &after_time,
                &after_id,
                &filter.limit,
            ],
        )
        .await
        .map_err(failed("listing messages"))?
        .iter()
        .map(message_from_row)
        .collect()
}

/// Applies changes to a pending message and sets its `updated_at`, if
/// `permit` allows its destination (checked on the changed row, so a route
/// that changed meanwhile is judged as it is).
pub async fn update(
    client: &mut Object,
    id: Uuid,
    changes: &MessageChanges,
    lock_timeout: Duration,
    permit: impl FnOnce(&Message) -> Result<(), Refusal>,
) -> Result<Message, MessageError> {
    let tx = guarded_transaction(client, lock_timeout).await?;
    let (expiry_given, expires_at) = match changes.expires_at {
        Some(expires_at) => (true, expires_at),
        None => (false, None),
    };
    let updated = tx
        .query_opt(
            &format!(
                "UPDATE scheduled_message \
                    SET deliver_at = coalesce($2, deliver_at), \
                        payload = coalesce($3::text::json, payload), \
                        expires_at = CASE WHEN $4 THEN $5 ELSE expires_at END, \
                        updated_at = now() \
                  WHERE id = $1 AND state = 'pending' \
                    AND (($2::timestamptz IS NULL AND NOT $4::boolean) \
                         OR (CASE WHEN $4 THEN $5::timestamptz ELSE expires_at END) IS NULL \
                         OR (CASE WHEN $4 THEN $5 ELSE expires_at END) > coalesce($2, deliver_at)) \
                 RETURNING {MESSAGE_COLUMNS}"
            ),
            &[
                &id,
                &changes.deliver_at,
                &changes.payload.as_deref().map(RawValue::get),
                &expiry_given,
                &expires_at,
            ],
        )
        .await
        .map_err(failed_or_busy("updating the message"))?;
    // Leaving without a commit rolls the transaction back.
    let message = match updated {
        Some(row) => message_from_row(&row)?,
        None => return Err(unchanged(&tx, id, Some(changes)).await?),
    };
    permit(&message).map_err(MessageError::Refused)?;
    tx.commit().await.map_err(failed("committing the change"))?;
    Ok(message)
}

/// Cancels a pending message: it is never published afterwards.
pub async fn cancel(
    client: &mut Object,
    id: Uuid,
    lock_timeout: Duration,
) -> Result<(), MessageError> {
    let tx = guarded_transaction(client, lock_timeout).await?;
    let cancelled = tx
        .execute(
            "UPDATE scheduled_message \
                SET state = 'cancelled', outcome = 'cancelled', sent_at = now(), updated_at = now() \
              WHERE id = $1 AND state = 'pending'",
            &[&id],
        )
        .await
        .map_err(failed_or_busy("cancelling the message"))?;
    if cancelled == 0 {
        return Err(unchanged(&tx, id, None).await?);
    }
    tx.commit()
        .await
        .map_err(failed("committing the cancellation"))?;
    Ok(())
}

/// A transaction whose lock waits end after `lock_timeout`.
async fn guarded_transaction(
    client: &mut Object,
    lock_timeout: Duration,
) -> Result<Transaction<'_>, MessageError> {
    let tx = client
        .transaction()
        .await
        .map_err(failed("starting a transaction"))?;
    tx.execute(
        "SELECT set_config('lock_timeout', $1, true)",
        &[&format!("{}ms", lock_timeout.as_millis())],
    )
    .await
    .map_err(failed("setting the lock timeout"))?;
    Ok(tx)
}

/// Why a change that required a pending row updated none: the row is gone,
/// no longer pending, or (for `changes`) its times would not allow them.
async fn unchanged(
    tx: &Transaction<'_>,
    id: Uuid,
    changes: Option<&MessageChanges>,
) -> Result<MessageError, MessageError> {
    let Some(row) = tx
        .query_opt(
            "SELECT state, deliver_at, expires_at FROM scheduled_message WHERE id = $1",
            &[&id],
        )
        .await
        .map_err(failed("reading the message"))?
    else {
        return Ok(MessageError::NotFound);
    };
    let state: String = row.get(0);
    match MessageState::parse(&state) {
        None => Err(MessageError::StoredState { id, state }),
        Some(MessageState::Pending) => Ok(match changes {
            Some(changes) if !changes.keep_expiry_after_delivery(row.get(1), row.get(2)) => {
                MessageError::ExpiresBeforeDelivery
            }
            // Pending now, not when the update ran: it changed in between.
            _ => MessageError::Changed,
        }),
        Some(state) => Ok(MessageError::NotPending(state)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_round_trip() {
        for state in [
            MessageState::Pending,
            MessageState::Sent,
            MessageState::Expired,
            MessageState::Cancelled,
            MessageState::DeadLettered,
        ] {
            assert_eq!(MessageState::parse(state.as_str()), Some(state));
        }
        assert_eq!(MessageState::parse("Pending"), None);
    }

    #[test]
    fn only_changed_times_are_judged_against_each_other() {
        let at = |s: &str| s.parse::<DateTime<Utc>>().unwrap();
        let deliver = at("2030-01-01T10:00:00Z");
        let expires = Some(at("2030-01-01T11:00:00Z"));
        let moved = |to: &str| MessageChanges {
            deliver_at: Some(at(to)),
            ..MessageChanges::default()
        };
        assert!(moved("2030-01-01T10:30:00Z").keep_expiry_after_delivery(deliver, expires));
        assert!(!moved("2030-01-01T11:00:00Z").keep_expiry_after_delivery(deliver, expires));
        let cleared = MessageChanges {
            deliver_at: Some(at("2030-01-02T00:00:00Z")),
            expires_at: Some(None),
            ..MessageChanges::default()
        };
        assert!(cleared.keep_expiry_after_delivery(deliver, expires));
        // A row written by SQL with its expiry first: its payload may change.
        assert!(MessageChanges::default().keep_expiry_after_delivery(deliver, Some(deliver)));
    }
}
