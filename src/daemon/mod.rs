//! The delivery daemon (`notification-scheduler daemon`): wires the adapters
//! into the actor system, serves the health endpoints, runs maintenance, and
//! shuts down cleanly on SIGTERM or SIGINT.
//!
//! - [`health`]: `/healthz` and `/readyz`.
//! - [`maintenance`]: the heartbeat, the retention sweep and the schedule
//!   observations.

pub mod health;
pub mod maintenance;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use actors::backoff::Backoff;
use actors::liveness::Liveness;
use actors::ports::RetryPolicy;
use actors::readiness::{Component, Readiness};
use actors::scheduler::SchedulerSettings;
use actors::supervisor::{SupervisorActor, SupervisorArgs, SupervisorMessage, SupervisorSettings};
use ractor::{Actor, ActorRef};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::broker::publisher::{LapinConnector, PublisherSettings};
use crate::config::DaemonArgs;
use crate::db::listen::{ListenSettings, PgListenConnector};
use crate::db::schedule_store::{PgScheduleStore, StoreSettings};
use crate::db::{self, migrate};
use crate::{kinds, shutdown};
use maintenance::Maintenance;

/// Runs the daemon until a shutdown signal; returns an error only for a
/// failure that restarting cannot fix (schema missing, configuration mismatch).
pub async fn run(args: DaemonArgs) -> anyhow::Result<()> {
    let mut signal = shutdown::Signal::install()?;
    let Some(()) = signal.run_until(prepare_schema(&args)).await? else {
        return Ok(());
    };
    let mut daemon = RunningDaemon::start(&args).await?;
    let fatal = tokio::select! {
        () = signal.received() => None,
        reason = daemon.fatal() => Some(reason),
    };
    daemon.shutdown().await;
    match fatal {
        Some(reason) => Err(anyhow::anyhow!(reason)),
        None => Ok(()),
    }
}

/// The actor system and the health server of a started daemon.
pub struct RunningDaemon {
    supervisor: ActorRef<SupervisorMessage>,
    supervisor_done: JoinHandle<()>,
    health_server: JoinHandle<std::io::Result<()>>,
    fatal: watch::Receiver<Option<String>>,
    grace: Duration,
    maintenance: Maintenance,
    /// Where /healthz and /readyz are served.
    pub health_addr: SocketAddr,
    /// Dependency states, as /readyz reports them.
    pub readiness: Readiness,
}

impl RunningDaemon {
    /// Starts the supervisor and the health server. The schema must be current
    /// ([`prepare_schema`]).
    pub async fn start(args: &DaemonArgs) -> anyhow::Result<Self> {
        actors::metrics::register();
        let readiness = Readiness::default();
        readiness.set(Component::Database, false, Some("starting".to_owned()));
        let health = health::bind(args.health_addr).await?;
        let health_addr = health.local_addr()?;
        let liveness = Liveness::default();
        let health_server = tokio::spawn({
            let router = health::router(health::Health {
                readiness: readiness.clone(),
                liveness: liveness.clone(),
                stall_timeout: args.liveness_stall_timeout,
            });
            async move { axum::serve(health, router).await }
        });
        let (fatal_sender, fatal) = watch::channel(None);
        let instance = crate::telemetry::instance_id();
        let store = store(args, kinds::delivered(&args.broker.rabbitmq_routing_key));
        warm_up(&store, args.database.database_connect_timeout).await;
        let supervisor_args = SupervisorArgs {
            store,
            broker: Arc::new(LapinConnector::new(PublisherSettings {
                url: args.broker.rabbitmq_url.clone(),
                exchange: args.broker.rabbitmq_exchange.clone(),
                heartbeat: args.broker.rabbitmq_heartbeat,
                connect_timeout: args.broker.rabbitmq_connect_timeout,
                max_message_bytes: args.broker.rabbitmq_max_message_bytes,
                connection_name: format!("notification-scheduler daemon {instance}"),
            })),
            listen: Arc::new(PgListenConnector::new(
                args.database.database_url.clone(),
                ListenSettings {
                    connect_timeout: args.database.database_connect_timeout,
                    ping_timeout: args.query_timeout,
                },
                kinds::ALL.to_vec(),
            )),
            settings: supervisor_settings(args),
            readiness: readiness.clone(),
            liveness,
            fatal: fatal_sender,
        };
        let (supervisor, supervisor_done) =
            Actor::spawn(None, SupervisorActor::default(), supervisor_args).await?;
        tracing::info!(
            database = args.database.database_url.masked(),
            broker = args.broker.rabbitmq_url.masked(),
            exchange = args.broker.rabbitmq_exchange.as_str(),
            routing_key = args.broker.rabbitmq_routing_key.as_str(),
            health = %health_addr,
            instance,
            "daemon started"
        );
        Ok(Self {
            supervisor,
            supervisor_done,
            health_server,
            fatal,
            grace: args.shutdown_grace,
            maintenance: maintenance::start(args, readiness.clone()),
            health_addr,
            readiness,
        })
    }

