//! The benchmark scenarios. Each inserts its rows with one statement, runs the
//! real daemon as a separate process and consumes with a real consumer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::model::{Body, DueEvent, Outbound};
use chrono::{DateTime, Utc};
use futures_util::StreamExt;
use futures_util::future::join_all;
use futures_util::stream::FuturesUnordered;
use lapin::options::{BasicPublishOptions, ConfirmSelectOptions};
use lapin::types::ShortString;
use serde::Serialize;
use tokio_postgres::types::ToSql;
use uuid::Uuid;

use super::harness::{
    self, BenchEnv, DaemonProcess, MESSAGE_ROUTING_KEY_PREFIX, MESSAGE_ROUTING_KEYS, ROUTING_KEY,
    RowKind, TableRows, collect,
};
use super::stats::{self, Accounting, Lateness};
use notification_scheduler::broker::envelope;
use notification_scheduler::db::kind_sql;
use notification_scheduler::kinds::{self, reminder, scheduled_message};

/// Result of a lateness run.
#[derive(Debug, Clone, Serialize)]
pub struct LatenessRun {
    pub label: String,
    /// The kinds of the measured rows, in turn.
    pub measured: Vec<RowKind>,
    /// What else sat in the tables.
    pub beside: Vec<TableRows>,
    pub lateness: Lateness,
    pub peak_rss_kib: Option<u64>,
    pub queries: QueryTimes,
}

/// Result of a thundering-herd run: every row due at the same instant.
#[derive(Debug, Clone, Serialize)]
pub struct HerdRun {
    /// The rows as a lateness run: its minimum is the first delivery, its
    /// maximum the whole drain.
    pub run: LatenessRun,
    /// Rows per second from the common due time to the last consumed.
    pub per_second: f64,
    /// The broker's own rate for as many messages, just before.
    pub ceiling: CeilingRun,
    pub to_ceiling: f64,
}

/// `count` rows due at one instant, `lead` from now, after a ceiling run of
/// as many messages.
pub async fn herd(
    env: &BenchEnv,
    count: u64,
    lead: Duration,
    window: usize,
    daemon_args: &[String],
) -> anyhow::Result<HerdRun> {
    let ceiling = ceiling(env, count, window).await?;
    let label = format!("herd of {count}");
    let run = lateness(env, &label, count, Duration::ZERO, lead, daemon_args).await?;
    let per_second = count as f64 / (run.lateness.max_ms / 1000.0);
    Ok(HerdRun {
        per_second,
        to_ceiling: per_second / ceiling.per_second,
        ceiling,
        run,
    })
}

/// Result of the backlog run.
#[derive(Debug, Clone, Serialize)]
pub struct BacklogRun {
    /// Overdue rows drained (reminders, or the kinds of `measured` in turn).
    pub reminders: u64,
    /// The kinds of the overdue rows, in turn.
    pub measured: Vec<RowKind>,
    /// What else sat in the tables.
    pub beside: Vec<TableRows>,
    /// From starting the daemon process to the last message consumed.
    pub seconds: f64,
    pub per_second: f64,
    /// From the daemon's first publish (the earliest envelope timestamp) to
    /// the last message consumed, as the ceiling run is timed; the whole run
    /// where no message has an envelope.
    pub drain_seconds: f64,
    pub drain_per_second: f64,
    /// What `drain_seconds` counts from.
    pub drain_from: &'static str,
    /// From starting the daemon process to the first message consumed
    /// (process start, connections, first claim).
    pub first_message_seconds: f64,
    /// Daemon processes that drained it together.
    pub replicas: usize,
    pub accounting: Accounting,
    /// The largest peak resident memory of the replicas.
    pub peak_rss_kib: Option<u64>,
    /// What each delivered message cost: CPU of the daemons and of their
    /// database sessions, and database transactions.
    pub cost: MessageCost,
}

/// Cost per delivered message over a whole backlog run, start-up included.
#[derive(Debug, Clone, Serialize)]
pub struct MessageCost {
    /// User and system CPU of the daemon processes, in microseconds.
    pub daemon_cpu_us: f64,
    /// User and system CPU of the daemons' PostgreSQL sessions.
    pub database_cpu_us: f64,
    /// Transactions in the bench database (each claim batch is one).
    pub transactions: f64,
}

