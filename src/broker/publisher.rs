//! [`BrokerConnector`] for RabbitMQ with lapin: one connection and one channel
//! in publisher-confirm mode per session.
//!
//! A session runs three tasks: a writer that publishes batches in order (so
//! callers never wait on a socket, which stalls while the broker applies flow
//! control), the confirm collector, and the event task that reports flow
//! control and the loss of the connection or channel to the publisher actor.

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
        let writer = tokio::spawn(write_batches(
            channel.clone(),
            ShortString::from(settings.exchange.as_str()),
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
    lapin::Error::from(ErrorKind::IOError(std::sync::Arc::new(
        std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time"),
    )))
}

/// A batch waiting to be written.
struct WriteRequest {
    events: Vec<DueEvent>,
    reply: oneshot::Sender<Vec<PublishOutcome>>,
}

/// An open connection and confirm-mode channel.
pub struct LapinSession {
    connection: Connection,
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
/// awaited), in arrival order, then hands its confirms to the collector.
async fn write_batches(
    channel: Channel,
    exchange: ShortString,
    mut requests: mpsc::UnboundedReceiver<WriteRequest>,
    collector: mpsc::UnboundedSender<PublishedBatch>,
) {
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    while let Some(request) = requests.recv().await {
        let now = Utc::now();
        let (bodies, properties): (Vec<_>, Vec<_>) = request
            .events
            .iter()
            .map(|event| envelope::encode(event, now))
            .unzip();
        let publishes = request.events.iter().zip(&bodies).zip(properties).map(
            |((event, body), properties)| {
                channel.basic_publish(
                    exchange.clone(),
                    ShortString::from(&*event.message.routing_key),
                    options,
                    body,
                    properties,
                )
            },
        );
        let confirms = join_all(publishes)
            .await
            .into_iter()
            .map(|published| published.map_err(|err| err.to_string()))
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
