//! The API under generated requests: one database and one in-process API per
//! property, the answers as received, and the checks shared by every property.

use std::fmt::Debug;

use chrono::{DateTime, Utc};
use notification_scheduler::api::MessageSettings;
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use reqwest::Method;
use serde_json::{Value, json};
use uuid::Uuid;

use super::api_oracle::{DEFAULT_MINUTES, Rfc3339, Verdict, rfc3339, typed_minutes};
use super::api_strategies::runner;

use crate::common::TestDb;
use crate::common::api::{TOKEN, TestApi, message_settings};

/// One database and one in-process API for a whole property.
pub(super) struct Harness {
    pub(super) api: TestApi,
    pub(super) client: tokio_postgres::Client,
    _db: TestDb,
    runtime: tokio::runtime::Runtime,
}

impl Harness {
    pub(super) fn start() -> Self {
        Self::start_with(message_settings())
    }

    /// As [`Harness::start`], with these message settings.
    pub(super) fn start_with(messages: MessageSettings) -> Self {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let (db, api, client) = runtime.block_on(async {
            let db = TestDb::migrated().await;
            let api = TestApi::start_with(&db, Some(TOKEN), messages).await;
            let client = db.client().await;
            (db, api, client)
        });
        Self {
            api,
            client,
            _db: db,
            runtime,
        }
    }

    /// Creates a game through the API; its id.
    pub(super) fn game(&self, title: &str, starts_in: i64) -> Uuid {
        self.runtime.block_on(async {
            let answer = send(self.api.request(Method::POST, "/games").json(&json!({
                "title": title,
                "scheduled_at": (Utc::now() + chrono::Duration::seconds(starts_in)).to_rfc3339(),
            })))
            .await;
            assert_eq!(answer.status, 201, "{}", answer.text());
            answer.json()["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("the new game's id")
        })
    }

    /// Schedules a message an hour ahead through the API; its id.
    pub(super) fn message(&self, routing_key: &str) -> Uuid {
        self.runtime.block_on(async {
            let answer = send(self.api.request(Method::POST, "/messages").json(&json!({
                "routing_key": routing_key,
                "payload": {"n": 0},
                "deliver_at": (Utc::now() + chrono::Duration::hours(1)).to_rfc3339(),
            })))
            .await;
            assert_eq!(answer.status, 201, "{}", answer.text());
            answer.json()["id"]
                .as_str()
                .and_then(|id| id.parse().ok())
                .expect("the new message's id")
        })
    }

    /// Runs `check` for `cases` generated inputs; panics with the shrunk input.
    pub(super) fn check<S: Strategy, F: Future<Output = Result<(), TestCaseError>>>(
        &self,
        cases: u32,
        strategy: S,
        check: impl Fn(S::Value) -> F,
    ) where
        S::Value: Debug,
    {
        if let Err(failure) =
            runner(cases).run(&strategy, |input| self.runtime.block_on(check(input)))
        {
            panic!("{failure}");
        }
    }
}

pub(super) struct Answer {
    pub(super) status: u16,
    content_type: String,
    www_authenticate: Option<String>,
    bytes: Vec<u8>,
}

impl Answer {
    pub(super) fn json(&self) -> Value {
        serde_json::from_slice(&self.bytes).unwrap_or(Value::Null)
    }

    /// The whole body, as text.
    pub(super) fn body(&self) -> String {
        String::from_utf8_lossy(&self.bytes).into_owned()
    }

    pub(super) fn text(&self) -> String {
        String::from_utf8_lossy(&self.bytes)
            .chars()
            .take(600)
            .collect()
    }
}

pub(super) async fn send(request: reqwest::RequestBuilder) -> Answer {
    let response = request.send().await.expect("the API answers");
    let header = |name: &str| {
        response
            .headers()
            .get(name)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned)
    };
    let status = response.status().as_u16();
    let content_type = header("content-type").unwrap_or_default();
    let www_authenticate = header("www-authenticate");
    let bytes = response.bytes().await.expect("the body").to_vec();
    Answer {
        status,
        content_type,
        www_authenticate,
        bytes,
    }
}

/// A 4xx body: `{"error": code, "message": text, "field": name or null}`, as JSON.
pub(super) fn check_error_body(answer: &Answer) -> Result<Value, TestCaseError> {
    prop_assert!(
        answer.content_type.starts_with("application/json"),
        "{} without a JSON content type: {:?} {}",
        answer.status,
        answer.content_type,
        answer.text()
    );
    let body = answer.json();
    let Some(fields) = body.as_object() else {
        return Err(TestCaseError::fail(format!(
            "{} body is not a JSON object: {}",
            answer.status,
            answer.text()
        )));
    };
    prop_assert!(
        fields
            .keys()
            .all(|key| ["error", "message", "field"].contains(&key.as_str())),
        "unexpected keys: {}",
        body
    );
    let code = fields.get("error").and_then(Value::as_str).unwrap_or("");
    prop_assert!(
        !code.is_empty() && code.bytes().all(|b| b.is_ascii_lowercase() || b == b'_'),
        "error code: {}",
        body
    );
    prop_assert!(
        fields
            .get("message")
            .and_then(Value::as_str)
            .is_some_and(|m| !m.is_empty()),
        "message: {}",
        body
    );
    prop_assert!(
        matches!(
            fields.get("field"),
            None | Some(Value::Null | Value::String(_))
        ),
        "field: {}",
        body
    );
    if answer.status == 401 {
        prop_assert_eq!(code, "unauthorized");
        prop_assert_eq!(answer.www_authenticate.as_deref(), Some("Bearer"));
    }
    Ok(body)
}

