//! Dead letters: events the broker refused on every attempt
//! (`DELIVERY_MAX_ATTEMPTS`). They stay in their kind's table, with their
//! last error, until an operator retries them (back to pending, delivered at
//! once) or discards them (done, never delivered). Used by the API
//! (`/dead-letters`) and the `dead-letters` subcommand; plain SQL works too
//! (docs/operations.md, "Dead letters").

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{DbError, kind_sql};
use crate::kinds::{self, Kind};

/// One dead letter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeadLetter {
    pub kind: &'static str,
    pub id: Uuid,
    /// When it was due.
    pub due_at: DateTime<Utc>,
    pub dead_lettered_at: DateTime<Utc>,
    /// Attempts the broker refused.
    pub attempts: i32,
    /// Why the broker refused the last one.
    pub last_error: Option<String>,
}

/// Where a page of dead letters starts: after this one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct After {
    pub dead_lettered_at: DateTime<Utc>,
    pub id: Uuid,
}

/// The kinds a request names: one, or every kind.
pub fn selected(kind: Option<&'static Kind>) -> Vec<&'static Kind> {
    kind.map_or_else(|| kinds::ALL.to_vec(), |kind| vec![kind])
}

/// Dead letters of `kinds`, oldest first, at most `limit`, after `after`.
pub async fn list(
    client: &impl GenericClient,
    kinds: &[&'static Kind],
    limit: usize,
    after: Option<After>,
) -> Result<Vec<DeadLetter>, DbError> {
    let limit_param = i64::try_from(limit).unwrap_or(i64::MAX);
    let (after_at, after_id) = (after.map(|a| a.dead_lettered_at), after.map(|a| a.id));
    let mut letters = Vec::new();
    for &kind in kinds {
        let rows = client
            .query(
                &kind_sql::dead_letters(kind),
                &[&limit_param, &after_at, &after_id],
            )
            .await
            .map_err(|err| DbError::query("listing dead letters", err))?;
        letters.extend(rows.iter().map(|row| DeadLetter {
            kind: kind.name,
            id: row.get("id"),
            due_at: row.get("due_at"),
            dead_lettered_at: row.get("dead_lettered_at"),
            attempts: row.get("attempts"),
            last_error: row.get("last_error"),
        }));
    }
    letters.sort_by_key(|letter| (letter.dead_lettered_at, letter.id));
    letters.truncate(limit);
    Ok(letters)
}

/// Takes dead letters of `kinds` back to pending: those in `ids`, or all of
/// them when `ids` is `None`. Returns what was re-queued, by kind.
pub async fn retry(
    client: &impl GenericClient,
    kinds: &[&'static Kind],
    ids: Option<&[Uuid]>,
) -> Result<Vec<(&'static str, Uuid)>, DbError> {
    change(
        client,
        kinds,
        ids,
        kind_sql::requeue,
        "re-queueing dead letters",
    )
    .await
}

/// Finishes the dead letters in `ids` without delivering them. Returns what
/// was discarded, by kind.
pub async fn discard(
    client: &impl GenericClient,
    ids: &[Uuid],
) -> Result<Vec<(&'static str, Uuid)>, DbError> {
    change(
        client,
        &kinds::ALL,
        Some(ids),
        kind_sql::discard,
        "discarding dead letters",
    )
    .await
}

async fn change(
    client: &impl GenericClient,
    kinds: &[&'static Kind],
    ids: Option<&[Uuid]>,
    statement: fn(&Kind) -> String,
    context: &'static str,
) -> Result<Vec<(&'static str, Uuid)>, DbError> {
    let ids: Option<Vec<Uuid>> = ids.map(<[Uuid]>::to_vec);
    let mut changed = Vec::new();
    for &kind in kinds {
        let rows = client
            .query(&statement(kind), &[&ids])
            .await
            .map_err(|err| DbError::query(context, err))?;
        changed.extend(rows.iter().map(|row| (kind.name, row.get::<_, Uuid>(0))));
    }
    Ok(changed)
}
