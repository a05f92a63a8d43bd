//! The daemon's statements for each kind, written from its declaration
//! ([`crate::kinds::Kind`]): the delivery path's claim, release and next-due,
//! and the maintenance's observation and retention sweep. Every time is read
//! from the database clock.

use crate::kinds::{Expiry, Kind};

/// Claims and marks the oldest due rows of `kind` that no other claim holds,
/// and computes with the database clock whether each is stale and how long it
/// stays useful. The transaction stays open until the broker has confirmed,
/// so none of this is visible before then, and a rollback (crash, timeout)
/// releases every row unchanged. Marking at claim time saves a second pass.
///
/// A row due within the look-ahead is claimed too, and what is computed of
/// it (stale, expiry, `done_at`) is as of its due time, when it will be
/// published. `read_at` is the database clock as the row was returned, after
/// it was marked: the latest reading of a claim bounds how far ahead of
/// their time its rows can still be, closer than the statement's start.
///
/// `$1`: batch size; `$2`: the look-ahead in microseconds. With
/// [`Expiry::AtGameStart`] also `$3`, the stale grace in milliseconds: a row
/// is stale when its game has started and it is more than the grace late (a
/// 0-minute reminder is due exactly at the start and must still go out), and
/// its message expires when it would become stale. With [`Expiry::AtColumn`]
/// a row is stale once that time has passed, and its message expires then.
pub fn claim(kind: &Kind) -> String {
    let Kind {
        table,
        time_column: time,
        progress,
        done_at_column: done_at,
        message,
        ..
    } = kind;
    // When the row is published: now, or its due time if claimed ahead.
    let at = format!("greatest(statement_timestamp(), s.{time})");
    let horizon = "statement_timestamp() + $2::bigint * interval '1 microsecond'";
    let (stale, skipped, expires_in_ms) = match kind.expiry {
        Expiry::AtGameStart => (
            format!(
                "{at} > s.game_scheduled_at \
                 AND {at} > s.{time} + $3::bigint * interval '1 millisecond'"
            ),
            "skipped_stale",
            format!(
                "CASE WHEN s.game_scheduled_at IS NOT NULL THEN \
                   (extract(epoch FROM greatest(s.game_scheduled_at, \
                      s.{time} + $3::bigint * interval '1 millisecond') \
                    - {at}) * 1000)::bigint END"
            ),
        ),
        Expiry::AtColumn(expires) => (
            format!("{at} >= s.{expires}"),
            "expired",
            format!("floor(extract(epoch FROM s.{expires} - {at}) * 1000)::bigint"),
        ),
        Expiry::Never => (
            "false".to_owned(),
            "skipped_stale",
            "NULL::bigint".to_owned(),
        ),
    };
    let pending = progress.pending();
    let mark_done = progress.mark_done(&format!("coalesce({stale}, false)"));
    let columns = message.columns();
    format!(
        "UPDATE {table} AS s \
            SET {mark_done}, {done_at} = {at}, \
                outcome = CASE WHEN coalesce({stale}, false) THEN '{skipped}' ELSE 'published' END, \
                attempts = s.attempts + CASE WHEN coalesce({stale}, false) THEN 0 ELSE 1 END, \
                next_attempt_at = NULL \
           FROM (SELECT ctid FROM {table} \
                  WHERE {pending} AND {time} <= {horizon} \
                    AND (next_attempt_at IS NULL OR next_attempt_at <= {horizon}) \
                  ORDER BY {time} LIMIT $1 \
                    FOR UPDATE SKIP LOCKED) AS due \
          WHERE s.ctid = due.ctid \
         RETURNING s.id, s.{time}, s.outcome <> 'published' AS stale, {expires_in_ms} AS expires_in_ms, \
                   clock_timestamp() AS read_at, \
                   s.traceparent, {columns}"
    )
}

/// Planner settings of a claim's transaction. A claim must walk its kind's
/// pending index in time order and stop at its limit. Right after many rows
/// were written (a herd due at one instant, before autovacuum has analysed
/// the table), the planner estimated a few due rows and chose to read them
/// all and sort them: 63 ms for 200,000 rows before the first 32 could be
/// published, against 0.1 ms in index order. Sorting is never needed here.
pub const CLAIM_PLANNING: &str = "SET LOCAL enable_sort = off";

/// How many of the parameters `$1` (batch size), `$2` (look-ahead) and `$3`
/// (stale grace) the claim of `kind` takes, in that order.
pub fn claim_parameters(kind: &Kind) -> usize {
    match kind.expiry {
        Expiry::AtGameStart => 3,
        Expiry::AtColumn(_) | Expiry::Never => 2,
    }
}

