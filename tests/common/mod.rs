//! Test support: a fresh database per test (migrated, dropped afterwards) and
//! uniquely named RabbitMQ exchanges and queues, so tests run in parallel on
//! one server and leave nothing behind.
//!
//! The servers default to the local ones; `TEST_DATABASE_URL` (any database on
//! the server) and `TEST_RABBITMQ_URL` point elsewhere. An unreachable server
//! fails the test with a message saying so; nothing is skipped silently.
//!
//! Every test binary includes this module as `pub mod common;`: it is the
//! binary's public support interface, so the parts one binary does not use are
//! not dead code there (helpers no binary uses are removed instead).

pub mod api;
pub mod browser;
pub mod otlp;
pub mod ports;
pub mod private_pg;
pub mod private_rabbit;
pub mod process;
pub mod proxy;
pub mod rig;
pub mod schedule;

use std::time::Duration;

use lapin::options::ExchangeDeleteOptions;
use lapin::{Connection, ConnectionProperties};
use notification_scheduler::broker::consumer::{self, QueueKind, ReminderConsumer};
use notification_scheduler::config::{BrokerUrl, DatabaseUrl};
use tokio_postgres::NoTls;
use uuid::Uuid;

/// Upper bound for any single wait in a test: a hang fails fast.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn server_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres:postgres@127.0.0.1:5432/postgres".to_owned())
}

pub fn rabbitmq_url() -> String {
    std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())
}

/// Host and port of a server URL, for a proxy in front of it.
pub fn address_of(url: &str, default_port: u16) -> std::net::SocketAddr {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    let host_port = authority.rsplit('@').next().unwrap();
    let host_port = if host_port.contains(':') {
        host_port.to_owned()
    } else {
        format!("{host_port}:{default_port}")
    };
    host_port
        .replace("localhost", "127.0.0.1")
        .parse()
        .expect("a host:port address")
}

/// Host and port of the test PostgreSQL server.
pub fn postgres_address() -> std::net::SocketAddr {
    address_of(&server_database_url(), 5432)
}

/// Host and port of the test broker.
pub fn rabbitmq_address() -> std::net::SocketAddr {
    address_of(&rabbitmq_url(), 5672)
}

fn with_database(url: &str, database: &str) -> String {
    let (base, _) = url.rsplit_once('/').expect("a database URL has a path");
    format!("{base}/{database}")
}

async fn admin_client() -> tokio_postgres::Client {
    let url = server_database_url();
    let (client, connection) = tokio_postgres::connect(&url, NoTls)
        .await
        .unwrap_or_else(|err| panic!("PostgreSQL for tests is unreachable at {url}: {err}"));
    tokio::spawn(connection);
    client
}

/// A database that exists for one test.
pub struct TestDb {
    pub name: String,
    /// postgresql:// URL of the database.
    pub url: String,
}

impl TestDb {
    /// A new database with every migration applied.
    pub async fn migrated() -> Self {
        let db = Self::empty().await;
        let mut client = db.client().await;
        notification_scheduler::db::migrate::run(&mut client)
            .await
            .expect("migrations apply to an empty database");
        db
    }

    /// A new database without any schema.
    pub async fn empty() -> Self {
        let name = format!("test_{}", Uuid::new_v4().simple());
        admin_client()
            .await
            .batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .expect("create the test database");
        let url = with_database(&server_database_url(), &name);
        Self { name, url }
    }

    pub fn database_url(&self) -> DatabaseUrl {
        self.url.parse().expect("valid test URL")
    }

    /// A connection of its own.
    pub async fn client(&self) -> tokio_postgres::Client {
        let (client, connection) = tokio_postgres::connect(&self.url, NoTls)
            .await
            .expect("connect to the test database");
        tokio::spawn(connection);
        client
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs inside the test's runtime; use a thread with its own.
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                admin_client()
                    .await
                    .batch_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                    .await
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop test database {}", self.name);
        }
    }
}

/// The routing key of reminder messages (the daemon's default).
pub const ROUTING_KEY: &str = "game.reminder_due";

/// A uniquely named topic exchange for one test, deleted afterwards.
pub struct TestBroker {
    pub url: String,
    pub exchange: String,
    connection: Option<Connection>,
}

impl TestBroker {
    /// The same exchange and routing key reached through `url` (a proxy);
    /// only the original deletes the exchange.
    pub fn via(&self, url: String) -> TestBroker {
        TestBroker {
            url,
            exchange: self.exchange.clone(),
            connection: None,
        }
    }

    pub async fn new() -> Self {
        let url = rabbitmq_url();
        let connection = Connection::connect(&url, ConnectionProperties::default())
            .await
            .unwrap_or_else(|err| panic!("RabbitMQ for tests is unreachable at {url}: {err}"));
        Self {
            url,
            exchange: format!("test.{}", Uuid::new_v4().simple()),
            connection: Some(connection),
        }
    }

