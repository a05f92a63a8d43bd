//! What the console reads, for every kind from its declaration
//! (`crate::kinds`): the schedule's state, the next events, the last
//! deliveries, the daemons seen recently. Each statement reads through an
//! index and a bounded number of rows, so an open console costs the database
//! little whatever the tables hold.

use chrono::{DateTime, Utc};
use tokio_postgres::GenericClient;
use uuid::Uuid;

use crate::db::{DbError, kind_sql};
use crate::dead_letters;
use crate::kinds::{self, Kind, Subject};

/// How long after its last heartbeat a daemon still counts as seen recently:
/// several heartbeats, so one late write does not make it vanish.
pub const SEEN_RECENTLY: &str = "2 minutes";

/// One kind's state for the overview.
#[derive(Debug, Clone)]
pub struct KindState {
    pub kind: &'static str,
    /// Estimated past [`kind_sql::OBSERVE_EXACT_UP_TO`].
    pub pending: i64,
    pub overdue: i64,
    /// Seconds until the earliest pending event (negative: overdue).
    pub next_due_s: Option<f64>,
    pub dead_lettered: i64,
    /// Published in the last hour.
    pub delivered: i64,
    /// Skipped as stale or expired in the last hour.
    pub skipped: i64,
    /// Claim lateness of those published in the last hour, milliseconds.
    pub lateness_p50_ms: Option<f64>,
    pub lateness_p99_ms: Option<f64>,
}

/// A daemon's last heartbeat.
#[derive(Debug, Clone)]
pub struct DaemonSeen {
    pub instance: String,
    pub version: String,
    pub started_at: DateTime<Utc>,
    pub seen_at: DateTime<Utc>,
    pub ready: bool,
    /// What is not ready and why.
    pub detail: Option<serde_json::Value>,
}

/// A row of any kind, as the lists show it.
#[derive(Debug, Clone)]
pub struct EventRow {
    pub kind: &'static str,
    pub id: Uuid,
    pub due_at: DateTime<Utc>,
    /// When it was claimed (published, skipped, expired) or cancelled.
    pub done_at: Option<DateTime<Utc>>,
    pub outcome: Option<String>,
    pub attempts: i32,
    pub traceparent: Option<String>,
    /// The game's id (as text: adopted databases may use other ids) and title.
    pub game: Option<(String, Option<String>)>,
    /// Which event of the game, or the message's routing key.
    pub label: String,
}

impl EventRow {
    /// Milliseconds from its time to its claim.
    pub fn lateness_ms(&self) -> Option<f64> {
        let done = self.done_at?;
        let micros = (done - self.due_at).num_microseconds()?;
        Some(micros as f64 / 1000.0)
    }
}

/// Which upcoming events to list.
#[derive(Debug, Clone, Default)]
pub struct UpcomingFilter {
    pub kind: Option<&'static Kind>,
    /// A game's id, or part of its title.
    pub game: Option<String>,
    /// Scheduled messages with this routing key.
    pub routing_key: Option<String>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Continue after this (time, id).
    pub after: Option<(DateTime<Utc>, Uuid)>,
}

/// Per kind: the gauges' figures and the last hour's outcomes.
pub async fn overview(client: &impl GenericClient) -> Result<Vec<KindState>, DbError> {
    let observed = client
        .query(&kind_sql::observe(kinds::ALL), &[])
        .await
        .map_err(|err| DbError::query("observing the schedule", err))?;
    let mut states = Vec::new();
    for (kind, row) in kinds::ALL.iter().zip(&observed) {
        let outcomes = client
            .query_one(&last_hour(kind), &[])
            .await
            .map_err(|err| DbError::query("reading the last hour's deliveries", err))?;
        states.push(KindState {
            kind: kind.name,
            pending: row.get("pending"),
            overdue: row.get("overdue"),
            next_due_s: row.get("next_due_s"),
            dead_lettered: row.get("dead_lettered"),
            delivered: outcomes.get("delivered"),
            skipped: outcomes.get("skipped"),
            lateness_p50_ms: outcomes.get("p50_ms"),
            lateness_p99_ms: outcomes.get("p99_ms"),
        });
    }
    Ok(states)
}

/// The last hour's outcomes of `kind`, through its index of finished rows
/// (migrations/0008_idle_cost.sql: the same expression and condition).
fn last_hour(kind: &Kind) -> String {
    let Kind {
        table,
        time_column: time,
        done_at_column: done_at,
        progress,
        ..
    } = kind;
    let lateness = format!("extract(epoch FROM {done_at} - {time}) * 1000");
    format!(
        "SELECT count(*) FILTER (WHERE outcome = 'published') AS delivered, \
                count(*) FILTER (WHERE outcome IN ('skipped_stale', 'expired')) AS skipped, \
                percentile_cont(0.5) WITHIN GROUP (ORDER BY {lateness}) \
                    FILTER (WHERE outcome = 'published') AS p50_ms, \
                percentile_cont(0.99) WITHIN GROUP (ORDER BY {lateness}) \
                    FILTER (WHERE outcome = 'published') AS p99_ms \
           FROM {table} \
          WHERE {done} AND coalesce({done_at}, {time}) > statement_timestamp() - interval '1 hour'",
        done = progress.done(),
    )
}

