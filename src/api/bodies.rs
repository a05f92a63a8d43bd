//! Request extraction with the API's error body for every failure: JSON
//! bodies (content type, size, syntax, types, unknown fields), ids in the
//! path, query parameters (page sizes, cursors), times.

use std::collections::HashMap;

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Path, Query, Request};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use chrono::{DateTime, Datelike, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer};
use uuid::Uuid;

use super::error::ApiError;

/// Largest accepted request body, unless a route sets its own [`BodyLimit`].
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The body limit of a route that accepts more than [`MAX_BODY_BYTES`], as a
/// request extension beside its `DefaultBodyLimit`, so the 413 states it.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit(pub usize);

/// A JSON body deserialized into `T` (which should deny unknown fields).
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(request: Request, state: &S) -> Result<Self, ApiError> {
        let limit = request
            .extensions()
            .get::<BodyLimit>()
            .map_or(MAX_BODY_BYTES, |limit| limit.0);
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or("");
        let media_type = content_type.split(';').next().unwrap_or("").trim();
        if !media_type.eq_ignore_ascii_case("application/json") {
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!(
                    "expected Content-Type: application/json, got {}",
                    if content_type.is_empty() {
                        "none"
                    } else {
                        content_type
                    }
                ),
            ));
        }
        let bytes = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        StatusCode::PAYLOAD_TOO_LARGE,
                        "payload_too_large",
                        format!("the body is larger than {limit} bytes"),
                    )
                } else {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "unreadable_body",
                        rejection.body_text(),
                    )
                }
            })?;
        decode(&bytes).map(JsonBody)
    }
}

/// Decodes a JSON object, naming the field at fault in the error.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    // serde would accept an array for a struct, field by position; a request
    // body that is not an object is a mistake.
    let first = bytes.iter().find(|byte| !byte.is_ascii_whitespace());
    if first.is_some_and(|byte| *byte != b'{') {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_type",
            "the body must be a JSON object",
        ));
    }
    let deserializer = &mut serde_json::Deserializer::from_slice(bytes);
    let value = serde_path_to_error::deserialize(&mut *deserializer).map_err(|err| {
        let path = err.path().to_string();
        let inner = err.inner();
        let message = inner.to_string();
        let (code, field) = match inner.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ("malformed_json", None)
            }
            serde_json::error::Category::Io => ("unreadable_body", None),
            serde_json::error::Category::Data if message.starts_with("unknown field") => {
                ("unknown_field", field_name(&message).or(Some(path)))
            }
            serde_json::error::Category::Data if message.starts_with("missing field") => {
                ("missing_field", field_name(&message))
            }
            serde_json::error::Category::Data => ("invalid_type", (path != ".").then_some(path)),
        };
        let error = ApiError::new(StatusCode::BAD_REQUEST, code, message);
        match field {
            Some(field) => error.field(field),
            None => error,
        }
    })?;
    // Anything after the object (a second value, stray bytes) makes the body
    // ambiguous: refuse it rather than act on the first part.
    deserializer.end().map_err(|err| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            format!("the body continues after its JSON object: {err}"),
        )
    })?;
    Ok(value)
}

/// Distinguishes a field sent as `null` (`Some(None)`) from an absent one
/// (`None`); use with `#[serde(default, deserialize_with = "present")]`.
pub fn present<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    deserializer: D,
) -> Result<Option<Option<T>>, D::Error> {
    Option::<T>::deserialize(deserializer).map(Some)
}

/// An RFC 3339 time with an explicit offset, as a body field: 422 `code`
/// naming `field` otherwise.
pub fn time_field(raw: &str, field: &str, code: &'static str) -> Result<DateTime<Utc>, ApiError> {
    DateTime::parse_from_rfc3339(raw)
        .map(|time| time.with_timezone(&Utc))
        .map_err(|_| {
            ApiError::invalid(
                code,
                field,
                format!(
                    "'{}' is not an RFC 3339 time with an explicit offset; expected e.g. 2030-01-01T19:00:00Z \
                     or 2030-01-01T20:00:00+01:00 (times without an offset are ambiguous and rejected)",
                    actors::model::truncate_for_log(raw, 64)
                ),
            )
        })
}

