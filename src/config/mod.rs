//! Every setting of every subcommand: a flag and an environment variable each
//! (the flag wins), with its default and the reason for that default.
//!
//! Parsing is clap's; the value parsers in [`parse`] produce messages that quote
//! the bad value with passwords masked, and [`crate::cli`] turns clap's errors
//! into one line that names the setting.

pub mod parse;
pub mod reference;

use std::net::SocketAddr;
use std::time::Duration;

use clap::{Args, ValueEnum};

pub use parse::{BrokerUrl, DatabaseUrl};

use crate::messages::allowed::AllowedRoutes;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines, coloured on a terminal.
    Text,
    /// One JSON object per line, with trace and span ids, for log collectors.
    Json,
}

/// The least severe level that is logged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    /// The level as a tracing filter directive.
    pub fn as_directive(self) -> &'static str {
        match self {
            Self::Trace => "trace",
            Self::Debug => "debug",
            Self::Info => "info",
            Self::Warn => "warn",
            Self::Error => "error",
        }
    }
}

/// Logging, shared by every subcommand.
#[derive(Debug, Clone, Args)]
pub struct LoggingArgs {
    /// Least severe level logged. RUST_LOG, when set, replaces it with full
    /// tracing directives (e.g. `info,actors=debug`).
    #[arg(
        long,
        env = "LOG_LEVEL",
        value_enum,
        default_value = "info",
        global = true
    )]
    pub log_level: LogLevel,

    /// Log line format: `text` for people, `json` for collectors.
    #[arg(
        long,
        env = "LOG_FORMAT",
        value_enum,
        default_value = "text",
        global = true
    )]
    pub log_format: LogFormat,
}

/// The PostgreSQL database holding `game_sessions` and `notification_schedule`.
#[derive(Debug, Clone, Args)]
pub struct DatabaseArgs {
    /// PostgreSQL URL, postgresql://user:password@host:port/database. For a
    /// primary with standbys, list them all
    /// (postgresql://user:password@host1:5432,host2:5432/database): each
    /// connection goes to the first that accepts writes, so the daemon
    /// follows a promotion (target_session_attrs=read-write, the default with
    /// several hosts; `any` is the only other value accepted).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: DatabaseUrl,

    /// How long to wait for a PostgreSQL connection before reporting the host
    /// unreachable; with several hosts, for each one in turn.
    // Long enough for a loaded server on another host, short enough that a
    // wrong address is reported before an operator gives up waiting.
    #[arg(long, env = "DATABASE_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse::positive_duration)]
    pub database_connect_timeout: Duration,
}

/// The RabbitMQ broker and the names reminders are published under.
#[derive(Debug, Clone, Args)]
pub struct BrokerArgs {
    /// RabbitMQ URL, amqp://user:password@host:port/vhost (amqps:// for TLS);
    /// for a cluster, the URLs of its nodes separated by ',': the daemon
    /// connects to a reachable one, starting from a random one, and to
    /// another when its node dies.
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true, value_name = "URL")]
    pub rabbitmq_url: BrokerUrl,

    /// Topic exchange reminders are published to; declared durable if missing.
    #[arg(long, env = "RABBITMQ_EXCHANGE", default_value = "game_scheduler", value_parser = parse::amqp_name)]
    pub rabbitmq_exchange: String,

    /// Routing key of reminder messages (status transitions are published
    /// with game.status_transition_due).
    #[arg(long, env = "RABBITMQ_ROUTING_KEY", default_value = "game.reminder_due", value_parser = parse::amqp_name)]
    pub rabbitmq_routing_key: String,

    /// AMQP heartbeat, unless the URL sets `?heartbeat=`. A dead broker
    /// connection is noticed after about two heartbeats.
    #[arg(long, env = "RABBITMQ_HEARTBEAT", default_value = "10s", value_parser = parse::positive_duration)]
    pub rabbitmq_heartbeat: Duration,

    /// How long to wait for the broker to accept a connection.
    #[arg(long, env = "RABBITMQ_CONNECT_TIMEOUT", default_value = "5s", value_parser = parse::positive_duration)]
    pub rabbitmq_connect_timeout: Duration,

    /// How long the broker may take to confirm a batch before its outcome is
    /// treated as unknown and the batch is delivered again. Time spent blocked
    /// by broker flow control does not count.
    #[arg(long, env = "RABBITMQ_CONFIRM_TIMEOUT", default_value = "10s", value_parser = parse::positive_duration)]
    pub rabbitmq_confirm_timeout: Duration,

    /// Largest message body the daemon publishes: set it to the broker's
    /// `max_message_size` (16 MiB by default since RabbitMQ 4.0, 128 MiB
    /// before). The broker closes the channel on a larger message, failing
    /// every message in flight with it, again at each attempt; a larger
    /// scheduled message is refused before publishing instead, retried after
    /// its delay, and dead-lettered after its last attempt.
    #[arg(long, env = "RABBITMQ_MAX_MESSAGE_BYTES", default_value = "16777216", value_parser = parse::bounded_integer(1, 512 * 1024 * 1024))]
    pub rabbitmq_max_message_bytes: usize,
}

