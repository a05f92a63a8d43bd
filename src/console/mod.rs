//! The operator console: the schedule seen and steered in a browser, served
//! by the API process at `/console` (docs/console.md).
//!
//! Server-rendered pages with one small script (live regions, confirmations);
//! templates, stylesheet and script are compiled into the binary, so nothing
//! is fetched from elsewhere at run time. Behind the API token: a login form
//! sets a signed session cookie; every action is a POST carrying the
//! session's CSRF token.
//!
//! - `session`: login, the session cookie, CSRF tokens.
//! - `pages`: the pages and actions.
//! - `queries`: what the pages read, per kind.

mod pages;
mod queries;
mod session;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::{get, post};

use crate::api::auth::BearerToken;
use crate::api::state::ApiState;
pub use session::Sessions;

/// What the console's handlers share.
#[derive(Clone)]
pub struct ConsoleState {
    api: ApiState,
    sessions: Sessions,
    token: Option<BearerToken>,
}

/// The console's routes, under `/console`. `token: None` serves it without a
/// login (the API's insecure development mode).
pub fn router(api: ApiState, token: Option<BearerToken>) -> Router<ApiState> {
    let state = ConsoleState {
        sessions: Sessions::new(token.as_ref()),
        api,
        token,
    };
    let behind_login = Router::new()
        .route("/console", get(pages::overview))
        .route("/console/upcoming", get(pages::upcoming))
        .route("/console/deliveries", get(pages::deliveries))
        .route("/console/dead-letters", get(pages::dead_letters_page))
        .route(
            "/console/dead-letters/retry",
            post(pages::retry_dead_letters),
        )
        .route(
            "/console/dead-letters/discard",
            post(pages::discard_dead_letters),
        )
        .route("/console/games/{id}", get(pages::game))
        .route("/console/messages/{id}", get(pages::message))
        .route("/console/messages/{id}/cancel", post(pages::cancel_message))
        .route(
            "/console/messages/{id}/reschedule",
            post(pages::reschedule_message),
        )
        .route("/console/logout", post(pages::logout))
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            session::require_session,
        ));
    Router::new()
        .merge(behind_login)
        .route("/console/login", get(pages::login_form).post(pages::login))
        .route("/console/assets/console.css", get(pages::stylesheet))
        .route("/console/assets/console.js", get(pages::script))
        .layer(middleware::from_fn(protective_headers))
        .with_state(state)
}

/// Every console response: only this origin's scripts and styles, never in a
/// frame, not cached (pages show live state and carry CSRF tokens).
async fn protective_headers(request: Request, next: Next) -> Response {
    let asset = request.uri().path().starts_with("/console/assets/");
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !asset {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}
