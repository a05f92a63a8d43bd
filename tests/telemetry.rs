//! OpenTelemetry export as a collector sees it: the binary's API and daemon
//! export to an OTLP/HTTP endpoint in this test process.

pub mod common;

use common::otlp::{OtlpReceiver, ReceivedSpan, attribute, hex};
use common::process::{
    LogTail, Running, api_command, daemon_command, exits_cleanly, free_port, signal, wait_exit,
    wait_http_ok,
};
use common::{TestBroker, TestDb, WAIT};
use opentelemetry_proto::tonic::metrics::v1::metric::Data;
use opentelemetry_proto::tonic::metrics::v1::number_data_point;

const TOKEN: &str = "telemetry-test-token";
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

fn exporting_to(command: &mut std::process::Command, receiver: &OtlpReceiver) {
    command
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &receiver.endpoint)
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "300");
}

fn named<'a>(spans: &'a [ReceivedSpan], name: &str) -> Vec<&'a ReceivedSpan> {
    spans.iter().filter(|s| s.span.name == name).collect()
}

fn sum_of(receiver: &OtlpReceiver, name: &str, key: &str, value: &str) -> i64 {
    let Some(latest) = receiver.metric(name).pop() else {
        return 0;
    };
    let Some(Data::Sum(sum)) = latest.data else {
        panic!("{name} is a sum")
    };
    sum.data_points
        .iter()
        .filter(|point| attribute(&point.attributes, key).as_deref() == Some(value))
        .map(|point| match point.value {
            Some(number_data_point::Value::AsInt(n)) => n,
            other => panic!("{name} counts integers, got {other:?}"),
        })
        .sum()
}

/// (count, sum) of the latest export of a histogram, over all attributes.
fn histogram_of(receiver: &OtlpReceiver, name: &str) -> (u64, f64) {
    let Some(latest) = receiver.metric(name).pop() else {
        return (0, 0.0);
    };
    let Some(Data::Histogram(histogram)) = latest.data else {
        panic!("{name} is a histogram")
    };
    histogram
        .data_points
        .iter()
        .fold((0, 0.0), |(count, sum), point| {
            (count + point.count, sum + point.sum.unwrap_or_default())
        })
}

/// The next message and the `traceparent` it must carry.
async fn next_traced(consumer: &mut common::TestConsumer) -> (common::Received, String) {
    let message = consumer
        .next_within(WAIT)
        .await
        .expect("the message arrives");
    let traceparent = message
        .traceparent
        .clone()
        .expect("the message carries traceparent");
    (message, traceparent)
}

