//! The daemon's LISTEN connection: a dedicated session (never from the pool,
//! whose connections do not deliver notifications) with TCP keepalive and a
//! user timeout, so that a silently dropped connection is noticed.

use std::time::Duration;

use actors::model::{ChangeHint, truncate_for_log};
use actors::ports::{EventSink, ListenConnector, ListenEvent, ListenSession, PortError};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use tokio_postgres::{AsyncMessage, Client, NoTls};

use super::{Cause, DbError};
use crate::config::DatabaseUrl;

/// The channel the schedule trigger notifies.
pub const CHANNEL: &str = "notification_schedule_changed";

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

/// Opens LISTEN connections on the configured database.
pub struct PgListenConnector {
    url: DatabaseUrl,
    settings: ListenSettings,
}

impl PgListenConnector {
    /// A connector for `url`.
    pub fn new(url: DatabaseUrl, settings: ListenSettings) -> Self {
        Self { url, settings }
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
        let (client, mut connection) =
            match tokio::time::timeout(timeout, config.connect(NoTls)).await {
                Ok(Ok(pair)) => pair,
                Ok(Err(err)) => return Err(super::connect_error(&config, err).into()),
                Err(_) => return Err(super::connect_timed_out(&config, timeout).into()),
            };
        let driver = tokio::spawn(async move {
            let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
            let reason = loop {
                match messages.next().await {
                    Some(Ok(AsyncMessage::Notification(notification))) => {
                        let hint = decode(notification.payload());
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
        let session = PgListenSession {
            client,
            driver,
            ping_timeout: self.settings.ping_timeout,
        };
        session
            .bounded(
                "subscribing to schedule changes",
                session.client.batch_execute(&format!("LISTEN {CHANNEL}")),
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
        let listening = self
            .bounded(
                "pinging the LISTEN connection",
                self.client.query_opt(
                    "SELECT 1 FROM pg_listening_channels() AS channel WHERE channel = $1",
                    &[&CHANNEL],
                ),
            )
            .await?;
        match listening {
            Some(_) => Ok(()),
            None => Err(DbError::Query {
                context: "pinging the LISTEN connection",
                cause: Cause::Other(format!("no longer subscribed to {CHANNEL}")),
            }
            .into()),
        }
    }
}

impl Drop for PgListenSession {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
struct Payload {
    operation: String,
    earliest_notification_time: DateTime<Utc>,
}

/// Decodes a trigger payload. Anything else becomes [`ChangeHint::Unrecognised`].
pub fn decode(payload: &str) -> ChangeHint {
    let unrecognised = || ChangeHint::Unrecognised {
        payload: truncate_for_log(payload, LOGGED_PAYLOAD_BYTES),
    };
    let Ok(decoded) = serde_json::from_str::<Payload>(payload) else {
        return unrecognised();
    };
    // The trigger reports the kind of statement; the scheduler re-reads the
    // table whatever it was, so only its validity matters here.
    if !matches!(decoded.operation.as_str(), "INSERT" | "UPDATE" | "DELETE") {
        return unrecognised();
    }
    ChangeHint::Changed {
        earliest: decoded.earliest_notification_time,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decodes_trigger_payloads_in_any_session_time_zone() {
        let hint = decode(
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
                matches!(decode(payload), ChangeHint::Unrecognised { .. }),
                "{payload}"
            );
        }
        let huge = "x".repeat(10_000);
        let ChangeHint::Unrecognised { payload } = decode(&huge) else {
            panic!("huge payload decoded");
        };
        assert!(payload.len() < 400, "{}", payload.len());
    }
}
