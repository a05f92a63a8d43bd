//! The daemon's health endpoints.
//!
//! - `GET /healthz`: liveness. 200 while delivery makes progress; 503, with
//!   the reason, when it has made none for `LIVENESS_STALL_TIMEOUT` while
//!   events are due and the LISTEN connection and the broker answer (so a
//!   restart is what can help), or when a round has been stuck that long.
//! - `GET /readyz`: 200 when the database, the LISTEN connection and the broker
//!   all work, else 503; the JSON body says which does not and why.

use std::net::SocketAddr;

use std::time::Duration;

use actors::liveness::Liveness;
use actors::readiness::{ComponentStatus, Readiness};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// What the health endpoints read.
#[derive(Clone)]
pub struct Health {
    pub readiness: Readiness,
    pub liveness: Liveness,
    /// How long delivery may make no progress before liveness fails.
    pub stall_timeout: Duration,
}

/// Routes of the health server.
pub fn router(health: Health) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(health)
}

/// Binds `address`; fails with a message naming it.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {address} for health checks: {err}"))
}

async fn alive(State(health): State<Health>) -> impl IntoResponse {
    match stalled(&health) {
        None => (
            StatusCode::OK,
            Json(serde_json::json!({ "status": "alive" })),
        ),
        Some(reason) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(serde_json::json!({ "status": "stalled", "reason": reason })),
        ),
    }
}

/// Why delivery counts as stalled, if it does.
fn stalled(health: &Health) -> Option<String> {
    let bound = health.stall_timeout;
    if let Some(stuck) = health.liveness.round_stuck_for()
        && stuck >= bound
    {
        return Some(format!(
            "a delivery round has made no progress for {}s (bound {}s)",
            stuck.as_secs(),
            bound.as_secs()
        ));
    }
    let stalled = health
        .liveness
        .stalled_for()
        .filter(|&for_| for_ >= bound)?;
    let report = health.readiness.report();
    // Waiting for a server that does not answer is readiness's business: a
    // restart would not bring it back.
    if !report.listener.ready || !report.broker.ready {
        return None;
    }
    let why = report
        .database
        .detail
        .map(|detail| format!("; last database error: {detail}"))
        .unwrap_or_default();
    Some(format!(
        "no delivery progress for {}s (bound {}s) while events are due, although \
         PostgreSQL and RabbitMQ answer{why}",
        stalled.as_secs(),
        bound.as_secs()
    ))
}

#[derive(Serialize)]
struct ComponentBody {
    ready: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

impl From<ComponentStatus> for ComponentBody {
    fn from(status: ComponentStatus) -> Self {
        Self {
            ready: status.ready,
            detail: status.detail,
        }
    }
}

#[derive(Serialize)]
struct ReadyBody {
    ready: bool,
    database: ComponentBody,
    listener: ComponentBody,
    broker: ComponentBody,
}

async fn ready(State(health): State<Health>) -> impl IntoResponse {
    let report = health.readiness.report();
    let ready = report.ready();
    let body = ReadyBody {
        ready,
        database: report.database.into(),
        listener: report.listener.into(),
        broker: report.broker.into(),
    };
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
