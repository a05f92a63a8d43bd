//! One span, one log line and one duration measurement per HTTP request, with
//! the HTTP semantic convention names. A `traceparent` header makes the span
//! a child of the caller's; [`traceparent`] is what rows written by the
//! request store of it.
//!
//! Not tower-http's `TraceLayer`: its span needs the same custom callbacks for
//! the route template, status, trace-context extraction and the duration
//! metric, so the layer would add a dependency without removing this code.

use std::sync::OnceLock;

use axum::extract::{MatchedPath, Request};
use axum::http::HeaderMap;
use axum::middleware::Next;
use axum::response::Response;
use opentelemetry::KeyValue;
use opentelemetry::metrics::Histogram;
use opentelemetry::propagation::Extractor;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// Second bucket bounds of `http.server.request.duration`, as the semantic
/// conventions advise.
const DURATION_BUCKETS_S: [f64; 14] = [
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
];

fn request_duration() -> &'static Histogram<f64> {
    static HISTOGRAM: OnceLock<Histogram<f64>> = OnceLock::new();
    HISTOGRAM.get_or_init(|| {
        opentelemetry::global::meter(actors::metrics::METER_NAME)
            .f64_histogram("http.server.request.duration")
            .with_unit("s")
            .with_description("Duration of HTTP server requests, by method, route and status")
            .with_boundaries(DURATION_BUCKETS_S.to_vec())
            .build()
    })
}

struct Headers<'a>(&'a HeaderMap);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(axum::http::HeaderName::as_str).collect()
    }
}

/// Records the request in a span named after its route.
pub async fn record(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let method = request.method().clone();
    let span = tracing::info_span!(
        "HTTP request",
        otel.name = format!("{method} {route}"),
        otel.kind = "server",
        otel.status_code = tracing::field::Empty,
        http.request.method = %method,
        http.route = route.as_str(),
        url.path = request.uri().path(),
        http.response.status_code = tracing::field::Empty,
    );
    let caller = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&Headers(request.headers()))
    });
    // Without a valid header the span starts a trace of its own.
    let _ = span.set_parent(caller);
    let started = std::time::Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let elapsed = started.elapsed();
    let status = response.status().as_u16();
    span.record("http.response.status_code", status);
    request_duration().record(
        elapsed.as_secs_f64(),
        &[
            KeyValue::new("http.request.method", method.as_str().to_owned()),
            KeyValue::new("http.route", route),
            KeyValue::new("http.response.status_code", i64::from(status)),
        ],
    );
    let elapsed_ms = elapsed.as_secs_f64() * 1000.0;
    span.in_scope(|| {
        if status >= 500 {
            tracing::Span::current().record("otel.status_code", "ERROR");
            tracing::error!(status, elapsed_ms, "request failed");
        } else {
            tracing::info!(status, elapsed_ms, "request");
        }
    });
    response
}

/// The W3C trace context stored with rows a request schedules: the request's
/// own span (a child of the caller's `traceparent`), or the caller's header as
/// given when no tracing layer is installed.
pub fn traceparent(headers: &HeaderMap) -> Option<String> {
    crate::telemetry::current_traceparent().or_else(|| {
        headers
            .get("traceparent")
            .and_then(|value| value.to_str().ok())
            .filter(|value| actors::trace_context::from_traceparent(value).is_some())
            .map(str::to_owned)
    })
}
