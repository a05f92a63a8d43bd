//! [`BrokerConnector`] for RabbitMQ with lapin: one connection and one channel
//! in publisher-confirm mode per session.
//!
//! A session runs three tasks: a writer that publishes batches in order (so
//! callers never wait on a socket, which stalls while the broker applies flow
//! control), the confirm collector, and the event task that reports flow
//! control and the loss of the connection or channel to the publisher actor.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use actors::model::{DueEvent, PublishOutcome};
use actors::ports::{
    BrokerConnector, BrokerEvent, BrokerSession, EventSink, PendingConfirms, PortError,
};
use chrono::Utc;
use futures_util::StreamExt;
use futures_util::future::join_all;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions, ExchangeDeclareOptions};
use lapin::types::{FieldTable, ShortString};
use lapin::{Channel, Connection, ErrorKind, Event, ExchangeKind};
use tokio::sync::{mpsc, oneshot};

use super::confirms::{self, PublishedBatch};
use super::{BrokerError, envelope};
use crate::config::BrokerUrl;

/// Where events are published (each with its kind's routing key).
#[derive(Debug, Clone)]
pub struct PublisherSettings {
    pub url: BrokerUrl,
    pub exchange: String,
    pub heartbeat: Duration,
    pub connect_timeout: Duration,
    /// Largest body published (`RABBITMQ_MAX_MESSAGE_BYTES`).
    pub max_message_bytes: usize,
    /// Shown in the broker's connection list.
    pub connection_name: String,
}

/// Opens publisher sessions.
pub struct LapinConnector {
    settings: PublisherSettings,
}

impl LapinConnector {
    pub fn new(settings: PublisherSettings) -> Self {
        Self { settings }
    }

    fn operation_error(&self, context: &'static str, err: lapin::Error) -> BrokerError {
        BrokerError::operation(self.settings.url.endpoint(), context, err)
    }
}

impl BrokerConnector for LapinConnector {
    type Session = LapinSession;

    async fn connect(&self, events: EventSink<BrokerEvent>) -> Result<LapinSession, PortError> {
        let settings = &self.settings;
        let connection = super::connect(
            &settings.url,
            settings.heartbeat,
            settings.connect_timeout,
            &settings.connection_name,
        )
        .await?;
        // lapin drops events emitted while nobody listens: subscribe first.
        let connection_events = connection.events_listener();
        let bounded = |future| tokio::time::timeout(settings.connect_timeout, future);
        let channel = bounded(connection.create_channel())
            .await
            .map_err(|_| self.operation_error("opening a channel", timed_out()))?
            .map_err(|err| self.operation_error("opening a channel", err))?;
        tokio::time::timeout(
            settings.connect_timeout,
            channel.confirm_select(ConfirmSelectOptions::default()),
        )
        .await
        .map_err(|_| self.operation_error("enabling publisher confirms", timed_out()))?
        .map_err(|err| self.operation_error("enabling publisher confirms", err))?;
        let declared = tokio::time::timeout(
            settings.connect_timeout,
            channel.exchange_declare(
                ShortString::from(settings.exchange.as_str()),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            ),
        )
        .await
        .map_err(|_| self.operation_error("declaring the exchange", timed_out()))?;
        if let Err(err) = declared {
            if let ErrorKind::ProtocolError(amqp) = err.kind()
                && amqp.get_id() == 406
            {
                return Err(PortError::unrecoverable(format!(
                    "exchange '{}' exists on RabbitMQ at {} with another type or durability \
                     ({}); it must be a durable topic exchange",
                    settings.exchange,
                    settings.url.endpoint(),
                    amqp.get_message()
                )));
            }
            return Err(self.operation_error("declaring the exchange", err).into());
        }

        let reporter = tokio::spawn(report_events(connection_events, events));
        let (confirm_sender, confirm_receiver) = mpsc::unbounded_channel();
        let collector = tokio::spawn(confirms::collect(confirm_receiver));
        let (writer_sender, writer_receiver) = mpsc::unbounded_channel();
        let connection = Arc::new(connection);
        let writer = tokio::spawn(write_batches(
            Exchanges::new(
                Arc::clone(&connection),
                &settings.exchange,
                settings.connect_timeout,
            ),
            channel.clone(),
            settings.max_message_bytes,
            writer_receiver,
            confirm_sender,
        ));
        let session = LapinSession {
            connection,
            channel,
            writer: writer_sender,
            tasks: vec![reporter, collector, writer],
            close_timeout: settings.connect_timeout,
        };
        Ok(session)
    }
}

