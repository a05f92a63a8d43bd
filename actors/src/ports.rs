//! The three boundaries of the actor system, implemented by the service crate
//! for PostgreSQL and RabbitMQ and by in-memory fakes in tests.
//!
//! Futures are `Send` because actors run them on spawned tasks.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use uuid::Uuid;

use crate::model::{ChangeHint, DueEvent, NextDue, PublishOutcome};

/// An adapter's own error, with its source chain.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// An error crossing a port. Its variant decides what the supervisor does
/// with the actor that met it.
#[derive(Debug, thiserror::Error)]
pub enum PortError {
    /// The server cannot be reached or is not accepting sessions yet (down,
    /// restarting): the actor is restarted soon and often, so delivery resumes
    /// within about a second of the server coming back.
    #[error(transparent)]
    Unavailable(BoxError),
    /// Retrying can fix it (a connection lost, a statement timed out): the
    /// actor fails and is restarted after a backoff that grows while it keeps
    /// failing, so a crash loop does not hammer anything.
    #[error(transparent)]
    Transient(BoxError),
    /// Retrying cannot fix it (a configuration mismatch such as an exchange
    /// declared with another type): the daemon stops.
    #[error(transparent)]
    Unrecoverable(BoxError),
}

impl PortError {
    /// A server that cannot be reached now.
    pub fn unavailable(err: impl Into<BoxError>) -> Self {
        Self::Unavailable(err.into())
    }

    /// A failure worth retrying.
    pub fn transient(err: impl Into<BoxError>) -> Self {
        Self::Transient(err.into())
    }

    /// Whether the failure is waiting for a server rather than a crash.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable(_))
    }

    /// A failure that retrying cannot fix.
    pub fn unrecoverable(err: impl Into<BoxError>) -> Self {
        Self::Unrecoverable(err.into())
    }

    /// Whether the daemon must stop rather than retry.
    pub fn is_unrecoverable(&self) -> bool {
        matches!(self, Self::Unrecoverable(_))
    }
}

/// Where an adapter's connection task delivers what the connection reports:
/// straight into the owning actor's mailbox, so each event source has one
/// forwarding task. [`EventSink::send`] returns `false` once the actor is gone,
/// and the task then ends.
pub struct EventSink<E>(Arc<dyn Fn(E) -> bool + Send + Sync>);

impl<E> Clone for EventSink<E> {
    fn clone(&self) -> Self {
        Self(Arc::clone(&self.0))
    }
}

impl<E> EventSink<E> {
    /// A sink calling `deliver` for each event.
    pub fn new(deliver: impl Fn(E) -> bool + Send + Sync + 'static) -> Self {
        Self(Arc::new(deliver))
    }

    /// A sink into `actor`'s mailbox, each event wrapped by `message`.
    pub fn to_actor<M: ractor::Message>(actor: ractor::ActorRef<M>, message: fn(E) -> M) -> Self
    where
        E: 'static,
    {
        Self::new(move |event| actor.send_message(message(event)).is_ok())
    }

    /// Delivers one event; `false` if nobody receives events any more.
    pub fn send(&self, event: E) -> bool {
        (self.0)(event)
    }
}

/// The schedule: one table per kind of event.
pub trait ScheduleStore: Clone + Send + Sync + 'static {
    /// Due rows held by this claimer until finished or dropped.
    type Claim: Claim;

    /// Claims up to `limit` events of each kind that are due, or due within
    /// `ahead` (their [`DueEvent::ahead`](crate::model::DueEvent::ahead) says
    /// by how much), oldest first, skipping rows another claim holds. The
    /// claim lasts at most the configured claim timeout.
    fn claim_due(
        &self,
        limit: usize,
        ahead: Duration,
    ) -> impl Future<Output = Result<Self::Claim, PortError>> + Send;

    /// The earliest pending event of any kind that is not among `in_flight`.
    fn next_due(
        &self,
        in_flight: &[Uuid],
    ) -> impl Future<Output = Result<Option<NextDue>, PortError>> + Send;
}

