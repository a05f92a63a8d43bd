//! The console's pages (GET) and actions (POST), rendered from the templates
//! in `templates/` (askama: compiled in, HTML-escaped by default, so titles,
//! payloads and errors, which are user data, show as text).

use std::collections::HashMap;

use askama::Template;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::{Extension, Form};
use chrono::{DateTime, NaiveDateTime, SecondsFormat, Utc};
use serde::Deserialize;
use uuid::Uuid;

use super::ConsoleState;
use super::queries::{self, EventRow, UpcomingFilter};
use super::session::{self, Session};
use crate::api::error::ApiError;
use crate::db::kind_sql::OBSERVE_EXACT_UP_TO;
use crate::kinds::{self, Kind};
use crate::messages::{MessageChanges, MessageState};
use crate::{dead_letters, games, messages};

/// Rows per list page.
const PAGE_SIZE: i64 = 50;

/// A failed console request, shown as a page.
#[derive(Debug)]
pub struct ConsoleError {
    status: StatusCode,
    message: String,
}

impl ConsoleError {
    fn forbidden(message: &str) -> Self {
        Self {
            status: StatusCode::FORBIDDEN,
            message: message.to_owned(),
        }
    }

    fn invalid(message: String) -> Self {
        Self {
            status: StatusCode::UNPROCESSABLE_ENTITY,
            message,
        }
    }

    fn not_found(what: &str) -> Self {
        Self {
            status: StatusCode::NOT_FOUND,
            message: format!("no {what} with this id"),
        }
    }

    fn internal(err: &dyn std::error::Error) -> Self {
        ApiError::internal(err).into()
    }
}

impl From<session::CsrfMismatch> for ConsoleError {
    fn from(err: session::CsrfMismatch) -> Self {
        Self::forbidden(&err.to_string())
    }
}

impl From<ApiError> for ConsoleError {
    fn from(err: ApiError) -> Self {
        Self {
            status: err.status,
            message: err.body.message,
        }
    }
}

#[derive(Template)]
#[template(path = "error.html")]
struct ErrorPage {
    layout: Layout,
    message: String,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        let page = ErrorPage {
            layout: Layout {
                title: format!("Error {}", self.status.as_u16()),
                nav: "",
                csrf: String::new(),
                open: true,
                notice: None,
            },
            message: self.message,
        };
        (self.status, render(&page)).into_response()
    }
}

/// What every page's frame needs.
pub struct Layout {
    title: String,
    /// Which navigation entry is the current page.
    nav: &'static str,
    /// The session's CSRF token, for the forms.
    csrf: String,
    /// No login (no logout button).
    open: bool,
    /// What the last action did.
    notice: Option<String>,
}

impl Layout {
    fn new(
        state: &ConsoleState,
        session: &Session,
        title: impl Into<String>,
        nav: &'static str,
    ) -> Self {
        Self {
            title: title.into(),
            nav,
            csrf: state.sessions.csrf(session),
            open: state.sessions.open(),
            notice: None,
        }
    }
}

fn render(page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "rendering a console page failed");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page could not be rendered",
            )
                .into_response()
        }
    }
}

type Page = Result<Response, ConsoleError>;

async fn connection(state: &ConsoleState) -> Result<deadpool_postgres::Object, ConsoleError> {
    Ok(state.api.connection().await?)
}

// ---- formatting -------------------------------------------------------------

fn time(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%d %H:%M:%S%.3f UTC").to_string()
}

fn optional_time(at: Option<DateTime<Utc>>) -> String {
    at.map_or_else(|| "—".to_owned(), time)
}

/// "in 4.2 s", "3 min ago".
fn relative(seconds: f64) -> String {
    let magnitude = seconds.abs();
    let amount = if magnitude < 60.0 {
        format!("{magnitude:.1} s")
    } else if magnitude < 3600.0 {
        format!("{:.0} min", magnitude / 60.0)
    } else if magnitude < 172_800.0 {
        format!("{:.1} h", magnitude / 3600.0)
    } else {
        format!("{:.0} days", magnitude / 86_400.0)
    };
    if seconds >= 0.0 {
        format!("in {amount}")
    } else {
        format!("{amount} ago")
    }
}

