//! What every handler of the games API shares.

use std::sync::Arc;

use deadpool_postgres::{Object, Pool};

use super::error::ApiError;
use crate::config::DatabaseUrl;

/// What every handler needs.
#[derive(Clone)]
pub struct ApiState {
    pub pool: Pool,
    pub database_url: DatabaseUrl,
    /// Minutes for games that have none of their own.
    pub default_minutes: Arc<[i32]>,
}

impl ApiState {
    pub(super) async fn connection(&self) -> Result<Object, ApiError> {
        self.pool
            .get()
            .await
            .map_err(|err| ApiError::unavailable(&crate::db::pool_error(&self.database_url, err)))
    }
}
