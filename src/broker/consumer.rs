//! A consumer of event messages, as the bot would run it: a queue bound to
//! the exchange with the routing keys of the kinds it wants. Used by `watch`,
//! the tests and the benchmark.

use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use lapin::options::{
    BasicConsumeOptions, BasicQosOptions, ExchangeDeclareOptions, QueueBindOptions,
    QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::types::{AMQPValue, FieldTable, ShortString};
use lapin::{Channel, Connection, ExchangeKind};

use super::BrokerError;
use crate::config::BrokerUrl;

/// Which queue to consume from.
#[derive(Debug, Clone)]
pub enum QueueKind {
    /// A server-named queue deleted when the consumer disconnects.
    Temporary,
    /// A durable queue, like the bot's own, deleted by [`ReminderConsumer::delete_queue`].
    Durable(String),
    /// A durable quorum queue (`x-queue-type: quorum`): replicated over the
    /// nodes of a cluster, so its messages survive the loss of a minority of
    /// them, where a classic queue lives on one node and is gone with it.
    Quorum(String),
}

const DURABLE: QueueDeclareOptions = QueueDeclareOptions {
    passive: false,
    durable: true,
    exclusive: false,
    auto_delete: false,
    nowait: false,
};

/// A message as received.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: Option<String>,
    pub body: Vec<u8>,
    pub properties: lapin::BasicProperties,
    pub received_at: DateTime<Utc>,
}

/// A consumer bound to the reminder exchange.
pub struct ReminderConsumer {
    connection: Connection,
    channel: Channel,
    queue: ShortString,
    consumer: lapin::Consumer,
}

impl ReminderConsumer {
    /// Connects, declares the exchange (durable topic, as the daemon does), the
    /// queue and its bindings (one per routing key), and starts consuming
    /// without acknowledgements (`prefetch` bounds messages in flight to this
    /// consumer).
    pub async fn bind(
        url: &BrokerUrl,
        exchange: &str,
        routing_keys: &[&str],
        queue: QueueKind,
        prefetch: u16,
    ) -> Result<Self, BrokerError> {
        let timeout = std::time::Duration::from_secs(10);
        let connection =
            super::connect(url, timeout, timeout, "notification-scheduler consumer").await?;
        let failed = |context: &'static str| {
            let endpoint = url.endpoint();
            move |err: lapin::Error| BrokerError::operation(endpoint, context, err)
        };
        let channel = connection
            .create_channel()
            .await
            .map_err(failed("opening a channel"))?;
        channel
            .exchange_declare(
                ShortString::from(exchange),
                ExchangeKind::Topic,
                ExchangeDeclareOptions {
                    durable: true,
                    ..ExchangeDeclareOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed("declaring the exchange"))?;
        let mut arguments = FieldTable::default();
        let (name, options) = match queue {
            QueueKind::Temporary => (
                String::new(),
                QueueDeclareOptions {
                    exclusive: true,
                    auto_delete: true,
                    ..QueueDeclareOptions::default()
                },
            ),
            QueueKind::Durable(name) => (name, DURABLE),
            QueueKind::Quorum(name) => {
                arguments.insert(
                    ShortString::from("x-queue-type"),
                    AMQPValue::LongString("quorum".into()),
                );
                (name, DURABLE)
            }
        };
        let declared = channel
            .queue_declare(ShortString::from(name), options, arguments)
            .await
            .map_err(failed("declaring the queue"))?;
        let queue = declared.name().clone();
        for routing_key in routing_keys {
            channel
                .queue_bind(
                    queue.clone(),
                    ShortString::from(exchange),
                    ShortString::from(*routing_key),
                    QueueBindOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(failed("binding the queue"))?;
        }
        channel
            .basic_qos(prefetch, BasicQosOptions::default())
            .await
            .map_err(failed("setting the prefetch"))?;
        let consumer = channel
            .basic_consume(
                queue.clone(),
                ShortString::from(""),
                BasicConsumeOptions {
                    no_ack: true,
                    ..BasicConsumeOptions::default()
                },
                FieldTable::default(),
            )
            .await
            .map_err(failed("starting the consumer"))?;
        Ok(Self {
            connection,
            channel,
            queue,
            consumer,
        })
    }

    /// The next message; `None` when the connection ends.
    pub async fn next(&mut self) -> Option<Result<Received, lapin::Error>> {
        let delivery = self.consumer.next().await?;
        let received_at = Utc::now();
        Some(delivery.map(|delivery| {
            Received {
                message_id: delivery
                    .properties
                    .message_id()
                    .as_ref()
                    .map(ToString::to_string),
                body: delivery.data,
                properties: delivery.properties,
                received_at,
            }
        }))
    }

    /// Deletes the queue (a durable one outlives the consumer otherwise) and
    /// closes the connection.
    pub async fn delete_queue(self) {
        let _ = self
            .channel
            .queue_delete(self.queue.clone(), QueueDeleteOptions::default())
            .await;
        let _ = self.connection.close(200, ShortString::from("done")).await;
    }
}
