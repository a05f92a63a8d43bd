//! The SupervisorActor starts the three actors of the delivery daemon, links
//! them to itself and restarts any that fails, with fresh state, after a
//! capped exponential backoff with jitter.
//!
//! ```text
//!                    SupervisorActor
//!          ┌────────────────┼─────────────────┐
//!   PublisherActor    SchedulerActor    ListenerActor
//!   (RabbitMQ,        (next deadline,   (LISTEN connection,
//!    confirms)         timer, rounds)    pings)
//!          ▲ publish, confirms ▲ Changed / Resync │
//!          └──── batches ──────┴──────────────────┘
//! ```
//!
//! Order of start: publisher, scheduler, listener, so the first round can
//! publish and the listener's resync reaches a running scheduler. A restarted
//! publisher is followed by a resync of the scheduler, which stops delivering
//! while no publisher runs. Outages are retried forever; one log line is written
//! per change of a child's state, not per attempt. A child waiting for a
//! server that cannot be reached ([`PortError::Unavailable`]) is restarted
//! soon and often (the reconnect backoff, capped at about a second), so
//! delivery resumes quickly when the server is back; other failures restart
//! after a backoff that grows while they repeat (a crash loop). A
//! [`PortError::Unrecoverable`] (a configuration mismatch) stops the daemon
//! instead.
//!
//! The supervisor holds the slots through which the actors reach each other;
//! each actor is given only the slot it uses.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::{
    Actor, ActorCell, ActorProcessingErr, ActorRef, RpcReplyPort, SpawnErr, SupervisionEvent,
};
use tokio::sync::watch;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::error_chain::{Chain, caused_by};
use crate::flow::FlowControl;
use crate::listener::{ListenerActor, ListenerArgs, ListenerMessage};
use crate::liveness::Liveness;
use crate::ports::{BrokerConnector, ListenConnector, PortError, ScheduleStore};
use crate::publisher::{PublisherActor, PublisherArgs, PublisherHandle};
use crate::readiness::{Component, Readiness};
use crate::scheduler::{SchedulerActor, SchedulerArgs, SchedulerMessage, SchedulerSettings};
use crate::slot::Slot;

/// A child of the supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Child {
    Publisher,
    Scheduler,
    Listener,
}

impl Child {
    const ALL: [Child; 3] = [Child::Publisher, Child::Scheduler, Child::Listener];

    /// Name used in logs and metrics.
    pub fn name(self) -> &'static str {
        match self {
            Child::Publisher => "publisher",
            Child::Scheduler => "scheduler",
            Child::Listener => "listener",
        }
    }

    fn component(self) -> Option<Component> {
        match self {
            Child::Publisher => Some(Component::Broker),
            Child::Listener => Some(Component::Listener),
            Child::Scheduler => None,
        }
    }
}

/// Messages of the [`SupervisorActor`].
#[derive(Debug)]
pub enum SupervisorMessage {
    /// From itself, after a backoff: start (or restart) a child.
    Start(Child),
    /// From the watchdog's interval: restart the scheduler if its round is
    /// stuck.
    Watchdog,
    /// From the daemon on SIGTERM/SIGINT: let claimed batches settle within
    /// `grace`, stop every child, then reply.
    Shutdown {
        grace: Duration,
        reply: RpcReplyPort<()>,
    },
}

/// Restart policy and timings of the daemon's actors.
#[derive(Debug, Clone)]
pub struct SupervisorSettings {
    /// First and longest delay between restarts of a child that keeps
    /// failing (a crash loop).
    pub restart_backoff: (Duration, Duration),
    /// First and longest delay between restarts of a child waiting for a
    /// server that cannot be reached ([`PortError::Unavailable`]): short, so
    /// delivery resumes soon after the server is back.
    pub reconnect_backoff: (Duration, Duration),
    /// A child that ran this long before failing restarts after the first delay again.
    pub stable_after: Duration,
    pub listener_ping_interval: Duration,
    pub confirm_timeout: Duration,
    /// A round that makes no progress for this long (no batch settles) while
    /// the broker accepts publishes is stuck: the watchdog restarts the
    /// scheduler. Checked every tenth of it.
    pub watchdog_timeout: Duration,
    pub scheduler: SchedulerSettings,
}

