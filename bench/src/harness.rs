//! What every scenario needs: a database and an exchange of its own, the daemon
//! as a separate process, and a consumer.

use std::collections::HashMap;
use std::path::PathBuf;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::process::{Child, Command};
use uuid::Uuid;

use notification_scheduler::broker::consumer::{QueueKind, Received, ReminderConsumer};
use notification_scheduler::config::{BrokerUrl, DatabaseUrl};
use notification_scheduler::db;
use notification_scheduler::kinds::{self, Kind, reminder, scheduled_message, status_transition};

/// Routing key of reminder messages (the daemon's default).
pub const ROUTING_KEY: &str = "game.reminder_due";

/// Scheduled messages written by the benchmark go to `<prefix><n>`, n
/// zero-padded to three digits and taken modulo [`MESSAGE_ROUTING_KEYS`].
pub const MESSAGE_ROUTING_KEY_PREFIX: &str = "bench.message.";

/// How many routing keys the benchmark's scheduled messages are spread over.
pub const MESSAGE_ROUTING_KEYS: i64 = 1_000;

/// A database, exchange and queue created for one benchmark run.
pub struct BenchEnv {
    pub server: DatabaseUrl,
    pub database: String,
    pub url: DatabaseUrl,
    pub broker: BrokerUrl,
    pub exchange: String,
    pub queue: String,
    pub client: tokio_postgres::Client,
    /// The `notification-scheduler` binary run as the daemon.
    pub daemon_binary: PathBuf,
    /// The kinds of the rows the lateness and backlog scenarios measure: row
    /// n is of kind `measured[n % measured.len()]`.
    pub measured: Vec<RowKind>,
    /// Whether the bench queue is a quorum queue.
    pub quorum_queue: bool,
}

/// A kind of row the lateness and backlog scenarios write and measure.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum RowKind {
    Reminder,
    StatusTransition,
    ScheduledMessage,
}

impl RowKind {
    /// The service's declaration of this kind.
    pub fn kind(self) -> &'static Kind {
        match self {
            Self::Reminder => &reminder::KIND,
            Self::StatusTransition => &status_transition::KIND,
            Self::ScheduledMessage => &scheduled_message::KIND,
        }
    }
}

impl BenchEnv {
    /// Creates and migrates `bench_<id>` on the server of `server`.
    pub async fn create(
        server: &DatabaseUrl,
        broker: &BrokerUrl,
        daemon_binary: PathBuf,
        measured: Vec<RowKind>,
        quorum_queue: bool,
    ) -> anyhow::Result<Self> {
        let id = Uuid::new_v4().simple().to_string();
        let database = format!("bench_{}", &id[..12]);
        let admin = db::connect(server, Duration::from_secs(10)).await?;
        admin
            .batch_execute(&format!("CREATE DATABASE {database}"))
            .await?;
        let url: DatabaseUrl = with_database(server.raw(), &database)
            .parse()
            .map_err(anyhow::Error::msg)?;
        let mut client = db::connect(&url, Duration::from_secs(10)).await?;
        db::migrate::run(&mut client).await?;
        Ok(Self {
            server: server.clone(),
            database,
            url,
            broker: broker.clone(),
            exchange: format!("bench.{}", &id[..12]),
            queue: format!("bench.{}", &id[..12]),
            client,
            daemon_binary,
            measured,
            quorum_queue,
        })
    }

    /// Binds the bench queue (durable, like the bot's; a quorum queue if
    /// asked) to the exchange, for every kind's routing keys (one pattern for
    /// all scheduled messages).
    pub async fn consumer(&self) -> anyhow::Result<ReminderConsumer> {
        let messages = format!("{MESSAGE_ROUTING_KEY_PREFIX}*");
        let queue = if self.quorum_queue {
            QueueKind::Quorum(self.queue.clone())
        } else {
            QueueKind::Durable(self.queue.clone())
        };
        Ok(ReminderConsumer::bind(
            &self.broker,
            &self.exchange,
            &[ROUTING_KEY, status_transition::ROUTING_KEY, &messages],
            queue,
            u16::MAX,
        )
        .await?)
    }

    /// Drops the database, the queue and the exchange.
    pub async fn remove(self) {
        if let Ok(consumer) = self.consumer().await {
            consumer.delete_queue().await;
        }
        let _ = notification_scheduler::broker::delete_exchange(&self.broker, &self.exchange).await;
        drop(self.client);
        if let Ok(admin) = db::connect(&self.server, Duration::from_secs(10)).await {
            let _ = admin
                .batch_execute(&format!(
                    "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                    self.database
                ))
                .await;
        }
    }

