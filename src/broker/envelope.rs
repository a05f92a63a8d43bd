//! The wire contract with consumers: the body and AMQP properties of an
//! event's message. The service's own kinds share one JSON envelope; a
//! scheduled message's body is its stored payload, unchanged. Pinned by
//! golden tests; change only compatibly.

use actors::model::{Body, DueEvent};
use chrono::{DateTime, SecondsFormat, Utc};
use lapin::BasicProperties;
use lapin::types::{AMQPValue, FieldTable, LongString, ShortString};
use serde::Serialize;
use serde_json::Value;

/// The message body, exactly the shape the original daemon sent for
/// reminders.
#[derive(Debug, Serialize)]
pub struct Envelope<'a> {
    pub event_type: &'static str,
    /// Publication time, UTC, ISO 8601 with an explicit `+00:00` offset (what
    /// Python's `datetime.isoformat()` produces and every version parses).
    pub timestamp: String,
    /// The event itself, as its kind builds it (`crate::kinds`).
    pub data: &'a Value,
    /// Trace id of the request that scheduled the event, when known.
    pub trace_id: Option<&'a str>,
}

/// The trace id (second field) of a W3C `traceparent`, if well formed.
pub fn trace_id(traceparent: &str) -> Option<&str> {
    // Accepted values have the exact version-00 layout, so the id is at 3..35.
    actors::trace_context::from_traceparent(traceparent).map(|_| &traceparent[3..35])
}

/// Body and properties of the message for `event`, published at `now`.
pub fn encode(event: &DueEvent, now: DateTime<Utc>) -> (Vec<u8>, BasicProperties) {
    let traceparent = event.traceparent.as_deref();
    let mut headers = FieldTable::default();
    let body = match &event.message.body {
        Body::Envelope { event_type, data } => {
            let envelope = Envelope {
                event_type,
                timestamp: now.to_rfc3339_opts(SecondsFormat::Micros, false),
                data,
                trace_id: traceparent.and_then(trace_id),
            };
            serde_json::to_vec(&envelope).expect("the envelope always serialises")
        }
        Body::Stored {
            payload,
            headers: stored,
        } => {
            for (name, value) in stored.iter().flat_map(|stored| stored.iter()) {
                if let Some(value) = header_value(value) {
                    headers.insert(ShortString::from(name.as_str()), value);
                }
            }
            payload.as_bytes().to_vec()
        }
    };
    let mut properties = BasicProperties::default()
        .with_delivery_mode(2)
        .with_content_type(ShortString::from("application/json"))
        .with_message_id(ShortString::from(event.id.to_string()))
        .with_timestamp(u64::try_from(now.timestamp()).unwrap_or(0));
    if let Some(expires_in) = event.expires_in {
        properties =
            properties.with_expiration(ShortString::from(expires_in.as_millis().to_string()));
    }
    if let Some(traceparent) = traceparent {
        // RabbitMQ rejects short-string header values; long strings are what it
        // sends back to consumers too.
        headers.insert(
            ShortString::from("traceparent"),
            AMQPValue::LongString(LongString::from(traceparent)),
        );
    }
    if !headers.inner().is_empty() {
        properties = properties.with_headers(headers);
    }
    (body, properties)
}

