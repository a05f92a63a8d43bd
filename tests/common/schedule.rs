//! Writing reminders as the application would, and starting daemons.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use notification_scheduler::cli::{Cli, Command};
use notification_scheduler::config::DaemonArgs;
use notification_scheduler::daemon::RunningDaemon;
use uuid::Uuid;

use super::{Received, TestBroker, TestConsumer, TestDb, WAIT};

/// A reminder row as written.
#[derive(Debug, Clone)]
pub struct Reminder {
    pub id: Uuid,
    pub game_id: Uuid,
    pub minutes: i32,
    pub at: DateTime<Utc>,
}

/// Inserts `count` reminders, each for its own game starting in 30 days, with
/// `values` (SQL) for their `notification_time, sent, sent_at`: many rows in
/// one statement, for tests of what the daemon reads or deletes.
pub async fn insert_reminders(client: &tokio_postgres::Client, count: i64, values: &str) {
    client
        .batch_execute(&format!(
            "WITH games AS (
                 INSERT INTO game_sessions (title, scheduled_at)
                 SELECT 'bulk', now() + interval '30 days' FROM generate_series(1, {count})
                 RETURNING id)
             INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, sent, sent_at)
             SELECT id, 60, {values} FROM games"
        ))
        .await
        .expect("insert reminders");
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