fn timed_out() -> lapin::Error {
    lapin::Error::from(ErrorKind::IOError(Arc::new(std::io::Error::new(
        std::io::ErrorKind::TimedOut,
        "no answer in time",
    ))))
}

/// A batch waiting to be written.
struct WriteRequest {
    events: Vec<DueEvent>,
    reply: oneshot::Sender<Vec<PublishOutcome>>,
}

/// An open connection and confirm-mode channel.
pub struct LapinSession {
    connection: Arc<Connection>,
    channel: Channel,
    writer: mpsc::UnboundedSender<WriteRequest>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    close_timeout: Duration,
}

impl BrokerSession for LapinSession {
    fn publish(&self, events: Vec<DueEvent>) -> PendingConfirms {
        let count = events.len();
        let (reply, outcomes) = oneshot::channel();
        let lost =
            move || vec![PublishOutcome::Unknown("the broker session ended".to_owned()); count];
        if self.writer.send(WriteRequest { events, reply }).is_err() {
            return Box::pin(std::future::ready(lost()));
        }
        Box::pin(async move { outcomes.await.unwrap_or_else(|_| lost()) })
    }

    async fn close(&self) {
        let closing = async {
            let _ = self
                .channel
                .close(200, ShortString::from("shutting down"))
                .await;
            let _ = self
                .connection
                .close(200, ShortString::from("shutting down"))
                .await;
        };
        // Closing cannot complete while the broker blocks the connection.
        let _ = tokio::time::timeout(self.close_timeout, closing).await;
    }
}