/// Settings of `daemon`.
#[derive(Debug, Clone, Args)]
pub struct DaemonArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    #[command(flatten)]
    pub broker: BrokerArgs,

    /// Apply pending migrations at start (for single-container deployments)
    /// instead of requiring `notification-scheduler migrate` first.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = false, value_parser = parse::boolean, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub migrate: bool,

    /// Address of the health endpoints /healthz and /readyz.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8080", value_parser = parse::listen_address)]
    pub health_addr: SocketAddr,

    /// Reminders claimed and published per batch. Larger batches drain a
    /// backlog faster; a batch is also what may be sent twice after a crash.
    #[arg(long, env = "DELIVERY_BATCH_SIZE", default_value = "500", value_parser = parse::bounded_integer(1, 10_000))]
    pub batch_size: usize,

    /// Batches that may wait for broker confirms at once (each holds one
    /// database connection), so claiming overlaps confirming.
    #[arg(long, env = "DELIVERY_MAX_IN_FLIGHT_BATCHES", default_value = "4", value_parser = parse::bounded_integer(1, 64))]
    pub max_in_flight_batches: usize,

    /// Events due within this are claimed ahead of their time and published
    /// at it by a precise local wake-up, so the claim's round trip to the
    /// database is not part of their lateness. Never early: the wait is
    /// counted from when the claim's answer arrived. A cancel or move must
    /// commit this long before the event's time to be sure to be honoured;
    /// 0ms claims only what is due.
    #[arg(long, env = "DELIVERY_CLAIM_AHEAD", default_value = "5ms", value_parser = parse::duration_at_most(Duration::from_secs(1)))]
    pub claim_ahead: Duration,

    /// Longest time a claimed batch may hold its rows. PostgreSQL ends a claim
    /// idle for longer (a hung or paused replica), releasing the rows to others.
    /// Must exceed RABBITMQ_CONFIRM_TIMEOUT.
    #[arg(long, env = "CLAIM_TIMEOUT", default_value = "30s", value_parser = parse::positive_duration)]
    pub claim_timeout: Duration,

    /// A reminder whose game has started is still published when it is at most
    /// this late (so a reminder due at the start goes out); later ones are skipped.
    #[arg(long, env = "STALE_GRACE", default_value = "60s", value_parser = parse::duration)]
    pub stale_grace: Duration,

    /// Delay before the second attempt of an event the broker refused
    /// (returned as unroutable, nacked, or naming a missing exchange); it
    /// doubles with each further refusal. Other events are not held up.
    #[arg(long, env = "DELIVERY_RETRY_BASE", default_value = "1s", value_parser = parse::positive_duration)]
    pub retry_base: Duration,

    /// Longest delay between attempts of a refused event.
    #[arg(long, env = "DELIVERY_RETRY_MAX", default_value = "5m", value_parser = parse::positive_duration)]
    pub retry_max: Duration,

    /// Refusals after which an event is dead-lettered: kept, counted and
    /// listed (`notification-scheduler dead-letters`), not delivered until
    /// retried. The defaults give about 17 minutes to bind a missing queue.
    #[arg(long, env = "DELIVERY_MAX_ATTEMPTS", default_value = "10", value_parser = parse::bounded_integer(1, 1_000))]
    pub max_attempts: usize,

    /// /healthz fails (503) when delivery has made no progress for this long
    /// while events are due and PostgreSQL and RabbitMQ answer, or when a
    /// round has been stuck this long: the orchestrator then restarts the
    /// process. Must exceed WATCHDOG_TIMEOUT.
    #[arg(long, env = "LIVENESS_STALL_TIMEOUT", default_value = "90s", value_parser = parse::positive_duration)]
    pub liveness_stall_timeout: Duration,

    /// A delivery round that makes no progress for this long (while the
    /// broker accepts publishes) is stuck: the scheduler is restarted, its
    /// claims rolled back. Must exceed DATABASE_QUERY_TIMEOUT and
    /// RABBITMQ_CONFIRM_TIMEOUT, which bound a healthy round's waits.
    #[arg(long, env = "WATCHDOG_TIMEOUT", default_value = "30s", value_parser = parse::positive_duration)]
    pub watchdog_timeout: Duration,

    /// Period of the full re-read of the schedule that catches changes whose
    /// notification was lost.
    #[arg(long, env = "SAFETY_CHECK_INTERVAL", default_value = "5m", value_parser = parse::positive_duration)]
    pub safety_check_interval: Duration,

    /// Longest single timer sleep; after it the next deadline is re-read, so a
    /// step of the wall clock (NTP, VM pause) is corrected.
    #[arg(long, env = "MAX_TIMER_SLEEP", default_value = "60s", value_parser = parse::positive_duration)]
    pub max_timer_sleep: Duration,

    /// Period of the liveness ping on the LISTEN connection; a dead connection
    /// is detected within about this plus DATABASE_QUERY_TIMEOUT.
    #[arg(long, env = "LISTENER_PING_INTERVAL", default_value = "15s", value_parser = parse::positive_duration)]
    pub listener_ping_interval: Duration,

    /// Bound on every database statement of the daemon.
    #[arg(long, env = "DATABASE_QUERY_TIMEOUT", default_value = "10s", value_parser = parse::positive_duration)]
    pub query_timeout: Duration,

    /// First delay before restarting a failed actor; doubles per failure.
    #[arg(long, env = "RESTART_BACKOFF_MIN", default_value = "100ms", value_parser = parse::positive_duration)]
    pub restart_backoff_min: Duration,

    /// Longest delay between restarts of a failing actor (outages are retried forever).
    #[arg(long, env = "RESTART_BACKOFF_MAX", default_value = "10s", value_parser = parse::positive_duration)]
    pub restart_backoff_max: Duration,

    /// On SIGTERM, how long claimed batches may take to settle before the
    /// connections are closed (they are delivered again after a restart).
    /// Keep it below the orchestrator's kill timeout.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse::positive_duration)]
    pub shutdown_grace: Duration,

    /// Sent and skipped reminders older than this are deleted, in small
    /// batches, so the table does not grow without bound. 0s keeps them forever.
    #[arg(long, env = "RETENTION", default_value = "7d", value_parser = parse::duration)]
    pub retention: Duration,

    /// Period of the retention sweep. The first sweep runs one period after
    /// start, leaving a starting daemon's backlog the whole database.
    #[arg(long, env = "RETENTION_INTERVAL", default_value = "10m", value_parser = parse::positive_duration)]
    pub retention_interval: Duration,

    /// Period of the pending, overdue and next-due observations (one query;
    /// made only when metrics are exported).
    #[arg(long, env = "SCHEDULE_OBSERVE_INTERVAL", default_value = "15s", value_parser = parse::positive_duration)]
    pub schedule_observe_interval: Duration,
}