fn since(at: DateTime<Utc>, now: DateTime<Utc>) -> String {
    relative((at - now).num_milliseconds() as f64 / 1000.0)
}

fn count(value: i64) -> String {
    if value > OBSERVE_EXACT_UP_TO {
        format!("≈{value}")
    } else {
        value.to_string()
    }
}

fn milliseconds(value: Option<f64>) -> String {
    value.map_or_else(|| "—".to_owned(), |ms| format!("{ms:.1} ms"))
}

/// A `datetime-local` input's value (UTC) for `at`.
fn local_input(at: DateTime<Utc>) -> String {
    at.format("%Y-%m-%dT%H:%M:%S%.3f").to_string()
}

/// A `datetime-local` input's value, read as UTC.
fn parse_local(raw: &str, field: &str) -> Result<Option<DateTime<Utc>>, ConsoleError> {
    let raw = raw.trim();
    if raw.is_empty() {
        return Ok(None);
    }
    ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
        .iter()
        .find_map(|format| NaiveDateTime::parse_from_str(raw, format).ok())
        .map(|naive| Some(naive.and_utc()))
        .ok_or_else(|| {
            ConsoleError::invalid(format!(
                "{field} must be a date and time such as 2026-12-24T18:30:00 (UTC), got {raw:?}"
            ))
        })
}

fn kind_named(raw: Option<&String>) -> Result<Option<&'static Kind>, ConsoleError> {
    match raw.map(String::as_str) {
        None | Some("") => Ok(None),
        Some(name) => crate::config::parse::kind(name)
            .map(Some)
            .map_err(ConsoleError::invalid),
    }
}

fn kind_names() -> Vec<&'static str> {
    kinds::ALL.iter().map(|kind| kind.name).collect()
}

// ---- overview ---------------------------------------------------------------

struct KindView {
    name: &'static str,
    pending: String,
    overdue: String,
    next_due: String,
    delivered: String,
    lateness: String,
    skipped: String,
    dead_lettered: String,
}

struct DaemonView {
    instance: String,
    version: String,
    ready: bool,
    detail: String,
    seen: String,
    started: String,
}

#[derive(Template)]
#[template(path = "overview.html")]
struct OverviewPage {
    layout: Layout,
    kinds: Vec<KindView>,
    daemons: Vec<DaemonView>,
    exact_up_to: i64,
    seen_recently: &'static str,
    as_of: String,
}

pub async fn overview(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
) -> Page {
    let client = connection(&state).await?;
    let kinds = queries::overview(&**client)
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    let daemons = queries::daemons(&**client)
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    let now = Utc::now();
    let page = OverviewPage {
        layout: Layout::new(&state, &session, "Overview", "overview"),
        kinds: kinds
            .into_iter()
            .map(|kind| KindView {
                name: kind.kind,
                pending: count(kind.pending),
                overdue: count(kind.overdue),
                next_due: kind.next_due_s.map_or_else(|| "—".to_owned(), relative),
                delivered: kind.delivered.to_string(),
                lateness: format!(
                    "{} / {}",
                    milliseconds(kind.lateness_p50_ms),
                    milliseconds(kind.lateness_p99_ms)
                ),
                skipped: kind.skipped.to_string(),
                dead_lettered: count(kind.dead_lettered),
            })
            .collect(),
        daemons: daemons
            .into_iter()
            .map(|daemon| DaemonView {
                detail: daemon
                    .detail
                    .as_ref()
                    .and_then(|detail| detail.as_object())
                    .map(|detail| {
                        detail
                            .iter()
                            .map(|(part, why)| {
                                format!("{part}: {}", why.as_str().unwrap_or_default())
                            })
                            .collect::<Vec<_>>()
                            .join("; ")
                    })
                    .unwrap_or_default(),
                seen: since(daemon.seen_at, now),
                started: since(daemon.started_at, now),
                instance: daemon.instance,
                version: daemon.version,
                ready: daemon.ready,
            })
            .collect(),
        exact_up_to: OBSERVE_EXACT_UP_TO,
        seen_recently: queries::SEEN_RECENTLY,
        as_of: time(now),
    };
    Ok(render(&page))
}

