//! The whole system as deployed: the `api` and `daemon` processes, a real
//! database and a RabbitMQ consumer.

pub mod common;

use std::time::Duration;

use common::process::{Running, free_port, spawn_api, spawn_daemon, wait_http_ok};
use common::schedule::{count, count_games};
use common::{TestBroker, TestDb};
use serde_json::{Value, json};

const TOKEN: &str = "end-to-end-token-0123456789";

struct System {
    api: String,
    client: reqwest::Client,
    _processes: [Running; 2],
}

async fn start(db: &TestDb, broker: &TestBroker) -> System {
    let (api_port, health_port) = (free_port(), free_port());
    let api = Running(spawn_api(db, api_port, TOKEN));
    let daemon = Running(spawn_daemon(db, broker, health_port, &[]));
    wait_http_ok(api_port, "/readyz").await;
    wait_http_ok(health_port, "/readyz").await;
    System {
        api: format!("http://127.0.0.1:{api_port}"),
        client: reqwest::Client::new(),
        _processes: [api, daemon],
    }
}

impl System {
    async fn send(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = self
            .client
            .request(method, format!("{}{path}", self.api))
            .bearer_auth(TOKEN);
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("API answers");
        let status = response.status().as_u16();
        (status, response.json().await.unwrap_or(Value::Null))
    }
}

/// A start `seconds_to_reminder` seconds after one minute from now: its
/// 1-minute reminder falls that many seconds ahead.
fn start_for_reminder_in(seconds_to_reminder: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(60 + seconds_to_reminder)).to_rfc3339()
}

fn reminder_time(game: &Value) -> chrono::DateTime<chrono::Utc> {
    game["reminders"][0]["notification_time"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn scheduled_moved_and_deleted_games_fire_exactly_as_they_stand() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let system = start(&db, &broker).await;
    use reqwest::Method;

    let (status, kept) = system
        .send(Method::POST, "/games", Some(json!({"title": "kept", "scheduled_at": start_for_reminder_in(3), "reminder_minutes": [1]})))
        .await;
    assert_eq!(status, 201, "{kept}");
    let (_, moved) = system
        .send(Method::POST, "/games", Some(json!({"title": "moved", "scheduled_at": start_for_reminder_in(3), "reminder_minutes": [1]})))
        .await;
    let (_, deleted) = system
        .send(Method::POST, "/games", Some(json!({"title": "deleted", "scheduled_at": start_for_reminder_in(3), "reminder_minutes": [1]})))
        .await;
    let old_time = reminder_time(&moved);
    let (status, moved) = system
        .send(
            Method::PATCH,
            &format!("/games/{}", moved["id"].as_str().unwrap()),
            Some(json!({"scheduled_at": start_for_reminder_in(6)})),
        )
        .await;
    assert_eq!(status, 200, "{moved}");
    let new_time = reminder_time(&moved);
    assert!(new_time > old_time + chrono::Duration::seconds(2));
    let (status, _) = system
        .send(
            Method::DELETE,
            &format!("/games/{}", deleted["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(status, 204);
    let (status, rejected) = system
        .send(
            Method::POST,
            "/games",
            Some(json!({"title": "", "scheduled_at": start_for_reminder_in(3)})),
        )
        .await;
    assert_eq!(status, 422, "{rejected}");

    let first = consumer.take(1).await.remove(0);
    assert_eq!(
        first.message_id,
        kept["reminders"][0]["id"].as_str().unwrap()
    );
    assert!(first.received_at >= reminder_time(&kept));
    assert_eq!(first.body["event_type"], "game.reminder_due");
    assert_eq!(first.body["data"]["game_id"], kept["id"]);
    assert_eq!(first.body["data"]["reminder_minutes"], 1);
    assert!(first.expiration.is_some());

    let second = consumer.take(1).await.remove(0);
    assert_eq!(
        second.message_id,
        moved["reminders"][0]["id"].as_str().unwrap()
    );
    assert!(
        second.received_at >= new_time,
        "the moved game fired at its old time"
    );
    consumer.assert_quiet(Duration::from_secs(1)).await;

    let client = db.client().await;
    assert_eq!(
        count_games(&client).await,
        2,
        "the rejected request wrote nothing"
    );
    assert_eq!(count(&client, "sent").await, 2);
}
