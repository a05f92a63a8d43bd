//! The scheduled-messages endpoints: request and response bodies, validation,
//! handlers. A message is any RabbitMQ message an application wants published
//! at `deliver_at`; the daemon publishes its payload byte for byte, so the
//! payload is taken, stored and returned as the raw JSON text the client sent.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Deserializer, Serialize};
use serde_json::value::RawValue;
use serde_json::{Map, Value};
use utoipa::ToSchema;
use uuid::Uuid;

use super::bodies::{JsonBody, PathId, QueryParams, encode_cursor, present, time_field};
use super::error::{ApiError, ErrorBody};
use super::request_log::traceparent;
use super::state::{ApiState, MessageSettings};
use crate::messages::allowed::{MAX_NAME_BYTES, Refusal};
use crate::messages::{
    self, Created, Message, MessageChanges, MessageError, MessageFilter, MessageState, NewMessage,
};

/// Longest key, in characters (the column's CHECK).
const MAX_KEY_CHARS: usize = 200;
/// Deepest nesting of arrays and objects in a payload. PostgreSQL parses
/// json recursively and fails on a few thousand levels; no message needs
/// more than this.
const MAX_PAYLOAD_DEPTH: usize = 128;

/// A message to schedule.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateMessage {
    /// At most 255 bytes (an AMQP short string).
    pub routing_key: String,
    /// Any JSON value: the message body, published byte for byte as sent.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    /// RFC 3339 with an explicit offset, at most the configured horizon
    /// ahead. A past time is delivered at once.
    #[schema(value_type = String, format = DateTime, example = "2030-01-01T19:00:00+01:00")]
    pub deliver_at: String,
    /// The caller's name for the message (1 to 200 characters): a create with
    /// the same key and content returns the existing message, with other
    /// content it is refused.
    #[serde(default)]
    pub key: Option<String>,
    /// At most 255 bytes; absent or null: the daemon's configured exchange.
    #[serde(default)]
    pub exchange: Option<String>,
    /// AMQP headers: string, number and boolean values; names of at most 255 bytes.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Map<String, Value>>,
    /// RFC 3339 with an explicit offset, after `deliver_at`: not published
    /// once passed; the message's AMQP expiration is the time left until then.
    #[serde(default)]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<String>,
}

/// Changes to a pending message: any of these fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateMessage {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub deliver_at: Option<Option<String>>,
    /// Any JSON value, `null` included.
    #[serde(default, deserialize_with = "given")]
    #[schema(value_type = Value)]
    pub payload: Option<Box<RawValue>>,
    /// `null` clears the expiry.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub expires_at: Option<Option<String>>,
}

/// A raw JSON field that is `Some` whenever present, `null` included (which
/// `Option`'s own deserializer would read as absent).
fn given<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(deserializer).map(Some)
}

/// A scheduled message.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessageBody {
    pub id: Uuid,
    pub key: Option<String>,
    /// Null: the daemon's configured exchange.
    pub exchange: Option<String>,
    pub routing_key: String,
    /// The body, byte for byte as sent.
    #[schema(value_type = Value)]
    pub payload: Box<RawValue>,
    #[schema(value_type = Option<Object>)]
    pub headers: Option<Value>,
    pub deliver_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub state: MessageState,
    /// Publishes the broker answered: confirmed, returned or refused.
    pub attempts: i32,
    /// When it was published, found expired, cancelled or discarded.
    pub sent_at: Option<DateTime<Utc>>,
    /// `published`, `expired`, `cancelled`, `dead_lettered` or `discarded`;
    /// null while pending.
    pub outcome: Option<String>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Why the broker last refused it (no queue bound for its routing key,
    /// its exchange missing, a nack).
    pub last_error: Option<String>,
    /// When it is tried again after a refusal; null otherwise.
    pub next_attempt_at: Option<DateTime<Utc>>,
    /// When it was dead-lettered (state `dead_lettered`).
    pub dead_lettered_at: Option<DateTime<Utc>>,
}

