//! The daemon's side of `notification_schedule`: claim due rows, find the next
//! deadline, record outcomes. Every time is read from the database clock.

use std::time::Duration;

use actors::model::{DueReminder, NextDue};
use actors::ports::{Claim, PortError, ScheduleStore};
use deadpool_postgres::{Object, Pool};
use uuid::Uuid;

use super::DbError;
use crate::config::DatabaseUrl;

/// Claims and marks the oldest due rows that no other claim holds, and
/// computes with the database clock whether each is stale and how long it
/// stays useful.
pub const CLAIM_DUE: &str = include_str!("sql/claim_due.sql");
/// The earliest pending row outside the caller's in-flight claims.
pub const NEXT_DUE: &str = include_str!("sql/next_due.sql");
/// Returns claimed rows the broker did not confirm to pending.
const RELEASE_CLAIMED: &str = include_str!("sql/release_claimed.sql");

/// Settings of the store.
#[derive(Debug, Clone)]
pub struct StoreSettings {
    /// Longest time a claim may stay open; the server ends the session (and
    /// releases the rows) when a claimer stays idle in its transaction longer.
    pub claim_timeout: Duration,
    /// A reminder whose game has started is still published if it is at most
    /// this late.
    pub stale_grace: Duration,
    /// Client-side bound on every statement.
    pub query_timeout: Duration,
}

/// [`ScheduleStore`] on a PostgreSQL pool.
#[derive(Clone)]
pub struct PgScheduleStore {
    pool: Pool,
    url: DatabaseUrl,
    settings: StoreSettings,
    begin_claim: String,
}

impl PgScheduleStore {
    /// A store using connections of `pool`, which connects to `url`.
    pub fn new(pool: Pool, url: DatabaseUrl, settings: StoreSettings) -> Self {
        let begin_claim = format!(
            "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {idle}; \
             SET LOCAL statement_timeout = {statement}",
            idle = settings.claim_timeout.as_millis().max(1),
            statement = settings.query_timeout.as_millis().max(1),
        );
        Self {
            pool,
            url,
            settings,
            begin_claim,
        }
    }

    async fn session(&self) -> Result<Session, DbError> {
        self.pool
            .get()
            .await
            .map(|client| Session(Some(client)))
            .map_err(|err| super::pool_error(&self.url, err))
    }

    async fn bounded<T>(
        &self,
        context: &'static str,
        future: impl Future<Output = Result<T, tokio_postgres::Error>>,
    ) -> Result<T, DbError> {
        match tokio::time::timeout(self.settings.query_timeout, future).await {
            Ok(result) => result.map_err(|err| DbError::query(context, err)),
            Err(_) => Err(DbError::timed_out(context, self.settings.query_timeout)),
        }
    }
}

impl ScheduleStore for PgScheduleStore {
    type Claim = PgClaim;

    async fn claim_due(&self, limit: usize) -> Result<PgClaim, PortError> {
        let client = self.session().await?;
        let statement = self
            .bounded(
                "preparing the claim query",
                client.prepare_cached(CLAIM_DUE),
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let grace_ms = i64::try_from(self.settings.stale_grace.as_millis()).unwrap_or(i64::MAX);
        // BEGIN and the claim go out in one pipelined round trip.
        let claimed = self
            .bounded("claiming due reminders", async {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&limit, &grace_ms];
                let (begun, rows) = tokio::join!(
                    client.batch_execute(&self.begin_claim),
                    client.query(&statement, &params)
                );
                begun?;
                rows
            })
            .await;
        let mut claim = PgClaim {
            client: Some(client.into_inner()),
            reminders: Vec::new(),
            query_timeout: self.settings.query_timeout,
        };
        let rows = claimed?;
        claim.reminders = rows.iter().map(reminder_from_row).collect();
        // UPDATE … RETURNING does not promise the subquery's order.
        claim
            .reminders
            .sort_by_key(|reminder| reminder.notification_time);
        Ok(claim)
    }

