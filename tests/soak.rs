//! Soak (issue 8): the daemon as a separate process under a steady load for
//! about ten minutes, with every connection cut once a minute.
//!
//! Not part of the default run (`#[ignore]`); run it with `scripts/soak.sh`,
//! which builds in release mode so that the daemon is the release binary.
//!
//! - A writer inserts `SOAK_RATE` reminders per second (default 200) for
//!   `SOAK_SECONDS` (default 600), in batches every 100 ms, each due 1–3 s
//!   later by the database clock, on a direct connection.
//! - The daemon reaches PostgreSQL and RabbitMQ through a [`FaultProxy`] each.
//!   Every `SOAK_CUT_SECONDS` (default 60; 0: never) one proxy cuts all its
//!   connections (RST), in turn PostgreSQL, RabbitMQ, both. `SOAK_DIRECT=1`
//!   is a control run: no proxies, no cuts.
//! - A consumer records every message; its VmRSS is sampled every 10 s.
//!
//! Afterwards: nothing lost, nothing early, no message for an unknown row,
//! duplicates only shortly after a cut and at most the in-flight window per
//! cut, resident memory flat, and a clean exit on SIGTERM. The summary is
//! printed (`--nocapture`) and written to `target/soak/soak.json`, the
//! daemon's log to `target/soak/daemon.log`.

pub mod common;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use common::process::{BINARY, LogTail, Running, daemon_command, free_port, signal, wait_exit};
use common::proxy::FaultProxy;
use common::schedule::count;
use common::{TestBroker, TestConsumer, TestDb};
use uuid::Uuid;

/// Failure detection within a couple of seconds; everything else default, in
/// particular the batch size and batches in flight of the duplicate window.
const DAEMON_SETTINGS: [&str; 8] = [
    "--listener-ping-interval",
    "2s",
    "--query-timeout",
    "2s",
    "--rabbitmq-heartbeat",
    "2s",
    "--restart-backoff-max",
    "1s",
];

/// The default `DELIVERY_BATCH_SIZE` × `DELIVERY_MAX_IN_FLIGHT_BATCHES`: at
/// most this many messages repeat per fault (docs/DELIVERY.md).
const WINDOW: usize = 500 * 4;

/// A repeat must arrive this soon after a cut.
const REPEAT_HORIZON: Duration = Duration::from_secs(30);

/// Messages received this soon after a cut are left out of the "steady"
/// lateness figures.
const CUT_SHADOW: Duration = Duration::from_secs(10);

const RSS_PERIOD: Duration = Duration::from_secs(10);

/// After the writer stops, everything must be delivered within this.
const DRAIN_LIMIT: Duration = Duration::from_secs(60);

/// Memory is flat if the last third's peak is within this factor of the first
/// third's (after warm-up), plus [`RSS_SLACK_KIB`].
const RSS_FACTOR: f64 = 1.25;
const RSS_SLACK_KIB: u64 = 4 * 1024;

fn env_u64(name: &str, default: u64) -> u64 {
    match std::env::var(name) {
        Ok(value) => value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a whole number")),
        Err(_) => default,
    }
}

/// `target/<profile>/notification-scheduler` → `target/soak`.
fn output_dir() -> PathBuf {
    let binary = PathBuf::from(BINARY);
    binary
        .parent()
        .and_then(|profile| profile.parent())
        .expect("the binary lives in target/<profile>")
        .join("soak")
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CutKind {
    Postgres,
    Rabbitmq,
    Both,
}

impl CutKind {
    fn nth(index: usize) -> Self {
        [Self::Postgres, Self::Rabbitmq, Self::Both][index % 3]
    }

    fn name(self) -> &'static str {
        match self {
            Self::Postgres => "postgresql",
            Self::Rabbitmq => "rabbitmq",
            Self::Both => "both",
        }
    }
}

struct Cut {
    kind: CutKind,
    elapsed: Duration,
    at: DateTime<Utc>,
}

/// What the consumer has seen so far.
#[derive(Default)]
struct Seen {
    messages: Mutex<Vec<(String, DateTime<Utc>)>>,
    distinct: AtomicUsize,
    last_at: Mutex<Option<Instant>>,
}

