//! The ListenerActor owns the dedicated LISTEN connection and turns each
//! change notification into a message for the scheduler.
//!
//! Notifications are not stored by PostgreSQL: a listener that was away missed
//! them. So every incarnation subscribes first and then asks the scheduler to
//! resync with the table. A silent connection may be dead (a dropped NAT entry
//! sends no FIN), so the connection is pinged periodically; a failed ping or a
//! lost connection fails the actor, and the supervisor reconnects it with
//! backoff. At most [`CHANGE_FEED_CAPACITY`] hints wait in its mailbox
//! ([`change_feed`]); past that they turn into one resync.

mod change_feed;

use std::marker::PhantomData;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};
use tokio::task::JoinHandle;
use tracing::Instrument;

use crate::model::ChangeHint;
use crate::ports::{EventSink, ListenConnector, ListenEvent, ListenSession, PortError};
use crate::scheduler::SchedulerMessage;
use crate::slot::Slot;
use change_feed::ChangeFeed;

/// Change hints that may wait in the listener's mailbox. A hint is a few
/// dozen bytes; the bound keeps a notification flood from growing memory
/// while the listener waits on a ping.
pub const CHANGE_FEED_CAPACITY: usize = 1_024;

/// Messages of the [`ListenerActor`].
#[derive(Debug)]
pub enum ListenerMessage {
    /// From the connection's task: a notification or the loss of the connection.
    Listen(ListenEvent),
    /// From the ping interval: prove the connection is alive.
    Ping,
}

/// Why the [`ListenerActor`] failed; its supervisor reconnects it.
#[derive(Debug, thiserror::Error)]
pub enum ListenerError {
    #[error("LISTEN connection lost: {0}")]
    Lost(String),
    #[error("LISTEN connection ping failed")]
    Ping(#[source] PortError),
}

/// Start-up arguments of the [`ListenerActor`].
pub struct ListenerArgs<C: ListenConnector> {
    pub connector: Arc<C>,
    pub ping_interval: Duration,
    /// The only actor the listener talks to.
    pub scheduler: Slot<ActorRef<SchedulerMessage>>,
}

/// State of a running [`ListenerActor`].
pub struct ListenerState<C: ListenConnector> {
    session: C::Session,
    ping: JoinHandle<()>,
    scheduler: Slot<ActorRef<SchedulerMessage>>,
    feed: ChangeFeed,
}

impl<C: ListenConnector> Drop for ListenerState<C> {
    fn drop(&mut self) {
        self.ping.abort();
    }
}

/// See the module documentation.
pub struct ListenerActor<C>(PhantomData<fn() -> C>);

impl<C> Default for ListenerActor<C> {
    fn default() -> Self {
        Self(PhantomData)
    }
}

impl<C: ListenConnector> Actor for ListenerActor<C> {
    type Msg = ListenerMessage;
    type State = ListenerState<C>;
    type Arguments = ListenerArgs<C>;

    async fn pre_start(
        &self,
        myself: ActorRef<ListenerMessage>,
        args: ListenerArgs<C>,
    ) -> Result<ListenerState<C>, ActorProcessingErr> {
        let feed = ChangeFeed::new(CHANGE_FEED_CAPACITY);
        let events = {
            let (feed, actor) = (feed.clone(), myself.clone());
            EventSink::new(move |event| {
                // A dropped hint needs no delivery; the loss of the
                // connection always does.
                if matches!(event, ListenEvent::Changed(_)) && !feed.admit() {
                    return true;
                }
                actor.send_message(ListenerMessage::Listen(event)).is_ok()
            })
        };
        let session = args
            .connector
            .connect(events)
            .instrument(tracing::info_span!(parent: None, "listener connect"))
            .await?;
        let ping = myself.send_interval(args.ping_interval, || ListenerMessage::Ping);
        Ok(ListenerState {
            session,
            ping,
            scheduler: args.scheduler,
            feed,
        })
    }

    async fn post_start(
        &self,
        _myself: ActorRef<ListenerMessage>,
        state: &mut ListenerState<C>,
    ) -> Result<(), ActorProcessingErr> {
        // Subscribed now; anything that changed before is only in the table.
        state.scheduler.send(SchedulerMessage::Resync);
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<ListenerMessage>,
        message: ListenerMessage,
        state: &mut ListenerState<C>,
    ) -> Result<(), ActorProcessingErr> {
        match message {
            ListenerMessage::Listen(ListenEvent::Changed(hint)) => {
                if let ChangeHint::Unrecognised { payload } = &hint {
                    tracing::warn!(
                        payload = payload.as_str(),
                        "unrecognised change notification; re-reading the schedule"
                    );
                }
                state.scheduler.send(SchedulerMessage::Changed(hint));
                if state.feed.handled() {
                    tracing::debug!(
                        "change hints were dropped in a flood; re-reading the schedule"
                    );
                    state.scheduler.send(SchedulerMessage::Resync);
                }
            }
            ListenerMessage::Listen(ListenEvent::Lost(reason)) => {
                return Err(ListenerError::Lost(reason).into());
            }
            ListenerMessage::Ping => state.session.ping().await.map_err(ListenerError::Ping)?,
        }
        Ok(())
    }
}