impl From<Message> for MessageBody {
    fn from(message: Message) -> Self {
        Self {
            id: message.id,
            key: message.key,
            exchange: message.exchange,
            routing_key: message.routing_key,
            payload: message.payload,
            headers: message.headers,
            deliver_at: message.deliver_at,
            expires_at: message.expires_at,
            state: message.state,
            attempts: message.attempts,
            sent_at: message.sent_at,
            outcome: message.outcome,
            created_at: message.created_at,
            updated_at: message.updated_at,
            last_error: message.last_error,
            next_attempt_at: message.next_attempt_at,
            dead_lettered_at: message.dead_lettered_at,
        }
    }
}

/// A page of messages.
#[derive(Debug, Serialize, ToSchema)]
pub struct MessagePage {
    pub messages: Vec<MessageBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

fn validate_routing_key(routing_key: &str) -> Result<(), ApiError> {
    if routing_key.len() > MAX_NAME_BYTES || routing_key.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_routing_key",
            "routing_key",
            format!(
                "routing_key must be at most {MAX_NAME_BYTES} bytes (an AMQP short string) without \
                 the NUL character (got {} bytes)",
                routing_key.len()
            ),
        ));
    }
    Ok(())
}

fn validate_exchange(exchange: &str) -> Result<(), ApiError> {
    if exchange.is_empty() || exchange.len() > MAX_NAME_BYTES || exchange.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_exchange",
            "exchange",
            format!(
                "exchange must be 1 to {MAX_NAME_BYTES} bytes without the NUL character (got {} bytes); \
                 leave it out for the configured exchange",
                exchange.len()
            ),
        ));
    }
    Ok(())
}

fn validate_key(key: &str) -> Result<(), ApiError> {
    let length = key.chars().count();
    if !(1..=MAX_KEY_CHARS).contains(&length) || key.contains('\0') {
        return Err(ApiError::invalid(
            "invalid_key",
            "key",
            format!(
                "key must be 1 to {MAX_KEY_CHARS} characters without the NUL character (got {length})"
            ),
        ));
    }
    Ok(())
}

/// Size counted on the bytes as sent; depth bounded for PostgreSQL's parser.
fn validate_payload(payload: &RawValue, settings: &MessageSettings) -> Result<(), ApiError> {
    let size = payload.get().len();
    if size > settings.max_payload_bytes {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!(
                "payload is {size} bytes; at most {} are accepted",
                settings.max_payload_bytes
            ),
        )
        .field("payload"));
    }
    if depth(payload.get()) > MAX_PAYLOAD_DEPTH {
        return Err(ApiError::invalid(
            "invalid_payload",
            "payload",
            format!("payload nests arrays and objects more than {MAX_PAYLOAD_DEPTH} deep"),
        ));
    }
    Ok(())
}

