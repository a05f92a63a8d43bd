//! The supervised actor system of the notification scheduler.
//!
//! ```text
//!   SupervisorActor ── restarts children with fresh state, capped backoff
//!     ├─ PublisherActor  RabbitMQ connection, confirm-mode channel
//!     ├─ SchedulerActor  earliest deadline, one timer, delivery rounds
//!     └─ ListenerActor   dedicated LISTEN connection, pings
//! ```
//!
//! This crate holds the behaviour; the service crate supplies the I/O through
//! the traits in [`ports`] (PostgreSQL and RabbitMQ adapters), so every decision
//! here can be tested against in-memory fakes.

pub mod backoff;
pub mod error_chain;
pub mod flow;
pub mod listener;
pub mod liveness;
pub mod metrics;
pub mod model;
pub mod ports;
pub mod publisher;
pub mod readiness;
pub mod scheduler;
pub mod slot;
pub mod supervisor;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod trace_context;