// ---- lists of events --------------------------------------------------------

struct TraceView {
    id: String,
    href: Option<String>,
}

struct EventView {
    id: Uuid,
    kind: &'static str,
    when: String,
    due: String,
    subject: String,
    subject_href: Option<String>,
    label: String,
    lateness: String,
    outcome: String,
    attempts: i32,
    trace: Option<TraceView>,
}

impl EventView {
    fn new(event: EventRow, recent: bool, state: &ConsoleState, now: DateTime<Utc>) -> Self {
        let (subject, subject_href) = match &event.game {
            Some((id, title)) => (
                title.clone().unwrap_or_else(|| format!("game {id}")),
                Some(format!("/console/games/{id}")),
            ),
            None => (
                "message".to_owned(),
                Some(format!("/console/messages/{}", event.id)),
            ),
        };
        let trace = event
            .traceparent
            .as_deref()
            .and_then(trace_id)
            .map(|id| TraceView {
                href: state
                    .api
                    .console
                    .trace_url
                    .as_deref()
                    .map(|url| url.replace("{trace_id}", &id)),
                id,
            });
        let when = if recent {
            event.done_at.map_or_else(|| time(event.due_at), time)
        } else {
            format!("{} ({})", time(event.due_at), since(event.due_at, now))
        };
        Self {
            id: event.id,
            kind: event.kind,
            when,
            due: time(event.due_at),
            subject,
            subject_href,
            lateness: milliseconds(event.lateness_ms()),
            outcome: event.outcome.clone().unwrap_or_default(),
            attempts: event.attempts,
            label: event.label,
            trace,
        }
    }
}

/// The trace id of a W3C `traceparent` (`00-<trace id>-<span id>-<flags>`).
fn trace_id(traceparent: &str) -> Option<String> {
    let id = traceparent.split('-').nth(1)?;
    (id.len() == 32 && id.bytes().all(|b| b.is_ascii_hexdigit())).then(|| id.to_owned())
}

/// The upcoming page's filter as typed (to show it again).
#[derive(Default)]
struct FilterView {
    kind: String,
    game: String,
    routing_key: String,
    from: String,
    to: String,
}

#[derive(Template)]
#[template(path = "upcoming.html")]
struct UpcomingPage {
    layout: Layout,
    filter: FilterView,
    kind_names: Vec<&'static str>,
    events: Vec<EventView>,
    next_page: Option<String>,
}

pub async fn upcoming(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Page {
    let text = |name: &str| {
        params
            .get(name)
            .map(|v| v.trim().to_owned())
            .filter(|v| !v.is_empty())
    };
    let after = match params.get("after") {
        Some(raw) if !raw.is_empty() => Some(parse_after(raw)?),
        _ => None,
    };
    let filter = UpcomingFilter {
        kind: kind_named(params.get("kind"))?,
        game: text("game"),
        routing_key: text("routing_key"),
        from: parse_local(params.get("from").map_or("", String::as_str), "from")?,
        to: parse_local(params.get("to").map_or("", String::as_str), "to")?,
        after,
    };
    let client = connection(&state).await?;
    let mut events = queries::upcoming(&**client, &filter, PAGE_SIZE + 1)
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    let next_page = if events.len() > usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX) {
        events.truncate(usize::try_from(PAGE_SIZE).unwrap_or(usize::MAX));
        events.last().map(|last| {
            let mut query: Vec<(String, String)> = params
                .iter()
                .filter(|(name, _)| name.as_str() != "after")
                .map(|(name, value)| (name.clone(), value.clone()))
                .collect();
            query.sort();
            query.push((
                "after".to_owned(),
                format!(
                    "{}_{}",
                    last.due_at.to_rfc3339_opts(SecondsFormat::Micros, true),
                    last.id
                ),
            ));
            let encoded: String = url::form_urlencoded::Serializer::new(String::new())
                .extend_pairs(query)
                .finish();
            format!("/console/upcoming?{encoded}")
        })
    } else {
        None
    };
    let now = Utc::now();
    let page = UpcomingPage {
        layout: Layout::new(&state, &session, "Upcoming", "upcoming"),
        filter: FilterView {
            kind: filter
                .kind
                .map(|kind| kind.name.to_owned())
                .unwrap_or_default(),
            game: filter.game.unwrap_or_default(),
            routing_key: filter.routing_key.unwrap_or_default(),
            from: filter.from.map(local_input).unwrap_or_default(),
            to: filter.to.map(local_input).unwrap_or_default(),
        },
        kind_names: kind_names(),
        events: events
            .into_iter()
            .map(|event| EventView::new(event, false, &state, now))
            .collect(),
        next_page,
    };
    Ok(render(&page))
}