/// The AMQP value of a stored header: strings as long strings, integers as
/// signed 64-bit, other numbers as doubles, booleans as booleans. The API and
/// the table accept nothing else; anything else is left out.
fn header_value(value: &Value) -> Option<AMQPValue> {
    match value {
        Value::String(text) => Some(AMQPValue::LongString(LongString::from(text.as_str()))),
        Value::Bool(flag) => Some(AMQPValue::Boolean(*flag)),
        Value::Number(number) => Some(match number.as_i64() {
            Some(integer) => AMQPValue::LongLongInt(integer),
            None => AMQPValue::Double(number.as_f64()?),
        }),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use actors::model::Outbound;

    use super::*;
    use crate::kinds::{reminder, scheduled_message, status_transition};

    fn reminder() -> DueEvent {
        DueEvent {
            kind: "reminder",
            id: "5f0c6d1e-8a4b-4c1d-9e2f-3a4b5c6d7e8f".parse().unwrap(),
            due_at: "2026-11-29T18:45:00Z".parse().unwrap(),
            stale: false,
            expires_in: Some(Duration::from_millis(899_250)),
            lateness: Duration::from_millis(1),
            ahead: Duration::ZERO,
            traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned()),
            message: Outbound {
                exchange: None,
                routing_key: "game.reminder_due".into(),
                body: Body::Envelope {
                    event_type: "game.reminder_due",
                    data: Arc::new(reminder::message_data(
                        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
                        15,
                    )),
                },
            },
        }
    }

    #[test]
    fn body_matches_the_wire_contract() {
        let now: DateTime<Utc> = "2026-11-29T18:45:00.000750Z".parse().unwrap();
        let (body, _) = encode(&reminder(), now);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"event_type":"game.reminder_due","timestamp":"2026-11-29T18:45:00.000750+00:00","data":{"game_id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","reminder_minutes":15},"trace_id":"4bf92f3577b34da6a3ce929d0e0e4736"}"#
        );
    }

    #[test]
    fn a_status_transition_has_the_same_envelope_and_never_expires() {
        let now: DateTime<Utc> = "2026-11-29T19:00:00.000250Z".parse().unwrap();
        let transition = DueEvent {
            kind: status_transition::KIND.name,
            expires_in: None,
            traceparent: None,
            message: Outbound {
                exchange: None,
                routing_key: "game.status_transition_due".into(),
                body: Body::Envelope {
                    event_type: "game.status_transition_due",
                    data: Arc::new(status_transition::message_data(
                        "0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9",
                        "IN_PROGRESS",
                        "2026-11-29T19:00:00Z".parse().unwrap(),
                    )),
                },
            },
            ..reminder()
        };
        let (body, properties) = encode(&transition, now);
        assert_eq!(
            String::from_utf8(body).unwrap(),
            r#"{"event_type":"game.status_transition_due","timestamp":"2026-11-29T19:00:00.000250+00:00","data":{"game_id":"0b1c2d3e-4f50-4617-8293-a4b5c6d7e8f9","target_status":"IN_PROGRESS","transition_time":"2026-11-29T19:00:00.000000+00:00"},"trace_id":null}"#
        );
        assert_eq!(properties.expiration(), &None);
    }

    #[test]
    fn properties_carry_identity_expiry_and_trace_context() {
        let now: DateTime<Utc> = "2026-11-29T18:45:00Z".parse().unwrap();
        let (_, properties) = encode(&reminder(), now);
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.content_type().as_ref().map(ShortString::as_str),
            Some("application/json")
        );
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some("5f0c6d1e-8a4b-4c1d-9e2f-3a4b5c6d7e8f")
        );
        assert_eq!(properties.timestamp(), &Some(1_795_977_900));
        assert_eq!(
            properties.expiration().as_ref().map(ShortString::as_str),
            Some("899250")
        );
        let traceparent = properties
            .headers()
            .as_ref()
            .and_then(|headers| headers.inner().get("traceparent"))
            .and_then(AMQPValue::as_long_string)
            .map(ToString::to_string);
        assert_eq!(
            traceparent.as_deref(),
            Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
        );
    }

    #[test]
    fn legacy_rows_have_no_expiry_trace_or_headers() {
        let legacy = DueEvent {
            expires_in: None,
            traceparent: None,
            message: Outbound {
                body: Body::Envelope {
                    event_type: "game.reminder_due",
                    data: Arc::new(reminder::message_data("legacy-string-id", 15)),
                },
                ..reminder().message
            },
            ..reminder()
        };
        let (body, properties) = encode(&legacy, Utc::now());
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(json["trace_id"], serde_json::Value::Null);
        assert_eq!(json["data"]["game_id"], "legacy-string-id");
        assert_eq!(properties.expiration(), &None);
        assert_eq!(properties.headers(), &None);
    }

    #[test]
    fn a_scheduled_message_is_its_payload_with_its_headers_and_expiration() {
        let payload = r#"{ "b": 1, "a": [1.50, "\u00e9"] }"#;
        let headers = serde_json::json!({
            "tenant": "eu-1", "attempt": 3, "weight": 0.5, "urgent": true,
        });
        let serde_json::Value::Object(headers) = headers else {
            unreachable!()
        };
        let message = DueEvent {
            kind: scheduled_message::KIND.name,
            expires_in: Some(Duration::from_millis(1_500)),
            message: Outbound {
                exchange: Some("billing".into()),
                routing_key: "invoice.due".into(),
                body: Body::Stored {
                    payload: payload.into(),
                    headers: Some(Arc::new(headers)),
                },
            },
            ..reminder()
        };
        let (body, properties) = encode(&message, Utc::now());
        assert_eq!(body, payload.as_bytes());
        assert_eq!(properties.delivery_mode(), &Some(2));
        assert_eq!(
            properties.message_id().as_ref().map(ShortString::as_str),
            Some("5f0c6d1e-8a4b-4c1d-9e2f-3a4b5c6d7e8f")
        );
        assert_eq!(
            properties.expiration().as_ref().map(ShortString::as_str),
            Some("1500")
        );
        let headers = properties.headers().as_ref().unwrap().inner();
        assert_eq!(
            headers
                .get("tenant")
                .and_then(AMQPValue::as_long_string)
                .map(ToString::to_string),
            Some("eu-1".to_owned())
        );
        assert_eq!(headers.get("attempt"), Some(&AMQPValue::LongLongInt(3)));
        assert_eq!(headers.get("weight"), Some(&AMQPValue::Double(0.5)));
        assert_eq!(headers.get("urgent"), Some(&AMQPValue::Boolean(true)));
        assert!(headers.contains_key("traceparent"));
    }

    #[test]
    fn malformed_traceparents_give_no_trace_id() {
        assert_eq!(trace_id("00-xyz-00f067aa0ba902b7-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }
}
