//! The SchedulerActor keeps the earliest pending deadline and one timer armed
//! for it, and runs delivery rounds.
//!
//! Every wake-up (start, resync, a relevant change, the timer, the periodic
//! safety check) runs one round, which delivers whatever is due and reports the
//! next deadline as computed by the database clock. Wake-ups during a round are
//! folded into one more round afterwards. The timer sleeps at most `max_sleep`
//! so a step of the wall clock is corrected. A round or batch failure fails the
//! actor; its supervisor restarts it with fresh state after a backoff, and the
//! new incarnation starts with a round, so nothing is lost.

mod round;
mod timer;

use std::marker::PhantomData;
use std::time::Duration;

use chrono::{DateTime, Utc};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::Instrument;

use round::{InFlight, RoundContext};
pub use round::{RoundOutcome, SettleError};

use crate::backoff::Backoff;
use crate::error_chain::Chain;
use crate::flow::FlowControl;
use crate::liveness::Liveness;
use crate::model::ChangeHint;
use crate::ports::{PortError, ScheduleStore};
use crate::publisher::PublisherHandle;
use crate::readiness::{Component, Readiness};
use crate::slot::Slot;

/// Messages of the [`SchedulerActor`].
#[derive(Debug)]
pub enum SchedulerMessage {
    /// From the listener: a statement changed pending reminders.
    Changed(ChangeHint),
    /// From the listener after subscribing, and from the supervisor after the
    /// publisher (re)started: re-read the table.
    Resync,
    /// From the armed timer, tagged with the arming it belongs to.
    Deadline(u64),
    /// From the safety-check interval: re-read the table in case a change
    /// notification was lost.
    SafetyCheck,
    /// From the round task: the round ended.
    RoundFinished(RoundOutcome),
    /// From the round task: the database failed.
    RoundFailed(PortError),
    /// From a settling batch: some reminders were not confirmed, or recording
    /// the outcome failed. They are pending again.
    BatchFailed(SettleError),
    /// From the supervisor on shutdown: stop claiming, and reply once every
    /// claimed batch has settled.
    Drain(RpcReplyPort<()>),
}

/// Why the [`SchedulerActor`] failed; its supervisor restarts it, and the new
/// incarnation starts with a round.
#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("delivery round failed")]
    Round(#[source] PortError),
    #[error("delivery failed")]
    Batch(#[source] SettleError),
}

/// Tuning of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// Reminders claimed and published per batch.
    pub batch_size: usize,
    /// Batches that may await confirms at once.
    pub max_in_flight_batches: usize,
    /// Events due within this are claimed ahead and published at their time,
    /// so the claim's round trip is not part of their lateness.
    pub claim_ahead: Duration,
    /// Longest single sleep, so a wall-clock step is noticed.
    pub max_sleep: Duration,
    /// Period of the safety re-read.
    pub safety_check_interval: Duration,
    /// Poll interval bounds while a due reminder is held by another claim.
    pub contention_backoff: (Duration, Duration),
}

/// Start-up arguments of the [`SchedulerActor`].
pub struct SchedulerArgs<S> {
    pub store: S,
    pub settings: SchedulerSettings,
    /// The running publisher, the only part the scheduler talks to.
    pub publisher: Slot<PublisherHandle>,
    pub flow: FlowControl,
    pub readiness: Readiness,
    /// Where rounds and settled batches are recorded.
    pub liveness: Liveness,
}

/// The armed timer.
struct Armed {
    /// Notification time of the reminder it is for (database clock).
    due_at: DateTime<Utc>,
    timer: JoinHandle<()>,
}

/// State of a running [`SchedulerActor`].
pub struct SchedulerState<S> {
    store: S,
    settings: SchedulerSettings,
    publisher: Slot<PublisherHandle>,
    flow: FlowControl,
    readiness: Readiness,
    liveness: Liveness,
    in_flight: InFlight,
    armed: Option<Armed>,
    /// Generation of the latest arming; older timers are ignored.
    generation: u64,
    round: Option<JoinHandle<()>>,
    /// A wake-up arrived during the round.
    rerun: bool,
    contention: Backoff,
    safety_check: Option<JoinHandle<()>>,
    stopping: watch::Sender<bool>,
}

impl<S> Drop for SchedulerState<S> {
    fn drop(&mut self) {
        if let Some(armed) = self.armed.take() {
            armed.timer.abort();
        }
        if let Some(task) = self.safety_check.take() {
            task.abort();
        }
        if let Some(round) = self.round.take() {
            round.abort();
            self.liveness.round_abandoned();
        }
    }
}

/// Whether a change notification can move the next deadline earlier or may
/// have removed the armed reminder, so that a round is needed now. Without an
/// armed deadline any change matters.
pub fn change_needs_round(hint: &ChangeHint, armed_for: Option<DateTime<Utc>>) -> bool {
    match (hint, armed_for) {
        (ChangeHint::Changed { earliest, .. }, Some(armed_for)) => *earliest <= armed_for,
        _ => true,
    }
}

/// See the module documentation.
pub struct SchedulerActor<S>(PhantomData<fn() -> S>);