/// Result of one ceiling run.
#[derive(Debug, Clone, Serialize)]
pub struct CeilingRun {
    pub messages: u64,
    /// Most unconfirmed messages allowed at once.
    pub window: usize,
    /// From the first publish to the last message consumed.
    pub seconds: f64,
    pub per_second: f64,
    pub accounting: Accounting,
}

/// Round-trip times of the daemon's two hot queries, in milliseconds.
#[derive(Debug, Clone, Serialize)]
pub struct QueryTimes {
    /// The kind whose claim is timed (the first measured kind); the row
    /// counts are of its table.
    pub claim_kind: &'static str,
    pub pending_rows: i64,
    pub sent_rows: i64,
    pub claim_p50_ms: f64,
    pub claim_p99_ms: f64,
    pub claim_explain_ms: f64,
    pub next_due_p50_ms: f64,
    pub next_due_p99_ms: f64,
    pub next_due_explain_ms: f64,
}

/// `count` reminders spread evenly over `spread`, the first `lead` from now.
pub async fn lateness(
    env: &BenchEnv,
    label: &str,
    count: u64,
    spread: Duration,
    lead: Duration,
    daemon_args: &[String],
) -> anyhow::Result<LatenessRun> {
    let beside = env.beside().await?;
    let mut consumer = env.consumer().await?;
    let daemon = DaemonProcess::start(env, daemon_args)?;
    daemon.ready(Duration::from_secs(30)).await?;
    let expected = insert_spread(env, count, spread, lead).await?;
    let received = collect(
        &mut consumer,
        &expected,
        lead + spread + Duration::from_secs(30),
        Duration::from_millis(500),
    )
    .await;
    let peak_rss_kib = daemon.stop().await?;
    Ok(LatenessRun {
        label: label.to_owned(),
        measured: env.measured.clone(),
        beside,
        lateness: stats::lateness(&expected, &received),
        peak_rss_kib,
        queries: query_times(env).await?,
    })
}

/// Adds `count` overdue reminders, as after downtime, for [`backlog`].
pub async fn prepare_backlog(env: &BenchEnv, count: u64) -> anyhow::Result<()> {
    insert_overdue(env, count).await?;
    settle_table(env).await
}

/// Starts `replicas` daemons on the pending backlog and measures until the
/// last reminder is consumed.
pub async fn backlog(
    env: &BenchEnv,
    daemon_args: &[String],
    replicas: usize,
) -> anyhow::Result<BacklogRun> {
    let expected = env.pending().await?;
    let count = expected.len() as u64;
    let beside = env.beside().await?;
    let mut consumer = env.consumer().await?;
    let own_pid = env.flush_own_counters().await?;
    let admin = notification_scheduler::db::connect(&env.server, Duration::from_secs(10)).await?;
    let before = harness::counters(&admin, &env.database).await?;
    let started = Utc::now();
    let daemons = (0..replicas)
        .map(|_| DaemonProcess::start(env, daemon_args))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let received = collect(
        &mut consumer,
        &expected,
        Duration::from_secs(600),
        Duration::from_millis(500),
    )
    .await;
    let database_cpu_us: u64 = harness::sessions(&admin, &env.database, own_pid)
        .await?
        .into_iter()
        .filter_map(|pid| harness::cpu_us(pid.unsigned_abs()))
        .sum();
    let mut peak_rss_kib = None;
    let mut daemon_cpu_us = 0;
    for daemon in daemons {
        daemon_cpu_us += daemon.cpu_us().unwrap_or(0);
        peak_rss_kib = peak_rss_kib.max(daemon.stop().await?);
    }
    harness::sessions_gone(&admin, &env.database, own_pid).await?;
    let after = harness::counters(&admin, &env.database).await?;
    let per_message = |total: f64| total / count as f64;
    let seconds =
        last_expected(&expected, &received).map_or(f64::NAN, |last| seconds_between(started, last));
    let first_message_seconds = received
        .iter()
        .map(|message| message.received_at)
        .min()
        .map_or(f64::NAN, |first| seconds_between(started, first));
    let (drain_start, drain_from) = received
        .iter()
        .filter_map(|message| stats::envelope_timestamp(&message.body))
        .min()
        .map_or((started, "the daemon's start"), |first| {
            (first, "the first publish")
        });
    let drain_seconds = last_expected(&expected, &received)
        .map_or(f64::NAN, |last| seconds_between(drain_start, last));
    Ok(BacklogRun {
        reminders: count,
        measured: env.measured.clone(),
        beside,
        seconds,
        per_second: count as f64 / seconds,
        drain_seconds,
        drain_per_second: count as f64 / drain_seconds,
        drain_from,
        first_message_seconds,
        replicas,
        accounting: stats::account(&expected, &received),
        peak_rss_kib,
        cost: MessageCost {
            daemon_cpu_us: per_message(daemon_cpu_us as f64),
            database_cpu_us: per_message(database_cpu_us as f64),
            transactions: per_message((after.transactions - before.transactions) as f64),
        },
    })
}

