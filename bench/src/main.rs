//! `notification-scheduler-bench`: measures lateness, backlog drain against
//! the broker's own ceiling, behaviour with a million rows, and memory, with
//! the real daemon (the `notification-scheduler` binary) in a separate
//! process. docs/BENCHMARKS.md describes the method and records results.
//!
//! A workspace member of its own, so that none of it is compiled into the
//! production binary.
//!
//! Timing figures are reported, never asserted: machines are shared and noisy.
//! Correctness is asserted: any early, missing or duplicated message makes the
//! command fail.

mod api_calls;
mod harness;
mod idle;
// The test suite's port picker: below the ephemeral range, checked by binding.
#[path = "../../tests/common/ports.rs"]
mod ports;
mod scenarios;
mod stats;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use notification_scheduler::config::{BrokerUrl, DatabaseUrl, LoggingArgs, parse};
use serde::Serialize;

use harness::{BenchEnv, RowKind};
use scenarios::{BacklogRun, CeilingRun, HerdRun, LatenessRun};

/// A benchmark scenario.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Scenario {
    /// Reminders spread over a few seconds: receive time minus notification time.
    Lateness,
    /// Overdue reminders present at start, against the broker's ceiling.
    Backlog,
    /// Lateness again with a million pending, then a million sent rows.
    Scale,
    /// Scheduled-message API calls per second: creates, moves, cancels.
    Api,
    /// Rows due at one instant (--herd-reminders): the first delivery and the
    /// drain against the broker's ceiling.
    Herd,
    /// What a daemon with nothing due reads from its database per minute, at
    /// each of --idle-rows pending rows.
    Idle,
}

/// Measures the notification scheduler: lateness, backlog drain against the
/// broker's own rate, scale and memory (docs/BENCHMARKS.md).
#[derive(Debug, Clone, Parser)]
#[command(name = "notification-scheduler-bench", version)]
pub struct BenchArgs {
    #[command(flatten)]
    pub logging: LoggingArgs,

    /// The daemon binary to benchmark; by default `notification-scheduler`
    /// beside this one (as cargo builds them).
    #[arg(long, value_name = "PATH")]
    pub daemon_binary: Option<PathBuf>,

    /// PostgreSQL server to benchmark on: a database named bench_<id> is
    /// created there and dropped afterwards.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true, value_name = "URL")]
    pub database_url: DatabaseUrl,

    /// RabbitMQ to benchmark on: an exchange and a queue named bench.<id> are
    /// created there and deleted afterwards.
    #[arg(long, env = "RABBITMQ_URL", hide_env_values = true, value_name = "URL")]
    pub rabbitmq_url: BrokerUrl,

    /// Daemon processes draining the backlog together: replicas on one
    /// database and one broker (or cluster).
    #[arg(long, default_value = "1", value_parser = parse::bounded_integer(1, 16))]
    pub replicas: usize,

    /// Declare the bench queue as a quorum queue, as consumers on a RabbitMQ
    /// cluster should.
    #[arg(long)]
    pub quorum_queue: bool,

