//! A delivery round: claim everything due, in batches, hand each batch to the
//! publisher, and find the next deadline.
//!
//! Batches are pipelined: while the broker confirms one batch, the next is
//! claimed (claims skip rows other claims hold). Each claimed batch settles on
//! its own task, which records the outcomes and commits once the broker has
//! answered, so a round never waits for confirms and a crash of the scheduler
//! cannot interrupt a commit.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use ractor::ActorRef;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use uuid::Uuid;

use super::SchedulerMessage;
use crate::flow::FlowControl;
use crate::liveness::Liveness;
use crate::metrics::Outcome;
use crate::model::{DueEvent, NextDue, PublishOutcome};
use crate::ports::{Claim, PendingConfirms, PortError, ScheduleStore, Undelivered};
use crate::publisher::PublisherHandle;
use crate::slot::Slot;
use crate::trace_context;

/// How a round ended, and so what the scheduler arms next.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RoundOutcome {
    /// Nothing is pending.
    Idle,
    /// The next event is due after `NextDue::delay`.
    Sleep(NextDue),
    /// A due event is held by another claim (another replica, or a claim of
    /// a previous incarnation still settling): poll again shortly.
    Contended(NextDue),
    /// The publisher is not running; its restart triggers a resync.
    PublisherUnavailable,
    /// The scheduler is draining.
    Stopped,
}

impl RoundOutcome {
    /// Name recorded on the round's span.
    fn name(&self) -> &'static str {
        match self {
            Self::Idle => "idle",
            Self::Sleep(_) => "sleep",
            Self::Contended(_) => "contended",
            Self::PublisherUnavailable => "publisher_unavailable",
            Self::Stopped => "stopped",
        }
    }
}

/// Most rows the first claim of a round takes; each full claim doubles it up
/// to the batch size. Marking a row costs the database about 17 µs, so a
/// round that started with a full batch of many rows due at one instant
/// published its first message only after marking them all (21 ms for 500).
const FIRST_CLAIM: usize = 32;

/// Batches claimed and not yet settled: at most `capacity` at once, and the ids
/// they hold, which the next-due query must look past.
#[derive(Clone)]
pub struct InFlight {
    permits: Arc<Semaphore>,
    ids: Arc<Mutex<HashSet<Uuid>>>,
    capacity: u32,
}

impl InFlight {
    pub fn new(capacity: usize) -> Self {
        let capacity = u32::try_from(capacity.max(1)).unwrap_or(u32::MAX);
        Self {
            permits: Arc::new(Semaphore::new(capacity as usize)),
            ids: Arc::default(),
            capacity,
        }
    }

    fn ids(&self) -> Vec<Uuid> {
        self.lock().iter().copied().collect()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashSet<Uuid>> {
        self.ids.lock().unwrap_or_else(|poison| poison.into_inner())
    }

    /// Returns once every claimed batch has settled.
    pub async fn settled(&self) {
        let _all = self.permits.acquire_many(self.capacity).await;
    }
}

/// Everything a round needs; cloned from the scheduler's state.
pub struct RoundContext<S> {
    pub store: S,
    pub publisher: Slot<PublisherHandle>,
    pub flow: FlowControl,
    pub in_flight: InFlight,
    pub batch_size: usize,
    /// How far ahead of their time events are claimed.
    pub claim_ahead: Duration,
    pub scheduler: ActorRef<SchedulerMessage>,
    pub stopping: watch::Receiver<bool>,
    pub liveness: Liveness,
}

impl<S: ScheduleStore> RoundContext<S> {
    /// Runs one round, within the round's span (see [`round_span`]), and
    /// records its totals there. An error (the database failing) ends the
    /// round; batches already claimed keep settling on their own.
    pub async fn run(mut self) -> Result<RoundOutcome, PortError> {
        let round = tracing::Span::current();
        let mut last_claim_was_empty = false;
        let mut totals = RoundTotals::default();
        let mut limit = self.batch_size.min(FIRST_CLAIM);
        loop {
            let Some(permit) = self.permit_to_claim().await else {
                return Ok(totals.finish(&round, RoundOutcome::Stopped));
            };
            let Some(publisher) = self.publisher.get() else {
                return Ok(totals.finish(&round, RoundOutcome::PublisherUnavailable));
            };
            let claim_span = tracing::info_span!("claim", batch.size = tracing::field::Empty);
            let claim = self
                .store
                .claim_due(limit, self.claim_ahead)
                .instrument(claim_span.clone())
                .await?;
            let claimed = claim.events().len();
            claim_span.record("batch.size", claimed);
            if claimed > 0 {
                let oldest_ms = oldest_lateness_ms(claim.events());
                totals.add(claimed, oldest_ms);
                self.dispatch(claim, permit, &publisher, oldest_ms);
            }
            // Each kind may fill its own limit: a full claim of any size means
            // more may be due.
            if claimed >= limit {
                last_claim_was_empty = false;
                limit = (limit * 2).min(self.batch_size);
                continue;
            }
            let next_due = self
                .store
                .next_due(&self.in_flight.ids())
                .instrument(tracing::info_span!("next due"))
                .await?;
            let outcome = match next_due {
                None => RoundOutcome::Idle,
                Some(next) if next.delay > self.claim_ahead => RoundOutcome::Sleep(next),
                // Claimable, yet not claimed: someone else holds it.
                Some(next) if claimed == 0 && last_claim_was_empty => RoundOutcome::Contended(next),
                // Became claimable since the claim; claim again.
                Some(_) => {
                    last_claim_was_empty = claimed == 0;
                    continue;
                }
            };
            return Ok(totals.finish(&round, outcome));
        }
    }