    /// Due times of all pending rows of every kind that are already due, by id.
    pub async fn pending(&self) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
        let due: Vec<String> = kinds::ALL
            .iter()
            .map(|kind| {
                format!(
                    "SELECT id, {time} FROM {table} WHERE {pending} AND {time} <= now()",
                    time = kind.time_column,
                    table = kind.table,
                    pending = kind.progress.pending()
                )
            })
            .collect();
        let rows = self.client.query(&due.join(" UNION ALL "), &[]).await?;
        Ok(rows.iter().map(|row| (row.get(0), row.get(1))).collect())
    }

    /// Rows of every kind beside the measured ones: pending far in the future
    /// (more than a day ahead), and already dealt with.
    pub async fn beside(&self) -> anyhow::Result<Vec<TableRows>> {
        let mut tables = Vec::with_capacity(kinds::ALL.len());
        for kind in kinds::ALL {
            let row = self
                .client
                .query_one(
                    &format!(
                        "SELECT count(*) FILTER (WHERE {pending} AND {time} > now() + interval '1 day'), \
                                count(*) FILTER (WHERE {done}) \
                           FROM {table}",
                        pending = kind.progress.pending(),
                        done = kind.progress.done(),
                        time = kind.time_column,
                        table = kind.table
                    ),
                    &[],
                )
                .await?;
            tables.push(TableRows {
                kind: kind.name,
                future_pending: row.get(0),
                done: row.get(1),
            });
        }
        Ok(tables)
    }
}

impl BenchEnv {
    /// Makes the bench's own session report its counters to the server now,
    /// so that they do not land in a measured window; returns its pid.
    pub async fn flush_own_counters(&self) -> anyhow::Result<i32> {
        Ok(self
            .client
            .query_one(
                "SELECT pg_backend_pid() FROM (SELECT pg_stat_force_next_flush()) AS flushed",
                &[],
            )
            .await?
            .get(0))
    }
}

/// The server's counters for one database (pg_stat_database).
pub struct Counters {
    /// Transactions committed or rolled back.
    pub transactions: i64,
    /// Rows and index entries read (tup_returned and tup_fetched).
    pub tuples_read: i64,
}

/// The counters of `database`, read from `admin`, a session on another
/// database of the server (so that reading them adds nothing).
pub async fn counters(admin: &tokio_postgres::Client, database: &str) -> anyhow::Result<Counters> {
    let row = admin
        .query_one(
            "SELECT xact_commit + xact_rollback, tup_returned + tup_fetched \
               FROM pg_stat_database WHERE datname = $1",
            &[&database],
        )
        .await?;
    Ok(Counters {
        transactions: row.get(0),
        tuples_read: row.get(1),
    })
}

/// The pids of the sessions on `database` other than `own_pid` (the
/// daemons').
pub async fn sessions(
    admin: &tokio_postgres::Client,
    database: &str,
    own_pid: i32,
) -> anyhow::Result<Vec<i32>> {
    let rows = admin
        .query(
            "SELECT pid FROM pg_stat_activity \
              WHERE datname = $1 AND pid <> $2 AND backend_type = 'client backend'",
            &[&database, &own_pid],
        )
        .await?;
    Ok(rows.iter().map(|row| row.get(0)).collect())
}

