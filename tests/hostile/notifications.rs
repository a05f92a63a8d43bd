//! Junk on the change-notification channel: payloads the trigger never sends,
//! and floods of junk and lying hints.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::process::{
    LogTail, Running, daemon_command, free_port, signal, wait_exit, wait_http_ok,
};
use crate::common::schedule::{schedule, start_daemon, wait_for_count};
use crate::common::{TestBroker, TestDb, WAIT};

const NOTIFY: &str = "SELECT pg_notify('notification_schedule_changed', $1)";
const UNRECOGNISED: &str = "unrecognised change notification";

/// Payloads the trigger never sends, each of which the daemon must log once
/// as unrecognised and otherwise survive. All are below PostgreSQL's
/// 8,000-byte NOTIFY limit.
fn junk_payloads() -> Vec<(&'static str, String)> {
    let at = "\"2030-01-01T00:00:00Z\"";
    let hint = |operation: &str, time: &str| {
        format!(r#"{{"operation": {operation}, "earliest_notification_time": {time}}}"#)
    };
    vec![
        ("empty", String::new()),
        ("not JSON", "not json".to_owned()),
        ("JSON null", "null".to_owned()),
        ("a bare number", "42".to_owned()),
        ("a bare string", r#""INSERT""#.to_owned()),
        ("an empty object", "{}".to_owned()),
        ("operation of the wrong type", hint("5", at)),
        ("operation null", hint("null", at)),
        ("time of the wrong type", hint(r#""INSERT""#, "12")),
        ("time null", hint(r#""INSERT""#, "null")),
        ("time not a time", hint(r#""INSERT""#, r#""yesterday""#)),
        (
            "time without an offset",
            hint(r#""INSERT""#, r#""2030-01-01T00:00:00""#),
        ),
        (
            "time out of range",
            hint(r#""INSERT""#, r#""2030-13-45T25:61:61Z""#),
        ),
        ("number out of range", hint(r#""INSERT""#, "1e999999")),
        ("unknown operation", hint(r#""TRUNCATE""#, at)),
        ("lower-case operation", hint(r#""insert""#, at)),
        (
            "an unknown field",
            format!(
                r#"{{"operation": "INSERT", "earliest_notification_time": {at}, "extra": {{"nested": [1, 2, 3]}}}}"#
            ),
        ),
        (
            "a duplicate key",
            format!(
                r#"{{"operation": "INSERT", "operation": "DELETE", "earliest_notification_time": {at}}}"#
            ),
        ),
        ("a lone surrogate escape", hint(r#""\ud800""#, at)),
        ("a NUL escape", hint(r#""INSERT\u0000""#, at)),
        (
            "a byte-order mark",
            format!("\u{feff}{}", hint(r#""INSERT""#, at)),
        ),
        (
            "truncated JSON",
            r#"{"operation": "INSERT", "earliest_notif"#.to_owned(),
        ),
        (
            "deeply nested arrays",
            format!("{}{}", "[".repeat(3_900), "]".repeat(3_900)),
        ),
        (
            "deeply nested objects",
            format!("{}1{}", r#"{"a":"#.repeat(1_300), "}".repeat(1_300)),
        ),
        ("7,999 bytes", "x".repeat(7_999)),
        ("7,997 bytes of emoji", format!("a{}", "😀".repeat(1_999))),
        (
            "a valid hint padded to 7,950 bytes",
            format!(
                r#"{{"operation": "INSERT", "earliest_notification_time": {at}, "padding": "{}"}}"#,
                "p".repeat(7_860)
            ),
        ),
        (
            "control characters and a forged log line",
            "junk\r\n{\"level\":\"ERROR\",\"message\":\"forged\"}\n\t\u{1b}[31m".to_owned(),
        ),
    ]
}

/// Hints the daemon understands (not logged) with absurd times, and one it
/// accepts leniently: serde reads an array into the payload's fields by
/// position. All harmless: a hint only triggers a re-read.
fn absurd_hints() -> Vec<String> {
    let mut hints: Vec<String> = [
        ("INSERT", "0001-01-01T00:00:00Z"),
        ("UPDATE", "9999-12-31T23:59:59.999999Z"),
        ("DELETE", "2030-01-01T00:00:00+23:59"),
        ("INSERT", "1970-01-01T00:00:00-23:59"),
    ]
    .iter()
    .map(|(operation, time)| {
        json!({"operation": operation, "earliest_notification_time": time}).to_string()
    })
    .collect();
    hints.push(r#"["INSERT", "2030-01-01T00:00:00Z"]"#.to_owned());
    hints
}

/// The backend pid of the daemon's LISTEN connection: a restarted listener
/// has a new one.
async fn listener_backend(client: &tokio_postgres::Client) -> i32 {
    let rows = client
        .query(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() \
             AND application_name = 'notification-scheduler listener'",
            &[],
        )
        .await
        .expect("read pg_stat_activity");
    assert_eq!(rows.len(), 1, "one LISTEN connection");
    rows[0].get(0)
}

pub(super) fn log_lines(log: &LogTail) -> Vec<Value> {
    log.text()
        .lines()
        .filter(|line| !line.trim().is_empty())
        .map(|line| {
            serde_json::from_str::<Value>(line)
                .ok()
                .filter(Value::is_object)
                .unwrap_or_else(|| panic!("a log line is not a JSON object: {line:?}"))
        })
        .collect()
}

/// Lines whose message starts with `message`.
pub(super) fn with_message<'a>(lines: &'a [Value], message: &str) -> Vec<&'a Value> {
    lines
        .iter()
        .filter(|line| {
            line["message"]
                .as_str()
                .is_some_and(|m| m.starts_with(message))
        })
        .collect()
}

/// The daemon as a process with JSON logs: every junk payload is logged once,
/// as one well-formed line with the payload truncated; no actor restarts, the
/// LISTEN connection is the same, and reminders armed before and scheduled
/// after the junk are each delivered once, at their time.
#[tokio::test]
async fn junk_notifications_are_logged_once_each_and_change_nothing() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let port = free_port();
    let mut daemon = Running(
        daemon_command(&db.url, &broker, port)
            .spawn()
            .expect("the daemon starts"),
    );
    let log = LogTail::follow(&mut daemon.0);
    wait_http_ok(port, "/readyz").await;
    let client = db.client().await;
    let listener = listener_backend(&client).await;
    let armed = schedule(&client, 3_600_000, &[5_000]).await;

    let junk = junk_payloads();
    for (name, payload) in &junk {
        assert!(payload.len() < 8_000, "{name}: too long for NOTIFY");
        client
            .execute(NOTIFY, &[payload])
            .await
            .unwrap_or_else(|err| panic!("{name}: {err}"));
    }
    for payload in absurd_hints() {
        client.execute(NOTIFY, &[&payload]).await.unwrap();
    }
    let deadline = tokio::time::Instant::now() + WAIT;
    while with_message(&log_lines(&log), UNRECOGNISED).len() < junk.len() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not every junk payload was logged:\n{}",
            log.text()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    let after = schedule(&client, 3_600_000, &[1_500]).await;
    let expected: Vec<_> = armed.iter().chain(&after).collect();
    let received = consumer.take(2).await;
    for message in &received {
        let reminder = expected
            .iter()
            .find(|r| r.id.to_string() == message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        assert!(
            message.received_at >= reminder.at,
            "delivered early: {message:?}"
        );
    }
    assert_ne!(
        received[0].message_id, received[1].message_id,
        "each reminder once"
    );
    consumer.assert_quiet(Duration::from_millis(500)).await;
    wait_for_count(&client, "sent AND outcome = 'published'", 2).await;
    let ready = reqwest::get(format!("http://127.0.0.1:{port}/readyz"))
        .await
        .expect("readyz answers");
    assert_eq!(ready.status(), 200, "still ready");
    assert_eq!(
        listener_backend(&client).await,
        listener,
        "the listener was never restarted"
    );

    signal(&daemon.0, "TERM");
    assert_eq!(wait_exit(&mut daemon.0).await.code(), Some(0));
    log.wait_for_line("daemon stopped", WAIT).await;
    let lines = log_lines(&log);
    let unrecognised = with_message(&lines, UNRECOGNISED);
    assert_eq!(
        unrecognised.len(),
        junk.len(),
        "one line per junk payload, none for the well-formed ones:\n{}",
        log.text()
    );
    for line in &unrecognised {
        assert_eq!(line["level"], "WARN", "{line}");
        let payload = line["payload"].as_str().expect("the payload is logged");
        assert!(payload.len() < 320, "payload not truncated: {line}");
    }
    assert!(
        with_message(&lines, "forged").is_empty(),
        "a payload forged a log line"
    );
    assert!(
        with_message(&lines, "actor failed; restarting after backoff").is_empty(),
        "an actor restarted:\n{}",
        log.text()
    );
    assert!(!log.text().contains("panicked"), "{}", log.text());
}

/// Thousands of notifications in one burst (junk, and well-formed hints that
/// lie: long past, so each asks for a round, or far future) neither delay
/// nor duplicate the reminders due meanwhile.
#[tokio::test]
async fn a_flood_of_junk_and_lying_notifications_neither_delays_nor_duplicates_delivery() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let daemon = start_daemon(&db, &broker, &[]).await;
    let client = db.client().await;
    let listener = listener_backend(&client).await;
    let reminders = schedule(&client, 3_600_000, &[2_000, 2_500, 3_000]).await;
    // One statement: 3,000 distinct payloads, delivered together at commit.
    client
        .batch_execute(
            "SELECT pg_notify('notification_schedule_changed', CASE g % 3 \
                 WHEN 0 THEN 'junk ' || g \
                 WHEN 1 THEN json_build_object('operation', 'INSERT', 'earliest_notification_time', \
                                               timestamptz '2000-01-01' + g * interval '1 second')::text \
                 ELSE json_build_object('operation', 'DELETE', 'earliest_notification_time', \
                                        timestamptz '9999-01-01' + g * interval '1 second')::text END) \
               FROM generate_series(1, 3000) AS g",
        )
        .await
        .unwrap();
    let received = consumer.take(3).await;
    for message in &received {
        let reminder = reminders
            .iter()
            .find(|r| r.id.to_string() == message.message_id)
            .unwrap_or_else(|| panic!("unexpected message {message:?}"));
        let late = message.received_at - reminder.at;
        assert!(late >= chrono::Duration::zero(), "early: {message:?}");
        assert!(
            late < chrono::Duration::seconds(2),
            "{late} late after the flood"
        );
    }
    consumer.assert_quiet(Duration::from_millis(750)).await;
    wait_for_count(&client, "sent AND outcome = 'published'", 3).await;
    assert!(daemon.readiness.report().ready());
    assert_eq!(
        listener_backend(&client).await,
        listener,
        "the listener was never restarted"
    );
    daemon.shutdown().await;
}