    /// Scenarios to run.
    #[arg(
        long,
        value_enum,
        value_delimiter = ',',
        default_value = "lateness,backlog,scale"
    )]
    pub scenarios: Vec<Scenario>,

    /// Reminders in a lateness run.
    #[arg(long, default_value = "2000")]
    pub lateness_reminders: u64,

    /// Seconds over which a lateness run's reminders are spread.
    #[arg(long, default_value = "20s", value_parser = parse::positive_duration)]
    pub lateness_spread: Duration,

    /// Overdue reminders in a backlog run (and messages per ceiling run).
    #[arg(long, default_value = "50000")]
    pub backlog_reminders: u64,

    /// Alternating ceiling and backlog runs; the ratio compares their medians.
    #[arg(long, default_value = "3")]
    pub backlog_rounds: u32,

    /// Most unconfirmed messages in a ceiling run (10,000 beat 1,000 and
    /// unbounded publishing here).
    #[arg(long, default_value = "10000")]
    pub ceiling_window: usize,

    /// Rows added for the scale runs.
    #[arg(long, default_value = "1000000")]
    pub scale_rows: u64,

    /// Messages created, moved and cancelled through the API in an api run.
    #[arg(long, default_value = "20000")]
    pub api_calls: u64,

    /// Concurrent API clients in an api run.
    #[arg(long, default_value = "16")]
    pub api_clients: usize,

    /// Rows due at the same instant in a herd run.
    #[arg(long, default_value = "200000")]
    pub herd_reminders: u64,

    /// How long before their instant a herd run writes its rows (more than
    /// writing them takes).
    #[arg(long, default_value = "20s", value_parser = parse::positive_duration)]
    pub herd_lead: Duration,

    /// Pending rows (half reminders, half scheduled messages, none due) at
    /// which idle runs measure, in increasing order.
    #[arg(long, value_delimiter = ',', default_value = "0,1000000")]
    pub idle_rows: Vec<u64>,

    /// How long each idle run watches the daemon.
    #[arg(long, default_value = "60s", value_parser = parse::positive_duration)]
    pub idle_window: Duration,

    /// Small sizes that finish in about a minute (used by CI).
    #[arg(long)]
    pub quick: bool,

    /// Make every other row of the lateness and backlog scenarios a game
    /// status transition instead of a reminder (two kinds in one pipeline).
    #[arg(long)]
    pub mixed_kinds: bool,

    /// Add N pending scheduled messages far in the future, across 1,000
    /// routing keys, before the scenarios run, and make the lateness and
    /// backlog rows scheduled messages across the same keys (with
    /// --mixed-kinds: reminders, status transitions and scheduled messages in
    /// turn). 0 measures scheduled messages without adding any.
    #[arg(long, value_name = "N")]
    pub scheduled_messages: Option<u64>,

    /// Where to write the JSON report.
    #[arg(long, default_value = "bench-results/bench.json")]
    pub output: PathBuf,

    /// Extra argument for every daemon started (repeatable), e.g.
    /// `--daemon-arg=--batch-size=1000`.
    #[arg(long = "daemon-arg", allow_hyphen_values = true)]
    pub daemon_args: Vec<String>,
}

/// Everything measured, as written to the JSON report.
#[derive(Debug, Serialize)]
pub struct Report {
    pub machine: Machine,
    /// The kinds of the rows the lateness and backlog scenarios measured, in turn.
    pub measured: Vec<RowKind>,
    pub lateness: Vec<LatenessRun>,
    pub backlog: Vec<BacklogRun>,
    pub ceiling: Vec<CeilingRun>,
    /// Median backlog rate divided by the median ceiling rate: the headline figure.
    pub backlog_to_ceiling: Option<f64>,
    pub api: Vec<api_calls::ApiRun>,
    pub herd: Vec<HerdRun>,
    pub idle: Vec<idle::IdleRun>,
    pub floors: Vec<Floor>,
}

/// The host the figures come from.
#[derive(Debug, Serialize)]
pub struct Machine {
    pub cpus: usize,
    pub memory_gib: f64,
    pub postgres: String,
    pub kernel: String,
}

/// A target from the benchmark issue and whether this run met it.
#[derive(Debug, Serialize)]
pub struct Floor {
    pub name: String,
    pub target: String,
    pub measured: String,
    pub met: bool,
}

fn main() -> ExitCode {
    let args = BenchArgs::parse();
    let logging = args.logging.clone();
    notification_scheduler::cli::run_with_telemetry(&logging, run(args))
}

/// Runs the selected scenarios; fails if any message was early, missing or
/// delivered twice.
async fn run(args: BenchArgs) -> anyhow::Result<()> {
    let args = if args.quick { quick(args) } else { args };
    let daemon_binary = match &args.daemon_binary {
        Some(path) => path.clone(),
        None => std::env::current_exe()?.with_file_name("notification-scheduler"),
    };
    anyhow::ensure!(
        daemon_binary.is_file(),
        "the daemon binary {} does not exist: build it (cargo build --release --bin \
         notification-scheduler) or name it with --daemon-binary",
        daemon_binary.display()
    );
    let measured = match (args.mixed_kinds, args.scheduled_messages.is_some()) {
        (false, false) => vec![RowKind::Reminder],
        (true, false) => vec![RowKind::Reminder, RowKind::StatusTransition],
        (false, true) => vec![RowKind::ScheduledMessage],
        (true, true) => vec![
            RowKind::Reminder,
            RowKind::StatusTransition,
            RowKind::ScheduledMessage,
        ],
    };
    let env = BenchEnv::create(
        &args.database_url,
        &args.rabbitmq_url,
        daemon_binary,
        measured,
        args.quorum_queue,
    )
    .await?;
    let result = run_scenarios(&args, &env).await;
    env.remove().await;
    let report = result?;
    print(&report);
    if let Some(parent) = args.output.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::write(&args.output, serde_json::to_vec_pretty(&report)?)?;
    println!("\nreport written to {}", args.output.display());
    check_correctness(&report)
}

