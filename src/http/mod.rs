//! HTTP servers: the daemon's health endpoints and the games API.

pub mod health;