    /// Waits until the broker accepts publishes and a batch slot is free;
    /// `None` if the scheduler starts draining meanwhile.
    async fn permit_to_claim(&mut self) -> Option<OwnedSemaphorePermit> {
        let flow = &self.flow;
        let permits = Arc::clone(&self.in_flight.permits);
        let stopping = &mut self.stopping;
        let wait = async move {
            flow.wait_until_open().await;
            permits.acquire_owned().await.ok()
        };
        tokio::select! {
            biased;
            _ = stopping.wait_for(|stop| *stop) => None,
            permit = wait => permit,
        }
    }

    /// Publishes the batch's live events and settles the claim on its own task.
    fn dispatch(
        &self,
        claim: S::Claim,
        permit: OwnedSemaphorePermit,
        publisher: &PublisherHandle,
        oldest_lateness_ms: f64,
    ) {
        let claimed_at = Instant::now();
        let batch = batch_span(claim.events(), oldest_lateness_ms);
        crate::metrics::batch_size(claim.events().len());
        let ids: Vec<Uuid> = claim.events().iter().map(|e| e.id).collect();
        self.in_flight.lock().extend(ids.iter().copied());
        let mut live: Vec<_> = claim
            .events()
            .iter()
            .filter(|e| !e.stale)
            .cloned()
            .collect();
        let live_ids: Vec<(Uuid, &'static str)> = live.iter().map(|e| (e.id, e.kind)).collect();
        let claim_lateness: Vec<(Duration, Duration)> =
            live.iter().map(|e| (e.lateness, e.ahead)).collect();
        // Events already due go to the publisher now, before the next claim,
        // so batches reach the broker in the order they were claimed; those
        // claimed ahead (the rest: events are oldest first) wait on the task.
        let first_ahead = live
            .iter()
            .position(|e| !e.ahead.is_zero())
            .unwrap_or(live.len());
        let ahead = live.split_off(first_ahead);
        let mut published = Vec::new();
        if !live.is_empty() {
            let count = live.len();
            published.push((publisher.publish(live, &batch), count));
        }
        let publisher = publisher.clone();
        let in_flight = self.in_flight.clone();
        let scheduler = self.scheduler.clone();
        let liveness = self.liveness.clone();
        tokio::spawn(
            async move {
                let outcomes = publish_on_time(&publisher, published, ahead, claimed_at).await;
                let answered_after = claimed_at.elapsed();
                for (((lateness, ahead), (_, kind)), outcome) in
                    claim_lateness.iter().zip(&live_ids).zip(&outcomes)
                {
                    if *outcome == PublishOutcome::Confirmed {
                        let late = (*lateness + answered_after).saturating_sub(*ahead);
                        crate::metrics::lateness(kind, late);
                    }
                }
                let settled = settle(claim, outcomes).await;
                {
                    let mut held = in_flight.lock();
                    for id in &ids {
                        held.remove(id);
                    }
                }
                drop(permit);
                if settled.is_ok() {
                    liveness.batch_settled();
                }
                match settled {
                    // The rows to retry were in flight when the round read
                    // the next deadline, which therefore looked past them.
                    Ok(Settled { retrying: true }) => {
                        let _ = scheduler.send_message(SchedulerMessage::Resync);
                    }
                    Ok(Settled { retrying: false }) => {}
                    Err(err) => {
                        let reason = crate::error_chain::Chain(&err).to_string();
                        tracing::Span::current().record("error", reason.as_str());
                        let _ = scheduler.send_message(SchedulerMessage::BatchFailed(err));
                    }
                }
            }
            .instrument(batch),
        );
    }
}

/// Publishes events claimed ahead (oldest first), each no sooner than its
/// `ahead` after `claimed_at`, when the claim's answer arrived, which was
/// after the database read its clock, so that none is early by that clock.
/// Events due at one instant go out in one publish. Then awaits the confirms
/// of `published` (what went out already) and of these, in order, so a slow
/// confirm does not delay a later event. Returns one outcome per event.
async fn publish_on_time(
    publisher: &PublisherHandle,
    mut published: Vec<(PendingConfirms, usize)>,
    mut ahead: Vec<DueEvent>,
    claimed_at: Instant,
) -> Vec<PublishOutcome> {
    let batch = tracing::Span::current();
    while let Some(first) = ahead.first() {
        let instant = claimed_at + first.ahead;
        let same_instant = ahead
            .iter()
            .position(|e| e.ahead != first.ahead)
            .unwrap_or(ahead.len());
        let rest = ahead.split_off(same_instant);
        super::timer::sleep_until(instant).await;
        let count = ahead.len();
        published.push((publisher.publish(ahead, &batch), count));
        ahead = rest;
    }
    let mut outcomes = Vec::new();
    for (confirms, count) in published {
        outcomes.extend(publisher.confirmed(confirms, count, &batch).await);
    }
    outcomes
}

/// The span of a whole round: claims, batches and the next-due query are its
/// children.
pub fn round_span() -> tracing::Span {
    // A root: the scheduler actor's own span would make every round one trace.
    tracing::info_span!(
        parent: None,
        "delivery round",
        events = tracing::field::Empty,
        batches = tracing::field::Empty,
        lateness.oldest_ms = tracing::field::Empty,
        outcome = tracing::field::Empty,
    )
}

/// Most span links per batch (the SDK's default limit is 128).
const MAX_LINKS: usize = 64;

/// The span of one claimed batch, linked to the traces of the requests that
/// scheduled its events.
fn batch_span(events: &[DueEvent], oldest_lateness_ms: f64) -> tracing::Span {
    let kinds: BTreeSet<&str> = events.iter().map(|e| e.kind).collect();
    let span = tracing::info_span!(
        "delivery batch",
        batch.size = events.len(),
        kind = kinds.into_iter().collect::<Vec<_>>().join(","),
        events.stale = events.iter().filter(|e| e.stale).count(),
        lateness.oldest_ms = oldest_lateness_ms,
        error = tracing::field::Empty,
    );
    let mut linked = HashSet::new();
    for context in events
        .iter()
        .filter_map(|e| e.traceparent.as_deref())
        .filter_map(trace_context::from_traceparent)
    {
        if linked.len() == MAX_LINKS {
            break;
        }
        if linked.insert(context.span_id()) {
            span.add_link(context);
        }
    }
    span
}

fn oldest_lateness_ms(events: &[DueEvent]) -> f64 {
    events
        .iter()
        .map(|e| e.lateness)
        .max()
        .unwrap_or_default()
        .as_secs_f64()
        * 1_000.0
}

/// What a round claimed, recorded on its span when it ends.
#[derive(Default)]
struct RoundTotals {
    events: usize,
    batches: usize,
    oldest_lateness_ms: f64,
}

impl RoundTotals {
    fn add(&mut self, claimed: usize, oldest_lateness_ms: f64) {
        self.events += claimed;
        self.batches += 1;
        self.oldest_lateness_ms = self.oldest_lateness_ms.max(oldest_lateness_ms);
    }