    /// Resolves with the reason if the daemon hits a failure that restarting
    /// cannot fix, or a part that nothing restarts stops: the supervisor (its
    /// end drops the sender of `fatal`) or the health server. The process then
    /// exits non-zero instead of living on without delivering.
    pub async fn fatal(&mut self) -> String {
        tokio::select! {
            reason = self.fatal.wait_for(Option::is_some) => match reason {
                Ok(reason) => reason.clone().unwrap_or_default(),
                Err(_) => "the supervisor stopped; nothing would be delivered".to_owned(),
            },
            served = &mut self.health_server => match served {
                Ok(Ok(())) => "the health server stopped".to_owned(),
                Ok(Err(err)) => format!("the health server failed: {err}"),
                Err(err) => format!("the health server task ended: {err}"),
            },
        }
    }

    /// The supervisor of this daemon's actors.
    pub fn supervisor(&self) -> &ActorRef<SupervisorMessage> {
        &self.supervisor
    }

    /// Stops claiming, lets claimed batches settle within the grace period,
    /// closes every connection.
    pub async fn shutdown(self) {
        tracing::info!("shutting down: letting claimed batches settle");
        drop(self.maintenance);
        let grace = self.grace;
        let _ = self
            .supervisor
            .call(
                |reply| SupervisorMessage::Shutdown { grace, reply },
                Some(grace + Duration::from_secs(5)),
            )
            .await;
        self.supervisor.stop(None);
        let _ = self.supervisor_done.await;
        self.health_server.abort();
        tracing::info!("daemon stopped");
    }
}

/// Warms the store's connections ([`PgScheduleStore::warm_up`]) for at most
/// `bound`. A failure only means the first claims open their connections.
async fn warm_up(store: &PgScheduleStore, bound: Duration) {
    match tokio::time::timeout(bound, store.warm_up()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!(
            error = %actors::error_chain::Chain(&err),
            "could not warm the database connections; claims will open them"
        ),
        Err(_) => tracing::warn!(
            ?bound,
            "warming the database connections took too long; claims will open them"
        ),
    }
}

/// Waits for PostgreSQL (reporting once while it is unreachable), then
/// migrates or checks that the schema is current.
pub async fn prepare_schema(args: &DaemonArgs) -> anyhow::Result<()> {
    let url = &args.database.database_url;
    let mut backoff = Backoff::new(Duration::from_millis(200), args.restart_backoff_max);
    let mut reported: Option<String> = None;
    let mut client = loop {
        match db::connect(url, args.database.database_connect_timeout).await {
            Ok(client) => break client,
            Err(err) => {
                let message = actors::error_chain::Chain(&err).to_string();
                if reported.as_deref() != Some(message.as_str()) {
                    tracing::warn!(error = message.as_str(), "waiting for PostgreSQL");
                    reported = Some(message);
                }
                tokio::time::sleep(backoff.next_delay()).await;
            }
        }
    };
    if args.migrate {
        migrate::run(&mut client).await?;
    } else {
        migrate::verify(&client).await?;
    }
    Ok(())
}

fn store(args: &DaemonArgs, kinds: Vec<kinds::Delivered>) -> PgScheduleStore {
    let in_flight = args.max_in_flight_batches;
    // One connection per batch awaiting confirms, one for the round's queries,
    // one spare for the next claim while a batch commits.
    let pool = db::pool(
        &args.database.database_url,
        in_flight + 2,
        args.database.database_connect_timeout,
    );
    PgScheduleStore::new(
        pool,
        args.database.database_url.clone(),
        StoreSettings {
            claim_timeout: args.claim_timeout,
            stale_grace: args.stale_grace,
            query_timeout: args.query_timeout,
            retry: RetryPolicy {
                base: args.retry_base,
                max: args.retry_max,
                max_attempts: u32::try_from(args.max_attempts).unwrap_or(u32::MAX),
            },
        },
        kinds,
    )
}

/// Longest wait between attempts to reach a server that is down: delivery
/// resumes within about this long after it is back. An attempt is one
/// connection, and a failing one is logged once per change, so this is cheap.
const RECONNECT_BACKOFF_MAX: Duration = Duration::from_secs(1);

fn supervisor_settings(args: &DaemonArgs) -> SupervisorSettings {
    SupervisorSettings {
        restart_backoff: (args.restart_backoff_min, args.restart_backoff_max),
        reconnect_backoff: (
            args.restart_backoff_min,
            args.restart_backoff_max.min(RECONNECT_BACKOFF_MAX),
        ),
        stable_after: Duration::from_secs(30),
        listener_ping_interval: args.listener_ping_interval,
        confirm_timeout: args.broker.rabbitmq_confirm_timeout,
        watchdog_timeout: args.watchdog_timeout,
        scheduler: SchedulerSettings {
            batch_size: args.batch_size,
            max_in_flight_batches: args.max_in_flight_batches,
            claim_ahead: args.claim_ahead,
            max_sleep: args.max_timer_sleep,
            safety_check_interval: args.safety_check_interval,
            contention_backoff: (Duration::from_millis(50), Duration::from_secs(1)),
        },
    }
}
