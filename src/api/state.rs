//! What every handler of the API shares.

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Object, Pool};

use super::error::ApiError;
use crate::config::DatabaseUrl;
use crate::games::Defaults;
use crate::messages::allowed::AllowedRoutes;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: Pool,
    pub database_url: DatabaseUrl,
    /// How games are scheduled when they do not say.
    pub defaults: Defaults,
    /// What scheduled messages may be and where they may go.
    pub messages: MessageSettings,
    /// The operator console's settings.
    pub console: ConsoleSettings,
}

/// The operator console's settings.
#[derive(Debug, Clone, Default)]
pub struct ConsoleSettings {
    /// Link to a trace viewer: a URL with `{trace_id}` where the trace id goes
    /// (CONSOLE_TRACE_URL).
    pub trace_url: Option<Arc<str>>,
}

/// The limits of scheduled messages.
#[derive(Debug, Clone)]
pub struct MessageSettings {
    /// The exchange of messages that name none (the daemon's RABBITMQ_EXCHANGE).
    pub default_exchange: Arc<str>,
    /// Where messages may go.
    pub allowed: Arc<AllowedRoutes>,
    /// Largest payload, counted on its bytes as sent.
    pub max_payload_bytes: usize,
    /// How far ahead `deliver_at` may be.
    pub horizon: chrono::Duration,
    /// How long a change or cancel waits for a daemon's claim of the row
    /// before answering that the message is being delivered. Claims last
    /// milliseconds unless the broker is slow to confirm.
    pub lock_timeout: Duration,
}

impl MessageSettings {
    /// The request body limit of the message routes: the largest payload plus
    /// the other fields' room that every route has.
    pub fn body_limit(&self) -> usize {
        self.max_payload_bytes + super::bodies::MAX_BODY_BYTES
    }
}

impl ApiState {
    pub(crate) async fn connection(&self) -> Result<Object, ApiError> {
        self.pool
            .get()
            .await
            .map_err(|err| ApiError::unavailable(&crate::db::pool_error(&self.database_url, err)))
    }
}
