//! The PublisherActor owns the broker session: one connection with a channel
//! in publisher-confirm mode.
//!
//! Delivery rounds publish through its [`PublisherHandle`], which the actor
//! places in a [`Slot`] while it runs: the session queues each batch for its
//! own writer, and the task that settles the batch awaits the confirms itself.
//! The actor hears only of what ends a session: losing the connection or the
//! channel, or a batch whose confirms do not arrive within the confirm timeout
//! (time blocked by flow control excluded). Either fails the actor; its
//! supervisor restarts it with a new connection. So does a batch the broker
//! refused whole on a session older than [`REFUSED_SESSION_MIN_AGE`].

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::time::Instant;
use tracing::Instrument;

use crate::flow::FlowControl;
use crate::model::{DueEvent, PublishOutcome};
use crate::ports::{
    BrokerConnector, BrokerEvent, BrokerSession, EventSink, PendingConfirms, PortError,
};
use crate::slot::Slot;

/// How long a session must have run before a batch refused whole replaces it.
/// A channel that published to a quorum queue while its leader moved can be
/// refused for good (every message, on every queue) while a new channel is
/// accepted: replacing the session cures that. A queue at its length limit
/// with `reject-publish` refuses what is routed to it on any channel, so
/// replacing the session cures nothing, and every replacement pauses all
/// publishing (a full queue refused a batch each retry: the restarts' growing
/// backoff held every other event back for seconds). A session younger than
/// this has just been opened or replaced: it is kept, and a full queue costs
/// at most one replacement, of about a tenth of a second, per this period.
pub const REFUSED_SESSION_MIN_AGE: Duration = Duration::from_secs(10);

/// Messages of the [`PublisherActor`].
#[derive(Debug)]
pub enum PublisherMessage {
    /// From the session's event task: flow control or the loss of the connection.
    Broker(BrokerEvent),
    /// From a settling batch: the broker left it unanswered for the whole
    /// confirm timeout, so the connection is presumed dead.
    ConfirmsTimedOut,
    /// From a settling batch: the broker refused every message of it.
    BatchRefused(usize),
}

/// Why the [`PublisherActor`] failed; its supervisor reconnects it.
#[derive(Debug, thiserror::Error)]
pub enum PublisherError {
    #[error("broker connection lost: {0}")]
    Lost(String),
    #[error("the broker left a batch unconfirmed for {0:?}; reconnecting")]
    ConfirmsTimedOut(Duration),
    #[error("the broker refused all {0} messages of a batch; reconnecting")]
    BatchRefused(usize),
}

/// Start-up arguments of the [`PublisherActor`].
pub struct PublisherArgs<C: BrokerConnector> {
    pub connector: Arc<C>,
    pub confirm_timeout: Duration,
    pub flow: FlowControl,
    /// Where the actor places its handle once connected.
    pub handle: Slot<PublisherHandle>,
}

/// State of a running [`PublisherActor`].
pub struct PublisherState<C: BrokerConnector> {
    session: Arc<C::Session>,
    /// When the session was opened.
    opened: Instant,
    confirm_timeout: Duration,
    flow: FlowControl,
}

/// What a delivery round needs of the running publisher: its session to
/// publish on, and its mailbox to report a confirm timeout to.
#[derive(Clone)]
pub struct PublisherHandle {
    publish: Arc<dyn Fn(Vec<DueEvent>) -> PendingConfirms + Send + Sync>,
    actor: ActorRef<PublisherMessage>,
    confirm_timeout: Duration,
    flow: FlowControl,
}

impl PublisherHandle {
    /// Queues the events' messages for publishing, in order; never waits for
    /// the broker. `batch` is the span of the batch they belong to.
    ///
    /// Every message carries the `traceparent` of this publish span, so a
    /// consumer joins the delivery's trace whoever wrote the row; the requests
    /// that scheduled the events are linked from the batch span.
    pub fn publish(&self, mut events: Vec<DueEvent>, batch: &tracing::Span) -> PendingConfirms {
        let span = tracing::info_span!(parent: batch, "publish", batch.size = events.len());
        if let Some(delivery) = crate::trace_context::of_span(&span) {
            for event in &mut events {
                event.traceparent = Some(delivery.clone());
            }
        }
        span.in_scope(|| (self.publish)(events))
    }

    /// Waits for the confirms of `count` published messages. If the broker
    /// leaves them unanswered for the confirm timeout, the publisher is told
    /// (it reconnects) and every outcome is unknown. If it refuses every one,
    /// the publisher is told too, and replaces a session that has run for
    /// [`REFUSED_SESSION_MIN_AGE`]: a channel that published to a quorum queue
    /// while its leader moved can go on being refused for good (seen with
    /// RabbitMQ 3.10), while a new channel is accepted. The refused rows are
    /// retried after their delay either way.
    pub async fn confirmed(
        &self,
        confirms: PendingConfirms,
        count: usize,
        batch: &tracing::Span,
    ) -> Vec<PublishOutcome> {
        let span = tracing::info_span!(
            parent: batch,
            "confirm",
            confirmed = tracing::field::Empty,
            timed_out = false,
        );
        let timeout = self.confirm_timeout;
        let outcomes = match await_confirms(confirms, timeout, &self.flow)
            .instrument(span.clone())
            .await
        {
            Some(outcomes) => outcomes,
            None => {
                span.record("timed_out", true);
                let _ = self.actor.send_message(PublisherMessage::ConfirmsTimedOut);
                let reason = format!("no confirm from the broker within {timeout:?}");
                vec![PublishOutcome::Unknown(reason); count]
            }
        };
        let confirmed = outcomes
            .iter()
            .filter(|outcome| **outcome == PublishOutcome::Confirmed)
            .count();
        span.record("confirmed", confirmed);
        if !outcomes.is_empty()
            && outcomes
                .iter()
                .all(|outcome| *outcome == PublishOutcome::Nacked)
        {
            let _ = self
                .actor
                .send_message(PublisherMessage::BatchRefused(outcomes.len()));
        }
        outcomes
    }
}