fn quick(args: BenchArgs) -> BenchArgs {
    BenchArgs {
        lateness_reminders: 100,
        lateness_spread: Duration::from_secs(3),
        backlog_reminders: 2_000,
        backlog_rounds: 1,
        scale_rows: 20_000,
        api_calls: 500,
        herd_reminders: 2_000,
        herd_lead: Duration::from_secs(3),
        idle_rows: vec![0, 20_000],
        idle_window: Duration::from_secs(2),
        scheduled_messages: args.scheduled_messages.map(|rows| rows.min(20_000)),
        ..args
    }
}

async fn run_scenarios(args: &BenchArgs, env: &BenchEnv) -> anyhow::Result<Report> {
    let lead = Duration::from_secs(3);
    let daemon_args = &args.daemon_args;
    let mut report = Report {
        machine: machine(env).await?,
        measured: env.measured.clone(),
        lateness: Vec::new(),
        backlog: Vec::new(),
        ceiling: Vec::new(),
        backlog_to_ceiling: None,
        api: Vec::new(),
        herd: Vec::new(),
        idle: Vec::new(),
        floors: Vec::new(),
    };
    let (count, spread) = (args.lateness_reminders, args.lateness_spread);
    let measured = rows_name(&env.measured);
    if let Some(messages) = args.scheduled_messages.filter(|&messages| messages > 0) {
        eprintln!(
            "[bench] adding {messages} pending future scheduled messages across {} routing keys",
            harness::MESSAGE_ROUTING_KEYS
        );
        scenarios::add_future_messages(env, messages).await?;
    }
    let label = match (args.mixed_kinds, args.scheduled_messages) {
        (false, None) => "empty table".to_owned(),
        (true, None) => "mixed kinds".to_owned(),
        (false, Some(messages)) => format!("messages, {messages} future"),
        (true, Some(messages)) => format!("3 kinds, {messages} future"),
    };
    if args.scenarios.contains(&Scenario::Lateness) {
        eprintln!("[bench] lateness: {count} {measured} over {spread:?}");
        report
            .lateness
            .push(scenarios::lateness(env, &label, count, spread, lead, daemon_args).await?);
    }
    if args.scenarios.contains(&Scenario::Backlog) {
        // The machine is shared and noisy: alternate the broker's own rate and
        // the daemon's, and compare medians.
        let count = args.backlog_reminders;
        for round in 1..=args.backlog_rounds {
            scenarios::prepare_backlog(env, count).await?;
            eprintln!(
                "[bench] ceiling {round}/{}: {count} messages",
                args.backlog_rounds
            );
            report
                .ceiling
                .push(scenarios::ceiling(env, count, args.ceiling_window).await?);
            eprintln!(
                "[bench] backlog {round}/{}: {count} overdue {measured}, {} daemon replica(s)",
                args.backlog_rounds, args.replicas
            );
            report
                .backlog
                .push(scenarios::backlog(env, daemon_args, args.replicas).await?);
        }
        let ceiling = median(report.ceiling.iter().map(|run| run.per_second));
        let backlog = median(report.backlog.iter().map(|run| run.drain_per_second));
        report.backlog_to_ceiling = Some(backlog / ceiling);
    }
    if args.scenarios.contains(&Scenario::Scale) {
        let rows = args.scale_rows;
        eprintln!("[bench] scale: adding {rows} pending rows");
        scenarios::add_future_rows(env, rows).await?;
        let label = format!("{rows} pending rows");
        report
            .lateness
            .push(scenarios::lateness(env, &label, count, spread, lead, daemon_args).await?);
        eprintln!("[bench] scale: marking them sent");
        scenarios::mark_future_rows_sent(env).await?;
        let label = format!("{rows} sent rows");
        report
            .lateness
            .push(scenarios::lateness(env, &label, count, spread, lead, daemon_args).await?);
    }
    if args.scenarios.contains(&Scenario::Api) {
        let (calls, clients) = (args.api_calls, args.api_clients);
        eprintln!("[bench] api: {calls} creates, moves and cancels, {clients} clients");
        report
            .api
            .push(api_calls::api_calls(env, calls, clients).await?);
    }
    if args.scenarios.contains(&Scenario::Herd) {
        let count = args.herd_reminders;
        eprintln!(
            "[bench] herd: {count} {measured} due at one instant, after a ceiling run of as many"
        );
        report.herd.push(
            scenarios::herd(env, count, args.herd_lead, args.ceiling_window, daemon_args).await?,
        );
    }
    if args.scenarios.contains(&Scenario::Idle) {
        let mut sizes = args.idle_rows.clone();
        sizes.sort_unstable();
        for rows in sizes {
            eprintln!(
                "[bench] idle: {rows} pending rows, {:?} window",
                args.idle_window
            );
            report
                .idle
                .push(idle::idle(env, rows, args.idle_window, daemon_args).await?);
        }
    }
    report.floors = floors(&report);
    Ok(report)
}

