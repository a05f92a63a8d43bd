//! In-memory fakes of the ports, on tokio's clock so tests can pause time.
//! The fake store is held to the same contract as the PostgreSQL store
//! ([`super::contract`]).

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use tokio::time::Instant;
use uuid::Uuid;

use crate::model::{Body, DueEvent, NextDue, Outbound, PublishOutcome};
use crate::ports::{
    BrokerConnector, BrokerEvent, BrokerSession, Claim, EventSink, ListenConnector, ListenEvent,
    ListenSession, PendingConfirms, PortError, RetryPolicy, ScheduleStore, Undelivered,
};

/// What a committed claim recorded for a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Disposition {
    Published,
    SkippedStale,
}

/// A row of the fake schedule.
#[derive(Debug, Clone)]
pub struct FakeRow {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub game_starts: Option<DateTime<Utc>>,
    pub done: Option<Disposition>,
    pub locked: bool,
    /// Publishes the broker answered.
    pub attempts: u32,
    /// Why the broker last refused it.
    pub last_error: Option<String>,
    /// Not claimed before this.
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub dead_lettered: bool,
}

#[derive(Default)]
struct StoreInner {
    rows: Vec<FakeRow>,
    next_due_queries: usize,
    claims: usize,
    failing: Option<String>,
    hanging: bool,
}

/// A schedule table whose clock is tokio's (pausable) clock.
#[derive(Clone)]
pub struct FakeStore {
    inner: Arc<Mutex<StoreInner>>,
    epoch: (Instant, DateTime<Utc>),
    stale_grace: Duration,
    retry: RetryPolicy,
}

impl Default for FakeStore {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeStore {
    pub fn new() -> Self {
        Self {
            inner: Arc::default(),
            epoch: (Instant::now(), "2030-01-01T00:00:00Z".parse().unwrap()),
            stale_grace: Duration::from_secs(60),
            retry: RetryPolicy {
                base: Duration::from_secs(1),
                max: Duration::from_secs(60),
                max_attempts: 3,
            },
        }
    }

    /// The same store retrying refused events by `retry`.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Self {
        self.retry = retry;
        self
    }

    /// The database clock.
    pub fn now(&self) -> DateTime<Utc> {
        self.epoch.1 + chrono::Duration::from_std(self.epoch.0.elapsed()).unwrap()
    }

    /// Adds a reminder due `after` from now; returns its id.
    pub fn insert(&self, after: Duration) -> Uuid {
        self.insert_row(after, None)
    }

    pub fn insert_row(&self, after: Duration, game_starts_after: Option<Duration>) -> Uuid {
        let ahead = |d: Duration| TimeDelta::from_std(d).unwrap();
        self.insert_at(ahead(after), game_starts_after.map(ahead))
    }

    /// Adds a reminder that became due `ago`, for a game that started `game_started_ago`.
    pub fn insert_overdue(&self, ago: Duration, game_started_ago: Option<Duration>) -> Uuid {
        let behind = |d: Duration| -TimeDelta::from_std(d).unwrap();
        self.insert_at(behind(ago), game_started_ago.map(behind))
    }

    /// Adds a reminder due at now + `due_in` (negative: overdue), for a game
    /// starting at now + `game_starts_in`.
    pub fn insert_at(&self, due_in: TimeDelta, game_starts_in: Option<TimeDelta>) -> Uuid {
        let id = Uuid::new_v4();
        let now = self.now();
        let at = now + due_in;
        let game_starts = game_starts_in.map(|offset| now + offset);
        self.lock().rows.push(FakeRow {
            id,
            at,
            game_starts,
            done: None,
            locked: false,
            attempts: 0,
            last_error: None,
            next_attempt_at: None,
            dead_lettered: false,
        });
        id
    }

    pub fn remove(&self, id: Uuid) {
        self.lock().rows.retain(|row| row.id != id);
    }

    pub fn set_locked(&self, id: Uuid, locked: bool) {
        self.with_row(id, |row| row.locked = locked);
    }

    pub fn row(&self, id: Uuid) -> FakeRow {
        self.lock()
            .rows
            .iter()
            .find(|row| row.id == id)
            .cloned()
            .expect("row exists")
    }

    pub fn pending(&self) -> usize {
        self.lock()
            .rows
            .iter()
            .filter(|row| row.done.is_none() && !row.dead_lettered)
            .count()
    }

    pub fn next_due_queries(&self) -> usize {
        self.lock().next_due_queries
    }

    pub fn claims(&self) -> usize {
        self.lock().claims
    }

    /// Makes claims never return (a hung statement), or return again.
    pub fn hang_claims(&self, hanging: bool) {
        self.lock().hanging = hanging;
    }

    /// Makes every query fail with `reason` (or succeed again with `None`).
    pub fn fail_with(&self, reason: Option<&str>) {
        self.lock().failing = reason.map(str::to_owned);
    }

