//! Schedule management: keeps a game's `notification_schedule` rows (its
//! reminders, here) and `game_status_schedule` rows ([`transitions`]) in step
//! with the game. Every function takes the transaction that writes the game,
//! so a game and its schedule never disagree, even if the process dies
//! between two statements.
//!
//! Other Rust applications can use this module directly; the games API does.

pub mod plan;
pub mod transitions;

use chrono::{DateTime, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

pub use plan::{Changes, ExistingReminder, Plan, PlannedReminder};

/// A failed schedule change; the caller's transaction should be rolled back.
#[derive(Debug, thiserror::Error)]
#[error("{context}: {source}")]
pub struct ScheduleError {
    context: &'static str,
    #[source]
    source: tokio_postgres::Error,
}

fn failed(context: &'static str) -> impl FnOnce(tokio_postgres::Error) -> ScheduleError {
    move |source| ScheduleError { context, source }
}

/// The game a schedule belongs to.
#[derive(Debug, Clone, Copy)]
pub struct GameTime {
    pub game_id: Uuid,
    pub scheduled_at: DateTime<Utc>,
}

/// What a schedule change did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ScheduleResult {
    /// Reminder rows written by this change.
    pub inserted: Vec<PlannedReminder>,
    /// Reminder rows removed by this change.
    pub deleted: usize,
    /// Reminder rows left as they were.
    pub unchanged: usize,
    /// Minutes whose time had already passed: not scheduled.
    pub skipped_past: Vec<i32>,
}

/// The database's current time, the clock every reminder is judged by.
async fn now(tx: &Transaction<'_>) -> Result<DateTime<Utc>, ScheduleError> {
    Ok(tx
        .query_one("SELECT now()", &[])
        .await
        .map_err(failed("reading the database clock"))?
        .get(0))
}

/// Schedules a new game's reminders: one row per minute whose time is now or
/// later; past ones are skipped and reported.
pub async fn populate(
    tx: &Transaction<'_>,
    game: GameTime,
    minutes: &[i32],
    traceparent: Option<&str>,
) -> Result<ScheduleResult, ScheduleError> {
    let plan = plan::plan(game.scheduled_at, minutes, now(tx).await?);
    insert(tx, game, &plan.scheduled, traceparent).await?;
    Ok(ScheduleResult {
        inserted: plan.scheduled,
        deleted: 0,
        unchanged: 0,
        skipped_past: plan.skipped_past,
    })
}

/// Replaces a game's reminders to match its (new) start and minutes. Rows
/// whose time did not change stay as they are; others are replaced, so a
/// reminder already sent for the old time is sent again for the new one.
pub async fn update(
    tx: &Transaction<'_>,
    game: GameTime,
    minutes: &[i32],
    traceparent: Option<&str>,
) -> Result<ScheduleResult, ScheduleError> {
    // Locking the game's rows waits for a delivery claim on them to finish, so
    // a reminder being published now is seen as sent.
    let existing: Vec<ExistingReminder> = tx
        .query(
            "SELECT id, reminder_minutes, notification_time, sent FROM notification_schedule \
             WHERE game_id = $1 FOR UPDATE",
            &[&game.game_id],
        )
        .await
        .map_err(failed("reading the game's reminders"))?
        .iter()
        .map(|row| ExistingReminder {
            id: row.get(0),
            reminder_minutes: row.get(1),
            notification_time: row.get(2),
            sent: row.get(3),
        })
        .collect();
    let plan = plan::plan(game.scheduled_at, minutes, now(tx).await?);
    let changes = plan::changes(&existing, &plan);
    if !changes.delete.is_empty() {
        tx.execute(
            "DELETE FROM notification_schedule WHERE id = ANY($1)",
            &[&changes.delete],
        )
        .await
        .map_err(failed("removing replaced reminders"))?;
    }
    insert(tx, game, &changes.insert, traceparent).await?;
    Ok(ScheduleResult {
        inserted: changes.insert,
        deleted: changes.delete.len(),
        unchanged: changes.unchanged,
        skipped_past: plan.skipped_past,
    })
}

/// Removes every reminder of a game; returns how many there were.
pub async fn clear(tx: &Transaction<'_>, game_id: Uuid) -> Result<u64, ScheduleError> {
    tx.execute(
        "DELETE FROM notification_schedule WHERE game_id = $1",
        &[&game_id],
    )
    .await
    .map_err(failed("removing the game's reminders"))
}

async fn insert(
    tx: &Transaction<'_>,
    game: GameTime,
    reminders: &[PlannedReminder],
    traceparent: Option<&str>,
) -> Result<(), ScheduleError> {
    if reminders.is_empty() {
        return Ok(());
    }
    let minutes: Vec<i32> = reminders.iter().map(|r| r.reminder_minutes).collect();
    let times: Vec<DateTime<Utc>> = reminders.iter().map(|r| r.notification_time).collect();
    // One statement for all rows: one change notification.
    tx.execute(
        "INSERT INTO notification_schedule \
             (game_id, reminder_minutes, notification_time, game_scheduled_at, traceparent) \
         SELECT $1, m, t, $2, $3 FROM unnest($4::int[], $5::timestamptz[]) AS r(m, t)",
        &[
            &game.game_id,
            &game.scheduled_at,
            &traceparent,
            &minutes,
            &times,
        ],
    )
    .await
    .map_err(failed("writing the game's reminders"))?;
    Ok(())
}