/// Waits until no session but the bench's own (`own_pid`) is left on
/// `database`: the daemons' have exited and reported their counters.
pub async fn sessions_gone(
    admin: &tokio_postgres::Client,
    database: &str,
    own_pid: i32,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let others = sessions(admin, database, own_pid).await?;
        if others.is_empty() {
            return Ok(());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "{} daemon sessions were still open 10 s after the daemon stopped",
            others.len()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// CPU time a process has used so far (user and system, every thread), in
/// microseconds; `None` once it has gone.
pub fn cpu_us(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces: count fields after it.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = |n: usize| fields.get(n)?.parse::<u64>().ok();
    // utime and stime are fields 14 and 15 of stat(5), 12 and 13 after the
    // name; Linux reports them in USER_HZ, 100 per second.
    Some((ticks(11)? + ticks(12)?) * 10_000)
}

/// Rows of one kind that sat in its table beside a run's measured rows.
#[derive(Debug, Clone, Serialize)]
pub struct TableRows {
    pub kind: &'static str,
    /// Pending, due more than a day after the run.
    pub future_pending: i64,
    /// Already published or otherwise dealt with.
    pub done: i64,
}

/// Replaces the database name (the path) of a PostgreSQL URL.
fn with_database(url: &str, database: &str) -> String {
    let (scheme, rest) = url.split_once("://").unwrap_or(("postgresql", url));
    let (authority, query) = match rest.split_once('/') {
        Some((authority, path)) => (authority, path.split_once('?').map(|(_, q)| q)),
        None => (
            rest.split('?').next().unwrap_or(rest),
            rest.split_once('?').map(|(_, q)| q),
        ),
    };
    match query {
        Some(query) => format!("{scheme}://{authority}/{database}?{query}"),
        None => format!("{scheme}://{authority}/{database}"),
    }
}

/// The daemon, run as an operator runs it: its own binary, another process.
pub struct DaemonProcess {
    child: Child,
    health_port: u16,
}

impl DaemonProcess {
    /// Starts `notification-scheduler daemon` for the bench database and exchange.
    pub fn start(env: &BenchEnv, extra: &[String]) -> anyhow::Result<Self> {
        Self::start_with_env(env, extra, &[])
    }

    /// [`Self::start`], with environment variables of its own.
    pub fn start_with_env(
        env: &BenchEnv,
        extra: &[String],
        variables: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let health_port = crate::ports::free_port();
        let child = Command::new(&env.daemon_binary)
            .arg("daemon")
            .args(extra)
            .env("DATABASE_URL", env.url.raw())
            .env("RABBITMQ_URL", env.broker.as_str())
            .env("RABBITMQ_EXCHANGE", &env.exchange)
            .env("HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
            .env("LOG_LEVEL", "warn")
            .env_remove("RUST_LOG")
            .envs(variables.iter().copied())
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self { child, health_port })
    }

    /// Waits until /readyz answers 200.
    pub async fn ready(&self, within: Duration) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let address = std::net::SocketAddr::from(([127, 0, 0, 1], self.health_port));
            if notification_scheduler::cli::probe::status(
                address,
                "/readyz",
                Duration::from_secs(1),
            )
            .await
                == Some(200)
            {
                return Ok(());
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("the daemon was not ready within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// CPU time used so far, in microseconds.
    pub fn cpu_us(&self) -> Option<u64> {
        cpu_us(self.child.id()?)
    }

    /// Peak resident memory so far, in KiB (VmHWM).
    pub fn peak_rss_kib(&self) -> Option<u64> {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id()?)).ok()?;
        status
            .lines()
            .find_map(|line| line.strip_prefix("VmHWM:"))
            .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
    }

    /// Sends SIGTERM and waits for the exit; returns the peak resident memory.
    pub async fn stop(mut self) -> anyhow::Result<Option<u64>> {
        let peak = self.peak_rss_kib();
        if let Some(pid) = self.child.id() {
            Command::new("kill")
                .args(["-TERM", &pid.to_string()])
                .status()
                .await?;
        }
        let status = tokio::time::timeout(Duration::from_secs(30), self.child.wait()).await??;
        if !status.success() {
            anyhow::bail!("the daemon exited with {status}");
        }
        Ok(peak)
    }
}

/// Receives until every id of `expected` has arrived (then `quiet` longer, to
/// catch duplicates) or `deadline` passes.
pub async fn collect(
    consumer: &mut ReminderConsumer,
    expected: &HashMap<Uuid, DateTime<Utc>>,
    deadline: Duration,
    quiet: Duration,
) -> Vec<Received> {
    let mut received = Vec::with_capacity(expected.len());
    let mut seen = std::collections::HashSet::with_capacity(expected.len());
    let give_up = tokio::time::Instant::now() + deadline;
    while seen.len() < expected.len() {
        match tokio::time::timeout_at(give_up, consumer.next()).await {
            Ok(Some(Ok(message))) => {
                if let Some(id) = message
                    .message_id
                    .as_deref()
                    .and_then(|id| id.parse::<Uuid>().ok())
                    && expected.contains_key(&id)
                {
                    seen.insert(id);
                }
                received.push(message);
            }
            _ => return received,
        }
    }
    while let Ok(Some(Ok(message))) = tokio::time::timeout(quiet, consumer.next()).await {
        received.push(message);
    }
    received
}
