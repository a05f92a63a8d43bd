//! RabbitMQ: connections, the reminder publisher and the wire format.
//!
//! Errors leaving this module name the broker by host and port.

pub mod confirms;
pub mod consumer;
pub mod envelope;
pub mod publisher;

use std::time::Duration;

use lapin::{Connection, ConnectionProperties, ErrorKind};

use crate::config::BrokerUrl;

/// A failure talking to RabbitMQ, described for an operator.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection could be made, or it was lost.
    #[error("cannot reach RabbitMQ at {endpoint}: {reason}")]
    Unreachable { endpoint: String, reason: String },
    /// The broker answered but refused the session (credentials, vhost).
    #[error("RabbitMQ at {endpoint} refused the connection: {reason}")]
    Refused { endpoint: String, reason: String },
    /// An operation on an open connection failed.
    #[error("RabbitMQ at {endpoint}: {context}: {reason}")]
    Operation {
        endpoint: String,
        context: &'static str,
        reason: String,
    },
}

/// A broker failure that reconnecting can fix; configuration mismatches are
/// reported as [`actors::ports::PortError::Unrecoverable`] where they are found.
impl From<BrokerError> for actors::ports::PortError {
    fn from(err: BrokerError) -> Self {
        Self::transient(err)
    }
}

/// Connects with a bounded handshake (lapin has none of its own) and the given
/// heartbeat unless the URL sets one.
pub async fn connect(
    url: &BrokerUrl,
    heartbeat: Duration,
    timeout: Duration,
    connection_name: &str,
) -> Result<Connection, BrokerError> {
    let endpoint = url.endpoint();
    let mut uri: lapin::uri::AMQPUri =
        url.as_str()
            .parse()
            .map_err(|reason| BrokerError::Refused {
                endpoint: endpoint.clone(),
                reason,
            })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs().max(1)).unwrap_or(u16::MAX));
    }
    let properties =
        ConnectionProperties::default().with_connection_name(connection_name.to_owned().into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(connect_error(&endpoint, &err)),
        Err(_) => Err(BrokerError::Unreachable {
            endpoint,
            reason: format!("no answer within {timeout:?}"),
        }),
    }
}

/// Deletes an exchange (benchmark and test clean-up).
pub async fn delete_exchange(url: &BrokerUrl, exchange: &str) -> Result<(), BrokerError> {
    let timeout = Duration::from_secs(10);
    let connection = connect(url, timeout, timeout, "notification-scheduler clean-up").await?;
    let operation = |err: lapin::Error| BrokerError::Operation {
        endpoint: url.endpoint(),
        context: "deleting an exchange",
        reason: err.to_string(),
    };
    let channel = connection.create_channel().await.map_err(operation)?;
    channel
        .exchange_delete(
            exchange.into(),
            lapin::options::ExchangeDeleteOptions::default(),
        )
        .await
        .map_err(operation)?;
    let _ = connection.close(200, "done".into()).await;
    Ok(())
}

fn connect_error(endpoint: &str, err: &lapin::Error) -> BrokerError {
    let endpoint = endpoint.to_owned();
    match err.kind() {
        ErrorKind::ProtocolError(amqp) => BrokerError::Refused {
            endpoint,
            reason: amqp.get_message().to_string(),
        },
        ErrorKind::IOError(io) => BrokerError::Unreachable {
            endpoint,
            reason: io.to_string(),
        },
        _ => BrokerError::Unreachable {
            endpoint,
            reason: err.to_string(),
        },
    }
}