impl<S> Default for SchedulerActor<S> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<S: ScheduleStore> SchedulerState<S> {
    fn wake(&mut self, myself: &ActorRef<SchedulerMessage>) {
        if *self.stopping.borrow() {
            return;
        }
        if self.round.is_some() {
            self.rerun = true;
            return;
        }
        self.disarm();
        let context = RoundContext {
            store: self.store.clone(),
            publisher: self.publisher.clone(),
            flow: self.flow.clone(),
            in_flight: self.in_flight.clone(),
            batch_size: self.settings.batch_size,
            claim_ahead: self.settings.claim_ahead,
            scheduler: myself.clone(),
            stopping: self.stopping.subscribe(),
            liveness: self.liveness.clone(),
        };
        self.liveness.round_started();
        let myself = myself.clone();
        self.round = Some(tokio::spawn(
            async move {
                let message = match context.run().await {
                    Ok(outcome) => SchedulerMessage::RoundFinished(outcome),
                    Err(err) => SchedulerMessage::RoundFailed(err),
                };
                let _ = myself.send_message(message);
            }
            .instrument(round::round_span()),
        ));
    }

    fn disarm(&mut self) {
        if let Some(armed) = self.armed.take() {
            armed.timer.abort();
        }
    }

    fn arm(&mut self, myself: &ActorRef<SchedulerMessage>, due_at: DateTime<Utc>, delay: Duration) {
        self.disarm();
        self.generation += 1;
        let generation = self.generation;
        let timer = timer::send_after(myself.clone(), delay, move || {
            SchedulerMessage::Deadline(generation)
        });
        self.armed = Some(Armed { due_at, timer });
    }

    fn round_finished(&mut self, myself: &ActorRef<SchedulerMessage>, outcome: RoundOutcome) {
        self.round = None;
        self.liveness.round_finished(
            outcome != RoundOutcome::PublisherUnavailable,
            matches!(
                outcome,
                RoundOutcome::Idle | RoundOutcome::Sleep(_) | RoundOutcome::Stopped
            ),
        );
        if self.readiness.set(Component::Database, true, None) {
            tracing::info!("database queries succeed");
        }
        if *self.stopping.borrow() {
            return;
        }
        if std::mem::take(&mut self.rerun) {
            self.wake(myself);
            return;
        }
        match outcome {
            RoundOutcome::Sleep(next) => {
                self.contention.reset();
                // Wake when the event can be claimed.
                let until_claimable = next.delay.saturating_sub(self.settings.claim_ahead);
                self.arm(
                    myself,
                    next.at,
                    until_claimable.min(self.settings.max_sleep),
                );
            }
            RoundOutcome::Contended(next) => {
                let delay = self.contention.next_delay();
                self.arm(myself, next.at, delay);
            }
            RoundOutcome::Idle | RoundOutcome::PublisherUnavailable | RoundOutcome::Stopped => {
                self.contention.reset();
            }
        }
    }
}

impl<S: ScheduleStore> Actor for SchedulerActor<S> {
    type Msg = SchedulerMessage;
    type State = SchedulerState<S>;
    type Arguments = SchedulerArgs<S>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SchedulerMessage>,
        args: SchedulerArgs<S>,
    ) -> Result<SchedulerState<S>, ActorProcessingErr> {
        let (min, max) = args.settings.contention_backoff;
        Ok(SchedulerState {
            in_flight: InFlight::new(args.settings.max_in_flight_batches),
            store: args.store,
            settings: args.settings,
            publisher: args.publisher,
            flow: args.flow,
            readiness: args.readiness,
            liveness: args.liveness,
            armed: None,
            generation: 0,
            round: None,
            rerun: false,
            contention: Backoff::new(min, max),
            safety_check: None,
            stopping: watch::Sender::new(false),
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SchedulerMessage>,
        state: &mut SchedulerState<S>,
    ) -> Result<(), ActorProcessingErr> {
        state.safety_check = Some(
            myself.send_interval(state.settings.safety_check_interval, || {
                SchedulerMessage::SafetyCheck
            }),
        );
        state.wake(&myself);
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SchedulerMessage>,
        message: SchedulerMessage,
        state: &mut SchedulerState<S>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SchedulerMessage::Changed(hint) => {
                let armed_for = state.armed.as_ref().map(|armed| armed.due_at);
                if state.round.is_some() || change_needs_round(&hint, armed_for) {
                    state.wake(&myself);
                }
            }
            SchedulerMessage::Resync | SchedulerMessage::SafetyCheck => state.wake(&myself),
            SchedulerMessage::Deadline(generation) => {
                if generation == state.generation && state.armed.is_some() {
                    state.armed = None;
                    state.wake(&myself);
                }
            }
            SchedulerMessage::RoundFinished(outcome) => state.round_finished(&myself, outcome),
            SchedulerMessage::RoundFailed(err) => {
                state.round = None;
                state.liveness.round_abandoned();
                state
                    .readiness
                    .set(Component::Database, false, Some(Chain(&err).to_string()));
                return Err(SchedulerError::Round(err).into());
            }
            SchedulerMessage::BatchFailed(err) => return Err(SchedulerError::Batch(err).into()),
            SchedulerMessage::Drain(reply) => {
                state.stopping.send_replace(true);
                state.disarm();
                if let Some(task) = state.safety_check.take() {
                    task.abort();
                }
                let round = state.round.take();
                let in_flight = state.in_flight.clone();
                tokio::spawn(async move {
                    if let Some(round) = round {
                        let _ = round.await;
                    }
                    in_flight.settled().await;
                    let _ = reply.send(());
                });
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
