//! The binary run as separate processes, as an operator runs it.

use std::io::BufRead;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub use super::ports::free_port;
use super::{TestBroker, TestDb, WAIT};

pub const BINARY: &str = env!("CARGO_BIN_EXE_notification-scheduler");

/// `notification-scheduler daemon` for the test database and exchange.
pub fn spawn_daemon(db: &TestDb, broker: &TestBroker, health_port: u16, extra: &[&str]) -> Child {
    spawn_daemon_at(&db.url, broker, health_port, extra)
}

/// `notification-scheduler daemon` for the database at `database_url` (a
/// proxy, a private server) and the test exchange.
pub fn spawn_daemon_at(
    database_url: &str,
    broker: &TestBroker,
    health_port: u16,
    extra: &[&str],
) -> Child {
    daemon_command(database_url, broker, health_port)
        .args(extra)
        .spawn()
        .expect("the daemon starts")
}

/// The daemon's command with a clean environment, its stderr piped; add
/// flags and variables, then spawn.
pub fn daemon_command(database_url: &str, broker: &TestBroker, health_port: u16) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("daemon")
        .env_clear()
        .env("DATABASE_URL", database_url)
        .env("RABBITMQ_URL", &broker.url)
        .env("RABBITMQ_EXCHANGE", &broker.exchange)
        .env("HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

/// `notification-scheduler api` for the test database, with `token`.
pub fn spawn_api(db: &TestDb, port: u16, token: &str) -> Child {
    api_command(db, port, token)
        .spawn()
        .expect("the API starts")
}

/// The API's command with a clean environment, its stderr piped.
pub fn api_command(db: &TestDb, port: u16, token: &str) -> Command {
    let mut command = Command::new(BINARY);
    command
        .arg("api")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("API_TOKEN", token)
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    command
}

pub fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([format!("-{name}"), child.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success());
}

pub async fn wait_exit(child: &mut Child) -> ExitStatus {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return status;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the process did not exit"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until the process exits with code 0; fails showing `log` if not.
pub async fn exits_cleanly(daemon: &mut Running, log: &LogTail) {
    assert_eq!(
        wait_exit(&mut daemon.0).await.code(),
        Some(0),
        "{}",
        log.text()
    );
}

/// SIGTERM, then a clean exit (code 0) within [`WAIT`]; the log if not.
pub async fn terminate(daemon: &mut Running, log: &LogTail) {
    signal(&daemon.0, "TERM");
    exits_cleanly(daemon, log).await;
}

/// A daemon process (see [`spawn_daemon_at`]) with its log followed.
pub fn spawn_followed(
    database_url: &str,
    broker: &TestBroker,
    health_port: u16,
    extra: &[&str],
) -> (Running, LogTail) {
    let mut daemon = Running(spawn_daemon_at(database_url, broker, health_port, extra));
    let log = LogTail::follow(&mut daemon.0);
    (daemon, log)
}

/// Waits until `GET http://127.0.0.1:{port}{path}` answers 200.
pub async fn wait_http_ok(port: u16, path: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        if reqwest::get(format!("http://127.0.0.1:{port}{path}"))
            .await
            .is_ok_and(|response| response.status() == 200)
        {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no 200 from {path} on port {port}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn stderr_of(child: &mut Child) -> String {
    use std::io::Read;
    let mut text = String::new();
    if let Some(mut stderr) = child.stderr.take() {
        let _ = stderr.read_to_string(&mut text);
    }
    text
}

/// Kills the process when dropped, so a failing test leaves nothing running.
pub struct Running(pub Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A child's stderr, read line by line on a thread as it is written (so the
/// pipe never fills and blocks the child), for waiting on a log line and for
/// showing the log when a test fails.
pub struct LogTail {
    lines: Arc<Mutex<Vec<String>>>,
}

impl LogTail {
    /// Takes over the child's piped stderr.
    pub fn follow(child: &mut Child) -> Self {
        let stderr = child.stderr.take().expect("stderr is piped");
        let lines = Arc::new(Mutex::new(Vec::new()));
        std::thread::spawn({
            let lines = Arc::clone(&lines);
            move || {
                for line in std::io::BufReader::new(stderr).lines() {
                    let Ok(line) = line else { return };
                    lines.lock().unwrap().push(line);
                }
            }
        });
        Self { lines }
    }

    /// Everything written so far.
    pub fn text(&self) -> String {
        self.lines.lock().unwrap().join("\n")
    }

    /// Whether any line so far contains `needle`.
    pub fn contains(&self, needle: &str) -> bool {
        self.lines
            .lock()
            .unwrap()
            .iter()
            .any(|line| line.contains(needle))
    }

    /// Waits until a line contains `needle`; fails with the log after `limit`.
    pub async fn wait_for_line(&self, needle: &str, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while !self.contains(needle) {
            assert!(
                tokio::time::Instant::now() < deadline,
                "no log line with {needle:?} within {limit:?}; the log:\n{}",
                self.text()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}