/// A setting that is missing or conflicts with another.
#[derive(Debug, thiserror::Error)]
#[error("{setting} {reason}")]
pub struct ConflictError {
    pub setting: &'static str,
    pub reason: String,
}

impl DaemonArgs {
    /// Checks settings that depend on each other.
    pub fn validate(&self) -> Result<(), ConflictError> {
        if self.claim_timeout <= self.broker.rabbitmq_confirm_timeout {
            return Err(ConflictError {
                setting: "CLAIM_TIMEOUT (--claim-timeout)",
                reason: format!(
                    "is {:?}; it must exceed RABBITMQ_CONFIRM_TIMEOUT ({:?}), or a batch awaiting confirms could lose its claim",
                    self.claim_timeout, self.broker.rabbitmq_confirm_timeout
                ),
            });
        }
        if self.liveness_stall_timeout <= self.watchdog_timeout {
            return Err(ConflictError {
                setting: "LIVENESS_STALL_TIMEOUT (--liveness-stall-timeout)",
                reason: format!(
                    "is {:?}; it must exceed WATCHDOG_TIMEOUT ({:?}), so that the watchdog restarts a stuck scheduler before liveness gives up on the process",
                    self.liveness_stall_timeout, self.watchdog_timeout
                ),
            });
        }
        let longest_wait = self.query_timeout.max(self.broker.rabbitmq_confirm_timeout);
        if self.watchdog_timeout <= longest_wait {
            return Err(ConflictError {
                setting: "WATCHDOG_TIMEOUT (--watchdog-timeout)",
                reason: format!(
                    "is {:?}; it must exceed DATABASE_QUERY_TIMEOUT and RABBITMQ_CONFIRM_TIMEOUT ({longest_wait:?}), or a healthy round could be restarted",
                    self.watchdog_timeout
                ),
            });
        }
        if self.retry_max < self.retry_base {
            return Err(ConflictError {
                setting: "DELIVERY_RETRY_MAX (--retry-max)",
                reason: format!(
                    "is {:?}, below DELIVERY_RETRY_BASE ({:?})",
                    self.retry_max, self.retry_base
                ),
            });
        }
        if self.restart_backoff_max < self.restart_backoff_min {
            return Err(ConflictError {
                setting: "RESTART_BACKOFF_MAX (--restart-backoff-max)",
                reason: format!(
                    "is {:?}, below RESTART_BACKOFF_MIN ({:?})",
                    self.restart_backoff_max, self.restart_backoff_min
                ),
            });
        }
        Ok(())
    }
}