/// Start-up arguments of the [`SupervisorActor`].
pub struct SupervisorArgs<S, B, L> {
    pub store: S,
    pub broker: Arc<B>,
    pub listen: Arc<L>,
    pub settings: SupervisorSettings,
    pub readiness: Readiness,
    /// Delivery progress, recorded by the scheduler, read by the watchdog
    /// and the liveness endpoint.
    pub liveness: Liveness,
    /// Receives the reason if the daemon must stop for good.
    pub fatal: watch::Sender<Option<String>>,
}

struct ChildState {
    cell: Option<ActorCell>,
    /// Delays after crashes.
    backoff: Backoff,
    /// Delays while a server cannot be reached.
    reconnect: Backoff,
    started_at: Option<Instant>,
    /// The last failure, so repeated identical failures log once.
    failing: Option<String>,
    /// It has run before: the next start is a restart (a reconnect, for the
    /// children that own a connection).
    ran_before: bool,
}

/// State of the running [`SupervisorActor`].
pub struct SupervisorState<S, B, L> {
    args: SupervisorArgs<S, B, L>,
    /// Where rounds find the running publisher.
    publisher: Slot<PublisherHandle>,
    /// Where the listener finds the running scheduler.
    scheduler: Slot<ActorRef<SchedulerMessage>>,
    flow: FlowControl,
    children: [ChildState; 3],
    shutting_down: bool,
}

/// See the module documentation.
pub struct SupervisorActor<S, B, L>(PhantomData<Ports<S, B, L>>);

/// The port implementations a supervisor is built for (only a type marker).
type Ports<S, B, L> = fn() -> (S, B, L);

impl<S, B, L> Default for SupervisorActor<S, B, L> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

fn index(child: Child) -> usize {
    match child {
        Child::Publisher => 0,
        Child::Scheduler => 1,
        Child::Listener => 2,
    }
}

