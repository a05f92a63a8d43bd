//! The rig of the fault tests (tests/faults.rs, tests/restarts.rs): a
//! database, an exchange with a consumer, fault proxies in front of either
//! server if the test wants them, and a daemon that reaches the servers
//! through them; one set of quick failure-detection settings; and the
//! accounting of a run against the documented duplicate window.

use std::collections::HashMap;
use std::time::Duration;

use notification_scheduler::daemon::RunningDaemon;

use super::process::{LogTail, Running, spawn_followed};
use super::proxy::FaultProxy;
use super::schedule::{Reminder, Tally, count, receive_all, start_daemon_at, wait_for};
use super::{Received, TestBroker, TestConsumer, TestDb, WAIT};

/// Batches of this size, at most this many in flight: the duplicate window of
/// a fault during a drain is their product ([`drain_settings`]).
pub const BATCH: usize = 100;
pub const IN_FLIGHT: usize = 4;
/// The documented duplicate window (docs/DELIVERY.md): the batches in flight.
pub const WINDOW: usize = BATCH * IN_FLIGHT;

/// Settings that make every failure detector fire within a few seconds: the
/// LISTEN ping, statement and connect timeouts, AMQP heartbeat and confirm
/// timeout, the claim timeout, restart backoff and shutdown grace. (The
/// broker's connect timeout leaves room for a node that has just restarted.)
pub const QUICK_DETECTION: [&str; 18] = [
    "--listener-ping-interval",
    "500ms",
    "--query-timeout",
    "2s",
    "--database-connect-timeout",
    "1s",
    "--rabbitmq-heartbeat",
    "1s",
    "--rabbitmq-connect-timeout",
    "2s",
    "--rabbitmq-confirm-timeout",
    "2s",
    "--claim-timeout",
    "5s",
    "--restart-backoff-max",
    "500ms",
    "--shutdown-grace",
    "2s",
];

/// [`QUICK_DETECTION`] with batches of [`BATCH`], [`IN_FLIGHT`] in flight.
pub fn drain_settings() -> Vec<&'static str> {
    const _: () = assert!(BATCH == 100 && IN_FLIGHT == 4, "the flags below say so");
    let mut settings = QUICK_DETECTION.to_vec();
    settings.extend(["--batch-size", "100", "--max-in-flight-batches", "4"]);
    settings
}

/// `settings` with each flag of `overrides` set to its value there (replacing
/// the value `settings` gives it, or added): a flag may appear only once.
pub fn overriding<'a>(settings: &[&'a str], overrides: &[(&'a str, &'a str)]) -> Vec<&'a str> {
    let mut result = settings.to_vec();
    for &(flag, value) in overrides {
        match result.iter().position(|arg| *arg == flag) {
            Some(at) => result[at + 1] = value,
            None => result.extend([flag, value]),
        }
    }
    result
}

/// Fails the test if `tally` has more duplicates than `faults` windows;
/// prints the figures.
pub fn assert_within_window(tally: Tally, faults: usize, what: &str) {
    assert!(
        tally.duplicates <= faults * WINDOW,
        "{what}: {} duplicates, more than {faults} × the window of {WINDOW}",
        tally.duplicates
    );
    eprintln!(
        "{what}: {} reminders, {} duplicates",
        tally.distinct, tally.duplicates
    );
}

/// Reminders by message id (the row id as text), as [`super::schedule::account`] expects them.
pub fn by_id(reminders: &[Reminder]) -> HashMap<String, Reminder> {
    reminders
        .iter()
        .map(|reminder| (reminder.id.to_string(), reminder.clone()))
        .collect()
}

/// Waits (up to `limit`) until every row of the database is recorded as sent.
pub async fn all_sent(client: &tokio_postgres::Client, limit: Duration) {
    wait_for("every row to be sent", limit, || async {
        count(client, "NOT sent").await == 0
    })
    .await;
}

/// Takes whatever still arrives (late repeats) until 500 ms pass quietly.
pub async fn take_until_quiet(consumer: &mut TestConsumer, received: &mut Vec<Received>) {
    while let Some(message) = consumer.next_within(Duration::from_millis(500)).await {
        received.push(message);
    }
}

