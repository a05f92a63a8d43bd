//! Scheduled messages under generated requests: create and change bodies of
//! every shape, payloads in spellings a JSON value would not keep, headers of
//! every type, destinations on and off the allow-list, each judged by an
//! oracle of the documented rules. Never a 5xx; a refusal writes nothing; an
//! accepted body is stored as sent, its payload byte for byte.

use std::collections::BTreeMap;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use notification_scheduler::api::MessageSettings;
use notification_scheduler::messages::allowed::AllowedRoutes;
use proptest::prelude::*;
use proptest::sample::select;
use proptest::test_runner::TestCaseError;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::value::RawValue;
use serde_json::{Map, Value, json};
use uuid::Uuid;

use super::api_harness::{Answer, Harness, check_error_body, send};
use super::api_oracle::{Rfc3339, Verdict, rfc3339, worst};
use super::api_strategies::{
    ByteEdit, Field, TimeSpec, any_json, byte_edit, content_type, field, text, time_spec,
};

use crate::common::api::message_settings;

/// A small payload limit, so that refusals for size are cheap to generate.
const MAX_PAYLOAD_BYTES: usize = 512;
/// Any routing key on the default exchange; one pattern on another.
const ALLOWED: &str = "game_scheduler:#,events:bot.*.welcome";
const HORIZON_DAYS: i64 = 366;
const CREATE_FIELDS: [&str; 7] = [
    "routing_key",
    "payload",
    "deliver_at",
    "key",
    "exchange",
    "headers",
    "expires_at",
];
const UPDATE_FIELDS: [&str; 3] = ["deliver_at", "payload", "expires_at"];

fn harness() -> Harness {
    Harness::start_with(MessageSettings {
        max_payload_bytes: MAX_PAYLOAD_BYTES,
        allowed: Arc::new(AllowedRoutes::parse(ALLOWED).expect("a valid allow-list")),
        ..message_settings()
    })
}

// --- the oracle --------------------------------------------------------------

/// The body's fields as written, if it is a JSON object.
type RawFields = BTreeMap<String, Box<RawValue>>;

/// A field as a JSON value: `None` when absent, `Some(Err)` when serde_json
/// cannot hold it as a value (a number out of range, too deep), which is a
/// wrong type for every field but the payload.
fn value_of(fields: &RawFields, name: &str) -> Option<Result<Value, ()>> {
    fields
        .get(name)
        .map(|raw| serde_json::from_str(raw.get()).map_err(|_| ()))
}

/// A text field that may be absent or null: `Err` for any other type.
fn optional_text(fields: &RawFields, name: &str) -> Result<Option<Option<String>>, ()> {
    match value_of(fields, name) {
        None => Ok(None),
        Some(Ok(Value::Null)) => Ok(Some(None)),
        Some(Ok(Value::String(text))) => Ok(Some(Some(text))),
        Some(_) => Err(()),
    }
}

/// Instants are kept to the microsecond.
fn micros(at: DateTime<Utc>) -> i64 {
    at.timestamp_micros()
}

/// A delivery time: RFC 3339 with an offset, at most the horizon ahead; the
/// past is allowed. The instant, when there is one.
fn judge_deliver_at(raw: &str, now: DateTime<Utc>) -> (Verdict, Option<DateTime<Utc>>) {
    let horizon = now + chrono::Duration::days(HORIZON_DAYS);
    match rfc3339(raw) {
        Rfc3339::Not => (Verdict::Invalid(422), None),
        Rfc3339::LeapSecond => (Verdict::Borderline(422), None),
        Rfc3339::At(at) if (at - horizon).abs() < chrono::Duration::seconds(30) => {
            (Verdict::Borderline(422), Some(at))
        }
        Rfc3339::At(at) if at > horizon => (Verdict::Invalid(422), Some(at)),
        Rfc3339::At(at) => (Verdict::Valid, Some(at)),
    }
}

