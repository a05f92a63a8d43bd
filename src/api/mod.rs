//! The API (`notification-scheduler api`): games and their reminder
//! schedules, and scheduled messages, over HTTP, served until SIGTERM or
//! SIGINT.
//!
//! - [`server`]: the route table, OpenAPI document, readiness.
//! - `state`: what every handler shares (the pool, the defaults, the message limits).
//! - `routes`: the handlers of `/games` and `/schedule`.
//! - `messages`: the handlers of `/messages`.
//! - `bodies`: request extraction and validation.
//! - `auth`: the bearer token.
//! - `error`: the error body every failure answers with.
//! - `request_log`: one span and log line per request.

pub(crate) mod auth;
mod bodies;
mod dead_letters;
pub(crate) mod error;
pub(crate) mod messages;
mod request_log;
mod routes;
pub mod server;
pub(crate) mod state;

use std::sync::Arc;

pub use auth::BearerToken;
pub use error::{ApiError, ErrorBody};
use secrecy::ExposeSecret;
pub use server::router;
pub use state::{ApiState, ConsoleSettings, MessageSettings};

use crate::config::ApiArgs;
use crate::db::{self, migrate};
use crate::games::Defaults;
use crate::games::schedule::transitions::TransitionSettings;
use crate::messages::allowed::AllowedRoutes;
use crate::shutdown;

/// How long a change or cancel of a message waits for a daemon's claim of its
/// row: claims last milliseconds, so a longer wait means the broker is slow to
/// confirm; answering 409 then beats holding the request for up to the
/// daemon's CLAIM_TIMEOUT.
const MESSAGE_LOCK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Runs the API until a shutdown signal, then lets requests in progress finish
/// within the grace period.
pub async fn run(args: ApiArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let mut client = db::connect(url, args.database.database_connect_timeout).await?;
    if args.migrate {
        migrate::run(&mut client).await?;
    } else {
        migrate::verify(&client).await?;
    }
    drop(client);
    let token = match (&args.api_token, args.insecure_no_auth) {
        (Some(token), _) => Some(BearerToken::new(token.expose_secret())),
        (None, _) => {
            tracing::error!(
                "INSECURE: the API is serving WITHOUT AUTHENTICATION (--insecure-no-auth); \
                 anyone who can reach {} can create, change and delete games and schedule messages",
                args.api_addr
            );
            None
        }
    };
    let allowed = args
        .message_allowed_routes
        .clone()
        .unwrap_or_else(|| AllowedRoutes::any_key_on(&args.rabbitmq_exchange));
    let state = ApiState {
        pool: db::pool(url, args.pool_size, args.database.database_connect_timeout),
        database_url: url.clone(),
        defaults: Defaults {
            reminder_minutes: Arc::from(args.default_reminder_minutes.0.as_slice()),
            transitions: TransitionSettings {
                default_duration_minutes: i32::try_from(args.default_expected_duration_minutes)
                    .expect("the setting is bounded to a week of minutes"),
                archive_delay: args.archive_delay.map(|delay| {
                    chrono::Duration::from_std(delay).expect("the setting is bounded")
                }),
            },
        },
        console: ConsoleSettings {
            trace_url: args.console_trace_url.clone(),
        },
        messages: MessageSettings {
            default_exchange: Arc::from(args.rabbitmq_exchange.as_str()),
            allowed: Arc::new(allowed.clone()),
            max_payload_bytes: args.message_max_payload_bytes,
            horizon: chrono::Duration::from_std(args.message_horizon)
                .expect("the setting is bounded"),
            lock_timeout: MESSAGE_LOCK_TIMEOUT,
        },
    };
    let listener = tokio::net::TcpListener::bind(args.api_addr)
        .await
        .map_err(|err| anyhow::anyhow!("cannot listen on {} for the API: {err}", args.api_addr))?;
    tracing::info!(
        address = %listener.local_addr()?,
        database = url.masked(),
        default_reminder_minutes = ?args.default_reminder_minutes.0,
        message_allowed_routes = %allowed,
        "API listening"
    );
    let mut signal = shutdown::Signal::install()?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = axum::serve(listener, router(state, token)).with_graceful_shutdown(async {
        let _ = stopped.await;
    });
    let mut server = std::pin::pin!(server.into_future());
    tokio::select! {
        result = &mut server => return result.map_err(Into::into),
        () = signal.received() => {}
    }
    let _ = stop.send(());
    if tokio::time::timeout(args.shutdown_grace, server)
        .await
        .is_err()
    {
        tracing::warn!(grace = ?args.shutdown_grace, "requests still running after the grace period were cut off");
    }
    tracing::info!("API stopped");
    Ok(())
}
