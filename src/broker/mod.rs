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
use crate::config::parse::BrokerNode;

/// A failure talking to RabbitMQ: what was attempted, with its [`Cause`] as
/// the source. Shown with its chain, it reads as one line for an operator.
#[derive(Debug, thiserror::Error)]
pub enum BrokerError {
    /// No connection could be made, or it was lost.
    #[error("cannot reach RabbitMQ at {endpoint}")]
    Unreachable {
        endpoint: String,
        #[source]
        cause: Cause,
    },
    /// The broker answered but refused the session (credentials, vhost).
    #[error("RabbitMQ at {endpoint} refused the connection")]
    Refused {
        endpoint: String,
        #[source]
        cause: Cause,
    },
    /// An operation on an open connection failed.
    #[error("RabbitMQ at {endpoint}: {context}")]
    Operation {
        endpoint: String,
        context: &'static str,
        #[source]
        cause: Cause,
    },
}

/// What lies under a [`BrokerError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// lapin's error, shown as `reason` (the broker's own message where it
    /// gave one), and kept whole for callers that inspect it.
    #[error("{reason}")]
    Driver { reason: String, error: lapin::Error },
    /// A bound that ran out, or a failure lapin did not report.
    #[error("{0}")]
    Other(String),
}

impl Cause {
    /// lapin's error, shown as its own message.
    pub fn driver(error: lapin::Error) -> Self {
        Self::Driver {
            reason: error.to_string(),
            error,
        }
    }
}

impl BrokerError {
    /// An operation on an open connection to `endpoint` that failed.
    pub fn operation(endpoint: String, context: &'static str, err: lapin::Error) -> Self {
        Self::Operation {
            endpoint,
            context,
            cause: Cause::driver(err),
        }
    }
}

/// A broker failure that reconnecting can fix: a broker that cannot be
/// reached or refuses the session (starting up, or credentials an operator is
/// fixing) is waited for with frequent reconnects. Configuration mismatches
/// are reported as [`actors::ports::PortError::Unrecoverable`] where they are
/// found.
impl From<BrokerError> for actors::ports::PortError {
    fn from(err: BrokerError) -> Self {
        if matches!(
            err,
            BrokerError::Unreachable { .. } | BrokerError::Refused { .. }
        ) {
            Self::unavailable(err)
        } else {
            Self::transient(err)
        }
    }
}

/// Connects with a bounded handshake (lapin has none of its own) and the given
/// heartbeat unless the URL sets one. With several nodes (one cluster's), it
/// tries them in turn from a random one, so that replicas spread over the
/// cluster and a dead node is passed over.
pub async fn connect(
    url: &BrokerUrl,
    heartbeat: Duration,
    timeout: Duration,
    connection_name: &str,
) -> Result<Connection, BrokerError> {
    let nodes = url.nodes();
    let first = fastrand::usize(..nodes.len().max(1));
    let mut failures = Vec::new();
    for node in nodes.iter().cycle().skip(first).take(nodes.len()) {
        match connect_node(node, heartbeat, timeout, connection_name).await {
            Ok(connection) => return Ok(connection),
            Err(err) => failures.push(err),
        }
    }
    if failures.len() == 1 {
        return Err(failures.remove(0));
    }
    let reasons: Vec<String> = failures
        .iter()
        .map(|err| actors::error_chain::Chain(err).to_string())
        .collect();
    Err(BrokerError::Unreachable {
        endpoint: url.endpoint(),
        cause: Cause::Other(format!(
            "no node accepted a connection: {}",
            reasons.join("; ")
        )),
    })
}

async fn connect_node(
    node: &BrokerNode,
    heartbeat: Duration,
    timeout: Duration,
    connection_name: &str,
) -> Result<Connection, BrokerError> {
    let endpoint = node.endpoint();
    let mut uri: lapin::uri::AMQPUri =
        node.as_str()
            .parse()
            .map_err(|reason| BrokerError::Refused {
                endpoint: endpoint.clone(),
                cause: Cause::Other(reason),
            })?;
    if uri.query.heartbeat.is_none() {
        uri.query.heartbeat = Some(u16::try_from(heartbeat.as_secs().max(1)).unwrap_or(u16::MAX));
    }
    let properties =
        ConnectionProperties::default().with_connection_name(connection_name.to_owned().into());
    match tokio::time::timeout(timeout, Connection::connect_uri(uri, properties)).await {
        Ok(Ok(connection)) => Ok(connection),
        Ok(Err(err)) => Err(connect_error(&endpoint, err)),
        Err(_) => Err(BrokerError::Unreachable {
            endpoint,
            cause: Cause::Other(format!("no answer within {timeout:?}")),
        }),
    }
}

/// Deletes an exchange (benchmark and test clean-up).
pub async fn delete_exchange(url: &BrokerUrl, exchange: &str) -> Result<(), BrokerError> {
    let timeout = Duration::from_secs(10);
    let connection = connect(url, timeout, timeout, "notification-scheduler clean-up").await?;
    let operation =
        |err: lapin::Error| BrokerError::operation(url.endpoint(), "deleting an exchange", err);
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

fn connect_error(endpoint: &str, err: lapin::Error) -> BrokerError {
    let endpoint = endpoint.to_owned();
    let reason = match err.kind() {
        ErrorKind::ProtocolError(amqp) => amqp.get_message().to_string(),
        ErrorKind::IOError(io) => io.to_string(),
        _ => err.to_string(),
    };
    let refused = matches!(err.kind(), ErrorKind::ProtocolError(_));
    let cause = Cause::Driver { reason, error: err };
    if refused {
        BrokerError::Refused { endpoint, cause }
    } else {
        BrokerError::Unreachable { endpoint, cause }
    }
}
