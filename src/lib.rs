//! The notification scheduler service: adapters (PostgreSQL, RabbitMQ, HTTP,
//! telemetry) around the actor system of the `actors` crate, and the binary's
//! command line.
//!
//! - [`api`]: the games API's wiring and lifecycle.
//! - [`bench`]: the benchmark harness (`notification-scheduler bench`).
//! - [`config`]: every setting, its flag, variable and default.
//! - [`cli`]: subcommands, start-up and exit codes.
//! - [`games`]: games and their schedules, as the API reads and writes them.
//! - [`db`]: connections, the pool, migrations and the daemon's queries.
//! - [`broker`]: RabbitMQ connections, the publisher and the wire format.
//! - [`daemon`]: the delivery daemon's wiring and lifecycle.
//! - [`http`]: the health endpoints and the games API.
//! - [`maintenance`]: retention of sent rows, schedule observations.
//! - [`schedule`]: keeping a game's reminders in step with the game.
//! - [`shutdown`]: signal handling.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics.
//! - [`watch`]: printing delivered events (`watch` subcommand).

pub mod api;
pub mod bench;
pub mod broker;
pub mod cli;
pub mod config;
pub mod daemon;
pub mod db;
pub mod games;
pub mod http;
pub mod maintenance;
pub mod schedule;
pub mod shutdown;
pub mod telemetry;
pub mod watch;
