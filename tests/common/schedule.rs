//! Writing reminders as the application would, and starting daemons.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use notification_scheduler::cli::{Cli, Command};
use notification_scheduler::config::DaemonArgs;
use notification_scheduler::daemon::RunningDaemon;
use uuid::Uuid;

use super::{TestBroker, TestDb, WAIT};

/// A reminder row as written.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub id: Uuid,
    pub game_id: Uuid,
    pub minutes: i32,
    pub at: DateTime<Utc>,
}

/// Creates a game starting `starts_in_ms` from the database's now, and one
/// reminder per offset in milliseconds from now (negative: overdue).
pub async fn schedule(
    client: &tokio_postgres::Client,
    starts_in_ms: i64,
    offsets_ms: &[i64],
) -> Vec<Reminder> {
    let game_id: Uuid = client
        .query_one(
            "INSERT INTO game_sessions (title, scheduled_at) \
             VALUES ('test game', now() + $1::bigint * interval '1 ms') RETURNING id",
            &[&starts_in_ms],
        )
        .await
        .expect("insert game")
        .get(0);
    let minutes: Vec<i32> = (0..offsets_ms.len() as i32).collect();
    let rows = client
        .query(
            "INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, game_scheduled_at) \
             SELECT $1, m, now() + o * interval '1 ms', g.scheduled_at \
               FROM unnest($2::int[], $3::bigint[]) AS r(m, o), game_sessions g WHERE g.id = $1 \
             RETURNING id, reminder_minutes, notification_time",
            &[&game_id, &minutes, &offsets_ms],
        )
        .await
        .expect("insert reminders");
    rows.iter()
        .map(|row| Reminder {
            id: row.get(0),
            game_id,
            minutes: row.get(1),
            at: row.get(2),
        })
        .collect()
}

/// Inserts `count` overdue reminders (one game each, starting in an hour) with
/// one statement, as a backlog after downtime.
pub async fn backlog(client: &tokio_postgres::Client, count: i64) {
    client
        .batch_execute(&format!(
            "WITH games AS (
                 INSERT INTO game_sessions (title, scheduled_at)
                 SELECT 'backlog', now() + interval '1 hour' FROM generate_series(1, {count})
                 RETURNING id, scheduled_at)
             INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, game_scheduled_at)
             SELECT id, 60, now() - interval '1 minute' - row_number() OVER () * interval '1 ms', scheduled_at
               FROM games"
        ))
        .await
        .expect("insert the backlog");
}

/// Counts rows by state.
pub async fn count(client: &tokio_postgres::Client, condition: &str) -> i64 {
    client
        .query_one(
            &format!("SELECT count(*) FROM notification_schedule WHERE {condition}"),
            &[],
        )
        .await
        .expect("count rows")
        .get(0)
}

/// Waits until `count(condition)` equals `expected` (outcomes are committed
/// just after the broker confirms, so a consumer may see a message first).
pub async fn wait_for_count(client: &tokio_postgres::Client, condition: &str, expected: i64) {
    wait_for(
        &format!("{expected} rows where {condition}"),
        WAIT,
        || async { count(client, condition).await == expected },
    )
    .await;
}

/// Daemon settings for a test database and exchange, plus `extra` flags.
pub fn daemon_args(db: &TestDb, broker: &TestBroker, extra: &[&str]) -> DaemonArgs {
    let mut argv = vec![
        "notification-scheduler".to_owned(),
        "daemon".to_owned(),
        "--database-url".to_owned(),
        db.url.clone(),
        "--rabbitmq-url".to_owned(),
        broker.url.clone(),
        "--rabbitmq-exchange".to_owned(),
        broker.exchange.clone(),
        "--health-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--restart-backoff-max".to_owned(),
        "1s".to_owned(),
    ];
    argv.extend(extra.iter().map(|arg| (*arg).to_owned()));
    match Cli::try_parse_from(argv)
        .expect("valid test settings")
        .command
    {
        Command::Daemon(args) => *args,
        _ => unreachable!("parsed the daemon subcommand"),
    }
}

/// Starts a daemon in this process and waits until it is ready.
pub async fn start_daemon(db: &TestDb, broker: &TestBroker, extra: &[&str]) -> RunningDaemon {
    let daemon = RunningDaemon::start(&daemon_args(db, broker, extra))
        .await
        .expect("daemon starts");
    wait_until("the daemon is ready", || daemon.readiness.report().ready()).await;
    daemon
}

/// Polls `condition` every 20 ms until it holds; fails after [`WAIT`].
pub async fn wait_until(what: &str, mut condition: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !condition() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls an async `condition` every 50 ms until it holds; fails after `limit`.
pub async fn wait_for<F, Fut>(what: &str, limit: Duration, mut condition: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    while !condition().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
