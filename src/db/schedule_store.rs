//! The daemon's side of the schedule tables, one per kind: claim due rows,
//! find the next deadline, record outcomes. Every time is read from the
//! database clock; the statements are written from each kind's declaration
//! (`kind_sql`).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::model::{Body, DueEvent, NextDue, Outbound};
use actors::ports::{Claim, PortError, RetryPolicy, ScheduleStore, Undelivered};
use chrono::{DateTime, Utc};
use deadpool_postgres::{Object, Pool};
use futures_util::future::try_join_all;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::{DbError, kind_sql};
use crate::config::DatabaseUrl;
use crate::kinds::{Delivered, Message};

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
    /// When events the broker refused are tried again, and how often.
    pub retry: RetryPolicy,
}

/// One kind with its statements.
struct KindQueries {
    delivered: Delivered,
    claim: String,
    release: String,
}

/// [`ScheduleStore`] on a PostgreSQL pool, for every kind it is given.
#[derive(Clone)]
pub struct PgScheduleStore {
    pool: Pool,
    url: DatabaseUrl,
    settings: StoreSettings,
    begin_claim: String,
    kinds: Arc<[KindQueries]>,
    next_due: Arc<str>,
}

impl PgScheduleStore {
    /// A store for `kinds`, using connections of `pool`, which connects to `url`.
    pub fn new(
        pool: Pool,
        url: DatabaseUrl,
        settings: StoreSettings,
        kinds: Vec<Delivered>,
    ) -> Self {
        let begin_claim = format!(
            "BEGIN; SET LOCAL idle_in_transaction_session_timeout = {idle}; \
             SET LOCAL statement_timeout = {statement}; {planning}",
            idle = settings.claim_timeout.as_millis().max(1),
            statement = settings.query_timeout.as_millis().max(1),
            planning = kind_sql::CLAIM_PLANNING,
        );
        let next_due = kind_sql::next_due(kinds.iter().map(|delivered| delivered.kind)).into();
        let kinds = kinds
            .into_iter()
            .map(|delivered| KindQueries {
                claim: kind_sql::claim(delivered.kind),
                release: kind_sql::release(delivered.kind),
                delivered,
            })
            .collect();
        Self {
            pool,
            url,
            settings,
            begin_claim,
            kinds,
            next_due,
        }
    }

    /// Opens every connection of the pool and runs an empty claim and the
    /// next-due query on each. A burst of claims (a herd due at one instant, a
    /// backlog found at start) otherwise opens connections while its first
    /// rows are due, and each new server process plans and runs its first
    /// claim several times slower than the next: a herd's second claim on a
    /// new connection answered after 6.5 ms, the instant long past. Nothing is
    /// claimed; a connection that fails here is made again when needed.
    pub async fn warm_up(&self) -> Result<(), PortError> {
        let connections = self.pool.status().max_size;
        // All asked for at once, so each takes a connection of its own.
        try_join_all((0..connections).map(|_| async {
            self.claim_due(0, Duration::ZERO).await?;
            self.next_due(&[]).await
        }))
        .await?;
        Ok(())
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
            Err(_) => {
                close_idle(&self.pool);
                Err(DbError::timed_out(context, self.settings.query_timeout))
            }
        }
    }
}

impl ScheduleStore for PgScheduleStore {
    type Claim = PgClaim;