/// The broker's own rate for the same messages, with no database: publish on a
/// confirm channel with at most `window` unconfirmed, consume in parallel.
pub async fn ceiling(env: &BenchEnv, count: u64, window: usize) -> anyhow::Result<CeilingRun> {
    let mut consumer = env.consumer().await?;
    let timeout = Duration::from_secs(10);
    let connection = notification_scheduler::broker::connect(
        &env.broker,
        timeout,
        timeout,
        "notification-scheduler bench ceiling",
    )
    .await?;
    let channel = connection.create_channel().await?;
    channel
        .confirm_select(ConfirmSelectOptions::default())
        .await?;
    let now = Utc::now();
    let events: Vec<DueEvent> = (0..count as i64)
        .map(|n| match env.measured[n as usize % env.measured.len()] {
            // A status transition's envelope is the reminder's, give or take a field.
            RowKind::Reminder | RowKind::StatusTransition => DueEvent {
                kind: reminder::KIND.name,
                id: Uuid::new_v4(),
                due_at: now,
                stale: false,
                expires_in: Some(Duration::from_secs(3_600)),
                lateness: Duration::ZERO,
                ahead: Duration::ZERO,
                traceparent: None,
                message: Outbound {
                    exchange: None,
                    routing_key: ROUTING_KEY.into(),
                    body: Body::Envelope {
                        event_type: "game.reminder_due",
                        data: Arc::new(reminder::message_data(&Uuid::new_v4().to_string(), 60)),
                    },
                },
            },
            RowKind::ScheduledMessage => DueEvent {
                kind: scheduled_message::KIND.name,
                id: Uuid::new_v4(),
                due_at: now,
                stale: false,
                expires_in: None,
                lateness: Duration::ZERO,
                ahead: Duration::ZERO,
                traceparent: None,
                message: Outbound {
                    exchange: None,
                    routing_key: message_routing_key(n).into(),
                    body: Body::Stored {
                        payload: message_payload(n).into(),
                        headers: None,
                    },
                },
            },
        })
        .collect();
    let expected: HashMap<Uuid, DateTime<Utc>> = events.iter().map(|e| (e.id, now)).collect();
    let exchange = ShortString::from(env.exchange.as_str());
    let options = BasicPublishOptions {
        mandatory: true,
        ..BasicPublishOptions::default()
    };
    let receive = collect(
        &mut consumer,
        &expected,
        Duration::from_secs(600),
        Duration::from_millis(500),
    );
    let started = Utc::now();
    let publish = async {
        let mut unconfirmed = FuturesUnordered::new();
        for chunk in events.chunks(window.clamp(1, 1_000)) {
            while unconfirmed.len() + chunk.len() > window.max(chunk.len()) {
                if let Some(confirm) = unconfirmed.next().await {
                    confirm?;
                }
            }
            let encoded: Vec<_> = chunk
                .iter()
                .map(|e| {
                    let (body, properties) = envelope::encode(e, Utc::now());
                    (ShortString::from(&*e.message.routing_key), body, properties)
                })
                .collect();
            let published = join_all(encoded.iter().map(|(routing_key, body, properties)| {
                channel.basic_publish(
                    exchange.clone(),
                    routing_key.clone(),
                    options,
                    body,
                    properties.clone(),
                )
            }))
            .await;
            for confirm in published {
                unconfirmed.push(confirm?);
            }
        }
        while let Some(confirm) = unconfirmed.next().await {
            confirm?;
        }
        Ok::<(), lapin::Error>(())
    };
    let (received, published) = tokio::join!(receive, publish);
    published?;
    let _ = connection.close(200, ShortString::from("done")).await;
    let seconds =
        last_expected(&expected, &received).map_or(f64::NAN, |last| seconds_between(started, last));
    Ok(CeilingRun {
        messages: count,
        window,
        seconds,
        per_second: count as f64 / seconds,
        accounting: stats::account(&expected, &received),
    })
}

