//! The three boundaries of the actor system, implemented by the service crate
//! for PostgreSQL and RabbitMQ and by in-memory fakes in tests.
//!
//! Futures are `Send` because actors run them on spawned tasks.

use std::future::Future;
use std::pin::Pin;

use tokio::sync::mpsc;
use uuid::Uuid;

use crate::model::{ChangeHint, DueReminder, NextDue, PublishOutcome};

/// An error crossing a port: actors log it and fail, and their supervisor
/// restarts them.
pub type PortError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// A port error that retrying cannot fix (a configuration mismatch such as an
/// exchange declared with another type). The supervisor stops the daemon with
/// it instead of restarting the failed actor.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Unrecoverable(pub String);

/// The schedule table.
pub trait ScheduleStore: Clone + Send + Sync + 'static {
    /// Due rows held by this claimer until finished or dropped.
    type Claim: Claim;

    /// Claims up to `limit` due reminders, oldest first, skipping rows another
    /// claim holds. The claim lasts at most the configured claim timeout.
    fn claim_due(
        &self,
        limit: usize,
    ) -> impl Future<Output = Result<Self::Claim, PortError>> + Send;

    /// The earliest pending reminder that is not among `in_flight`.
    fn next_due(
        &self,
        in_flight: &[Uuid],
    ) -> impl Future<Output = Result<Option<NextDue>, PortError>> + Send;
}

/// Claimed reminders. Dropping a claim without [`Claim::commit`] releases its
/// rows unchanged (the transaction rolls back), so they are delivered again.
pub trait Claim: Send + 'static {
    /// The claimed reminders, oldest first.
    fn reminders(&self) -> &[DueReminder];

    /// Records every claimed reminder as published (or skipped, if stale)
    /// except `undelivered`, which stay pending, and releases the claim.
    fn commit(self, undelivered: Vec<Uuid>) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// A way to open broker sessions (one per publisher incarnation).
pub trait BrokerConnector: Send + Sync + 'static {
    /// An open connection with a channel in publisher-confirm mode.
    type Session: BrokerSession;

    /// Connects, opens a confirm-mode channel and declares the exchange.
    /// Events about the connection arrive on the returned receiver.
    fn connect(
        &self,
    ) -> impl Future<
        Output = Result<(Self::Session, mpsc::UnboundedReceiver<BrokerEvent>), PortError>,
    > + Send;
}

/// Confirms of a published batch: one outcome per message, in order.
pub type PendingConfirms = Pin<Box<dyn Future<Output = Vec<PublishOutcome>> + Send>>;

/// An open broker connection.
pub trait BrokerSession: Send + Sync + 'static {
    /// Queues the reminders for publishing, in order, and returns their
    /// confirms. Never waits for the broker; if the session is unusable, every
    /// outcome is [`PublishOutcome::Unknown`].
    fn publish(&self, reminders: Vec<DueReminder>) -> PendingConfirms;

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

/// A way to open LISTEN sessions (one per listener incarnation).
pub trait ChangeFeedConnector: Send + Sync + 'static {
    /// A dedicated connection that LISTENs on the change channel.
    type Session: ChangeFeedSession;

    /// Connects and subscribes. Notifications and the loss of the connection
    /// arrive on the returned receiver.
    fn connect(
        &self,
    ) -> impl Future<
        Output = Result<(Self::Session, mpsc::UnboundedReceiver<ChangeFeedEvent>), PortError>,
    > + Send;
}

/// An open LISTEN connection.
pub trait ChangeFeedSession: Send + Sync + 'static {
    /// A round trip proving the connection is alive and still subscribed.
    fn ping(&self) -> impl Future<Output = Result<(), PortError>> + Send;
}

/// Something the LISTEN connection reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChangeFeedEvent {
    /// A change notification, already decoded.
    Changed(ChangeHint),
    /// The connection is gone.
    Lost(String),
}
