//! The games domain: games and their schedules in PostgreSQL, as the API
//! reads and writes them. Every write runs in one transaction with its
//! schedule change ([`schedule`]).

pub mod schedule;

use chrono::{DateTime, Utc};
use deadpool_postgres::Object;
use tokio_postgres::Row;
use uuid::Uuid;

use schedule::transitions::{self, TransitionSettings};
use schedule::{GameTime, ScheduleError, ScheduleResult};

/// A failed game operation.
#[derive(Debug, thiserror::Error)]
pub enum GameError {
    #[error(transparent)]
    Schedule(#[from] ScheduleError),
    #[error("{context}: {source}")]
    Database {
        context: &'static str,
        #[source]
        source: tokio_postgres::Error,
    },
}

fn failed(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> GameError {
    move |source| GameError::Database { context, source }
}

/// A game as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Game {
    pub id: Uuid,
    pub title: String,
    pub scheduled_at: DateTime<Utc>,
    /// `None`: the configured default minutes apply.
    pub reminder_minutes: Option<Vec<i32>>,
    /// `None`: the configured default duration applies.
    pub expected_duration_minutes: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const GAME_COLUMNS: &str =
    "id, title, scheduled_at, reminder_minutes, created_at, updated_at, expected_duration_minutes";

fn game_from_row(row: &Row) -> Game {
    Game {
        id: row.get(0),
        title: row.get(1),
        scheduled_at: row.get(2),
        reminder_minutes: row.get(3),
        created_at: row.get(4),
        updated_at: row.get(5),
        expected_duration_minutes: row.get(6),
    }
}

/// A status transition row of a game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransitionRow {
    pub id: Uuid,
    pub target_status: String,
    pub transition_time: DateTime<Utc>,
    pub executed: bool,
    pub executed_at: Option<DateTime<Utc>>,
}

/// What the schedule tables hold for one game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GameSchedule {
    pub reminders: Vec<ReminderRow>,
    pub transitions: Vec<TransitionRow>,
}

/// How games are scheduled when they do not say: default reminder minutes
/// and the transition settings.
#[derive(Debug, Clone)]
pub struct Defaults {
    pub reminder_minutes: std::sync::Arc<[i32]>,
    pub transitions: TransitionSettings,
}

/// A reminder row of a game.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReminderRow {
    pub id: Uuid,
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
    pub sent: bool,
    pub sent_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
}

/// A pending reminder across all games.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpcomingReminder {
    pub id: Uuid,
    pub game_id: Uuid,
    pub title: String,
    pub reminder_minutes: i32,
    pub notification_time: DateTime<Utc>,
}

/// A new game.
#[derive(Debug, Clone)]
pub struct NewGame {
    pub title: String,
    pub scheduled_at: DateTime<Utc>,
    pub reminder_minutes: Option<Vec<i32>>,
    pub expected_duration_minutes: Option<i32>,
}

/// Changes to a game; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct GameChanges {
    pub title: Option<String>,
    pub scheduled_at: Option<DateTime<Utc>>,
    /// `Some(None)` returns the game to the configured default minutes.
    pub reminder_minutes: Option<Option<Vec<i32>>>,
    /// `Some(None)` returns the game to the configured default duration.
    pub expected_duration_minutes: Option<Option<i32>>,
}

/// Which games to list: scheduled in `[from, to)`, after the cursor, in
/// (scheduled_at, id) order.
#[derive(Debug, Clone, Default)]
pub struct GameFilter {
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub after: Option<(DateTime<Utc>, Uuid)>,
    pub limit: i64,
}

