//! The games endpoints: request and response bodies, validation, handlers.

use axum::Json;
use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::bodies::{JsonBody, PathId, QueryParams, encode_cursor, present, time_field};
use super::error::{ApiError, ErrorBody};
use super::request_log::traceparent;
use super::state::ApiState;
use crate::games::{self, Game, GameChanges, GameFilter, GameSchedule, NewGame};

/// Longest title, in characters.
const MAX_TITLE_CHARS: usize = 200;
/// Most reminders per game.
const MAX_REMINDERS: usize = 10;
/// Largest reminder offset and longest expected duration: one week, in minutes.
const MAX_REMINDER_MINUTES: i64 = 10_080;

/// A game to create.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateGame {
    /// 1 to 200 characters.
    pub title: String,
    /// RFC 3339 with an explicit offset, in the future, at most a year ahead.
    #[schema(value_type = String, format = DateTime, example = "2030-01-01T19:00:00+01:00")]
    pub scheduled_at: String,
    /// Distinct minutes before the start (0 to 10080, at most 10); the
    /// configured default when absent or null.
    #[serde(default)]
    pub reminder_minutes: Option<Vec<i64>>,
    /// How long the game is expected to last (1 to 10080 minutes): its
    /// COMPLETED status transition is due then. The configured default when
    /// absent or null.
    #[serde(default)]
    pub expected_duration_minutes: Option<i64>,
}

/// Changes to a game: any of its fields.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct UpdateGame {
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>)]
    pub title: Option<Option<String>>,
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub scheduled_at: Option<Option<String>>,
    /// `null` returns the game to the configured default minutes.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<Vec<i64>>)]
    pub reminder_minutes: Option<Option<Vec<i64>>>,
    /// `null` returns the game to the configured default duration.
    #[serde(default, deserialize_with = "present")]
    #[schema(value_type = Option<i64>)]
    pub expected_duration_minutes: Option<Option<i64>>,
}

/// What happened, or will happen, to one reminder of a game.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ReminderStatus {
    /// Scheduled, not yet sent.
    Pending,
    /// Published to the broker.
    Sent,
    /// Not published: the game had started when it came due.
    SkippedStale,
    /// Not scheduled: its time had passed when the game was saved.
    SkippedPast,
}

/// One reminder of a game.
#[derive(Debug, Serialize, ToSchema)]
pub struct ReminderBody {
    /// The schedule row (and message) id; absent for reminders never scheduled.
    pub id: Option<Uuid>,
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
    pub status: ReminderStatus,
    pub sent: bool,
    pub sent_at: Option<DateTime<Utc>>,
    pub skipped: bool,
}

/// One status transition of a game.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionBody {
    /// The schedule row (and message) id.
    pub id: Uuid,
    /// IN_PROGRESS, COMPLETED or ARCHIVED.
    pub target_status: String,
    pub transition_time: DateTime<Utc>,
    /// `pending` or `executed` (published to the broker).
    pub status: TransitionStatus,
    pub executed_at: Option<DateTime<Utc>>,
}

/// What happened, or will happen, to one status transition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum TransitionStatus {
    Pending,
    Executed,
}

/// A game with its schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct GameBody {
    pub id: Uuid,
    pub title: String,
    pub scheduled_at: DateTime<Utc>,
    /// The game's own minutes; null means the configured default applies.
    pub reminder_minutes: Option<Vec<i32>>,
    /// The minutes in effect.
    pub effective_reminder_minutes: Vec<i32>,
    /// The game's own expected duration; null means the configured default applies.
    pub expected_duration_minutes: Option<i32>,
    /// The expected duration in effect.
    pub effective_expected_duration_minutes: i32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// Every reminder, in time order.
    pub reminders: Vec<ReminderBody>,
    /// Every status transition, in time order.
    pub status_transitions: Vec<TransitionBody>,
}

/// A game without its schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct GameSummary {
    pub id: Uuid,
    pub title: String,
    pub scheduled_at: DateTime<Utc>,
    pub reminder_minutes: Option<Vec<i32>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// A page of games.
#[derive(Debug, Serialize, ToSchema)]
pub struct GamePage {
    pub games: Vec<GameSummary>,
    /// Pass as `cursor` for the next page; absent on the last page.
    pub next_cursor: Option<String>,
}

/// A pending reminder of any game.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpcomingBody {
    pub id: Uuid,
    pub game_id: Uuid,
    pub title: String,
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
}

/// The next reminders due.
#[derive(Debug, Serialize, ToSchema)]
pub struct UpcomingPage {
    pub reminders: Vec<UpcomingBody>,
}