    async fn claim_due(&self, limit: usize, ahead: Duration) -> Result<PgClaim, PortError> {
        let client = self.session().await?;
        let statements = self
            .bounded(
                "preparing the claim queries",
                try_join_all(
                    self.kinds
                        .iter()
                        .map(|kind| client.prepare_cached(&kind.claim)),
                ),
            )
            .await?;
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        let ahead_us = i64::try_from(ahead.as_micros()).unwrap_or(i64::MAX);
        let grace_ms = i64::try_from(self.settings.stale_grace.as_millis()).unwrap_or(i64::MAX);
        // BEGIN and every kind's claim go out in one pipelined round trip.
        let parameters: [&(dyn ToSql + Sync); 3] = [&limit, &ahead_us, &grace_ms];
        let claimed = self
            .bounded("claiming due events", async {
                let claims = self.kinds.iter().zip(&statements).map(|(kind, statement)| {
                    let params = &parameters[..kind_sql::claim_parameters(kind.delivered.kind)];
                    client.query(statement, params)
                });
                let (begun, rows) = tokio::join!(
                    client.batch_execute(&self.begin_claim),
                    try_join_all(claims)
                );
                begun?;
                rows
            })
            .await;
        let claimed = claimed?;
        let mut claim = PgClaim {
            client: None,
            pool: self.pool.clone(),
            events: Vec::new(),
            kinds: Arc::clone(&self.kinds),
            query_timeout: self.settings.query_timeout,
            retry: self.settings.retry,
        };
        if claimed.iter().all(Vec::is_empty) {
            // Nothing is locked: end the transaction and keep the connection.
            // Closing it, as a claim holding rows must when it is dropped,
            // made the next query of every empty round (each timer that woke
            // a hair early by the database clock, each safety check) wait for
            // a new connection and its cold caches.
            self.bounded("ending an empty claim", client.batch_execute("COMMIT"))
                .await?;
            client.release();
            return Ok(claim);
        }
        claim.client = Some(client.into_inner());
        let mut latest_reading = None;
        for (kind, rows) in self.kinds.iter().zip(claimed) {
            for row in &rows {
                latest_reading = latest_reading.max(Some(row.get::<_, DateTime<Utc>>("read_at")));
                claim.events.push(event_from_row(&kind.delivered, row));
            }
        }
        if let Some(now) = latest_reading {
            time_events(&mut claim.events, now);
        }
        // Oldest first across kinds; UPDATE … RETURNING does not promise the
        // subquery's order either.
        claim.events.sort_by_key(|event| event.due_at);
        Ok(claim)
    }

