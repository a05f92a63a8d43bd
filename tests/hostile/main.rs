//! Hostile and malformed input: junk on the change-notification channel,
//! generated API requests (games and scheduled messages) judged by an
//! independent oracle of the documented rules, almost-right bearer tokens, and unusable settings or unreachable
//! servers at start.
//!
//! The property tests run one database and one in-process API per property,
//! driven from proptest's synchronous closure through a runtime of their own.
//! No regression files are written (`failure_persistence: None`); a failure
//! prints the shrunk input.

#[path = "../common/mod.rs"]
pub mod common;

mod api_cases;
mod api_harness;
mod api_messages;
mod api_oracle;
mod api_requests;
mod api_strategies;
mod auth;
mod notifications;
mod startup;
