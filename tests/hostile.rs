//! Hostile and malformed input: junk on the change-notification channel,
//! generated API requests judged by an independent oracle of the documented
//! rules, almost-right bearer tokens, and unusable settings or unreachable
//! servers at start.
//!
//! The property tests run one database and one in-process API per property,
//! driven from proptest's synchronous closure through a runtime of their own.
//! No regression files are written (`failure_persistence: None`); a failure
//! prints the shrunk input.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Debug;
use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use chrono::{DateTime, FixedOffset, NaiveDate, Utc};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use reqwest::Method;
use reqwest::header::{AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use serde_json::{Map, Value, json};
use uuid::Uuid;

use common::api::{TOKEN, TestApi};
use common::process::{
    BINARY, LogTail, Running, daemon_command, free_port, signal, wait_exit, wait_http_ok,
};
use common::schedule::{schedule, start_daemon, wait_for_count};
use common::{TestBroker, TestDb, WAIT};

// ---------------------------------------------------------------------------
// 1. Junk on the change-notification channel
// ---------------------------------------------------------------------------

const NOTIFY: &str = "SELECT pg_notify('notification_schedule_changed', $1)";
const UNRECOGNISED: &str = "unrecognised change notification";

/// Payloads the trigger never sends, each of which the daemon must log once
/// as unrecognised and otherwise survive. All are below PostgreSQL's
/// 8,000-byte NOTIFY limit.
fn junk_payloads() -> Vec<(&'static str, String)> {
    let at = "\"2030-01-01T00:00:00Z\"";
    let hint = |operation: &str, time: &str| {
        format!(r#"{{"operation": {operation}, "earliest_notification_time": {time}}}"#)
    };
    vec![
        ("empty", String::new()),
        ("not JSON", "not json".to_owned()),
        ("JSON null", "null".to_owned()),
        ("a bare number", "42".to_owned()),
        ("a bare string", r#""INSERT""#.to_owned()),
        ("an empty object", "{}".to_owned()),
        ("operation of the wrong type", hint("5", at)),
        ("operation null", hint("null", at)),
        ("time of the wrong type", hint(r#""INSERT""#, "12")),
        ("time null", hint(r#""INSERT""#, "null")),
        ("time not a time", hint(r#""INSERT""#, r#""yesterday""#)),
        (
            "time without an offset",
            hint(r#""INSERT""#, r#""2030-01-01T00:00:00""#),
        ),
        (
            "time out of range",
            hint(r#""INSERT""#, r#""2030-13-45T25:61:61Z""#),
        ),
        ("number out of range", hint(r#""INSERT""#, "1e999999")),
        ("unknown operation", hint(r#""TRUNCATE""#, at)),
        ("lower-case operation", hint(r#""insert""#, at)),
        (
            "an unknown field",
            format!(
                r#"{{"operation": "INSERT", "earliest_notification_time": {at}, "extra": {{"nested": [1, 2, 3]}}}}"#
            ),
        ),
        (
            "a duplicate key",
            format!(
                r#"{{"operation": "INSERT", "operation": "DELETE", "earliest_notification_time": {at}}}"#
            ),
        ),
        ("a lone surrogate escape", hint(r#""\ud800""#, at)),
        ("a NUL escape", hint(r#""INSERT\u0000""#, at)),
        (
            "a byte-order mark",
            format!("\u{feff}{}", hint(r#""INSERT""#, at)),
        ),
        (
            "truncated JSON",
            r#"{"operation": "INSERT", "earliest_notif"#.to_owned(),
        ),
        (
            "deeply nested arrays",
            format!("{}{}", "[".repeat(3_900), "]".repeat(3_900)),
        ),
        (
            "deeply nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(1_300), "}".repeat(1_300)),
        ),
        ("7,999 bytes", "x".repeat(7_999)),
        ("7,997 bytes of emoji", format!("a{}", "😀".repeat(1_999))),
        (
            "a valid hint padded to 7,950 bytes",
            format!(
                r#"{{"operation": "INSERT", "earliest_notification_time": {at}, "padding": "{}"}}"#,
                "p".repeat(7_860)
            ),
        ),
        (
            "control characters and a forged log line",
            "junk\r\n{\"level\":\"ERROR\",\"message\":\"forged\"}\n\t\u{1b}[31m".to_owned(),
        ),
    ]
}

/// Hints the daemon understands (not logged) with absurd times, and one it
/// accepts leniently: serde reads an array into the payload's fields by
/// position. All harmless: a hint only triggers a re-read.
fn absurd_hints() -> Vec<String> {
    let mut hints: Vec<String> = [
        ("INSERT", "0001-01-01T00:00:00Z"),
        ("UPDATE", "9999-12-31T23:59:59.999999Z"),
        ("DELETE", "2030-01-01T00:00:00+23:59"),
        ("INSERT", "1970-01-01T00:00:00-23:59"),
    ]
    .iter()
    .map(|(operation, time)| {
        json!({"operation": operation, "earliest_notification_time": time}).to_string()
    })
    .collect();
    hints.push(r#"["INSERT", "2030-01-01T00:00:00Z"]"#.to_owned());
    hints
}

/// The backend pid of the daemon's LISTEN connection: a restarted listener
/// has a new one.
async fn listener_backend(client: &tokio_postgres::Client) -> i32 {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'notification-scheduler listener'",
            &[],
        )
        .await
        .expect("read pg_stat_activity");
    assert_eq!(rows.len(), 1, "one LISTEN connection");
    rows[0].get(0)
}

fn log_lines(log: &LogTail) -> Vec<Value> {
    log.text()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("a log line is not a JSON object: {line:?}"))
        })
        .collect()
}

/// Lines whose message starts with `message`.
fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// The daemon as a process with JSON logs: every junk payload is logged once,
/// as one well-formed line with the payload truncated; no actor restarts, the
/// LISTEN connection is the same, and reminders armed before and scheduled
/// after the junk are each delivered once, at their time.
#[tokio::test]
async fn junk_notifications_are_logged_once_each_and_change_nothing() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let port = free_port();
    let mut daemon = Running(
        daemon_command(&db.url, &broker, port)
            .spawn()
            .expect("the daemon starts"),
    );
    let log = LogTail::follow(&mut daemon.0);
    wait_http_ok(port, "/readyz").await;
    let client = db.client().await;
    let listener = listener_backend(&client).await;
    let armed = schedule(&client, 3_600_000, &[5_000]).await;

    let junk = junk_payloads();
    for (name, payload) in &junk {
        assert!(payload.len() < 8_000, "{name}: too long for NOTIFY");
        client
            .execute(NOTIFY, &[payload])
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for payload in absurd_hints() {
        client.execute(NOTIFY, &[&payload]).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while with_message(&log_lines(&log), UNRECOGNISED).len() < junk.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every junk payload was logged:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let after = schedule(&client, 3_600_000, &[1_500]).await;
    let expected: Vec<_> = armed.iter().chain(&after).collect();
    let received = consumer.take(2).await;
    for message in &received {
        let reminder = expected
            .iter()
            .find(|r| r.id.to_string() == message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            message.received_at >= reminder.at,
            "delivered early: {message:?}"
        );
    }
    assert_ne!(
        received[0].message_id, received[1].message_id,
        "each reminder once"
    );
    consumer.assert_quiet(Duration::from_millis(500)).await;
    wait_for_count(&client, "sent AND outcome = 'published'", 2).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 200, "still ready");
    assert_eq!(
        listener_backend(&client).await,
        listener,
        "the listener was never restarted"
    );

    signal(&daemon.0, "TERM");
    assert_eq!(wait_exit(&mut daemon.0).await.code(), Some(0));
    log.wait_for_line("daemon stopped", WAIT).await;
    let lines = log_lines(&log);
    let unrecognised = with_message(&lines, UNRECOGNISED);
    assert_eq!(
        unrecognised.len(),
        junk.len(),
        "one line per junk payload, none for the well-formed ones:\n{}",
        log.text()
    );
    for line in &unrecognised {
        assert_eq!(line["level"], "WARN", "{line}");
        let payload = line["payload"].as_str().expect("the payload is logged");
        assert!(payload.len() < 320, "payload not truncated: {line}");
    }
    assert!(
        with_message(&lines, "forged").is_empty(),
        "a payload forged a log line"
    );
    assert!(
        with_message(&lines, "actor failed; restarting after backoff").is_empty(),
        "an actor restarted:\n{}",
        log.text()
    );
    assert!(!log.text().contains("panicked"), "{}", log.text());
}

/// Thousands of notifications in one burst (junk, and well-formed hints that
/// lie: long past, so each asks for a round, or far future) neither delay
/// nor duplicate the reminders due meanwhile.
#[tokio::test]
async fn a_flood_of_junk_and_lying_notifications_neither_delays_nor_duplicates_delivery() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let listener = listener_backend(&client).await;
    let reminders = schedule(&client, 3_600_000, &[2_000, 2_500, 3_000]).await;
    // One statement: 3,000 distinct payloads, delivered together at commit.
    client
        .batch_execute(
            "SELECT pg_notify('notification_schedule_changed', CASE g % 3 \
                 WHEN 0 THEN 'junk ' || g \
                 WHEN 1 THEN json_build_object('operation', 'INSERT', 'earliest_notification_time', \
                                               timestamptz '2000-01-01' + g * interval '1 second')::text \
                 ELSE json_build_object('operation', 'DELETE', 'earliest_notification_time', \
                                        timestamptz '9999-01-01' + g * interval '1 second')::text END) \
               FROM generate_series(1, 3000) AS g",
        )
        .await
        .unwrap();
    let received = consumer.take(3).await;
    for message in &received {
        let reminder = reminders
            .iter()
            .find(|r| r.id.to_string() == message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        let late = message.received_at - reminder.at;
        assert!(late >= chrono::Duration::zero(), "early: {message:?}");
        assert!(
            late < chrono::Duration::seconds(2),
            "{late} late after the flood"
        );
    }
    consumer.assert_quiet(Duration::from_millis(750)).await;
    wait_for_count(&client, "sent AND outcome = 'published'", 3).await;
    assert!(daemon.readiness.report().ready());
    assert_eq!(
        listener_backend(&client).await,
        listener,
        "the listener was never restarted"
    );
    daemon.shutdown().await;
}

// ---------------------------------------------------------------------------
// 2. The API under generated requests: the oracle
// ---------------------------------------------------------------------------

/// What the documented rules say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verdict {
    /// Acceptable: the endpoint's success status.
    Valid,
    /// On a boundary the oracle cannot call (a time within seconds of "now"
    /// or of one year ahead, a leap second, a non-canonical form): success
    /// or this error status.
    Borderline(u16),
    /// Refused with this status.
    Invalid(u16),
}

/// The verdict of a request whose parts were judged separately: the first
/// refusal, else any borderline part, else valid.
fn worst(parts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let parts: Vec<Verdict> = parts.into_iter().collect();
    if let Some(refused) = parts.iter().find(|v| matches!(v, Verdict::Invalid(_))) {
        return *refused;
    }
    parts
        .into_iter()
        .find(|v| matches!(v, Verdict::Borderline(_)))
        .unwrap_or(Verdict::Valid)
}

const DAY: i64 = 86_400;
const TITLE_MAX: usize = 200;
const MINUTES_MAX: i64 = 10_080;
const REMINDERS_MAX: usize = 10;
const DEFAULT_MINUTES: [i64; 2] = [60, 15];

/// An RFC 3339 date-time as an instant (section 5.6; its note allows a space
/// or lower-case `t`/`z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rfc3339 {
    At(DateTime<Utc>),
    /// Second 60: valid syntax, an instant only on a real leap second.
    LeapSecond,
    Not,
}

fn rfc3339(raw: &str) -> Rfc3339 {
    let bytes = raw.as_bytes();
    let number = |from: usize, to: usize| -> Option<u32> {
        let digits = bytes.get(from..to)?;
        digits
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| digits.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let is = |at: usize, allowed: &[u8]| bytes.get(at).is_some_and(|c| allowed.contains(c));
    let (Some(year), Some(month), Some(day), Some(hour), Some(minute), Some(second)) = (
        number(0, 4),
        number(5, 7),
        number(8, 10),
        number(11, 13),
        number(14, 16),
        number(17, 19),
    ) else {
        return Rfc3339::Not;
    };
    if !(is(4, b"-") && is(7, b"-") && is(10, b"Tt ") && is(13, b":") && is(16, b":")) {
        return Rfc3339::Not;
    }
    let mut rest = &bytes[19..];
    let mut nanos = 0;
    if rest.first() == Some(&b'.') {
        let digits = rest[1..].iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 {
            return Rfc3339::Not;
        }
        nanos = rest[1..]
            .iter()
            .take(digits)
            .chain(std::iter::repeat(&b'0'))
            .take(9)
            .fold(0, |n, d| n * 10 + u32::from(d - b'0'));
        rest = &rest[1 + digits..];
    }
    let offset_seconds = match rest {
        b"Z" | b"z" => 0,
        [sign @ (b'+' | b'-'), h1, h2, b':', m1, m2]
            if [h1, h2, m1, m2].iter().all(|c| c.is_ascii_digit()) =>
        {
            let hours = i64::from((h1 - b'0') * 10 + (h2 - b'0'));
            let minutes = i64::from((m1 - b'0') * 10 + (m2 - b'0'));
            if hours > 23 || minutes > 59 {
                return Rfc3339::Not;
            }
            let seconds = hours * 3_600 + minutes * 60;
            if *sign == b'-' { -seconds } else { seconds }
        }
        _ => return Rfc3339::Not,
    };
    if hour > 23 || minute > 59 || second > 60 {
        return Rfc3339::Not;
    }
    let Some(date) = NaiveDate::from_ymd_opt(year as i32, month, day) else {
        return Rfc3339::Not;
    };
    if second == 60 {
        return Rfc3339::LeapSecond;
    }
    let Some(local) = date.and_hms_nano_opt(hour, minute, second, nanos) else {
        return Rfc3339::Not;
    };
    Rfc3339::At(local.and_utc() - chrono::Duration::seconds(offset_seconds))
}

/// A title: 1 to 200 characters, not only white space.
fn judge_title(title: &str) -> Verdict {
    if title.chars().all(char::is_whitespace)
        || title.chars().count() > TITLE_MAX
        || title.contains('\0')
    {
        Verdict::Invalid(422)
    } else {
        Verdict::Valid
    }
}

/// A start: RFC 3339 with an explicit offset, in the future, at most a year ahead.
fn judge_start(raw: &str, now: DateTime<Utc>) -> Verdict {
    let margin = chrono::Duration::seconds(30);
    let horizon = now + chrono::Duration::days(365);
    match rfc3339(raw) {
        Rfc3339::Not => Verdict::Invalid(422),
        Rfc3339::LeapSecond => Verdict::Borderline(422),
        Rfc3339::At(at) if (at - now).abs() < margin || (at - horizon).abs() < margin => {
            Verdict::Borderline(422)
        }
        Rfc3339::At(at) if at > now && at <= horizon => Verdict::Valid,
        Rfc3339::At(_) => Verdict::Invalid(422),
    }
}

/// Reminder minutes: at most 10, distinct, each 0 to 10080.
fn judge_minutes(minutes: &[i64]) -> Verdict {
    let distinct: BTreeSet<i64> = minutes.iter().copied().collect();
    if minutes.len() > REMINDERS_MAX
        || distinct.len() != minutes.len()
        || minutes.iter().any(|m| !(0..=MINUTES_MAX).contains(m))
    {
        Verdict::Invalid(422)
    } else {
        Verdict::Valid
    }
}

/// `reminder_minutes` as JSON: absent or null (the default), or an array of
/// whole numbers; anything else is the wrong type.
fn typed_minutes(value: Option<&Value>) -> Result<Option<Vec<i64>>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(Value::as_i64)
            .collect::<Option<Vec<i64>>>()
            .map(Some)
            .ok_or(()),
        Some(_) => Err(()),
    }
}

const GAME_FIELDS: [&str; 3] = ["title", "scheduled_at", "reminder_minutes"];

/// POST /games: an object of exactly the documented fields (400 otherwise),
/// then the value rules (422).
fn judge_create(body: &Value, now: DateTime<Utc>) -> Verdict {
    let Some(fields) = body.as_object() else {
        return Verdict::Invalid(400);
    };
    if fields
        .keys()
        .any(|key| !GAME_FIELDS.contains(&key.as_str()))
    {
        return Verdict::Invalid(400);
    }
    let (Some(Value::String(title)), Some(Value::String(start))) =
        (fields.get("title"), fields.get("scheduled_at"))
    else {
        return Verdict::Invalid(400);
    };
    let Ok(minutes) = typed_minutes(fields.get("reminder_minutes")) else {
        return Verdict::Invalid(400);
    };
    worst([
        judge_title(title),
        judge_start(start, now),
        minutes.map_or(Verdict::Valid, |m| judge_minutes(&m)),
    ])
}

/// PATCH /games/{id}: any of the documented fields; `title` and
/// `scheduled_at` must not be null; at least one field.
fn judge_update(body: &Value, now: DateTime<Utc>) -> Verdict {
    let Some(fields) = body.as_object() else {
        return Verdict::Invalid(400);
    };
    if fields
        .keys()
        .any(|key| !GAME_FIELDS.contains(&key.as_str()))
    {
        return Verdict::Invalid(400);
    }
    let text = |name: &str| match fields.get(name) {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(text)) => Ok(Some(Some(text.as_str()))),
        Some(_) => Err(()),
    };
    let (Ok(title), Ok(start)) = (text("title"), text("scheduled_at")) else {
        return Verdict::Invalid(400);
    };
    let Ok(minutes) = typed_minutes(fields.get("reminder_minutes")) else {
        return Verdict::Invalid(400);
    };
    if fields.is_empty() {
        return Verdict::Invalid(422);
    }
    worst([
        match title {
            None => Verdict::Valid,
            Some(None) => Verdict::Invalid(422),
            Some(Some(title)) => judge_title(title),
        },
        match start {
            None => Verdict::Valid,
            Some(None) => Verdict::Invalid(422),
            Some(Some(start)) => judge_start(start, now),
        },
        minutes.map_or(Verdict::Valid, |m| judge_minutes(&m)),
    ])
}

/// A page size: a whole number from 1 to `max`.
fn judge_limit(raw: &str, max: i64) -> Verdict {
    let digits = raw.strip_prefix('+').unwrap_or(raw);
    let whole = !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit());
    let significant = digits.trim_start_matches('0');
    if whole && significant.len() <= 6 && significant.parse::<i64>().is_ok_and(|n| n <= max) {
        if significant.is_empty() {
            Verdict::Invalid(400)
        } else {
            Verdict::Valid
        }
    } else {
        Verdict::Invalid(400)
    }
}

/// A time filter: any RFC 3339 instant.
fn judge_filter_time(raw: &str) -> Verdict {
    match rfc3339(raw) {
        Rfc3339::At(_) => Verdict::Valid,
        Rfc3339::LeapSecond => Verdict::Borderline(400),
        Rfc3339::Not => Verdict::Invalid(400),
    }
}

/// The instants a cursor can name: those PostgreSQL can store (from 4713 BC;
/// a margin of centuries kept) that chrono can represent.
fn cursor_micros_range() -> std::ops::RangeInclusive<i64> {
    let earliest = NaiveDate::from_ymd_opt(-4_000, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .expect("a date")
        .and_utc()
        .timestamp_micros();
    earliest..=DateTime::<Utc>::MAX_UTC.timestamp_micros()
}

/// A cursor: `next_cursor` of an earlier page, `<microseconds>.<simple uuid>`.
/// Other spellings of the same parts may or may not be accepted.
fn judge_cursor(raw: &str) -> Verdict {
    let Some((micros, id)) = raw.split_once('.') else {
        return Verdict::Invalid(400);
    };
    let canonical_micros = micros
        .strip_prefix('-')
        .unwrap_or(micros)
        .bytes()
        .all(|b| b.is_ascii_digit())
        && !micros.is_empty()
        && micros != "-";
    let canonical_id = id.len() == 32 && id.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'));
    let parsed = micros.parse::<i64>().ok();
    if parsed.is_none() || Uuid::parse_str(id).is_err() {
        return Verdict::Invalid(400);
    }
    let micros = parsed.unwrap_or_default();
    let chrono_range =
        DateTime::<Utc>::MIN_UTC.timestamp_micros()..=DateTime::<Utc>::MAX_UTC.timestamp_micros();
    if !chrono_range.contains(&micros) {
        return Verdict::Invalid(400);
    }
    if !cursor_micros_range().contains(&micros) {
        // Before 4000 BC: no game can be there, and before 4713 BC PostgreSQL
        // cannot even compare with it.
        return Verdict::Borderline(400);
    }
    if canonical_micros && canonical_id {
        Verdict::Valid
    } else {
        Verdict::Borderline(400)
    }
}

// ---------------------------------------------------------------------------
// 2. The API under generated requests: strategies
// ---------------------------------------------------------------------------

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })
}

/// Short text of any kind.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[ -~]{0,24}",
        1 => "(?s).{0,24}",
    ]
}

fn json_key() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => select(GAME_FIELDS.to_vec()).prop_map(str::to_owned),
        1 => text(),
    ]
}

/// Any JSON value.
fn any_json() -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        text().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 5, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            prop::collection::btree_map(json_key(), inner, 0..5)
                .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        ]
    })
    .boxed()
}

/// A request body of any shape, mostly objects with some of the real keys.
fn any_body() -> impl Strategy<Value = Value> {
    prop_oneof![
        3 => prop::collection::btree_map(json_key(), any_json(), 0..5)
            .prop_map(|fields| Value::Object(fields.into_iter().collect())),
        1 => any_json(),
    ]
}

const SQL_INJECTIONS: &[&str] = &[
    "'); DROP TABLE game_sessions; --",
    "Robert'); DROP TABLE notification_schedule;--",
    "' OR '1'='1",
    "\"; DELETE FROM game_sessions; --",
    "$$; TRUNCATE notification_schedule; $$",
    "1; SELECT pg_sleep(10); --",
    "\\'; DROP TABLE game_sessions; --",
    "%' OR 1=1 --",
    "' UNION SELECT id::text, title FROM game_sessions --",
    "'||(SELECT version())||'",
    "E'\\x27'; COMMIT; DROP TABLE game_sessions; --",
    "$1; $2; ?; :title",
];

fn title_text() -> impl Strategy<Value = String> {
    let control = prop_oneof![
        prop::char::range('\u{1}', '\u{1f}'),
        prop::char::range('\u{7f}', '\u{9f}'),
    ];
    prop_oneof![
        4 => "[A-Za-z0-9 .,!?'-]{1,60}",
        2 => (select(SQL_INJECTIONS), "[a-z ]{0,4}", "[a-z ]{0,4}")
            .prop_map(|(sql, before, after)| format!("{before}{sql}{after}")),
        2 => (195usize..=205, select(vec!["x", "é", "😀", "漢", "e\u{301}"]))
            .prop_map(|(length, unit)| unit.chars().cycle().take(length).collect()),
        1 => select(vec![
            "", " ", "\t\n\r ", "\u{3000}", "\u{a0}\u{2003}", "\u{85}", "\u{200b}", "\u{feff}",
            "x", "\u{7f}", "\u{1b}[31mred\u{1b}[0m", "\u{202e}gnp.exe", "line\nbreak",
        ])
        .prop_map(str::to_owned),
        1 => prop::collection::vec(control, 1..20).prop_map(|chars| chars.into_iter().collect()),
        1 => "(?s).{0,220}",
    ]
}

/// How a start time is written.
#[derive(Debug, Clone)]
enum TimeForm {
    Utc {
        lower: bool,
        space: bool,
        fraction: Option<usize>,
    },
    /// With this offset in minutes (±23:59).
    Offset(i32),
    Naive,
    DateOnly,
    CompactOffset,
    HourOffset,
    OffsetOutOfRange,
    Hour24,
    LeapSecond,
    February30,
    UnixSeconds,
    Padded,
    TrailingJunk,
    Text(String),
}

/// A time some seconds from the moment the request is made, written in some form.
#[derive(Debug, Clone)]
struct TimeSpec {
    from_now: i64,
    form: TimeForm,
}

impl TimeSpec {
    fn render(&self, now: DateTime<Utc>) -> String {
        let at = now + chrono::Duration::seconds(self.from_now);
        let utc = |separator: char| {
            at.format(&format!("%Y-%m-%d{separator}%H:%M:%S"))
                .to_string()
        };
        match &self.form {
            TimeForm::Utc {
                lower,
                space,
                fraction,
            } => {
                let separator = match (space, lower) {
                    (true, _) => ' ',
                    (false, true) => 't',
                    (false, false) => 'T',
                };
                let mut text = utc(separator);
                if let Some(digits) = fraction {
                    let nanos = format!("{:09}", at.timestamp_subsec_nanos());
                    text.push('.');
                    text.extend(nanos.chars().chain(std::iter::repeat('0')).take(*digits));
                }
                text.push(if *lower { 'z' } else { 'Z' });
                text
            }
            TimeForm::Offset(minutes) => {
                let zone = FixedOffset::east_opt(minutes * 60).expect("offset within a day");
                at.with_timezone(&zone)
                    .format("%Y-%m-%dT%H:%M:%S%:z")
                    .to_string()
            }
            TimeForm::Naive => utc('T'),
            TimeForm::DateOnly => at.format("%Y-%m-%d").to_string(),
            TimeForm::CompactOffset => format!("{}+0000", utc('T')),
            TimeForm::HourOffset => format!("{}+00", utc('T')),
            TimeForm::OffsetOutOfRange => format!("{}+24:00", utc('T')),
            TimeForm::Hour24 => at.format("%Y-%m-%dT24:00:00Z").to_string(),
            TimeForm::LeapSecond => at.format("%Y-%m-%dT23:59:60Z").to_string(),
            TimeForm::February30 => at.format("%Y-02-30T12:00:00Z").to_string(),
            TimeForm::UnixSeconds => at.timestamp().to_string(),
            TimeForm::Padded => format!(" {}Z ", utc('T')),
            TimeForm::TrailingJunk => format!("{}Zjunk", utc('T')),
            TimeForm::Text(text) => text.clone(),
        }
    }
}

fn time_spec() -> impl Strategy<Value = TimeSpec> {
    let from_now = prop_oneof![
        12 => 120i64..(364 * DAY),
        2 => -(20 * 365 * DAY)..-120i64,
        2 => (366 * DAY)..(20 * 365 * DAY),
        1 => select(vec![-1, 0, 1, 365 * DAY - 1, 365 * DAY, 365 * DAY + 1]),
    ];
    let form = prop_oneof![
        8 => (any::<bool>(), any::<bool>(), prop::option::of(1usize..=12))
            .prop_map(|(lower, space, fraction)| TimeForm::Utc { lower, space, fraction }),
        6 => (-1439i32..=1439).prop_map(TimeForm::Offset),
        3 => select(vec![
            TimeForm::Naive,
            TimeForm::DateOnly,
            TimeForm::CompactOffset,
            TimeForm::HourOffset,
            TimeForm::OffsetOutOfRange,
            TimeForm::Hour24,
            TimeForm::LeapSecond,
            TimeForm::February30,
            TimeForm::UnixSeconds,
            TimeForm::Padded,
            TimeForm::TrailingJunk,
        ]),
        1 => prop_oneof!["[0-9:TZ+. -]{0,30}", text()].prop_map(TimeForm::Text),
    ];
    (from_now, form).prop_map(|(from_now, form)| TimeSpec { from_now, form })
}

fn minutes_value() -> impl Strategy<Value = Value> {
    let distinct = |sizes: std::ops::RangeInclusive<usize>| {
        prop::collection::btree_set(0i64..=MINUTES_MAX, sizes)
            .prop_map(|set| json!(set.into_iter().rev().collect::<Vec<_>>()))
    };
    prop_oneof![
        6 => distinct(0..=REMINDERS_MAX),
        1 => prop::collection::vec(0i64..=MINUTES_MAX, 1..=9).prop_map(|mut minutes| {
            minutes.push(minutes[0]);
            json!(minutes)
        }),
        1 => (prop::collection::btree_set(0i64..=MINUTES_MAX, 0..=5), i64::MIN..0)
            .prop_map(|(set, negative)| {
                let mut minutes: Vec<i64> = set.into_iter().collect();
                minutes.push(negative);
                json!(minutes)
            }),
        1 => (MINUTES_MAX + 1..=i64::MAX).prop_map(|minutes| json!([minutes])),
        1 => distinct(REMINDERS_MAX + 1..=16),
        1 => any::<f64>().prop_map(|minutes| json!([minutes])),
        2 => select(vec![
            json!([0]),
            json!([MINUTES_MAX]),
            json!([MINUTES_MAX + 1]),
            json!([-1]),
            json!([i64::MIN]),
            json!([u64::MAX]),
            json!([15.0]),
            json!([1.5]),
            json!(["15"]),
            json!([[15]]),
            json!([null]),
            json!([]),
            json!({"15": true}),
            json!(15),
            json!("15"),
            json!(true),
        ]),
    ]
}

/// A field of a generated body.
#[derive(Debug, Clone)]
enum Field<T> {
    Absent,
    Null,
    Given(T),
    WrongType(Value),
}

fn wrong_type() -> impl Strategy<Value = Value> {
    prop_oneof![
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_map(Value::from),
        select(vec![
            json!([]),
            json!({}),
            json!(["x"]),
            json!({"value": "x"})
        ]),
    ]
}

/// A field mostly given, for creating.
fn create_field<T: Debug + Clone>(
    given: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    prop_oneof![
        1 => Just(Field::Absent),
        1 => Just(Field::Null),
        24 => given.prop_map(Field::Given),
        1 => wrong_type().prop_map(Field::WrongType),
    ]
}

/// A field often absent, for updating.
fn update_field<T: Debug + Clone>(
    given: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    prop_oneof![
        5 => Just(Field::Absent),
        1 => Just(Field::Null),
        5 => given.prop_map(Field::Given),
        1 => wrong_type().prop_map(Field::WrongType),
    ]
}

/// The documented fields, each mutated, and perhaps one more.
#[derive(Debug, Clone)]
struct GameFields {
    title: Field<String>,
    scheduled_at: Field<TimeSpec>,
    reminder_minutes: Field<Value>,
    extra: Option<(String, Value)>,
}

fn extra_field() -> impl Strategy<Value = Option<(String, Value)>> {
    let key = prop_oneof![
        select(vec![
            "owner",
            "Title",
            "id",
            "created_at",
            "reminders",
            "reminderMinutes",
            "title ",
            "",
            "scheduled_at\u{0}",
            "__proto__",
        ])
        .prop_map(str::to_owned),
        "[a-z_]{1,12}",
    ];
    prop_oneof![
        10 => Just(None),
        1 => (key, any_json()).prop_map(Some),
    ]
}

fn create_fields() -> impl Strategy<Value = GameFields> {
    (
        create_field(title_text()),
        create_field(time_spec()),
        prop_oneof![
            3 => Just(Field::Absent),
            1 => Just(Field::Null),
            6 => minutes_value().prop_map(Field::Given),
        ],
        extra_field(),
    )
        .prop_map(
            |(title, scheduled_at, reminder_minutes, extra)| GameFields {
                title,
                scheduled_at,
                reminder_minutes,
                extra,
            },
        )
}

fn update_fields() -> impl Strategy<Value = GameFields> {
    (
        update_field(title_text()),
        update_field(time_spec()),
        update_field(minutes_value()),
        extra_field(),
    )
        .prop_map(
            |(title, scheduled_at, reminder_minutes, extra)| GameFields {
                title,
                scheduled_at,
                reminder_minutes,
                extra,
            },
        )
}

impl GameFields {
    fn render(&self, now: DateTime<Utc>) -> Value {
        fn put<T>(
            object: &mut Map<String, Value>,
            name: &str,
            field: &Field<T>,
            given: impl Fn(&T) -> Value,
        ) {
            let value = match field {
                Field::Absent => return,
                Field::Null => Value::Null,
                Field::Given(value) => given(value),
                Field::WrongType(value) => value.clone(),
            };
            object.insert(name.to_owned(), value);
        }
        let mut object = Map::new();
        put(&mut object, "title", &self.title, |t| {
            Value::String(t.clone())
        });
        put(&mut object, "scheduled_at", &self.scheduled_at, |s| {
            Value::String(s.render(now))
        });
        put(
            &mut object,
            "reminder_minutes",
            &self.reminder_minutes,
            Clone::clone,
        );
        if let Some((key, value)) = &self.extra {
            object.insert(key.clone(), value.clone());
        }
        Value::Object(object)
    }
}

/// One byte of a serialized body changed.
#[derive(Debug, Clone)]
enum ByteEdit {
    Keep,
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

impl ByteEdit {
    fn apply(&self, bytes: &mut Vec<u8>) {
        match self {
            ByteEdit::Keep => {}
            ByteEdit::Replace(at, byte) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] = *byte;
            }
            ByteEdit::Insert(at, byte) => bytes.insert(at.index(bytes.len() + 1), *byte),
            ByteEdit::Delete(at) if !bytes.is_empty() => {
                bytes.remove(at.index(bytes.len()));
            }
            ByteEdit::Replace(..) | ByteEdit::Delete(_) => {}
        }
    }
}

fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let byte = prop_oneof![select(b"{}[]\":,\\ 0-e.\t\n".to_vec()), any::<u8>(),];
    prop_oneof![
        1 => Just(ByteEdit::Keep),
        2 => (any::<Index>(), byte.clone()).prop_map(|(at, b)| ByteEdit::Replace(at, b)),
        2 => (any::<Index>(), byte).prop_map(|(at, b)| ByteEdit::Insert(at, b)),
        2 => any::<Index>().prop_map(ByteEdit::Delete),
    ]
}

fn content_type() -> impl Strategy<Value = Option<&'static str>> {
    prop_oneof![
        6 => Just(Some("application/json")),
        1 => select(vec![
            None,
            Some("application/json; charset=utf-8"),
            Some("APPLICATION/JSON"),
            Some(" application/json ;charset=latin1"),
            Some("application/json-patch+json"),
            Some("application/jsonx"),
            Some("text/json"),
            Some("text/plain"),
            Some("multipart/form-data; boundary=x"),
            Some(""),
        ]),
    ]
}

/// A request body for POST /games or PATCH /games/{id}.
#[derive(Debug, Clone)]
enum Body {
    /// Any JSON value at all.
    Arbitrary(Value),
    /// The documented structure with mutated fields.
    Almost(GameFields),
    /// Such a body's bytes with one byte changed, and some content type.
    Bytes {
        fields: GameFields,
        edit: ByteEdit,
        content_type: Option<&'static str>,
    },
}

fn body(fields: BoxedStrategy<GameFields>) -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => any_body().prop_map(Body::Arbitrary),
        5 => fields.clone().prop_map(Body::Almost),
        2 => (fields, byte_edit(), content_type()).prop_map(|(fields, edit, content_type)| {
            Body::Bytes { fields, edit, content_type }
        }),
    ]
}