/// An expiry: RFC 3339 with an offset. The instant, when there is one.
fn judge_expiry(raw: &str) -> (Verdict, Option<DateTime<Utc>>) {
    match rfc3339(raw) {
        Rfc3339::Not => (Verdict::Invalid(422), None),
        Rfc3339::LeapSecond => (Verdict::Borderline(422), None),
        Rfc3339::At(at) => (Verdict::Valid, Some(at)),
    }
}

/// An expiry must come after the delivery; a time the oracle cannot place
/// (a leap second) may go either way.
fn judge_order(deliver_at: Option<DateTime<Utc>>, expires_at: Option<DateTime<Utc>>) -> Verdict {
    match (deliver_at, expires_at) {
        (Some(deliver_at), Some(expires_at)) if micros(expires_at) <= micros(deliver_at) => {
            Verdict::Invalid(422)
        }
        (Some(_), Some(_)) => Verdict::Valid,
        _ => Verdict::Borderline(422),
    }
}

/// The deepest nesting of arrays and objects in JSON text.
fn nesting(json: &str) -> usize {
    let (mut depth, mut deepest, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for c in json.chars() {
        if in_string {
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => in_string = true,
            '[' | '{' => {
                depth += 1;
                deepest = deepest.max(depth);
            }
            ']' | '}' => depth -= 1,
            _ => {}
        }
    }
    deepest
}

/// A payload: any JSON, at most the limit in bytes as written, at most 128 deep.
fn judge_payload(raw: &str) -> Verdict {
    if raw.len() > MAX_PAYLOAD_BYTES {
        Verdict::Invalid(413)
    } else if nesting(raw) > 128 {
        Verdict::Invalid(422)
    } else {
        Verdict::Valid
    }
}

/// Names and texts PostgreSQL can store, within AMQP short strings.
fn short_string(text: &str, may_be_empty: bool) -> bool {
    (may_be_empty || !text.is_empty()) && text.len() <= 255 && !text.contains('\0')
}

/// Where the API may send: the default exchange with any key, `events` with
/// keys of three words `bot.<word>.welcome`.
fn judge_destination(exchange: Option<&str>, routing_key: &str) -> Verdict {
    let words: Vec<&str> = if routing_key.is_empty() {
        Vec::new()
    } else {
        routing_key.split('.').collect()
    };
    match exchange.unwrap_or("game_scheduler") {
        "game_scheduler" => Verdict::Valid,
        "events" if words.len() == 3 && words[0] == "bot" && words[2] == "welcome" => {
            Verdict::Valid
        }
        _ => Verdict::Invalid(403),
    }
}

/// Headers: names of 1 to 255 bytes; values strings, booleans, or numbers
/// that are 64-bit signed integers or floats.
fn judge_headers(headers: &Map<String, Value>) -> Verdict {
    let acceptable = headers.iter().all(|(name, value)| {
        short_string(name, false)
            && match value {
                Value::Bool(_) => true,
                Value::Number(number) => number.as_i64().is_some() || number.is_f64(),
                Value::String(text) => !text.contains('\0'),
                _ => false,
            }
    });
    if acceptable {
        Verdict::Valid
    } else {
        Verdict::Invalid(422)
    }
}

/// POST /messages: an object of the documented fields with their types (400
/// otherwise), then each value in the order the API judges them.
fn judge_create(fields: &RawFields, now: DateTime<Utc>) -> Verdict {
    if fields
        .keys()
        .any(|name| !CREATE_FIELDS.contains(&name.as_str()))
    {
        return Verdict::Invalid(400);
    }
    let (Some(Ok(Value::String(routing_key))), Some(payload), Some(Ok(Value::String(deliver_at)))) = (
        value_of(fields, "routing_key"),
        fields.get("payload"),
        value_of(fields, "deliver_at"),
    ) else {
        return Verdict::Invalid(400);
    };
    let (Ok(key), Ok(exchange), Ok(expires_at)) = (
        optional_text(fields, "key"),
        optional_text(fields, "exchange"),
        optional_text(fields, "expires_at"),
    ) else {
        return Verdict::Invalid(400);
    };
    let headers = match value_of(fields, "headers") {
        None | Some(Ok(Value::Null)) => None,
        Some(Ok(Value::Object(headers))) => Some(headers),
        Some(_) => return Verdict::Invalid(400),
    };
    let (key, exchange, expires_at) = (key.flatten(), exchange.flatten(), expires_at.flatten());
    let valid_if = |ok: bool| {
        if ok {
            Verdict::Valid
        } else {
            Verdict::Invalid(422)
        }
    };
    let (deliver_verdict, deliver_instant) = judge_deliver_at(&deliver_at, now);
    let (expiry_verdict, order_verdict) = match &expires_at {
        None => (Verdict::Valid, Verdict::Valid),
        Some(raw) => {
            let (verdict, instant) = judge_expiry(raw);
            (verdict, judge_order(deliver_instant, instant))
        }
    };
    worst([
        valid_if(short_string(&routing_key, true)),
        valid_if(exchange.as_deref().is_none_or(|e| short_string(e, false))),
        judge_destination(exchange.as_deref(), &routing_key),
        valid_if(
            key.as_deref()
                .is_none_or(|key| (1..=200).contains(&key.chars().count()) && !key.contains('\0')),
        ),
        judge_payload(payload.get()),
        deliver_verdict,
        expiry_verdict,
        order_verdict,
        headers.as_ref().map_or(Verdict::Valid, judge_headers),
    ])
}

/// The times of the message a change applies to.
#[derive(Debug, Clone, Copy)]
struct StoredTimes {
    deliver_at: DateTime<Utc>,
    expires_at: Option<DateTime<Utc>>,
}

/// PATCH /messages/{id}: any of the documented fields; `deliver_at` not
/// null; at least one field; the resulting expiry after the resulting
/// delivery when either time changes.
fn judge_update(fields: &RawFields, now: DateTime<Utc>, stored: StoredTimes) -> Verdict {
    if fields
        .keys()
        .any(|name| !UPDATE_FIELDS.contains(&name.as_str()))
    {
        return Verdict::Invalid(400);
    }
    let (Ok(deliver_at), Ok(expires_at)) = (
        optional_text(fields, "deliver_at"),
        optional_text(fields, "expires_at"),
    ) else {
        return Verdict::Invalid(400);
    };
    if fields.is_empty() {
        return Verdict::Invalid(422);
    }
    let (deliver_verdict, deliver_instant) = match &deliver_at {
        None => (Verdict::Valid, Some(stored.deliver_at)),
        Some(None) => (Verdict::Invalid(422), None),
        Some(Some(raw)) => judge_deliver_at(raw, now),
    };
    let (expiry_verdict, expiry_instant) = match &expires_at {
        None => (Verdict::Valid, stored.expires_at),
        Some(None) => (Verdict::Valid, None),
        Some(Some(raw)) => judge_expiry(raw),
    };
    let order = match (&deliver_at, &expires_at) {
        (None, None) => Verdict::Valid,
        (_, Some(None)) => Verdict::Valid,
        (_, None) if stored.expires_at.is_none() => Verdict::Valid,
        _ => judge_order(deliver_instant, expiry_instant),
    };
    worst([
        deliver_verdict,
        fields
            .get("payload")
            .map_or(Verdict::Valid, |payload| judge_payload(payload.get())),
        expiry_verdict,
        order,
    ])
}

// --- generated bodies ----------------------------------------------------------

/// A payload as written.
#[derive(Debug, Clone)]
enum Payload {
    /// A JSON value with this white space around each of its tokens.
    Spaced(Value, &'static str),
    /// Text a JSON value would not keep: escapes, huge numbers, duplicate
    /// keys, nesting, sizes around the limit.
    Raw(String),
}

impl Payload {
    fn text(&self) -> String {
        match self {
            Payload::Spaced(value, space) => {
                let mut out = String::new();
                spaced(value, space, &mut out);
                out
            }
            Payload::Raw(text) => text.clone(),
        }
    }
}

fn spaced(value: &Value, space: &str, out: &mut String) {
    match value {
        Value::Array(items) => {
            out.push('[');
            for (n, item) in items.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(space);
                spaced(item, space, out);
            }
            out.push_str(space);
            out.push(']');
        }
        Value::Object(fields) => {
            out.push('{');
            for (n, (name, item)) in fields.iter().enumerate() {
                if n > 0 {
                    out.push(',');
                }
                out.push_str(space);
                out.push_str(&Value::from(name.as_str()).to_string());
                out.push_str(space);
                out.push(':');
                out.push_str(space);
                spaced(item, space, out);
            }
            out.push_str(space);
            out.push('}');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

fn payload() -> impl Strategy<Value = Payload> {
    let nested = (120usize..=136)
        .prop_map(|depth| Payload::Raw(format!("{}1{}", "[".repeat(depth), "]".repeat(depth))));
    let sized = (MAX_PAYLOAD_BYTES - 8..=MAX_PAYLOAD_BYTES + 8)
        .prop_map(|size| Payload::Raw(format!("\"{}\"", "x".repeat(size - 2))));
    prop_oneof![
        6 => (any_json(), select(vec!["", " ", "\n", "\t", "\r\n  ", "  \n\t"]))
            .prop_map(|(value, space)| Payload::Spaced(value, space)),
        2 => select(vec![
            r#""\u00e9\ud83d\ude00 caf\u00E9 \/""#,
            r#""\u0000 and a lone \ud800""#,
            "123456789012345678901234567890123456789012345678901234567890",
            "1E+400",
            "-0.0e-999",
            r#"{"a": 1, "a": 2}"#,
            "\"é😀 日本\"",
            "[1.0, 1.50, 2e0, -0]",
            "null",
            "\"'); DROP TABLE scheduled_message; --\"",
        ])
        .prop_map(|raw| Payload::Raw(raw.to_owned())),
        1 => nested,
        2 => sized,
    ]
}

fn routing_key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z]{1,8}(\\.[a-z0-9_*#-]{0,8}){0,3}",
        2 => "bot\\.[a-z0-9]{0,4}\\.welcome(\\.x)?",
        1 => select(vec!["", ".", "bot..welcome", "#", "*"]).prop_map(str::to_owned),
        1 => (250usize..=260).prop_map(|n| "k".repeat(n)),
        1 => (125usize..=130).prop_map(|n| "é".repeat(n)),
        1 => text(),
    ]
}

fn exchange() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => select(vec!["game_scheduler", "events"]).prop_map(str::to_owned),
        1 => select(vec!["", "amq.topic", "game_scheduler ", "Events", "events\u{0}"])
            .prop_map(str::to_owned),
        1 => (254usize..=257).prop_map(|n| "x".repeat(n)),
        1 => text(),
    ]
}

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        6 => "[a-z0-9-]{1,24}",
        1 => Just(String::new()),
        1 => (198usize..=202, select(vec!["k", "é", "😀"]))
            .prop_map(|(n, unit)| unit.repeat(n)),
        1 => text(),
    ]
}