/// What the measured rows are called in progress lines.
fn rows_name(measured: &[RowKind]) -> &'static str {
    match measured {
        [RowKind::Reminder] => "reminders",
        [RowKind::ScheduledMessage] => "scheduled messages",
        _ => "rows of mixed kinds",
    }
}

async fn machine(env: &BenchEnv) -> anyhow::Result<Machine> {
    let postgres: String = env
        .client
        .query_one("SHOW server_version", &[])
        .await?
        .get(0);
    let memory_kib: f64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|info| {
            info.lines()
                .find_map(|line| line.strip_prefix("MemTotal:"))
                .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(f64::NAN);
    Ok(Machine {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_gib: memory_kib / 1024.0 / 1024.0,
        postgres,
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|release| release.trim().to_owned())
            .unwrap_or_default(),
    })
}

fn floors(report: &Report) -> Vec<Floor> {
    let mut floors = Vec::new();
    let mut floor = |name: &str, target: &str, measured: String, met: bool| {
        floors.push(Floor {
            name: name.to_owned(),
            target: target.to_owned(),
            measured,
            met,
        });
    };
    if let Some(base) = report.lateness.first() {
        let l = &base.lateness;
        floor(
            "lateness p50",
            "≤ 1.5 ms",
            format!("{:.2} ms", l.p50_ms),
            l.p50_ms <= 1.5,
        );
        floor(
            "lateness p99",
            "≤ 3 ms",
            format!("{:.2} ms", l.p99_ms),
            l.p99_ms <= 3.0,
        );
        for run in report.lateness.iter().skip(1) {
            let delta = run.lateness.p99_ms - l.p99_ms;
            floor(
                &format!("p99 with {}", run.label),
                "within 1 ms of the empty table",
                format!("{:+.2} ms", delta),
                delta <= 1.0,
            );
        }
    }
    if let Some(ratio) = report.backlog_to_ceiling {
        floor(
            "backlog / ceiling",
            "≥ 0.95",
            format!("{ratio:.2}"),
            ratio >= 0.95,
        );
    }
    for herd in &report.herd {
        // The figure: the first published (the envelope's timestamp).
        // The first delivery adds the broker hop and the consumer's wake-up;
        // it stands in where the messages have no envelope.
        let lateness = &herd.run.lateness;
        let (first, what) = if lateness.published.min_ms.is_nan() {
            (lateness.min_ms, "first delivered")
        } else {
            (lateness.published.min_ms, "first published")
        };
        floor(
            &format!("{}: {what}", herd.run.label),
            "≤ 5 ms late",
            format!("{first:.2} ms (delivered {:.2} ms)", lateness.min_ms),
            first <= 5.0,
        );
        floor(
            &format!("{}: drain / ceiling", herd.run.label),
            "≥ 0.9",
            format!("{:.2}", herd.to_ceiling),
            herd.to_ceiling >= 0.9,
        );
    }
    let peak = report
        .lateness
        .iter()
        .chain(report.herd.iter().map(|herd| &herd.run))
        .filter_map(|run| run.peak_rss_kib)
        .chain(report.backlog.iter().filter_map(|run| run.peak_rss_kib))
        .max();
    if let Some(peak) = peak {
        // The figure is in megabytes (10^6), the report's in MiB.
        let mb = peak as f64 * 1024.0 / 1e6;
        floor("peak RSS", "≤ 30 MB", format!("{mb:.1} MB"), mb <= 30.0);
    }
    // An empty schedule has nothing to estimate or look up, so the growth is
    // measured between the non-empty sizes; the reads of the schedule's own
    // tables are bounded at every size.
    let non_empty: Vec<&idle::IdleRun> = report
        .idle
        .iter()
        .filter(|run| run.pending_rows > 0)
        .collect();
    if let (Some(smallest), Some(largest)) = (non_empty.first(), non_empty.last())
        && largest.pending_rows > smallest.pending_rows
    {
        floor(
            &format!(
                "idle reads, {} vs {} rows",
                largest.pending_rows, smallest.pending_rows
            ),
            "within 2x",
            format!(
                "{:.0} / {:.0}",
                largest.tuples_read_per_minute, smallest.tuples_read_per_minute
            ),
            largest.tuples_read_per_minute <= 2.0 * smallest.tuples_read_per_minute,
        );
    }
    if let Some(largest) = non_empty.last() {
        floor(
            &format!("idle table reads, {} rows", largest.pending_rows),
            "≤ 1,000 tuples a minute",
            format!("{:.0}", largest.table_tuples_read_per_minute),
            largest.table_tuples_read_per_minute <= 1_000.0,
        );
    }
    floors
}