/// Creates a game and its schedule: its reminders (minutes from the game,
/// else the defaults) and its status transitions.
pub async fn create(
    client: &mut Object,
    game: &NewGame,
    defaults: &Defaults,
    traceparent: Option<&str>,
) -> Result<(Game, ScheduleResult), GameError> {
    let tx = client
        .transaction()
        .await
        .map_err(failed("starting a transaction"))?;
    let row = tx
        .query_one(
            &format!(
                "INSERT INTO game_sessions (title, scheduled_at, reminder_minutes, expected_duration_minutes) \
                 VALUES ($1, $2, $3, $4) RETURNING {GAME_COLUMNS}"
            ),
            &[
                &game.title,
                &game.scheduled_at,
                &game.reminder_minutes,
                &game.expected_duration_minutes,
            ],
        )
        .await
        .map_err(failed("creating the game"))?;
    let created = game_from_row(&row);
    let minutes = effective(&created, &defaults.reminder_minutes);
    let result = schedule::populate(&tx, game_time(&created), minutes, traceparent).await?;
    transitions::populate(
        &tx,
        game_time(&created),
        duration(&created, defaults),
        defaults.transitions,
        traceparent,
    )
    .await?;
    tx.commit().await.map_err(failed("committing the game"))?;
    Ok((created, result))
}

/// A game and its schedule rows, if it exists.
pub async fn get(client: &Object, id: Uuid) -> Result<Option<(Game, GameSchedule)>, GameError> {
    let Some(row) = client
        .query_opt(
            &format!("SELECT {GAME_COLUMNS} FROM game_sessions WHERE id = $1"),
            &[&id],
        )
        .await
        .map_err(failed("reading the game"))?
    else {
        return Ok(None);
    };
    let schedule = GameSchedule {
        reminders: reminders(client, id).await?,
        transitions: status_transitions(client, id).await?,
    };
    Ok(Some((game_from_row(&row), schedule)))
}

async fn status_transitions(
    client: &Object,
    game_id: Uuid,
) -> Result<Vec<TransitionRow>, GameError> {
    Ok(client
        .query(
            "SELECT id, target_status, transition_time, executed, executed_at \
               FROM game_status_schedule WHERE game_id = $1 ORDER BY transition_time",
            &[&game_id],
        )
        .await
        .map_err(failed("reading the game's status transitions"))?
        .iter()
        .map(|row| TransitionRow {
            id: row.get(0),
            target_status: row.get(1),
            transition_time: row.get(2),
            executed: row.get(3),
            executed_at: row.get(4),
        })
        .collect())
}

async fn reminders(client: &Object, game_id: Uuid) -> Result<Vec<ReminderRow>, GameError> {
    Ok(client
        .query(
            "SELECT id, reminder_minutes, notification_time, sent, sent_at, outcome \
               FROM notification_schedule WHERE game_id = $1 ORDER BY notification_time",
            &[&game_id],
        )
        .await
        .map_err(failed("reading the game's reminders"))?
        .iter()
        .map(|row| ReminderRow {
            id: row.get(0),
            reminder_minutes: row.get(1),
            notification_time: row.get(2),
            sent: row.get(3),
            sent_at: row.get(4),
            outcome: row.get(5),
        })
        .collect())
}

/// Games matching the filter.
pub async fn list(client: &Object, filter: &GameFilter) -> Result<Vec<Game>, GameError> {
    let (after_time, after_id) = filter.after.unzip();
    Ok(client
        .query(
            &format!(
                "SELECT {GAME_COLUMNS} FROM game_sessions \
                  WHERE ($1::timestamptz IS NULL OR scheduled_at >= $1) \
                    AND ($2::timestamptz IS NULL OR scheduled_at < $2) \
                    AND ($3::timestamptz IS NULL OR (scheduled_at, id) > ($3, $4::uuid)) \
                  ORDER BY scheduled_at, id LIMIT $5"
            ),
            &[
                &filter.from,
                &filter.to,
                &after_time,
                &after_id,
                &filter.limit,
            ],
        )
        .await
        .map_err(failed("listing games"))?
        .iter()
        .map(game_from_row)
        .collect())
}

