//! The scheduled-messages API against a real database: every endpoint,
//! idempotent creates under concurrent retries, payloads byte for byte,
//! changes and cancels racing a daemon's claim, every validation rule, the
//! allow-list, authentication; and once through the daemon to the broker.

pub mod common;

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset, SecondsFormat, Timelike, Utc};
use common::api::{DEFAULT_EXCHANGE, TOKEN, TestApi, in_seconds, json, message_settings};
use common::schedule::{start_daemon, wait_for};
use common::{TestBroker, TestDb, WAIT};
use lapin::types::AMQPValue;
use notification_scheduler::api::MessageSettings;
use notification_scheduler::messages::allowed::AllowedRoutes;
use reqwest::Method;
use reqwest::header::CONTENT_TYPE;
use serde_json::{Value, json};
use uuid::Uuid;

async fn create(api: &TestApi, body: Value) -> Value {
    let (status, body) = json(api.post_json("/messages", &body).await).await;
    assert_eq!(status, 201, "{body}");
    body
}

/// A test database, the API on it, and one pending message an hour ahead;
/// the message's path.
async fn one_message() -> (TestDb, TestApi, Value, String) {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let message = create(
        &api,
        json!({"routing_key": "bot.welcome", "payload": {"user": 1}, "deliver_at": in_seconds(3600)}),
    )
    .await;
    let path = format!("/messages/{}", message["id"].as_str().unwrap());
    (db, api, message, path)
}

/// A whole second about a day ahead.
fn tomorrow() -> DateTime<Utc> {
    (Utc::now() + chrono::Duration::days(1))
        .with_nanosecond(0)
        .unwrap()
}

/// `time` plus `seconds`, as the API answers times (UTC, `Z`).
fn utc(time: DateTime<Utc>, seconds: i64) -> String {
    (time + chrono::Duration::seconds(seconds)).to_rfc3339_opts(SecondsFormat::Secs, true)
}

/// The same instant at an offset of one hour.
fn plus_one_hour_offset(time: DateTime<Utc>) -> String {
    time.with_timezone(&FixedOffset::east_opt(3600).unwrap())
        .to_rfc3339()
}

/// Rows of `scheduled_message`.
async fn count(client: &tokio_postgres::Client) -> i64 {
    client
        .query_one("SELECT count(*) FROM scheduled_message", &[])
        .await
        .unwrap()
        .get(0)
}

/// Sets a message's state as the daemon (or the API) would have.
async fn set_state(client: &tokio_postgres::Client, id: &str, state: &str) {
    let id: Uuid = id.parse().unwrap();
    client
        .execute(
            "UPDATE scheduled_message SET state = $2, sent_at = now() WHERE id = $1",
            &[&id, &state],
        )
        .await
        .unwrap();
}