/// The lateness runs' tables: lateness by receipt, by the envelope's publish
/// time, the hot queries, and what sat beside the measured rows.
fn print_lateness(runs: &[LatenessRun]) {
    if runs.is_empty() {
        return;
    }
    println!(
        "\n{:<22} {:>6} {:>8} {:>8} {:>8} {:>8} {:>5} {:>7} {:>4} {:>9}",
        "lateness",
        "n",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "early",
        "missing",
        "dup",
        "RSS MiB"
    );
    for run in runs {
        let l = &run.lateness;
        println!(
            "{:<22} {:>6} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>5} {:>7} {:>4} {:>9.1}",
            run.label,
            l.expected,
            l.p50_ms,
            l.p90_ms,
            l.p99_ms,
            l.max_ms,
            l.early,
            l.missing,
            l.duplicates,
            run.peak_rss_kib.unwrap_or(0) as f64 / 1024.0
        );
    }
    println!(
        "\n{:<22} {:>8} {:>8} {:>8}   (by the envelope's timestamp: the daemon's share)",
        "published (ms late)", "min", "p50", "p99"
    );
    for run in runs {
        let p = &run.lateness.published;
        println!(
            "{:<22} {:>8.2} {:>8.2} {:>8.2}",
            run.label, p.min_ms, p.p50_ms, p.p99_ms
        );
    }
    println!(
        "\n{:<22} {:>9} {:>10} {:>10}",
        "queries (ms)", "claim p50", "claim p99", "next p50"
    );
    for run in runs {
        let q = &run.queries;
        println!(
            "{:<22} {:>9.3} {:>10.3} {:>10.3}  ({} pending {}, sent {}; server: claim {:.3}, next-due {:.3})",
            run.label,
            q.claim_p50_ms,
            q.claim_p99_ms,
            q.next_due_p50_ms,
            q.claim_kind,
            q.pending_rows,
            q.sent_rows,
            q.claim_explain_ms,
            q.next_due_explain_ms
        );
    }
    println!("\nrows beside (pending more than a day ahead / done)");
    for run in runs {
        println!("{:<22} {}", run.label, beside(&run.beside));
    }
}