/// The deepest nesting of arrays and objects in valid JSON text.
fn depth(json: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for byte in json.bytes() {
        match (in_string, escaped, byte) {
            (true, true, _) => escaped = false,
            (true, false, b'\\') => escaped = true,
            (true, false, b'"') | (false, _, b'"') => in_string = !in_string,
            (false, _, b'[' | b'{') => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            (false, _, b']' | b'}') => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// Times are stored to the microsecond; judging them at that precision makes
/// the checks here and in the database agree.
fn to_micros(time: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp_micros(time.timestamp_micros()).unwrap_or(time)
}

pub(crate) fn validate_deliver_at(
    raw: &str,
    now: DateTime<Utc>,
    settings: &MessageSettings,
) -> Result<DateTime<Utc>, ApiError> {
    let deliver_at = to_micros(time_field(raw, "deliver_at", "invalid_deliver_at")?);
    if deliver_at > now + settings.horizon {
        return Err(ApiError::invalid(
            "invalid_deliver_at",
            "deliver_at",
            format!(
                "deliver_at must be at most {} days ahead (got {raw})",
                settings.horizon.num_days()
            ),
        ));
    }
    Ok(deliver_at)
}

fn expires_at(raw: &str) -> Result<DateTime<Utc>, ApiError> {
    time_field(raw, "expires_at", "invalid_expires_at").map(to_micros)
}

fn expiry_not_after_delivery(field: &str) -> ApiError {
    ApiError::invalid(
        if field == "expires_at" {
            "invalid_expires_at"
        } else {
            "invalid_deliver_at"
        },
        field,
        "expires_at must be after deliver_at",
    )
}

/// Header values of the types AMQP tables carry; integers within 64 bits signed.
fn validate_headers(headers: &Map<String, Value>) -> Result<(), ApiError> {
    for (name, value) in headers {
        let shown = actors::model::truncate_for_log(name, 64);
        if name.is_empty() || name.len() > MAX_NAME_BYTES || name.contains('\0') {
            return Err(ApiError::invalid(
                "invalid_header",
                "headers",
                format!(
                    "header name '{shown}' must be 1 to {MAX_NAME_BYTES} bytes without the NUL character"
                ),
            ));
        }
        let acceptable = match value {
            Value::Bool(_) => true,
            Value::Number(number) => number.is_i64() || number.is_f64(),
            // jsonb cannot hold U+0000.
            Value::String(text) => !text.contains('\0'),
            Value::Null | Value::Array(_) | Value::Object(_) => false,
        };
        if !acceptable {
            return Err(ApiError::invalid(
                "invalid_header",
                &format!("headers.{shown}"),
                format!(
                    "header '{shown}' must be a string (without U+0000), a number (integers within \
                     64 bits signed) or a boolean"
                ),
            ));
        }
    }
    Ok(())
}

/// 403 naming the exchange or the routing key the allow-list refuses.
fn refused(refusal: &Refusal) -> ApiError {
    let field = match refusal {
        Refusal::Exchange { .. } => "exchange",
        Refusal::RoutingKey { .. } => "routing_key",
    };
    ApiError::new(
        StatusCode::FORBIDDEN,
        "destination_not_allowed",
        refusal.to_string(),
    )
    .field(field)
}

/// The answer to a failed message operation. `expiry_field` names the field
/// an expiry refusal blames.
fn message_error(err: MessageError, expiry_field: &str) -> ApiError {
    match err {
        MessageError::NotFound => ApiError::not_found("message"),
        MessageError::KeyTaken => ApiError::new(
            StatusCode::CONFLICT,
            "key_conflict",
            "a message with this key exists with different content; \
             GET /messages?key=... shows it",
        )
        .field("key"),
        MessageError::NotPending(state) => ApiError::new(
            StatusCode::CONFLICT,
            "not_pending",
            format!(
                "the message is {}; only pending messages can be changed or cancelled",
                state.as_str()
            ),
        ),
        MessageError::Busy => ApiError::new(
            StatusCode::CONFLICT,
            "being_delivered",
            "the message is being delivered now; read it again to see the outcome",
        ),
        MessageError::Changed => ApiError::new(
            StatusCode::CONFLICT,
            "changed_concurrently",
            "the message changed while the request ran; read it and try again",
        ),
        MessageError::ExpiresBeforeDelivery => expiry_not_after_delivery(expiry_field),
        MessageError::Refused(refusal) => refused(&refusal),
        MessageError::StoredPayload { .. }
        | MessageError::StoredState { .. }
        | MessageError::Database { .. } => ApiError::internal(&err),
    }
}

/// Schedule a message. With a `key`, retries are safe: the same key and
/// content again answers 200 with the existing message.
#[utoipa::path(
    post, path = "/messages", tag = "messages", request_body = CreateMessage,
    responses(
        (status = 201, description = "Scheduled; Location names the message", body = MessageBody),
        (status = 200, description = "The message this key already names, with the same content", body = MessageBody),
        (status = 400, description = "Malformed JSON, wrong types or unknown fields", body = ErrorBody),
        (status = 401, body = ErrorBody),
        (status = 403, description = "The exchange or routing key is not on the allow-list", body = ErrorBody),
        (status = 409, description = "The key names a message with other content", body = ErrorBody),
        (status = 413, description = "The body or the payload is too large", body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, description = "A value is not acceptable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_message(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateMessage>,
) -> Result<Response, ApiError> {
    let settings = &state.messages;
    validate_routing_key(&request.routing_key)?;
    if let Some(exchange) = &request.exchange {
        validate_exchange(exchange)?;
    }
    let exchange = request
        .exchange
        .as_deref()
        .unwrap_or(&settings.default_exchange);
    settings
        .allowed
        .check(exchange, &request.routing_key)
        .map_err(|refusal| refused(&refusal))?;
    if let Some(key) = &request.key {
        validate_key(key)?;
    }
    validate_payload(&request.payload, settings)?;
    let deliver_at = validate_deliver_at(&request.deliver_at, Utc::now(), settings)?;
    let expires_at = request.expires_at.as_deref().map(expires_at).transpose()?;
    if expires_at.is_some_and(|expires_at| expires_at <= deliver_at) {
        return Err(expiry_not_after_delivery("expires_at"));
    }
    if let Some(headers) = &request.headers {
        validate_headers(headers)?;
    }
    let new = NewMessage {
        key: request.key,
        exchange: request.exchange,
        routing_key: request.routing_key,
        payload: request.payload,
        headers: request.headers.map(Value::Object),
        deliver_at,
        expires_at,
    };
    let client = state.connection().await?;
    let (status, message) =
        match messages::create(&client, &new, traceparent(&headers).as_deref()).await {
            Ok(Created::New(message)) => (StatusCode::CREATED, message),
            Ok(Created::Existing(message)) => (StatusCode::OK, message),
            Err(err) => return Err(message_error(err, "expires_at")),
        };
    let location = HeaderValue::from_str(&format!("/messages/{}", message.id))
        .expect("a UUID path is a valid header");
    Ok((
        status,
        [(header::LOCATION, location)],
        Json(MessageBody::from(message)),
    )
        .into_response())
}

/// A message, with its state.
#[utoipa::path(
    get, path = "/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "Message id")),
    responses((status = 200, body = MessageBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_message(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<MessageBody>, ApiError> {
    let client = state.connection().await?;
    messages::get(&client, id)
        .await
        .map_err(|err| message_error(err, "expires_at"))?
        .map(|message| Json(message.into()))
        .ok_or_else(|| ApiError::not_found("message"))
}

/// Messages in creation order, a page at a time, optionally by state,
/// routing key or key.
#[utoipa::path(
    get, path = "/messages", tag = "messages",
    params(
        ("state" = Option<MessageState>, Query, description = "pending, sent, expired, cancelled or dead_lettered"),
        ("routing_key" = Option<String>, Query, description = "Exact routing key"),
        ("key" = Option<String>, Query, description = "The caller's key: the one message it names, if any"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = MessagePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_messages(
    State(state): State<ApiState>,
    params: QueryParams,
) -> Result<Json<MessagePage>, ApiError> {
    let params = params.only(&["state", "routing_key", "key", "limit", "cursor"])?;
    let limit = params.limit(50, 200)?;
    let message_state = params
        .get("state")
        .map(|raw| {
            MessageState::parse(raw).ok_or_else(|| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_parameter",
                    "state must be one of pending, sent, expired, cancelled, dead_lettered",
                )
                .field("state")
            })
        })
        .transpose()?;
    let filter = MessageFilter {
        state: message_state,
        routing_key: params.get("routing_key").map(str::to_owned),
        key: params.get("key").map(str::to_owned),
        after: params.cursor()?,
        limit: limit + 1,
    };
    let client = state.connection().await?;
    let mut found = messages::list(&client, &filter)
        .await
        .map_err(|err| message_error(err, "expires_at"))?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found
            .last()
            .map(|message| encode_cursor(message.created_at, message.id))
    } else {
        None
    };
    Ok(Json(MessagePage {
        messages: found.into_iter().map(MessageBody::from).collect(),
        next_cursor,
    }))
}

/// Move, edit or change the expiry of a pending message.
#[utoipa::path(
    patch, path = "/messages/{id}", tag = "messages", request_body = UpdateMessage,
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 200, body = MessageBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 403, description = "The message's destination is not on the allow-list", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not pending, or being delivered now", body = ErrorBody),
        (status = 413, body = ErrorBody), (status = 415, body = ErrorBody), (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_message(
    State(state): State<ApiState>,
    PathId(id): PathId,
    JsonBody(request): JsonBody<UpdateMessage>,
) -> Result<Json<MessageBody>, ApiError> {
    let settings = &state.messages;
    let deliver_at = match request.deliver_at {
        Some(Some(raw)) => Some(validate_deliver_at(&raw, Utc::now(), settings)?),
        Some(None) => {
            return Err(ApiError::invalid(
                "null_value",
                "deliver_at",
                "deliver_at cannot be null",
            ));
        }
        None => None,
    };
    if let Some(payload) = &request.payload {
        validate_payload(payload, settings)?;
    }
    let expires_at = request
        .expires_at
        .map(|raw| raw.as_deref().map(expires_at).transpose())
        .transpose()?;
    if let (Some(deliver_at), Some(Some(expires_at))) = (deliver_at, expires_at)
        && expires_at <= deliver_at
    {
        return Err(expiry_not_after_delivery("expires_at"));
    }
    let changes = MessageChanges {
        deliver_at,
        payload: request.payload,
        expires_at,
    };
    if changes.deliver_at.is_none() && changes.payload.is_none() && changes.expires_at.is_none() {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing_to_change",
            "expected at least one of deliver_at, payload, expires_at",
        ));
    }
    let expiry_field = if changes.expires_at.is_some() {
        "expires_at"
    } else {
        "deliver_at"
    };
    change(&state, id, &changes, expiry_field)
        .await
        .map(|message| Json(message.into()))
}

/// Applies `changes` to the pending message `id`, if the API may send it
/// where it goes (the JSON API and the console).
pub(crate) async fn change(
    state: &ApiState,
    id: Uuid,
    changes: &MessageChanges,
    expiry_field: &str,
) -> Result<Message, ApiError> {
    let settings = &state.messages;
    let mut client = state.connection().await?;
    // The route cannot be changed, but the message may have been written by
    // SQL (not checked) or before the allow-list changed: an edit through the
    // API is allowed only to a destination the API may use.
    messages::update(&mut client, id, changes, settings.lock_timeout, |message| {
        let exchange = message
            .exchange
            .as_deref()
            .unwrap_or(&settings.default_exchange);
        settings.allowed.check(exchange, &message.routing_key)
    })
    .await
    .map_err(|err| message_error(err, expiry_field))
}

/// Cancel a pending message: it is never published afterwards.
#[utoipa::path(
    delete, path = "/messages/{id}", tag = "messages",
    params(("id" = Uuid, Path, description = "Message id")),
    responses(
        (status = 204, description = "Cancelled"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 409, description = "Not pending, or being delivered now", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn cancel_message(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    cancel(&state, id).await.map(|()| StatusCode::NO_CONTENT)
}

/// Cancels the pending message `id` (the JSON API and the console).
pub(crate) async fn cancel(state: &ApiState, id: Uuid) -> Result<(), ApiError> {
    let mut client = state.connection().await?;
    messages::cancel(&mut client, id, state.messages.lock_timeout)
        .await
        .map_err(|err| message_error(err, "expires_at"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(depth("1"), 0);
        assert_eq!(depth("[]"), 1);
        assert_eq!(depth(r#"{"a": [1, {"b": []}]}"#), 4);
        assert_eq!(depth(r#"["[[[", "\"[[", "\\"]"#), 1);
        assert_eq!(
            depth(&format!("{}{}", "[".repeat(200), "]".repeat(200))),
            200
        );
    }

    #[test]
    fn header_values_are_strings_numbers_or_booleans() {
        let headers = |value: Value| {
            let mut map = Map::new();
            map.insert("h".to_owned(), value);
            validate_headers(&map)
        };
        for ok in [
            Value::from("x"),
            Value::from(-1),
            Value::from(1.5),
            Value::from(true),
        ] {
            assert!(headers(ok.clone()).is_ok(), "{ok}");
        }
        for bad in [
            Value::Null,
            serde_json::json!([1]),
            serde_json::json!({"a": 1}),
            Value::from(u64::MAX),
            Value::from("nul\0"),
        ] {
            let err = headers(bad.clone()).unwrap_err();
            assert_eq!(err.body.field.as_deref(), Some("headers.h"), "{bad}");
        }
        let mut long = Map::new();
        long.insert("n".repeat(256), Value::from(1));
        assert_eq!(
            validate_headers(&long).unwrap_err().body.field.as_deref(),
            Some("headers")
        );
    }

    #[test]
    fn times_are_judged_to_the_microsecond() {
        let time: DateTime<Utc> = "2030-01-01T00:00:00.123456789Z".parse().unwrap();
        assert_eq!(
            to_micros(time).to_rfc3339(),
            "2030-01-01T00:00:00.123456+00:00"
        );
    }
}