fn parse_after(raw: &str) -> Result<(DateTime<Utc>, Uuid), ConsoleError> {
    let invalid = || {
        ConsoleError::invalid(format!(
            "after must be a page position from a Next page link, got {raw:?}"
        ))
    };
    let (at, id) = raw.rsplit_once('_').ok_or_else(invalid)?;
    let at = DateTime::parse_from_rfc3339(at)
        .map_err(|_| invalid())?
        .with_timezone(&Utc);
    Ok((at, id.parse().map_err(|_| invalid())?))
}

#[derive(Template)]
#[template(path = "deliveries.html")]
struct DeliveriesPage {
    layout: Layout,
    selected_kind: String,
    kind_names: Vec<&'static str>,
    events: Vec<EventView>,
    shown: i64,
}

pub async fn deliveries(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Page {
    let kind = kind_named(params.get("kind"))?;
    let client = connection(&state).await?;
    let events = queries::recent(&**client, kind, PAGE_SIZE)
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    let now = Utc::now();
    let page = DeliveriesPage {
        layout: Layout::new(&state, &session, "Recent deliveries", "deliveries"),
        selected_kind: kind.map(|kind| kind.name.to_owned()).unwrap_or_default(),
        kind_names: kind_names(),
        events: events
            .into_iter()
            .map(|event| EventView::new(event, true, &state, now))
            .collect(),
        shown: PAGE_SIZE,
    };
    Ok(render(&page))
}

// ---- dead letters -----------------------------------------------------------

struct LetterView {
    kind: &'static str,
    id: Uuid,
    href: Option<String>,
    due: String,
    dead_lettered: String,
    attempts: i32,
    last_error: String,
}

#[derive(Template)]
#[template(path = "dead_letters.html")]
struct DeadLettersPage {
    layout: Layout,
    selected_kind: String,
    kind_names: Vec<&'static str>,
    letters: Vec<LetterView>,
    /// Every id shown, comma-separated, for the "all shown" buttons.
    all_ids: String,
}

pub async fn dead_letters_page(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Query(params): Query<HashMap<String, String>>,
) -> Page {
    let kind = kind_named(params.get("kind"))?;
    let client = connection(&state).await?;
    let letters = dead_letters::list(
        &**client,
        &dead_letters::selected(kind),
        usize::try_from(PAGE_SIZE).unwrap_or(50),
        None,
    )
    .await
    .map_err(|err| ConsoleError::internal(&err))?;
    let mut layout = Layout::new(&state, &session, "Dead letters", "dead-letters");
    layout.notice = notice(&params);
    let all_ids = letters
        .iter()
        .map(|letter| letter.id.to_string())
        .collect::<Vec<_>>()
        .join(",");
    let page = DeadLettersPage {
        layout,
        selected_kind: kind.map(|kind| kind.name.to_owned()).unwrap_or_default(),
        kind_names: kind_names(),
        letters: letters
            .into_iter()
            .map(|letter| LetterView {
                href: (letter.kind == kinds::scheduled_message::KIND.name)
                    .then(|| format!("/console/messages/{}", letter.id)),
                kind: letter.kind,
                id: letter.id,
                due: time(letter.due_at),
                dead_lettered: time(letter.dead_lettered_at),
                attempts: letter.attempts,
                last_error: letter.last_error.unwrap_or_default(),
            })
            .collect(),
        all_ids,
    };
    Ok(render(&page))
}

/// What an action reports on the page it returns to (`?done=…&count=…`).
fn notice(params: &HashMap<String, String>) -> Option<String> {
    let count: usize = params.get("count")?.parse().ok()?;
    let verb = match params.get("done")?.as_str() {
        "retried" => "re-queued for delivery now",
        "discarded" => "discarded",
        "cancelled" => return Some("The message was cancelled.".to_owned()),
        "rescheduled" => return Some("The message was rescheduled.".to_owned()),
        _ => return None,
    };
    Some(match count {
        0 => "Nothing changed: those were no longer dead letters.".to_owned(),
        1 => format!("1 dead letter {verb}."),
        n => format!("{n} dead letters {verb}."),
    })
}

/// A posted form: its CSRF token and the rest.
#[derive(Deserialize)]
pub struct ActionForm {
    csrf: String,
    #[serde(default)]
    ids: String,
    #[serde(default)]
    deliver_at: String,
}

fn ids_of(form: &ActionForm) -> Result<Vec<Uuid>, ConsoleError> {
    form.ids
        .split(',')
        .filter(|id| !id.trim().is_empty())
        .map(|id| {
            id.trim()
                .parse()
                .map_err(|_| ConsoleError::invalid(format!("ids must be event ids, got {id:?}")))
        })
        .collect()
}

pub async fn retry_dead_letters(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ActionForm>,
) -> Page {
    state.sessions.check_csrf(&session, &form.csrf)?;
    let ids = ids_of(&form)?;
    let client = connection(&state).await?;
    let retried = dead_letters::retry(&**client, &kinds::ALL, Some(&ids))
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    tracing::info!(
        count = retried.len(),
        "dead letters re-queued from the console"
    );
    Ok(Redirect::to(&format!(
        "/console/dead-letters?done=retried&count={}",
        retried.len()
    ))
    .into_response())
}

pub async fn discard_dead_letters(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ActionForm>,
) -> Page {
    state.sessions.check_csrf(&session, &form.csrf)?;
    let ids = ids_of(&form)?;
    let client = connection(&state).await?;
    let discarded = dead_letters::discard(&**client, &ids)
        .await
        .map_err(|err| ConsoleError::internal(&err))?;
    tracing::info!(
        count = discarded.len(),
        "dead letters discarded from the console"
    );
    Ok(Redirect::to(&format!(
        "/console/dead-letters?done=discarded&count={}",
        discarded.len()
    ))
    .into_response())
}

// ---- a game -----------------------------------------------------------------

struct ScheduledView {
    id: Uuid,
    label: String,
    due: String,
    state: String,
    done: String,
}

#[derive(Template)]
#[template(path = "game.html")]
struct GamePage {
    layout: Layout,
    id: Uuid,
    title: String,
    scheduled_at: String,
    reminder_minutes: String,
    duration: String,
    reminders: Vec<ScheduledView>,
    transitions: Vec<ScheduledView>,
}

pub async fn game(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
) -> Page {
    let id: Uuid = id.parse().map_err(|_| ConsoleError::not_found("game"))?;
    let client = connection(&state).await?;
    let (game, schedule) = games::get(&client, id)
        .await
        .map_err(|err| ConsoleError::internal(&err))?
        .ok_or_else(|| ConsoleError::not_found("game"))?;
    let defaults = &state.api.defaults;
    let minutes = games::effective(&game, &defaults.reminder_minutes)
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let now = Utc::now();
    let page = GamePage {
        layout: Layout::new(&state, &session, format!("Game: {}", game.title), ""),
        id: game.id,
        scheduled_at: format!(
            "{} ({})",
            time(game.scheduled_at),
            since(game.scheduled_at, now)
        ),
        reminder_minutes: if game.reminder_minutes.is_some() {
            minutes
        } else {
            format!("{minutes} (the defaults)")
        },
        duration: format!("{} min", games::duration(&game, defaults)),
        reminders: schedule
            .reminders
            .into_iter()
            .map(|reminder| ScheduledView {
                id: reminder.id,
                label: reminder.reminder_minutes.to_string(),
                due: time(reminder.notification_time),
                state: match (reminder.sent, reminder.outcome) {
                    (true, Some(outcome)) => outcome,
                    (true, None) => "sent".to_owned(),
                    (false, Some(outcome)) if outcome == "dead_lettered" => outcome,
                    (false, _) => "pending".to_owned(),
                },
                done: optional_time(reminder.sent_at),
            })
            .collect(),
        transitions: schedule
            .transitions
            .into_iter()
            .map(|transition| ScheduledView {
                id: transition.id,
                label: transition.target_status,
                due: time(transition.transition_time),
                state: if transition.executed {
                    "executed"
                } else {
                    "pending"
                }
                .to_owned(),
                done: optional_time(transition.executed_at),
            })
            .collect(),
        title: game.title,
    };
    Ok(render(&page))
}

// ---- a scheduled message ----------------------------------------------------

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage {
    layout: Layout,
    id: Uuid,
    state: &'static str,
    pending: bool,
    deliver_at: String,
    deliver_at_input: String,
    expires_at: String,
    exchange: String,
    routing_key: String,
    key: String,
    attempts: i32,
    last_error: String,
    done: String,
    outcome: String,
    payload: String,
    headers: String,
}

pub async fn message(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<String>,
    Query(params): Query<HashMap<String, String>>,
) -> Page {
    let id: Uuid = id.parse().map_err(|_| ConsoleError::not_found("message"))?;
    let client = connection(&state).await?;
    let message = messages::get(&client, id)
        .await
        .map_err(|err| ConsoleError::internal(&err))?
        .ok_or_else(|| ConsoleError::not_found("message"))?;
    let now = Utc::now();
    let pretty = |raw: &str| {
        serde_json::from_str::<serde_json::Value>(raw)
            .and_then(|value| serde_json::to_string_pretty(&value))
            .unwrap_or_else(|_| raw.to_owned())
    };
    let mut layout = Layout::new(&state, &session, format!("Message {}", message.id), "");
    layout.notice = notice(&params);
    let page = MessagePage {
        layout,
        id: message.id,
        state: message.state.as_str(),
        pending: message.state == MessageState::Pending,
        deliver_at: format!(
            "{} ({})",
            time(message.deliver_at),
            since(message.deliver_at, now)
        ),
        deliver_at_input: local_input(message.deliver_at),
        expires_at: optional_time(message.expires_at),
        exchange: message
            .exchange
            .clone()
            .unwrap_or_else(|| format!("{} (the default)", state.api.messages.default_exchange)),
        routing_key: message.routing_key.clone(),
        key: message.key.clone().unwrap_or_else(|| "—".to_owned()),
        attempts: message.attempts,
        last_error: message.last_error.clone().unwrap_or_else(|| "—".to_owned()),
        done: optional_time(message.sent_at),
        outcome: message.outcome.clone().unwrap_or_else(|| "—".to_owned()),
        payload: pretty(message.payload.get()),
        headers: message
            .headers
            .as_ref()
            .map_or_else(|| "—".to_owned(), |headers| pretty(&headers.to_string())),
    };
    Ok(render(&page))
}

pub async fn cancel_message(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<Uuid>,
    Form(form): Form<ActionForm>,
) -> Page {
    state.sessions.check_csrf(&session, &form.csrf)?;
    crate::api::messages::cancel(&state.api, id).await?;
    tracing::info!(%id, "message cancelled from the console");
    Ok(Redirect::to(&format!("/console/messages/{id}?done=cancelled&count=1")).into_response())
}

pub async fn reschedule_message(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Path(id): Path<Uuid>,
    Form(form): Form<ActionForm>,
) -> Page {
    state.sessions.check_csrf(&session, &form.csrf)?;
    let deliver_at = parse_local(&form.deliver_at, "the new time")?
        .ok_or_else(|| ConsoleError::invalid("the new time is required".to_owned()))?;
    let raw = deliver_at.to_rfc3339_opts(SecondsFormat::Micros, true);
    let deliver_at =
        crate::api::messages::validate_deliver_at(&raw, Utc::now(), &state.api.messages)?;
    let changes = MessageChanges {
        deliver_at: Some(deliver_at),
        ..MessageChanges::default()
    };
    crate::api::messages::change(&state.api, id, &changes, "deliver_at").await?;
    tracing::info!(%id, %deliver_at, "message rescheduled from the console");
    Ok(Redirect::to(&format!("/console/messages/{id}?done=rescheduled&count=1")).into_response())
}

// ---- login ------------------------------------------------------------------

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage {
    next: String,
    error: Option<&'static str>,
}

pub async fn login_form(
    State(state): State<ConsoleState>,
    Query(params): Query<HashMap<String, String>>,
) -> Response {
    let next = session::safe_next(params.get("next").map(String::as_str)).to_owned();
    if state.sessions.open() {
        return Redirect::to(&next).into_response();
    }
    render(&LoginPage { next, error: None })
}

#[derive(Deserialize)]
pub struct LoginForm {
    token: String,
    #[serde(default)]
    next: String,
}

pub async fn login(State(state): State<ConsoleState>, Form(form): Form<LoginForm>) -> Response {
    let next = session::safe_next(Some(&form.next)).to_owned();
    let accepted = state
        .token
        .as_ref()
        .is_none_or(|token| token.matches(form.token.trim()));
    if !accepted {
        tracing::warn!("console login with a wrong token");
        let page = LoginPage {
            next,
            error: Some("That is not the API token."),
        };
        return (StatusCode::UNAUTHORIZED, render(&page)).into_response();
    }
    let mut response = Redirect::to(&next).into_response();
    response.headers_mut().insert(
        header::SET_COOKIE,
        session::cookie(Some(state.sessions.issue(Utc::now()))),
    );
    response
}

pub async fn logout(
    State(state): State<ConsoleState>,
    Extension(session): Extension<Session>,
    Form(form): Form<ActionForm>,
) -> Page {
    state.sessions.check_csrf(&session, &form.csrf)?;
    let mut response = Redirect::to("/console/login").into_response();
    response
        .headers_mut()
        .insert(header::SET_COOKIE, session::cookie(None));
    Ok(response)
}

// ---- assets -----------------------------------------------------------------

pub async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    )
}

