//! Keeps a game's status transitions in step with the game: IN_PROGRESS at
//! its start, COMPLETED after its expected duration, ARCHIVED a configured
//! delay after that (when one is configured). Every function takes the
//! transaction that writes the game.
//!
//! Unlike reminders, a transition is never dropped for being in the past: a
//! game moved or edited after its start still completes. A change moves a
//! pending transition in place and never deletes one the game still needs;
//! an executed transition has happened and is left as it is.

use chrono::{DateTime, Duration, Utc};
use tokio_postgres::Transaction;
use uuid::Uuid;

use super::{GameTime, ScheduleError, failed};

/// Statuses a game goes through, in order.
pub const IN_PROGRESS: &str = "IN_PROGRESS";
pub const COMPLETED: &str = "COMPLETED";
pub const ARCHIVED: &str = "ARCHIVED";

/// How a deployment schedules transitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TransitionSettings {
    /// Expected duration of games that do not set their own.
    pub default_duration_minutes: i32,
    /// ARCHIVED this long after COMPLETED; `None`: no ARCHIVED transition.
    pub archive_delay: Option<Duration>,
}

/// A transition the game should have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlannedTransition {
    pub target_status: &'static str,
    pub transition_time: DateTime<Utc>,
}

/// A transition row the game has.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExistingTransition {
    pub id: Uuid,
    pub target_status: String,
    pub transition_time: DateTime<Utc>,
    pub executed: bool,
}

/// What to change so that the rows match a plan.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransitionChanges {
    /// Pending rows to move to a new time.
    pub moves: Vec<(Uuid, DateTime<Utc>)>,
    /// Transitions the game lacks.
    pub insert: Vec<PlannedTransition>,
}

/// The transitions of a game starting at `scheduled_at` and lasting
/// `duration_minutes`.
pub fn plan(
    scheduled_at: DateTime<Utc>,
    duration_minutes: i32,
    settings: TransitionSettings,
) -> Vec<PlannedTransition> {
    let completed = scheduled_at + Duration::minutes(i64::from(duration_minutes));
    let mut planned = vec![
        PlannedTransition {
            target_status: IN_PROGRESS,
            transition_time: scheduled_at,
        },
        PlannedTransition {
            target_status: COMPLETED,
            transition_time: completed,
        },
    ];
    if let Some(delay) = settings.archive_delay {
        planned.push(PlannedTransition {
            target_status: ARCHIVED,
            transition_time: completed + delay,
        });
    }
    planned
}

/// Compares existing rows with a plan: a pending row at another time moves,
/// a missing status is added; executed rows, and rows of statuses the plan
/// does not name, are left alone.
pub fn changes(
    existing: &[ExistingTransition],
    planned: &[PlannedTransition],
) -> TransitionChanges {
    let mut changes = TransitionChanges::default();
    for wanted in planned {
        match existing
            .iter()
            .find(|row| row.target_status == wanted.target_status)
        {
            Some(row) if !row.executed && row.transition_time != wanted.transition_time => {
                changes.moves.push((row.id, wanted.transition_time));
            }
            Some(_) => {}
            None => changes.insert.push(*wanted),
        }
    }
    changes
}

/// Schedules a new game's transitions: every planned one, past or not.
pub async fn populate(
    tx: &Transaction<'_>,
    game: GameTime,
    duration_minutes: i32,
    settings: TransitionSettings,
    traceparent: Option<&str>,
) -> Result<(), ScheduleError> {
    let planned = plan(game.scheduled_at, duration_minutes, settings);
    insert(tx, game, &planned, traceparent).await
}

