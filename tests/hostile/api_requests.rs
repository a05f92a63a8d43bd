//! The API under generated requests: game bodies (create and change), query
//! parameters and path ids, each judged by the oracle.

use std::collections::BTreeMap;
use std::fmt::Debug;

use chrono::{DateTime, Utc};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::TestCaseError;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api_harness::{
    Harness, check_answer, check_schedule, counts, given_minutes, instant_micros, send, snapshot,
    stored_game,
};
use super::api_oracle::{
    DAY, Rfc3339, Verdict, cursor_micros_range, judge_create, judge_cursor, judge_filter_time,
    judge_limit, judge_update, rfc3339, worst,
};
use super::api_strategies::{
    Body, Rendered, TimeSpec, body, create_fields, text, time_spec, update_fields,
};

impl Rendered {
    /// The rendered body, with its content type if any, sent as `method` to `path`.
    fn request(&self, h: &Harness, method: Method, path: &str) -> reqwest::RequestBuilder {
        let request = h.api.request(method, path).body(self.bytes.clone());
        match self.content_type {
            Some(content_type) => request.header(CONTENT_TYPE, content_type),
            None => request,
        }
    }
}

async fn check_create(h: &Harness, body: Body) -> Result<(), TestCaseError> {
    let requested_at = Utc::now();
    let rendered = body.render(requested_at, judge_create);
    let before = counts(&h.client).await;
    let answer = send(rendered.request(h, Method::POST, "/games")).await;
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
    let answer = send(rendered.request(h, Method::PATCH, &format!("/games/{id}"))).await;
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
pub(super) fn encode(text: &str) -> String {
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