pub async fn script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("max-age=300"),
            ),
        ],
        body,
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_times_read_naturally() {
        assert_eq!(relative(4.24), "in 4.2 s");
        assert_eq!(relative(-180.0), "3 min ago");
        assert_eq!(relative(7200.0), "in 2.0 h");
        assert_eq!(relative(-864_000.0), "10 days ago");
    }

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        assert_eq!(
            trace_id("00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01").as_deref(),
            Some("0af7651916cd43dd8448eb211c80319c")
        );
        assert_eq!(trace_id("00-<script>-b7ad6b7169203331-01"), None);
        assert_eq!(trace_id("garbage"), None);
    }

    #[test]
    fn datetime_inputs_are_read_as_utc_and_bad_ones_name_the_field() {
        let at = parse_local("2026-12-24T18:30", "from").unwrap().unwrap();
        assert_eq!(at.to_rfc3339(), "2026-12-24T18:30:00+00:00");
        let at = parse_local("2026-12-24T18:30:05.250", "from")
            .unwrap()
            .unwrap();
        assert_eq!(local_input(at), "2026-12-24T18:30:05.250");
        assert_eq!(parse_local("  ", "from").unwrap(), None);
        let err = parse_local("tomorrow", "from").unwrap_err();
        assert!(err.message.contains("from must be"), "{}", err.message);
    }

    #[test]
    fn page_positions_round_trip() {
        let id = Uuid::new_v4();
        let at = Utc::now();
        let raw = format!("{}_{id}", at.to_rfc3339_opts(SecondsFormat::Micros, true));
        let (parsed_at, parsed_id) = parse_after(&raw).unwrap();
        assert_eq!(parsed_id, id);
        assert_eq!(parsed_at.timestamp_micros(), at.timestamp_micros());
        assert!(parse_after("nonsense").is_err());
    }
}