/// Returns claimed rows of `kind` that the broker did not confirm to pending,
/// inside the claim's transaction. A row the broker refused counts the
/// attempt, records why, and waits until its next attempt: the retry delay
/// doubles from `$3` ms up to `$4` ms, jittered over its upper half so that
/// rows refused together are not retried together; after `$5` attempts it
/// is dead-lettered instead. A row nobody answered for (a lost connection)
/// is not counted and is tried again at once.
///
/// `$1`: their ids; `$2`: the refusal of each (NULL: unanswered). Returns the
/// ids dead-lettered.
pub fn release(kind: &Kind) -> String {
    let Kind {
        table,
        progress,
        done_at_column: done_at,
        ..
    } = kind;
    let dead = "(f.refusal IS NOT NULL AND s.attempts >= $5::int)";
    let mark_undelivered = progress.mark_undelivered(dead);
    format!(
        "UPDATE {table} AS s \
            SET {mark_undelivered}, {done_at} = NULL, \
                outcome = CASE WHEN {dead} THEN 'dead_lettered' END, \
                attempts = s.attempts - CASE WHEN f.refusal IS NULL THEN 1 ELSE 0 END, \
                last_error = coalesce(f.refusal, s.last_error), \
                next_attempt_at = CASE WHEN f.refusal IS NOT NULL AND NOT {dead} THEN \
                    statement_timestamp() + least($4::float8, $3::float8 * 2 ^ least(s.attempts - 1, 30)) \
                      * (0.5 + random() * 0.5) * interval '1 millisecond' END, \
                dead_lettered_at = CASE WHEN {dead} THEN statement_timestamp() END \
           FROM unnest($1::uuid[], $2::text[]) AS f(id, refusal) \
          WHERE s.id = f.id \
         RETURNING s.id, {dead} AS dead_lettered"
    )
}

/// The earliest pending row of any of `kinds` outside the caller's in-flight
/// claims, and the delay until it, computed here so that the timer runs on
/// the database clock. A row waiting for its next attempt is due then. Each
/// kind is read twice: the earliest row not waiting, from the pending index,
/// and the earliest next attempt, from the small index of waiting rows.
/// `$1`: ids of the rows this daemon is delivering now.
pub fn next_due<'a>(kinds: impl IntoIterator<Item = &'a Kind>) -> String {
    let earliest: Vec<String> = kinds
        .into_iter()
        .map(|kind| {
            let Kind {
                table,
                time_column: time,
                progress,
                ..
            } = kind;
            let pending = progress.pending();
            format!(
                "(SELECT {time} AS due_at FROM {table} \
                   WHERE {pending} AND next_attempt_at IS NULL AND NOT (id = ANY ($1::uuid[])) \
                   ORDER BY {time} LIMIT 1) \
                 UNION ALL \
                 (SELECT greatest({time}, next_attempt_at) FROM {table} \
                   WHERE {pending} AND next_attempt_at IS NOT NULL AND NOT (id = ANY ($1::uuid[])) \
                   ORDER BY next_attempt_at LIMIT 1)"
            )
        })
        .collect();
    format!(
        "SELECT due_at, \
                greatest(0, extract(epoch FROM due_at - clock_timestamp()) * 1000000)::bigint AS delay_us \
           FROM ({}) AS earliest \
          ORDER BY due_at LIMIT 1",
        earliest.join(" UNION ALL ")
    )
}

/// Up to how many rows the schedule gauges count exactly; past it they
/// report the planner's estimate, so that observing a schedule of any size
/// reads a bounded number of rows.
pub const OBSERVE_EXACT_UP_TO: i64 = 10_000;

/// One row per kind of `kinds`: its name, pending rows, how many are overdue,
/// seconds until the earliest, and how many are dead letters (the gauges).
///
/// Nothing here reads more than about [`OBSERVE_EXACT_UP_TO`] rows of a
/// table. The pending rows are estimated first and counted only when the
/// estimate is within the bound: counting a large schedule every few seconds
/// was the largest load an idle daemon put on its database. Overdue rows and
/// dead letters, normally few, are counted up to the bound from their
/// indexes, and estimated past it. The earliest time is one entry of the
/// pending index.
pub fn observe<'a>(kinds: impl IntoIterator<Item = &'a Kind>) -> String {
    let rows: Vec<String> = kinds
        .into_iter()
        .map(|kind| {
            let Kind {
                name,
                table,
                time_column: time,
                progress,
                ..
            } = kind;
            let pending = progress.pending();
            let overdue = format!("{pending} AND {time} <= statement_timestamp()");
            format!(
                "SELECT '{name}'::text AS kind, \
                        CASE WHEN next_due_s IS NULL THEN 0 ELSE {pending_rows} END AS pending, \
                        {overdue_rows} AS overdue, next_due_s, {dead_rows} AS dead_lettered \
                   FROM (SELECT extract(epoch FROM min({time}) - clock_timestamp())::float8 AS next_due_s \
                           FROM {table} WHERE {pending}) AS earliest",
                pending_rows = estimated_then_counted(table, &pending),
                overdue_rows = counted_then_estimated(table, &overdue),
                dead_rows = counted_then_estimated(table, "dead_lettered_at IS NOT NULL"),
            )
        })
        .collect();
    rows.join(" UNION ALL ")
}