/// Settings of `api`.
#[derive(Debug, Clone, Args)]
pub struct ApiArgs {
    #[command(flatten)]
    pub database: DatabaseArgs,

    /// Address the API listens on.
    #[arg(long, env = "API_ADDR", default_value = "0.0.0.0:8000", value_parser = parse::listen_address)]
    pub api_addr: SocketAddr,

    /// Bearer token every /games, /schedule and /messages request must present
    /// (at least 16 characters). Required unless --insecure-no-auth.
    #[arg(long, env = "API_TOKEN", hide_env_values = true, value_parser = parse::token)]
    pub api_token: Option<secrecy::SecretString>,

    /// Serve without authentication. For local development only; logged loudly.
    #[arg(long, env = "API_INSECURE_NO_AUTH", default_value_t = false, value_parser = parse::boolean, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub insecure_no_auth: bool,

    /// Reminder minutes for games that do not set their own.
    #[arg(long, env = "DEFAULT_REMINDER_MINUTES", default_value = "60,15", value_parser = parse::reminder_minutes)]
    pub default_reminder_minutes: parse::ReminderMinutes,

    /// Expected duration, in minutes, of games that do not set their own: their
    /// COMPLETED status transition is due that long after the start.
    #[arg(long, env = "DEFAULT_EXPECTED_DURATION_MINUTES", default_value = "60", value_parser = parse::bounded_integer(1, 10_080))]
    pub default_expected_duration_minutes: usize,

    /// When set, games also get an ARCHIVED status transition this long after
    /// COMPLETED (e.g. 24h).
    #[arg(long, env = "ARCHIVE_DELAY", value_parser = parse::positive_duration)]
    pub archive_delay: Option<Duration>,

    /// The exchange of scheduled messages that name none, as the daemon
    /// publishes them (the same setting as the daemon's).
    #[arg(long, env = "RABBITMQ_EXCHANGE", default_value = "game_scheduler", value_parser = parse::amqp_name)]
    pub rabbitmq_exchange: String,

    /// Where the API may schedule messages: comma-separated exchange:pattern
    /// entries, the pattern in topic syntax (* one word, # zero or more), e.g.
    /// `game_scheduler:#,events:bot.*.welcome`. Unset: RABBITMQ_EXCHANGE, any
    /// routing key. Rows written by SQL are not checked.
    #[arg(long, env = "MESSAGE_ALLOWED_ROUTES", value_name = "ROUTES", value_parser = parse::allowed_routes)]
    pub message_allowed_routes: Option<AllowedRoutes>,