/// Adds `rows` pending reminders far in the future (10 per game).
pub async fn add_future_rows(env: &BenchEnv, rows: u64) -> anyhow::Result<()> {
    let games = rows.div_ceil(10) as i64;
    env.client
        .execute(
            "WITH games AS (
                 INSERT INTO game_sessions (title, scheduled_at)
                 SELECT 'scale', now() + interval '2 days' + g * interval '1 second'
                   FROM generate_series(1, $1::bigint) AS g
                 RETURNING id, scheduled_at)
             INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, game_scheduled_at)
             SELECT id, m, scheduled_at - m * interval '1 minute', scheduled_at
               FROM games, generate_series(0, 9) AS m",
            &[&games],
        )
        .await?;
    settle_table(env).await
}

/// Adds `rows` pending scheduled messages far in the future (one a second
/// from two days ahead), spread over the benchmark's 1,000 routing keys.
pub async fn add_future_messages(env: &BenchEnv, rows: u64) -> anyhow::Result<()> {
    let rows = rows as i64;
    env.client
        .execute(
            &format!(
                "INSERT INTO scheduled_message (routing_key, payload, deliver_at)
                 SELECT {}, {}, now() + interval '2 days' + n * interval '1 second'
                   FROM generate_series(0, $1::bigint - 1) AS n",
                message_routing_key_sql("n"),
                message_payload_sql("n")
            ),
            &[&rows],
        )
        .await?;
    settle_table(env).await
}

/// Leaves no setup work (hint bits, autovacuum, dirty buffers) for the
/// measurement that follows.
async fn settle_table(env: &BenchEnv) -> anyhow::Result<()> {
    // Separate calls: VACUUM cannot run in the implicit transaction of a
    // multi-statement batch.
    for kind in kinds::ALL {
        env.client
            .batch_execute(&format!("VACUUM ANALYZE {}", kind.table))
            .await?;
    }
    env.client.batch_execute("CHECKPOINT").await?;
    Ok(())
}

/// Marks every far-future row as sent, as if delivered long ago.
pub async fn mark_future_rows_sent(env: &BenchEnv) -> anyhow::Result<()> {
    env.client
        .execute(
            "UPDATE notification_schedule SET sent = true, sent_at = now(), outcome = 'published'
              WHERE NOT sent AND notification_time > now() + interval '1 day'",
            &[],
        )
        .await?;
    settle_table(env).await
}

