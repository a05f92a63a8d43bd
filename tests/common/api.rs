//! The API served from this process on a free port.

use std::sync::Arc;
use std::time::Duration;

use notification_scheduler::api::ConsoleSettings;
use notification_scheduler::api::{self, ApiState, BearerToken, MessageSettings};
use notification_scheduler::games::Defaults;
use notification_scheduler::games::schedule::transitions::TransitionSettings;
use notification_scheduler::messages::allowed::AllowedRoutes;
use reqwest::{Client, RequestBuilder, Response};
use serde_json::Value;

use super::TestDb;

pub const TOKEN: &str = "test-token-0123456789abcdef";

/// The exchange messages that name none go to, as `api` defaults it.
pub const DEFAULT_EXCHANGE: &str = "game_scheduler";

/// The message settings `api` has by default.
pub fn message_settings() -> MessageSettings {
    MessageSettings {
        default_exchange: Arc::from(DEFAULT_EXCHANGE),
        allowed: Arc::new(AllowedRoutes::any_key_on(DEFAULT_EXCHANGE)),
        max_payload_bytes: 256 * 1024,
        horizon: chrono::Duration::days(366),
        lock_timeout: Duration::from_secs(2),
    }
}

pub struct TestApi {
    pub base: String,
    pub client: Client,
    server: tokio::task::JoinHandle<()>,
}

impl TestApi {
    /// Serves the API for `db`; with `token: None` it runs without authentication.
    pub async fn start(db: &TestDb, token: Option<&str>) -> Self {
        Self::start_with(db, token, message_settings()).await
    }

    /// As [`TestApi::start`], with these message settings.
    pub async fn start_with(db: &TestDb, token: Option<&str>, messages: MessageSettings) -> Self {
        Self::start_with_console(db, token, messages, ConsoleSettings::default()).await
    }

    /// As [`TestApi::start_with`], with these console settings.
    pub async fn start_with_console(
        db: &TestDb,
        token: Option<&str>,
        messages: MessageSettings,
        console: ConsoleSettings,
    ) -> Self {
        let url = db.database_url();
        let state = ApiState {
            pool: notification_scheduler::db::pool(&url, 4, Duration::from_secs(5)),
            database_url: url,
            defaults: Defaults {
                reminder_minutes: Arc::from([60, 15].as_slice()),
                transitions: TransitionSettings {
                    default_duration_minutes: 60,
                    archive_delay: None,
                },
            },
            messages,
            console,
        };
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let base = format!("http://{}", listener.local_addr().expect("address"));
        let router = api::router(state, token.map(BearerToken::new));
        let server = tokio::spawn(async move {
            axum::serve(listener, router).await.expect("serve");
        });
        Self {
            base,
            client: Client::builder()
                .timeout(Duration::from_secs(20))
                .build()
                .expect("client"),
            server,
        }
    }

    /// A request with the test token.
    pub fn request(&self, method: reqwest::Method, path: &str) -> RequestBuilder {
        self.client
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(TOKEN)
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Response {
        self.request(reqwest::Method::POST, path)
            .json(body)
            .send()
            .await
            .expect("response")
    }

    pub async fn patch_json(&self, path: &str, body: &Value) -> Response {
        self.request(reqwest::Method::PATCH, path)
            .json(body)
            .send()
            .await
            .expect("response")
    }

    pub async fn get(&self, path: &str) -> Response {
        self.request(reqwest::Method::GET, path)
            .send()
            .await
            .expect("response")
    }

    pub async fn delete(&self, path: &str) -> Response {
        self.request(reqwest::Method::DELETE, path)
            .send()
            .await
            .expect("response")
    }
}

impl Drop for TestApi {
    fn drop(&mut self) {
        self.server.abort();
    }
}

/// RFC 3339 of now plus `seconds`.
pub fn in_seconds(seconds: i64) -> String {
    (chrono::Utc::now() + chrono::Duration::seconds(seconds)).to_rfc3339()
}

/// Status and JSON body.
pub async fn json(response: Response) -> (u16, Value) {
    let status = response.status().as_u16();
    let body = response.json().await.unwrap_or(Value::Null);
    (status, body)
}
