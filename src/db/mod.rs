//! PostgreSQL: connections, the pool, migrations and the daemon's queries.
//!
//! Errors leaving this module name the server by host and port and say what
//! went wrong in one line, instead of a raw driver error chain.

pub mod kind_sql;
pub mod listen;
pub mod migrate;
pub mod schedule_store;

use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, PoolError, RecyclingMethod, Runtime};
use tokio_postgres::config::Host;
use tokio_postgres::{Client, NoTls};

use crate::config::DatabaseUrl;

/// A failure talking to PostgreSQL: what was attempted, with its [`Cause`] as
/// the source. Shown with its chain (`anyhow`'s `{:#}`, `actors::error_chain`),
/// it reads as one line for an operator.
#[derive(Debug, thiserror::Error)]
pub enum DbError {
    /// No TCP (or socket) connection could be made.
    #[error("cannot reach PostgreSQL at {endpoint}")]
    Unreachable {
        endpoint: String,
        #[source]
        cause: Cause,
    },
    /// The server answered but refused the session (authentication, missing database).
    #[error("PostgreSQL at {endpoint} refused the connection")]
    Refused {
        endpoint: String,
        #[source]
        cause: Cause,
    },
    /// A statement failed.
    #[error("{context}")]
    Query {
        context: &'static str,
        #[source]
        cause: Cause,
    },
}

/// What lies under a [`DbError`].
#[derive(Debug, thiserror::Error)]
pub enum Cause {
    /// The driver's error, shown as `reason` (the server's message and
    /// SQLSTATE, or the driver's own message), and kept whole for callers that
    /// inspect it.
    #[error("{reason}")]
    Driver {
        reason: String,
        error: tokio_postgres::Error,
    },
    /// A bound that ran out, or a failure the driver did not report.
    #[error("{0}")]
    Other(String),
}

impl Cause {
    /// A driver error shown as the server's message and SQLSTATE.
    pub fn driver(error: tokio_postgres::Error) -> Self {
        Self::Driver {
            reason: describe(&error),
            error,
        }
    }
}

/// Every database failure is worth retrying: the server may come back. A
/// server that cannot be reached, refuses sessions (starting up, shutting
/// down) or closed the connection is waited for with frequent reconnects.
impl From<DbError> for actors::ports::PortError {
    fn from(err: DbError) -> Self {
        let waiting_for_the_server = match &err {
            DbError::Unreachable { .. } | DbError::Refused { .. } => true,
            DbError::Query { .. } => err
                .driver_error()
                .is_some_and(tokio_postgres::Error::is_closed),
        };
        if waiting_for_the_server {
            Self::unavailable(err)
        } else {
            Self::transient(err)
        }
    }
}

impl DbError {
    /// Wraps a statement error with what was being attempted.
    pub fn query(context: &'static str, err: tokio_postgres::Error) -> Self {
        Self::Query {
            context,
            cause: Cause::driver(err),
        }
    }

    /// A statement that got no answer within `bound`.
    pub fn timed_out(context: &'static str, bound: Duration) -> Self {
        Self::Query {
            context,
            cause: Cause::Other(format!("no answer within {bound:?}")),
        }
    }

    /// The driver's error underneath, if there is one.
    pub fn driver_error(&self) -> Option<&tokio_postgres::Error> {
        let (Self::Unreachable { cause, .. }
        | Self::Refused { cause, .. }
        | Self::Query { cause, .. }) = self;
        match cause {
            Cause::Driver { error, .. } => Some(error),
            Cause::Other(_) => None,
        }
    }
}

/// The server's own message for database errors, the driver's otherwise.
pub fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => match std::error::Error::source(err) {
            Some(source) => format!("{err}: {source}"),
            None => err.to_string(),
        },
    }
}

/// `host:port` of the first server in the connection settings.
pub fn endpoint(config: &tokio_postgres::Config) -> String {
    let host = match config.get_hosts().first() {
        Some(Host::Tcp(host)) => host.clone(),
        Some(Host::Unix(path)) => path.display().to_string(),
        None => "localhost".to_owned(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    format!("{host}:{port}")
}

/// Classifies a connection failure: refused by the server, or not reached at all.
pub fn connect_error(config: &tokio_postgres::Config, err: tokio_postgres::Error) -> DbError {
    let endpoint = endpoint(config);
    match err.as_db_error() {
        Some(db) => DbError::Refused {
            endpoint,
            cause: Cause::Driver {
                reason: db.message().to_owned(),
                error: err,
            },
        },
        None => DbError::Unreachable {
            endpoint,
            cause: Cause::Driver {
                reason: std::error::Error::source(&err)
                    .map_or_else(|| err.to_string(), ToString::to_string),
                error: err,
            },
        },
    }
}

/// A connection attempt that got no answer within `bound`.
pub fn connect_timed_out(config: &tokio_postgres::Config, bound: Duration) -> DbError {
    DbError::Unreachable {
        endpoint: endpoint(config),
        cause: Cause::Other(format!("no answer within {bound:?}")),
    }
}

/// Opens one connection outside any pool and drives it on a background task.
///
/// Used for work that needs a session of its own: migrations (advisory lock)
/// and the daemon's LISTEN connection.
pub async fn connect(url: &DatabaseUrl, timeout: Duration) -> Result<Client, DbError> {
    let mut config = url.config().clone();
    config.connect_timeout(timeout);
    let (client, connection) = match tokio::time::timeout(timeout, config.connect(NoTls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => return Err(connect_error(&config, err)),
        Err(_) => return Err(connect_timed_out(&config, timeout)),
    };
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Creates a pool of at most `size` connections. Connections are made lazily;
/// a connection that cannot be made within `timeout` fails the checkout.
pub fn pool(url: &DatabaseUrl, size: usize, timeout: Duration) -> Pool {
    let mut config = url.config().clone();
    config.connect_timeout(timeout);
    name_connections(&mut config, "notification-scheduler");
    let manager = Manager::from_config(
        config,
        NoTls,
        ManagerConfig {
            recycling_method: RecyclingMethod::Fast,
        },
    );
    Pool::builder(manager)
        .max_size(size)
        .runtime(Runtime::Tokio1)
        .create_timeout(Some(timeout))
        .wait_timeout(Some(timeout))
        .build()
        .expect("a pool with a runtime and timeouts always builds")
}

/// Names the connections in `pg_stat_activity`, unless the URL already does.
pub fn name_connections(config: &mut tokio_postgres::Config, name: &str) {
    if config.get_application_name().is_none() {
        config.application_name(name);
    }
}

/// Describes a pool checkout failure like a connection failure.
pub fn pool_error(url: &DatabaseUrl, err: PoolError) -> DbError {
    let config = url.config();
    match err {
        PoolError::Backend(err) => connect_error(config, err),
        PoolError::Timeout(_) => DbError::Unreachable {
            endpoint: endpoint(config),
            cause: Cause::Other("timed out waiting for a connection".to_owned()),
        },
        other => DbError::Unreachable {
            endpoint: endpoint(config),
            cause: Cause::Other(other.to_string()),
        },
    }
}
