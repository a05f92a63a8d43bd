//! The benchmark harness keeps working: its quick mode runs every scenario
//! against the real daemon process and fails on any early, missing or
//! duplicated message. Timings are not asserted.

use std::process::Command;

/// Runs the benchmark binary with `args` against the test servers; returns
/// its JSON report once it has succeeded.
fn run_bench(args: &[&str]) -> serde_json::Value {
    let output_dir = std::env::temp_dir().join(format!("bench-{}", uuid::Uuid::new_v4().simple()));
    let report_path = output_dir.join("bench.json");
    let database = std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgresql://postgres:postgres@127.0.0.1:5432/postgres".to_owned());
    let broker = std::env::var("TEST_RABBITMQ_URL")
        .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned());
    let output = Command::new(env!("CARGO_BIN_EXE_notification-scheduler-bench"))
        .args(["--log-level", "warn", "--quick", "--output"])
        .arg(&report_path)
        .args(args)
        .env("DATABASE_URL", database)
        .env("RABBITMQ_URL", broker)
        .output()
        .expect("the benchmark runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "stdout:\n{stdout}\nstderr:\n{stderr}"
    );
    let report = serde_json::from_slice(&std::fs::read(&report_path).expect("report written"))
        .expect("JSON report");
    let _ = std::fs::remove_dir_all(&output_dir);
    report
}

#[test]
fn the_quick_benchmark_completes_with_every_message_delivered_once_and_never_early() {
    let report = run_bench(&[]);
    let lateness = report["lateness"].as_array().expect("lateness runs");
    assert_eq!(lateness.len(), 3, "empty table, pending rows, sent rows");
    for run in lateness {
        let stats = &run["lateness"];
        assert_eq!(stats["expected"], stats["received"], "{run}");
        for field in ["early", "missing", "duplicates", "unexpected"] {
            assert_eq!(stats[field], 0, "{field} in {run}");
        }
    }
    for run in report["backlog"].as_array().expect("backlog runs") {
        assert_eq!(run["accounting"]["missing"], 0, "{run}");
        assert_eq!(run["accounting"]["duplicates"], 0, "{run}");
        for cost in ["daemon_cpu_us", "database_cpu_us", "transactions"] {
            assert!(
                run["cost"][cost]
                    .as_f64()
                    .is_some_and(|per_message| per_message > 0.0),
                "{cost} per message in {run}"
            );
        }
    }
    assert!(report["backlog_to_ceiling"].as_f64().is_some());
    assert!(
        report["floors"]
            .as_array()
            .is_some_and(|floors| !floors.is_empty())
    );
}

#[test]
fn a_backlog_of_scheduled_messages_drains_beside_future_ones() {
    let report = run_bench(&["--scenarios", "backlog", "--scheduled-messages", "1000"]);
    assert_eq!(report["measured"], serde_json::json!(["scheduled_message"]));
    let backlog = report["backlog"].as_array().expect("backlog runs");
    assert_eq!(backlog.len(), 1, "{report}");
    let run = &backlog[0];
    for field in ["missing", "duplicates", "unexpected"] {
        assert_eq!(run["accounting"][field], 0, "{field} in {run}");
    }
    let beside = run["beside"].as_array().expect("rows beside");
    let messages = beside
        .iter()
        .find(|table| table["kind"] == "scheduled_message")
        .expect("scheduled messages beside");
    assert_eq!(messages["future_pending"], 1000, "{run}");
    let ceiling = &report["ceiling"][0]["accounting"];
    assert_eq!(ceiling["missing"], 0, "{ceiling}");
}

#[test]
fn the_api_scenario_creates_moves_and_cancels_every_message() {
    let report = run_bench(&["--scenarios", "api"]);
    let calls = report["api"][0]["calls"].as_array().expect("api calls");
    let names: Vec<&str> = calls.iter().map(|c| c["call"].as_str().unwrap()).collect();
    assert_eq!(names, ["create", "move", "cancel"]);
    for call in calls {
        assert_eq!(call["calls"], 500, "{call}");
        assert_eq!(call["failed"], 0, "{call}");
    }
}

#[test]
fn the_idle_scenario_measures_each_size_of_the_schedule() {
    let report = run_bench(&["--scenarios", "idle"]);
    let idle = report["idle"].as_array().expect("idle runs");
    let sizes: Vec<i64> = idle
        .iter()
        .map(|run| run["pending_rows"].as_i64().expect("pending rows"))
        .collect();
    assert_eq!(sizes, [0, 20_000], "{report}");
    for run in idle {
        assert!(run["window_s"].as_f64().is_some_and(|s| s >= 2.0), "{run}");
        for field in [
            "transactions_per_minute",
            "table_tuples_read_per_minute",
            "tuples_read_per_minute",
        ] {
            assert!(
                run[field].as_f64().is_some_and(|n| n >= 0.0),
                "{field} in {run}"
            );
        }
    }
}

#[test]
fn a_herd_due_at_one_instant_is_delivered_once_and_never_early() {
    let report = run_bench(&["--scenarios", "herd"]);
    let herd = &report["herd"][0];
    let lateness = &herd["run"]["lateness"];
    assert_eq!(lateness["expected"], 2_000, "{herd}");
    for field in ["early", "missing", "duplicates", "unexpected"] {
        assert_eq!(lateness[field], 0, "{field} in {herd}");
    }
    assert!(
        lateness["min_ms"].as_f64().is_some_and(|ms| ms >= 0.0),
        "{herd}"
    );
    assert_eq!(herd["ceiling"]["accounting"]["missing"], 0, "{herd}");
}