fn headers() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        6 => "[a-z][a-z0-9-]{0,12}",
        1 => Just(String::new()),
        1 => (254usize..=257).prop_map(|n| "h".repeat(n)),
        1 => text(),
    ];
    let value = prop_oneof![
        3 => text().prop_map(Value::String),
        2 => any::<i64>().prop_map(Value::from),
        2 => any::<f64>().prop_map(Value::from),
        2 => any::<bool>().prop_map(Value::Bool),
        1 => any::<u64>().prop_map(Value::from),
        1 => select(vec![json!(null), json!([1]), json!({"a": 1}), json!("nul\u{0}")]),
    ];
    prop::collection::btree_map(name, value, 0..4)
        .prop_map(|headers| Value::Object(headers.into_iter().collect()))
}

/// A required field: rarely absent, null or of the wrong type, so that most
/// bodies reach the value rules.
fn required<T: std::fmt::Debug + Clone>(
    given: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    field(given, 1, 60)
}

/// An optional field: absent or given, rarely null or of the wrong type.
fn optional<T: std::fmt::Debug + Clone>(
    given: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    field(given, 14, 10)
}

fn extra_field() -> impl Strategy<Value = Option<(String, Value)>> {
    let name = prop_oneof![
        select(vec![
            "priority",
            "Payload",
            "id",
            "state",
            "routing_key ",
            "",
            "deliver_at\u{0}",
            "traceparent",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    prop_oneof![
        10 => Just(None),
        1 => (name, any_json()).prop_map(Some),
    ]
}

/// The fields of a generated body, rendered as JSON text.
trait Fields: std::fmt::Debug + Clone {
    fn text(&self, now: DateTime<Utc>) -> String;
}

/// Writes `name: value` for each field present, the extra one too unless it
/// repeats a documented name (a repeated key is a different test).
fn object(
    entries: Vec<(&str, Option<String>)>,
    extra: &Option<(String, Value)>,
    documented: &[&str],
) -> String {
    let mut parts: Vec<String> = entries
        .into_iter()
        .filter_map(|(name, value)| value.map(|value| format!("{}: {value}", json!(name))))
        .collect();
    if let Some((name, value)) = extra
        && !documented.contains(&name.as_str())
    {
        parts.push(format!("{}: {value}", json!(name)));
    }
    format!("{{{}}}", parts.join(", "))
}

/// A field as JSON text, if present.
fn written<T>(field: &Field<T>, given: impl Fn(&T) -> String) -> Option<String> {
    match field {
        Field::Absent => None,
        Field::Null => Some("null".to_owned()),
        Field::Given(value) => Some(given(value)),
        Field::WrongType(value) => Some(value.to_string()),
    }
}

fn quoted(text: &str) -> String {
    Value::from(text).to_string()
}

#[derive(Debug, Clone)]
struct CreateFields {
    routing_key: Field<String>,
    payload: Field<Payload>,
    deliver_at: Field<TimeSpec>,
    key: Field<String>,
    exchange: Field<String>,
    headers: Field<Value>,
    expires_at: Field<TimeSpec>,
    extra: Option<(String, Value)>,
}

impl Fields for CreateFields {
    fn text(&self, now: DateTime<Utc>) -> String {
        let time = |spec: &TimeSpec| quoted(&spec.render(now));
        object(
            vec![
                ("routing_key", written(&self.routing_key, |t| quoted(t))),
                ("payload", written(&self.payload, Payload::text)),
                ("deliver_at", written(&self.deliver_at, time)),
                ("key", written(&self.key, |t| quoted(t))),
                ("exchange", written(&self.exchange, |t| quoted(t))),
                ("headers", written(&self.headers, Value::to_string)),
                ("expires_at", written(&self.expires_at, time)),
            ],
            &self.extra,
            &CREATE_FIELDS,
        )
    }
}

fn create_fields() -> impl Strategy<Value = CreateFields> {
    (
        required(routing_key()),
        required(payload()),
        required(time_spec()),
        optional(key()),
        optional(exchange()),
        optional(headers()),
        optional(time_spec()),
        extra_field(),
    )
        .prop_map(
            |(routing_key, payload, deliver_at, key, exchange, headers, expires_at, extra)| {
                CreateFields {
                    routing_key,
                    payload,
                    deliver_at,
                    key,
                    exchange,
                    headers,
                    expires_at,
                    extra,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct UpdateFields {
    deliver_at: Field<TimeSpec>,
    payload: Field<Payload>,
    expires_at: Field<TimeSpec>,
    extra: Option<(String, Value)>,
}

impl Fields for UpdateFields {
    fn text(&self, now: DateTime<Utc>) -> String {
        let time = |spec: &TimeSpec| quoted(&spec.render(now));
        object(
            vec![
                ("deliver_at", written(&self.deliver_at, time)),
                ("payload", written(&self.payload, Payload::text)),
                ("expires_at", written(&self.expires_at, time)),
            ],
            &self.extra,
            &UPDATE_FIELDS,
        )
    }
}

fn update_fields() -> impl Strategy<Value = UpdateFields> {
    (
        optional(time_spec()),
        optional(payload()),
        optional(time_spec()),
        extra_field(),
    )
        .prop_map(|(deliver_at, payload, expires_at, extra)| UpdateFields {
            deliver_at,
            payload,
            expires_at,
            extra,
        })
}

/// A request body: the documented structure with mutated fields, such a
/// body with one byte changed under some content type, or any JSON at all.
#[derive(Debug, Clone)]
enum Request<F> {
    Almost(F),
    Bytes {
        fields: F,
        edit: ByteEdit,
        content_type: Option<&'static str>,
    },
    Arbitrary(Value),
}

fn request<F: Fields>(fields: BoxedStrategy<F>) -> impl Strategy<Value = Request<F>> {
    prop_oneof![
        8 => fields.clone().prop_map(Request::Almost),
        2 => (fields, byte_edit(), content_type()).prop_map(|(fields, edit, content_type)| {
            Request::Bytes { fields, edit, content_type }
        }),
        1 => any_json().prop_map(Request::Arbitrary),
    ]
}

/// A body as sent, with the oracle's verdict.
struct Rendered {
    content_type: Option<&'static str>,
    bytes: Vec<u8>,
    /// The fields as written, when the body is a JSON object.
    fields: Option<RawFields>,
    verdict: Verdict,
    /// Edited bytes may repeat a key, which serde refuses (400) and the
    /// parsed fields cannot show: a 400 is then acceptable too.
    also_400: bool,
}

impl<F: Fields> Request<F> {
    fn render(&self, now: DateTime<Utc>, judge: impl Fn(&RawFields) -> Verdict) -> Rendered {
        let (bytes, content_type, edited) = match self {
            Request::Almost(fields) => (
                fields.text(now).into_bytes(),
                Some("application/json"),
                false,
            ),
            Request::Bytes {
                fields,
                edit,
                content_type,
            } => {
                let mut bytes = fields.text(now).into_bytes();
                edit.apply(&mut bytes);
                (bytes, *content_type, true)
            }
            Request::Arbitrary(value) => (
                value.to_string().into_bytes(),
                Some("application/json"),
                false,
            ),
        };
        let fields = serde_json::from_slice::<RawFields>(&bytes).ok();
        let media_type = content_type
            .unwrap_or("")
            .split(';')
            .next()
            .unwrap_or("")
            .trim();
        let verdict = if !media_type.eq_ignore_ascii_case("application/json") {
            Verdict::Invalid(415)
        } else {
            fields.as_ref().map_or(Verdict::Invalid(400), &judge)
        };
        Rendered {
            content_type,
            bytes,
            fields,
            verdict,
            also_400: edited && verdict != Verdict::Invalid(415),
        }
    }
}

impl Rendered {
    fn request(&self, h: &Harness, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = h.api.request(method, path).body(self.bytes.clone());
        match self.content_type {
            Some(content_type) => request.header(CONTENT_TYPE, content_type),
            None => request,
        }
    }

    fn text(&self, name: &str) -> Option<String> {
        self.fields
            .as_ref()
            .and_then(|fields| optional_text(fields, name).ok())
            .flatten()
            .flatten()
    }

    fn raw(&self, name: &str) -> Option<&str> {
        self.fields
            .as_ref()
            .and_then(|fields| fields.get(name))
            .map(|raw| raw.get())
    }
}

// --- the checks ----------------------------------------------------------------

/// Never a 5xx; a status the verdict allows, with `success` standing for the
/// endpoint's success statuses; the error body on a 4xx.
fn check_status(
    answer: &Answer,
    verdict: Verdict,
    success: &[u16],
    also_400: bool,
) -> Result<(), TestCaseError> {
    prop_assert!(
        answer.status < 500,
        "server error {}: {}",
        answer.status,
        answer.text()
    );
    let allowed = match verdict {
        Verdict::Valid => success.contains(&answer.status),
        Verdict::Borderline(error) => success.contains(&answer.status) || answer.status == error,
        Verdict::Invalid(error) => answer.status == error,
    } || (also_400 && answer.status == 400);
    prop_assert!(
        allowed,
        "the oracle says {:?} (success {:?}), the API answered {}: {}",
        verdict,
        success,
        answer.status,
        answer.text()
    );
    if answer.status >= 400 {
        check_error_body(answer)?;
    }
    Ok(())
}

async fn message_count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM scheduled_message", &[])
        .await
        .expect("the table still exists")
        .get(0)
}

/// The id at the start of a message body, read without parsing the body
/// (serde_json's Value cannot hold every payload).
fn answered_id(answer: &Answer) -> Result<Uuid, TestCaseError> {
    let text = answer.text();
    text.strip_prefix("{\"id\":\"")
        .and_then(|rest| rest.get(..36))
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("no id at the start of {text}")))
}

struct StoredMessage {
    payload: String,
    routing_key: String,
    exchange: Option<String>,
    key: Option<String>,
    headers: Option<Value>,
    times: StoredTimes,
    row: String,
}

async fn stored(client: &tokio_postgres::Client, id: Uuid) -> StoredMessage {
    let row = client
        .query_one(
            "SELECT payload::text, routing_key, exchange, key, headers, deliver_at, expires_at, \
                    m::text FROM scheduled_message m WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the message is stored");
    StoredMessage {
        payload: row.get(0),
        routing_key: row.get(1),
        exchange: row.get(2),
        key: row.get(3),
        headers: row.get(4),
        times: StoredTimes {
            deliver_at: row.get(5),
            expires_at: row.get(6),
        },
        row: row.get(7),
    }
}

/// Headers as stored are those sent. jsonb keeps numbers exactly, but reads
/// long decimals back through serde_json's fast float parsing, which may be
/// one unit in the last place off; floats are compared with that tolerance.
fn same_headers(stored: Option<&Value>, sent: Option<&Value>) -> bool {
    let (Some(Value::Object(stored)), Some(Value::Object(sent))) = (stored, sent) else {
        return stored == sent;
    };
    stored.len() == sent.len()
        && stored.iter().all(|(name, value)| {
            sent.get(name).is_some_and(|given| match (value, given) {
                (Value::Number(a), Value::Number(b)) if a.is_f64() || b.is_f64() => {
                    let (a, b) = (
                        a.as_f64().unwrap_or(f64::NAN),
                        b.as_f64().unwrap_or(f64::NAN),
                    );
                    a == b || (a - b).abs() <= 4.0 * f64::EPSILON * a.abs().max(b.abs())
                }
                _ => value == given,
            })
        })
}

/// A stored time is the time sent, to the microsecond.
fn same_instant(stored: DateTime<Utc>, sent: &str) -> Result<(), TestCaseError> {
    if let Rfc3339::At(at) = rfc3339(sent) {
        prop_assert_eq!(micros(stored), micros(at), "stored {} for {}", stored, sent);
    }
    Ok(())
}

async fn check_create(h: &Harness, request: Request<CreateFields>) -> Result<(), TestCaseError> {
    let now = Utc::now();
    let rendered = request.render(now, |fields| judge_create(fields, now));
    // A key an earlier case stored (shrinking repeats cases): a retry, 200
    // for the same content, 409 for other.
    let key = rendered.text("key");
    let retry = match &key {
        // Not a text PostgreSQL can compare; refused anyway.
        Some(key) if key.contains('\0') => false,
        Some(key) => h
            .client
            .query_opt("SELECT 1 FROM scheduled_message WHERE key = $1", &[key])
            .await
            .expect("look the key up")
            .is_some(),
        None => false,
    };
    let before = message_count(&h.client).await;
    let answer = send(rendered.request(h, Method::POST, "/messages")).await;
    let after = message_count(&h.client).await;
    let success: &[u16] = if retry { &[200, 409] } else { &[201] };
    check_status(&answer, rendered.verdict, success, rendered.also_400)?;
    if answer.status != 201 {
        prop_assert_eq!(after, before, "a request that created nothing wrote a row");
        return Ok(());
    }
    prop_assert_eq!(after, before + 1);
    let id = answered_id(&answer)?;
    let message = stored(&h.client, id).await;
    let payload = rendered
        .raw("payload")
        .expect("a created message had a payload");
    prop_assert_eq!(&message.payload, payload, "stored byte for byte");
    prop_assert!(
        answer.body().contains(&format!("\"payload\":{payload}")),
        "answered byte for byte: {}",
        answer.text()
    );
    prop_assert_eq!(Some(message.routing_key), rendered.text("routing_key"));
    prop_assert_eq!(message.exchange, rendered.text("exchange"));
    prop_assert_eq!(message.key, key);
    let sent_headers = rendered
        .fields
        .as_ref()
        .and_then(|fields| value_of(fields, "headers"))
        .and_then(Result::ok)
        .filter(|headers| !headers.is_null());
    prop_assert!(
        same_headers(message.headers.as_ref(), sent_headers.as_ref()),
        "headers {:?} stored for {:?}",
        message.headers,
        sent_headers
    );
    same_instant(
        message.times.deliver_at,
        &rendered.text("deliver_at").unwrap_or_default(),
    )?;
    match (message.times.expires_at, rendered.text("expires_at")) {
        (Some(stored), Some(sent)) => same_instant(stored, &sent)?,
        (None, None) => {}
        (stored, sent) => prop_assert!(false, "expires_at {:?} stored for {:?}", stored, sent),
    }
    Ok(())
}

async fn check_update(
    h: &Harness,
    id: Uuid,
    request: Request<UpdateFields>,
) -> Result<(), TestCaseError> {
    let now = Utc::now();
    let before = stored(&h.client, id).await;
    let rendered = request.render(now, |fields| judge_update(fields, now, before.times));
    let count = message_count(&h.client).await;
    let answer = send(rendered.request(h, Method::PATCH, &format!("/messages/{id}"))).await;
    check_status(&answer, rendered.verdict, &[200], rendered.also_400)?;
    prop_assert_eq!(message_count(&h.client).await, count);
    let after = stored(&h.client, id).await;
    if answer.status != 200 {
        prop_assert_eq!(
            after.row,
            before.row,
            "a refused change changed the message"
        );
        return Ok(());
    }
    let expected_payload = rendered.raw("payload").unwrap_or(&before.payload);
    prop_assert_eq!(&after.payload, expected_payload, "stored byte for byte");
    match rendered.text("deliver_at") {
        Some(sent) => same_instant(after.times.deliver_at, &sent)?,
        None => prop_assert_eq!(after.times.deliver_at, before.times.deliver_at),
    }
    let expiry = rendered
        .fields
        .as_ref()
        .map(|fields| optional_text(fields, "expires_at"));
    match (expiry, after.times.expires_at) {
        (Some(Ok(Some(Some(sent)))), Some(stored)) => same_instant(stored, &sent)?,
        (Some(Ok(Some(None))), stored) => prop_assert_eq!(stored, None),
        (Some(Ok(None)), stored) => prop_assert_eq!(stored, before.times.expires_at),
        (sent, stored) => prop_assert!(false, "expires_at {:?} stored for {:?}", stored, sent),
    }
    prop_assert_eq!(after.routing_key, before.routing_key);
    Ok(())
}

/// POST /messages: never a 5xx; the status the oracle gives (403 off the
/// allow-list, 413 for a payload over the limit, 422 naming the value, 400
/// for the shape); nothing written when refused; a created message stored
/// as sent, its payload byte for byte.
#[test]
fn generated_message_bodies_get_the_documented_answer_and_refusals_write_nothing() {
    let harness = harness();
    harness.check(160, request(create_fields().boxed()), |input| {
        check_create(&harness, input)
    });
}

/// PATCH /messages/{id}: as for creating; a refused change leaves the row
/// exactly as it was, an accepted one is applied as sent.
#[test]
fn generated_message_changes_get_the_documented_answer_and_refusals_change_nothing() {
    let harness = harness();
    let id = harness.message("patch.target");
    harness.check(128, request(update_fields().boxed()), |input| {
        check_update(&harness, id, input)
    });
}
