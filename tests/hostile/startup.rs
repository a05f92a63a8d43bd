//! Unusable settings and unreachable servers at start: exit codes, messages
//! that name the problem, and passwords never printed.

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use super::notifications::{log_lines, with_message};

use crate::common::api::TOKEN;
use crate::common::process::{
    BINARY, LogTail, Running, daemon_command, free_port, signal, wait_exit,
};
use crate::common::{TestBroker, TestDb, WAIT};

const PASSWORD: &str = "s3cr3t-pw-xyz";

/// How a run of the binary ended.
struct Finished {
    code: Option<i32>,
    stdout: String,
    stderr: String,
    took: Duration,
}

impl Finished {
    /// No panic, no password, in either stream.
    #[track_caller]
    fn assert_clean(&self, secrets: &[&str]) {
        for text in [&self.stdout, &self.stderr] {
            assert!(!text.contains("panicked"), "{text}");
            for secret in secrets {
                assert!(!text.contains(secret), "{secret:?} printed: {text}");
            }
        }
    }

    /// Exit status 2 and one line naming the setting.
    #[track_caller]
    fn assert_config_error(&self, setting: &str) {
        assert_eq!(self.code, Some(2), "{}", self.stderr);
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "one line: {}",
            self.stderr
        );
        assert!(self.stderr.contains(setting), "{setting}: {}", self.stderr);
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<String> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

/// Runs the binary with a clean environment plus `env`; fails if it is still
/// running after `limit`.
fn run_bounded(args: &[&str], env: &[(&str, &str)], limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = Command::new(BINARY)
        .args(args)
        .env_clear()
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the binary starts");
    let stdout = drain(child.stdout.take().expect("piped"));
    let stderr = drain(child.stderr.take().expect("piped"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait") {
            break status;
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "`{}` still running after {limit:?}; stderr:\n{}",
                args.join(" "),
                stderr.join().unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    Finished {
        code: status.code(),
        took: started.elapsed(),
        stdout: stdout.join().unwrap_or_default(),
        stderr: stderr.join().unwrap_or_default(),
    }
}

/// A port that accepts connections (the kernel completes the handshake) and
/// never answers: a hung server.
fn silent_server() -> (std::net::TcpListener, u16) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let port = listener.local_addr().expect("address").port();
    (listener, port)
}

/// `migrate` and `api` facing a database they cannot use (a closed port, a
/// server that never answers, a name that does not resolve): exit 1 within a
/// bounded time, one line naming host and port, no panic, no password.
#[test]
fn migrate_and_api_exit_1_naming_a_database_they_cannot_reach() {
    let (_silent, silent_port) = silent_server();
    let targets = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{silent_port}"),
        "no-such-host.invalid:5432".to_owned(),
    ];
    for target in &targets {
        let url = format!("postgresql://app:{PASSWORD}@{target}/app");
        for args in [&["migrate"][..], &["api"][..]] {
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("DATABASE_CONNECT_TIMEOUT", "1s"),
                ("API_TOKEN", TOKEN),
                ("API_ADDR", "127.0.0.1:0"),
            ];
            let finished = run_bounded(args, &env, Duration::from_secs(15));
            let what = format!("{args:?} against {target}");
            assert_eq!(finished.code, Some(1), "{what}: {}", finished.stderr);
            assert!(
                finished.took < Duration::from_secs(10),
                "{what} took {:?}",
                finished.took
            );
            let lines: Vec<&str> = finished.stderr.trim_end().lines().collect();
            assert_eq!(lines.len(), 1, "{what}: one line: {}", finished.stderr);
            assert!(
                lines[0].contains("ERROR")
                    && lines[0].contains(&format!("cannot reach PostgreSQL at {target}")),
                "{what}: {}",
                lines[0]
            );
            finished.assert_clean(&[PASSWORD]);
        }
    }
}

