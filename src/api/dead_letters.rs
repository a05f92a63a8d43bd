//! The dead-letter endpoints: list the events the broker refused on every
//! attempt, retry them (back to pending, delivered at once) or discard them
//! (done, never delivered). The same operations as the `dead-letters`
//! subcommand (`crate::dead_letters`).

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::bodies::{JsonBody, PathId, QueryParams, encode_cursor};
use super::error::{ApiError, ErrorBody};
use super::state::ApiState;
use crate::dead_letters::{self, After, DeadLetter};
use crate::kinds::{self, Kind};

/// One dead letter.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterBody {
    /// reminder, status_transition or scheduled_message.
    pub kind: &'static str,
    pub id: Uuid,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    pub dead_lettered_at: DateTime<Utc>,
    /// Attempts the broker refused.
    pub attempts: i32,
    /// Why the broker refused the last attempt.
    pub last_error: Option<String>,
}

impl From<DeadLetter> for DeadLetterBody {
    fn from(letter: DeadLetter) -> Self {
        Self {
            kind: letter.kind,
            id: letter.id,
            due_at: letter.due_at,
            dead_lettered_at: letter.dead_lettered_at,
            attempts: letter.attempts,
            last_error: letter.last_error,
        }
    }
}

/// A page of dead letters, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeadLetterPage {
    pub dead_letters: Vec<DeadLetterBody>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// Which dead letters to retry at once.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryAll {
    /// Only this kind; every kind when absent.
    #[serde(default)]
    pub kind: Option<String>,
}

/// What a retry or discard changed.
#[derive(Debug, Serialize, ToSchema)]
pub struct Changed {
    /// The dead letters changed, by kind and id.
    pub changed: Vec<ChangedLetter>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ChangedLetter {
    pub kind: &'static str,
    pub id: Uuid,
}

fn kind_named(raw: &str, field: &str) -> Result<&'static Kind, ApiError> {
    crate::config::parse::kind(raw).map_err(|reason| {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_parameter", reason).field(field)
    })
}

fn changed(letters: Vec<(&'static str, Uuid)>) -> Changed {
    Changed {
        changed: letters
            .into_iter()
            .map(|(kind, id)| ChangedLetter { kind, id })
            .collect(),
    }
}

/// Dead letters of every kind (or one), oldest first, a page at a time.
#[utoipa::path(
    get, path = "/dead-letters", tag = "dead letters",
    params(
        ("kind" = Option<String>, Query, description = "reminder, status_transition or scheduled_message"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = DeadLetterPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_dead_letters(
    State(state): State<ApiState>,
    params: QueryParams,
) -> Result<Json<DeadLetterPage>, ApiError> {
    let params = params.only(&["kind", "limit", "cursor"])?;
    let limit = usize::try_from(params.limit(50, 200)?).unwrap_or(50);
    let kind = params
        .get("kind")
        .map(|raw| kind_named(raw, "kind"))
        .transpose()?;
    let after = params.cursor()?.map(|(dead_lettered_at, id)| After {
        dead_lettered_at,
        id,
    });
    let client = state.connection().await?;
    let mut found = dead_letters::list(&**client, &dead_letters::selected(kind), limit + 1, after)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    let next_cursor = if found.len() > limit {
        found.truncate(limit);
        found
            .last()
            .map(|letter| encode_cursor(letter.dead_lettered_at, letter.id))
    } else {
        None
    };
    Ok(Json(DeadLetterPage {
        dead_letters: found.into_iter().map(DeadLetterBody::from).collect(),
        next_cursor,
    }))
}

/// Put one dead letter back to pending: it is delivered at once, with a
/// fresh count of attempts.
#[utoipa::path(
    post, path = "/dead-letters/{id}/retry", tag = "dead letters",
    params(("id" = Uuid, Path, description = "The dead letter's id")),
    responses((status = 200, body = Changed), (status = 401, body = ErrorBody), (status = 404, description = "Not a dead letter", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn retry_dead_letter(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<Changed>, ApiError> {
    let client = state.connection().await?;
    let retried = dead_letters::retry(&**client, &kinds::ALL, Some(&[id]))
        .await
        .map_err(|err| ApiError::internal(&err))?;
    if retried.is_empty() {
        return Err(ApiError::not_found("dead letter"));
    }
    Ok(Json(changed(retried)))
}

/// Put every dead letter (of one kind, if given) back to pending.
#[utoipa::path(
    post, path = "/dead-letters/retry", tag = "dead letters", request_body = RetryAll,
    responses((status = 200, body = Changed), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 422, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn retry_all_dead_letters(
    State(state): State<ApiState>,
    JsonBody(body): JsonBody<RetryAll>,
) -> Result<Json<Changed>, ApiError> {
    let kind = body
        .kind
        .as_deref()
        .map(|raw| kind_named(raw, "kind"))
        .transpose()?;
    let client = state.connection().await?;
    let retried = dead_letters::retry(&**client, &dead_letters::selected(kind), None)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    Ok(Json(changed(retried)))
}

/// Give up on a dead letter: recorded as done (outcome `discarded`), never
/// delivered.
#[utoipa::path(
    post, path = "/dead-letters/{id}/discard", tag = "dead letters",
    params(("id" = Uuid, Path, description = "The dead letter's id")),
    responses((status = 200, body = Changed), (status = 401, body = ErrorBody), (status = 404, description = "Not a dead letter", body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn discard_dead_letter(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<Changed>, ApiError> {
    let client = state.connection().await?;
    let discarded = dead_letters::discard(&**client, &[id])
        .await
        .map_err(|err| ApiError::internal(&err))?;
    if discarded.is_empty() {
        return Err(ApiError::not_found("dead letter"));
    }
    Ok(Json(changed(discarded)))
}
