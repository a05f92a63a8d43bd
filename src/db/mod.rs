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
use tokio_postgres::error::SqlState;
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
    /// The server accepts no writes: a standby not yet promoted (or a
    /// read-only session). Claims, their outcomes and LISTEN need the primary.
    #[error("{context}: the server is read-only (a standby not yet promoted?); {READ_ONLY_ADVICE}")]
    ReadOnly {
        context: String,
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

/// How to configure a daemon that met a read-only server.
const READ_ONLY_ADVICE: &str = "DATABASE_URL must name the primary, or list the primary and \
    its standbys (postgresql://user@host1:5432,host2:5432/db), which are tried in order for \
    one that accepts writes (target_session_attrs=read-write, the default with several hosts)";

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
/// down), is read-only (a standby about to be promoted) or closed the
/// connection is waited for with frequent reconnects.
impl From<DbError> for actors::ports::PortError {
    fn from(err: DbError) -> Self {
        let waiting_for_the_server = match &err {
            DbError::Unreachable { .. } | DbError::Refused { .. } | DbError::ReadOnly { .. } => {
                true
            }
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
    /// Wraps a statement error with what was being attempted. A write (or
    /// LISTEN) refused by a read-only server becomes [`DbError::ReadOnly`].
    pub fn query(context: &'static str, err: tokio_postgres::Error) -> Self {
        if err.code() == Some(&SqlState::READ_ONLY_SQL_TRANSACTION) {
            return Self::ReadOnly {
                context: context.to_owned(),
                cause: Cause::driver(err),
            };
        }
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
        | Self::ReadOnly { cause, .. }
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

/// `host:port` of every server in the connection settings, in the order
/// they are tried (a failed attempt does not say which one answered last).
pub fn endpoint(config: &tokio_postgres::Config) -> String {
    let ports = config.get_ports();
    let endpoints: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(index, host)| {
            let host = match host {
                Host::Tcp(host) => host.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            // One port for every host, or one each (as the driver reads them).
            let port = ports.get(index).or(ports.first()).copied().unwrap_or(5432);
            format!("{host}:{port}")
        })
        .collect();
    if endpoints.is_empty() {
        return "localhost:5432".to_owned();
    }
    endpoints.join(", ")
}

/// Bound on one connection attempt: the driver tries the hosts one after
/// another, each within `per_host` (the URL's connect timeout).
fn connect_bound(config: &tokio_postgres::Config, per_host: Duration) -> Duration {
    per_host * u32::try_from(config.get_hosts().len().max(1)).unwrap_or(u32::MAX)
}

/// Whether the driver turned the connection down because the server is
/// read-only while the URL asks for a read-write session. The driver reports
/// it only as this I/O error (after the last host failed).
fn refused_as_read_only(err: &tokio_postgres::Error) -> bool {
    std::error::Error::source(err)
        .and_then(|source| source.downcast_ref::<std::io::Error>())
        .is_some_and(|io| {
            io.kind() == std::io::ErrorKind::PermissionDenied
                && io.to_string() == "database does not allow writes"
        })
}

/// Classifies a connection failure: refused by the server, turned down as
/// read-only, or not reached at all.
pub fn connect_error(config: &tokio_postgres::Config, err: tokio_postgres::Error) -> DbError {
    let endpoint = endpoint(config);
    if refused_as_read_only(&err) {
        return DbError::ReadOnly {
            context: format!("connecting to PostgreSQL at {endpoint}"),
            cause: Cause::Driver {
                reason: "no server accepted writes".to_owned(),
                error: err,
            },
        };
    }
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
    let bound = connect_bound(&config, timeout);
    let (client, connection) = match tokio::time::timeout(bound, config.connect(NoTls)).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(err)) => return Err(connect_error(&config, err)),
        Err(_) => return Err(connect_timed_out(&config, bound)),
    };
    tokio::spawn(async move {
        if let Err(err) = connection.await {
            tracing::debug!(error = %err, "PostgreSQL connection closed");
        }
    });
    Ok(client)
}

/// Creates a pool of at most `size` connections. Connections are made lazily;
/// a connection that cannot be made within `timeout` per host fails the
/// checkout.
pub fn pool(url: &DatabaseUrl, size: usize, timeout: Duration) -> Pool {
    let mut config = url.config().clone();
    config.connect_timeout(timeout);
    let timeout = connect_bound(&config, timeout);
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

#[cfg(test)]
mod tests {
    use super::endpoint;

    #[test]
    fn an_endpoint_names_every_host_with_its_port() {
        let config: tokio_postgres::Config = "postgresql://u:secret@pg1:5432,pg2:5433/db"
            .parse()
            .unwrap();
        assert_eq!(endpoint(&config), "pg1:5432, pg2:5433");
        let config: tokio_postgres::Config = "host=pg1,pg2 port=6432 user=u".parse().unwrap();
        assert_eq!(endpoint(&config), "pg1:6432, pg2:6432");
        let config: tokio_postgres::Config = "postgresql://u@db/app".parse().unwrap();
        assert_eq!(endpoint(&config), "db:5432");
    }
}