/// The daemon, by design, waits for PostgreSQL at start (containers start in
/// any order): it says so once, naming host and port, keeps retrying without
/// repeating itself, serves no health endpoint meanwhile, and stops at once
/// on SIGTERM with status 0. No password is printed.
#[tokio::test]
async fn the_daemon_waits_for_an_unreachable_database_saying_so_once() {
    let broker = TestBroker::new().await;
    let (_silent, silent_port) = silent_server();
    let mut daemons = Vec::new();
    for port in [free_port(), silent_port] {
        let url = format!("postgresql://app:{PASSWORD}@127.0.0.1:{port}/app");
        let health = free_port();
        let mut child = Running(
            daemon_command(&url, &broker, health)
                .env("DATABASE_CONNECT_TIMEOUT", "1s")
                .env("RESTART_BACKOFF_MAX", "200ms")
                .spawn()
                .expect("the daemon starts"),
        );
        let log = LogTail::follow(&mut child.0);
        daemons.push((child, log, port, health));
    }
    for (_, log, port, _) in &daemons {
        log.wait_for_line(&format!("127.0.0.1:{port}"), WAIT).await;
    }
    // Several retries: at most 200 ms apart, plus 1 s per attempt on the
    // silent server.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (child, log, port, health) in &mut daemons {
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "still waiting: {}",
            log.text()
        );
        assert!(
            reqwest::get(format!("http://127.0.0.1:{health}/healthz"))
                .await
                .is_err(),
            "no health endpoint while waiting"
        );
        let text = log.text();
        let waiting: Vec<&str> = text
            .lines()
            .filter(|line| line.contains("waiting for PostgreSQL"))
            .collect();
        assert_eq!(waiting.len(), 1, "said once: {text}");
        assert!(
            waiting[0].contains(&format!("cannot reach PostgreSQL at 127.0.0.1:{port}")),
            "{}",
            waiting[0]
        );
        let stopping = Instant::now();
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0).await.code(), Some(0), "{text}");
        assert!(stopping.elapsed() < Duration::from_secs(5), "slow to stop");
        let text = log.text();
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// A broker that is closed, hung, or refuses the credentials: the daemon
/// keeps running (retrying, by design), /readyz answers 503 naming the
/// broker's host and port, the failure is logged once, and neither the log
/// nor /readyz shows the password.
#[tokio::test]
async fn the_daemon_reports_an_unusable_broker_without_its_password() {
    let db = TestDb::migrated().await;
    let broker = TestBroker::new().await;
    let (_silent, silent_port) = silent_server();
    let real = broker
        .url
        .split("://")
        .nth(1)
        .and_then(|rest| rest.rsplit_once('@'))
        .map_or("127.0.0.1:5672", |(_, host)| {
            host.split('/').next().unwrap_or(host)
        })
        .to_owned();
    let targets = [
        format!("127.0.0.1:{}", free_port()),
        format!("127.0.0.1:{silent_port}"),
        real,
    ];
    let mut daemons = Vec::new();
    for target in &targets {
        let dead = broker.via(format!("amqp://guest:{PASSWORD}@{target}/%2f"));
        let health = free_port();
        let mut child = Running(
            daemon_command(&db.url, &dead, health)
                .env("RABBITMQ_CONNECT_TIMEOUT", "1s")
                .env("RESTART_BACKOFF_MAX", "200ms")
                .spawn()
                .expect("the daemon starts"),
        );
        let log = LogTail::follow(&mut child.0);
        daemons.push((child, log, target, health));
    }
    for (_, log, target, health) in &daemons {
        let deadline = tokio::time::Instant::now() + WAIT;
        let detail = loop {
            if let Ok(response) = reqwest::get(format!("http://127.0.0.1:{health}/readyz")).await
                && response.status() == 503
                && let Ok(body) = response.json::<Value>().await
                && let Some(detail) = body["broker"]["detail"].as_str()
                && detail.contains("RabbitMQ")
            {
                break detail.to_owned();
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "no broker detail for {target}: {}",
                log.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        assert!(detail.contains(target.as_str()), "{target}: {detail}");
        assert!(!detail.contains(PASSWORD), "{detail}");
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    for (child, log, target, _) in &mut daemons {
        assert!(
            child.0.try_wait().expect("wait").is_none(),
            "{target}: still running: {}",
            log.text()
        );
        let lines = log_lines(log);
        let failures = with_message(&lines, "actor failed; restarting after backoff")
            .into_iter()
            .filter(|line| line["actor"] == "publisher")
            .count();
        assert_eq!(failures, 1, "{target}: logged once: {}", log.text());
        signal(&child.0, "TERM");
        assert_eq!(wait_exit(&mut child.0).await.code(), Some(0));
        let text = log.text();
        assert!(!text.contains(PASSWORD), "{text}");
        assert!(!text.contains("panicked"), "{text}");
    }
}

/// `watch` facing a closed or hung broker: exit 1 within a bounded time,
/// naming host and port, without the password.
#[test]
fn watch_exits_1_naming_a_broker_it_cannot_reach() {
    let (_silent, silent_port) = silent_server();
    for (port, limit) in [
        (free_port(), Duration::from_secs(10)),
        (silent_port, Duration::from_secs(20)),
    ] {
        let url = format!("amqp://guest:{PASSWORD}@127.0.0.1:{port}/%2f");
        let finished = run_bounded(&["watch"], &[("RABBITMQ_URL", &url)], limit);
        assert_eq!(finished.code, Some(1), "{}", finished.stderr);
        assert!(
            finished
                .stderr
                .contains(&format!("cannot reach RabbitMQ at 127.0.0.1:{port}")),
            "{}",
            finished.stderr
        );
        finished.assert_clean(&[PASSWORD]);
    }
}

/// Invalid values of each URL-bearing setting, for each command that takes
/// it: exit 2 with one line naming the setting, the password masked.
#[test]
fn invalid_urls_are_configuration_errors_that_mask_the_password() {
    let pw = PASSWORD;
    let database_urls = [
        format!("postgresql+asyncpg://app:{pw}@db:5432/app"),
        format!("mysql://app:{pw}@db/app"),
        format!("http://app:{pw}@db/app"),
        format!("postgresql://app:{pw}@db:99999/app"),
        format!("postgresql://app:{pw}@db:port/app"),
        format!("postgresql://app:{pw}@/app"),
        format!("postgresql://app:{pw}@db:5432/app?sslmode=bogus"),
        format!("postgres://app:{pw}@[::1/app"),
        "postgresql://".to_owned(),
        "not a url".to_owned(),
    ];
    let broker_urls = [
        format!("http://guest:{pw}@rabbit/"),
        format!("amqp://guest:{pw}@rabbit:notaport/"),
        format!("amqp://guest:{pw}@:5672/"),
        format!("amqp://guest:{pw}@rabbit:99999/"),
        format!("amqp://guest:{pw}@rabbit:5672/%2f?heartbeat=abc"),
        format!("amqps://guest:{pw}@rabbit:5671/%2f?frame_max=x"),
        "amqp://".to_owned(),
    ];
    let good_database = "postgresql://app@127.0.0.1:1/app";
    let good_broker = "amqp://guest:guest@127.0.0.1:1/%2f";
    let limit = Duration::from_secs(10);
    for url in &database_urls {
        for args in [&["migrate"][..], &["api"], &["daemon"]] {
            let env = [
                ("DATABASE_URL", url.as_str()),
                ("RABBITMQ_URL", good_broker),
                ("API_TOKEN", TOKEN),
            ];
            let finished = run_bounded(args, &env, limit);
            finished.assert_config_error("DATABASE_URL");
            finished.assert_clean(&[PASSWORD]);
        }
    }
    for url in &broker_urls {
        for args in [&["daemon"][..], &["watch"]] {
            let env = [
                ("DATABASE_URL", good_database),
                ("RABBITMQ_URL", url.as_str()),
            ];
            let finished = run_bounded(args, &env, limit);
            finished.assert_config_error("RABBITMQ_URL");
            finished.assert_clean(&[PASSWORD]);
        }
    }
}

/// A value that is not a URL at all (the scheme forgotten, one slash, the
/// key-value form with spaces around `=`) is quoted in the error: it must be
/// quoted without the password.
#[test]
fn a_setting_that_is_not_a_url_is_quoted_without_its_password() {
    let pw = PASSWORD;
    let cases = [
        ("DATABASE_URL", format!("app:{pw}@db:5432/app"), "migrate"),
        (
            "DATABASE_URL",
            format!("postgresql:/app:{pw}@db/app"),
            "migrate",
        ),
        (
            "DATABASE_URL",
            format!("host=db password = {pw}"),
            "migrate",
        ),
        ("RABBITMQ_URL", format!("guest:{pw}@rabbit:5672"), "watch"),
        (
            "RABBITMQ_URL",
            format!("amqp:/guest:{pw}@rabbit:5672"),
            "watch",
        ),
    ];
    for (setting, value, command) in &cases {
        let finished = run_bounded(
            &[command],
            &[(setting, value.as_str())],
            Duration::from_secs(10),
        );
        finished.assert_config_error(setting);
        finished.assert_clean(&[PASSWORD]);
    }
}

/// The user name and the part after `@` (host, port, database) of a test
/// database URL.
fn user_and_host(url: &str) -> (&str, &str) {
    let (user_part, host_part) = url.rsplit_once('@').expect("a user in the test URL");
    let user = user_part
        .split("://")
        .nth(1)
        .and_then(|userinfo| userinfo.split(':').next())
        .unwrap_or("postgres");
    (user, host_part)
}

/// A password containing `/` (common in generated passwords; URLs require it
/// percent-encoded, operators often do not) must never be printed: not in a
/// configuration error, not in the start-up log line that shows the URL.
#[tokio::test]
async fn a_password_with_a_slash_is_never_printed() {
    let secrets = ["s3cr3t", "pw-xyz"];
    let db = TestDb::migrated().await;
    let (user, host_part) = user_and_host(&db.url);
    let working = format!("postgresql://{user}:s3cr3t/pw-xyz@{host_part}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &working)],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    finished.assert_clean(&secrets);
    let limit = Duration::from_secs(10);
    for (setting, value, command) in [
        (
            "DATABASE_URL",
            "postgresql://app:s3cr3t/pw-xyz@db:99999/app",
            "migrate",
        ),
        (
            "DATABASE_URL",
            "postgresql+asyncpg://app:s3cr3t/pw-xyz@db/app",
            "migrate",
        ),
        (
            "RABBITMQ_URL",
            "amqp://guest:s3cr3t/pw-xyz@127.0.0.1:1/%2f",
            "watch",
        ),
    ] {
        let finished = run_bounded(&[command], &[(setting, value)], limit);
        assert!(matches!(finished.code, Some(1 | 2)), "{}", finished.stderr);
        finished.assert_clean(&secrets);
    }
}

/// libpq-style URLs may carry the password as a query parameter; it must
/// never be printed either.
#[tokio::test]
async fn a_password_in_the_query_string_is_never_printed() {
    let db = TestDb::migrated().await;
    let (user, host_part) = user_and_host(&db.url);
    let working = format!("postgresql://{host_part}?user={user}&password={PASSWORD}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &working)],
        Duration::from_secs(20),
    );
    assert_eq!(finished.code, Some(0), "{}", finished.stderr);
    finished.assert_clean(&[PASSWORD]);
    let broken = format!("postgresql://db:99999/app?password={PASSWORD}");
    let finished = run_bounded(
        &["migrate"],
        &[("DATABASE_URL", &broken)],
        Duration::from_secs(10),
    );
    finished.assert_config_error("DATABASE_URL");
    finished.assert_clean(&[PASSWORD]);
}

/// The OTLP endpoint is URL-bearing too: an invalid one is a configuration
/// error that must not echo credentials in it.
#[test]
fn an_invalid_otlp_endpoint_is_refused_without_its_credentials() {
    for endpoint in [
        format!("http://collector:{PASSWORD}@[::1"),
        format!("collector:{PASSWORD}@otel:4318"),
    ] {
        let finished = run_bounded(
            &["migrate"],
            &[
                ("DATABASE_URL", "postgresql://app@127.0.0.1:1/app"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", &endpoint),
            ],
            Duration::from_secs(10),
        );
        finished.assert_config_error("OTEL_EXPORTER_OTLP_ENDPOINT");
        finished.assert_clean(&[PASSWORD]);
    }
}