/// Rows 0..count-1 spread evenly over `spread` after `lead`; row n is of
/// kind `env.measured[n % env.measured.len()]`. Reminders and transitions get
/// one game each.
async fn insert_spread(
    env: &BenchEnv,
    count: u64,
    spread: Duration,
    lead: Duration,
) -> anyhow::Result<HashMap<Uuid, DateTime<Utc>>> {
    let count = count as i64;
    let (lead_ms, spread_ms) = (lead.as_millis() as f64, spread.as_millis() as f64);
    let step = env.measured.len() as i64;
    let mut expected: HashMap<Uuid, DateTime<Utc>> = HashMap::new();
    for (first, measured) in (0_i64..).zip(&env.measured) {
        let series = "generate_series($5::bigint, $1::bigint - 1, $4)";
        let due = "now() + ($2::float8 + n * $3::float8 / $1::bigint) * interval '1 ms'";
        let params: [&(dyn ToSql + Sync); 5] = [&count, &lead_ms, &spread_ms, &step, &first];
        let rows = match measured {
            RowKind::Reminder => {
                env.client
                    .query(
                        &format!(
                            "WITH games AS (
                                 INSERT INTO game_sessions (title, scheduled_at)
                                 SELECT 'lateness', now() + interval '1 day' FROM {series}
                                 RETURNING id, scheduled_at),
                             numbered AS (SELECT id, scheduled_at, $5 + (row_number() OVER () - 1) * $4 AS n FROM games)
                             INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, game_scheduled_at)
                             SELECT id, 60, {due}, scheduled_at
                               FROM numbered
                             RETURNING id, notification_time"
                        ),
                        &params,
                    )
                    .await?
            }
            RowKind::StatusTransition => {
                env.client
                    .query(
                        &format!(
                            "WITH games AS (
                                 INSERT INTO game_sessions (title, scheduled_at)
                                 SELECT 'lateness', now() FROM {series}
                                 RETURNING id),
                             numbered AS (SELECT id, $5 + (row_number() OVER () - 1) * $4 AS n FROM games)
                             INSERT INTO game_status_schedule (game_id, target_status, transition_time)
                             SELECT id, 'IN_PROGRESS', {due}
                               FROM numbered
                             RETURNING id, transition_time"
                        ),
                        &params,
                    )
                    .await?
            }
            RowKind::ScheduledMessage => {
                let routing_key = message_routing_key_sql("n");
                let payload = message_payload_sql("n");
                env.client
                    .query(
                        &format!(
                            "INSERT INTO scheduled_message (routing_key, payload, deliver_at)
                             SELECT {routing_key}, {payload}, {due}
                               FROM {series} AS n
                             RETURNING id, deliver_at"
                        ),
                        &params,
                    )
                    .await?
            }
        };
        expected.extend(rows.iter().map(|row| (row.get::<_, Uuid>(0), row.get(1))));
    }
    Ok(expected)
}

/// `count` overdue rows, 1 ms apart; row n is of kind
/// `env.measured[n % env.measured.len()]`. Reminders and transitions get one
/// game each.
async fn insert_overdue(env: &BenchEnv, count: u64) -> anyhow::Result<()> {
    let count = count as i64;
    let step = env.measured.len() as i64;
    for (first, measured) in (0_i64..).zip(&env.measured) {
        let series = "generate_series($3::bigint, $1::bigint - 1, $2)";
        let due = "now() - interval '1 minute' - n * interval '1 ms'";
        let params: [&(dyn ToSql + Sync); 3] = [&count, &step, &first];
        let sql = match measured {
            RowKind::Reminder => format!(
                "WITH games AS (
                     INSERT INTO game_sessions (title, scheduled_at)
                     SELECT 'backlog', now() + interval '1 hour' FROM {series}
                     RETURNING id, scheduled_at),
                 numbered AS (SELECT id, scheduled_at, $3 + (row_number() OVER () - 1) * $2 AS n FROM games)
                 INSERT INTO notification_schedule (game_id, reminder_minutes, notification_time, game_scheduled_at)
                 SELECT id, 60, {due}, scheduled_at
                   FROM numbered"
            ),
            RowKind::StatusTransition => format!(
                "WITH games AS (
                     INSERT INTO game_sessions (title, scheduled_at)
                     SELECT 'backlog', now() FROM {series}
                     RETURNING id),
                 numbered AS (SELECT id, $3 + (row_number() OVER () - 1) * $2 AS n FROM games)
                 INSERT INTO game_status_schedule (game_id, target_status, transition_time)
                 SELECT id, 'IN_PROGRESS', {due}
                   FROM numbered"
            ),
            RowKind::ScheduledMessage => format!(
                "INSERT INTO scheduled_message (routing_key, payload, deliver_at)
                 SELECT {}, {}, {due}
                   FROM {series} AS n",
                message_routing_key_sql("n"),
                message_payload_sql("n")
            ),
        };
        env.client.execute(&sql, &params).await?;
    }
    Ok(())
}

/// The routing key of scheduled message number `n`.
fn message_routing_key(n: i64) -> String {
    format!(
        "{MESSAGE_ROUTING_KEY_PREFIX}{:03}",
        n % MESSAGE_ROUTING_KEYS
    )
}

/// SQL for the routing key of scheduled message number `n`, as
/// [`message_routing_key`] builds it.
fn message_routing_key_sql(n: &str) -> String {
    format!("'{MESSAGE_ROUTING_KEY_PREFIX}' || lpad(({n} % {MESSAGE_ROUTING_KEYS})::text, 3, '0')")
}

