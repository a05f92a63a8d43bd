//! The API's hostile inputs worth naming: SQL injection, NUL, cursors before
//! PostgreSQL's first day, bytes after the JSON object.

use chrono::Utc;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::json;
use uuid::Uuid;

use super::api_harness::{check_error_body, counts, send, stored_game};
use super::api_requests::encode;
use super::api_strategies::SQL_INJECTIONS;

use crate::common::TestDb;
use crate::common::api::{TOKEN, TestApi};

/// SQL-injection titles are data: stored and read back verbatim, on create
/// and on change, listed as they are, and both tables still exist; in
/// parameters and ids they are refused as bad values.
#[tokio::test]
async fn sql_injection_titles_are_stored_verbatim_and_the_tables_survive() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let start = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    for (n, injection) in SQL_INJECTIONS.iter().enumerate() {
        let answer = send(
            api.request(Method::POST, "/games")
                .json(&json!({"title": injection, "scheduled_at": start})),
        )
        .await;
        assert_eq!(answer.status, 201, "{injection}: {}", answer.text());
        let id: Uuid = answer.json()["id"].as_str().unwrap().parse().unwrap();
        assert_eq!(stored_game(&client, id).await.title, *injection);
        let fetched = send(api.request(Method::GET, &format!("/games/{id}"))).await;
        assert_eq!(fetched.json()["title"], *injection);
        let other = SQL_INJECTIONS[(n + 1) % SQL_INJECTIONS.len()];
        let changed = send(
            api.request(Method::PATCH, &format!("/games/{id}"))
                .json(&json!({"title": other})),
        )
        .await;
        assert_eq!(changed.status, 200, "{other}: {}", changed.text());
        assert_eq!(stored_game(&client, id).await.title, other);
    }
    let listed = send(api.request(Method::GET, "/games?limit=200")).await;
    let mut titles: Vec<String> = listed.json()["games"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| g["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    let mut expected: Vec<String> = SQL_INJECTIONS.iter().map(|s| (*s).to_owned()).collect();
    expected.sort();
    assert_eq!(titles, expected);
    for injection in SQL_INJECTIONS {
        for path in [
            format!("/games?cursor={}", encode(injection)),
            format!("/games?from={}", encode(injection)),
            format!("/games?limit={}", encode(injection)),
            format!("/schedule/upcoming?limit={}", encode(injection)),
            format!("/games/{}", encode(injection)),
        ] {
            let answer = send(api.request(Method::GET, &path)).await;
            assert_eq!(answer.status, 400, "{path}: {}", answer.text());
            check_error_body(&answer).unwrap_or_else(|err| panic!("{path}: {err}"));
        }
    }
    let tables: i64 = client
        .query_one(
            "SELECT count(*) FROM pg_tables WHERE schemaname = current_schema() \
             AND tablename IN ('game_sessions', 'notification_schedule')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tables, 2, "both tables still exist");
    assert_eq!(
        counts(&client).await,
        (SQL_INJECTIONS.len() as i64, 2 * SQL_INJECTIONS.len() as i64)
    );
}

/// A NUL character is a character: the documented rule (1 to 200 characters)
/// allows it, PostgreSQL cannot store it in text. Either way the answer must
/// not be a 500 and nothing may be written.
#[tokio::test]
async fn a_title_with_a_nul_character_is_refused_not_a_server_error() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let start = (Utc::now() + chrono::Duration::days(3)).to_rfc3339();
    let created = send(
        api.request(Method::POST, "/games")
            .json(&json!({"title": "ok", "scheduled_at": start})),
    )
    .await;
    let id = created.json()["id"].as_str().unwrap().to_owned();
    let before = counts(&client).await;
    for (method, path) in [
        (Method::POST, "/games".to_owned()),
        (Method::PATCH, format!("/games/{id}")),
    ] {
        let answer = send(
            api.request(method.clone(), &path)
                .json(&json!({"title": "nul\u{0}byte", "scheduled_at": start})),
        )
        .await;
        assert!(
            answer.status < 500,
            "{method} {path}: {} {}",
            answer.status,
            answer.text()
        );
        check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
    }
    assert_eq!(counts(&client).await, before);
}

/// A cursor's microseconds may name an instant chrono can represent but
/// PostgreSQL cannot (before 4713 BC): "not a next_cursor value", a 400.
#[tokio::test]
async fn a_cursor_before_the_databases_first_day_is_refused_not_a_server_error() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let id = Uuid::new_v4().simple();
    // About 7,500 BC, and about 250,000 BC (chrono's range ends at 262,143 BC).
    for micros in [-300_000_000_000_000_000i64, -8_000_000_000_000_000_000] {
        let answer = send(api.request(Method::GET, &format!("/games?cursor={micros}.{id}"))).await;
        assert_eq!(
            answer.status,
            400,
            "cursor {micros}.{id}: {}",
            answer.text()
        );
        let body = check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(body["field"], "cursor");
    }
}

/// A body is one JSON object: bytes after it make it malformed JSON, a 400,
/// and nothing is written.
#[tokio::test]
async fn bytes_after_the_json_object_are_malformed_json() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let body = json!({
        "title": "trailing",
        "scheduled_at": (Utc::now() + chrono::Duration::days(3)).to_rfc3339(),
    })
    .to_string();
    for trailing in ["garbage", "}", "{\"title\": \"second\"}", ", 1", "\u{0}"] {
        let answer = send(
            api.request(Method::POST, "/games")
                .header(CONTENT_TYPE, "application/json")
                .body(format!("{body}{trailing}")),
        )
        .await;
        assert_eq!(answer.status, 400, "{body}{trailing:?}: {}", answer.text());
        let error = check_error_body(&answer).unwrap_or_else(|err| panic!("{err}"));
        assert_eq!(error["error"], "malformed_json");
    }
    assert_eq!(counts(&client).await, (0, 0), "nothing written");
}