/// The name between backticks in serde's "unknown field `x`" messages.
fn field_name(message: &str) -> Option<String> {
    let start = message.find('`')? + 1;
    let end = start + message[start..].find('`')?;
    Some(message[start..end].to_owned())
}

/// A UUID from the `{id}` path segment.
pub struct PathId(pub Uuid);

impl<S: Send + Sync> FromRequestParts<S> for PathId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Path(raw) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::new(StatusCode::BAD_REQUEST, "invalid_id", rejection.body_text())
            })?;
        raw.parse().map(PathId).map_err(|_| {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_id",
                format!(
                    "'{}' is not a UUID",
                    actors::model::truncate_for_log(&raw, 64)
                ),
            )
            .field("id")
        })
    }
}

/// Query parameters, checked against the names an endpoint accepts.
pub struct QueryParams(pub HashMap<String, String>);

impl QueryParams {
    /// Fails on a parameter not in `allowed`.
    pub fn only(self, allowed: &[&str]) -> Result<Self, ApiError> {
        if let Some(unknown) = self.0.keys().find(|key| !allowed.contains(&key.as_str())) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "unknown_parameter",
                format!(
                    "unknown query parameter; expected one of {}",
                    allowed.join(", ")
                ),
            )
            .field(actors::model::truncate_for_log(unknown, 64)));
        }
        Ok(self)
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// An RFC 3339 time parameter, if given.
    pub fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, ApiError> {
        self.get(name)
            .map(|raw| {
                DateTime::parse_from_rfc3339(raw)
                    .map(|time| time.with_timezone(&Utc))
                    .map_err(|_| {
                        ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "invalid_parameter",
                            "expected an RFC 3339 time with an explicit offset, e.g. 2030-01-01T00:00:00Z",
                        )
                        .field(name)
                    })
            })
            .transpose()
    }

    /// `limit`: a page size from 1 to `max`, `default` when absent.
    pub fn limit(&self, default: i64, max: i64) -> Result<i64, ApiError> {
        match self.get("limit") {
            None => Ok(default),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| (1..=max).contains(n))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "invalid_parameter",
                        format!("limit must be a whole number from 1 to {max}"),
                    )
                    .field("limit")
                }),
        }
    }

    /// `cursor`: the `next_cursor` of a previous page, if given.
    pub fn cursor(&self) -> Result<Option<(DateTime<Utc>, Uuid)>, ApiError> {
        self.get("cursor").map(decode_cursor).transpose()
    }
}

/// A page's `next_cursor`: the sort time and id of its last item.
pub fn encode_cursor(time: DateTime<Utc>, id: Uuid) -> String {
    format!("{}.{}", time.timestamp_micros(), id.simple())
}

fn decode_cursor(raw: &str) -> Result<(DateTime<Utc>, Uuid), ApiError> {
    let invalid = || {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_parameter",
            "cursor is not a next_cursor value from this API",
        )
        .field("cursor")
    };
    let (micros, id) = raw.split_once('.').ok_or_else(invalid)?;
    // Only times PostgreSQL can hold: its timestamptz starts in November 4713
    // BC (chrono counts 1 BC as year 0).
    let time = micros
        .parse::<i64>()
        .ok()
        .and_then(DateTime::from_timestamp_micros)
        .filter(|time| time.year() > -4712)
        .ok_or_else(invalid)?;
    Ok((time, id.parse().map_err(|_| invalid())?))
}

impl<S: Send + Sync> FromRequestParts<S> for QueryParams {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let Query(params) = Query::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_query",
                    rejection.body_text(),
                )
            })?;
        Ok(Self(params))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_garbage_is_rejected() {
        let time: DateTime<Utc> = "2030-01-01T00:00:00.123456Z".parse().unwrap();
        let id = Uuid::new_v4();
        assert_eq!(decode_cursor(&encode_cursor(time, id)).unwrap(), (time, id));
        for garbage in [
            "",
            "x",
            "1.",
            ".abc",
            "99999999999999999999.00000000000000000000000000000000",
        ] {
            assert!(decode_cursor(garbage).is_err(), "{garbage}");
        }
    }
}
