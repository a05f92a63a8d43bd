//! The cost of the scheduled-message API: creates, moves and cancels per
//! second through the real `api` process, with the table beside the others.
//! Each call is a request of its own over keep-alive connections, `clients`
//! at a time, as an application's workers would send them.

use std::process::Stdio;
use std::time::{Duration, Instant};

use chrono::Utc;
use futures_util::stream::{self, StreamExt};
use serde::Serialize;
use serde_json::json;
use tokio::process::Command;

use crate::harness::BenchEnv;
use crate::stats::percentile;

/// One kind of call, measured.
#[derive(Debug, Clone, Serialize)]
pub struct CallRate {
    /// `create`, `move` or `cancel`.
    pub call: &'static str,
    pub calls: u64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    /// Calls answered otherwise than expected (must be 0).
    pub failed: u64,
}

/// Result of an API run.
#[derive(Debug, Clone, Serialize)]
pub struct ApiRun {
    pub clients: usize,
    pub calls: Vec<CallRate>,
}

const TOKEN: &str = "bench-token-0123456789abcdef0123456789";

/// Creates `count` messages through the API, moves each, then cancels each.
pub async fn api_calls(env: &BenchEnv, count: u64, clients: usize) -> anyhow::Result<ApiRun> {
    let port = crate::ports::free_port();
    let mut api = Command::new(&env.daemon_binary)
        .arg("api")
        .env("DATABASE_URL", env.url.raw())
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("API_TOKEN", TOKEN)
        .env("RABBITMQ_EXCHANGE", &env.exchange)
        .env("LOG_LEVEL", "warn")
        .env_remove("RUST_LOG")
        .stdout(Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(clients)
        .build()?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while http.get(format!("{base}/readyz")).send().await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the API did not start within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let tomorrow = (Utc::now() + chrono::Duration::days(1)).to_rfc3339();
    let later = (Utc::now() + chrono::Duration::days(2)).to_rfc3339();
    let mut ids = Vec::with_capacity(count as usize);
    let create = measure("create", count, clients, |n| {
        let request = http
            .post(format!("{base}/messages"))
            .bearer_auth(TOKEN)
            .json(&json!({
                "key": format!("bench-{n}"),
                "routing_key": format!("bench.api.{:03}", n % 1_000),
                "payload": {"n": n, "kind": "bench"},
                "deliver_at": tomorrow,
            }));
        async move {
            let response = request.send().await.ok()?;
            (response.status() == 201).then_some(())?;
            let body: serde_json::Value = response.json().await.ok()?;
            body["id"].as_str().map(str::to_owned)
        }
    })
    .await;
    ids.extend(create.1);
    let moved = measure("move", ids.len() as u64, clients, |n| {
        let request = http
            .patch(format!("{base}/messages/{}", ids[n as usize]))
            .bearer_auth(TOKEN)
            .json(&json!({ "deliver_at": later }));
        async move { (request.send().await.ok()?.status() == 200).then_some(String::new()) }
    })
    .await;
    let cancelled = measure("cancel", ids.len() as u64, clients, |n| {
        let request = http
            .delete(format!("{base}/messages/{}", ids[n as usize]))
            .bearer_auth(TOKEN);
        async move { (request.send().await.ok()?.status() == 204).then_some(String::new()) }
    })
    .await;
    api.kill().await?;
    Ok(ApiRun {
        clients,
        calls: vec![create.0, moved.0, cancelled.0],
    })
}

/// Runs `call(n)` for n in 0..count, `clients` at a time; returns the rate
/// and the values of the calls that succeeded.
async fn measure<F, Fut>(
    name: &'static str,
    count: u64,
    clients: usize,
    call: F,
) -> (CallRate, Vec<String>)
where
    F: Fn(u64) -> Fut,
    Fut: Future<Output = Option<String>>,
{
    let started = Instant::now();
    let results: Vec<(f64, Option<String>)> = stream::iter(0..count)
        .map(|n| {
            let call = call(n);
            async move {
                let sent = Instant::now();
                let result = call.await;
                (sent.elapsed().as_secs_f64() * 1_000.0, result)
            }
        })
        .buffer_unordered(clients)
        .collect()
        .await;
    let elapsed = started.elapsed().as_secs_f64();
    let mut latencies: Vec<f64> = results.iter().map(|(ms, _)| *ms).collect();
    latencies.sort_by(f64::total_cmp);
    let values: Vec<String> = results.into_iter().filter_map(|(_, value)| value).collect();
    let rate = CallRate {
        call: name,
        calls: count,
        per_second: count as f64 / elapsed,
        p50_ms: percentile(&latencies, 50.0),
        p99_ms: percentile(&latencies, 99.0),
        failed: count - values.len() as u64,
    };
    (rate, values)
}
