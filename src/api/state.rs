//! What every handler of the games API shares.

use deadpool_postgres::{Object, Pool};

use super::error::ApiError;
use crate::config::DatabaseUrl;
use crate::games::Defaults;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: Pool,
    pub database_url: DatabaseUrl,
    /// How games are scheduled when they do not say.
    pub defaults: Defaults,
}

impl ApiState {
    pub(super) async fn connection(&self) -> Result<Object, ApiError> {
        self.pool
            .get()
            .await
            .map_err(|err| ApiError::unavailable(&crate::db::pool_error(&self.database_url, err)))
    }
}