/// A body as sent, with the oracle's verdict.
struct Rendered {
    content_type: Option<&'static str>,
    bytes: Vec<u8>,
    /// The body as JSON, when it is JSON.
    value: Option<Value>,
    verdict: Verdict,
    /// Raw bytes may hold duplicate keys, which serde refuses (400) and the
    /// JSON value cannot show: a 400 is then acceptable too.
    also_400: bool,
}

impl Body {
    fn render(&self, now: DateTime<Utc>, judge: fn(&Value, DateTime<Utc>) -> Verdict) -> Rendered {
        match self {
            Body::Arbitrary(value) => Rendered {
                content_type: Some("application/json"),
                bytes: serde_json::to_vec(value).expect("serializable"),
                verdict: judge(value, now),
                value: Some(value.clone()),
                also_400: false,
            },
            Body::Almost(fields) => {
                let value = fields.render(now);
                Rendered {
                    content_type: Some("application/json"),
                    bytes: serde_json::to_vec(&value).expect("serializable"),
                    verdict: judge(&value, now),
                    value: Some(value),
                    also_400: false,
                }
            }
            Body::Bytes {
                fields,
                edit,
                content_type,
            } => {
                let mut bytes = serde_json::to_vec(&fields.render(now)).expect("serializable");
                edit.apply(&mut bytes);
                let value = serde_json::from_slice::<Value>(&bytes).ok();
                let media_type = content_type
                    .unwrap_or("")
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim();
                let verdict = if !media_type.eq_ignore_ascii_case("application/json") {
                    Verdict::Invalid(415)
                } else {
                    value
                        .as_ref()
                        .map_or(Verdict::Invalid(400), |value| judge(value, now))
                };
                Rendered {
                    content_type: *content_type,
                    bytes,
                    value,
                    verdict,
                    also_400: verdict != Verdict::Invalid(415),
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------
// 2. The API under generated requests: harness and checks
// ---------------------------------------------------------------------------

/// One database and one in-process API for a whole property.
struct Harness {
    api: TestApi,
    client: tokio_postgres::Client,
    _db: TestDb,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    fn start() -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (db, api, client) = runtime.block_on(async {
            let db = TestDb::migrated().await;
            let api = TestApi::start(&db, Some(TOKEN)).await;
            let client = db.client().await;
            (db, api, client)
        });
        Self {
            api,
            client,
            _db: db,
            runtime,
        }
    }

    /// Creates a game through the API; its id.
    fn game(&self, title: &str, starts_in: i64) -> Uuid {
        self.runtime.block_on(async {
            let answer = send(self.api.request(Method::POST, "/games").json(&json!({
                "title": title,
                "scheduled_at": (Utc::now() + chrono::Duration::seconds(starts_in)).to_rfc3339(),
            })))
            .await;
            assert_eq!(answer.status, 201, "{}", answer.text());
            answer.json()["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("the new game's id")
        })
    }

    /// Runs `check` for `cases` generated inputs; panics with the shrunk input.
    fn check<S: Strategy, F: Future<Output = Result<(), TestCaseError>>>(
        &self,
        cases: u32,
        strategy: S,
        check: impl Fn(S::Value) -> F,
    ) where
        S::Value: Debug,
    {
        if let Err(failure) =
            runner(cases).run(&strategy, |input| self.runtime.block_on(check(input)))
        {
            panic!("{failure}");
        }
    }
}

struct Answer {
    status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    bytes: Vec<u8>,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .take(600)
            .collect()
    }
}

async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the API answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let bytes = response.bytes().await.expect("the body").to_vec();
    Answer {
        status,
        content_type,
        www_authenticate,
        bytes,
    }
}

/// A 4xx body: `{"error": code, "message": text, "field": name or null}`, as JSON.
fn check_error_body(answer: &Answer) -> Result<Value, TestCaseError> {
    prop_assert!(
        answer.content_type.starts_with("application/json"),
        "{} without a JSON content type: {:?} {}",
        answer.status,
        answer.content_type,
        answer.text()
    );
    let body = answer.json();
    let Some(fields) = body.as_object() else {
        return Err(TestCaseError::fail(format!(
            "{} body is not a JSON object: {}",
            answer.status,
            answer.text()
        )));
    };
    prop_assert!(
        fields
            .keys()
            .all(|key| ["error", "message", "field"].contains(&key.as_str())),
        "unexpected keys: {}",
        body
    );
    let code = fields.get("error").and_then(Value::as_str).unwrap_or("");
    prop_assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "error code: {}",
        body
    );
    prop_assert!(
        fields
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "message: {}",
        body
    );
    prop_assert!(
        matches!(
            fields.get("field"),
            None | Some(Value::Null | Value::String(_))
        ),
        "field: {}",
        body
    );
    if answer.status == 401 {
        prop_assert_eq!(code, "unauthorized");
        prop_assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    Ok(body)
}

/// Never a 5xx; the status the oracle allows; the error body on a 4xx.
fn check_answer(
    answer: &Answer,
    verdict: Verdict,
    success: u16,
    also_400: bool,
) -> Result<(), TestCaseError> {
    prop_assert!(
        answer.status < 500,
        "server error {}: {}",
        answer.status,
        answer.text()
    );
    let allowed = match verdict {
        Verdict::Valid => answer.status == success,
        Verdict::Borderline(error) => answer.status == success || answer.status == error,
        Verdict::Invalid(error) => answer.status == error,
    } || (also_400 && answer.status == 400);
    prop_assert!(
        allowed,
        "the oracle says {:?} (success {}), the API answered {}: {}",
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

/// Rows in each table; fails if either table is gone.
async fn counts(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM game_sessions), (SELECT count(*) FROM notification_schedule)",
            &[],
        )
        .await
        .expect("both tables still exist");
    (row.get(0), row.get(1))
}

/// A game's row and schedule rows, as text.
async fn snapshot(client: &tokio_postgres::Client, id: Uuid) -> String {
    client
        .query_one(
            "SELECT coalesce((SELECT g::text FROM game_sessions g WHERE id = $1), 'none') || ' / ' || \
                    coalesce((SELECT string_agg(s::text, ', ' ORDER BY s.id) FROM notification_schedule s \
                               WHERE game_id = $1), 'none')",
            &[&id],
        )
        .await
        .expect("snapshot")
        .get(0)
}

struct StoredGame {
    title: String,
    scheduled_at: DateTime<Utc>,
    reminder_minutes: Option<Vec<i32>>,
}

async fn stored_game(client: &tokio_postgres::Client, id: Uuid) -> StoredGame {
    let row = client
        .query_one(
            "SELECT title, scheduled_at, reminder_minutes FROM game_sessions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the game is stored");
    StoredGame {
        title: row.get(0),
        scheduled_at: row.get(1),
        reminder_minutes: row.get(2),
    }
}

/// The schedule follows the game: every row is one of the effective minutes
/// at exactly its time before the start, and every reminder still clearly
/// ahead has its row; for a new game, none clearly past has one.
async fn check_schedule(
    client: &tokio_postgres::Client,
    id: Uuid,
    game: &StoredGame,
    requested_at: DateTime<Utc>,
    answered_at: DateTime<Utc>,
    new_game: bool,
) -> Result<usize, TestCaseError> {
    let effective: Vec<i64> = game.reminder_minutes.as_ref().map_or_else(
        || DEFAULT_MINUTES.to_vec(),
        |minutes| minutes.iter().copied().map(i64::from).collect(),
    );
    let time_of = |minutes: i64| game.scheduled_at - chrono::Duration::minutes(minutes);
    let rows = client
        .query(
            "SELECT reminder_minutes, notification_time FROM notification_schedule WHERE game_id = $1",
            &[&id],
        )
        .await
        .expect("read the schedule");
    for row in &rows {
        let minutes = i64::from(row.get::<_, i32>(0));
        let at: DateTime<Utc> = row.get(1);
        prop_assert!(
            effective.contains(&minutes),
            "row for {} minutes; effective {:?}",
            minutes,
            effective
        );
        prop_assert_eq!(at, time_of(minutes), "row time for {} minutes", minutes);
    }
    let margin = chrono::Duration::seconds(2);
    let certain = effective
        .iter()
        .filter(|m| time_of(**m) > answered_at + margin)
        .count();
    prop_assert!(
        rows.len() >= certain,
        "{} rows, {} reminders ahead",
        rows.len(),
        certain
    );
    if new_game {
        let possible = effective
            .iter()
            .filter(|m| time_of(**m) >= requested_at - margin)
            .count();
        prop_assert!(
            rows.len() <= possible,
            "{} rows, at most {} reminders not yet past",
            rows.len(),
            possible
        );
    }
    Ok(rows.len())
}

fn given_minutes(value: &Value) -> Option<Vec<i32>> {
    typed_minutes(Some(value))
        .ok()
        .flatten()
        .map(|minutes| minutes.into_iter().map(|m| m as i32).collect())
}

/// The instant of a start as sent, to PostgreSQL's microsecond precision.
fn instant_micros(raw: &str) -> Option<i64> {
    match rfc3339(raw) {
        Rfc3339::At(at) => Some(at.timestamp_micros()),
        _ => None,
    }
}

async fn check_create(h: &Harness, body: Body) -> Result<(), TestCaseError> {
    let requested_at = Utc::now();
    let rendered = body.render(requested_at, judge_create);
    let before = counts(&h.client).await;
    let mut request = h
        .api
        .request(Method::POST, "/games")
        .body(rendered.bytes.clone());
    if let Some(content_type) = rendered.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let answer = send(request).await;
    let answered_at = Utc::now();
    let after = counts(&h.client).await;
    check_answer(&answer, rendered.verdict, 201, rendered.also_400)?;
    if answer.status != 201 {
        prop_assert_eq!(after, before, "a refused request wrote rows");
        return Ok(());
    }
    let sent = rendered.value.expect("a created game was sent as JSON");
    let title = sent["title"].as_str().expect("a title");
    let created = answer.json();
    prop_assert_eq!(created["title"].as_str(), Some(title));
    let id: Uuid = created["id"]
        .as_str()
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| TestCaseError::fail(format!("no id in {created}")))?;
    let fetched = send(h.api.request(Method::GET, &format!("/games/{id}"))).await;
    prop_assert_eq!(fetched.status, 200);
    let fetched = fetched.json();
    prop_assert_eq!(
        fetched["title"].as_str(),
        Some(title),
        "read back through the API"
    );
    let game = stored_game(&h.client, id).await;
    prop_assert_eq!(&game.title, title, "stored verbatim");
    if let Some(micros) = instant_micros(sent["scheduled_at"].as_str().unwrap_or("")) {
        prop_assert_eq!(game.scheduled_at.timestamp_micros(), micros);
    }
    prop_assert_eq!(
        &game.reminder_minutes,
        &given_minutes(&sent["reminder_minutes"])
    );
    let rows = check_schedule(&h.client, id, &game, requested_at, answered_at, true).await?;
    prop_assert_eq!(after, (before.0 + 1, before.1 + rows as i64));
    Ok(())
}

async fn check_update(h: &Harness, id: Uuid, body: Body) -> Result<(), TestCaseError> {
    let requested_at = Utc::now();
    let rendered = body.render(requested_at, judge_update);
    let before = counts(&h.client).await;
    let game_before = stored_game(&h.client, id).await;
    let snapshot_before = snapshot(&h.client, id).await;
    let mut request = h
        .api
        .request(Method::PATCH, &format!("/games/{id}"))
        .body(rendered.bytes.clone());
    if let Some(content_type) = rendered.content_type {
        request = request.header(CONTENT_TYPE, content_type);
    }
    let answer = send(request).await;
    let answered_at = Utc::now();
    let after = counts(&h.client).await;
    check_answer(&answer, rendered.verdict, 200, rendered.also_400)?;
    if answer.status != 200 {
        prop_assert_eq!(after, before, "a refused request wrote rows");
        prop_assert_eq!(
            snapshot(&h.client, id).await,
            snapshot_before,
            "a refused request changed the game"
        );
        return Ok(());
    }
    let sent = rendered.value.expect("an accepted change was sent as JSON");
    let game = stored_game(&h.client, id).await;
    let expected_title = sent
        .get("title")
        .and_then(Value::as_str)
        .unwrap_or(&game_before.title);
    prop_assert_eq!(&game.title, expected_title, "stored verbatim");
    let answered = answer.json();
    prop_assert_eq!(answered["title"].as_str(), Some(expected_title));
    match sent.get("scheduled_at").and_then(Value::as_str) {
        Some(raw) => {
            if let Some(micros) = instant_micros(raw) {
                prop_assert_eq!(game.scheduled_at.timestamp_micros(), micros);
            }
        }
        None => prop_assert_eq!(game.scheduled_at, game_before.scheduled_at),
    }
    match sent.get("reminder_minutes") {
        Some(minutes) => prop_assert_eq!(&game.reminder_minutes, &given_minutes(minutes)),
        None => prop_assert_eq!(&game.reminder_minutes, &game_before.reminder_minutes),
    }
    check_schedule(&h.client, id, &game, requested_at, answered_at, false).await?;
    prop_assert_eq!(after.0, before.0, "games were added or removed");
    Ok(())
}

/// POST /games: never a 5xx; the status the oracle gives; the error body on
/// every refusal; nothing written when refused; a created game stored
/// verbatim (SQL-injection titles included) with its schedule.
#[test]
fn generated_game_bodies_get_the_documented_answer_and_refusals_write_nothing() {
    let harness = Harness::start();
    harness.check(128, body(create_fields().boxed()), |input| {
        check_create(&harness, input)
    });
}

/// PATCH /games/{id}: as for creating; a refused change leaves the game and
/// its schedule exactly as they were, an accepted one is applied verbatim and
/// the schedule follows.
#[test]
fn generated_game_changes_get_the_documented_answer_and_refusals_change_nothing() {
    let harness = Harness::start();
    let id = harness.game("patch target", 2 * DAY);
    harness.check(128, body(update_fields().boxed()), |input| {
        check_update(&harness, id, input)
    });
}

// --- query parameters -------------------------------------------------------

/// A cursor as sent.
#[derive(Debug, Clone)]
enum CursorSpec {
    /// `<micros>.<simple uuid>`, as next_cursor has it.
    Canonical(i64, Uuid),
    /// The same parts spelled otherwise (hyphenated or upper-case uuid, `+` sign).
    Respelled(i64, Uuid, u8),
    Text(String),
}

impl CursorSpec {
    fn render(&self) -> String {
        match self {
            CursorSpec::Canonical(micros, id) => format!("{micros}.{}", id.simple()),
            CursorSpec::Respelled(micros, id, form) => match form % 4 {
                0 => format!("{micros}.{id}"),
                1 => format!("{micros}.{}", id.simple().to_string().to_uppercase()),
                2 => format!("+{micros}.{}", id.simple()),
                _ => format!("{micros}.{}", id.braced()),
            },
            CursorSpec::Text(text) => text.clone(),
        }
    }
}

fn cursor_spec() -> impl Strategy<Value = CursorSpec> {
    let chrono_max = DateTime::<Utc>::MAX_UTC.timestamp_micros();
    let chrono_min = DateTime::<Utc>::MIN_UTC.timestamp_micros();
    let micros = prop_oneof![
        4 => cursor_micros_range(),
        1 => chrono_min..*cursor_micros_range().start(),
        2 => -1_000_000_000_000_000i64..4_000_000_000_000_000,
        1 => (chrono_max + 1)..=i64::MAX,
        1 => i64::MIN..chrono_min,
    ];
    let id = any::<u128>().prop_map(Uuid::from_u128);
    prop_oneof![
        3 => (micros.clone(), id.clone()).prop_map(|(m, id)| CursorSpec::Canonical(m, id)),
        1 => (micros, id, any::<u8>()).prop_map(|(m, id, form)| CursorSpec::Respelled(m, id, form)),
        2 => prop_oneof![
            select(vec!["", ".", "1.", ".abc", "abc.def", "1.2.3", "1 . x", "null", "-.x"])
                .prop_map(str::to_owned),
            text(),
            "[0-9]{1,25}\\.[0-9a-f]{30,34}",
        ]
        .prop_map(CursorSpec::Text),
    ]
}

fn limit_text(max: i64) -> impl Strategy<Value = String> {
    prop_oneof![
        4 => (1..=max).prop_map(|n| n.to_string()),
        2 => select(vec![
            "0", "1", "200", "201", "1000", "1001", "-1", "+5", "007", " 5", "5 ", "5.0", "1e2",
            "abc", "", "99999999999999999999", "-0", "٣", "0x10",
        ])
        .prop_map(str::to_owned),
        1 => any::<i64>().prop_map(|n| n.to_string()),
        1 => text(),
    ]
}

const UNKNOWN_PARAMETERS: &[&str] = &[
    "page",
    "offset",
    "sort",
    "LIMIT",
    "limit ",
    "",
    "from[]",
    "cursor\u{e9}",
    "per_page",
    "before",
    "after",
    "q",
];

/// Query parameters of GET /games or GET /schedule/upcoming.
#[derive(Debug, Clone)]
enum Listing {
    Games {
        from: Option<TimeSpec>,
        to: Option<TimeSpec>,
        limit: Option<String>,
        cursor: Option<CursorSpec>,
        unknown: Option<(&'static str, String)>,
    },
    Upcoming {
        limit: Option<String>,
        unknown: Option<(&'static str, String)>,
    },
}

fn listing() -> impl Strategy<Value = Listing> {
    let unknown = prop_oneof![
        8 => Just(None),
        1 => (select(UNKNOWN_PARAMETERS), text()).prop_map(Some),
    ];
    prop_oneof![
        3 => (
            prop::option::of(time_spec()),
            prop::option::of(time_spec()),
            prop::option::of(limit_text(200)),
            prop::option::of(cursor_spec()),
            unknown.clone(),
        )
            .prop_map(|(from, to, limit, cursor, unknown)| Listing::Games {
                from,
                to,
                limit,
                cursor,
                unknown,
            }),
        1 => (prop::option::of(limit_text(1000)), unknown)
            .prop_map(|(limit, unknown)| Listing::Upcoming { limit, unknown }),
    ]
}

/// Percent-encodes everything but unreserved characters.
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

impl Listing {
    /// The path with its query, the parameters as sent, and the oracle's verdict.
    fn render(&self, now: DateTime<Utc>) -> (String, BTreeMap<String, String>, Verdict) {
        let mut parameters = BTreeMap::new();
        let mut verdicts = Vec::new();
        let (path, unknown) = match self {
            Listing::Games {
                from,
                to,
                limit,
                cursor,
                unknown,
            } => {
                for (name, time) in [("from", from), ("to", to)] {
                    if let Some(time) = time {
                        let raw = time.render(now);
                        verdicts.push(judge_filter_time(&raw));
                        parameters.insert(name.to_owned(), raw);
                    }
                }
                if let Some(limit) = limit {
                    verdicts.push(judge_limit(limit, 200));
                    parameters.insert("limit".to_owned(), limit.clone());
                }
                if let Some(cursor) = cursor {
                    let raw = cursor.render();
                    verdicts.push(judge_cursor(&raw));
                    parameters.insert("cursor".to_owned(), raw);
                }
                ("/games", unknown)
            }
            Listing::Upcoming { limit, unknown } => {
                if let Some(limit) = limit {
                    verdicts.push(judge_limit(limit, 1000));
                    parameters.insert("limit".to_owned(), limit.clone());
                }
                ("/schedule/upcoming", unknown)
            }
        };
        if let Some((name, value)) = unknown {
            parameters.insert((*name).to_owned(), value.clone());
            verdicts.insert(0, Verdict::Invalid(400));
        }
        let query: Vec<String> = parameters
            .iter()
            .map(|(name, value)| format!("{}={}", encode(name), encode(value)))
            .collect();
        let path = if query.is_empty() {
            path.to_owned()
        } else {
            format!("{path}?{}", query.join("&"))
        };
        (path, parameters, worst(verdicts))
    }
}

async fn check_listing(h: &Harness, listing: Listing) -> Result<(), TestCaseError> {
    let (path, parameters, verdict) = listing.render(Utc::now());
    let answer = send(h.api.request(Method::GET, &path)).await;
    check_answer(&answer, verdict, 200, false)?;
    if answer.status != 200 {
        return Ok(());
    }
    let page = answer.json();
    let limit = |default: usize| {
        parameters
            .get("limit")
            .and_then(|l| l.trim_start_matches('+').parse().ok())
            .unwrap_or(default)
    };
    if path.starts_with("/games") {
        let games = page["games"]
            .as_array()
            .ok_or_else(|| TestCaseError::fail(format!("no games in {page}")))?;
        prop_assert!(games.len() <= limit(50), "{} games", games.len());
        let starts: Vec<DateTime<Utc>> = games
            .iter()
            .map(|g| g["scheduled_at"].as_str().and_then(|s| s.parse().ok()))
            .collect::<Option<_>>()
            .ok_or_else(|| TestCaseError::fail(format!("bad games: {page}")))?;
        prop_assert!(starts.is_sorted(), "not in start order: {}", page);
        let bound = |name: &str| match parameters.get(name).map(|raw| rfc3339(raw)) {
            Some(Rfc3339::At(at)) => Some(at),
            _ => None,
        };
        if let Some(from) = bound("from") {
            prop_assert!(starts.iter().all(|s| *s >= from), "before from: {}", page);
        }
        if let Some(to) = bound("to") {
            prop_assert!(starts.iter().all(|s| *s < to), "not before to: {}", page);
        }
        match &page["next_cursor"] {
            Value::Null => {}
            Value::String(cursor) => prop_assert_eq!(judge_cursor(cursor), Verdict::Valid),
            other => prop_assert!(false, "next_cursor {}", other),
        }
    } else {
        let reminders = page["reminders"]
            .as_array()
            .ok_or_else(|| TestCaseError::fail(format!("no reminders in {page}")))?;
        prop_assert!(reminders.len() <= limit(20));
    }
    Ok(())
}

/// GET /games and GET /schedule/upcoming with generated parameters: never a
/// 5xx; 200 exactly for the documented parameters and values, else 400 with
/// the error body; a page respects its limit and range.
#[test]
fn generated_query_parameters_get_the_documented_answer() {
    let harness = Harness::start();
    for days in 1..=6 {
        harness.game(&format!("listed {days}"), days * DAY);
    }
    harness.check(128, listing(), |input| check_listing(&harness, input));
}

// --- path ids ---------------------------------------------------------------

/// A `{id}` path segment.
#[derive(Debug, Clone)]
enum IdSpec {
    /// A UUID no game has, hyphenated.
    Unknown(Uuid),
    /// The existing game's id, spelled some way.
    Existing(u8),
    /// A UUID with one thing wrong.
    Mangled(Uuid, u8, Index),
    /// Anything, percent-encoded.
    Text(String),
    /// Already encoded, possibly not UTF-8 when decoded.
    Raw(&'static str),
}

fn id_spec() -> impl Strategy<Value = IdSpec> {
    let uuid = any::<u128>().prop_map(Uuid::from_u128);
    prop_oneof![
        2 => uuid.clone().prop_map(IdSpec::Unknown),
        2 => any::<u8>().prop_map(IdSpec::Existing),
        3 => (uuid, any::<u8>(), any::<Index>()).prop_map(|(id, how, at)| IdSpec::Mangled(id, how, at)),
        2 => text().prop_map(IdSpec::Text),
        1 => select(vec![
            "%FF%FE", "%00", "%2F", "..", "%2E%2E", "%25", "%C0%AF", "null", "0", "-1",
            "'%3B%20DROP%20TABLE%20game_sessions%3B%20--",
        ])
        .prop_map(IdSpec::Raw),
    ]
}

#[derive(Debug, Clone, Copy)]
enum IdMethod {
    Get,
    Patch,
    Delete,
}

impl IdSpec {
    /// The encoded segment, and whether it names the existing game for sure
    /// (`Some(true)`), surely not (`Some(false)`), or maybe (`None`).
    fn render(&self, existing: Uuid) -> (String, Option<bool>) {
        match self {
            IdSpec::Unknown(id) => (id.to_string(), Some(false)),
            IdSpec::Existing(form) => match form % 5 {
                0 => (existing.to_string(), Some(true)),
                1 => (existing.simple().to_string(), None),
                2 => (encode(&existing.braced().to_string()), None),
                3 => (encode(&existing.urn().to_string()), None),
                _ => (existing.to_string().to_uppercase(), None),
            },
            IdSpec::Mangled(id, how, at) => {
                let mut text: Vec<char> = id.to_string().chars().collect();
                match how % 5 {
                    0 => {
                        let i = at.index(text.len());
                        text[i] = if text[i] == '-' { 'x' } else { 'g' };
                    }
                    1 => {
                        text.pop();
                    }
                    2 => text.push('0'),
                    3 => text.insert(at.index(text.len() + 1), ' '),
                    _ => text.insert(at.index(text.len() + 1), '/'),
                }
                (encode(&text.into_iter().collect::<String>()), Some(false))
            }
            IdSpec::Text(text) => (encode(text), Some(false)),
            IdSpec::Raw(raw) => ((*raw).to_owned(), Some(false)),
        }
    }
}

async fn check_path(
    h: &Harness,
    existing: Uuid,
    (spec, method): (IdSpec, IdMethod),
) -> Result<(), TestCaseError> {
    let (segment, names_existing) = spec.render(existing);
    // Deleting the game by a spelling that may name it would end the property.
    let method = match (method, names_existing) {
        (IdMethod::Delete, Some(true) | None) => IdMethod::Get,
        (method, _) => method,
    };
    let decoded_uuid = Uuid::parse_str(&percent_decode(&segment)).ok();
    let before = counts(&h.client).await;
    let snapshot_before = snapshot(&h.client, existing).await;
    let path = format!("/games/{segment}");
    let request = match method {
        IdMethod::Get => h.api.request(Method::GET, &path),
        IdMethod::Patch => h
            .api
            .request(Method::PATCH, &path)
            .json(&json!({"title": "renamed by id"})),
        IdMethod::Delete => h.api.request(Method::DELETE, &path),
    };
    let answer = send(request).await;
    let success = match method {
        IdMethod::Delete => 204,
        _ => 200,
    };
    // `/games/` is no route; nor is what `.` and `..` segments resolve to
    // (the client removes them, as URLs require).
    let no_route = segment.is_empty() || matches!(percent_decode(&segment).as_str(), "." | "..");
    let verdict = match (no_route, names_existing, decoded_uuid) {
        (true, ..) => Verdict::Invalid(404),
        (false, Some(true), _) => Verdict::Valid,
        (false, None, _) => Verdict::Borderline(400),
        (false, Some(false), Some(id)) if id == existing => Verdict::Borderline(400),
        // A UUID of another spelling: found nowhere, or refused.
        (false, Some(false), Some(_)) => Verdict::Invalid(404),
        (false, Some(false), None) => Verdict::Invalid(400),
    };
    let also = matches!(decoded_uuid, Some(id) if id != existing) && answer.status == 400;
    check_answer(&answer, verdict, success, also)?;
    prop_assert_eq!(counts(&h.client).await, before, "rows added or removed");
    if !(matches!(method, IdMethod::Patch) && answer.status == 200) {
        prop_assert_eq!(
            snapshot(&h.client, existing).await,
            snapshot_before,
            "the game changed"
        );
    }
    if answer.status == 400 {
        let error = answer.json();
        prop_assert_eq!(error["error"].as_str(), Some("invalid_id"));
    }
    Ok(())
}

fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut decoded = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (bytes[i], hex) {
            (b'%', Some(byte)) => {
                decoded.push(byte);
                i += 3;
            }
            (byte, _) => {
                decoded.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&decoded).into_owned()
}

/// GET, PATCH and DELETE /games/{id} with generated ids: never a 5xx; 400
/// `invalid_id` for what is not a UUID, 404 for a UUID of no game, success
/// only for the game's id; nothing written except the PATCH that names it.
#[test]
fn generated_path_ids_are_refused_or_not_found_and_change_nothing() {
    let harness = Harness::start();
    let existing = harness.game("by id", DAY);
    let method = prop_oneof![
        Just(IdMethod::Get),
        Just(IdMethod::Patch),
        Just(IdMethod::Delete)
    ];
    harness.check(96, (id_spec(), method), |input| {
        check_path(&harness, existing, input)
    });
}

// --- SQL injection, NUL, cursors: the cases worth naming ----------------------

/// SQL-injection titles are data: stored and read back verbatim, on create
/// and on change, listed as they are, and both tables still exist; in
/// parameters and ids they are refused as bad values.
#[tokio::test]
async fn sql_injection_titles_are_stored_verbatim_and_the_tables_survive() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let start = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    for (n, injection) in SQL_INJECTIONS.iter().enumerate() {
        let answer = send(
            api.request(Method::POST, "/games")
                .json(&json!({"title": injection, "scheduled_at": start})),
        )
        .await;
        assert_eq!(answer.status, 201, "{injection}: {}", answer.text());
        let id: Uuid = answer.json()["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(stored_game(&client, id).await.title, *injection);
        let fetched = send(api.request(Method::GET, &format!("/games/{id}"))).await;
        assert_eq!(fetched.json()["title"], *injection);
        let other = SQL_INJECTIONS[(n + 1) % SQL_INJECTIONS.len()];
        let changed = send(
            api.request(Method::PATCH, &format!("/games/{id}"))
                .json(&json!({"title": other})),
        )
        .await;
        assert_eq!(changed.status, 200, "{other}: {}", changed.text());
        assert_eq!(stored_game(&client, id).await.title, other);
    }
    let listed = send(api.request(Method::GET, "/games?limit=200")).await;
    let mut titles: Vec<String> = listed.json()["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    let mut expected: Vec<String> = SQL_INJECTIONS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(titles, expected);
    for injection in SQL_INJECTIONS {
        for path in [
            format!("/games?cursor={}", encode(injection)),
            format!("/games?from={}", encode(injection)),
            format!("/games?limit={}", encode(injection)),
            format!("/schedule/upcoming?limit={}", encode(injection)),
            format!("/games/{}", encode(injection)),
        ] {
            let answer = send(api.request(Method::GET, &path)).await;
            assert_eq!(answer.status, 400, "{path}: {}", answer.text());
            check_error_body(&answer).unwrap_or_else(|err| panic!("{path}: {err}"));
        }
    }
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ('game_sessions', 'notification_schedule')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2, "both tables still exist");
    assert_eq!(
        counts(&client).await,
        (SQL_INJECTIONS.len() as i64, 2 * SQL_INJECTIONS.len() as i64)
    );
}

/// A NUL character is a character: the documented rule (1 to 200 characters)
/// allows it, PostgreSQL cannot store it in text. Either way the answer must
/// not be a 500 and nothing may be written.
#[tokio::test]
async fn a_title_with_a_nul_character_is_refused_not_a_server_error() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let start = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let created = send(
        api.request(Method::POST, "/games")
            .json(&json!({"title": "ok", "scheduled_at": start})),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let before = counts(&client).await;
    for (method, path) in [
        (Method::POST, "/games".to_owned()),
        (Method::PATCH, format!("/games/{id}")),
    ] {
        let answer = send(
            api.request(method.clone(), &path)
                .json(&json!({"title": "nul\u{0}byte", "scheduled_at": start})),
        )
        .await;
        assert!(
            answer.status < 500,
            "{method} {path}: {} {}",
            answer.status,
            answer.text()
        );
        check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
    }
    assert_eq!(counts(&client).await, before);
}

/// A cursor's microseconds may name an instant chrono can represent but
/// PostgreSQL cannot (before 4713 BC): "not a next_cursor value", a 400.
#[tokio::test]
async fn a_cursor_before_the_databases_first_day_is_refused_not_a_server_error() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let id = Uuid::new_v4().simple();
    // About 7,500 BC, and about 250,000 BC (chrono's range ends at 262,143 BC).
    for micros in [-300_000_000_000_000_000i64, -8_000_000_000_000_000_000] {
        let answer = send(api.request(Method::GET, &format!("/games?cursor={micros}.{id}"))).await;
        assert_eq!(
            answer.status,
            400,
            "cursor {micros}.{id}: {}",
            answer.text()
        );
        let body = check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(body["field"], "cursor");
    }
}

/// A body is one JSON object: bytes after it make it malformed JSON, a 400,
/// and nothing is written.
#[tokio::test]
async fn bytes_after_the_json_object_are_malformed_json() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let body = json!({
        "title": "trailing",
        "scheduled_at": (Utc::now() + chrono::Duration::days(3)).to_rfc3339(),
    })
    .to_string();
    for trailing in ["garbage", "}", "{\"title\": \"second\"}", ", 1", "\u{0}"] {
        let answer = send(
            api.request(Method::POST, "/games")
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{body}{trailing}")),
        )
        .await;
        assert_eq!(answer.status, 400, "{body}{trailing:?}: {}", answer.text());
        let error = check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(error["error"], "malformed_json");
    }
    assert_eq!(counts(&client).await, (0, 0), "nothing written");
}

// ---------------------------------------------------------------------------
// 3. Tokens
// ---------------------------------------------------------------------------

/// The token as presented, derived from the right one.
#[derive(Debug, Clone)]
enum TokenSpec {
    Exact,
    /// One character replaced by another visible one.
    Changed(Index, char),
    Deleted(Index),
    Inserted(Index, char),
    /// A proper prefix.
    Prefix(Index),
    Suffixed(String),
    /// One letter's case flipped.
    FlippedCase(Index),
    /// A space inside.
    InnerSpace(Index),
    Doubled,
    Other(String),
}

impl TokenSpec {
    fn render(&self) -> String {
        let chars: Vec<char> = TOKEN.chars().collect();
        let mut token = chars.clone();
        match self {
            TokenSpec::Exact => {}
            TokenSpec::Changed(at, replacement) => {
                let i = at.index(token.len());
                token[i] = if token[i] == *replacement {
                    if *replacement == 'a' { 'b' } else { 'a' }
                } else {
                    *replacement
                };
            }
            TokenSpec::Deleted(at) => {
                token.remove(at.index(token.len()));
            }
            TokenSpec::Inserted(at, c) => token.insert(at.index(token.len() + 1), *c),
            TokenSpec::Prefix(at) => token.truncate(at.index(token.len())),
            TokenSpec::Suffixed(suffix) => token.extend(suffix.chars()),
            TokenSpec::FlippedCase(at) => {
                let letters: Vec<usize> = (0..token.len())
                    .filter(|i| token[*i].is_ascii_alphabetic())
                    .collect();
                let i = letters[at.index(letters.len())];
                token[i] = if token[i].is_ascii_lowercase() {
                    token[i].to_ascii_uppercase()
                } else {
                    token[i].to_ascii_lowercase()
                };
            }
            TokenSpec::InnerSpace(at) => token.insert(1 + at.index(token.len() - 1), ' '),
            TokenSpec::Doubled => token.extend(chars),
            TokenSpec::Other(other) => return other.clone(),
        }
        token.into_iter().collect()
    }
}

/// An Authorization header: absent, or scheme, separator and token; or the
/// right header with one byte made non-ASCII.
#[derive(Debug, Clone)]
enum Credentials {
    Missing,
    Header {
        scheme: &'static str,
        separator: &'static str,
        token: TokenSpec,
    },
    NonAscii(Index),
}

impl Credentials {
    fn header(&self) -> Option<Vec<u8>> {
        match self {
            Credentials::Missing => None,
            Credentials::Header {
                scheme,
                separator,
                token,
            } => Some(format!("{scheme}{separator}{}", token.render()).into_bytes()),
            Credentials::NonAscii(at) => {
                let mut bytes = format!("Bearer {TOKEN}").into_bytes();
                let i = 7 + at.index(TOKEN.len());
                bytes[i] = 0xE9;
                Some(bytes)
            }
        }
    }

    /// RFC 6750: `Bearer` (any case), one or more spaces, the exact token.
    fn accepted(&self) -> bool {
        match self {
            Credentials::Header {
                scheme,
                separator,
                token,
            } => {
                scheme.eq_ignore_ascii_case("bearer")
                    && !separator.is_empty()
                    && separator.bytes().all(|b| b == b' ')
                    && token.render() == TOKEN
            }
            Credentials::Missing | Credentials::NonAscii(_) => false,
        }
    }
}

fn credentials() -> impl Strategy<Value = Credentials> {
    let visible = prop::char::range('!', '~');
    let token = prop_oneof![
        1 => Just(TokenSpec::Exact),
        3 => (any::<Index>(), visible.clone()).prop_map(|(at, c)| TokenSpec::Changed(at, c)),
        1 => any::<Index>().prop_map(TokenSpec::Deleted),
        1 => (any::<Index>(), visible).prop_map(|(at, c)| TokenSpec::Inserted(at, c)),
        1 => any::<Index>().prop_map(TokenSpec::Prefix),
        1 => "[!-~]{1,8}".prop_map(TokenSpec::Suffixed),
        2 => any::<Index>().prop_map(TokenSpec::FlippedCase),
        1 => any::<Index>().prop_map(TokenSpec::InnerSpace),
        1 => Just(TokenSpec::Doubled),
        1 => "[!-~]{0,40}".prop_map(TokenSpec::Other),
    ];
    let scheme = select(vec![
        "Bearer", "Bearer", "Bearer", "bearer", "BEARER", "Basic", "Token", "Bearer:", "",
        "Bearerr", "Digest", "MAC",
    ]);
    let separator = select(vec![" ", " ", " ", "  ", "\t", "", ":", ","]);
    prop_oneof![
        1 => Just(Credentials::Missing),
        12 => (scheme, separator, token).prop_map(|(scheme, separator, token)| {
            Credentials::Header { scheme, separator, token }
        }),
        1 => any::<Index>().prop_map(Credentials::NonAscii),
    ]
}

#[derive(Debug, Clone, Copy)]
enum Target {
    List,
    Create,
    Get,
    Change,
    Delete,
    Upcoming,
    BadId,
}

async fn check_credentials(
    h: &Harness,
    game: Uuid,
    (credentials, target): (Credentials, Target),
) -> Result<(), TestCaseError> {
    let accepted = credentials.accepted();
    // With the right token a write would succeed; read instead.
    let target = match (accepted, target) {
        (true, Target::Create | Target::Change | Target::Delete) => Target::List,
        (_, target) => target,
    };
    let url = |path: &str| format!("{}{path}", h.api.base);
    let start = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let mut request = match target {
        Target::List => h.api.client.get(url("/games")),
        Target::Create => h
            .api
            .client
            .post(url("/games"))
            .json(&json!({"title": "intruder", "scheduled_at": start})),
        Target::Get => h.api.client.get(url(&format!("/games/{game}"))),
        Target::Change => h
            .api
            .client
            .patch(url(&format!("/games/{game}")))
            .json(&json!({"title": "intruder"})),
        Target::Delete => h.api.client.delete(url(&format!("/games/{game}"))),
        Target::Upcoming => h.api.client.get(url("/schedule/upcoming")),
        Target::BadId => h.api.client.get(url("/games/not-a-uuid")),
    };
    if let Some(header) = credentials.header() {
        let value = HeaderValue::from_bytes(&header)
            .map_err(|err| TestCaseError::fail(format!("unsendable header {header:?}: {err}")))?;
        request = request.header(AUTHORIZATION, value);
    }
    let before = counts(&h.client).await;
    let snapshot_before = snapshot(&h.client, game).await;
    let answer = send(request).await;
    prop_assert!(answer.status < 500, "{} {}", answer.status, answer.text());
    if accepted {
        prop_assert_ne!(answer.status, 401, "the right token was refused");
    } else {
        prop_assert_eq!(answer.status, 401, "{}", answer.text());
        check_error_body(&answer)?;
        prop_assert_eq!(counts(&h.client).await, before, "a refused request wrote");
        prop_assert_eq!(
            snapshot(&h.client, game).await,
            snapshot_before,
            "a refused request changed the game"
        );
    }
    Ok(())
}

/// Every protected route with generated Authorization headers, most of them
/// the right token mutated: 401 with the error body and no write, unless the
/// header is `Bearer`, spaces and exactly the token.
#[test]
fn mutated_tokens_are_refused_on_every_route_and_write_nothing() {
    let harness = Harness::start();
    let game = harness.game("guarded", DAY);
    let target = select(vec![
        Target::List,
        Target::Create,
        Target::Get,
        Target::Change,
        Target::Delete,
        Target::Upcoming,
        Target::BadId,
    ]);
    harness.check(128, (credentials(), target), |input| {
        check_credentials(&harness, game, input)
    });
}

/// The cases named in the issue, on writes: each refused with 401 and the
/// error body, nothing written. Several spaces after the scheme and any case
/// of `Bearer` are accepted, as RFC 6750 and RFC 7235 allow.
#[tokio::test]
async fn almost_right_tokens_are_refused_and_write_nothing() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let start = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let created = send(
        api.request(Method::POST, "/games")
            .json(&json!({"title": "guarded", "scheduled_at": start})),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let before = counts(&client).await;
    let last = TOKEN.len() - 1;
    let changed = |at: usize| {
        let mut token: Vec<char> = TOKEN.chars().collect();
        token[at] = if token[at] == 'x' { 'y' } else { 'x' };
        token.into_iter().collect::<String>()
    };
    let refused: Vec<Option<Vec<u8>>> = vec![
        None,
        Some(b"Bearer".to_vec()),
        Some(b"Bearer ".to_vec()),
        Some(b"Bearer    ".to_vec()),
        Some(format!("Basic {TOKEN}").into_bytes()),
        Some(format!("Bearer {}", changed(0)).into_bytes()),
        Some(format!("Bearer {}", changed(last / 2)).into_bytes()),
        Some(format!("Bearer {}", changed(last)).into_bytes()),
        Some(format!("Bearer {}", &TOKEN[..last]).into_bytes()),
        Some(format!("Bearer {}", &TOKEN[1..]).into_bytes()),
        Some(format!("Bearer {TOKEN}{TOKEN}").into_bytes()),
        Some(format!("Bearer {TOKEN}=").into_bytes()),
        Some(format!("Bearer {}", TOKEN.to_uppercase()).into_bytes()),
        Some(format!("Bearer {} {}", &TOKEN[..5], &TOKEN[5..]).into_bytes()),
        Some(format!("Bearer\t{TOKEN}").into_bytes()),
        Some(format!("Bearer Bearer {TOKEN}").into_bytes()),
        Some(format!("Bearer \"{TOKEN}\"").into_bytes()),
        Some(format!("Bearer {TOKEN},").into_bytes()),
        Some([b"Bearer ".as_slice(), &TOKEN.as_bytes()[..last], b"\xe9"].concat()),
    ];
    for header in refused {
        let shown = header
            .as_ref()
            .map(|h| String::from_utf8_lossy(h).into_owned());
        for (method, path, body) in [
            (
                Method::POST,
                "/games".to_owned(),
                Some(json!({"title": "intruder", "scheduled_at": start})),
            ),
            (
                Method::PATCH,
                format!("/games/{id}"),
                Some(json!({"title": "intruder"})),
            ),
            (Method::DELETE, format!("/games/{id}"), None),
        ] {
            let mut request = api
                .client
                .request(method.clone(), format!("{}{path}", api.base));
            if let Some(body) = body {
                request = request.json(&body);
            }
            if let Some(header) = &header {
                request = request.header(AUTHORIZATION, HeaderValue::from_bytes(header).unwrap());
            }
            let answer = send(request).await;
            assert_eq!(answer.status, 401, "{method} {path} with {shown:?}");
            check_error_body(&answer).unwrap_or_else(|err| panic!("{shown:?}: {err}"));
        }
    }
    assert_eq!(counts(&client).await, before, "nothing written");
    assert_eq!(
        stored_game(&client, id.parse().unwrap()).await.title,
        "guarded"
    );

    for header in [
        format!("Bearer  {TOKEN}"),
        format!("BEARER {TOKEN}"),
        format!("bEaReR {TOKEN}"),
    ] {
        let answer = send(
            api.client
                .get(format!("{}/games", api.base))
                .header(AUTHORIZATION, &header),
        )
        .await;
        assert_eq!(answer.status, 200, "{header:?}: {}", answer.text());
    }
}

// ---------------------------------------------------------------------------
// 4. Unusable settings and unreachable servers at start
// ---------------------------------------------------------------------------

const PASSWORD: &str = "s3cr3t-pw-xyz";

/// How a run of the binary ended.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Finished {
    /// No panic, no password, in either stream.
    #[track_caller]
    fn assert_clean(&self, secrets: &[&str]) {
        for text in [&self.stdout, &self.stderr] {
            assert!(!text.contains("panicked"), "{text}");
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} printed: {text}");
            }
        }
    }