/// Counts games.
pub async fn count_games(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM game_sessions", &[])
        .await
        .expect("count games")
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

/// Daemon settings for the database at `database_url` (a proxy, a private
/// server), plus `extra` flags.
pub fn daemon_args_at(database_url: &str, broker: &TestBroker, extra: &[&str]) -> DaemonArgs {
    let mut argv = vec![
        "notification-scheduler".to_owned(),
        "daemon".to_owned(),
        "--database-url".to_owned(),
        database_url.to_owned(),
        "--rabbitmq-url".to_owned(),
        broker.url.clone(),
        "--rabbitmq-exchange".to_owned(),
        broker.exchange.clone(),
        "--health-addr".to_owned(),
        "127.0.0.1:0".to_owned(),
    ];
    // Restarts back off at most 1 s unless the test chooses.
    if !extra.contains(&"--restart-backoff-max") {
        argv.extend(["--restart-backoff-max".to_owned(), "1s".to_owned()]);
    }
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
    start_daemon_at(&db.url, broker, extra).await
}

/// Starts a daemon in this process on the database at `database_url` and
/// waits until it is ready.
pub async fn start_daemon_at(
    database_url: &str,
    broker: &TestBroker,
    extra: &[&str],
) -> RunningDaemon {
    let daemon = RunningDaemon::start(&daemon_args_at(database_url, broker, extra))
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
    // A probe that hangs (a server that accepts and never answers) is bounded
    // by the same deadline, so the failure names what was awaited.
    while !tokio::time::timeout_at(deadline, condition())
        .await
        .unwrap_or_else(|_| panic!("timed out waiting until {what} (a check hung)"))
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting until {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every pending row, by message id (the row id as text): what a test expects
/// to be delivered.
pub async fn pending(client: &tokio_postgres::Client) -> HashMap<String, Reminder> {
    reminders_where(client, "NOT sent").await
}

/// Every row matching `condition`, by message id (the row id as text).
pub async fn reminders_where(
    client: &tokio_postgres::Client,
    condition: &str,
) -> HashMap<String, Reminder> {
    client
        .query(
            &format!(
                "SELECT id, game_id, reminder_minutes, notification_time \
                   FROM notification_schedule WHERE {condition}"
            ),
            &[],
        )
        .await
        .expect("read reminder rows")
        .iter()
        .map(|row| {
            let reminder = Reminder {
                id: row.get(0),
                game_id: row.get(1),
                minutes: row.get(2),
                at: row.get(3),
            };
            (reminder.id.to_string(), reminder)
        })
        .collect()
}

/// Receives until every expected message id has arrived at least once, within
/// `limit` overall and [`WAIT`] between two messages; returns every message,
/// duplicates included. Use `into` to keep what was received before a fault.
pub async fn receive_all(
    consumer: &mut TestConsumer,
    expected: &HashMap<String, Reminder>,
    into: &mut Vec<Received>,
    limit: Duration,
) {
    let deadline = tokio::time::Instant::now() + limit;
    let mut missing: HashSet<&str> = expected.keys().map(String::as_str).collect();
    for message in into.iter() {
        missing.remove(message.message_id.as_str());
    }
    while !missing.is_empty() {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        let Some(message) = consumer.next_within(left.min(WAIT)).await else {
            panic!(
                "{} of {} reminders never arrived (e.g. {:?}); {} messages received",
                missing.len(),
                expected.len(),
                missing.iter().next(),
                into.len()
            );
        };
        missing.remove(message.message_id.as_str());
        into.push(message);
    }
}

/// Waits until at least `rows` are recorded as sent (a point mid-drain to
/// inject a fault at), polling often: a daemon drains thousands of rows a
/// second. Fails after 30 s.
pub async fn sent_at_least(client: &tokio_postgres::Client, rows: i64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while count(client, "sent").await < rows {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{rows} rows were never sent"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// What a delivery run amounted to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Tally {
    /// Distinct reminders received.
    pub distinct: usize,
    /// Copies beyond the first.
    pub duplicates: usize,
}

/// Accounts for every reminder: each one expected was received, nothing else
/// was, none before its time, and every copy of a reminder (the same game and
/// reminder minutes) carries the same message id (the row id) and the same
/// event and data, so consumers can drop repeats.
pub fn account(received: &[Received], expected: &HashMap<String, Reminder>) -> Tally {
    let mut copies: HashMap<&str, &Received> = HashMap::new();
    let mut by_reminder: HashMap<(String, i64), &str> = HashMap::new();
    let mut duplicates = 0;
    for message in received {
        let reminder = expected
            .get(&message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            message.received_at >= reminder.at,
            "reminder {} received at {}, before its time {}",
            reminder.id,
            message.received_at,
            reminder.at
        );
        assert_eq!(
            message.body["event_type"], "game.reminder_due",
            "{message:?}"
        );
        assert_eq!(
            message.body["data"]["game_id"],
            reminder.game_id.to_string(),
            "{message:?}"
        );
        assert_eq!(
            message.body["data"]["reminder_minutes"], reminder.minutes,
            "{message:?}"
        );
        let key = (
            message.body["data"]["game_id"].to_string(),
            message.body["data"]["reminder_minutes"]
                .as_i64()
                .unwrap_or(-1),
        );
        let id = by_reminder
            .entry(key)
            .or_insert(message.message_id.as_str());
        assert_eq!(
            *id, message.message_id,
            "one reminder was sent under two message ids"
        );
        match copies.get(message.message_id.as_str()) {
            Some(first) => {
                duplicates += 1;
                // Only the body's `timestamp` (when it was published) may differ.
                for field in ["event_type", "data"] {
                    assert_eq!(
                        first.body[field], message.body[field],
                        "a repeat differs from the first copy"
                    );
                }
            }
            None => {
                copies.insert(message.message_id.as_str(), message);
            }
        }
    }
    assert_eq!(copies.len(), expected.len(), "every reminder delivered");
    Tally {
        distinct: copies.len(),
        duplicates,
    }
}

/// Every row not in `earlier` (rows written while the daemon runs, which may
/// be sent before they could be read as pending); adds them to `earlier`.
pub async fn written_since(
    client: &tokio_postgres::Client,
    earlier: &mut HashSet<String>,
) -> HashMap<String, Reminder> {
    let mut rows = reminders_where(client, "true").await;
    rows.retain(|id, _| !earlier.contains(id));
    earlier.extend(rows.keys().cloned());
    rows
}