    /// Largest payload of a scheduled message, in bytes as sent.
    // 256 KiB holds any notification with room to spare; the bound is
    // RabbitMQ's own default largest message (16 MiB).
    #[arg(long, env = "MESSAGE_MAX_PAYLOAD_BYTES", default_value = "262144", value_parser = parse::bounded_integer(1, 16 * 1024 * 1024))]
    pub message_max_payload_bytes: usize,

    /// How far ahead a scheduled message's deliver_at may be.
    // A year and a day, so yearly events can be scheduled from the day
    // before; the bound keeps the arithmetic on times in range.
    #[arg(long, env = "MESSAGE_HORIZON", default_value = "366d", value_parser = parse::duration_up_to(Duration::from_secs(100 * 366 * 86_400)))]
    pub message_horizon: Duration,

    /// Database connections the API may hold.
    #[arg(long, env = "DATABASE_POOL_SIZE", default_value = "10", value_parser = parse::bounded_integer(1, 1_000))]
    pub pool_size: usize,

    /// Apply pending migrations at start instead of requiring `migrate` first.
    #[arg(long, env = "MIGRATE_ON_START", default_value_t = false, value_parser = parse::boolean, action = clap::ArgAction::Set, num_args = 0..=1, default_missing_value = "true")]
    pub migrate: bool,

    /// The operator console's link to a trace viewer: an http(s) URL with
    /// `{trace_id}` where a delivery's trace id goes (for Grafana Tempo, e.g.
    /// `https://grafana.example/explore?left=...{trace_id}...`; for Jaeger,
    /// `https://jaeger.example/trace/{trace_id}`). Unset: trace ids are shown
    /// without a link.
    #[arg(long, env = "CONSOLE_TRACE_URL", value_name = "URL", value_parser = parse::trace_url)]
    pub console_trace_url: Option<std::sync::Arc<str>>,

    /// On SIGTERM, how long requests in progress may take to finish.
    #[arg(long, env = "SHUTDOWN_GRACE", default_value = "10s", value_parser = parse::positive_duration)]
    pub shutdown_grace: Duration,
}

impl ApiArgs {
    /// The API refuses to start unprotected unless told to.
    pub fn validate(&self) -> Result<(), ConflictError> {
        if self.api_token.is_none() && !self.insecure_no_auth {
            return Err(ConflictError {
                setting: "API_TOKEN (--api-token)",
                reason: "is missing: the API refuses to start without a bearer token \
                         (set one of at least 16 characters, or pass --insecure-no-auth for local development)"
                    .to_owned(),
            });
        }
        Ok(())
    }
}

/// Settings of `healthcheck`.
#[derive(Debug, Clone, Args)]
pub struct HealthcheckArgs {
    /// Address of the server to probe; a wildcard address means this host.
    /// Defaults to HEALTH_ADDR, the daemon's health server.
    #[arg(long, env = "HEALTH_ADDR", default_value = "0.0.0.0:8080", value_parser = parse::listen_address)]
    pub health_addr: SocketAddr,

    /// Path to probe: /healthz (alive) or /readyz (dependencies working).
    #[arg(long, default_value = "/healthz")]
    pub path: String,
}

/// Settings of `watch`.
#[derive(Debug, Clone, Args)]
pub struct WatchArgs {
    /// RabbitMQ URL, amqp://user:password@host:port/vhost; for a cluster, the
    /// URLs of its nodes separated by ','.
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true, value_name = "URL")]
    pub rabbitmq_url: BrokerUrl,

    /// Exchange to watch.
    #[arg(long, env = "RABBITMQ_EXCHANGE", default_value = "game_scheduler", value_parser = parse::amqp_name)]
    pub rabbitmq_exchange: String,

    /// Routing key (pattern) of reminder messages to bind the temporary queue
    /// with; it is bound with every other kind's routing key too.
    #[arg(long, env = "RABBITMQ_ROUTING_KEY", default_value = "game.reminder_due", value_parser = parse::amqp_name)]
    pub rabbitmq_routing_key: String,

    /// Consume from this durable quorum queue (declared if missing, kept on
    /// exit) instead of a temporary one: on a cluster it survives the loss of
    /// the node it was declared on, and it keeps what arrives while `watch`
    /// is not running.
    #[arg(long, value_name = "QUEUE", value_parser = parse::amqp_name)]
    pub quorum_queue: Option<String>,
}
