//! The daemon's health endpoints.
//!
//! - `GET /healthz`: the process is up and serving (liveness).
//! - `GET /readyz`: 200 when the database, the LISTEN connection and the broker
//!   all work, else 503; the JSON body says which does not and why.

use std::net::SocketAddr;

use actors::readiness::{ComponentStatus, Readiness};
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

/// Routes of the health server.
pub fn router(readiness: Readiness) -> Router {
    Router::new()
        .route("/healthz", get(alive))
        .route("/readyz", get(ready))
        .with_state(readiness)
}

/// Binds `address`; fails with a message naming it.
pub async fn bind(address: SocketAddr) -> anyhow::Result<tokio::net::TcpListener> {
    tokio::net::TcpListener::bind(address)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {address} for health checks: {err}"))
}

async fn alive() -> Json<serde_json::Value> {
    Json(serde_json::json!({ "status": "alive" }))
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

async fn ready(State(readiness): State<Readiness>) -> impl IntoResponse {
    let report = readiness.report();
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