/// Applies changes to a game and brings its schedule in line; `None` if the
/// game does not exist.
pub async fn update(
    client: &mut Object,
    id: Uuid,
    changes: &GameChanges,
    defaults: &Defaults,
    traceparent: Option<&str>,
) -> Result<Option<(Game, ScheduleResult)>, GameError> {
    let tx = client
        .transaction()
        .await
        .map_err(failed("starting a transaction"))?;
    let Some(row) = tx
        .query_opt(
            &format!("SELECT {GAME_COLUMNS} FROM game_sessions WHERE id = $1 FOR UPDATE"),
            &[&id],
        )
        .await
        .map_err(failed("reading the game"))?
    else {
        return Ok(None);
    };
    let before = game_from_row(&row);
    let minutes = match &changes.reminder_minutes {
        Some(minutes) => minutes.clone(),
        None => before.reminder_minutes.clone(),
    };
    let expected_duration = changes
        .expected_duration_minutes
        .unwrap_or(before.expected_duration_minutes);
    let row = tx
        .query_one(
            &format!(
                "UPDATE game_sessions SET title = $2, scheduled_at = $3, reminder_minutes = $4, \
                        expected_duration_minutes = $5, updated_at = now() \
                  WHERE id = $1 RETURNING {GAME_COLUMNS}"
            ),
            &[
                &id,
                changes.title.as_ref().unwrap_or(&before.title),
                &changes.scheduled_at.unwrap_or(before.scheduled_at),
                &minutes,
                &expected_duration,
            ],
        )
        .await
        .map_err(failed("updating the game"))?;
    let after = game_from_row(&row);
    let moved = after.scheduled_at != before.scheduled_at;
    let reminders = &defaults.reminder_minutes;
    let result = if moved || effective(&after, reminders) != effective(&before, reminders) {
        let minutes = effective(&after, reminders);
        schedule::update(&tx, game_time(&after), minutes, traceparent).await?
    } else {
        ScheduleResult::default()
    };
    if moved || duration(&after, defaults) != duration(&before, defaults) {
        transitions::update(
            &tx,
            game_time(&after),
            duration(&after, defaults),
            defaults.transitions,
            traceparent,
        )
        .await?;
    }
    tx.commit().await.map_err(failed("committing the game"))?;
    Ok(Some((after, result)))
}

/// Deletes a game and its schedule; `false` if it did not exist.
pub async fn delete(client: &mut Object, id: Uuid) -> Result<bool, GameError> {
    let tx = client
        .transaction()
        .await
        .map_err(failed("starting a transaction"))?;
    schedule::clear(&tx, id).await?;
    let deleted = tx
        .execute("DELETE FROM game_sessions WHERE id = $1", &[&id])
        .await
        .map_err(failed("deleting the game"))?;
    tx.commit()
        .await
        .map_err(failed("committing the deletion"))?;
    Ok(deleted == 1)
}

/// The next pending reminders across all games.
pub async fn upcoming(client: &Object, limit: i64) -> Result<Vec<UpcomingReminder>, GameError> {
    Ok(client
        .query(
            "SELECT s.id, s.game_id, g.title, s.reminder_minutes, s.notification_time \
               FROM notification_schedule s JOIN game_sessions g ON g.id = s.game_id \
              WHERE NOT s.sent ORDER BY s.notification_time LIMIT $1",
            &[&limit],
        )
        .await
        .map_err(failed("reading upcoming reminders"))?
        .iter()
        .map(|row| UpcomingReminder {
            id: row.get(0),
            game_id: row.get(1),
            title: row.get(2),
            reminder_minutes: row.get(3),
            notification_time: row.get(4),
        })
        .collect())
}

/// The minutes that apply to a game: its own, else the defaults.
pub fn effective<'a>(game: &'a Game, defaults: &'a [i32]) -> &'a [i32] {
    game.reminder_minutes.as_deref().unwrap_or(defaults)
}

/// The expected duration that applies to a game: its own, else the default.
pub fn duration(game: &Game, defaults: &Defaults) -> i32 {
    game.expected_duration_minutes
        .unwrap_or(defaults.transitions.default_duration_minutes)
}

fn game_time(game: &Game) -> GameTime {
    GameTime {
        game_id: game.id,
        scheduled_at: game.scheduled_at,
    }
}
