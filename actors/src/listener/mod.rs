//! The ListenerActor owns the dedicated LISTEN connection and turns each
//! change notification into a message for the scheduler.
//!
//! Notifications are not stored by PostgreSQL: a listener that was away missed
//! them. So every incarnation subscribes first and then asks the scheduler to
//! resync with the table. A silent connection may be dead (a dropped NAT entry
//! sends no FIN), so the connection is pinged periodically; a failed ping or a
//! lost connection fails the actor, and the supervisor reconnects it with
//! backoff.

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::model::ChangeHint;
use crate::peers::Peers;
use crate::ports::{ChangeFeedConnector, ChangeFeedEvent, ChangeFeedSession};
use crate::scheduler::SchedulerMessage;

/// Messages of the [`ListenerActor`].
#[derive(Debug)]
pub enum ListenerMessage {
    /// From the connection task: a notification or the loss of the connection.
    Feed(ChangeFeedEvent),
    /// From the ping interval: prove the connection is alive.
    Ping,
}

/// Start-up arguments of the [`ListenerActor`].
pub struct ListenerArgs<C: ChangeFeedConnector> {
    pub connector: Arc<C>,
    pub ping_interval: Duration,
    pub peers: Peers,
}

/// State of a running [`ListenerActor`].
pub struct ListenerState<C: ChangeFeedConnector> {
    session: C::Session,
    tasks: [JoinHandle<()>; 2],
    peers: Peers,
}

impl<C: ChangeFeedConnector> Drop for ListenerState<C> {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// See the module documentation.
pub struct ListenerActor<C>(PhantomData<fn() -> C>);

impl<C> Default for ListenerActor<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C: ChangeFeedConnector> Actor for ListenerActor<C> {
    type Msg = ListenerMessage;
    type State = ListenerState<C>;
    type Arguments = ListenerArgs<C>;

    async fn pre_start(
        &self,
        myself: ActorRef<ListenerMessage>,
        args: ListenerArgs<C>,
    ) -> Result<ListenerState<C>, ActorProcessingErr> {
        let (session, mut events) = args
            .connector
            .connect()
            .instrument(tracing::info_span!(parent: None, "listener connect"))
            .await?;
        let forwarder = {
            let myself = myself.clone();
            tokio::spawn(async move {
                while let Some(event) = events.recv().await {
                    if myself.send_message(ListenerMessage::Feed(event)).is_err() {
                        return;
                    }
                }
            })
        };
        let ping = myself.send_interval(args.ping_interval, || ListenerMessage::Ping);
        Ok(ListenerState {
            session,
            tasks: [forwarder, ping],
            peers: args.peers,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<ListenerMessage>,
        state: &mut ListenerState<C>,
    ) -> Result<(), ActorProcessingErr> {
        // Subscribed now; anything that changed before is only in the table.
        state.peers.scheduler.send(SchedulerMessage::Resync);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ListenerMessage>,
        message: ListenerMessage,
        state: &mut ListenerState<C>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ListenerMessage::Feed(ChangeFeedEvent::Changed(hint)) => {
                if let ChangeHint::Unrecognised { payload } = &hint {
                    tracing::warn!(
                        payload = payload.as_str(),
                        "unrecognised change notification; re-reading the schedule"
                    );
                }
                state.peers.scheduler.send(SchedulerMessage::Changed(hint));
            }
            ListenerMessage::Feed(ChangeFeedEvent::Lost(reason)) => {
                return Err(format!("LISTEN connection lost: {reason}").into());
            }
            ListenerMessage::Ping => state.session.ping().await?,
        }
        Ok(())
    }
}
