//! The API's server (axum): the route table, the OpenAPI document,
//! readiness.
//!
//! `/games`, `/schedule`, `/messages` and `/dead-letters` need a bearer token;
//! `/openapi.json`, `/healthz` and `/readyz` do not. The operator console
//! (`/console`) takes the same token through its login form.

use std::time::Duration;

use axum::extract::{DefaultBodyLimit, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Extension, Json, Router, middleware};
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi};

use super::auth::{self, BearerToken};
use super::error::ApiError;
use super::state::ApiState;
use super::{bodies, dead_letters, messages, request_log, routes};

/// The OpenAPI document, generated from the handlers and types.
#[derive(OpenApi)]
#[openapi(
    info(
        title = "notification-scheduler API",
        description = "Games and their reminder schedules: every change to a game keeps its reminders in step, in one transaction. Scheduled messages: any message published to RabbitMQ at its time, cancellable and movable until then."
    ),
    paths(
        routes::create_game,
        routes::list_games,
        routes::get_game,
        routes::update_game,
        routes::delete_game,
        routes::upcoming,
        messages::create_message,
        messages::list_messages,
        messages::get_message,
        messages::update_message,
        messages::cancel_message,
        dead_letters::list_dead_letters,
        dead_letters::retry_dead_letter,
        dead_letters::retry_all_dead_letters,
        dead_letters::discard_dead_letter
    ),
    modifiers(&BearerAuth),
    tags(
        (name = "games", description = "Games and their reminders"),
        (name = "schedule", description = "The delivery schedule across games"),
        (name = "messages", description = "Scheduled messages: any payload, exchange and routing key, published at deliver_at"),
        (name = "dead letters", description = "Events the broker refused on every attempt: list, retry, discard")
    )
)]
pub struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
    }
}

/// Every route of the API. `token: None` serves without authentication (the
/// insecure development mode).
pub fn router(state: ApiState, token: Option<BearerToken>) -> Router {
    let body_limit = state.messages.body_limit();
    // Payloads may be larger than any other body; only these routes take them.
    let messages = Router::new()
        .route(
            "/messages",
            get(messages::list_messages).post(messages::create_message),
        )
        .route(
            "/messages/{id}",
            get(messages::get_message)
                .patch(messages::update_message)
                .delete(messages::cancel_message),
        )
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(Extension(bodies::BodyLimit(body_limit)));
    let protected = Router::new()
        .route("/games", get(routes::list_games).post(routes::create_game))
        .route(
            "/games/{id}",
            get(routes::get_game)
                .patch(routes::update_game)
                .delete(routes::delete_game),
        )
        .route("/schedule/upcoming", get(routes::upcoming))
        .route("/dead-letters", get(dead_letters::list_dead_letters))
        .route(
            "/dead-letters/retry",
            post(dead_letters::retry_all_dead_letters),
        )
        .route(
            "/dead-letters/{id}/retry",
            post(dead_letters::retry_dead_letter),
        )
        .route(
            "/dead-letters/{id}/discard",
            post(dead_letters::discard_dead_letter),
        )
        .merge(messages)
        .route_layer(middleware::from_fn_with_state(
            token.clone(),
            auth::require_token,
        ));
    Router::new()
        .merge(protected)
        .merge(crate::console::router(state.clone(), token.clone()))
        .route("/openapi.json", get(|| async { Json(ApiDoc::openapi()) }))
        .route(
            "/healthz",
            get(|| async { Json(serde_json::json!({ "status": "alive" })) }),
        )
        .route("/readyz", get(ready))
        .fallback(|| async {
            ApiError::new(StatusCode::NOT_FOUND, "not_found", "no such endpoint")
        })
        .method_not_allowed_fallback(|| async {
            ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "method not allowed on this endpoint",
            )
        })
        .layer(DefaultBodyLimit::max(bodies::MAX_BODY_BYTES))
        .layer(middleware::from_fn(request_log::record))
        .with_state(state)
}

/// 200 when the database answers within a second, 503 otherwise.
async fn ready(State(state): State<ApiState>) -> impl IntoResponse {
    let check = async {
        let client = state.connection().await.map_err(|err| err.body.message)?;
        client
            .simple_query("SELECT 1")
            .await
            .map_err(|err| crate::db::describe(&err))?;
        Ok::<(), String>(())
    };
    match tokio::time::timeout(Duration::from_secs(1), check).await {
        Ok(Ok(())) => (StatusCode::OK, Json(serde_json::json!({ "ready": true }))),
        Ok(Err(detail)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "ready": false, "database": { "ready": false, "detail": detail } }),
            ),
        ),
        Err(_) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(
                serde_json::json!({ "ready": false, "database": { "ready": false, "detail": "no answer within 1s" } }),
            ),
        ),
    }
}
