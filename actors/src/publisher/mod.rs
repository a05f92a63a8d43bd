//! The PublisherActor owns the broker session: one connection with a channel
//! in publisher-confirm mode. It publishes each batch it is sent and answers
//! with one outcome per reminder once the broker has answered for all of them.
//!
//! It never waits on the broker inside a handler: the session queues batches
//! for its own writer, and a task per batch waits for the confirms. Losing the
//! connection or the channel, or a batch whose confirms do not arrive within
//! the confirm timeout (time blocked by flow control excluded), fails the
//! actor; its supervisor restarts it with a new connection.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::flow::FlowControl;
use crate::model::{DueReminder, PublishOutcome};
use crate::ports::{BrokerConnector, BrokerEvent, BrokerSession, PendingConfirms};

/// Messages of the [`PublisherActor`].
#[derive(Debug)]
pub enum PublisherMessage {
    /// From a delivery round: publish these reminders, in order, and reply
    /// with one outcome per reminder once the broker has answered for all.
    Publish {
        reminders: Vec<DueReminder>,
        reply: RpcReplyPort<Vec<PublishOutcome>>,
        /// The batch's span, parent of the publish and confirm spans.
        span: tracing::Span,
    },
    /// From the session's event task: flow control or the loss of the connection.
    Broker(BrokerEvent),
    /// From a confirm wait: the broker left a batch unanswered for the whole
    /// confirm timeout, so the connection is presumed dead.
    ConfirmsTimedOut,
}

/// Start-up arguments of the [`PublisherActor`].
pub struct PublisherArgs<C: BrokerConnector> {
    pub connector: Arc<C>,
    pub confirm_timeout: Duration,
    pub flow: FlowControl,
}

/// State of a running [`PublisherActor`].
pub struct PublisherState<C: BrokerConnector> {
    session: C::Session,
    events: JoinHandle<()>,
    confirm_timeout: Duration,
    flow: FlowControl,
}

impl<C: BrokerConnector> Drop for PublisherState<C> {
    fn drop(&mut self) {
        self.events.abort();
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
        let (session, mut events) = args
            .connector
            .connect()
            .instrument(tracing::info_span!(parent: None, "publisher connect"))
            .await?;
        let events = tokio::spawn(async move {
            while let Some(event) = events.recv().await {
                if myself
                    .send_message(PublisherMessage::Broker(event))
                    .is_err()
                {
                    return;
                }
            }
        });
        Ok(PublisherState {
            session,
            events,
            confirm_timeout: args.confirm_timeout,
            flow: args.flow,
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<PublisherMessage>,
        message: PublisherMessage,
        state: &mut PublisherState<C>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            PublisherMessage::Publish {
                reminders,
                reply,
                span,
            } => {
                let count = reminders.len();
                let confirms = tracing::info_span!(parent: &span, "publish", batch.size = count)
                    .in_scope(|| state.session.publish(reminders));
                let timeout = state.confirm_timeout;
                let flow = state.flow.clone();
                let confirm_span = tracing::info_span!(
                    parent: &span,
                    "confirm",
                    confirmed = tracing::field::Empty,
                    timed_out = false,
                );
                tokio::spawn(
                    async move {
                        let outcomes = match await_confirms(confirms, timeout, &flow).await {
                            Some(outcomes) => outcomes,
                            None => {
                                tracing::Span::current().record("timed_out", true);
                                let _ = myself.send_message(PublisherMessage::ConfirmsTimedOut);
                                let reason =
                                    format!("no confirm from the broker within {timeout:?}");
                                vec![PublishOutcome::Unknown(reason); count]
                            }
                        };
                        let confirmed = outcomes
                            .iter()
                            .filter(|outcome| **outcome == PublishOutcome::Confirmed)
                            .count();
                        tracing::Span::current().record("confirmed", confirmed);
                        let _ = reply.send(outcomes);
                    }
                    .instrument(confirm_span),
                );
            }
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
                return Err(format!("broker connection lost: {reason}").into());
            }
            PublisherMessage::ConfirmsTimedOut => {
                return Err(format!(
                    "the broker left a batch unconfirmed for {:?}; reconnecting",
                    state.confirm_timeout
                )
                .into());
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
pub async fn await_confirms(
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