/// See the module documentation.
pub struct PublisherActor<C>(PhantomData<fn() -> C>);

impl<C> Default for PublisherActor<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C: BrokerConnector> Actor for PublisherActor<C> {
    type Msg = PublisherMessage;
    type State = PublisherState<C>;
    type Arguments = PublisherArgs<C>;

    async fn pre_start(
        &self,
        myself: ActorRef<PublisherMessage>,
        args: PublisherArgs<C>,
    ) -> Result<PublisherState<C>, ActorProcessingErr> {
        let events = EventSink::to_actor(myself.clone(), PublisherMessage::Broker);
        let session = args
            .connector
            .connect(events)
            .instrument(tracing::info_span!(parent: None, "publisher connect"))
            .await?;
        let session = Arc::new(session);
        let publish = {
            let session = Arc::clone(&session);
            Arc::new(move |events| session.publish(events))
        };
        args.handle.set(Some(PublisherHandle {
            publish,
            actor: myself,
            confirm_timeout: args.confirm_timeout,
            flow: args.flow.clone(),
        }));
        Ok(PublisherState {
            session,
            opened: Instant::now(),
            confirm_timeout: args.confirm_timeout,
            flow: args.flow,
        })
    }

    async fn handle(
        &self,
        _myself: ActorRef<PublisherMessage>,
        message: PublisherMessage,
        state: &mut PublisherState<C>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PublisherMessage::Broker(BrokerEvent::Blocked(reason)) => {
                if state.flow.set_blocked(true) {
                    tracing::warn!(
                        reason,
                        "broker blocked publishing (resource alarm); delivery paused"
                    );
                }
            }
            PublisherMessage::Broker(BrokerEvent::Unblocked) => {
                if state.flow.set_blocked(false) {
                    tracing::info!("broker unblocked publishing; delivery resumes");
                }
            }
            PublisherMessage::Broker(BrokerEvent::Lost(reason)) => {
                return Err(PublisherError::Lost(reason).into());
            }
            PublisherMessage::ConfirmsTimedOut => {
                return Err(PublisherError::ConfirmsTimedOut(state.confirm_timeout).into());
            }
            PublisherMessage::BatchRefused(count) => {
                if state.opened.elapsed() < REFUSED_SESSION_MIN_AGE {
                    tracing::debug!(
                        count,
                        "the broker refused a whole batch on a new session; keeping the session"
                    );
                    return Ok(());
                }
                // A replacement, not a crash: the supervisor reconnects at
                // once instead of after a backoff that grows while it repeats.
                return Err(PortError::unavailable(PublisherError::BatchRefused(count)).into());
            }
        }
        Ok(())
    }

    async fn post_stop(
        &self,
        _myself: ActorRef<PublisherMessage>,
        state: &mut PublisherState<C>,
    ) -> Result<(), ActorProcessingErr> {
        state.session.close().await;
        Ok(())
    }
}

/// Waits for a batch's confirms, for at most `timeout` of time in which the
/// broker was not blocking publishers. `None` means the time ran out.
async fn await_confirms(
    confirms: PendingConfirms,
    timeout: Duration,
    flow: &FlowControl,
) -> Option<Vec<PublishOutcome>> {
    let mut confirms = confirms;
    let mut flow_changes = flow.subscribe();
    let mut remaining = timeout;
    loop {
        if *flow_changes.borrow_and_update() {
            tokio::select! {
                outcomes = &mut confirms => return Some(outcomes),
                changed = flow_changes.changed() => if changed.is_err() { return None },
            }
            continue;
        }
        let started = tokio::time::Instant::now();
        tokio::select! {
            outcomes = &mut confirms => return Some(outcomes),
            () = tokio::time::sleep(remaining) => return None,
            changed = flow_changes.changed() => {
                if changed.is_err() {
                    return None;
                }
                remaining = remaining.saturating_sub(started.elapsed());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn never() -> PendingConfirms {
        Box::pin(std::future::pending())
    }

    #[tokio::test(start_paused = true)]
    async fn confirms_that_never_arrive_time_out() {
        let flow = FlowControl::default();
        let started = tokio::time::Instant::now();
        assert_eq!(
            await_confirms(never(), Duration::from_secs(10), &flow).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(10));
    }

    #[tokio::test(start_paused = true)]
    async fn time_blocked_by_flow_control_does_not_count() {
        let flow = FlowControl::default();
        let blocking = flow.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(4)).await;
            blocking.set_blocked(true);
            tokio::time::sleep(Duration::from_secs(60)).await;
            blocking.set_blocked(false);
        });
        let started = tokio::time::Instant::now();
        assert_eq!(
            await_confirms(never(), Duration::from_secs(10), &flow).await,
            None
        );
        assert_eq!(started.elapsed(), Duration::from_secs(70));
    }

    #[tokio::test(start_paused = true)]
    async fn arriving_confirms_are_returned() {
        let flow = FlowControl::default();
        let confirms: PendingConfirms = Box::pin(async {
            tokio::time::sleep(Duration::from_secs(1)).await;
            vec![PublishOutcome::Confirmed, PublishOutcome::Returned]
        });
        assert_eq!(
            await_confirms(confirms, Duration::from_secs(10), &flow).await,
            Some(vec![PublishOutcome::Confirmed, PublishOutcome::Returned])
        );
    }
}