fn print(report: &Report) {
    let m = &report.machine;
    println!(
        "\nmachine: {} CPUs, {:.1} GiB, PostgreSQL {}, Linux {}",
        m.cpus, m.memory_gib, m.postgres, m.kernel
    );
    let kinds: Vec<&str> = report
        .measured
        .iter()
        .map(|kind| kind.kind().name)
        .collect();
    println!("measured rows: {}", kinds.join(", "));
    print_lateness(&report.lateness);
    for (ceiling, backlog) in report.ceiling.iter().zip(&report.backlog) {
        println!(
            "\nceiling: {:>7} messages in {:>6.2} s = {:>8.0}/s (window {}, missing {}, dup {})",
            ceiling.messages,
            ceiling.seconds,
            ceiling.per_second,
            ceiling.window,
            ceiling.accounting.missing,
            ceiling.accounting.duplicates
        );
        println!(
            "backlog: {:>7} {} in {:>6.2} s = {:>8.0}/s by {} replica(s) (from {}; \
             from the daemon's start {:.2} s = {:.0}/s, first consumed after {:.3} s, \
             missing {}, dup {}, peak RSS {:.1} MiB)",
            backlog.reminders,
            rows_name(&backlog.measured),
            backlog.drain_seconds,
            backlog.drain_per_second,
            backlog.replicas,
            backlog.drain_from,
            backlog.seconds,
            backlog.per_second,
            backlog.first_message_seconds,
            backlog.accounting.missing,
            backlog.accounting.duplicates,
            backlog.peak_rss_kib.unwrap_or(0) as f64 / 1024.0
        );
        println!(
            "         per message: daemon CPU {:.1} µs, database sessions' CPU {:.1} µs, {:.3} transactions",
            backlog.cost.daemon_cpu_us, backlog.cost.database_cpu_us, backlog.cost.transactions
        );
        println!("         beside: {}", beside(&backlog.beside));
    }
    if let Some(ratio) = report.backlog_to_ceiling {
        println!("backlog / ceiling (medians): {ratio:.2}");
    }
    for run in &report.api {
        println!(
            "\n{:<22} {:>6} {:>10} {:>8} {:>8} {:>6}",
            format!("api ({} clients)", run.clients),
            "n",
            "per s",
            "p50 ms",
            "p99 ms",
            "failed"
        );
        for call in &run.calls {
            println!(
                "{:<22} {:>6} {:>10.0} {:>8.2} {:>8.2} {:>6}",
                call.call, call.calls, call.per_second, call.p50_ms, call.p99_ms, call.failed
            );
        }
    }
    for herd in &report.herd {
        let l = &herd.run.lateness;
        println!(
            "\n{}: first published {:.2} ms, first delivered {:.2} ms, p50 {:.2} ms, \
             last {:.2} ms after the instant = {:.0}/s; \
             ceiling {:.0}/s ({:.2}); early {}, missing {}, dup {}; peak RSS {:.1} MiB",
            herd.run.label,
            l.published.min_ms,
            l.min_ms,
            l.p50_ms,
            l.max_ms,
            herd.per_second,
            herd.ceiling.per_second,
            herd.to_ceiling,
            l.early,
            l.missing,
            l.duplicates,
            herd.run.peak_rss_kib.unwrap_or(0) as f64 / 1024.0
        );
    }
    if !report.idle.is_empty() {
        println!(
            "\n{:<22} {:>10} {:>16} {:>24} {:>24}",
            "idle", "window s", "transactions/min", "table tuples read/min", "all tuples read/min"
        );
    }
    for run in &report.idle {
        println!(
            "{:<22} {:>10.1} {:>16.1} {:>24.0} {:>24.0}",
            format!("{} pending rows", run.pending_rows),
            run.window_s,
            run.transactions_per_minute,
            run.table_tuples_read_per_minute,
            run.tuples_read_per_minute
        );
    }
    println!("\n{:<34} {:<32} {:>12}  met", "floor", "target", "measured");
    for floor in &report.floors {
        println!(
            "{:<34} {:<32} {:>12}  {}",
            floor.name,
            floor.target,
            floor.measured,
            if floor.met { "yes" } else { "NO" }
        );
    }
}

/// `kind pending / done` for every kind.
fn beside(tables: &[harness::TableRows]) -> String {
    let tables: Vec<String> = tables
        .iter()
        .map(|table| format!("{} {} / {}", table.kind, table.future_pending, table.done))
        .collect();
    tables.join(", ")
}

fn median(values: impl Iterator<Item = f64>) -> f64 {
    let mut values: Vec<f64> = values.collect();
    values.sort_by(f64::total_cmp);
    stats::percentile(&values, 50.0)
}

fn check_correctness(report: &Report) -> anyhow::Result<()> {
    let mut problems = Vec::new();
    for run in report
        .lateness
        .iter()
        .chain(report.herd.iter().map(|herd| &herd.run))
    {
        let l = &run.lateness;
        if l.early + l.missing + l.duplicates + l.unexpected > 0 {
            problems.push(format!(
                "lateness ({}): {} early, {} missing, {} duplicates, {} unexpected",
                run.label, l.early, l.missing, l.duplicates, l.unexpected
            ));
        }
    }
    for run in report
        .backlog
        .iter()
        .filter(|run| !run.accounting.is_clean())
    {
        problems.push(format!("backlog: {:?}", run.accounting));
    }
    for run in report
        .ceiling
        .iter()
        .filter(|run| !run.accounting.is_clean())
    {
        problems.push(format!("ceiling (broker only): {:?}", run.accounting));
    }
    for call in report.api.iter().flat_map(|run| &run.calls) {
        if call.failed > 0 {
            problems.push(format!(
                "api: {} of {} {} calls failed",
                call.failed, call.calls, call.call
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        anyhow::bail!("delivery errors: {}", problems.join("; "))
    }
}