#[tokio::test]
async fn a_message_is_scheduled_with_every_field_and_read_back() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let traceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let day = tomorrow();
    let response = api
        .request(Method::POST, "/messages")
        .header("traceparent", traceparent)
        .json(&json!({
            "key": "welcome-42",
            "exchange": DEFAULT_EXCHANGE,
            "routing_key": "bot.welcome",
            "payload": {"user": 42},
            "headers": {"x-tenant": "a", "x-attempt": 1, "x-vip": true, "x-score": 2.5},
            "deliver_at": plus_one_hour_offset(day),
            "expires_at": utc(day, 1800),
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    let message: Value = response.json().await.unwrap();
    assert_eq!(
        location,
        format!("/messages/{}", message["id"].as_str().unwrap())
    );
    assert_eq!(message["key"], "welcome-42");
    assert_eq!(message["exchange"], DEFAULT_EXCHANGE);
    assert_eq!(message["routing_key"], "bot.welcome");
    assert_eq!(message["payload"], json!({"user": 42}));
    assert_eq!(
        message["headers"],
        json!({"x-tenant": "a", "x-attempt": 1, "x-vip": true, "x-score": 2.5})
    );
    assert_eq!(message["deliver_at"], utc(day, 0));
    assert_eq!(message["expires_at"], utc(day, 1800));
    assert_eq!(message["state"], "pending");
    assert_eq!(message["attempts"], 0);
    assert_eq!(message["sent_at"], Value::Null);
    assert_eq!(message["outcome"], Value::Null);
    assert_eq!(message["created_at"], message["updated_at"]);

    let (status, fetched) = json(api.get(&location).await).await;
    assert_eq!(status, 200);
    assert_eq!(fetched, message);

    let client = db.client().await;
    let stored: Option<String> = client
        .query_one("SELECT traceparent FROM scheduled_message", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(stored.as_deref(), Some(traceparent));

    // Without exchange, headers, key or expiry: the configured exchange (null).
    let minimal = create(
        &api,
        json!({"routing_key": "", "payload": null, "deliver_at": in_seconds(-60)}),
    )
    .await;
    for field in ["exchange", "key", "headers", "expires_at", "payload"] {
        assert_eq!(minimal[field], Value::Null, "{field}");
    }
    assert_eq!(
        minimal["state"], "pending",
        "a past time is delivered at once"
    );
    let (status, body) = json(api.get(&format!("/messages/{}", Uuid::new_v4())).await).await;
    assert_eq!((status, body["error"].as_str()), (404, Some("not_found")));
}

#[tokio::test]
async fn messages_are_listed_in_creation_order_a_page_at_a_time_and_filtered() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        let message = create(
            &api,
            json!({
                "key": format!("k{n}"),
                "routing_key": if n % 2 == 0 { "even" } else { "odd" },
                "payload": n,
                "deliver_at": in_seconds(3600),
            }),
        )
        .await;
        ids.push(message["id"].as_str().unwrap().to_owned());
    }
    set_state(&db.client().await, &ids[3], "sent").await;

    let mut seen = Vec::new();
    let mut path = "/messages?limit=2".to_owned();
    loop {
        let (status, page) = json(api.get(&path).await).await;
        assert_eq!(status, 200, "{page}");
        let messages = page["messages"].as_array().unwrap();
        assert!(messages.len() <= 2);
        seen.extend(
            messages
                .iter()
                .map(|m| m["id"].as_str().unwrap().to_owned()),
        );
        match page["next_cursor"].as_str() {
            Some(cursor) => path = format!("/messages?limit=2&cursor={cursor}"),
            None => break,
        }
    }
    assert_eq!(seen, ids, "every message once, in creation order");

    let listed = |page: &Value| -> Vec<String> {
        page["messages"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (_, page) = json(api.get("/messages?state=sent").await).await;
    assert_eq!(listed(&page), [ids[3].clone()]);
    let (_, page) = json(api.get("/messages?state=pending&routing_key=even").await).await;
    assert_eq!(
        listed(&page),
        [ids[0].clone(), ids[2].clone(), ids[4].clone()]
    );
    let (_, page) = json(api.get("/messages?key=k1").await).await;
    assert_eq!(listed(&page), [ids[1].clone()]);
    let (_, page) = json(api.get("/messages?key=k9").await).await;
    assert_eq!(listed(&page), Vec::<String>::new());
    assert_eq!(page["next_cursor"], Value::Null);

    for (path, field) in [
        ("/messages?state=done", "state"),
        ("/messages?limit=0", "limit"),
        ("/messages?limit=201", "limit"),
        ("/messages?cursor=bogus", "cursor"),
        ("/messages?sort=key", "sort"),
    ] {
        let (status, error) = json(api.get(path).await).await;
        assert_eq!(status, 400, "{path}: {error}");
        assert_eq!(error["field"], field, "{path}: {error}");
    }
}

#[tokio::test]
async fn a_retry_with_the_same_key_returns_the_message_and_other_content_conflicts() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let day = tomorrow();
    let body = json!({
        "key": "once",
        "routing_key": "bot.dm",
        "payload": {"text": "hi"},
        "headers": {"a": 1, "b": "x"},
        "deliver_at": utc(day, 0),
        "expires_at": utc(day, 3600),
    });
    let first = create(&api, body.clone()).await;
    let same_content = [
        body.clone(),
        // The same instant at another offset, the headers in another order.
        {
            let mut other = body.clone();
            other["deliver_at"] = json!(plus_one_hour_offset(day));
            other["headers"] = json!({"b": "x", "a": 1});
            other
        },
    ];
    for retry in same_content {
        let response = api.post_json("/messages", &retry).await;
        assert_eq!(
            response.headers()["location"].to_str().unwrap(),
            format!("/messages/{}", first["id"].as_str().unwrap())
        );
        let (status, again) = json(response).await;
        assert_eq!(status, 200, "{again}");
        assert_eq!(again, first);
    }
    for (field, value) in [
        ("routing_key", json!("bot.other")),
        ("payload", json!({"text": "bye"})),
        ("headers", json!({"a": 2, "b": "x"})),
        ("deliver_at", json!(utc(day, 1))),
        ("expires_at", Value::Null),
        ("exchange", json!(DEFAULT_EXCHANGE)),
    ] {
        let mut other = body.clone();
        other[field] = value;
        let (status, error) = json(api.post_json("/messages", &other).await).await;
        assert_eq!(status, 409, "{field}: {error}");
        assert_eq!(error["error"], "key_conflict", "{field}");
        assert_eq!(error["field"], "key", "{field}");
    }
    // The payload is compared as written: other spacing is other content.
    let respaced = format!(
        r#"{{"key": "once", "routing_key": "bot.dm", "payload": {{ "text": "hi" }},
            "headers": {{"a": 1, "b": "x"}}, "deliver_at": "{}", "expires_at": "{}"}}"#,
        utc(day, 0),
        utc(day, 3600)
    );
    let (status, _) = json(
        api.request(Method::POST, "/messages")
            .header(CONTENT_TYPE, "application/json")
            .body(respaced)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 409);
    // A message no longer pending is still the one its key names.
    let client = db.client().await;
    set_state(&client, first["id"].as_str().unwrap(), "sent").await;
    let (status, sent) = json(api.post_json("/messages", &body).await).await;
    assert_eq!((status, sent["state"].as_str()), (200, Some("sent")));
    assert_eq!(count(&client).await, 1);
}

