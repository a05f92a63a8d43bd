//! HTTP servers: the daemon's health endpoints and the games API.

pub mod api;
pub mod health;
pub mod probe;
pub mod request_log;
