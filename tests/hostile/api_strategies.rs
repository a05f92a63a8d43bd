//! The API under generated requests: strategies that generate game bodies,
//! times, minutes and raw byte edits, each rendered with the oracle's verdict.

use std::fmt::Debug;

use chrono::{DateTime, FixedOffset, Utc};
use proptest::prelude::*;
use proptest::sample::{Index, select};
use proptest::test_runner::{Config as ProptestConfig, TestRunner};
use serde_json::{Map, Value, json};

use super::api_oracle::{DAY, GAME_FIELDS, MINUTES_MAX, REMINDERS_MAX, Verdict};

pub(super) fn runner(cases: u32) -> TestRunner {
    TestRunner::new(ProptestConfig {
        cases,
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    })
}

/// Short text of any kind.
pub(super) fn text() -> impl Strategy<Value = String> {
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
pub(super) fn any_json() -> BoxedStrategy<Value> {
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

pub(super) const SQL_INJECTIONS: &[&str] = &[
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
pub(super) struct TimeSpec {
    from_now: i64,
    form: TimeForm,
}

impl TimeSpec {
    pub(super) fn render(&self, now: DateTime<Utc>) -> String {
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

pub(super) fn time_spec() -> impl Strategy<Value = TimeSpec> {
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
pub(super) enum Field<T> {
    Absent,
    Null,
    Given(T),
    WrongType(Value),
}

pub(super) fn wrong_type() -> impl Strategy<Value = Value> {
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
    field(given, 1, 24)
}

/// A field often absent, for updating.
fn update_field<T: Debug + Clone>(
    given: impl Strategy<Value = T>,
) -> impl Strategy<Value = Field<T>> {
    field(given, 5, 5)
}

/// A field absent, null, given or of the wrong type; the first and third
/// with these weights, the others with weight 1.
pub(super) fn field<T: Debug + Clone>(
    given: impl Strategy<Value = T>,
    absent: u32,
    present: u32,
) -> impl Strategy<Value = Field<T>> {
    prop_oneof![
        absent => Just(Field::Absent),
        1 => Just(Field::Null),
        present => given.prop_map(Field::Given),
        1 => wrong_type().prop_map(Field::WrongType),
    ]
}

/// The documented fields, each mutated, and perhaps one more.
#[derive(Debug, Clone)]
pub(super) struct GameFields {
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

pub(super) fn create_fields() -> impl Strategy<Value = GameFields> {
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
        .prop_map(GameFields::from_parts)
}

pub(super) fn update_fields() -> impl Strategy<Value = GameFields> {
    (
        update_field(title_text()),
        update_field(time_spec()),
        update_field(minutes_value()),
        extra_field(),
    )
        .prop_map(GameFields::from_parts)
}

/// A strategy's value for each of [`GameFields`], in order.
type GameFieldParts = (
    Field<String>,
    Field<TimeSpec>,
    Field<Value>,
    Option<(String, Value)>,
);

impl GameFields {
    fn from_parts((title, scheduled_at, reminder_minutes, extra): GameFieldParts) -> Self {
        Self {
            title,
            scheduled_at,
            reminder_minutes,
            extra,
        }
    }

    pub(super) fn render(&self, now: DateTime<Utc>) -> Value {
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
pub(super) enum ByteEdit {
    Keep,
    Replace(Index, u8),
    Insert(Index, u8),
    Delete(Index),
}

impl ByteEdit {
    pub(super) fn apply(&self, bytes: &mut Vec<u8>) {
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

pub(super) fn byte_edit() -> impl Strategy<Value = ByteEdit> {
    let byte = prop_oneof![select(b"{}[]\":,\\ 0-e.\t\n".to_vec()), any::<u8>(),];
    prop_oneof![
        1 => Just(ByteEdit::Keep),
        2 => (any::<Index>(), byte.clone()).prop_map(|(at, b)| ByteEdit::Replace(at, b)),
        2 => (any::<Index>(), byte).prop_map(|(at, b)| ByteEdit::Insert(at, b)),
        2 => any::<Index>().prop_map(ByteEdit::Delete),
    ]
}

pub(super) fn content_type() -> impl Strategy<Value = Option<&'static str>> {
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
pub(super) enum Body {
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

pub(super) fn body(fields: BoxedStrategy<GameFields>) -> impl Strategy<Value = Body> {
    prop_oneof![
        2 => any_body().prop_map(Body::Arbitrary),
        5 => fields.clone().prop_map(Body::Almost),
        2 => (fields, byte_edit(), content_type()).prop_map(|(fields, edit, content_type)| {
            Body::Bytes { fields, edit, content_type }
        }),
    ]
}

/// A body as sent, with the oracle's verdict.
pub(super) struct Rendered {
    pub(super) content_type: Option<&'static str>,
    pub(super) bytes: Vec<u8>,
    /// The body as JSON, when it is JSON.
    pub(super) value: Option<Value>,
    pub(super) verdict: Verdict,
    /// Raw bytes may hold duplicate keys, which serde refuses (400) and the
    /// JSON value cannot show: a 400 is then acceptable too.
    pub(super) also_400: bool,
}

impl Body {
    pub(super) fn render(
        &self,
        now: DateTime<Utc>,
        judge: fn(&Value, DateTime<Utc>) -> Verdict,
    ) -> Rendered {
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