/// SQL for the payload of scheduled message number `n`, shaped as
/// [`message_payload`] builds it.
fn message_payload_sql(n: &str) -> String {
    format!("format('{{\"seq\": %s, \"user_id\": \"%s\"}}', {n}, gen_random_uuid())::json")
}

/// A small JSON payload, as an application would schedule (about 70 bytes).
fn message_payload(n: i64) -> String {
    format!(r#"{{"seq": {n}, "user_id": "{}"}}"#, Uuid::new_v4())
}

/// Times the claim of the first measured kind (rolled back) and the
/// next-due query, 200 round trips each, plus the server's own execution time
/// from EXPLAIN ANALYZE.
async fn query_times(env: &BenchEnv) -> anyhow::Result<QueryTimes> {
    const RUNS: usize = 200;
    let client = &env.client;
    let kind = env.measured[0].kind();
    let claim_sql = kind_sql::claim(kind);
    let next_due_sql = kind_sql::next_due(kinds::ALL);
    let claim = client.prepare(&claim_sql).await?;
    let next_due = client.prepare(&next_due_sql).await?;
    let (limit, ahead_us, grace_ms) = (500i64, 0i64, 60_000i64);
    let parameters: [&(dyn ToSql + Sync); 3] = [&limit, &ahead_us, &grace_ms];
    let claim_params = &parameters[..kind_sql::claim_parameters(kind)];
    let none: Vec<Uuid> = Vec::new();
    let mut claim_ms = Vec::with_capacity(RUNS);
    let mut next_due_ms = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        client.batch_execute("BEGIN").await?;
        let started = Instant::now();
        client.query(&claim, claim_params).await?;
        claim_ms.push(started.elapsed().as_secs_f64() * 1000.0);
        client.batch_execute("ROLLBACK").await?;
        let started = Instant::now();
        client.query(&next_due, &[&none]).await?;
        next_due_ms.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    claim_ms.sort_by(f64::total_cmp);
    next_due_ms.sort_by(f64::total_cmp);
    client.batch_execute("BEGIN").await?;
    let claim_explain_ms = explain_ms(client, &claim_sql, claim_params).await?;
    client.batch_execute("ROLLBACK").await?;
    let next_due_explain_ms = explain_ms(client, &next_due_sql, &[&none]).await?;
    let counts = client
        .query_one(
            &format!(
                "SELECT count(*) FILTER (WHERE {}), count(*) FILTER (WHERE {}) FROM {}",
                kind.progress.pending(),
                kind.progress.done(),
                kind.table
            ),
            &[],
        )
        .await?;
    Ok(QueryTimes {
        claim_kind: kind.name,
        pending_rows: counts.get(0),
        sent_rows: counts.get(1),
        claim_p50_ms: stats::percentile(&claim_ms, 50.0),
        claim_p99_ms: stats::percentile(&claim_ms, 99.0),
        claim_explain_ms,
        next_due_p50_ms: stats::percentile(&next_due_ms, 50.0),
        next_due_p99_ms: stats::percentile(&next_due_ms, 99.0),
        next_due_explain_ms,
    })
}

async fn explain_ms(
    client: &tokio_postgres::Client,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> anyhow::Result<f64> {
    let row = client
        .query_one(&format!("EXPLAIN (ANALYZE, FORMAT JSON) {sql}"), params)
        .await?;
    let plan: serde_json::Value = row.get(0);
    Ok(plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN))
}

fn last_expected(
    expected: &HashMap<Uuid, DateTime<Utc>>,
    received: &[notification_scheduler::broker::consumer::Received],
) -> Option<DateTime<Utc>> {
    received
        .iter()
        .filter(|message| {
            message
                .message_id
                .as_deref()
                .and_then(|id| id.parse::<Uuid>().ok())
                .is_some_and(|id| expected.contains_key(&id))
        })
        .map(|message| message.received_at)
        .max()
}

fn seconds_between(from: DateTime<Utc>, to: DateTime<Utc>) -> f64 {
    (to - from).num_microseconds().unwrap_or(i64::MAX) as f64 / 1e6
}
