//! The games API against a real database: every endpoint, every validation
//! rule, authentication.

pub mod common;

use common::TestDb;
use common::api::{TOKEN, TestApi, in_seconds, json};
use common::schedule::{count, count_games};
use reqwest::Method;
use serde_json::{Value, json};

async fn create(api: &TestApi, body: Value) -> Value {
    let (status, body) = json(api.post_json("/games", &body).await).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// A test database, the API on it, and one game two hours ahead with the
/// default reminders; the game's path.
async fn one_game() -> (TestDb, TestApi, Value, String) {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let game = create(
        &api,
        json!({"title": "t", "scheduled_at": in_seconds(7200)}),
    )
    .await;
    let path = format!("/games/{}", game["id"].as_str().unwrap());
    (db, api, game, path)
}

fn reminders(game: &Value) -> Vec<(i64, String)> {
    game["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["reminder_minutes"].as_i64().unwrap(),
                r["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

#[tokio::test]
async fn creating_a_game_schedules_its_future_reminders_and_reports_past_ones() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let response = api
        .request(Method::POST, "/games")
        .header("traceparent", traceparent)
        .json(&json!({"title": "Catan night", "scheduled_at": in_seconds(30 * 60)}))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let game: Value = response.json().await.unwrap();
    assert_eq!(location, format!("/games/{}", game["id"].as_str().unwrap()));
    assert_eq!(game["reminder_minutes"], Value::Null);
    assert_eq!(game["effective_reminder_minutes"], json!([60, 15]));
    assert_eq!(
        reminders(&game),
        [(60, "skipped_past".to_owned()), (15, "pending".to_owned())]
    );

    let client = db.client().await;
    let row = client
        .query_one(
            "SELECT s.game_scheduled_at = g.scheduled_at, s.traceparent, s.notification_time = g.scheduled_at - interval '15 minutes' \
               FROM notification_schedule s JOIN game_sessions g ON g.id = s.game_id",
            &[],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "the game's start is stored with the reminder"
    );
    assert_eq!(
        row.get::<_, Option<String>>(1).as_deref(),
        Some(traceparent)
    );
    assert!(row.get::<_, bool>(2));

    let fetched = json(api.get(&location).await).await;
    assert_eq!(fetched.0, 200);
    assert_eq!(fetched.1["id"], game["id"]);
}

#[tokio::test]
async fn a_game_shows_each_reminder_as_pending_sent_or_skipped() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let game = create(
        &api,
        json!({"title": "t", "scheduled_at": in_seconds(3 * 3600), "reminder_minutes": [120, 60, 15]}),
    )
    .await;
    let client = db.client().await;
    client
        .batch_execute(
            "UPDATE notification_schedule SET sent = true, sent_at = now(), outcome = 'published' WHERE reminder_minutes = 120;
             UPDATE notification_schedule SET sent = true, sent_at = now(), outcome = 'skipped_stale' WHERE reminder_minutes = 60;",
        )
        .await
        .unwrap();
    let (_, game) = json(
        api.get(&format!("/games/{}", game["id"].as_str().unwrap()))
            .await,
    )
    .await;
    assert_eq!(
        reminders(&game),
        [
            (120, "sent".to_owned()),
            (60, "skipped_stale".to_owned()),
            (15, "pending".to_owned())
        ]
    );
    let sent = &game["reminders"][0];
    assert_eq!(sent["sent"], true);
    assert!(sent["sent_at"].is_string());
    assert_eq!(game["reminders"][1]["skipped"], true);
}

#[tokio::test]
async fn games_are_listed_by_start_within_a_range_a_page_at_a_time() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let mut ids = Vec::new();
    for hours in 1..=5 {
        let game = create(
            &api,
            json!({"title": format!("g{hours}"), "scheduled_at": in_seconds(hours * 3600)}),
        )
        .await;
        ids.push(game["id"].as_str().unwrap().to_owned());
    }
    let from = urlencode(&in_seconds(3600 + 60));
    let mut seen = Vec::new();
    let mut path = format!("/games?from={from}&limit=2");
    loop {
        let (status, page) = json(api.get(&path).await).await;
        assert_eq!(status, 200, "{page}");
        let games = page["games"].as_array().unwrap();
        assert!(games.len() <= 2);
        seen.extend(games.iter().map(|g| g["id"].as_str().unwrap().to_owned()));
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/games?from={from}&limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids[1..], "games 2 to 5 in start order, each once");
    let to = urlencode(&in_seconds(2 * 3600 + 60));
    let (_, page) = json(api.get(&format!("/games?to={to}")).await).await;
    assert_eq!(page["games"].as_array().unwrap().len(), 2);
}

fn urlencode(text: &str) -> String {
    text.replace('+', "%2B").replace(':', "%3A")
}

#[tokio::test]
async fn an_unrelated_edit_leaves_the_schedule_alone() {
    let (_db, api, game, path) = one_game().await;
    let (status, edited) = json(api.patch_json(&path, &json!({"title": "renamed"})).await).await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["title"], "renamed");
    assert_eq!(
        edited["reminders"], game["reminders"],
        "same rows, same ids"
    );
}

