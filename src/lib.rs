//! The notification scheduler service: adapters (PostgreSQL, RabbitMQ, HTTP,
//! telemetry) around the actor system of the `actors` crate, and the binary's
//! command line.
//!
//! - [`bench`]: the benchmark harness (`notification-scheduler bench`).
//! - [`config`]: every setting, its flag, variable and default.
//! - [`cli`]: subcommands, start-up and exit codes.
//! - [`db`]: connections, the pool, migrations and the daemon's queries.
//! - [`broker`]: RabbitMQ connections, the publisher and the wire format.
//! - [`daemon`]: the delivery daemon's wiring and lifecycle.
//! - [`http`]: the health endpoints and the games API.
//! - [`logging`]: log output.
//! - [`shutdown`]: signal handling.

pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod http;
pub mod logging;
pub mod shutdown;