// Hand-written rather than garde or validator: each rule answers with its own
// error code and message (the API's contract), which derive rules would not
// make shorter.
fn validate_title(title: &str) -> Result<String, ApiError> {
    let length = title.chars().count();
    if title.trim().is_empty() || length > MAX_TITLE_CHARS {
        return Err(ApiError::invalid(
            "invalid_title",
            "title",
            format!(
                "title must be 1 to {MAX_TITLE_CHARS} characters and not only spaces (got {length})"
            ),
        ));
    }
    if title.contains('\0') {
        // PostgreSQL text cannot hold it.
        return Err(ApiError::invalid(
            "invalid_title",
            "title",
            "title must not contain the NUL character (U+0000)",
        ));
    }
    Ok(title.to_owned())
}

fn validate_scheduled_at(raw: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    let invalid =
        |message: String| ApiError::invalid("invalid_scheduled_at", "scheduled_at", message);
    let scheduled_at = time_field(raw, "scheduled_at", "invalid_scheduled_at")?;
    if scheduled_at <= now {
        return Err(invalid(format!(
            "scheduled_at must be in the future (got {raw})"
        )));
    }
    if scheduled_at > now + Duration::days(365) {
        return Err(invalid(format!(
            "scheduled_at must be at most one year ahead (got {raw})"
        )));
    }
    Ok(scheduled_at)
}

fn validate_minutes(minutes: &[i64]) -> Result<Vec<i32>, ApiError> {
    let invalid = |message: String| {
        ApiError::invalid("invalid_reminder_minutes", "reminder_minutes", message)
    };
    if minutes.len() > MAX_REMINDERS {
        return Err(invalid(format!(
            "at most {MAX_REMINDERS} reminders per game (got {})",
            minutes.len()
        )));
    }
    let mut valid = Vec::with_capacity(minutes.len());
    for &value in minutes {
        if !(0..=MAX_REMINDER_MINUTES).contains(&value) {
            return Err(invalid(format!(
                "{value} is out of range; minutes must be 0 to {MAX_REMINDER_MINUTES}"
            )));
        }
        let value = value as i32;
        if valid.contains(&value) {
            return Err(invalid(format!(
                "{value} appears twice; minutes must be distinct"
            )));
        }
        valid.push(value);
    }
    Ok(valid)
}

fn validate_duration(minutes: i64) -> Result<i32, ApiError> {
    if (1..=MAX_REMINDER_MINUTES).contains(&minutes) {
        Ok(minutes as i32)
    } else {
        Err(ApiError::invalid(
            "invalid_expected_duration_minutes",
            "expected_duration_minutes",
            format!(
                "{minutes} is out of range; the expected duration must be 1 to {MAX_REMINDER_MINUTES} minutes"
            ),
        ))
    }
}

fn game_body(game: Game, schedule: GameSchedule, defaults: &games::Defaults) -> GameBody {
    let effective = games::effective(&game, &defaults.reminder_minutes).to_vec();
    let effective_duration = games::duration(&game, defaults);
    let status_transitions = schedule
        .transitions
        .into_iter()
        .map(|row| TransitionBody {
            id: row.id,
            target_status: row.target_status,
            transition_time: row.transition_time,
            status: if row.executed {
                TransitionStatus::Executed
            } else {
                TransitionStatus::Pending
            },
            executed_at: row.executed_at,
        })
        .collect();
    let mut reminders: Vec<ReminderBody> = schedule
        .reminders
        .into_iter()
        .map(|row| {
            let status = match (row.sent, row.outcome.as_deref()) {
                (false, _) => ReminderStatus::Pending,
                (true, Some("skipped_stale")) => ReminderStatus::SkippedStale,
                (true, _) => ReminderStatus::Sent,
            };
            ReminderBody {
                id: Some(row.id),
                reminder_minutes: row.reminder_minutes,
                notification_time: row.notification_time,
                status,
                sent: status == ReminderStatus::Sent,
                sent_at: row.sent_at,
                skipped: status == ReminderStatus::SkippedStale,
            }
        })
        .collect();
    for minutes in &effective {
        if !reminders.iter().any(|r| r.reminder_minutes == *minutes) {
            reminders.push(ReminderBody {
                id: None,
                reminder_minutes: *minutes,
                notification_time: game.scheduled_at - Duration::minutes(i64::from(*minutes)),
                status: ReminderStatus::SkippedPast,
                sent: false,
                sent_at: None,
                skipped: true,
            });
        }
    }
    reminders.sort_by_key(|r| r.notification_time);
    GameBody {
        id: game.id,
        title: game.title,
        scheduled_at: game.scheduled_at,
        reminder_minutes: game.reminder_minutes,
        effective_reminder_minutes: effective,
        expected_duration_minutes: game.expected_duration_minutes,
        effective_expected_duration_minutes: effective_duration,
        created_at: game.created_at,
        updated_at: game.updated_at,
        reminders,
        status_transitions,
    }
}

