//! The operator console (`/console`) against the real API, daemon, PostgreSQL
//! and RabbitMQ: its login and CSRF rules over plain HTTP, then an operator's
//! session in headless Chromium (tests/common/browser.rs). The browser test
//! saves a screenshot of each page to `CONSOLE_SCREENSHOTS` (docs/console.md
//! shows them), or to a temporary directory it removes.

pub mod common;

use std::sync::Arc;

use common::api::{TOKEN, TestApi, in_seconds, json, message_settings};
use common::browser::Browser;
use common::schedule::{start_daemon, wait_for};
use common::{TestBroker, TestDb, WAIT};
use notification_scheduler::api::ConsoleSettings;
use notification_scheduler::broker::consumer::{QueueKind, ReminderConsumer};
use notification_scheduler::config::BrokerUrl;
use notification_scheduler::messages::allowed::AllowedRoutes;
use reqwest::header;
use reqwest::redirect::Policy;
use serde_json::json;
use uuid::Uuid;

/// A client that shows redirects instead of following them.
fn http() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .timeout(WAIT)
        .build()
        .expect("client")
}

fn location(response: &reqwest::Response) -> String {
    response
        .headers()
        .get(header::LOCATION)
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned()
}

/// Logs in with `token`; the session cookie (`name=value`) if it was accepted.
async fn log_in(api: &TestApi, token: &str, next: &str) -> reqwest::Response {
    http()
        .post(format!("{}/console/login", api.base))
        .form(&[("token", token), ("next", next)])
        .send()
        .await
        .expect("login")
}

fn session_cookie(response: &reqwest::Response) -> String {
    let set = response
        .headers()
        .get(header::SET_COOKIE)
        .and_then(|value| value.to_str().ok())
        .expect("a Set-Cookie header")
        .to_owned();
    set.split(';').next().unwrap_or_default().to_owned()
}

/// The CSRF token of the first form on `html`.
fn csrf_of(html: &str) -> String {
    let marker = "name=\"csrf\" value=\"";
    let start = html.find(marker).expect("a form with a CSRF token") + marker.len();
    html[start..start + 64].to_owned()
}