    /// A queue bound to the exchange (declared here if the daemon has not yet
    /// done so) by the project's own consumer, deleted when the consumer is
    /// dropped.
    pub async fn consumer(&self) -> TestConsumer {
        TestConsumer {
            consumer: bind(&self.url, &self.exchange, QueueKind::Temporary).await,
        }
    }
}

/// Scheduled messages in tests use routing keys under this prefix, which
/// every test consumer binds.
pub const MESSAGE_ROUTING_KEYS: &str = "scheduled.#";

/// A [`ReminderConsumer`] on `exchange` at `url` for the routing key of every
/// kind (and [`MESSAGE_ROUTING_KEYS`]): the exchange, the queue and its
/// bindings declared as the bot does.
pub async fn bind(url: &str, exchange: &str, queue: QueueKind) -> ReminderConsumer {
    let broker_url: BrokerUrl = url.parse().expect("a valid broker URL");
    let kinds = notification_scheduler::kinds::delivered(ROUTING_KEY);
    let routing_keys: Vec<&str> = kinds
        .iter()
        .filter_map(|kind| kind.routing_key.as_deref())
        .chain([MESSAGE_ROUTING_KEYS])
        .collect();
    // Messages are taken without acknowledgements, so the prefetch is moot.
    ReminderConsumer::bind(&broker_url, exchange, &routing_keys, queue, 1_000)
        .await
        .unwrap_or_else(|err| panic!("bind a queue to exchange {exchange}: {err}"))
}

impl Drop for TestBroker {
    fn drop(&mut self) {
        if self.connection.is_none() {
            return;
        }
        let url = self.url.clone();
        let exchange = self.exchange.clone();
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let connection = Connection::connect(&url, ConnectionProperties::default()).await?;
                let channel = connection.create_channel().await?;
                channel
                    .exchange_delete(exchange.as_str().into(), ExchangeDeleteOptions::default())
                    .await?;
                connection.close(200, "done".into()).await
            })
        })
        .join();
    }
}

/// A message as a consumer sees it.
#[derive(Debug, Clone)]
pub struct Received {
    pub message_id: String,
    pub body: serde_json::Value,
    /// The body as published.
    pub raw_body: Vec<u8>,
    pub properties: lapin::BasicProperties,
    pub expiration: Option<String>,
    pub traceparent: Option<String>,
    pub received_at: chrono::DateTime<chrono::Utc>,
}

impl From<consumer::Received> for Received {
    fn from(message: consumer::Received) -> Self {
        let properties = &message.properties;
        Self {
            message_id: message.message_id.unwrap_or_default(),
            body: serde_json::from_slice(&message.body).expect("JSON body"),
            raw_body: message.body.clone(),
            properties: message.properties.clone(),
            expiration: properties.expiration().as_ref().map(ToString::to_string),
            traceparent: properties
                .headers()
                .as_ref()
                .and_then(|headers| headers.inner().get("traceparent"))
                .and_then(|value| value.as_long_string())
                .map(ToString::to_string),
            received_at: message.received_at,
        }
    }
}

impl Received {
    /// The AMQP header `name`, if the message has it.
    pub fn header(&self, name: &str) -> Option<&lapin::types::AMQPValue> {
        self.properties.headers().as_ref()?.inner().get(name)
    }

    /// The AMQP header `name` as text, if it is a (long) string.
    pub fn text_header(&self, name: &str) -> Option<String> {
        self.header(name)?.as_long_string().map(ToString::to_string)
    }
}

pub struct TestConsumer {
    consumer: ReminderConsumer,
}

impl TestConsumer {
    /// The next message, or `None` if none arrives within `timeout`.
    pub async fn next_within(&mut self, timeout: Duration) -> Option<Received> {
        let message = tokio::time::timeout(timeout, self.consumer.next())
            .await
            .ok()??
            .expect("delivery");
        Some(message.into())
    }

    /// Exactly `count` messages, failing the test if they do not all arrive
    /// within [`WAIT`] of each other.
    pub async fn take(&mut self, count: usize) -> Vec<Received> {
        let mut received = Vec::with_capacity(count);
        while received.len() < count {
            match self.next_within(WAIT).await {
                Some(message) => received.push(message),
                None => panic!("received {} of {count} messages", received.len()),
            }
        }
        received
    }

    /// Asserts that nothing arrives for `quiet`.
    pub async fn assert_quiet(&mut self, quiet: Duration) {
        if let Some(message) = self.next_within(quiet).await {
            panic!("unexpected message: {message:?}");
        }
    }
}