#[tokio::test]
async fn a_delivered_reminder_is_traced_from_request_to_message_and_measured() {
    let (db, broker, receiver) = (
        TestDb::migrated().await,
        TestBroker::new().await,
        OtlpReceiver::start().await,
    );
    let mut consumer = broker.consumer().await;
    let (api_port, health_port) = (free_port(), free_port());
    let mut api = api_command(&db, api_port, TOKEN);
    exporting_to(&mut api, &receiver);
    let mut api = Running(api.spawn().expect("the API starts"));
    let api_log = LogTail::follow(&mut api.0);
    let mut daemon = daemon_command(&db.url, &broker, health_port);
    exporting_to(&mut daemon, &receiver);
    daemon.env("SCHEDULE_OBSERVE_INTERVAL", "100ms");
    let mut daemon = Running(daemon.spawn().expect("the daemon starts"));
    let daemon_log = LogTail::follow(&mut daemon.0);
    wait_http_ok(api_port, "/readyz").await;
    wait_http_ok(health_port, "/readyz").await;

    let starts_at = chrono::Utc::now() + chrono::Duration::seconds(2);
    let response = reqwest::Client::new()
        .post(format!("http://127.0.0.1:{api_port}/games"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .json(&serde_json::json!({
            "title": "Traced session",
            "scheduled_at": starts_at.to_rfc3339(),
            "reminder_minutes": [0],
        }))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 201, "{}", response.text().await.unwrap());

    let (message, traceparent) = next_traced(&mut consumer).await;

    // SIGTERM flushes: everything must have arrived once both have exited.
    signal(&api.0, "TERM");
    signal(&daemon.0, "TERM");
    exits_cleanly(&mut api, &api_log).await;
    exits_cleanly(&mut daemon, &daemon_log).await;

    let spans = receiver.spans();
    let request = named(&spans, "POST /games");
    assert_eq!(request.len(), 1, "one request span: {:#?}", request);
    let request = request[0];
    assert_eq!(request.service, "notification-scheduler");
    assert_eq!(hex(&request.span.trace_id), CALLER_TRACE);
    assert_eq!(hex(&request.span.parent_span_id), CALLER_SPAN);
    assert_eq!(request.attribute("http.route").as_deref(), Some("/games"));
    assert_eq!(
        request.attribute("http.response.status_code").as_deref(),
        Some("201")
    );

    let batches = named(&spans, "delivery batch");
    let batch = batches
        .iter()
        .find(|batch| {
            batch.span.links.iter().any(|link| {
                link.trace_id == request.span.trace_id && link.span_id == request.span.span_id
            })
        })
        .unwrap_or_else(|| panic!("a delivery batch links to the request: {batches:#?}"));
    // The reminder and the game's IN_PROGRESS transition are both due at the
    // start: one batch of two kinds.
    assert_eq!(batch.attribute("batch.size").as_deref(), Some("2"));
    assert_eq!(
        batch.attribute("kind").as_deref(),
        Some("reminder,status_transition")
    );
    assert!(batch.attribute("lateness.oldest_ms").is_some());
    let children: Vec<&str> = spans
        .iter()
        .filter(|span| span.span.parent_span_id == batch.span.span_id)
        .map(|span| span.span.name.as_str())
        .collect();
    for step in ["publish", "confirm", "commit"] {
        assert!(
            children.contains(&step),
            "{step} under the batch: {children:?}"
        );
    }
    let round = spans
        .iter()
        .find(|span| span.span.span_id == batch.span.parent_span_id)
        .expect("the batch's round was exported");
    // The message continues the delivery (its publish span); the request that
    // scheduled it is linked from the batch, checked above.
    let publish = spans
        .iter()
        .find(|span| span.span.name == "publish" && span.span.parent_span_id == batch.span.span_id)
        .expect("the batch's publish span was exported");
    assert_eq!(&traceparent[3..35], hex(&round.span.trace_id));
    assert_eq!(&traceparent[36..52], hex(&publish.span.span_id));
    assert_eq!(message.body["trace_id"], hex(&round.span.trace_id));
    assert_eq!(round.span.name, "delivery round");
    assert!(
        round.span.parent_span_id.is_empty(),
        "each round is a trace of its own"
    );
    assert!(
        spans.iter().all(|span| span.span.name != "Actor"),
        "actor lifetimes are not exported as spans"
    );
    assert!(
        spans
            .iter()
            .any(|span| span.span.name == "claim" && span.span.parent_span_id == round.span.span_id)
    );

    // Sent: the reminder and the IN_PROGRESS transition, one of each kind.
    assert_eq!(
        sum_of(
            &receiver,
            "notification_scheduler.reminders",
            "outcome",
            "sent"
        ),
        2
    );
    for kind in ["reminder", "status_transition"] {
        assert_eq!(
            sum_of(&receiver, "notification_scheduler.reminders", "kind", kind),
            1,
            "{kind}"
        );
    }
    let (late_count, late_sum_ms) =
        histogram_of(&receiver, "notification_scheduler.reminder.lateness");
    assert_eq!(late_count, 2);
    assert!(
        (0.0..10_000.0).contains(&late_sum_ms),
        "plausible lateness: {late_sum_ms} ms"
    );
    assert_eq!(
        histogram_of(&receiver, "notification_scheduler.batch.size"),
        (1, 2.0)
    );
    assert!(
        !receiver
            .metric("notification_scheduler.reminders.pending")
            .is_empty()
    );
    assert!(
        !receiver
            .metric("notification_scheduler.next_due")
            .is_empty()
    );
    let (requests, _) = histogram_of(&receiver, "http.server.request.duration");
    assert!(requests >= 1, "the API request was measured");
    let resources = receiver.metric_resources();
    assert!(resources.iter().all(|attributes| {
        ["service.name", "service.version", "service.instance.id"]
            .iter()
            .all(|key| attribute(attributes, key).is_some())
    }));
}

/// A row written by plain SQL has no stored trace context; its message still
/// carries the delivery's, so the consumer joins the delivery trace.
#[tokio::test]
async fn a_row_written_by_plain_sql_is_delivered_in_the_delivery_trace() {
    let (db, broker, receiver) = (
        TestDb::migrated().await,
        TestBroker::new().await,
        OtlpReceiver::start().await,
    );
    let mut consumer = broker.consumer().await;
    let health_port = free_port();
    let mut daemon = daemon_command(&db.url, &broker, health_port);
    exporting_to(&mut daemon, &receiver);
    let mut daemon = Running(daemon.spawn().expect("the daemon starts"));
    let daemon_log = LogTail::follow(&mut daemon.0);
    wait_http_ok(health_port, "/readyz").await;
    let client = db.client().await;
    common::schedule::schedule(&client, 3_600_000, &[500]).await;
    // A row without a stored context still gets one.
    let (message, traceparent) = next_traced(&mut consumer).await;
    signal(&daemon.0, "TERM");
    exits_cleanly(&mut daemon, &daemon_log).await;

    let spans = receiver.spans();
    let publish = spans
        .iter()
        .find(|span| hex(&span.span.span_id) == traceparent[36..52])
        .expect("the message's parent span was exported");
    assert_eq!(publish.span.name, "publish");
    assert_eq!(hex(&publish.span.trace_id), traceparent[3..35]);
    assert_eq!(message.body["trace_id"], traceparent[3..35]);
}

#[tokio::test]
async fn an_unreachable_collector_is_reported_once_and_delivery_goes_on() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let health_port = free_port();
    let mut daemon = daemon_command(&db.url, &broker, health_port);
    daemon
        .env(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            format!("http://127.0.0.1:{}", free_port()),
        )
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf")
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("OTEL_METRIC_EXPORT_INTERVAL", "100");
    let mut daemon = Running(daemon.spawn().expect("the daemon starts"));
    let log = LogTail::follow(&mut daemon.0);
    wait_http_ok(health_port, "/readyz").await;
    let client = db.client().await;
    common::schedule::backlog(&client, 20).await;
    assert_eq!(consumer.take(20).await.len(), 20);
    log.wait_for_line("telemetry export failing", WAIT).await;
    signal(&daemon.0, "TERM");
    assert_eq!(wait_exit(&mut daemon.0).await.code(), Some(0));
    let text = log.text();
    for signal in ["\"signal\":\"traces\"", "\"signal\":\"metrics\""] {
        let reports = text
            .lines()
            .filter(|line| line.contains("telemetry export failing") && line.contains(signal))
            .count();
        assert!(
            reports <= 1,
            "reported once per state change, not per attempt:\n{text}"
        );
    }
}

