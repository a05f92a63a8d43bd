//! The binary run as separate processes, as an operator runs it.

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::Duration;

use super::{TestBroker, TestDb, WAIT};

pub const BINARY: &str = env!("CARGO_BIN_EXE_notification-scheduler");

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .expect("a free port")
        .port()
}

/// `notification-scheduler daemon` for the test database and exchange.
pub fn spawn_daemon(db: &TestDb, broker: &TestBroker, health_port: u16, extra: &[&str]) -> Child {
    Command::new(BINARY)
        .arg("daemon")
        .args(extra)
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("RABBITMQ_URL", &broker.url)
        .env("RABBITMQ_EXCHANGE", &broker.exchange)
        .env("HEALTH_ADDR", format!("127.0.0.1:{health_port}"))
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the daemon starts")
}

/// `notification-scheduler api` for the test database, with `token`.
pub fn spawn_api(db: &TestDb, port: u16, token: &str) -> Child {
    Command::new(BINARY)
        .arg("api")
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .env("API_ADDR", format!("127.0.0.1:{port}"))
        .env("API_TOKEN", token)
        .env("LOG_FORMAT", "json")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the API starts")
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