impl Drop for LapinSession {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Publishes each batch pipelined (every frame queued before the first is
/// awaited), in arrival order, then hands its confirms to the collector. A
/// body over `max_message_bytes` is not published: the broker would close the
/// channel under the whole batch.
async fn write_batches(
    mut exchanges: Exchanges,
    channel: Channel,
    max_message_bytes: usize,
    mut requests: mpsc::UnboundedReceiver<WriteRequest>,
    collector: mpsc::UnboundedSender<PublishedBatch>,
) {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    while let Some(request) = requests.recv().await {
        let targets = exchanges.resolve(&request.events).await;
        let now = Utc::now();
        let encoded: Vec<_> = request
            .events
            .iter()
            .zip(targets)
            .map(|(event, target)| {
                let exchange = target?;
                let (body, properties) = envelope::encode(event, now);
                if body.len() > max_message_bytes {
                    return Err(PublishOutcome::Unpublishable(format!(
                        "a body of {} bytes is over RABBITMQ_MAX_MESSAGE_BYTES ({max_message_bytes})",
                        body.len()
                    )));
                }
                Ok((event, exchange, (body, properties)))
            })
            .collect();
        let publishes = encoded.iter().filter_map(|message| {
            let (event, exchange, (body, properties)) = message.as_ref().ok()?;
            Some(channel.basic_publish(
                exchange.clone(),
                ShortString::from(&*event.message.routing_key),
                options,
                body,
                properties.clone(),
            ))
        });
        let mut published = join_all(publishes).await.into_iter();
        let confirms = encoded
            .into_iter()
            .map(|message| match message {
                Err(unpublished) => Err(unpublished),
                Ok(_) => match published.next() {
                    Some(Ok(confirm)) => Ok(confirm),
                    Some(Err(err)) => Err(PublishOutcome::Unknown(err.to_string())),
                    None => Err(PublishOutcome::Unknown("not published".to_owned())),
                },
            })
            .collect();
        let batch = PublishedBatch {
            ids: request.events.iter().map(|event| event.id).collect(),
            confirms,
            reply: request.reply,
        };
        if collector.send(batch).is_err() {
            return;
        }
    }
}

/// The exchanges a session publishes to: the configured one, and those that
/// scheduled messages name, each checked once to exist before its first
/// publish. Publishing to a missing exchange would close the channel and fail
/// every message in flight on it; a message for one is reported unpublishable
/// instead, without publishing.
struct Exchanges {
    connection: Arc<Connection>,
    configured: ShortString,
    existing: HashSet<Arc<str>>,
    timeout: Duration,
}

impl Exchanges {
    fn new(connection: Arc<Connection>, configured: &str, timeout: Duration) -> Self {
        Self {
            connection,
            configured: ShortString::from(configured),
            existing: HashSet::new(),
            timeout,
        }
    }

    /// The exchange of each event, or the outcome of an event that cannot be
    /// published.
    async fn resolve(&mut self, events: &[DueEvent]) -> Vec<Result<ShortString, PublishOutcome>> {
        let mut missing: HashMap<Arc<str>, PublishOutcome> = HashMap::new();
        for event in events {
            if let Some(name) = &event.message.exchange
                && **name != *self.configured.as_str()
                && !self.existing.contains(name)
                && !missing.contains_key(name)
            {
                match self.check(name).await {
                    Ok(()) => {
                        self.existing.insert(Arc::clone(name));
                    }
                    Err(outcome) => {
                        missing.insert(Arc::clone(name), outcome);
                    }
                }
            }
        }
        events
            .iter()
            .map(|event| match &event.message.exchange {
                None => Ok(self.configured.clone()),
                Some(name) => match missing.get(name) {
                    Some(outcome) => Err(outcome.clone()),
                    None => Ok(ShortString::from(&**name)),
                },
            })
            .collect()
    }

    /// Checks on a channel of its own that `name` exists: the broker closes
    /// a channel that declares a missing exchange, even passively.
    async fn check(&self, name: &str) -> Result<(), PublishOutcome> {
        let unknown = |reason: String| {
            PublishOutcome::Unknown(format!("checking that exchange '{name}' exists: {reason}"))
        };
        let checked = tokio::time::timeout(self.timeout, async {
            let channel = self.connection.create_channel().await?;
            let declared = channel
                .exchange_declare(
                    ShortString::from(name),
                    ExchangeKind::Topic,
                    ExchangeDeclareOptions {
                        passive: true,
                        ..ExchangeDeclareOptions::default()
                    },
                    FieldTable::default(),
                )
                .await;
            if declared.is_ok() {
                let _ = channel.close(200, ShortString::from("checked")).await;
            }
            declared
        })
        .await
        .map_err(|_| unknown("no answer in time".to_owned()))?;
        match checked {
            Ok(()) => Ok(()),
            Err(err) if matches!(err.kind(), ErrorKind::ProtocolError(amqp) if amqp.get_id() == 404) => {
                Err(PublishOutcome::Unpublishable(format!(
                    "exchange '{name}' does not exist"
                )))
            }
            Err(err) => Err(unknown(err.to_string())),
        }
    }
}

/// Reports flow control, and the end of the connection or the channel (after
/// any error the channel is unusable).
async fn report_events(
    events: impl futures_util::Stream<Item = Event> + Send + 'static,
    sink: EventSink<BrokerEvent>,
) {
    let mut events = std::pin::pin!(events);
    while let Some(event) = events.next().await {
        let forwarded = match event {
            Event::ConnectionBlocked(reason) => BrokerEvent::Blocked(reason),
            Event::ConnectionUnblocked => BrokerEvent::Unblocked,
            Event::Error(err) => BrokerEvent::Lost(err.to_string()),
            _ => continue,
        };
        let lost = matches!(forwarded, BrokerEvent::Lost(_));
        if !sink.send(forwarded) || lost {
            return;
        }
    }
    sink.send(BrokerEvent::Lost("the connection closed".to_owned()));
}