#[tokio::test]
async fn without_otlp_settings_nothing_is_exported_or_reported() {
    let (db, broker) = (TestDb::migrated().await, TestBroker::new().await);
    let mut consumer = broker.consumer().await;
    let health_port = free_port();
    let mut daemon = Running(
        daemon_command(&db.url, &broker, health_port)
            .spawn()
            .expect("the daemon starts"),
    );
    let log = LogTail::follow(&mut daemon.0);
    wait_http_ok(health_port, "/readyz").await;
    common::schedule::backlog(&db.client().await, 5).await;
    assert_eq!(consumer.take(5).await.len(), 5);
    signal(&daemon.0, "TERM");
    assert_eq!(wait_exit(&mut daemon.0).await.code(), Some(0));
    let text = log.text();
    assert!(!text.to_lowercase().contains("telemetry"), "{text}");
    assert!(!text.to_lowercase().contains("otlp"), "{text}");
}

#[tokio::test]
async fn json_log_lines_carry_trace_and_span_ids() {
    let db = TestDb::migrated().await;
    let port = free_port();
    let mut api = Running(
        api_command(&db, port, TOKEN)
            .spawn()
            .expect("the API starts"),
    );
    let log = LogTail::follow(&mut api.0);
    wait_http_ok(port, "/healthz").await;
    let response = reqwest::Client::new()
        .get(format!("http://127.0.0.1:{port}/games"))
        .bearer_auth(TOKEN)
        .header("traceparent", format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    log.wait_for_line(CALLER_TRACE, WAIT).await;
    let line = log
        .text()
        .lines()
        .find(|line| line.contains(CALLER_TRACE))
        .map(str::to_owned)
        .unwrap();
    let json: serde_json::Value = serde_json::from_str(&line).expect("a JSON line");
    assert_eq!(json["trace_id"], CALLER_TRACE);
    assert_eq!(json["span_id"].as_str().map(str::len), Some(16));
}

#[tokio::test]
async fn a_lost_broker_connection_shows_as_a_restart_and_a_reconnect() {
    let (db, broker, receiver) = (
        TestDb::migrated().await,
        TestBroker::new().await,
        OtlpReceiver::start().await,
    );
    let mut consumer = broker.consumer().await;
    let proxy = common::proxy::FaultProxy::start(common::rabbitmq_address()).await;
    let proxied = broker.via(proxy.url_for(&broker.url));
    let health_port = free_port();
    let mut daemon = daemon_command(&db.url, &proxied, health_port);
    exporting_to(&mut daemon, &receiver);
    daemon.args(["--restart-backoff-min", "10ms"]);
    let mut daemon = Running(daemon.spawn().expect("the daemon starts"));
    let log = LogTail::follow(&mut daemon.0);
    wait_http_ok(health_port, "/readyz").await;

    proxy.cut();
    log.wait_for_line("actor recovered", WAIT).await;
    common::schedule::backlog(&db.client().await, 3).await;
    assert_eq!(consumer.take(3).await.len(), 3);
    signal(&daemon.0, "TERM");
    assert_eq!(
        wait_exit(&mut daemon.0).await.code(),
        Some(0),
        "{}",
        log.text()
    );

    assert!(
        sum_of(
            &receiver,
            "notification_scheduler.actor.restarts",
            "actor",
            "publisher"
        ) >= 1
    );
    assert!(
        sum_of(
            &receiver,
            "notification_scheduler.reconnects",
            "component",
            "publisher"
        ) >= 1
    );
    let spans = receiver.spans();
    let restart = named(&spans, "actor restart");
    assert!(
        restart
            .iter()
            .any(|span| span.attribute("actor").as_deref() == Some("publisher")),
        "{restart:#?}"
    );
    assert!(!named(&spans, "publisher connect").is_empty());
}