impl<S, B, L> SupervisorState<S, B, L>
where
    S: ScheduleStore,
    B: BrokerConnector,
    L: ListenConnector,
{
    async fn spawn(&self, child: Child, supervisor: ActorCell) -> Result<ActorCell, SpawnErr> {
        let settings = &self.args.settings;
        match child {
            Child::Publisher => {
                let args = PublisherArgs {
                    connector: Arc::clone(&self.args.broker),
                    confirm_timeout: settings.confirm_timeout,
                    flow: self.flow.clone(),
                    handle: self.publisher.clone(),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, PublisherActor::<B>::default(), args, supervisor)
                        .await?;
                Ok(actor.get_cell())
            }
            Child::Scheduler => {
                let args = SchedulerArgs {
                    store: self.args.store.clone(),
                    settings: settings.scheduler.clone(),
                    publisher: self.publisher.clone(),
                    flow: self.flow.clone(),
                    readiness: self.args.readiness.clone(),
                    liveness: self.args.liveness.clone(),
                };
                let (actor, _) =
                    Actor::spawn_linked(None, SchedulerActor::<S>::default(), args, supervisor)
                        .await?;
                self.scheduler.set(Some(actor.clone()));
                Ok(actor.get_cell())
            }
            Child::Listener => {
                let args = ListenerArgs {
                    connector: Arc::clone(&self.args.listen),
                    ping_interval: settings.listener_ping_interval,
                    scheduler: self.scheduler.clone(),
                };
                let (actor, _): (ActorRef<ListenerMessage>, _) =
                    Actor::spawn_linked(None, ListenerActor::<L>::default(), args, supervisor)
                        .await?;
                Ok(actor.get_cell())
            }
        }
    }

    fn forget(&mut self, child: Child) {
        self.children[index(child)].cell = None;
        match child {
            Child::Publisher => {
                self.publisher.set(None);
                // A new connection starts unblocked; do not keep rounds waiting.
                self.flow.set_blocked(false);
            }
            Child::Scheduler => self.scheduler.set(None),
            Child::Listener => {}
        }
    }

    /// Records a failure (at start or while running) and schedules a restart,
    /// or stops the daemon if the failure cannot be fixed by retrying.
    fn failed(
        &mut self,
        myself: &ActorRef<SupervisorMessage>,
        child: Child,
        reason: String,
        cause: FailureCause,
    ) {
        self.forget(child);
        if self.shutting_down {
            return;
        }
        if cause == FailureCause::Unrecoverable {
            tracing::error!(
                actor = child.name(),
                error = reason.as_str(),
                "unrecoverable failure; stopping"
            );
            self.args.fatal.send_replace(Some(reason));
            return;
        }
        if let Some(component) = child.component() {
            self.args
                .readiness
                .set(component, false, Some(reason.clone()));
        }
        let state = &mut self.children[index(child)];
        if state
            .started_at
            .is_some_and(|started| started.elapsed() >= self.args.settings.stable_after)
        {
            // It ran long enough: this is a new episode, not the same outage.
            state.backoff.reset();
            state.failing = None;
        }
        state.started_at = None;
        let delay = match cause {
            FailureCause::Unavailable => state.reconnect.next_delay(),
            _ => state.backoff.next_delay(),
        };
        if state.failing.as_deref() == Some(reason.as_str()) {
            tracing::debug!(
                actor = child.name(),
                error = reason.as_str(),
                ?delay,
                "still failing; restarting"
            );
        } else {
            tracing::warn!(
                actor = child.name(),
                error = reason.as_str(),
                ?delay,
                "actor failed; restarting after backoff"
            );
            state.failing = Some(reason);
        }
        crate::metrics::restarted(child.name());
        myself.send_after(delay, move || SupervisorMessage::Start(child));
    }

    async fn start(&mut self, myself: &ActorRef<SupervisorMessage>, child: Child) {
        if self.shutting_down || self.children[index(child)].cell.is_some() {
            return;
        }
        let restart = self.children[index(child)].ran_before;
        // One span, exported as "actor start" or "actor restart".
        let span = tracing::info_span!(
            parent: None,
            "actor start",
            otel.name = if restart { "actor restart" } else { "actor start" },
            actor = child.name(),
            error = tracing::field::Empty
        );
        let spawned = self
            .spawn(child, myself.get_cell())
            .instrument(span.clone())
            .await;
        if let Err(err) = &spawned {
            span.record("error", tracing::field::display(err));
        }
        drop(span);
        match spawned {
            Ok(cell) => {
                let state = &mut self.children[index(child)];
                state.cell = Some(cell);
                state.reconnect.reset();
                state.started_at = Some(Instant::now());
                if restart && child.component().is_some() {
                    crate::metrics::reconnected(child.name());
                }
                state.ran_before = true;
                // Only a connection proves recovery; a started scheduler has
                // done nothing yet (its first round reports the database).
                if let Some(component) = child.component() {
                    self.args.readiness.set(component, true, None);
                    if state.failing.take().is_some() {
                        tracing::info!(actor = child.name(), "actor recovered");
                    }
                }
                if child == Child::Publisher {
                    self.scheduler.send(SchedulerMessage::Resync);
                }
            }
            Err(SpawnErr::StartupFailed(err)) => {
                self.failed(myself, child, Chain(&*err).to_string(), cause_of(&*err));
            }
            Err(err) => self.failed(myself, child, err.to_string(), FailureCause::Crash),
        }
    }

    /// Restarts the scheduler if its round has made no progress for the
    /// watchdog timeout, so that a hung claim or commit cannot stall delivery
    /// until liveness gives up on the process.
    fn watchdog(&mut self) {
        let timeout = self.args.settings.watchdog_timeout;
        let Some(stuck) = self.args.liveness.round_stuck_for() else {
            return;
        };
        // While the broker blocks publishers, waiting is the round's job.
        if stuck < timeout || self.flow.is_blocked() || self.shutting_down {
            return;
        }
        if let Some(cell) = &self.children[index(Child::Scheduler)].cell {
            let reason = format!(
                "watchdog: the delivery round made no progress for {}s; restarting the scheduler",
                stuck.as_secs()
            );
            tracing::error!(stuck_s = stuck.as_secs(), "{reason}");
            self.args.liveness.round_abandoned();
            cell.stop(Some(reason));
        }
    }

    fn child_of(&self, cell: &ActorCell) -> Option<Child> {
        Child::ALL.into_iter().find(|child| {
            self.children[index(*child)]
                .cell
                .as_ref()
                .is_some_and(|known| known.get_id() == cell.get_id())
        })
    }

    async fn shutdown(&mut self, grace: Duration) {
        self.shutting_down = true;
        let deadline = tokio::time::Instant::now() + grace;
        if let Some(scheduler) = self.scheduler.get() {
            let drained = scheduler.call(SchedulerMessage::Drain, Some(grace)).await;
            if !matches!(drained, Ok(ractor::rpc::CallResult::Success(()))) {
                tracing::warn!(
                    ?grace,
                    "claimed batches did not settle within the grace period; they will be delivered again"
                );
            }
        }
        for child in [Child::Listener, Child::Scheduler, Child::Publisher] {
            if let Some(cell) = self.children[index(child)].cell.take() {
                let left = deadline
                    .saturating_duration_since(tokio::time::Instant::now())
                    .max(Duration::from_secs(1));
                if cell
                    .stop_and_wait(Some("shutdown".to_owned()), Some(left))
                    .await
                    .is_err()
                {
                    cell.kill();
                }
            }
            self.forget(child);
        }
    }
}

