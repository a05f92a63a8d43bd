//! The notification scheduler service: adapters (PostgreSQL, RabbitMQ, HTTP,
//! telemetry) around the actor system of the `actors` crate, and the binary's
//! command line. Its parts, one folder or file each:
//!
//! - [`config`]: every setting, its flag, variable and default.
//! - [`cli`]: subcommands, start-up and exit codes; `healthcheck`'s probe, `watch`
//!   and `dead-letters`.
//! - [`telemetry`]: logs, OpenTelemetry traces and metrics.
//! - [`shutdown`]: SIGTERM and SIGINT.
//! - [`db`]: PostgreSQL adapters: connections, the pool, migrations, the
//!   daemon's store and its LISTEN connection.
//! - [`broker`]: RabbitMQ adapters: connections, the publisher, confirms, the
//!   wire format, a consumer.
//! - [`daemon`]: the delivery daemon: its wiring, health endpoints and maintenance.
//! - [`api`]: the API: server, routes of games and messages, bodies, auth.
//! - [`console`]: the operator console the API serves at `/console`.
//! - [`games`]: the games domain: games and their schedules.
//! - [`messages`]: the scheduled-messages domain: rows of `scheduled_message`
//!   as the API writes them, and the allow-list of where it may schedule them.
//! - [`kinds`]: the kinds of scheduled event (reminders, status transitions,
//!   scheduled messages), each declared once.
//! - [`dead_letters`]: events the broker refused on every attempt: list, retry, discard.
//!
//! The benchmark is a workspace member of its own (`bench/`), outside this binary.

pub mod api;
pub mod broker;
pub mod cli;
pub mod config;
pub mod console;
pub mod daemon;
pub mod db;
pub mod dead_letters;
pub mod games;
pub mod kinds;
pub mod messages;
pub mod shutdown;
pub mod telemetry;