    async fn next_due(&self, in_flight: &[Uuid]) -> Result<Option<NextDue>, PortError> {
        let client = self.session().await?;
        let statement = self
            .bounded(
                "preparing the next-due query",
                client.prepare_cached(&self.next_due),
            )
            .await?;
        let row = self
            .bounded(
                "reading the next due event",
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

/// Sets how late, or how far ahead of its time, each claimed event is by
/// `now`, the latest database clock reading of the claim. A row marked at
/// the start of a long claim (hundreds of rows of a herd take milliseconds)
/// would otherwise be held back by that time once more before its publish.
fn time_events(events: &mut [DueEvent], now: DateTime<Utc>) {
    for event in events {
        let late = now - event.due_at;
        event.lateness = late.to_std().unwrap_or_default();
        event.ahead = (-late).to_std().unwrap_or_default();
    }
}

/// Decodes a row of a kind's claim (`kind_sql::claim`), by column name.
fn event_from_row(delivered: &Delivered, row: &tokio_postgres::Row) -> DueEvent {
    let kind = delivered.kind;
    let expires_in_ms: Option<i64> = row.get("expires_in_ms");
    let message = match (&kind.message, &delivered.routing_key) {
        (Message::Envelope(envelope), Some(routing_key)) => Outbound {
            exchange: None,
            routing_key: Arc::clone(routing_key),
            body: Body::Envelope {
                event_type: envelope.event_type,
                data: Arc::new((envelope.data)(row)),
            },
        },
        _ => stored_message(row),
    };
    DueEvent {
        kind: kind.name,
        id: row.get("id"),
        due_at: row.get(kind.time_column),
        stale: row.get("stale"),
        expires_in: expires_in_ms.map(|ms| Duration::from_millis(u64::try_from(ms).unwrap_or(0))),
        // Set from the claim's latest clock reading (`time_events`).
        lateness: Duration::ZERO,
        ahead: Duration::ZERO,
        traceparent: row.get("traceparent"),
        message,
    }
}

/// The message a row of a [`Message::Stored`] kind holds.
fn stored_message(row: &tokio_postgres::Row) -> Outbound {
    let exchange: Option<String> = row.get("exchange");
    let routing_key: String = row.get("routing_key");
    let payload: String = row.get("payload");
    // The table's CHECK keeps headers an object.
    let headers = match row.get::<_, Option<serde_json::Value>>("headers") {
        Some(serde_json::Value::Object(headers)) => Some(Arc::new(headers)),
        _ => None,
    };
    Outbound {
        exchange: exchange.map(Arc::from),
        routing_key: Arc::from(routing_key),
        body: Body::Stored {
            payload: Arc::from(payload),
            headers,
        },
    }
}

/// Rows claimed inside an open transaction on a pooled connection.
pub struct PgClaim {
    /// `None` once finished, and for an empty claim (its transaction ended
    /// when it was made).
    client: Option<Object>,
    /// Whose idle connections a commit that times out closes.
    pool: Pool,
    events: Vec<DueEvent>,
    kinds: Arc<[KindQueries]>,
    query_timeout: Duration,
    retry: RetryPolicy,
}

impl Claim for PgClaim {
    fn events(&self) -> &[DueEvent] {
        &self.events
    }

    async fn commit(mut self, undelivered: Vec<Undelivered>) -> Result<Vec<Uuid>, PortError> {
        // An empty claim ended its transaction when it was made.
        let Some(client) = self.client.take() else {
            return Ok(Vec::new());
        };
        // Cancelled or failed half-way, the session closes the connection.
        let client = Session(Some(client));
        let kind_of: HashMap<Uuid, &str> = self.events.iter().map(|e| (e.id, e.kind)).collect();
        let mut by_kind: HashMap<&str, Released> = HashMap::new();
        for failed in undelivered {
            if let Some(kind) = kind_of.get(&failed.id) {
                let (ids, refusals) = by_kind.entry(kind).or_default();
                ids.push(failed.id);
                refusals.push(failed.refusal);
            }
        }
        let releases: Vec<(&KindQueries, Released)> = self
            .kinds
            .iter()
            .filter_map(|kind| {
                by_kind
                    .remove(kind.delivered.kind.name)
                    .map(|failed| (kind, failed))
            })
            .collect();
        let millis = |d: Duration| d.as_secs_f64() * 1_000.0;
        let (base_ms, max_ms) = (millis(self.retry.base), millis(self.retry.max));
        let max_attempts = i32::try_from(self.retry.max_attempts).unwrap_or(i32::MAX);
        let committed = tokio::time::timeout(self.query_timeout, async {
            let statements = try_join_all(
                releases
                    .iter()
                    .map(|(kind, _)| client.prepare_cached(&kind.release)),
            )
            .await?;
            // The releases and the commit go out in one pipelined round trip.
            // If a release fails, the server answers COMMIT with a rollback.
            let params: Vec<[&(dyn ToSql + Sync); 5]> = releases
                .iter()
                .map(|(_, (ids, refusals))| {
                    [
                        ids as &(dyn ToSql + Sync),
                        refusals,
                        &base_ms,
                        &max_ms,
                        &max_attempts,
                    ]
                })
                .collect();
            let released = statements
                .iter()
                .zip(&params)
                .map(|(statement, params)| client.query(statement, params));
            let (released, committed) =
                tokio::join!(try_join_all(released), client.batch_execute("COMMIT"));
            let released = released?;
            committed?;
            Ok::<_, tokio_postgres::Error>(
                released
                    .iter()
                    .flatten()
                    .filter(|row| row.get::<_, bool>("dead_lettered"))
                    .map(|row| row.get::<_, Uuid>("id"))
                    .collect(),
            )
        })
        .await;
        match committed {
            Ok(Ok(dead_lettered)) => {
                client.release();
                Ok(dead_lettered)
            }
            Ok(Err(err)) => Err(DbError::query("recording delivered events", err).into()),
            Err(_) => {
                close_idle(&self.pool);
                Err(DbError::timed_out("recording delivered events", self.query_timeout).into())
            }
        }
    }
}

/// Undelivered rows of one kind, as the release statement takes them: their
/// ids, and the refusal of each.
type Released = (Vec<Uuid>, Vec<Option<String>>);

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

/// Closes the pool's idle connections after a statement timed out: they share
/// the path that just went silent (a black-holed network, a failed-over
/// server), and each would otherwise cost the next claims a timeout of its own.
fn close_idle(pool: &Pool) {
    pool.retain(|_, _| false);
}

/// Closes a connection that may still be inside a claim transaction instead of
/// returning it to the pool: the server then rolls back and releases the rows at
/// once, and no later user inherits a transaction in an unknown state.
fn discard(client: Object) {
    drop(Object::take(client));
}