fn consume(mut consumer: TestConsumer, seen: Arc<Seen>, stop: Arc<AtomicBool>) -> TestConsumerTask {
    tokio::spawn(async move {
        let mut ids = std::collections::HashSet::new();
        while !stop.load(Ordering::Relaxed) {
            let Some(message) = consumer.next_within(Duration::from_millis(200)).await else {
                continue;
            };
            if ids.insert(message.message_id.clone()) {
                seen.distinct.store(ids.len(), Ordering::Relaxed);
            }
            *seen.last_at.lock().unwrap() = Some(Instant::now());
            seen.messages
                .lock()
                .unwrap()
                .push((message.message_id, message.received_at));
        }
        consumer
    })
}

type TestConsumerTask = tokio::task::JoinHandle<TestConsumer>;

fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, "VmRSS:")
}

fn hwm_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status_field_kib(&status, "VmHWM:")
}

fn status_field_kib(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|line| line.strip_prefix(field))?
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()
}

/// Nearest-rank percentile of sorted values.
fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "soak: run with scripts/soak.sh"]
async fn a_steady_load_with_a_cut_every_minute_loses_nothing_and_keeps_memory_flat() {
    let seconds = env_u64("SOAK_SECONDS", 600);
    let rate = env_u64("SOAK_RATE", 200);
    // A control run: SOAK_DIRECT=1 connects the daemon without the proxies
    // and cuts nothing.
    let direct = env_u64("SOAK_DIRECT", 0) != 0;
    let cut_every = Duration::from_secs(if direct {
        0
    } else {
        env_u64("SOAK_CUT_SECONDS", 60)
    });
    assert!(seconds > 0 && rate > 0);
    let duration = Duration::from_secs(seconds);
    eprintln!(
        "soak: {rate} reminders/s for {seconds} s, {}, daemon {BINARY}",
        if direct {
            "direct connections, no cuts".to_owned()
        } else if cut_every.is_zero() {
            "no cuts".to_owned()
        } else {
            format!("a cut every {} s", cut_every.as_secs())
        }
    );

    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let stop_consumer = Arc::new(AtomicBool::new(false));
    let seen = Arc::new(Seen::default());
    let consumer = consume(
        broker.consumer().await,
        Arc::clone(&seen),
        Arc::clone(&stop_consumer),
    );

    let pg_proxy = Arc::new(FaultProxy::start(common::postgres_address()).await);
    let mq_proxy = Arc::new(FaultProxy::start(common::rabbitmq_address()).await);
    let (database_url, daemon_broker) = if direct {
        (db.url.clone(), broker.via(broker.url.clone()))
    } else {
        (
            pg_proxy.url_for(&db.url),
            broker.via(mq_proxy.url_for(&broker.url)),
        )
    };
    let health_port = free_port();
    let mut command = daemon_command(&database_url, &daemon_broker, health_port);
    command.args(DAEMON_SETTINGS);
    let mut daemon = Running(command.spawn().expect("the daemon starts"));
    let pid = daemon.0.id();
    let log = LogTail::follow(&mut daemon.0);
    common::process::wait_http_ok(health_port, "/readyz").await;

    let client = db.client().await;
    let start = Instant::now();
    let start_utc = Utc::now();

    // RSS every RSS_PERIOD from the start of the load until told to stop.
    let stop_sampler = Arc::new(AtomicBool::new(false));
    let sampler = tokio::spawn({
        let stop = Arc::clone(&stop_sampler);
        async move {
            let mut samples: Vec<(f64, u64)> = Vec::new();
            let mut tick = tokio::time::interval(RSS_PERIOD);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                if let Some(kib) = rss_kib(pid) {
                    samples.push((start.elapsed().as_secs_f64(), kib));
                }
            }
            samples
        }
    });

    // Cuts at every multiple of the period that falls within the load.
    let cutter = tokio::spawn({
        let (pg_proxy, mq_proxy) = (Arc::clone(&pg_proxy), Arc::clone(&mq_proxy));
        async move {
            let mut cuts = Vec::new();
            let mut next = cut_every;
            while !cut_every.is_zero() && next < duration {
                tokio::time::sleep_until((start + next).into()).await;
                let kind = CutKind::nth(cuts.len());
                if kind != CutKind::Rabbitmq {
                    pg_proxy.cut();
                }
                if kind != CutKind::Postgres {
                    mq_proxy.cut();
                }
                let cut = Cut {
                    kind,
                    elapsed: start.elapsed(),
                    at: Utc::now(),
                };
                eprintln!(
                    "soak: t={:>6.1}s cut {}",
                    cut.elapsed.as_secs_f64(),
                    kind.name()
                );
                cuts.push(cut);
                next += cut_every;
            }
            cuts
        }
    });

    // The writer: rate/10 rows every 100 ms (catching up if a tick is late),
    // one game per reminder as in `backlog`, due 1–3 s ahead by the DB clock.
    let writer = tokio::spawn({
        let writer_client = db.client().await;
        async move {
            let insert = writer_client
                .prepare(
                    "WITH games AS (
                         INSERT INTO game_sessions (title, scheduled_at)
                         SELECT 'soak', now() + interval '1 hour' FROM generate_series(1, $1::bigint)
                         RETURNING id, scheduled_at)
                     INSERT INTO notification_schedule
                         (game_id, reminder_minutes, notification_time, game_scheduled_at)
                     SELECT id, 60, now() + interval '1 s' + random() * interval '2 s', scheduled_at
                       FROM games",
                )
                .await
                .expect("prepare the insert");
            let ticks = duration.as_millis() as u64 / 100;
            let mut tick = tokio::time::interval(Duration::from_millis(100));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let mut inserted: u64 = 0;
            let mut slowest = Duration::ZERO;
            for k in 1..=ticks {
                tick.tick().await;
                let rows = (rate * k / 10 - inserted) as i64;
                if rows == 0 {
                    continue;
                }
                let began = Instant::now();
                let written = writer_client
                    .execute(&insert, &[&rows])
                    .await
                    .expect("insert reminders");
                slowest = slowest.max(began.elapsed());
                inserted += written;
                if k % 600 == 0 {
                    eprintln!(
                        "soak: t={:>6.1}s {inserted} reminders written",
                        start.elapsed().as_secs_f64()
                    );
                }
            }
            (inserted, start.elapsed(), slowest)
        }
    });

    let (inserted, write_time, slowest_insert) = writer.await.expect("the writer");
    let cuts = cutter.await.expect("the cutter");
    eprintln!(
        "soak: t={:>6.1}s writer done: {inserted} reminders; draining",
        start.elapsed().as_secs_f64()
    );

    // Everything received at least once and recorded as sent, within the limit.
    let drain_start = Instant::now();
    let mut drained = false;
    while drain_start.elapsed() < DRAIN_LIMIT {
        if seen.distinct.load(Ordering::Relaxed) as u64 >= inserted
            && count(&client, "NOT sent").await == 0
        {
            drained = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let drain_time = drain_start.elapsed();
    // Late repeats: until nothing arrives for 2 s (at most 10 s more).
    let quiet_start = Instant::now();
    while quiet_start.elapsed() < Duration::from_secs(10) {
        let last = (*seen.last_at.lock().unwrap()).unwrap_or(start);
        if last.elapsed() >= Duration::from_secs(2) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop_sampler.store(true, Ordering::Relaxed);
    let mut rss = sampler.await.expect("the sampler");
    if let Some(kib) = rss_kib(pid) {
        rss.push((start.elapsed().as_secs_f64(), kib));
    }
    let peak_kib = hwm_kib(pid).unwrap_or(0);

    signal(&daemon.0, "TERM");
    let exit = wait_exit(&mut daemon.0).await;
    stop_consumer.store(true, Ordering::Relaxed);
    drop(consumer.await.expect("the consumer"));

    // Account for every row.
    let rows: HashMap<Uuid, (DateTime<Utc>, Option<String>)> = client
        .query(
            "SELECT id, notification_time, outcome FROM notification_schedule",
            &[],
        )
        .await
        .expect("read every row")
        .iter()
        .map(|row| (row.get(0), (row.get(1), row.get(2))))
        .collect();
    let pending = rows
        .values()
        .filter(|(_, outcome)| outcome.is_none())
        .count();
    let skipped = rows
        .values()
        .filter(|(_, outcome)| outcome.as_deref() == Some("skipped_stale"))
        .count();
    let messages = std::mem::take(&mut *seen.messages.lock().unwrap());
    let mut first: HashMap<Uuid, DateTime<Utc>> = HashMap::with_capacity(rows.len());
    let (mut early, mut unknown, mut duplicates) = (0usize, 0usize, 0usize);
    let mut examples_early = Vec::new();
    let mut repeats_far_from_cuts = Vec::new();
    let mut max_repeat_after_cut = Duration::ZERO;
    let mut lateness = Vec::with_capacity(rows.len());
    let mut steady_lateness = Vec::with_capacity(rows.len());
    let since_cut = |at: DateTime<Utc>| -> Option<Duration> {
        cuts.iter()
            .rev()
            .find(|cut| cut.at <= at)
            .map(|cut| (at - cut.at).to_std().unwrap_or_default())
    };
    for (message_id, received_at) in &messages {
        let Some((id, (due, _))) = Uuid::parse_str(message_id)
            .ok()
            .and_then(|id| rows.get(&id).map(|row| (id, row)))
        else {
            unknown += 1;
            continue;
        };
        if received_at < due {
            early += 1;
            if examples_early.len() < 5 {
                examples_early.push(format!("{id}: received {received_at}, due {due}"));
            }
        }
        if first.contains_key(&id) {
            duplicates += 1;
            match since_cut(*received_at) {
                Some(after) if after <= REPEAT_HORIZON => {
                    max_repeat_after_cut = max_repeat_after_cut.max(after);
                }
                _ => repeats_far_from_cuts.push(format!("{id} at {received_at}")),
            }
            continue;
        }
        first.insert(id, *received_at);
        let late_ms = (*received_at - *due).num_microseconds().unwrap_or(i64::MAX) as f64 / 1000.0;
        lateness.push(late_ms);
        if since_cut(*received_at).is_none_or(|after| after > CUT_SHADOW) {
            steady_lateness.push(late_ms);
        }
    }
    let missing = rows.len() - first.len();
    // The missing ones, with when they were due and recorded as sent, in
    // seconds since the start of the load.
    let relative =
        |at: DateTime<Utc>| (at - start_utc).num_microseconds().unwrap_or(0) as f64 / 1e6;
    let mut missing_rows: Vec<(f64, String)> = Vec::new();
    for (id, (due, outcome)) in &rows {
        if first.contains_key(id) {
            continue;
        }
        let sent_at: Option<DateTime<Utc>> = client
            .query_one(
                "SELECT sent_at FROM notification_schedule WHERE id = $1",
                &[id],
            )
            .await
            .expect("read a missing row")
            .get(0);
        missing_rows.push((
            relative(*due),
            format!(
                "{id}: due t={:.3}s, sent_at t={}, outcome {outcome:?}",
                relative(*due),
                sent_at.map_or("-".to_owned(), |at| format!("{:.3}s", relative(at)))
            ),
        ));
    }
    missing_rows.sort_by(|a, b| a.0.total_cmp(&b.0));
    let missing_rows: Vec<String> = missing_rows
        .into_iter()
        .map(|(_, row)| row)
        .take(50)
        .collect();
    if !missing_rows.is_empty() {
        eprintln!("soak: missing (up to 50):\n  {}", missing_rows.join("\n  "));
    }
    lateness.sort_by(f64::total_cmp);
    steady_lateness.sort_by(f64::total_cmp);

    // Memory: the last third's peak against the first third's after warm-up.
    let total = duration.as_secs_f64();
    let warm_up = (total / 6.0).min(60.0);
    let peak_between = |from: f64, to: f64| {
        rss.iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, kib)| *kib)
            .max()
    };
    let first_third = peak_between(warm_up, total / 3.0);
    let last_third = peak_between(2.0 * total / 3.0, f64::INFINITY);
    let rss_limit = first_third.map(|kib| (kib as f64 * RSS_FACTOR) as u64 + RSS_SLACK_KIB);
    let rss_max = rss.iter().map(|(_, kib)| *kib).max().unwrap_or(0);
    let rss_first = rss.first().map_or(0, |(_, kib)| *kib);
    let rss_last = rss.last().map_or(0, |(_, kib)| *kib);

    let log_text = log.text();
    let warnings = log_text.lines().filter(|l| l.contains("\"WARN\"")).count();
    let errors = log_text.lines().filter(|l| l.contains("\"ERROR\"")).count();
    // A claim's BEGIN on a connection still inside an earlier transaction: that
    // earlier transaction's claimed rows are committed with the new batch.
    let begins_in_transaction = log_text
        .lines()
        .filter(|l| l.contains("there is already a transaction in progress"))
        .count();

    // The report.
    let p = |values: &[f64], q: f64| percentile(values, q);
    let written_rate = inserted as f64 / write_time.as_secs_f64();
    let mut table = String::new();
    let mut line =
        |label: &str, value: String| table.push_str(&format!("| {label:<34} | {value:>28} |\n"));
    line(
        "duration",
        format!("{seconds} s (+{:.1} s drain)", drain_time.as_secs_f64()),
    );
    line("reminders written", inserted.to_string());
    line(
        "write rate (target)",
        format!("{written_rate:.1}/s ({rate}/s)"),
    );
    line(
        "slowest insert",
        format!("{:.1} ms", slowest_insert.as_secs_f64() * 1e3),
    );
    line("messages received", messages.len().to_string());
    line(
        "cuts (pg / mq / both)",
        format!(
            "{} ({} / {} / {})",
            cuts.len(),
            cuts.iter().filter(|c| c.kind == CutKind::Postgres).count(),
            cuts.iter().filter(|c| c.kind == CutKind::Rabbitmq).count(),
            cuts.iter().filter(|c| c.kind == CutKind::Both).count()
        ),
    );
    line(
        "lateness p50 / p99 / max",
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            p(&lateness, 50.0),
            p(&lateness, 99.0),
            lateness.last().copied().unwrap_or(f64::NAN)
        ),
    );
    line(
        &format!("  same, > {} s after any cut", CUT_SHADOW.as_secs()),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            p(&steady_lateness, 50.0),
            p(&steady_lateness, 99.0),
            steady_lateness.last().copied().unwrap_or(f64::NAN)
        ),
    );
    line("early", early.to_string());
    line("missing", missing.to_string());
    line("unknown message ids", unknown.to_string());
    line(
        "duplicates (limit)",
        format!("{duplicates} ({})", cuts.len() * WINDOW),
    );
    line(
        "latest repeat after a cut",
        format!("{:.1} s", max_repeat_after_cut.as_secs_f64()),
    );
    line(
        "rows pending / skipped stale",
        format!("{pending} / {skipped}"),
    );
    line(
        "RSS first / last / max",
        format!(
            "{:.1} / {:.1} / {:.1} MiB",
            mib(rss_first),
            mib(rss_last),
            mib(rss_max)
        ),
    );
    line(
        "RSS peak 1st third / last third",
        format!(
            "{} / {} MiB",
            first_third.map_or("-".to_owned(), |k| format!("{:.1}", mib(k))),
            last_third.map_or("-".to_owned(), |k| format!("{:.1}", mib(k)))
        ),
    );
    line("VmHWM", format!("{:.1} MiB", mib(peak_kib)));
    line(
        "daemon log warn / error lines",
        format!("{warnings} / {errors}"),
    );
    line(
        "BEGIN inside a transaction (log)",
        begins_in_transaction.to_string(),
    );
    line("daemon exit", format!("{exit}"));
    let series: Vec<String> = rss
        .iter()
        .map(|(t, kib)| format!("{t:.0}s={:.1}", mib(*kib)))
        .collect();
    eprintln!(
        "\nsoak summary\n| {:<34} | {:>28} |\n|{}|{}|\n{table}RSS series (MiB): {}\n",
        "metric",
        "value",
        "-".repeat(36),
        "-".repeat(30),
        series.join(" ")
    );

    let dir = output_dir();
    std::fs::create_dir_all(&dir).expect("create target/soak");
    let report = serde_json::json!({
        "seconds": seconds,
        "rate": rate,
        "cut_every_seconds": cut_every.as_secs(),
        "reminders_written": inserted,
        "write_rate": written_rate,
        "slowest_insert_ms": slowest_insert.as_secs_f64() * 1e3,
        "messages_received": messages.len(),
        "drain_seconds": drain_time.as_secs_f64(),
        "cuts": cuts.iter().map(|c| serde_json::json!({
            "kind": c.kind.name(), "at_seconds": c.elapsed.as_secs_f64(),
        })).collect::<Vec<_>>(),
        "lateness_ms": {
            "p50": p(&lateness, 50.0), "p90": p(&lateness, 90.0),
            "p99": p(&lateness, 99.0), "max": lateness.last(),
        },
        "lateness_away_from_cuts_ms": {
            "shadow_seconds": CUT_SHADOW.as_secs(),
            "n": steady_lateness.len(),
            "p50": p(&steady_lateness, 50.0), "p99": p(&steady_lateness, 99.0),
            "max": steady_lateness.last(),
        },
        "early": early,
        "missing": missing,
        "missing_rows": missing_rows,
        "unknown": unknown,
        "duplicates": duplicates,
        "duplicate_limit": cuts.len() * WINDOW,
        "latest_repeat_after_cut_seconds": max_repeat_after_cut.as_secs_f64(),
        "repeats_far_from_cuts": repeats_far_from_cuts.len(),
        "rows_pending": pending,
        "rows_skipped_stale": skipped,
        "rss_kib": {
            "first": rss_first, "last": rss_last, "max": rss_max, "vm_hwm": peak_kib,
            "first_third_peak": first_third, "last_third_peak": last_third,
            "limit": rss_limit,
            "series": rss.iter().map(|(t, kib)| serde_json::json!([t, kib])).collect::<Vec<_>>(),
        },
        "daemon_log": {
            "warn": warnings, "error": errors,
            "begin_inside_transaction": begins_in_transaction,
        },
        "direct": direct,
        "daemon_exit_code": exit.code(),
    });
    std::fs::write(
        dir.join("soak.json"),
        serde_json::to_string_pretty(&report).unwrap(),
    )
    .expect("write soak.json");
    std::fs::write(dir.join("daemon.log"), &log_text).expect("write daemon.log");
    eprintln!("soak: report in {}", dir.join("soak.json").display());

    let log_tail = || {
        let lines: Vec<&str> = log_text.lines().collect();
        lines[lines.len().saturating_sub(40)..].join("\n")
    };
    assert!(
        drained,
        "not everything was delivered within {DRAIN_LIMIT:?} of the writer stopping \
         ({} of {inserted} received); the log's end:\n{}",
        first.len(),
        log_tail()
    );
    assert_eq!(rows.len() as u64, inserted, "every written row read back");
    assert_eq!(early, 0, "early messages, e.g. {examples_early:?}");
    assert_eq!(missing, 0, "reminders never received");
    assert_eq!(unknown, 0, "messages whose id is no row");
    assert_eq!(pending, 0, "rows never marked sent");
    assert_eq!(skipped, 0, "rows skipped as stale");
    assert!(
        duplicates <= cuts.len() * WINDOW,
        "{duplicates} duplicates, more than {} cuts × {WINDOW}",
        cuts.len()
    );
    assert!(
        repeats_far_from_cuts.is_empty(),
        "{} repeats more than {REPEAT_HORIZON:?} after any cut, e.g. {:?}",
        repeats_far_from_cuts.len(),
        &repeats_far_from_cuts[..repeats_far_from_cuts.len().min(5)]
    );
    if let (Some(last), Some(limit)) = (last_third, rss_limit) {
        assert!(
            last <= limit,
            "resident memory grew: last third peak {:.1} MiB > {:.1} MiB \
             ({RSS_FACTOR} × first third peak + {} MiB); series: {}",
            mib(last),
            mib(limit),
            RSS_SLACK_KIB / 1024,
            series.join(" ")
        );
    }
    assert_eq!(
        exit.code(),
        Some(0),
        "SIGTERM exit; the log's end:\n{}",
        log_tail()
    );
}