/// Claimed events. Dropping a claim without [`Claim::commit`] releases its
/// rows unchanged (the transaction rolls back), so they are delivered again.
pub trait Claim: Send + 'static {
    /// The claimed events of every kind, oldest first.
    fn events(&self) -> &[DueEvent];

    /// Records every claimed event as published (or skipped, if stale)
    /// except `undelivered`, which stay pending (a refused one until its next
    /// attempt, or dead-lettered after its last), and releases the claim.
    /// Returns the ids of the events dead-lettered.
    fn commit(
        self,
        undelivered: Vec<Undelivered>,
    ) -> impl Future<Output = Result<Vec<Uuid>, PortError>> + Send;
}

/// When a refused event is tried again, and how often.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// The delay after the first refusal; it doubles with each further one.
    pub base: Duration,
    /// The longest delay.
    pub max: Duration,
    /// Refusals after which an event is dead-lettered.
    pub max_attempts: u32,
}

impl RetryPolicy {
    /// The delay before the next attempt of an event refused `attempts`
    /// times, before jitter (stores spread it over its upper half, so that
    /// events refused together are not retried together).
    pub fn delay(&self, attempts: u32) -> Duration {
        let doublings = attempts.saturating_sub(1).min(30);
        self.base.saturating_mul(1 << doublings).min(self.max)
    }
}

/// A claimed event the broker did not take.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Undelivered {
    pub id: Uuid,
    /// Why the broker refused this very message (returned it, nacked it, or
    /// it could not be published): a failed attempt. It is tried again after
    /// a delay that grows with its attempts, and dead-lettered after the
    /// last. `None`: nobody answered (the connection was lost), which says
    /// nothing about the message: it is tried again at once.
    pub refusal: Option<String>,
}

/// A way to open broker sessions (one per publisher incarnation).
pub trait BrokerConnector: Send + Sync + 'static {
    /// An open connection with a channel in publisher-confirm mode.
    type Session: BrokerSession;

    /// Connects, opens a confirm-mode channel and declares the exchange.
    /// Events about the connection go to `events`.
    fn connect(
        &self,
        events: EventSink<BrokerEvent>,
    ) -> impl Future<Output = Result<Self::Session, PortError>> + Send;
}

/// Confirms of a published batch: one outcome per message, in order.
pub type PendingConfirms = Pin<Box<dyn Future<Output = Vec<PublishOutcome>> + Send>>;

/// An open broker connection.
pub trait BrokerSession: Send + Sync + 'static {
    /// Queues the events' messages for publishing, in order, and returns
    /// their confirms. Never waits for the broker; if the session is unusable,
    /// every outcome is [`PublishOutcome::Unknown`].
    fn publish(&self, events: Vec<DueEvent>) -> PendingConfirms;

    /// Closes the channel and the connection cleanly.
    fn close(&self) -> impl Future<Output = ()> + Send;
}

/// Something the broker connection reports on its own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BrokerEvent {
    /// Flow control: the broker stopped reading from publishers (resource alarm).
    Blocked(String),
    /// Flow control lifted.
    Unblocked,
    /// The connection or channel is gone.
    Lost(String),
}

/// A way to open LISTEN connections (one per listener incarnation).
pub trait ListenConnector: Send + Sync + 'static {
    /// A dedicated connection that LISTENs on the change channel.
    type Session: ListenSession;

    /// Connects and subscribes. Notifications and the loss of the connection
    /// go to `events`.
    fn connect(
        &self,
        events: EventSink<ListenEvent>,
    ) -> impl Future<Output = Result<Self::Session, PortError>> + Send;
}

/// An open LISTEN connection.
pub trait ListenSession: Send + Sync + 'static {
    /// A round trip proving the connection is alive and still subscribed.
    fn ping(&self) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Something the LISTEN connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListenEvent {
    /// A change notification, already decoded.
    Changed(ChangeHint),
    /// The connection is gone.
    Lost(String),
}
