//! The daemon's LISTEN connection: a dedicated session (never from the pool,
//! whose connections do not deliver notifications) with TCP keepalive and a
//! user timeout, so that a silently dropped connection is noticed.

use std::time::Duration;

use std::fmt;

use actors::model::{ChangeHint, truncate_for_log};
use actors::ports::{EventSink, ListenConnector, ListenEvent, ListenSession, PortError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Cause, DbError};
use crate::config::DatabaseUrl;
use crate::kinds::Kind;

/// Payloads longer than this are truncated in logs.
const LOGGED_PAYLOAD_BYTES: usize = 256;

/// Settings of the LISTEN connection.
#[derive(Debug, Clone)]
pub struct ListenSettings {
    /// Connection attempt bound.
    pub connect_timeout: Duration,
    /// Bound on a ping's round trip; a dead connection is reported after it.
    pub ping_timeout: Duration,
}

/// Opens LISTEN connections on the configured database, subscribed to the
/// channel of every kind.
pub struct PgListenConnector {
    url: DatabaseUrl,
    settings: ListenSettings,
    kinds: Vec<&'static Kind>,
}

impl PgListenConnector {
    /// A connector for `url`, listening for changes to `kinds`.
    pub fn new(url: DatabaseUrl, settings: ListenSettings, kinds: Vec<&'static Kind>) -> Self {
        Self {
            url,
            settings,
            kinds,
        }
    }
}

impl ListenConnector for PgListenConnector {
    type Session = PgListenSession;

    async fn connect(&self, events: EventSink<ListenEvent>) -> Result<PgListenSession, PortError> {
        let mut config = self.url.config().clone();
        let timeout = self.settings.connect_timeout;
        // Keepalive probes detect a peer that vanished while the connection is
        // idle; the user timeout bounds how long unacknowledged data (a ping to
        // a black hole) may stay in flight before the kernel gives up.
        super::name_connections(&mut config, "notification-scheduler listener");
        config
            .connect_timeout(timeout)
            .keepalives(true)
            .keepalives_idle(Duration::from_secs(10))
            .keepalives_interval(Duration::from_secs(5))
            .keepalives_retries(3)
            .tcp_user_timeout(Duration::from_secs(20));
        let bound = super::connect_bound(&config, timeout);
        let (client, mut connection) =
            match tokio::time::timeout(bound, config.connect(NoTls)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(err)) => return Err(super::connect_error(&config, err).into()),
                Err(_) => return Err(super::connect_timed_out(&config, bound).into()),
            };
        let kinds = self.kinds.clone();
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let reason = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        let kind = kinds
                            .iter()
                            .find(|kind| kind.channel == notification.channel());
                        let hint = match kind {
                            Some(kind) => decode(kind, notification.payload()),
                            None => unrecognised(notification.payload()),
                        };
                        if !events.send(ListenEvent::Changed(hint)) {
                            return;
                        }
                    }
                    Some(Ok(_notice)) => {}
                    Some(Err(err)) => break super::describe(&err),
                    None => break "the server closed the connection".to_owned(),
                }
            };
            events.send(ListenEvent::Lost(reason));
        });
        let channels: Vec<String> = self
            .kinds
            .iter()
            .map(|kind| kind.channel.to_owned())
            .collect();
        let listen: String = channels
            .iter()
            .map(|channel| format!("LISTEN {channel};"))
            .collect();
        let session = PgListenSession {
            client,
            driver,
            ping_timeout: self.settings.ping_timeout,
            channels,
        };
        session
            .bounded(
                "subscribing to schedule changes",
                session.client.batch_execute(&listen),
            )
            .await?;
        Ok(session)
    }
}

/// An open LISTEN session; dropping it closes the connection.
pub struct PgListenSession {
    client: Client,
    driver: tokio::task::JoinHandle<()>,
    ping_timeout: Duration,
    /// Every channel it must stay subscribed to.
    channels: Vec<String>,
}

impl PgListenSession {
    async fn bounded<T>(
        &self,
        context: &'static str,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.ping_timeout, future).await {
            Ok(result) => result.map_err(|err| DbError::query(context, err)),
            Err(_) => Err(DbError::timed_out(context, self.ping_timeout)),
        }
    }
}

impl ListenSession for PgListenSession {
    async fn ping(&self) -> Result<(), PortError> {
        let missing: Vec<String> = self
            .bounded(
                "pinging the LISTEN connection",
                self.client.query(
                    "SELECT channel FROM unnest($1::text[]) AS channel \
                      WHERE channel NOT IN (SELECT pg_listening_channels())",
                    &[&self.channels],
                ),
            )
            .await?
            .iter()
            .map(|row| row.get(0))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        Err(DbError::Query {
            context: "pinging the LISTEN connection",
            cause: Cause::Other(format!("no longer subscribed to {}", missing.join(", "))),
        }
        .into())
    }
}