impl<S, B, L> Actor for SupervisorActor<S, B, L>
where
    S: ScheduleStore,
    B: BrokerConnector,
    L: ListenConnector,
{
    type Msg = SupervisorMessage;
    type State = SupervisorState<S, B, L>;
    type Arguments = SupervisorArgs<S, B, L>;

    async fn pre_start(
        &self,
        _myself: ActorRef<SupervisorMessage>,
        args: SupervisorArgs<S, B, L>,
    ) -> Result<Self::State, ActorProcessingErr> {
        let (min, max) = args.settings.restart_backoff;
        let (reconnect_min, reconnect_max) = args.settings.reconnect_backoff;
        let child = || ChildState {
            cell: None,
            backoff: Backoff::new(min, max),
            reconnect: Backoff::new(reconnect_min, reconnect_max),
            started_at: None,
            failing: None,
            ran_before: false,
        };
        Ok(SupervisorState {
            args,
            publisher: Slot::default(),
            scheduler: Slot::default(),
            flow: FlowControl::default(),
            children: [child(), child(), child()],
            shutting_down: false,
        })
    }

    async fn post_start(
        &self,
        myself: ActorRef<SupervisorMessage>,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        for child in Child::ALL {
            state.start(&myself, child).await;
        }
        let period = state.args.settings.watchdog_timeout / 10;
        myself.send_interval(period.max(Duration::from_millis(10)), || {
            SupervisorMessage::Watchdog
        });
        Ok(())
    }

    async fn handle(
        &self,
        myself: ActorRef<SupervisorMessage>,
        message: SupervisorMessage,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            SupervisorMessage::Start(child) => state.start(&myself, child).await,
            SupervisorMessage::Watchdog => state.watchdog(),
            SupervisorMessage::Shutdown { grace, reply } => {
                state.shutdown(grace).await;
                let _ = reply.send(());
            }
        }
        Ok(())
    }

    async fn handle_supervisor_evt(
        &self,
        myself: ActorRef<SupervisorMessage>,
        event: SupervisionEvent,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        let (cell, reason, cause) = match event {
            SupervisionEvent::ActorFailed(cell, err) => {
                (cell, Chain(&*err).to_string(), cause_of(&*err))
            }
            SupervisionEvent::ActorTerminated(cell, _, reason) => (
                cell,
                reason.unwrap_or_else(|| "stopped".to_owned()),
                FailureCause::Crash,
            ),
            _ => return Ok(()),
        };
        if let Some(child) = state.child_of(&cell) {
            state.failed(&myself, child, reason, cause);
        }
        Ok(())
    }
}

/// What a child's failure calls for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum FailureCause {
    /// Stop the daemon: retrying cannot fix it.
    Unrecoverable,
    /// Wait for a server: restart soon and often.
    Unavailable,
    /// Anything else: restart after a growing backoff.
    Crash,
}

/// Classifies an actor's failure by the port error in it. ractor boxes actor
/// errors, so the typed port error is found in the failure's source chain.
fn cause_of(err: &(dyn std::error::Error + 'static)) -> FailureCause {
    if caused_by::<PortError>(err, PortError::is_unrecoverable) {
        FailureCause::Unrecoverable
    } else if caused_by::<PortError>(err, PortError::is_unavailable) {
        FailureCause::Unavailable
    } else {
        FailureCause::Crash
    }
}

#[cfg(test)]
mod tests;