#[tokio::test]
async fn the_console_needs_a_login_and_every_action_its_sessions_csrf_token() {
    let db = TestDb::migrated().await;
    let api = TestApi::start(&db, Some(TOKEN)).await;
    let client = http();

    // Without a session every page sends the browser to the login form,
    // which brings it back afterwards.
    let page = client
        .get(format!("{}/console/upcoming?kind=reminder", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), 303);
    assert_eq!(
        location(&page),
        "/console/login?next=%2Fconsole%2Fupcoming%3Fkind%3Dreminder"
    );
    let form = client
        .get(format!("{}/console/login", api.base))
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), 200);
    let policy = form.headers()[header::CONTENT_SECURITY_POLICY]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"),
        "{policy}"
    );

    // A wrong token is refused and sets nothing.
    let refused = log_in(&api, "not-the-token-at-all", "/console").await;
    assert_eq!(refused.status(), 401);
    assert!(refused.headers().get(header::SET_COOKIE).is_none());
    assert!(
        refused
            .text()
            .await
            .unwrap()
            .contains("That is not the API token.")
    );

    // The right one sets an HTTP-only, SameSite=Strict cookie for /console
    // and returns to the page asked for; a return address elsewhere is not
    // followed.
    let accepted = log_in(&api, TOKEN, "/console/upcoming?kind=reminder").await;
    assert_eq!(accepted.status(), 303);
    assert_eq!(location(&accepted), "/console/upcoming?kind=reminder");
    let set = accepted.headers()[header::SET_COOKIE]
        .to_str()
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Path=/console"] {
        assert!(set.contains(attribute), "{set} lacks {attribute}");
    }
    let cookie = session_cookie(&accepted);
    let elsewhere = log_in(&api, TOKEN, "https://evil.example/console").await;
    assert_eq!(location(&elsewhere), "/console");

    let overview = client
        .get(format!("{}/console", api.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(overview.status(), 200);
    assert_eq!(overview.headers()[header::CACHE_CONTROL], "no-store");
    let html = overview.text().await.unwrap();
    assert!(html.contains("<h1>Overview</h1>"), "{html}");
    let csrf = csrf_of(&html);

    // A forged or tampered session is no session.
    let forged = client
        .get(format!("{}/console", api.base))
        .header(header::COOKIE, format!("{cookie}0"))
        .send()
        .await
        .unwrap();
    assert_eq!(forged.status(), 303);

    // Actions need the session's CSRF token.
    let post = |csrf: &str| {
        client
            .post(format!("{}/console/dead-letters/retry", api.base))
            .header(header::COOKIE, &cookie)
            .form(&[("csrf", csrf), ("ids", &Uuid::new_v4().to_string())])
            .send()
    };
    let without = post("").await.unwrap();
    assert_eq!(without.status(), 403);
    assert!(
        without
            .text()
            .await
            .unwrap()
            .contains("CSRF token does not match")
    );
    let with = post(&csrf).await.unwrap();
    assert_eq!(with.status(), 303);
    assert_eq!(
        location(&with),
        "/console/dead-letters?done=retried&count=0"
    );

    // The cookie opens the console, not the JSON API; the bearer token still
    // opens the API.
    let api_with_cookie = client
        .get(format!("{}/games", api.base))
        .header(header::COOKIE, &cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(api_with_cookie.status(), 401);
    let (status, _) = json(api.get("/games").await).await;
    assert_eq!(status, 200);

    // Logging out ends the session cookie.
    let out = client
        .post(format!("{}/console/logout", api.base))
        .header(header::COOKIE, &cookie)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .unwrap();
    assert_eq!(out.status(), 303);
    assert!(
        out.headers()[header::SET_COOKIE]
            .to_str()
            .unwrap()
            .contains("Max-Age=0")
    );
}

/// Where the browser test saves its screenshots.
struct Screenshots {
    dir: std::path::PathBuf,
    keep: bool,
}

impl Screenshots {
    fn new() -> Self {
        match std::env::var_os("CONSOLE_SCREENSHOTS") {
            Some(dir) => Self {
                dir: dir.into(),
                keep: true,
            },
            None => Self {
                dir: std::env::temp_dir()
                    .join(format!("console-shots-{}", Uuid::new_v4().simple())),
                keep: false,
            },
        }
    }
}

impl Drop for Screenshots {
    fn drop(&mut self) {
        if !self.keep {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// An operator's session: log in; a game created through the API shows its
/// reminders; one moves from pending to published while the page stays open;
/// a message no queue takes is dead-lettered, retried with a click and
/// delivered; a title holding markup shows as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_operator_watches_deliveries_and_retries_a_dead_letter_in_a_browser() {
    let Some(browser) = Browser::start(1280, 900).await else {
        return;
    };
    let shots = Screenshots::new();
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let _daemon = start_daemon(
        &db,
        &broker,
        &[
            "--max-attempts",
            "2",
            "--retry-base",
            "100ms",
            "--retry-max",
            "200ms",
        ],
    )
    .await;
    let mut messages = message_settings();
    messages.default_exchange = Arc::from(broker.exchange.as_str());
    messages.allowed = Arc::new(AllowedRoutes::any_key_on(&broker.exchange));
    let api = TestApi::start_with_console(
        &db,
        Some(TOKEN),
        messages,
        ConsoleSettings {
            trace_url: Some(Arc::from("https://traces.example/trace/{trace_id}")),
        },
    )
    .await;
    let client = db.client().await;

    // Log in through the form; the login page first, for the docs.
    browser.open(&format!("{}/console", api.base)).await;
    assert!(browser.location().await.starts_with("/console/login"));
    browser.screenshot(&shots.dir, "login").await;
    browser.type_into("#token", "not-the-token").await;
    browser.click("button[type=submit]").await;
    browser
        .wait_text("a wrong token to be refused", ".error", |text| {
            text.contains("not the API token")
        })
        .await;
    browser.type_into("#token", TOKEN).await;
    browser.click("button[type=submit]").await;
    browser
        .wait_text("the overview", "h1", |text| text == "Overview")
        .await;

    // A game whose first reminder is due in 4 s, with markup in its title.
    let title = "Raid night <script>window.injected = true</script> & <b>friends</b>";
    let (status, game) = json(
        api.post_json(
            "/games",
            &json!({"title": title, "scheduled_at": in_seconds(3604), "reminder_minutes": [60, 30]}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{game}");
    let game_id = game["id"].as_str().unwrap().to_owned();
    let first: Uuid = client
        .query_one(
            "SELECT id FROM notification_schedule WHERE game_id = $1 AND reminder_minutes = 60",
            &[&game_id.parse::<Uuid>().unwrap()],
        )
        .await
        .unwrap()
        .get(0);

    // Upcoming, filtered by the game: both reminders, linked to the game.
    browser
        .open(&format!("{}/console/upcoming?game={game_id}", api.base))
        .await;
    browser
        .wait_text(
            "the reminder to be upcoming",
            &format!("#upcoming tr[data-id='{first}']"),
            |text| text.contains("60 min before"),
        )
        .await;
    browser.screenshot(&shots.dir, "upcoming").await;

    // The game's page, left open: the reminder goes from pending to
    // published without a reload (a reload would drop the marker).
    browser
        .click(&format!("#upcoming tr[data-id='{first}'] a"))
        .await;
    browser
        .wait_text("the game page", "#game-title", |text| !text.is_empty())
        .await;
    assert_eq!(
        browser.text("#game-title").await.as_deref(),
        Some(title),
        "the title is shown as text"
    );
    assert_eq!(
        browser.run("return window.injected === undefined").await,
        json!(true)
    );
    let state = format!("#reminders tr[data-id='{first}'] [data-field=state]");
    assert_eq!(browser.text(&state).await.as_deref(), Some("pending"));
    browser.run("window.stayed = true").await;
    browser
        .wait_text("the reminder to be published", &state, |text| {
            text == "published"
        })
        .await;
    assert_eq!(
        browser.run("return window.stayed === true").await,
        json!(true),
        "the page was reloaded"
    );
    browser.screenshot(&shots.dir, "game").await;
    let delivered = consumer
        .next_within(WAIT)
        .await
        .expect("the reminder is delivered");
    assert_eq!(delivered.message_id, first.to_string());

    // Recent deliveries list it with its lateness and outcome.
    browser
        .open(&format!("{}/console/deliveries", api.base))
        .await;
    let row = browser
        .wait_text(
            "the delivery to be listed",
            &format!("#deliveries tr[data-id='{first}']"),
            |text| text.contains("published"),
        )
        .await;
    assert!(row.contains("ms"), "{row}");
    browser.screenshot(&shots.dir, "deliveries").await;

    // A message for a routing key no queue is bound to: the broker returns
    // it on each attempt and it is dead-lettered.
    let key = format!("console.{}", Uuid::new_v4().simple());
    let (status, message) = json(
        api.post_json(
            "/messages",
            &json!({"routing_key": key, "payload": {"note": "<img src=x onerror=alert(1)>"}, "deliver_at": in_seconds(0)}),
        )
        .await,
    )
    .await;
    assert_eq!(status, 201, "{message}");
    let message_id: Uuid = message["id"].as_str().unwrap().parse().unwrap();
    wait_for("the message to be dead-lettered", WAIT, || async {
        client
            .query_one(
                "SELECT state = 'dead_lettered' FROM scheduled_message WHERE id = $1",
                &[&message_id],
            )
            .await
            .unwrap()
            .get(0)
    })
    .await;

    // The overview counts it, and shows the daemon.
    browser.open(&format!("{}/console", api.base)).await;
    let dead = "#kinds tr[data-kind=scheduled_message] [data-field=dead-lettered]";
    browser
        .wait_text("the dead letter to be counted", dead, |text| text == "1")
        .await;
    browser
        .wait_text("the daemon to be listed", "#daemons tbody", |text| {
            text.contains("ready")
        })
        .await;
    browser.screenshot(&shots.dir, "overview").await;

    // Its page shows the payload as text; a queue for its key now exists.
    browser
        .open(&format!("{}/console/messages/{message_id}", api.base))
        .await;
    let payload = browser
        .wait_text("the payload", "#payload", |text| !text.is_empty())
        .await;
    assert!(
        payload.contains("<img src=x onerror=alert(1)>"),
        "{payload}"
    );
    assert_eq!(
        browser.text("#message-state").await.as_deref(),
        Some("dead_lettered")
    );
    browser.screenshot(&shots.dir, "message").await;
    let broker_url: BrokerUrl = broker.url.parse().unwrap();
    let mut taker = ReminderConsumer::bind(
        &broker_url,
        &broker.exchange,
        &[&key],
        QueueKind::Temporary,
        10,
    )
    .await
    .expect("bind a queue for the key");

    // Retry it from the dead letters page, confirming the dialog.
    browser
        .open(&format!("{}/console/dead-letters", api.base))
        .await;
    let row = format!("#dead-letters tr[data-id='{message_id}']");
    let shown = browser
        .wait_text("the dead letter", &row, |text| {
            text.contains("attempts") || !text.is_empty()
        })
        .await;
    assert!(shown.contains("scheduled_message"), "{shown}");
    browser.screenshot(&shots.dir, "dead-letters").await;
    browser
        .click(&format!("{row} button[aria-label^=Retry]"))
        .await;
    browser
        .client
        .accept_alert()
        .await
        .expect("the confirmation");
    browser
        .wait_text("the retry to be reported", ".notice", |text| {
            text == "1 dead letter re-queued for delivery now."
        })
        .await;
    let arrived = tokio::time::timeout(WAIT, taker.next())
        .await
        .expect("the retried message arrives in time")
        .expect("a delivery")
        .expect("a message");
    assert_eq!(
        arrived.message_id.as_deref(),
        Some(message_id.to_string().as_str())
    );

    // The overview no longer counts it; its page says sent.
    browser.open(&format!("{}/console", api.base)).await;
    browser
        .wait_text("the dead letter to be gone", dead, |text| text == "0")
        .await;
    browser
        .open(&format!("{}/console/messages/{message_id}", api.base))
        .await;
    browser
        .wait_text("the message to be sent", "#message-state", |text| {
            text == "sent"
        })
        .await;

    // At a phone's width the overview still fits.
    browser
        .client
        .set_window_size(390, 844)
        .await
        .expect("resize");
    browser.open(&format!("{}/console", api.base)).await;
    let overflow = browser
        .run("return document.documentElement.scrollWidth <= window.innerWidth")
        .await;
    assert_eq!(overflow, json!(true), "the page scrolls sideways at 390 px");
    browser.screenshot(&shots.dir, "overview-phone").await;
    browser.close().await;
}