/// A database, an exchange with a consumer bound to it, a connection to the
/// database, and optionally a [`FaultProxy`] in front of either server for
/// the daemons the test starts.
pub struct Rig {
    pub client: tokio_postgres::Client,
    pub broker: TestBroker,
    pub consumer: TestConsumer,
    database_url: String,
    postgres_proxy: Option<FaultProxy>,
    rabbitmq_proxy: Option<FaultProxy>,
    _db: Option<TestDb>,
}

impl Rig {
    /// A new migrated test database and exchange on the shared servers.
    pub async fn new() -> Self {
        let db = TestDb::migrated().await;
        let client = db.client().await;
        let mut rig = Self::on_database(db.url.clone(), client).await;
        rig._db = Some(db);
        rig
    }

    /// The database at `database_url` (a private server, migrated), reached
    /// directly by `client`, and a new exchange on the shared broker.
    pub async fn on_database(database_url: String, client: tokio_postgres::Client) -> Self {
        let broker = TestBroker::new().await;
        let consumer = broker.consumer().await;
        Self {
            client,
            broker,
            consumer,
            database_url,
            postgres_proxy: None,
            rabbitmq_proxy: None,
            _db: None,
        }
    }

    /// Daemons started afterwards reach PostgreSQL through a proxy.
    pub async fn with_postgres_proxy(mut self) -> Self {
        let address = super::address_of(&self.database_url, 5432);
        self.postgres_proxy = Some(FaultProxy::start(address).await);
        self
    }

    /// Daemons started afterwards reach RabbitMQ through a proxy.
    pub async fn with_rabbitmq_proxy(mut self) -> Self {
        self.rabbitmq_proxy = Some(FaultProxy::start(super::rabbitmq_address()).await);
        self
    }

    pub fn postgres_proxy(&self) -> &FaultProxy {
        self.postgres_proxy.as_ref().expect("a PostgreSQL proxy")
    }

    pub fn rabbitmq_proxy(&self) -> &FaultProxy {
        self.rabbitmq_proxy.as_ref().expect("a RabbitMQ proxy")
    }

    /// The database as daemons reach it (through the proxy, if any).
    pub fn daemon_database_url(&self) -> String {
        match &self.postgres_proxy {
            Some(proxy) => proxy.url_for(&self.database_url),
            None => self.database_url.clone(),
        }
    }

    /// The exchange as daemons reach it (through the proxy, if any).
    pub fn daemon_broker(&self) -> TestBroker {
        match &self.rabbitmq_proxy {
            Some(proxy) => self.broker.via(proxy.url_for(&self.broker.url)),
            None => self.broker.via(self.broker.url.clone()),
        }
    }

    /// A daemon in this process with `settings`, once it is ready.
    pub async fn start_daemon(&self, settings: &[&str]) -> RunningDaemon {
        start_daemon_at(&self.daemon_database_url(), &self.daemon_broker(), settings).await
    }

    /// A daemon process with `settings` and its health endpoint on `port`.
    pub fn spawn_daemon(&self, port: u16, settings: &[&str]) -> (Running, LogTail) {
        spawn_followed(
            &self.daemon_database_url(),
            &self.daemon_broker(),
            port,
            settings,
        )
    }

    /// Every message until each of `expected` has arrived (within `limit`),
    /// then [`Rig::finish`]: duplicates included.
    pub async fn receive_all(
        &mut self,
        expected: &HashMap<String, Reminder>,
        limit: Duration,
    ) -> Vec<Received> {
        let mut received = Vec::new();
        receive_all(&mut self.consumer, expected, &mut received, limit).await;
        self.finish(&mut received).await;
        received
    }

    /// Waits until every row is recorded as sent, then takes whatever still
    /// arrives (late repeats) until 500 ms pass quietly.
    pub async fn finish(&mut self, received: &mut Vec<Received>) {
        all_sent(&self.client, WAIT).await;
        take_until_quiet(&mut self.consumer, received).await;
    }
}

/// Whether /readyz reports the broker ready; `None` if it does not answer.
pub async fn broker_ready(port: u16) -> Option<bool> {
    let response = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .ok()?;
    let body: serde_json::Value = response.json().await.ok()?;
    body["broker"]["ready"].as_bool()
}