/// The daemons whose heartbeat is recent (migrations/0009_daemon_heartbeat.sql).
pub async fn daemons(client: &impl GenericClient) -> Result<Vec<DaemonSeen>, DbError> {
    let rows = client
        .query(
            &format!(
                "SELECT instance, version, started_at, seen_at, ready, detail \
                   FROM scheduler_daemon \
                  WHERE seen_at > statement_timestamp() - interval '{SEEN_RECENTLY}' \
                  ORDER BY instance"
            ),
            &[],
        )
        .await
        .map_err(|err| DbError::query("reading the daemons' heartbeats", err))?;
    Ok(rows
        .iter()
        .map(|row| DaemonSeen {
            instance: row.get("instance"),
            version: row.get("version"),
            started_at: row.get("started_at"),
            seen_at: row.get("seen_at"),
            ready: row.get("ready"),
            detail: row.get("detail"),
        })
        .collect())
}

/// The subject columns of `kind`'s rows (alias `s`): the game and its title,
/// the label; and the join they need.
fn subject(kind: &Kind) -> (String, &'static str) {
    match kind.subject {
        Subject::Game { label } => (
            format!("s.game_id::text AS game_id, g.title, {label} AS label"),
            "LEFT JOIN game_sessions g ON g.id = s.game_id",
        ),
        Subject::Message => (
            "NULL::text AS game_id, NULL::text AS title, s.routing_key AS label".to_owned(),
            "",
        ),
    }
}

fn event_row(kind: &'static Kind, row: &tokio_postgres::Row) -> EventRow {
    let game: Option<String> = row.get("game_id");
    EventRow {
        kind: kind.name,
        id: row.get("id"),
        due_at: row.get("due_at"),
        done_at: row.get("done_at"),
        outcome: row.get("outcome"),
        attempts: row.get("attempts"),
        traceparent: row.get("traceparent"),
        game: game.map(|id| (id, row.get("title"))),
        label: row.get("label"),
    }
}

/// Pending events in time order, at most `limit`, matching `filter`.
pub async fn upcoming(
    client: &impl GenericClient,
    filter: &UpcomingFilter,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    let game_id = filter
        .game
        .as_deref()
        .and_then(|game| game.parse::<Uuid>().ok());
    let title = match (&filter.game, game_id) {
        (Some(text), None) => Some(format!("%{}%", like_escaped(text))),
        _ => None,
    };
    let (after_at, after_id) = (filter.after.map(|a| a.0), filter.after.map(|a| a.1));
    let mut events = Vec::new();
    for kind in dead_letters::selected(filter.kind) {
        let game_filter = match kind.subject {
            Subject::Game { .. } => {
                "($5::uuid IS NULL OR s.game_id::text = $5::uuid::text) \
                 AND ($6::text IS NULL OR g.title ILIKE $6) AND $7::text IS NULL"
            }
            Subject::Message => {
                "$5::uuid IS NULL AND $6::text IS NULL \
                 AND ($7::text IS NULL OR s.routing_key = $7)"
            }
        };
        let (columns, join) = subject(kind);
        let Kind {
            table,
            time_column: time,
            progress,
            ..
        } = kind;
        let sql = format!(
            "SELECT s.id, s.{time} AS due_at, NULL::timestamptz AS done_at, s.outcome, s.attempts, \
                    s.traceparent, {columns} \
               FROM {table} s {join} \
              WHERE {pending} \
                AND ($1::timestamptz IS NULL OR s.{time} >= $1) \
                AND ($2::timestamptz IS NULL OR s.{time} < $2) \
                AND ($3::timestamptz IS NULL OR (s.{time}, s.id) > ($3, $4::uuid)) \
                AND {game_filter} \
              ORDER BY s.{time}, s.id LIMIT $8",
            pending = progress.pending_of("s."),
        );
        let rows = client
            .query(
                &sql,
                &[
                    &filter.from,
                    &filter.to,
                    &after_at,
                    &after_id,
                    &game_id,
                    &title,
                    &filter.routing_key,
                    &limit,
                ],
            )
            .await
            .map_err(|err| DbError::query("listing upcoming events", err))?;
        events.extend(rows.iter().map(|row| event_row(kind, row)));
    }
    events.sort_by_key(|event| (event.due_at, event.id));
    events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(events)
}

/// The last `limit` events dealt with (published, skipped, expired,
/// cancelled), newest first, of one kind or all.
pub async fn recent(
    client: &impl GenericClient,
    kind: Option<&'static Kind>,
    limit: i64,
) -> Result<Vec<EventRow>, DbError> {
    let mut events = Vec::new();
    for kind in dead_letters::selected(kind) {
        let (columns, join) = subject(kind);
        let Kind {
            table,
            time_column: time,
            done_at_column: done_at,
            progress,
            ..
        } = kind;
        // The order and condition are those of the index of finished rows.
        let sql = format!(
            "SELECT s.id, s.{time} AS due_at, s.{done_at} AS done_at, s.outcome, s.attempts, \
                    s.traceparent, {columns} \
               FROM {table} s {join} \
              WHERE {done} \
              ORDER BY coalesce(s.{done_at}, s.{time}) DESC LIMIT $1",
            done = progress.done_of("s."),
        );
        let rows = client
            .query(&sql, &[&limit])
            .await
            .map_err(|err| DbError::query("listing recent deliveries", err))?;
        events.extend(rows.iter().map(|row| event_row(kind, row)));
    }
    events.sort_by_key(|event| std::cmp::Reverse(event.done_at.unwrap_or(event.due_at)));
    events.truncate(usize::try_from(limit).unwrap_or(usize::MAX));
    Ok(events)
}

/// `text` with LIKE's wildcards taken literally.
fn like_escaped(text: &str) -> String {
    text.replace('\\', "\\\\")
        .replace('%', "\\%")
        .replace('_', "\\_")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn like_wildcards_are_literal() {
        assert_eq!(like_escaped(r"50%_off\"), r"50\%\_off\\");
    }
}