#[tokio::test]
async fn moving_a_game_replaces_its_reminders_and_resends_sent_ones() {
    let (db, api, game, path) = one_game().await;
    let client = db.client().await;
    client
        .execute(
            "UPDATE notification_schedule SET sent = true, sent_at = now(), outcome = 'published' WHERE reminder_minutes = 60",
            &[],
        )
        .await
        .unwrap();
    let (status, moved) = json(
        api.patch_json(&path, &json!({"scheduled_at": in_seconds(3 * 3600)}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(
        reminders(&moved),
        [(60, "pending".to_owned()), (15, "pending".to_owned())]
    );
    for (old, new) in game["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .zip(moved["reminders"].as_array().unwrap())
    {
        assert_ne!(old["id"], new["id"], "a moved reminder is a new message");
        assert_ne!(old["notification_time"], new["notification_time"]);
    }
    assert_eq!(count(&client, "true").await, 2, "old rows are gone");
}

#[tokio::test]
async fn reminder_minutes_can_be_changed_and_reset_to_the_default() {
    let (_db, api, game, path) = one_game().await;
    let (_, changed) = json(
        api.patch_json(&path, &json!({"reminder_minutes": [30, 15]}))
            .await,
    )
    .await;
    assert_eq!(
        reminders(&changed),
        [(30, "pending".to_owned()), (15, "pending".to_owned())]
    );
    assert_eq!(
        changed["reminders"][1]["id"], game["reminders"][1]["id"],
        "the 15-minute row is kept"
    );
    let (_, reset) = json(
        api.patch_json(&path, &json!({"reminder_minutes": null}))
            .await,
    )
    .await;
    assert_eq!(reset["reminder_minutes"], Value::Null);
    assert_eq!(
        reminders(&reset),
        [(60, "pending".to_owned()), (15, "pending".to_owned())]
    );
}

#[tokio::test]
async fn deleting_a_game_removes_its_reminders() {
    let (db, api, _, path) = one_game().await;
    assert_eq!(api.delete(&path).await.status(), 204);
    assert_eq!(count(&db.client().await, "true").await, 0);
    assert_eq!(json(api.get(&path).await).await.0, 404);
    let (status, body) = json(api.delete(&path).await).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn upcoming_lists_the_next_pending_reminders_across_games() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    create(
        &api,
        json!({"title": "later", "scheduled_at": in_seconds(5 * 3600), "reminder_minutes": [10]}),
    )
    .await;
    create(&api, json!({"title": "sooner", "scheduled_at": in_seconds(2 * 3600), "reminder_minutes": [30, 10]})).await;
    let (status, page) = json(api.get("/schedule/upcoming?limit=2").await).await;
    assert_eq!(status, 200);
    let listed: Vec<(&str, i64)> = page["reminders"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["title"].as_str().unwrap(),
                r["reminder_minutes"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(listed, [("sooner", 30), ("sooner", 10)]);
}

/// Each bad request: its status, error code and field, and that nothing was written.
#[tokio::test]
async fn every_invalid_request_gets_one_clear_error_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let future = in_seconds(7200);
    let cases: Vec<(&str, Value, u16, &str, Option<&str>)> = vec![
        (
            "missing title",
            json!({"scheduled_at": future}),
            400,
            "missing_field",
            Some("title"),
        ),
        (
            "wrong type",
            json!({"title": 5, "scheduled_at": future}),
            400,
            "invalid_type",
            Some("title"),
        ),
        (
            "unknown field",
            json!({"title": "t", "scheduled_at": future, "owner": "x"}),
            400,
            "unknown_field",
            Some("owner"),
        ),
        (
            "empty title",
            json!({"title": "  ", "scheduled_at": future}),
            422,
            "invalid_title",
            Some("title"),
        ),
        (
            "long title",
            json!({"title": "x".repeat(201), "scheduled_at": future}),
            422,
            "invalid_title",
            Some("title"),
        ),
        (
            "naive time",
            json!({"title": "t", "scheduled_at": "2030-01-01T10:00:00"}),
            422,
            "invalid_scheduled_at",
            Some("scheduled_at"),
        ),
        (
            "past time",
            json!({"title": "t", "scheduled_at": in_seconds(-60)}),
            422,
            "invalid_scheduled_at",
            Some("scheduled_at"),
        ),
        (
            "too far",
            json!({"title": "t", "scheduled_at": in_seconds(400 * 86_400)}),
            422,
            "invalid_scheduled_at",
            Some("scheduled_at"),
        ),
        (
            "negative minutes",
            json!({"title": "t", "scheduled_at": future, "reminder_minutes": [-5]}),
            422,
            "invalid_reminder_minutes",
            Some("reminder_minutes"),
        ),
        (
            "minutes too large",
            json!({"title": "t", "scheduled_at": future, "reminder_minutes": [10_081]}),
            422,
            "invalid_reminder_minutes",
            Some("reminder_minutes"),
        ),
        (
            "duplicate minutes",
            json!({"title": "t", "scheduled_at": future, "reminder_minutes": [15, 15]}),
            422,
            "invalid_reminder_minutes",
            Some("reminder_minutes"),
        ),
        (
            "too many minutes",
            json!({"title": "t", "scheduled_at": future, "reminder_minutes": (0..11).collect::<Vec<_>>()}),
            422,
            "invalid_reminder_minutes",
            Some("reminder_minutes"),
        ),
        (
            "fractional minutes",
            json!({"title": "t", "scheduled_at": future, "reminder_minutes": [1.5]}),
            400,
            "invalid_type",
            Some("reminder_minutes[0]"),
        ),
        ("not an object", json!([1, 2]), 400, "invalid_type", None),
    ];
    for (name, body, status, code, field) in cases {
        let (got_status, error) = json(api.post_json("/games", &body).await).await;
        assert_eq!(got_status, status, "{name}: {error}");
        assert_eq!(error["error"], code, "{name}: {error}");
        assert_eq!(error["field"].as_str(), field, "{name}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }

    let raw = |body: &'static str, content_type: &'static str| {
        api.request(Method::POST, "/games")
            .header("content-type", content_type)
            .body(body)
            .send()
    };
    let (status, error) = json(raw("{\"title\": ", "application/json").await.unwrap()).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (400, Some("malformed_json"))
    );
    let (status, error) = json(raw("{}", "text/plain").await.unwrap()).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    let huge = json!({"title": "x".repeat(70 * 1024), "scheduled_at": future});
    let (status, error) = json(api.post_json("/games", &huge).await).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (413, Some("payload_too_large"))
    );

    let client = db.client().await;
    assert_eq!(
        count_games(&client).await,
        0,
        "no rejected request wrote a game"
    );
    assert_eq!(
        count(&client, "true").await,
        0,
        "no rejected request wrote a reminder"
    );
}

#[tokio::test]
async fn invalid_updates_ids_and_parameters_are_rejected_without_changes() {
    let (_db, api, game, path) = one_game().await;
    let cases: Vec<(Value, u16, &str)> = vec![
        (json!({}), 422, "nothing_to_change"),
        (json!({"title": null}), 422, "null_value"),
        (json!({"scheduled_at": null}), 422, "null_value"),
        (
            json!({"scheduled_at": in_seconds(-10)}),
            422,
            "invalid_scheduled_at",
        ),
        (
            json!({"reminder_minutes": [1, 1]}),
            422,
            "invalid_reminder_minutes",
        ),
        (json!({"colour": "red"}), 400, "unknown_field"),
    ];
    for (body, status, code) in cases {
        let (got, error) = json(api.patch_json(&path, &body).await).await;
        assert_eq!(
            (got, error["error"].as_str()),
            (status, Some(code)),
            "{body}: {error}"
        );
    }
    let (_, unchanged) = json(api.get(&path).await).await;
    assert_eq!(unchanged["reminders"], game["reminders"]);
    assert_eq!(unchanged["updated_at"], game["updated_at"]);

    for (path, status, code) in [
        ("/games/not-a-uuid", 400, "invalid_id"),
        (
            "/games/00000000-0000-0000-0000-000000000000",
            404,
            "not_found",
        ),
        ("/games?limit=0", 400, "invalid_parameter"),
        ("/games?limit=abc", 400, "invalid_parameter"),
        ("/games?from=yesterday", 400, "invalid_parameter"),
        ("/games?cursor=bogus", 400, "invalid_parameter"),
        ("/games?sort=title", 400, "unknown_parameter"),
        ("/schedule/upcoming?limit=5000", 400, "invalid_parameter"),
        ("/nowhere", 404, "not_found"),
    ] {
        let (got, error) = json(api.get(path).await).await;
        assert_eq!(
            (got, error["error"].as_str()),
            (status, Some(code)),
            "{path}: {error}"
        );
    }
    let (status, error) = json(api.request(Method::PUT, "/games").send().await.unwrap()).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (405, Some("method_not_allowed"))
    );
}

#[tokio::test]
async fn requests_without_the_exact_token_are_rejected() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let url = format!("{}/games", api.base);
    let almost = [
        None,
        Some(format!("Bearer {}", &TOKEN[..TOKEN.len() - 1])),
        Some(format!("Bearer {TOKEN}x")),
        Some(format!("Bearer {}", TOKEN.to_uppercase())),
        Some(format!("Basic {TOKEN}")),
        Some(TOKEN.to_owned()),
        Some("Bearer ".to_owned()),
    ];
    for header in almost {
        let mut request = api.client.get(&url);
        if let Some(header) = &header {
            request = request.header("authorization", header);
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 401, "{header:?}");
        assert_eq!(response.headers()["www-authenticate"], "Bearer");
        let body: Value = response.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
    }
    let lowercase_scheme = api
        .client
        .get(&url)
        .header("authorization", format!("bearer {TOKEN}"))
        .send()
        .await
        .unwrap();
    assert_eq!(lowercase_scheme.status(), 200);
    for open in ["/openapi.json", "/healthz", "/readyz"] {
        let response = api
            .client
            .get(format!("{}{open}", api.base))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{open} needs no token");
    }
}

#[tokio::test]
async fn the_insecure_development_mode_serves_without_a_token() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, None).await;
    let response = api
        .client
        .get(format!("{}/games", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn the_openapi_document_describes_every_route() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let (status, document) = json(
        api.client
            .get(format!("{}/openapi.json", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    assert!(document["openapi"].as_str().unwrap().starts_with("3."));
    for (path, methods) in [
        ("/games", &["get", "post"][..]),
        ("/games/{id}", &["get", "patch", "delete"][..]),
        ("/schedule/upcoming", &["get"][..]),
    ] {
        for method in methods {
            assert!(
                document["paths"][path][method].is_object(),
                "{method} {path} undocumented"
            );
        }
    }
    assert_eq!(
        document["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );
    assert!(document["components"]["schemas"]["ErrorBody"].is_object());
}