/// Brings a changed game's transitions in line with its start and duration:
/// pending ones move, missing ones are added.
pub async fn update(
    tx: &Transaction<'_>,
    game: GameTime,
    duration_minutes: i32,
    settings: TransitionSettings,
    traceparent: Option<&str>,
) -> Result<(), ScheduleError> {
    // Locking the game's rows waits for a delivery claim on them to finish, so
    // a transition being published now is seen as executed.
    let existing: Vec<ExistingTransition> = tx
        .query(
            "SELECT id, target_status, transition_time, executed FROM game_status_schedule \
              WHERE game_id = $1 FOR UPDATE",
            &[&game.game_id],
        )
        .await
        .map_err(failed("reading the game's status transitions"))?
        .iter()
        .map(|row| ExistingTransition {
            id: row.get(0),
            target_status: row.get(1),
            transition_time: row.get(2),
            executed: row.get(3),
        })
        .collect();
    let changes = changes(
        &existing,
        &plan(game.scheduled_at, duration_minutes, settings),
    );
    if !changes.moves.is_empty() {
        let (ids, times): (Vec<Uuid>, Vec<DateTime<Utc>>) = changes.moves.into_iter().unzip();
        // One statement for all rows: one change notification.
        tx.execute(
            "UPDATE game_status_schedule AS s SET transition_time = m.t \
               FROM unnest($1::uuid[], $2::timestamptz[]) AS m(id, t) WHERE s.id = m.id",
            &[&ids, &times],
        )
        .await
        .map_err(failed("moving the game's status transitions"))?;
    }
    insert(tx, game, &changes.insert, traceparent).await
}

async fn insert(
    tx: &Transaction<'_>,
    game: GameTime,
    transitions: &[PlannedTransition],
    traceparent: Option<&str>,
) -> Result<(), ScheduleError> {
    if transitions.is_empty() {
        return Ok(());
    }
    let statuses: Vec<&str> = transitions.iter().map(|t| t.target_status).collect();
    let times: Vec<DateTime<Utc>> = transitions.iter().map(|t| t.transition_time).collect();
    // One statement for all rows: one change notification.
    tx.execute(
        "INSERT INTO game_status_schedule (game_id, target_status, transition_time, traceparent) \
         SELECT $1, s, t, $2 FROM unnest($3::text[], $4::timestamptz[]) AS r(s, t)",
        &[&game.game_id, &traceparent, &statuses, &times],
    )
    .await
    .map_err(failed("writing the game's status transitions"))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        text.parse().unwrap()
    }

    const SETTINGS: TransitionSettings = TransitionSettings {
        default_duration_minutes: 60,
        archive_delay: None,
    };

    #[test]
    fn a_game_starts_and_completes_and_archives_when_configured() {
        let start = at("2030-01-01T19:00:00Z");
        assert_eq!(
            plan(start, 90, SETTINGS),
            [
                PlannedTransition {
                    target_status: IN_PROGRESS,
                    transition_time: start
                },
                PlannedTransition {
                    target_status: COMPLETED,
                    transition_time: at("2030-01-01T20:30:00Z")
                },
            ]
        );
        let archiving = TransitionSettings {
            archive_delay: Some(Duration::days(1)),
            ..SETTINGS
        };
        assert_eq!(
            plan(start, 90, archiving)[2],
            PlannedTransition {
                target_status: ARCHIVED,
                transition_time: at("2030-01-02T20:30:00Z")
            }
        );
    }

    #[test]
    fn an_edit_after_the_start_moves_completed_and_keeps_what_happened() {
        let start = at("2030-01-01T19:00:00Z");
        let existing = [
            ExistingTransition {
                id: Uuid::new_v4(),
                target_status: IN_PROGRESS.to_owned(),
                transition_time: start,
                executed: true,
            },
            ExistingTransition {
                id: Uuid::new_v4(),
                target_status: COMPLETED.to_owned(),
                transition_time: at("2030-01-01T20:00:00Z"),
                executed: false,
            },
        ];
        // The game is running; it is moved 30 minutes later and made longer.
        let changes = changes(&existing, &plan(at("2030-01-01T19:30:00Z"), 120, SETTINGS));
        assert_eq!(
            changes.moves,
            [(existing[1].id, at("2030-01-01T21:30:00Z"))],
            "COMPLETED moves, never disappears"
        );
        assert!(changes.insert.is_empty(), "IN_PROGRESS happened already");
    }

    #[test]
    fn an_unrelated_edit_changes_nothing_and_a_missing_transition_is_added() {
        let start = at("2030-01-01T19:00:00Z");
        let existing = [ExistingTransition {
            id: Uuid::new_v4(),
            target_status: IN_PROGRESS.to_owned(),
            transition_time: start,
            executed: false,
        }];
        let changes = changes(&existing, &plan(start, 60, SETTINGS));
        assert!(changes.moves.is_empty());
        assert_eq!(changes.insert.len(), 1);
        assert_eq!(changes.insert[0].target_status, COMPLETED);
    }
}