    fn with_row(&self, id: Uuid, change: impl FnOnce(&mut FakeRow)) {
        if let Some(row) = self.lock().rows.iter_mut().find(|row| row.id == id) {
            change(row);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, StoreInner> {
        self.inner.lock().unwrap()
    }

    fn check(&self) -> Result<(), PortError> {
        match &self.lock().failing {
            Some(reason) => Err(PortError::transient(reason.clone())),
            None => Ok(()),
        }
    }
}

impl ScheduleStore for FakeStore {
    type Claim = FakeClaim;

    async fn claim_due(&self, limit: usize, ahead: Duration) -> Result<FakeClaim, PortError> {
        self.check()?;
        if self.lock().hanging {
            self.lock().claims += 1;
            std::future::pending::<()>().await;
        }
        let now = self.now();
        let horizon = now + chrono::Duration::from_std(ahead).unwrap();
        let grace = chrono::Duration::from_std(self.stale_grace).unwrap();
        let mut inner = self.lock();
        inner.claims += 1;
        let mut due: Vec<&mut FakeRow> = inner
            .rows
            .iter_mut()
            .filter(|row| {
                row.done.is_none()
                    && !row.dead_lettered
                    && !row.locked
                    && row.at <= horizon
                    && row.next_attempt_at.is_none_or(|at| at <= horizon)
            })
            .collect();
        due.sort_by_key(|row| row.at);
        let events = due
            .into_iter()
            .take(limit)
            .map(|row| {
                row.locked = true;
                // What the store computes is as of the event's publication.
                let at = now.max(row.at);
                let stale = row
                    .game_starts
                    .is_some_and(|starts| at > starts && at > row.at + grace);
                DueEvent {
                    kind: "reminder",
                    id: row.id,
                    due_at: row.at,
                    stale,
                    expires_in: row.game_starts.map(|starts| {
                        (starts.max(row.at + grace) - at)
                            .to_std()
                            .unwrap_or_default()
                    }),
                    lateness: (now - row.at).to_std().unwrap_or_default(),
                    ahead: (row.at - now).to_std().unwrap_or_default(),
                    traceparent: None,
                    message: Outbound {
                        exchange: None,
                        routing_key: "game.reminder_due".into(),
                        body: Body::Envelope {
                            event_type: "game.reminder_due",
                            data: Arc::new(
                                serde_json::json!({ "game_id": "game", "reminder_minutes": 0 }),
                            ),
                        },
                    },
                }
            })
            .collect();
        Ok(FakeClaim {
            store: self.clone(),
            events,
            finished: false,
        })
    }

    async fn next_due(&self, in_flight: &[Uuid]) -> Result<Option<NextDue>, PortError> {
        self.check()?;
        let now = self.now();
        let mut inner = self.lock();
        inner.next_due_queries += 1;
        Ok(inner
            .rows
            .iter()
            .filter(|row| row.done.is_none() && !row.dead_lettered && !in_flight.contains(&row.id))
            .map(|row| {
                row.next_attempt_at
                    .map_or(row.at, |retry| retry.max(row.at))
            })
            .min()
            .map(|at| NextDue {
                at,
                delay: (at - now).to_std().unwrap_or_default(),
            }))
    }
}

/// A claim on fake rows; dropping it unlocks them.
pub struct FakeClaim {
    store: FakeStore,
    events: Vec<DueEvent>,
    finished: bool,
}

impl Claim for FakeClaim {
    fn events(&self) -> &[DueEvent] {
        &self.events
    }

    async fn commit(mut self, undelivered: Vec<Undelivered>) -> Result<Vec<Uuid>, PortError> {
        self.store.check()?;
        let now = self.store.now();
        let retry = self.store.retry;
        let mut dead_lettered = Vec::new();
        for event in &self.events {
            let failure = undelivered.iter().find(|u| u.id == event.id);
            self.store.with_row(event.id, |row| match failure {
                None if event.stale => row.done = Some(Disposition::SkippedStale),
                None => {
                    row.attempts += 1;
                    row.next_attempt_at = None;
                    row.done = Some(Disposition::Published);
                }
                Some(Undelivered { refusal: None, .. }) => {}
                Some(Undelivered {
                    refusal: Some(reason),
                    ..
                }) => {
                    row.attempts += 1;
                    row.last_error = Some(reason.clone());
                    if row.attempts >= retry.max_attempts {
                        row.dead_lettered = true;
                        row.next_attempt_at = None;
                        dead_lettered.push(row.id);
                    } else {
                        let delay = TimeDelta::from_std(retry.delay(row.attempts)).unwrap();
                        row.next_attempt_at = Some(now + delay);
                    }
                }
            });
        }
        self.release();
        self.finished = true;
        Ok(dead_lettered)
    }
}

impl FakeClaim {
    fn release(&self) {
        for event in &self.events {
            self.store.with_row(event.id, |row| row.locked = false);
        }
    }
}

impl Drop for FakeClaim {
    fn drop(&mut self) {
        if !self.finished {
            self.release();
        }
    }
}

/// A published message as the fake broker saw it.
#[derive(Debug, Clone)]
pub struct Published {
    pub id: Uuid,
    pub at: DateTime<Utc>,
    pub stale: bool,
}

#[derive(Default)]
struct BrokerInner {
    published: Vec<Published>,
    /// Outcomes for the next messages, consumed in order; confirmed by default.
    scripted: VecDeque<PublishOutcome>,
    connect_failures: VecDeque<PortError>,
    connects: usize,
    /// When each connection attempt was made.
    connect_times: Vec<Instant>,
    batch_sizes: Vec<usize>,
    events: Option<EventSink<BrokerEvent>>,
    confirm_delay: Duration,
}

/// A broker that records every message with the fake store's clock.
#[derive(Clone)]
pub struct FakeBroker {
    inner: Arc<Mutex<BrokerInner>>,
    store: FakeStore,
}

impl FakeBroker {
    pub fn new(store: &FakeStore) -> Self {
        Self {
            inner: Arc::default(),
            store: store.clone(),
        }
    }

    pub fn published(&self) -> Vec<Published> {
        self.lock().published.clone()
    }

    pub fn batch_sizes(&self) -> Vec<usize> {
        self.lock().batch_sizes.clone()
    }

    pub fn connects(&self) -> usize {
        self.lock().connects
    }

    /// The time between consecutive connection attempts.
    pub fn connect_gaps(&self) -> Vec<Duration> {
        self.lock()
            .connect_times
            .windows(2)
            .map(|pair| pair[1] - pair[0])
            .collect()
    }

    pub fn script(&self, outcomes: impl IntoIterator<Item = PublishOutcome>) {
        self.lock().scripted.extend(outcomes);
    }

    pub fn fail_next_connects(&self, errors: impl IntoIterator<Item = PortError>) {
        self.lock().connect_failures.extend(errors);
    }

    pub fn set_confirm_delay(&self, delay: Duration) {
        self.lock().confirm_delay = delay;
    }

    /// Sends an event on the current session's event channel.
    pub fn emit(&self, event: BrokerEvent) {
        let events = self.lock().events.clone();
        if let Some(events) = events {
            events.send(event);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BrokerInner> {
        self.inner.lock().unwrap()
    }
}

impl BrokerConnector for FakeBroker {
    type Session = FakeBroker;

    async fn connect(&self, events: EventSink<BrokerEvent>) -> Result<FakeBroker, PortError> {
        let mut inner = self.lock();
        inner.connects += 1;
        inner.connect_times.push(Instant::now());
        if let Some(err) = inner.connect_failures.pop_front() {
            return Err(err);
        }
        inner.events = Some(events);
        Ok(self.clone())
    }
}

impl BrokerSession for FakeBroker {
    fn publish(&self, events: Vec<DueEvent>) -> PendingConfirms {
        let now = self.store.now();
        let mut inner = self.lock();
        inner.batch_sizes.push(events.len());
        let outcomes: Vec<PublishOutcome> = events
            .iter()
            .map(|event| {
                inner.published.push(Published {
                    id: event.id,
                    at: now,
                    stale: event.stale,
                });
                inner
                    .scripted
                    .pop_front()
                    .unwrap_or(PublishOutcome::Confirmed)
            })
            .collect();
        let delay = inner.confirm_delay;
        Box::pin(async move {
            tokio::time::sleep(delay).await;
            outcomes
        })
    }

    async fn close(&self) {}
}

#[derive(Default)]
struct FeedInner {
    connects: usize,
    events: Option<EventSink<ListenEvent>>,
    ping_failure: Option<String>,
}

/// A LISTEN connection whose notifications and losses the test triggers.
#[derive(Clone, Default)]
pub struct FakeFeed {
    inner: Arc<Mutex<FeedInner>>,
}

impl FakeFeed {
    pub fn connects(&self) -> usize {
        self.inner.lock().unwrap().connects
    }

    /// Sends an event on the current session.
    pub fn emit(&self, event: ListenEvent) {
        let events = self.inner.lock().unwrap().events.clone();
        if let Some(events) = events {
            events.send(event);
        }
    }

    /// Makes pings fail (a silently dead connection) or succeed again.
    pub fn fail_pings(&self, reason: Option<&str>) {
        self.inner.lock().unwrap().ping_failure = reason.map(str::to_owned);
    }
}

impl ListenConnector for FakeFeed {
    type Session = FakeFeed;

    async fn connect(&self, events: EventSink<ListenEvent>) -> Result<FakeFeed, PortError> {
        let mut inner = self.inner.lock().unwrap();
        inner.connects += 1;
        inner.events = Some(events);
        Ok(self.clone())
    }
}

impl ListenSession for FakeFeed {
    async fn ping(&self) -> Result<(), PortError> {
        match &self.inner.lock().unwrap().ping_failure {
            Some(reason) => Err(PortError::transient(reason.clone())),
            None => Ok(()),
        }
    }
}
