//! The API under generated requests: the oracle, an independent reading of the
//! documented rules that says what answer a request deserves.

use std::collections::BTreeSet;
use std::fmt::Debug;

use chrono::{DateTime, NaiveDate, Utc};
use serde_json::{Map, Value};
use uuid::Uuid;

/// What the documented rules say about a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Verdict {
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
pub(super) fn worst(parts: impl IntoIterator<Item = Verdict>) -> Verdict {
    let parts: Vec<Verdict> = parts.into_iter().collect();
    if let Some(refused) = parts.iter().find(|v| matches!(v, Verdict::Invalid(_))) {
        return *refused;
    }
    parts
        .into_iter()
        .find(|v| matches!(v, Verdict::Borderline(_)))
        .unwrap_or(Verdict::Valid)
}

pub(super) const DAY: i64 = 86_400;
const TITLE_MAX: usize = 200;
pub(super) const MINUTES_MAX: i64 = 10_080;
pub(super) const REMINDERS_MAX: usize = 10;
pub(super) const DEFAULT_MINUTES: [i64; 2] = [60, 15];

/// An RFC 3339 date-time as an instant (section 5.6; its note allows a space
/// or lower-case `t`/`z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Rfc3339 {
    At(DateTime<Utc>),
    /// Second 60: valid syntax, an instant only on a real leap second.
    LeapSecond,
    Not,
}

pub(super) fn rfc3339(raw: &str) -> Rfc3339 {
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
pub(super) fn typed_minutes(value: Option<&Value>) -> Result<Option<Vec<i64>>, ()> {
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

pub(super) const GAME_FIELDS: [&str; 4] = [
    "title",
    "scheduled_at",
    "reminder_minutes",
    "expected_duration_minutes",
];

/// `expected_duration_minutes` as JSON: absent or null (the default), or a
/// whole number; anything else is the wrong type.
fn typed_duration(value: Option<&Value>) -> Result<Option<i64>, ()> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(value) => value.as_i64().map(Some).ok_or(()),
    }
}

/// An expected duration: 1 minute to a week.
fn judge_duration(minutes: Option<i64>) -> Verdict {
    match minutes {
        Some(minutes) if !(1..=MINUTES_MAX).contains(&minutes) => Verdict::Invalid(422),
        _ => Verdict::Valid,
    }
}

/// The body's fields, if it is an object of documented fields only.
fn game_fields(body: &Value) -> Option<&Map<String, Value>> {
    let fields = body.as_object()?;
    fields
        .keys()
        .all(|key| GAME_FIELDS.contains(&key.as_str()))
        .then_some(fields)
}

/// POST /games: an object of exactly the documented fields (400 otherwise),
/// then the value rules (422).
pub(super) fn judge_create(body: &Value, now: DateTime<Utc>) -> Verdict {
    let Some(fields) = game_fields(body) else {
        return Verdict::Invalid(400);
    };
    let (Some(Value::String(title)), Some(Value::String(start))) =
        (fields.get("title"), fields.get("scheduled_at"))
    else {
        return Verdict::Invalid(400);
    };
    let Ok(minutes) = typed_minutes(fields.get("reminder_minutes")) else {
        return Verdict::Invalid(400);
    };
    let Ok(duration) = typed_duration(fields.get("expected_duration_minutes")) else {
        return Verdict::Invalid(400);
    };
    worst([
        judge_title(title),
        judge_start(start, now),
        minutes.map_or(Verdict::Valid, |m| judge_minutes(&m)),
        judge_duration(duration),
    ])
}

/// PATCH /games/{id}: any of the documented fields; `title` and
/// `scheduled_at` must not be null; at least one field.
pub(super) fn judge_update(body: &Value, now: DateTime<Utc>) -> Verdict {
    let Some(fields) = game_fields(body) else {
        return Verdict::Invalid(400);
    };
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
    let Ok(duration) = typed_duration(fields.get("expected_duration_minutes")) else {
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
        judge_duration(duration),
    ])
}

/// A page size: a whole number from 1 to `max`.
pub(super) fn judge_limit(raw: &str, max: i64) -> Verdict {
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
pub(super) fn judge_filter_time(raw: &str) -> Verdict {
    match rfc3339(raw) {
        Rfc3339::At(_) => Verdict::Valid,
        Rfc3339::LeapSecond => Verdict::Borderline(400),
        Rfc3339::Not => Verdict::Invalid(400),
    }
}

/// The instants a cursor can name: those PostgreSQL can store (from 4713 BC;
/// a margin of centuries kept) that chrono can represent.
pub(super) fn cursor_micros_range() -> std::ops::RangeInclusive<i64> {
    let earliest = NaiveDate::from_ymd_opt(-4_000, 1, 1)
        .and_then(|date| date.and_hms_opt(0, 0, 0))
        .expect("a date")
        .and_utc()
        .timestamp_micros();
    earliest..=DateTime::<Utc>::MAX_UTC.timestamp_micros()
}

/// A cursor: `next_cursor` of an earlier page, `<microseconds>.<simple uuid>`.
/// Other spellings of the same parts may or may not be accepted.
pub(super) fn judge_cursor(raw: &str) -> Verdict {
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