fn summary(game: Game) -> GameSummary {
    GameSummary {
        id: game.id,
        title: game.title,
        scheduled_at: game.scheduled_at,
        reminder_minutes: game.reminder_minutes,
        created_at: game.created_at,
        updated_at: game.updated_at,
    }
}

/// Reads a game and its schedule after a write.
async fn read_back(state: &ApiState, id: Uuid) -> Result<GameBody, ApiError> {
    let client = state.connection().await?;
    let (game, schedule) = games::get(&client, id)
        .await
        .map_err(|err| ApiError::internal(&err))?
        .ok_or_else(|| ApiError::not_found("game"))?;
    Ok(game_body(game, schedule, &state.defaults))
}

/// Create a game and schedule its reminders and status transitions.
#[utoipa::path(
    post, path = "/games", tag = "games", request_body = CreateGame,
    responses(
        (status = 201, description = "Created; Location names the game", body = GameBody),
        (status = 400, description = "Malformed JSON, wrong types or unknown fields", body = ErrorBody),
        (status = 401, body = ErrorBody), (status = 413, body = ErrorBody),
        (status = 415, body = ErrorBody), (status = 422, description = "A value is not acceptable", body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn create_game(
    State(state): State<ApiState>,
    headers: HeaderMap,
    JsonBody(request): JsonBody<CreateGame>,
) -> Result<Response, ApiError> {
    let new = NewGame {
        title: validate_title(&request.title)?,
        scheduled_at: validate_scheduled_at(&request.scheduled_at, Utc::now())?,
        reminder_minutes: request
            .reminder_minutes
            .as_deref()
            .map(validate_minutes)
            .transpose()?,
        expected_duration_minutes: request
            .expected_duration_minutes
            .map(validate_duration)
            .transpose()?,
    };
    let mut client = state.connection().await?;
    let (game, _) = games::create(
        &mut client,
        &new,
        &state.defaults,
        traceparent(&headers).as_deref(),
    )
    .await
    .map_err(|err| ApiError::internal(&err))?;
    drop(client);
    let body = read_back(&state, game.id).await?;
    let location = HeaderValue::from_str(&format!("/games/{}", game.id))
        .expect("a UUID path is a valid header");
    Ok((
        StatusCode::CREATED,
        [(header::LOCATION, location)],
        Json(body),
    )
        .into_response())
}

/// A game with its schedule.
#[utoipa::path(
    get, path = "/games/{id}", tag = "games",
    params(("id" = Uuid, Path, description = "Game id")),
    responses((status = 200, body = GameBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn get_game(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<Json<GameBody>, ApiError> {
    read_back(&state, id).await.map(Json)
}

/// Games scheduled in a time range, in start order, a page at a time.
#[utoipa::path(
    get, path = "/games", tag = "games",
    params(
        ("from" = Option<String>, Query, description = "Earliest start (RFC 3339, inclusive)"),
        ("to" = Option<String>, Query, description = "Latest start (RFC 3339, exclusive)"),
        ("limit" = Option<u32>, Query, description = "Page size, 1 to 200 (default 50)"),
        ("cursor" = Option<String>, Query, description = "next_cursor of the previous page"),
    ),
    responses((status = 200, body = GamePage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn list_games(
    State(state): State<ApiState>,
    params: QueryParams,
) -> Result<Json<GamePage>, ApiError> {
    let params = params.only(&["from", "to", "limit", "cursor"])?;
    let limit = params.limit(50, 200)?;
    let filter = GameFilter {
        from: params.time("from")?,
        to: params.time("to")?,
        after: params.cursor()?,
        limit: limit + 1,
    };
    let client = state.connection().await?;
    let mut found = games::list(&client, &filter)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    let next_cursor = if found.len() as i64 > limit {
        found.truncate(limit as usize);
        found
            .last()
            .map(|game| encode_cursor(game.scheduled_at, game.id))
    } else {
        None
    };
    Ok(Json(GamePage {
        games: found.into_iter().map(summary).collect(),
        next_cursor,
    }))
}

/// Change a game's title, start, reminder minutes or expected duration; its
/// schedule follows (pending status transitions move, none is dropped).
#[utoipa::path(
    patch, path = "/games/{id}", tag = "games", request_body = UpdateGame,
    params(("id" = Uuid, Path, description = "Game id")),
    responses(
        (status = 200, body = GameBody), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody),
        (status = 404, body = ErrorBody), (status = 413, body = ErrorBody), (status = 415, body = ErrorBody),
        (status = 422, body = ErrorBody),
    ),
    security(("bearer" = []))
)]
pub async fn update_game(
    State(state): State<ApiState>,
    PathId(id): PathId,
    headers: HeaderMap,
    JsonBody(request): JsonBody<UpdateGame>,
) -> Result<Json<GameBody>, ApiError> {
    let not_null =
        |field: &str| ApiError::invalid("null_value", field, format!("{field} cannot be null"));
    let changes = GameChanges {
        title: match request.title {
            Some(Some(title)) => Some(validate_title(&title)?),
            Some(None) => return Err(not_null("title")),
            None => None,
        },
        scheduled_at: match request.scheduled_at {
            Some(Some(raw)) => Some(validate_scheduled_at(&raw, Utc::now())?),
            Some(None) => return Err(not_null("scheduled_at")),
            None => None,
        },
        reminder_minutes: request
            .reminder_minutes
            .map(|minutes| minutes.as_deref().map(validate_minutes).transpose())
            .transpose()?,
        expected_duration_minutes: request
            .expected_duration_minutes
            .map(|duration| duration.map(validate_duration).transpose())
            .transpose()?,
    };
    if changes.title.is_none()
        && changes.scheduled_at.is_none()
        && changes.reminder_minutes.is_none()
        && changes.expected_duration_minutes.is_none()
    {
        return Err(ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "nothing_to_change",
            "expected at least one of title, scheduled_at, reminder_minutes, expected_duration_minutes",
        ));
    }
    let mut client = state.connection().await?;
    games::update(
        &mut client,
        id,
        &changes,
        &state.defaults,
        traceparent(&headers).as_deref(),
    )
    .await
    .map_err(|err| ApiError::internal(&err))?
    .ok_or_else(|| ApiError::not_found("game"))?;
    drop(client);
    read_back(&state, id).await.map(Json)
}

/// Delete a game and its reminders; pending ones are never sent.
#[utoipa::path(
    delete, path = "/games/{id}", tag = "games",
    params(("id" = Uuid, Path, description = "Game id")),
    responses((status = 204, description = "Deleted"), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn delete_game(
    State(state): State<ApiState>,
    PathId(id): PathId,
) -> Result<StatusCode, ApiError> {
    let mut client = state.connection().await?;
    if games::delete(&mut client, id)
        .await
        .map_err(|err| ApiError::internal(&err))?
    {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found("game"))
    }
}

/// The next reminders due across all games, for operators.
#[utoipa::path(
    get, path = "/schedule/upcoming", tag = "schedule",
    params(("limit" = Option<u32>, Query, description = "How many, 1 to 1000 (default 20)")),
    responses((status = 200, body = UpcomingPage), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("bearer" = []))
)]
pub async fn upcoming(
    State(state): State<ApiState>,
    params: QueryParams,
) -> Result<Json<UpcomingPage>, ApiError> {
    let limit = params.only(&["limit"])?.limit(20, 1000)?;
    let client = state.connection().await?;
    let reminders = games::upcoming(&client, limit)
        .await
        .map_err(|err| ApiError::internal(&err))?;
    Ok(Json(UpcomingPage {
        reminders: reminders
            .into_iter()
            .map(|r| UpcomingBody {
                id: r.id,
                game_id: r.game_id,
                title: r.title,
                reminder_minutes: r.reminder_minutes,
                notification_time: r.notification_time,
            })
            .collect(),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scheduled_at_needs_an_offset_a_future_time_and_at_most_a_year() {
        let now: DateTime<Utc> = "2030-01-01T00:00:00Z".parse().unwrap();
        assert!(validate_scheduled_at("2030-01-01T20:00:00+01:00", now).is_ok());
        for (raw, expected) in [
            ("2030-01-02T10:00:00", "explicit offset"),
            ("2030-01-02 10:00", "explicit offset"),
            ("2029-12-31T23:59:59Z", "future"),
            ("2031-01-02T00:00:00Z", "one year"),
        ] {
            let err = validate_scheduled_at(raw, now).unwrap_err();
            assert_eq!(err.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(
                err.body.message.contains(expected),
                "{raw}: {}",
                err.body.message
            );
            assert_eq!(err.body.field.as_deref(), Some("scheduled_at"));
        }
    }

    #[test]
    fn minutes_are_distinct_bounded_and_few() {
        assert_eq!(validate_minutes(&[60, 0, 10_080]).unwrap(), [60, 0, 10_080]);
        assert!(
            validate_minutes(&[15, 15])
                .unwrap_err()
                .body
                .message
                .contains("twice")
        );
        assert!(validate_minutes(&[-1]).is_err());
        assert!(validate_minutes(&[10_081]).is_err());
        assert!(validate_minutes(&(0..11).collect::<Vec<_>>()).is_err());
    }

    #[test]
    fn titles_are_one_to_two_hundred_characters() {
        assert!(validate_title("x").is_ok());
        assert!(validate_title(&"é".repeat(200)).is_ok());
        assert!(validate_title(&"é".repeat(201)).is_err());
        assert!(validate_title("   ").is_err());
        assert!(validate_title("").is_err());
    }
}