/// Rows of `table` matching `condition`, counted up to one past the bound.
fn bounded_count(table: &str, condition: &str) -> String {
    format!(
        "(SELECT count(*) FROM (SELECT 1 FROM {table} WHERE {condition} \
           LIMIT {limit}) AS bounded)",
        limit = OBSERVE_EXACT_UP_TO + 1
    )
}

/// The planner's estimate of the rows of `table` matching `condition`
/// (migrations/0008_idle_cost.sql).
fn row_estimate(table: &str, condition: &str) -> String {
    format!(
        "notification_scheduler_row_estimate($estimate$SELECT 1 FROM {table} WHERE {condition}$estimate$)"
    )
}

/// Exact up to the bound, the estimate past it (never below the count).
fn counted_then_estimated(table: &str, condition: &str) -> String {
    format!(
        "(SELECT CASE WHEN counted > {bound} THEN greatest(counted, {estimate}) ELSE counted END \
            FROM (SELECT {count} AS counted) AS c)",
        bound = OBSERVE_EXACT_UP_TO,
        count = bounded_count(table, condition),
        estimate = row_estimate(table, condition),
    )
}

/// The estimate when it is past the bound; otherwise the count, up to one
/// past the bound (then the statistics are behind the table).
fn estimated_then_counted(table: &str, condition: &str) -> String {
    format!(
        "(SELECT CASE WHEN estimated > {bound} THEN estimated ELSE {count} END \
            FROM (SELECT {estimate} AS estimated) AS e)",
        bound = OBSERVE_EXACT_UP_TO,
        count = bounded_count(table, condition),
        estimate = row_estimate(table, condition),
    )
}

/// Deletes up to `$2` dealt-with rows of `kind` older than `$1` seconds
/// (the retention sweep), oldest first; rows others have locked are skipped.
/// It reads the index of finished rows by the time it compares
/// (migrations/0008_idle_cost.sql), so a sweep with nothing to delete reads
/// nothing however many rows are pending: the expression and the condition
/// here are the index's.
pub fn delete_expired(kind: &Kind) -> String {
    let Kind {
        table,
        time_column: time,
        progress,
        done_at_column: done_at,
        ..
    } = kind;
    let done = progress.done();
    format!(
        "DELETE FROM {table} \
          WHERE ctid = ANY (ARRAY( \
                SELECT ctid FROM {table} \
                 WHERE {done} AND coalesce({done_at}, {time}) < statement_timestamp() - make_interval(secs => $1) \
                 ORDER BY coalesce({done_at}, {time}) \
                 LIMIT $2 FOR UPDATE SKIP LOCKED))"
    )
}

/// The dead letters of `kind`, oldest first, after the position `$2`
/// (`dead_lettered_at`, `id`; NULLs: from the start), at most `$1`: their
/// kind, id, due time, when and after how many attempts they were
/// dead-lettered, and the last error.
pub fn dead_letters(kind: &Kind) -> String {
    let Kind {
        name,
        table,
        time_column: time,
        ..
    } = kind;
    format!(
        "SELECT '{name}'::text AS kind, id, {time} AS due_at, dead_lettered_at, attempts, last_error \
           FROM {table} \
          WHERE dead_lettered_at IS NOT NULL \
            AND ($2::timestamptz IS NULL OR (dead_lettered_at, id) > ($2, $3::uuid)) \
          ORDER BY dead_lettered_at, id LIMIT $1"
    )
}

/// Takes dead letters of `kind` back to pending with a fresh count of
/// attempts, so the daemon delivers them at once (their trigger notifies it):
/// those whose id is in `$1`, or every one when `$1` is NULL. Returns their ids.
pub fn requeue(kind: &Kind) -> String {
    let Kind {
        table, progress, ..
    } = kind;
    let requeue = progress.requeue();
    format!(
        "UPDATE {table} SET {requeue}, attempts = 0, next_attempt_at = NULL, outcome = NULL \
          WHERE dead_lettered_at IS NOT NULL AND ($1::uuid[] IS NULL OR id = ANY ($1)) \
         RETURNING id"
    )
}

/// Gives up on the dead letters of `kind` whose id is in `$1`: recorded as
/// done with the outcome `discarded`, never delivered, and removed by the
/// retention sweep like every finished row. Returns their ids.
pub fn discard(kind: &Kind) -> String {
    let Kind {
        table,
        progress,
        done_at_column: done_at,
        ..
    } = kind;
    let discard = progress.discard();
    format!(
        "UPDATE {table} SET {discard}, {done_at} = statement_timestamp(), outcome = 'discarded', \
                dead_lettered_at = NULL, next_attempt_at = NULL \
          WHERE dead_lettered_at IS NOT NULL AND id = ANY ($1::uuid[]) \
         RETURNING id"
    )
}