/// Never a 5xx; the status the oracle allows; the error body on a 4xx.
pub(super) fn check_answer(
    answer: &Answer,
    verdict: Verdict,
    success: u16,
    also_400: bool,
) -> Result<(), TestCaseError> {
    prop_assert!(
        answer.status < 500,
        "server error {}: {}",
        answer.status,
        answer.text()
    );
    let allowed = match verdict {
        Verdict::Valid => answer.status == success,
        Verdict::Borderline(error) => answer.status == success || answer.status == error,
        Verdict::Invalid(error) => answer.status == error,
    } || (also_400 && answer.status == 400);
    prop_assert!(
        allowed,
        "the oracle says {:?} (success {}), the API answered {}: {}",
        verdict,
        success,
        answer.status,
        answer.text()
    );
    if answer.status >= 400 {
        check_error_body(answer)?;
    }
    Ok(())
}

/// Rows in each table; fails if either table is gone.
pub(super) async fn counts(client: &tokio_postgres::Client) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM game_sessions), (SELECT count(*) FROM notification_schedule)",
            &[],
        )
        .await
        .expect("both tables still exist");
    (row.get(0), row.get(1))
}

/// A game's row and schedule rows, as text.
pub(super) async fn snapshot(client: &tokio_postgres::Client, id: Uuid) -> String {
    client
        .query_one(
            "SELECT coalesce((SELECT g::text FROM game_sessions g WHERE id = $1), 'none') || ' / ' || \
                    coalesce((SELECT string_agg(s::text, ', ' ORDER BY s.id) FROM notification_schedule s \
                               WHERE game_id = $1), 'none')",
            &[&id],
        )
        .await
        .expect("snapshot")
        .get(0)
}

pub(super) struct StoredGame {
    pub(super) title: String,
    pub(super) scheduled_at: DateTime<Utc>,
    pub(super) reminder_minutes: Option<Vec<i32>>,
}

pub(super) async fn stored_game(client: &tokio_postgres::Client, id: Uuid) -> StoredGame {
    let row = client
        .query_one(
            "SELECT title, scheduled_at, reminder_minutes FROM game_sessions WHERE id = $1",
            &[&id],
        )
        .await
        .expect("the game is stored");
    StoredGame {
        title: row.get(0),
        scheduled_at: row.get(1),
        reminder_minutes: row.get(2),
    }
}

/// The schedule follows the game: every row is one of the effective minutes
/// at exactly its time before the start, and every reminder still clearly
/// ahead has its row; for a new game, none clearly past has one.
pub(super) async fn check_schedule(
    client: &tokio_postgres::Client,
    id: Uuid,
    game: &StoredGame,
    requested_at: DateTime<Utc>,
    answered_at: DateTime<Utc>,
    new_game: bool,
) -> Result<usize, TestCaseError> {
    let effective: Vec<i64> = game.reminder_minutes.as_ref().map_or_else(
        || DEFAULT_MINUTES.to_vec(),
        |minutes| minutes.iter().copied().map(i64::from).collect(),
    );
    let time_of = |minutes: i64| game.scheduled_at - chrono::Duration::minutes(minutes);
    let rows = client
        .query(
            "SELECT reminder_minutes, notification_time FROM notification_schedule WHERE game_id = $1",
            &[&id],
        )
        .await
        .expect("read the schedule");
    for row in &rows {
        let minutes = i64::from(row.get::<_, i32>(0));
        let at: DateTime<Utc> = row.get(1);
        prop_assert!(
            effective.contains(&minutes),
            "row for {} minutes; effective {:?}",
            minutes,
            effective
        );
        prop_assert_eq!(at, time_of(minutes), "row time for {} minutes", minutes);
    }
    let margin = chrono::Duration::seconds(2);
    let certain = effective
        .iter()
        .filter(|m| time_of(**m) > answered_at + margin)
        .count();
    prop_assert!(
        rows.len() >= certain,
        "{} rows, {} reminders ahead",
        rows.len(),
        certain
    );
    if new_game {
        let possible = effective
            .iter()
            .filter(|m| time_of(**m) >= requested_at - margin)
            .count();
        prop_assert!(
            rows.len() <= possible,
            "{} rows, at most {} reminders not yet past",
            rows.len(),
            possible
        );
    }
    Ok(rows.len())
}

pub(super) fn given_minutes(value: &Value) -> Option<Vec<i32>> {
    typed_minutes(Some(value))
        .ok()
        .flatten()
        .map(|minutes| minutes.into_iter().map(|m| m as i32).collect())
}

/// The instant of a start as sent, to PostgreSQL's microsecond precision.
pub(super) fn instant_micros(raw: &str) -> Option<i64> {
    match rfc3339(raw) {
        Rfc3339::At(at) => Some(at.timestamp_micros()),
        _ => None,
    }
}