    fn finish(self, span: &tracing::Span, outcome: RoundOutcome) -> RoundOutcome {
        span.record("events", self.events);
        span.record("batches", self.batches);
        span.record("lateness.oldest_ms", self.oldest_lateness_ms);
        span.record("outcome", outcome.name());
        outcome
    }
}

/// Why a settled batch left events pending: they are published again.
#[derive(Debug, thiserror::Error)]
pub enum SettleError {
    /// The broker did not answer for some events (the connection was lost,
    /// or the confirm timed out): nothing is known about them.
    #[error("{count} messages unconfirmed ({reason}); they stay pending and are published again")]
    Unconfirmed { count: usize, reason: String },
    /// The outcome could not be recorded.
    #[error("recording a delivered batch failed, it will be delivered again")]
    Commit(#[source] PortError),
}

/// What a settled batch left behind.
struct Settled {
    /// Events wait for another attempt.
    retrying: bool,
}

/// Commits a claim once the broker has answered. Events it refused stay
/// pending until their next attempt (or are dead-lettered after their last),
/// and the batch settles: one bad message holds up nothing else. Fails only
/// if the broker left events unanswered, or if the commit failed.
async fn settle<C: Claim>(claim: C, outcomes: Vec<PublishOutcome>) -> Result<Settled, SettleError> {
    let mut counts: BTreeMap<(&'static str, Outcome), usize> = BTreeMap::new();
    let mut count = |kind, outcome| *counts.entry((kind, outcome)).or_default() += 1;
    let mut skipped = 0;
    for event in claim.events().iter().filter(|e| e.stale) {
        count(event.kind, Outcome::SkippedStale);
        skipped += 1;
    }
    let live = claim.events().iter().filter(|e| !e.stale);
    let mut undelivered = Vec::new();
    let mut refused: Vec<(Uuid, &'static str)> = Vec::new();
    let mut first_refusal = None;
    let mut unconfirmed = 0;
    let mut unconfirmed_reason = None;
    for (event, outcome) in live.zip(&outcomes) {
        let (counted, refusal) = match outcome {
            PublishOutcome::Confirmed => {
                count(event.kind, Outcome::Sent);
                continue;
            }
            PublishOutcome::Nacked => {
                (Outcome::Failed, "refused (nacked) by the broker".to_owned())
            }
            PublishOutcome::Returned => (Outcome::Returned, unroutable(event)),
            PublishOutcome::Unpublishable(reason) => (Outcome::Failed, reason.clone()),
            PublishOutcome::Unknown(reason) => {
                count(event.kind, Outcome::Failed);
                unconfirmed += 1;
                unconfirmed_reason.get_or_insert_with(|| reason.clone());
                undelivered.push(Undelivered {
                    id: event.id,
                    refusal: None,
                });
                continue;
            }
        };
        count(event.kind, counted);
        refused.push((event.id, event.kind));
        first_refusal.get_or_insert_with(|| refusal.clone());
        undelivered.push(Undelivered {
            id: event.id,
            refusal: Some(refusal),
        });
    }
    let dead_lettered: HashSet<Uuid> = claim
        .commit(undelivered)
        .instrument(tracing::info_span!("commit"))
        .await
        .map_err(SettleError::Commit)?
        .into_iter()
        .collect();
    for ((kind, outcome), events) in counts {
        crate::metrics::events(kind, outcome, events);
    }
    // Refused events by kind and fate: dead-lettered, or waiting for a retry.
    let mut fates: BTreeMap<(&'static str, bool), usize> = BTreeMap::new();
    for (id, kind) in &refused {
        *fates.entry((kind, dead_lettered.contains(id))).or_default() += 1;
    }
    for ((kind, dead), events) in fates {
        if dead {
            crate::metrics::dead_lettered(kind, events);
        } else {
            crate::metrics::retries(kind, events);
        }
    }
    if skipped > 0 {
        tracing::info!(skipped, "skipped events whose kind says they came too late");
    }
    if let Some(reason) = first_refusal {
        tracing::warn!(
            refused = refused.len(),
            dead_lettered = dead_lettered.len(),
            reason,
            "the broker refused messages; each is tried again after a growing delay, \
             and dead-lettered after its last attempt"
        );
    }
    let retrying = refused.len() > dead_lettered.len();
    match unconfirmed_reason {
        None => Ok(Settled { retrying }),
        Some(reason) => Err(SettleError::Unconfirmed {
            count: unconfirmed,
            reason,
        }),
    }
}

/// Why a returned message was not routed.
fn unroutable(event: &DueEvent) -> String {
    let message = &event.message;
    match &message.exchange {
        Some(exchange) => format!(
            "returned unroutable: no queue is bound to exchange '{exchange}' for routing key '{}'",
            message.routing_key
        ),
        None => format!(
            "returned unroutable: no queue is bound for routing key '{}'",
            message.routing_key
        ),
    }
}