#[tokio::test]
async fn concurrent_identical_creates_make_exactly_one_message() {
    let db = TestDb::migrated().await;
    let api = Arc::new(TestApi::start(&db, Some(TOKEN)).await);
    let body = json!({
        "key": "raced",
        "routing_key": "bot.dm",
        "payload": {"n": 1},
        "deliver_at": in_seconds(3600),
    });
    let retries: Vec<_> = (0..16)
        .map(|_| {
            let api = Arc::clone(&api);
            let body = body.clone();
            tokio::spawn(async move { json(api.post_json("/messages", &body).await).await })
        })
        .collect();
    let mut statuses = Vec::new();
    let mut ids = Vec::new();
    for retry in retries {
        let (status, message) = retry.await.unwrap();
        statuses.push(status);
        ids.push(message["id"].as_str().unwrap().to_owned());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 201).count(),
        1,
        "{statuses:?}"
    );
    assert!(
        statuses.iter().all(|s| [200, 201].contains(s)),
        "{statuses:?}"
    );
    assert!(ids.iter().all(|id| *id == ids[0]), "{ids:?}");
    assert_eq!(count(&db.client().await).await, 1);
}

#[tokio::test]
async fn the_payload_is_stored_and_returned_byte_for_byte() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = db.client().await;
    let payloads = [
        r#"{ "b" :1,   "a" : [ 1 ,2 ] , "b2":{}}"#,
        "{\n\t\"z\": true,\r\n  \"a\": null\n}",
        r#""\u00e9\ud83d\ude00 caf\u00E9 \/ \"q\"""#,
        r#""\u0000 and a lone \ud800""#,
        "123456789012345678901234567890123456789012345678901234567890",
        "-0.000000000000000000000000001e-400",
        "1E+400",
        r#"[1.0, 1.50, 2e0, -0]"#,
        r#"{"a": 1, "a": 2}"#,
        "\"é😀 日本\"",
        "null",
    ]
    .map(str::to_owned)
    .into_iter()
    // Larger than any other route's body: the message routes' own limit applies.
    .chain([format!("[\"{}\" ]", "x".repeat(250 * 1024))]);
    for raw in payloads {
        let body = format!(
            r#"{{"routing_key": "raw", "payload": {raw}, "deliver_at": "{}"}}"#,
            in_seconds(60)
        );
        let response = api
            .request(Method::POST, "/messages")
            .header(CONTENT_TYPE, "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 201, "{raw}");
        // Not parsed: serde_json's Value cannot hold some of these payloads.
        let id: Uuid = response.headers()["location"]
            .to_str()
            .unwrap()
            .trim_start_matches("/messages/")
            .parse()
            .unwrap();
        let text = response.text().await.unwrap();
        assert!(
            text.contains(&format!(r#""payload":{raw}"#)),
            "{raw} answered as {text}"
        );
        let stored: String = client
            .query_one(
                "SELECT payload::text FROM scheduled_message WHERE id = $1",
                &[&id],
            )
            .await
            .unwrap()
            .get(0);
        assert_eq!(stored, raw);
        let fetched = api
            .get(&format!("/messages/{id}"))
            .await
            .text()
            .await
            .unwrap();
        assert!(
            fetched.contains(&format!(r#""payload":{raw}"#)),
            "{fetched}"
        );

        // An edit keeps the new payload's bytes too.
        let edited = format!("[ {raw} ]");
        let response = api
            .request(Method::PATCH, &format!("/messages/{id}"))
            .header(CONTENT_TYPE, "application/json")
            .body(format!(r#"{{"payload": {edited}}}"#))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200, "{edited}");
        let text = response.text().await.unwrap();
        assert!(text.contains(&format!(r#""payload":{edited}"#)), "{text}");
    }
}

#[tokio::test]
async fn a_pending_message_can_be_moved_edited_and_its_expiry_cleared() {
    let (db, api, message, path) = one_message().await;
    let day = tomorrow();
    let deliver_at = utc(day, 0);
    let (status, moved) = json(
        api.patch_json(
            &path,
            &json!({"deliver_at": deliver_at, "expires_at": utc(day, 3600)}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 200, "{moved}");
    assert_eq!(moved["deliver_at"], deliver_at);
    assert_eq!(moved["expires_at"], utc(day, 3600));
    assert_eq!(moved["payload"], message["payload"], "untouched");
    assert_ne!(moved["updated_at"], message["updated_at"]);

    let (status, edited) = json(
        api.patch_json(&path, &json!({"payload": null, "expires_at": null}))
            .await,
    )
    .await;
    assert_eq!(status, 200, "{edited}");
    assert_eq!(edited["payload"], Value::Null);
    assert_eq!(edited["expires_at"], Value::Null);
    assert_eq!(edited["deliver_at"], deliver_at);
    let stored: String = db
        .client()
        .await
        .query_one("SELECT payload::text FROM scheduled_message", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        stored, "null",
        "a null payload is JSON null, not a missing one"
    );

    // Moving past a stored expiry is refused, naming deliver_at.
    api.patch_json(&path, &json!({"expires_at": utc(day, 3600)}))
        .await;
    let (status, error) = json(
        api.patch_json(&path, &json!({"deliver_at": utc(day, 7200)}))
            .await,
    )
    .await;
    assert_eq!(status, 422, "{error}");
    assert_eq!(error["field"], "deliver_at");
    let (_, unchanged) = json(api.get(&path).await).await;
    assert_eq!(unchanged["deliver_at"], deliver_at);
}

#[tokio::test]
async fn only_pending_messages_can_be_changed_or_cancelled() {
    let (db, api, _, path) = one_message().await;
    let client = db.client().await;
    let unknown = format!("/messages/{}", Uuid::new_v4());
    let (status, error) = json(api.patch_json(&unknown, &json!({"payload": 1})).await).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("not_found")));
    let (status, error) = json(api.delete(&unknown).await).await;
    assert_eq!((status, error["error"].as_str()), (404, Some("not_found")));

    assert_eq!(api.delete(&path).await.status(), 204);
    let (_, cancelled) = json(api.get(&path).await).await;
    assert_eq!(cancelled["state"], "cancelled");
    assert_eq!(cancelled["outcome"], "cancelled");
    assert!(cancelled["sent_at"].is_string());
    assert_ne!(cancelled["updated_at"], cancelled["created_at"]);

    let id = path.rsplit('/').next().unwrap();
    for state in ["cancelled", "sent", "expired", "dead_lettered"] {
        set_state(&client, id, state).await;
        let before = json(api.get(&path).await).await.1;
        let (status, error) = json(api.delete(&path).await).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (409, Some("not_pending"))
        );
        assert!(
            error["message"].as_str().unwrap().contains(state),
            "{error}"
        );
        let (status, error) = json(api.patch_json(&path, &json!({"payload": 2})).await).await;
        assert_eq!(
            (status, error["error"].as_str()),
            (409, Some("not_pending"))
        );
        assert!(
            error["message"].as_str().unwrap().contains(state),
            "{error}"
        );
        assert_eq!(json(api.get(&path).await).await.1, before, "{state}");
    }
}

/// A daemon's claim as the test holds it: a transaction on a connection of
/// its own that locked the row as the daemon's claim does.
struct Claim {
    client: tokio_postgres::Client,
}

impl Claim {
    async fn take(db: &TestDb, id: Uuid) -> Self {
        let client = db.client().await;
        client.batch_execute("BEGIN").await.unwrap();
        let claimed = client
            .query(
                "SELECT id FROM scheduled_message WHERE id = $1 AND state = 'pending' \
                 FOR UPDATE SKIP LOCKED",
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1);
        Self { client }
    }

    /// Marks the row sent and commits, as after the broker's confirm.
    async fn publish(self) {
        self.client
            .batch_execute(
                "UPDATE scheduled_message SET state = 'sent', outcome = 'published', \
                        sent_at = now(), attempts = attempts + 1; COMMIT",
            )
            .await
            .unwrap();
    }

    /// Gives the row back, as after a failed publish.
    async fn release(self) {
        self.client.batch_execute("ROLLBACK").await.unwrap();
    }
}

/// Waits until a session of the test database waits for a row lock.
async fn until_a_request_waits_for_the_claim(client: &tokio_postgres::Client) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let waiting: i64 = client
            .query_one(
                "SELECT count(*) FROM pg_stat_activity \
                  WHERE datname = current_database() AND wait_event_type = 'Lock'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if waiting > 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no request waited for the claim"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// A cancel that arrives while a claim is in flight waits for it: the claim
/// publishes and commits, so the cancel is refused and the message stays sent.
#[tokio::test]
async fn a_cancel_racing_a_claim_that_publishes_is_refused() {
    let (db, api, message, path) = one_message().await;
    let id: Uuid = message["id"].as_str().unwrap().parse().unwrap();
    let claim = Claim::take(&db, id).await;
    let api = Arc::new(api);
    let cancel = {
        let api = Arc::clone(&api);
        let path = path.clone();
        tokio::spawn(async move { json(api.delete(&path).await).await })
    };
    until_a_request_waits_for_the_claim(&db.client().await).await;
    claim.publish().await;
    let (status, error) = cancel.await.unwrap();
    assert_eq!(
        (status, error["error"].as_str()),
        (409, Some("not_pending"))
    );
    let (_, after) = json(api.get(&path).await).await;
    assert_eq!(
        (after["state"].as_str(), after["outcome"].as_str()),
        (Some("sent"), Some("published"))
    );
}

/// The same race with a claim that is rolled back: the cancel is honoured.
#[tokio::test]
async fn a_cancel_racing_a_claim_that_is_released_is_honoured() {
    let (db, api, message, path) = one_message().await;
    let id: Uuid = message["id"].as_str().unwrap().parse().unwrap();
    let claim = Claim::take(&db, id).await;
    let api = Arc::new(api);
    let cancel = {
        let api = Arc::clone(&api);
        let path = path.clone();
        tokio::spawn(async move { api.delete(&path).await.status().as_u16() })
    };
    until_a_request_waits_for_the_claim(&db.client().await).await;
    claim.release().await;
    assert_eq!(cancel.await.unwrap(), 204);
    let (_, after) = json(api.get(&path).await).await;
    assert_eq!(after["state"], "cancelled");
}

/// A claim held longer than the lock timeout (a broker slow to confirm):
/// changes and cancels answer that the message is being delivered, and
/// change nothing.
#[tokio::test]
async fn a_claim_held_past_the_lock_timeout_answers_being_delivered() {
    let db = TestDb::migrated().await;
    let settings = MessageSettings {
        lock_timeout: Duration::from_millis(100),
        ..message_settings()
    };
    let api = TestApi::start_with(&db, Some(TOKEN), settings).await;
    let message = create(
        &api,
        json!({"routing_key": "k", "payload": 1, "deliver_at": in_seconds(60)}),
    )
    .await;
    let path = format!("/messages/{}", message["id"].as_str().unwrap());
    let claim = Claim::take(&db, message["id"].as_str().unwrap().parse().unwrap()).await;
    let (status, error) = json(api.delete(&path).await).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (409, Some("being_delivered"))
    );
    let (status, error) = json(api.patch_json(&path, &json!({"payload": 2})).await).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (409, Some("being_delivered"))
    );
    claim.release().await;
    let (_, after) = json(api.get(&path).await).await;
    assert_eq!(after, message);
}

/// Each bad create: its status, error code and field, and that nothing was written.
#[tokio::test]
async fn every_invalid_message_gets_one_clear_error_naming_the_field_and_writes_nothing() {
    let db = TestDb::migrated().await;
    let settings = MessageSettings {
        max_payload_bytes: 1024,
        ..message_settings()
    };
    let api = TestApi::start_with(&db, Some(TOKEN), settings).await;
    let soon = in_seconds(60);
    let valid = json!({"routing_key": "k", "payload": 1, "deliver_at": soon});
    let with = |field: &str, value: Value| {
        let mut body = valid.clone();
        body[field] = value;
        body
    };
    let cases: Vec<(&str, Value, u16, &str, &str)> = vec![
        (
            "missing routing key",
            json!({"payload": 1, "deliver_at": soon}),
            400,
            "missing_field",
            "routing_key",
        ),
        (
            "missing payload",
            json!({"routing_key": "k", "deliver_at": soon}),
            400,
            "missing_field",
            "payload",
        ),
        (
            "missing deliver_at",
            json!({"routing_key": "k", "payload": 1}),
            400,
            "missing_field",
            "deliver_at",
        ),
        (
            "unknown field",
            with("priority", json!(5)),
            400,
            "unknown_field",
            "priority",
        ),
        (
            "routing key of the wrong type",
            with("routing_key", json!(5)),
            400,
            "invalid_type",
            "routing_key",
        ),
        (
            "headers not an object",
            with("headers", json!(["a"])),
            400,
            "invalid_type",
            "headers",
        ),
        (
            "routing key over 255 bytes",
            with("routing_key", json!("é".repeat(128))),
            422,
            "invalid_routing_key",
            "routing_key",
        ),
        (
            "routing key with NUL",
            with("routing_key", json!("a\u{0}b")),
            422,
            "invalid_routing_key",
            "routing_key",
        ),
        (
            "empty exchange",
            with("exchange", json!("")),
            422,
            "invalid_exchange",
            "exchange",
        ),
        (
            "exchange over 255 bytes",
            with("exchange", json!("x".repeat(256))),
            422,
            "invalid_exchange",
            "exchange",
        ),
        (
            "empty key",
            with("key", json!("")),
            422,
            "invalid_key",
            "key",
        ),
        (
            "key over 200 characters",
            with("key", json!("é".repeat(201))),
            422,
            "invalid_key",
            "key",
        ),
        (
            "payload over the limit",
            with("payload", json!("x".repeat(1100))),
            413,
            "payload_too_large",
            "payload",
        ),
        (
            "deliver_at without an offset",
            with("deliver_at", json!("2030-01-01T10:00:00")),
            422,
            "invalid_deliver_at",
            "deliver_at",
        ),
        (
            "deliver_at beyond the horizon",
            with("deliver_at", json!(in_seconds(367 * 86_400))),
            422,
            "invalid_deliver_at",
            "deliver_at",
        ),
        (
            "expires_at not a time",
            with("expires_at", json!("tomorrow")),
            422,
            "invalid_expires_at",
            "expires_at",
        ),
        (
            "expires_at at deliver_at",
            with("expires_at", json!(soon)),
            422,
            "invalid_expires_at",
            "expires_at",
        ),
        (
            "nested header",
            with("headers", json!({"ok": 1, "x-nested": {"a": 1}})),
            422,
            "invalid_header",
            "headers.x-nested",
        ),
        (
            "array header",
            with("headers", json!({"x-list": [1]})),
            422,
            "invalid_header",
            "headers.x-list",
        ),
        (
            "null header",
            with("headers", json!({"x-null": null})),
            422,
            "invalid_header",
            "headers.x-null",
        ),
        (
            "header beyond 64-bit integers",
            with("headers", json!({"x-big": u64::MAX})),
            422,
            "invalid_header",
            "headers.x-big",
        ),
        (
            "header name over 255 bytes",
            with("headers", json!({"h".repeat(256): 1})),
            422,
            "invalid_header",
            "headers",
        ),
        (
            "another exchange",
            with("exchange", json!("amq.topic")),
            403,
            "destination_not_allowed",
            "exchange",
        ),
    ];
    for (name, body, status, code, field) in cases {
        let (got_status, error) = json(api.post_json("/messages", &body).await).await;
        assert_eq!(got_status, status, "{name}: {error}");
        assert_eq!(error["error"], code, "{name}: {error}");
        assert_eq!(error["field"], field, "{name}: {error}");
        assert!(
            error["message"].as_str().is_some_and(|m| !m.is_empty()),
            "{name}"
        );
    }
    // Deeper than serde_json's Value can hold, so sent as text.
    let deep = format!(
        r#"{{"routing_key": "k", "deliver_at": "{soon}", "payload": {}{}}}"#,
        "[".repeat(129),
        "]".repeat(129)
    );
    let (status, error) = json(
        api.request(Method::POST, "/messages")
            .header(CONTENT_TYPE, "application/json")
            .body(deep)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str(), error["field"].as_str()),
        (422, Some("invalid_payload"), Some("payload"))
    );
    // A body over the routes' limit (the payload limit plus 64 KiB) is refused
    // before it is read.
    let huge = with("payload", json!("x".repeat(70 * 1024)));
    let (status, error) = json(api.post_json("/messages", &huge).await).await;
    assert_eq!(
        (status, error["error"].as_str()),
        (413, Some("payload_too_large"))
    );
    let (status, error) = json(
        api.request(Method::POST, "/messages")
            .header(CONTENT_TYPE, "text/plain")
            .body("{}")
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str()),
        (415, Some("unsupported_media_type"))
    );
    assert_eq!(
        count(&db.client().await).await,
        0,
        "no rejected request wrote a message"
    );
}

#[tokio::test]
async fn invalid_changes_are_refused_and_change_nothing() {
    let (_db, api, message, path) = one_message().await;
    let cases: Vec<(Value, u16, &str, Option<&str>)> = vec![
        (json!({}), 422, "nothing_to_change", None),
        (
            json!({"deliver_at": null}),
            422,
            "null_value",
            Some("deliver_at"),
        ),
        (
            json!({"deliver_at": "2030-01-01 10:00"}),
            422,
            "invalid_deliver_at",
            Some("deliver_at"),
        ),
        (
            json!({"deliver_at": in_seconds(400 * 86_400)}),
            422,
            "invalid_deliver_at",
            Some("deliver_at"),
        ),
        (
            json!({"deliver_at": in_seconds(7200), "expires_at": in_seconds(3600)}),
            422,
            "invalid_expires_at",
            Some("expires_at"),
        ),
        (
            json!({"expires_at": in_seconds(60)}),
            422,
            "invalid_expires_at",
            Some("expires_at"),
        ),
        (
            json!({"routing_key": "elsewhere"}),
            400,
            "unknown_field",
            Some("routing_key"),
        ),
    ];
    for (body, status, code, field) in cases {
        let (got, error) = json(api.patch_json(&path, &body).await).await;
        assert_eq!(
            (got, error["error"].as_str(), error["field"].as_str()),
            (status, Some(code), field),
            "{body}: {error}"
        );
    }
    let deep = format!(
        r#"{{"payload": {}1{}}}"#,
        "{\"a\":".repeat(130),
        "}".repeat(130)
    );
    let (status, error) = json(
        api.request(Method::PATCH, &path)
            .header(CONTENT_TYPE, "application/json")
            .body(deep)
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (status, error["error"].as_str(), error["field"].as_str()),
        (422, Some("invalid_payload"), Some("payload"))
    );
    let (_, unchanged) = json(api.get(&path).await).await;
    assert_eq!(unchanged, message);
    for (method, bad) in [
        (Method::GET, "/messages/not-a-uuid"),
        (Method::DELETE, "/messages/1"),
    ] {
        let (status, error) = json(api.request(method, bad).send().await.unwrap()).await;
        assert_eq!((status, error["error"].as_str()), (400, Some("invalid_id")));
    }
}

#[tokio::test]
async fn destinations_off_the_allow_list_are_forbidden_on_create_and_change() {
    let db = TestDb::migrated().await;
    let settings = MessageSettings {
        allowed: Arc::new(
            AllowedRoutes::parse("game_scheduler:game.#,events:bot.*.welcome").unwrap(),
        ),
        ..message_settings()
    };
    let api = TestApi::start_with(&db, Some(TOKEN), settings).await;
    let message = |exchange: Option<&str>, routing_key: &str| {
        let mut body =
            json!({"routing_key": routing_key, "payload": {}, "deliver_at": in_seconds(60)});
        if let Some(exchange) = exchange {
            body["exchange"] = json!(exchange);
        }
        body
    };
    for allowed in [
        message(None, "game.reminder_due"),
        message(None, "game"),
        message(Some("game_scheduler"), "game.a.b"),
        message(Some("events"), "bot.7.welcome"),
    ] {
        let (status, body) = json(api.post_json("/messages", &allowed).await).await;
        assert_eq!(status, 201, "{allowed}: {body}");
    }
    for (refused, field, named) in [
        (
            message(None, "bot.7.welcome"),
            "routing_key",
            "bot.7.welcome",
        ),
        (
            message(Some("events"), "bot.welcome"),
            "routing_key",
            "bot.welcome",
        ),
        (
            message(Some("amq.topic"), "game.x"),
            "exchange",
            "amq.topic",
        ),
        (
            message(Some("game_scheduler "), "game.x"),
            "exchange",
            "game_scheduler ",
        ),
    ] {
        let (status, error) = json(api.post_json("/messages", &refused).await).await;
        assert_eq!(status, 403, "{refused}: {error}");
        assert_eq!(error["error"], "destination_not_allowed");
        assert_eq!(error["field"], field, "{refused}");
        assert!(
            error["message"].as_str().unwrap().contains(named),
            "{error}"
        );
    }
    let client = db.client().await;
    assert_eq!(count(&client).await, 4);

    // A row written by SQL is trusted, but the API edits it only where the
    // API may publish.
    let id: Uuid = client
        .query_one(
            "INSERT INTO scheduled_message (exchange, routing_key, payload, deliver_at) \
             VALUES ('amq.topic', 'anything', '{}', now() + interval '1 hour') RETURNING id",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let path = format!("/messages/{id}");
    let before = json(api.get(&path).await).await.1;
    let (status, error) = json(
        api.patch_json(&path, &json!({"payload": "rewritten"}))
            .await,
    )
    .await;
    assert_eq!((status, error["field"].as_str()), (403, Some("exchange")));
    assert_eq!(json(api.get(&path).await).await.1, before);
}

#[tokio::test]
async fn message_routes_need_the_token_and_are_documented() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let id = Uuid::new_v4();
    for (method, path) in [
        (Method::POST, "/messages".to_owned()),
        (Method::GET, "/messages".to_owned()),
        (Method::GET, format!("/messages/{id}")),
        (Method::PATCH, format!("/messages/{id}")),
        (Method::DELETE, format!("/messages/{id}")),
    ] {
        for authorization in [None, Some("Bearer wrong-token-0123456789")] {
            let mut request = api
                .client
                .request(method.clone(), format!("{}{path}", api.base))
                .json(&json!({"routing_key": "k", "payload": 1, "deliver_at": in_seconds(60)}));
            if let Some(header) = authorization {
                request = request.header("authorization", header);
            }
            let response = request.send().await.unwrap();
            assert_eq!(response.status(), 401, "{method} {path}");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
        }
    }
    assert_eq!(count(&db.client().await).await, 0);

    let (status, document) = json(
        api.client
            .get(format!("{}/openapi.json", api.base))
            .send()
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(status, 200);
    for (path, methods) in [
        ("/messages", &["get", "post"][..]),
        ("/messages/{id}", &["get", "patch", "delete"][..]),
    ] {
        for method in methods {
            let operation = &document["paths"][path][method];
            assert!(operation.is_object(), "{method} {path} undocumented");
            assert_eq!(operation["security"][0]["bearer"], json!([]));
        }
    }
    for schema in [
        "CreateMessage",
        "UpdateMessage",
        "MessageBody",
        "MessagePage",
    ] {
        assert!(
            document["components"]["schemas"][schema].is_object(),
            "{schema}"
        );
    }
}

/// Through the API and the daemon to a consumer: a message scheduled by POST
/// is published at its time, byte for byte, with its headers and its id as
/// `message_id`; one cancelled before its time, due earlier, never is (the
/// daemon publishes in time order, so it would have arrived first).
#[tokio::test]
async fn a_message_scheduled_through_the_api_is_delivered_and_a_cancelled_one_is_not() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let settings = MessageSettings {
        default_exchange: Arc::from(broker.exchange.as_str()),
        allowed: Arc::new(AllowedRoutes::any_key_on(&broker.exchange)),
        ..message_settings()
    };
    let api = TestApi::start_with(&db, Some(TOKEN), settings).await;
    let _daemon = start_daemon(&db, &broker, &[]).await;
    let in_ms = |ms: i64| Utc::now() + chrono::Duration::milliseconds(ms);

    let cancelled = create(
        &api,
        json!({"routing_key": "scheduled.api", "payload": "cancelled", "deliver_at": in_ms(600)}),
    )
    .await;
    let cancelled_path = format!("/messages/{}", cancelled["id"].as_str().unwrap());
    assert_eq!(api.delete(&cancelled_path).await.status(), 204);

    let payload = r#"{ "z": 1, "a" : [ "\u00e9", 12345678901234567890123 ] }"#;
    let deliver_at = in_ms(900);
    let body = format!(
        r#"{{"routing_key": "scheduled.api", "payload": {payload}, "deliver_at": "{}",
            "headers": {{"tenant": "eu-1", "attempt": 3}}}}"#,
        deliver_at.to_rfc3339()
    );
    let response = api
        .request(Method::POST, "/messages")
        .header(CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201);
    let id = response.json::<Value>().await.unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();

    let received = consumer.take(1).await.remove(0);
    assert_eq!(
        received.message_id, id,
        "the first message out is the kept one"
    );
    assert_eq!(String::from_utf8_lossy(&received.raw_body), payload);
    assert!(received.received_at >= deliver_at, "never early");
    assert_eq!(received.text_header("tenant").as_deref(), Some("eu-1"));
    assert_eq!(received.header("attempt"), Some(&AMQPValue::LongLongInt(3)));
    // The daemon commits its claim once the broker has confirmed, which may
    // be after the consumer got the message.
    let path = format!("/messages/{id}");
    wait_for("the message is marked sent", WAIT, || async {
        let (_, sent) = json(api.get(&path).await).await;
        (sent["state"].as_str(), sent["outcome"].as_str()) == (Some("sent"), Some("published"))
    })
    .await;
    let (_, cancelled) = json(api.get(&cancelled_path).await).await;
    assert_eq!(cancelled["state"], "cancelled");
}