impl Drop for PgListenSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// Decodes a payload of `kind`'s trigger:
/// `{"operation": "INSERT"|"UPDATE"|"DELETE", "earliest_<time column>": <time>}`
/// and nothing else. Anything else becomes [`ChangeHint::Unrecognised`].
pub fn decode(kind: &Kind, payload: &str) -> ChangeHint {
    let expected = PayloadSeed {
        earliest_field: format!("earliest_{}", kind.time_column),
    };
    let mut deserializer = serde_json::Deserializer::from_str(payload);
    let decoded = expected
        .deserialize(&mut deserializer)
        .and_then(|earliest| deserializer.end().map(|()| earliest));
    match decoded {
        Ok(earliest) => ChangeHint::Changed { earliest },
        Err(_) => unrecognised(payload),
    }
}

/// A payload this version does not understand, truncated for the log.
fn unrecognised(payload: &str) -> ChangeHint {
    ChangeHint::Unrecognised {
        payload: truncate_for_log(payload, LOGGED_PAYLOAD_BYTES),
    }
}

fn known_operation<E: de::Error>(operation: &str) -> Result<(), E> {
    match operation {
        "INSERT" | "UPDATE" | "DELETE" => Ok(()),
        _ => Err(E::custom("unknown operation")),
    }
}

/// Reads a trigger payload whose time field is named after the kind's time
/// column, refusing unknown, missing and repeated fields. The trigger reports
/// the kind of statement; the scheduler re-reads the table whatever it was,
/// so only its validity matters.
struct PayloadSeed {
    earliest_field: String,
}

impl<'de> DeserializeSeed<'de> for PayloadSeed {
    type Value = DateTime<Utc>;

    fn deserialize<D: serde::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        // As a struct, so that the positional form (`["INSERT", <time>]`) that
        // serde has always read into the payload's fields keeps working.
        deserializer.deserialize_struct("Payload", &[], self)
    }
}

impl<'de> Visitor<'de> for PayloadSeed {
    type Value = DateTime<Utc>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "an object with operation and {}", self.earliest_field)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let operation: String = seq
            .next_element()?
            .ok_or_else(|| de::Error::custom("missing operation"))?;
        known_operation(&operation)?;
        seq.next_element()?
            .ok_or_else(|| de::Error::custom("missing time"))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut operation_seen = false;
        let mut earliest = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == "operation" && !operation_seen {
                known_operation::<A::Error>(&map.next_value::<String>()?)?;
                operation_seen = true;
            } else if key == self.earliest_field && earliest.is_none() {
                earliest = Some(map.next_value::<DateTime<Utc>>()?);
            } else {
                return Err(de::Error::custom("unknown or repeated field"));
            }
        }
        match (operation_seen, earliest) {
            (true, Some(earliest)) => Ok(earliest),
            _ => Err(de::Error::custom("missing field")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kinds::{reminder, status_transition};

    #[test]
    fn decodes_trigger_payloads_in_any_session_time_zone() {
        let hint = decode(
            &reminder::KIND,
            r#"{"operation" : "INSERT", "earliest_notification_time" : "2026-11-29T05:47:02.342722+02:00"}"#,
        );
        let expected: DateTime<Utc> = "2026-11-29T03:47:02.342722Z".parse().unwrap();
        assert_eq!(hint, ChangeHint::Changed { earliest: expected });
    }

    #[test]
    fn anything_else_is_unrecognised_and_truncated() {
        for payload in [
            "",
            "not json",
            "[]",
            r#"{"operation": "TRUNCATE", "earliest_notification_time": "2026-11-29T03:47:02Z"}"#,
            r#"{"operation": "INSERT", "earliest_notification_time": 12}"#,
            r#"{"operation": "INSERT", "game_id": "x", "notification_time": "2026-11-29T03:47:02"}"#,
        ] {
            assert!(
                matches!(
                    decode(&reminder::KIND, payload),
                    ChangeHint::Unrecognised { .. }
                ),
                "{payload}"
            );
        }
        let huge = "x".repeat(10_000);
        let ChangeHint::Unrecognised { payload } = decode(&reminder::KIND, &huge) else {
            panic!("huge payload decoded");
        };
        assert!(payload.len() < 400, "{}", payload.len());
    }

    #[test]
    fn each_kind_reads_the_time_field_named_after_its_time_column() {
        let transition =
            r#"{"operation": "UPDATE", "earliest_transition_time": "2026-11-29T03:47:02Z"}"#;
        let expected: DateTime<Utc> = "2026-11-29T03:47:02Z".parse().unwrap();
        assert_eq!(
            decode(&status_transition::KIND, transition),
            ChangeHint::Changed { earliest: expected }
        );
        assert!(matches!(
            decode(&reminder::KIND, transition),
            ChangeHint::Unrecognised { .. }
        ));
    }
}