    /// Exit status 2 and one line naming the setting.
    #[track_caller]
    fn assert_config_error(&self, setting: &str) {
        assert_eq!(self.code, Some(2), "{}", self.stderr);
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            self.stderr
        );
        assert!(self.stderr.contains(setting), "{setting}: {}", self.stderr);
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs the binary with a clean environment plus `env`; fails if it is still
/// running after `limit`.
fn run_bounded(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{}` still running after {limit:?}; stderr:\n{}",
                args.join(" "),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        took: started.elapsed(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A port that accepts connections (the kernel completes the handshake) and
/// never answers: a hung server.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// `migrate` and `api` facing a database they cannot use (a closed port, a
/// server that never answers, a name that does not resolve): exit 1 within a
/// bounded time, one line naming host and port, no panic, no password.
#[test]
fn migrate_and_api_exit_1_naming_a_database_they_cannot_reach() {
    let (_silent, silent_port) = silent_server();
    let targets = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{silent_port}"),
        "no-such-host.invalid:5432".to_owned(),
    ];
    for target in &targets {
        let url = format!("postgresql://app:{PASSWORD}@{target}/app");
        for args in [&["migrate"][..], &["api"][..]] {
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("DATABASE_CONNECT_TIMEOUT", "1s"),
                ("API_TOKEN", TOKEN),
                ("API_ADDR", "127.0.0.1:0"),
            ];
            let finished = run_bounded(args, &env, Duration::from_secs(15));
            let what = format!("{args:?} against {target}");
            assert_eq!(finished.code, Some(1), "{what}: {}", finished.stderr);
            assert!(
                finished.took < Duration::from_secs(10),
                "{what} took {:?}",
                finished.took
            );
            let lines: Vec<&str> = finished.stderr.trim_end().lines().collect();
            assert_eq!(lines.len(), 1, "{what}: one line: {}", finished.stderr);
            assert!(
                lines[0].contains("ERROR")
                    && lines[0].contains(&format!("cannot reach PostgreSQL at {target}")),
                "{what}: {}",
                lines[0]
            );
            finished.assert_clean(&[PASSWORD]);
        }
    }
}

/// The daemon, by design, waits for PostgreSQL at start (containers start in
/// any order): it says so once, naming host and port, keeps retrying without
/// repeating itself, serves no health endpoint meanwhile, and stops at once
/// on SIGTERM with status 0. No password is printed.
#[tokio::test]
async fn the_daemon_waits_for_an_unreachable_database_saying_so_once() {
    let broker = TestBroker::new().await;
    let (_silent, silent_port) = silent_server();
    let mut daemons = Vec::new();
    for port in [free_port(), silent_port] {
        let url = format!("postgresql://app:{PASSWORD}@127.0.0.1:{port}/app");
        let health = free_port();
        let mut child = Running(
            daemon_command(&url, &broker, health)
                .env("DATABASE_CONNECT_TIMEOUT", "1s")
                .env("RESTART_BACKOFF_MAX", "200ms")
                .spawn()
                .expect("the daemon starts"),
        );
        let log = LogTail::follow(&mut child.0);
        daemons.push((child, log, port, health));
    }
    for (_, log, port, _) in &daemons {
        log.wait_for_line(&format!("127.0.0.1:{port}"), WAIT).await;
    }
    // Several retries: at most 200 ms apart, plus 1 s per attempt on the
    // silent server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (child, log, port, health) in &mut daemons {
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "still waiting: {}",
            log.text()
        );
        assert!(
            reqwest::get(format!("http://127.0.0.1:{health}/healthz"))
                .await
                .is_err(),
            "no health endpoint while waiting"
        );
        let text = log.text();
        let waiting: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("waiting for PostgreSQL"))
            .collect();
        assert_eq!(waiting.len(), 1, "said once: {text}");
        assert!(
            waiting[0].contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
            "{}",
            waiting[0]
        );
        let stopping = Instant::now();
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0).await.code(), Some(0), "{text}");
        assert!(stopping.elapsed() < Duration::from_secs(5), "slow to stop");
        let text = log.text();
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// A broker that is closed, hung, or refuses the credentials: the daemon
/// keeps running (retrying, by design), /readyz answers 503 naming the
/// broker's host and port, the failure is logged once, and neither the log
/// nor /readyz shows the password.
#[tokio::test]
async fn the_daemon_reports_an_unusable_broker_without_its_password() {
    let db = TestDb::migrated().await;
    let broker = TestBroker::new().await;
    let (_silent, silent_port) = silent_server();
    let real = broker
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.rsplit_once('@'))
        .map_or("127.0.0.1:5672", |(_, host)| {
            host.split('/').next().unwrap_or(host)
        })
        .to_owned();
    let targets = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{silent_port}"),
        real,
    ];
    let mut daemons = Vec::new();
    for target in &targets {
        let dead = broker.via(format!("amqp://guest:{PASSWORD}@{target}/%2f"));
        let health = free_port();
        let mut child = Running(
            daemon_command(&db.url, &dead, health)
                .env("RABBITMQ_CONNECT_TIMEOUT", "1s")
                .env("RESTART_BACKOFF_MAX", "200ms")
                .spawn()
                .expect("the daemon starts"),
        );
        let log = LogTail::follow(&mut child.0);
        daemons.push((child, log, target, health));
    }
    for (_, log, target, health) in &daemons {
        let deadline = tokio::time::Instant::now() + WAIT;
        let detail = loop {
            if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{health}/readyz")).await
                && response.status() == 503
                && let Ok(body) = response.json::<Value>().await
                && let Some(detail) = body["broker"]["detail"].as_str()
                && detail.contains("RabbitMQ")
            {
                break detail.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no broker detail for {target}: {}",
                log.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(detail.contains(target.as_str()), "{target}: {detail}");
        assert!(!detail.contains(PASSWORD), "{detail}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (child, log, target, _) in &mut daemons {
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "{target}: still running: {}",
            log.text()
        );
        let lines = log_lines(log);
        let failures = with_message(&lines, "actor failed; restarting after backoff")
            .into_iter()
            .filter(|line| line["actor"] == "publisher")
            .count();
        assert_eq!(failures, 1, "{target}: logged once: {}", log.text());
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0).await.code(), Some(0));
        let text = log.text();
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// `watch` facing a closed or hung broker: exit 1 within a bounded time,
/// naming host and port, without the password.
#[test]
fn watch_exits_1_naming_a_broker_it_cannot_reach() {
    let (_silent, silent_port) = silent_server();
    for (port, limit) in [
        (free_port(), Duration::from_secs(10)),
        (silent_port, Duration::from_secs(20)),
    ] {
        let url = format!("amqp://guest:{PASSWORD}@127.0.0.1:{port}/%2f");
        let finished = run_bounded(&["watch"], &[("RABBITMQ_URL", &url)], limit);
        assert_eq!(finished.code, Some(1), "{}", finished.stderr);
        assert!(
            finished
                .stderr
                .contains(&format!("cannot reach RabbitMQ at 127.0.0.1:{port}")),
            "{}",
            finished.stderr
        );
        finished.assert_clean(&[PASSWORD]);
    }
}

/// Invalid values of each URL-bearing setting, for each command that takes
/// it: exit 2 with one line naming the setting, the password masked.
#[test]
fn invalid_urls_are_configuration_errors_that_mask_the_password() {
    let pw = PASSWORD;
    let database_urls = [
        format!("postgresql+asyncpg://app:{pw}@db:5432/app"),
        format!("mysql://app:{pw}@db/app"),
        format!("http://app:{pw}@db/app"),
        format!("postgresql://app:{pw}@db:99999/app"),
        format!("postgresql://app:{pw}@db:port/app"),
        format!("postgresql://app:{pw}@/app"),
        format!("postgresql://app:{pw}@db:5432/app?sslmode=bogus"),
        format!("postgres://app:{pw}@[::1/app"),
        "postgresql://".to_owned(),
        "not a url".to_owned(),
    ];
    let broker_urls = [
        format!("http://guest:{pw}@rabbit/"),
        format!("amqp://guest:{pw}@rabbit:notaport/"),
        format!("amqp://guest:{pw}@:5672/"),
        format!("amqp://guest:{pw}@rabbit:99999/"),
        format!("amqp://guest:{pw}@rabbit:5672/%2f?heartbeat=abc"),
        format!("amqps://guest:{pw}@rabbit:5671/%2f?frame_max=x"),
        "amqp://".to_owned(),
    ];
    let good_database = "postgresql://app@127.0.0.1:1/app";
    let good_broker = "amqp://guest:guest@127.0.0.1:1/%2f";
    let limit = Duration::from_secs(10);
    for url in &database_urls {
        for args in [&["migrate"][..], &["api"], &["daemon"]] {
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("RABBITMQ_URL", good_broker),
                ("API_TOKEN", TOKEN),
            ];
            let finished = run_bounded(args, &env, limit);
            finished.assert_config_error("DATABASE_URL");
            finished.assert_clean(&[PASSWORD]);
        }
    }
    for url in &broker_urls {
        for args in [&["daemon"][..], &["watch"]] {
            let env = [
                ("DATABASE_URL", good_database),
                ("RABBITMQ_URL", url.as_str()),
            ];
            let finished = run_bounded(args, &env, limit);
            finished.assert_config_error("RABBITMQ_URL");
            finished.assert_clean(&[PASSWORD]);
        }
    }
}

/// A value that is not a URL at all (the scheme forgotten, one slash, the
/// key-value form with spaces around `=`) is quoted in the error: it must be
/// quoted without the password.
#[test]
fn a_setting_that_is_not_a_url_is_quoted_without_its_password() {
    let pw = PASSWORD;
    let cases = [
        ("DATABASE_URL", format!("app:{pw}@db:5432/app"), "migrate"),
        (
            "DATABASE_URL",
            format!("postgresql:/app:{pw}@db/app"),
            "migrate",
        ),
        (
            "DATABASE_URL",
            format!("host=db password = {pw}"),
            "migrate",
        ),
        ("RABBITMQ_URL", format!("guest:{pw}@rabbit:5672"), "watch"),
        (
            "RABBITMQ_URL",
            format!("amqp:/guest:{pw}@rabbit:5672"),
            "watch",
        ),
    ];
    for (setting, value, command) in &cases {
        let finished = run_bounded(
            &[command],
            &[(setting, value.as_str())],
            Duration::from_secs(10),
        );
        finished.assert_config_error(setting);
        finished.assert_clean(&[PASSWORD]);
    }
}

/// A password containing `/` (common in generated passwords; URLs require it
/// percent-encoded, operators often do not) must never be printed: not in a
/// configuration error, not in the start-up log line that shows the URL.
#[tokio::test]
async fn a_password_with_a_slash_is_never_printed() {
    let secrets = ["s3cr3t", "pw-xyz"];
    let db = TestDb::migrated().await;
    let (user_part, host_part) = db.url.rsplit_once('@').expect("a user in the test URL");
    let user = user_part
        .split("://")
        .nth(1)
        .and_then(|userinfo| userinfo.split(':').next())
        .unwrap_or("postgres");
    let working = format!("postgresql://{user}:s3cr3t/pw-xyz@{host_part}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &working)],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    finished.assert_clean(&secrets);
    let limit = Duration::from_secs(10);
    for (setting, value, command) in [
        (
            "DATABASE_URL",
            "postgresql://app:s3cr3t/pw-xyz@db:99999/app",
            "migrate",
        ),
        (
            "DATABASE_URL",
            "postgresql+asyncpg://app:s3cr3t/pw-xyz@db/app",
            "migrate",
        ),
        (
            "RABBITMQ_URL",
            "amqp://guest:s3cr3t/pw-xyz@127.0.0.1:1/%2f",
            "watch",
        ),
    ] {
        let finished = run_bounded(&[command], &[(setting, value)], limit);
        assert!(matches!(finished.code, Some(1 | 2)), "{}", finished.stderr);
        finished.assert_clean(&secrets);
    }
}

/// libpq-style URLs may carry the password as a query parameter; it must
/// never be printed either.
#[tokio::test]
async fn a_password_in_the_query_string_is_never_printed() {
    let db = TestDb::migrated().await;
    let (user_part, host_part) = db.url.rsplit_once('@').expect("a user in the test URL");
    let user = user_part
        .split("://")
        .nth(1)
        .and_then(|userinfo| userinfo.split(':').next())
        .unwrap_or("postgres");
    let working = format!("postgresql://{host_part}?user={user}&password={PASSWORD}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &working)],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    finished.assert_clean(&[PASSWORD]);
    let broken = format!("postgresql://db:99999/app?password={PASSWORD}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &broken)],
        Duration::from_secs(10),
    );
    finished.assert_config_error("DATABASE_URL");
    finished.assert_clean(&[PASSWORD]);
}

/// The OTLP endpoint is URL-bearing too: an invalid one is a configuration
/// error that must not echo credentials in it.
#[test]
fn an_invalid_otlp_endpoint_is_refused_without_its_credentials() {
    for endpoint in [
        format!("http://collector:{PASSWORD}@[::1"),
        format!("collector:{PASSWORD}@otel:4318"),
    ] {
        let finished = run_bounded(
            &["migrate"],
            &[
                ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ],
            Duration::from_secs(10),
        );
        finished.assert_config_error("OTEL_EXPORTER_OTLP_ENDPOINT");
        finished.assert_clean(&[PASSWORD]);
    }
}