    async fn next_due(&self, in_flight: &[Uuid]) -> Result<Option<NextDue>, PortError> {
        let client = self.session().await?;
        let statement = self
            .bounded(
                "preparing the next-due query",
                client.prepare_cached(NEXT_DUE),
            )
            .await?;
        let row = self
            .bounded(
                "reading the next due reminder",
                client.query_opt(&statement, &[&in_flight]),
            )
            .await?;
        client.release();
        Ok(row.map(|row| NextDue {
            at: row.get(0),
            delay: Duration::from_micros(u64::try_from(row.get::<_, i64>(1)).unwrap_or(0)),
        }))
    }
}

/// Decodes a row of `claim_due.sql`'s RETURNING list, by position.
fn reminder_from_row(row: &tokio_postgres::Row) -> DueReminder {
    let expires_in_ms: Option<i64> = row.get(5);
    let lateness_us: i64 = row.get(6);
    DueReminder {
        id: row.get(0),
        game_id: row.get(1),
        reminder_minutes: row.get(2),
        notification_time: row.get(3),
        stale: row.get(4),
        expires_in: expires_in_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        lateness: Duration::from_micros(u64::try_from(lateness_us).unwrap_or(0)),
        traceparent: row.get(7),
    }
}

/// Rows claimed inside an open transaction on a pooled connection.
pub struct PgClaim {
    /// `None` once finished.
    client: Option<Object>,
    reminders: Vec<DueReminder>,
    query_timeout: Duration,
}

impl Claim for PgClaim {
    fn reminders(&self) -> &[DueReminder] {
        &self.reminders
    }

    async fn commit(mut self, undelivered: Vec<Uuid>) -> Result<(), PortError> {
        // Cancelled or failed half-way, the session closes the connection.
        let client = Session(self.client.take());
        let nothing_delivered = undelivered.len() == self.reminders.len();
        let committed = tokio::time::timeout(self.query_timeout, async {
            if nothing_delivered {
                return client.batch_execute("ROLLBACK").await;
            }
            if undelivered.is_empty() {
                return client.batch_execute("COMMIT").await;
            }
            let statement = client.prepare_cached(RELEASE_CLAIMED).await?;
            // The release and the commit go out in one pipelined round trip.
            // If the release fails, the server answers COMMIT with a rollback.
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&undelivered];
            let (released, committed) = tokio::join!(
                client.execute(&statement, &params),
                client.batch_execute("COMMIT")
            );
            released?;
            committed
        })
        .await;
        match committed {
            Ok(Ok(())) => {
                client.release();
                Ok(())
            }
            Ok(Err(err)) => Err(DbError::query("recording delivered reminders", err).into()),
            Err(_) => {
                Err(DbError::timed_out("recording delivered reminders", self.query_timeout).into())
            }
        }
    }
}

impl Drop for PgClaim {
    fn drop(&mut self) {
        if let Some(client) = self.client.take() {
            discard(client);
        }
    }
}

/// A pooled connection that goes back to the pool only when its user releases
/// it in a known state. Dropped any other way (an error, a timeout that may
/// have left a half-open socket, a round task aborted while `BEGIN` was in
/// flight) it is closed, so no later user inherits a dead connection or an
/// open transaction.
struct Session(Option<Object>);

impl Session {
    /// Returns the connection to the pool.
    fn release(mut self) {
        drop(self.0.take());
    }

    /// Hands the connection to an owner that takes over the same duty.
    fn into_inner(mut self) -> Object {
        self.0.take().expect("a session is taken once")
    }
}

impl std::ops::Deref for Session {
    type Target = Object;

    fn deref(&self) -> &Object {
        self.0.as_ref().expect("a session is used until taken")
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            discard(client);
        }
    }
}

/// Closes a connection that may still be inside a claim transaction instead of
/// returning it to the pool: the server then rolls back and releases the rows at
/// once, and no later user inherits a transaction in an unknown state.
fn discard(client: Object) {
    drop(Object::take(client));
}
