//! Logs, traces and metrics.
//!
//! Logs go to stderr as text or JSON lines; JSON lines carry the trace and
//! span ids of the span they were written in. Traces and metrics are exported
//! over OTLP only when the standard variables ask for it
//! (`OTEL_EXPORTER_OTLP_ENDPOINT`, or the per-signal `..._TRACES_ENDPOINT`,
//! `..._METRICS_ENDPOINT`), with the protocol of `OTEL_EXPORTER_OTLP_PROTOCOL`
//! (`http/protobuf` by default, or `grpc`); otherwise nothing is exported and
//! nothing is said about it. Spans are created either way, so ids in logs and
//! stored trace context work without a collector.
//!
//! Exports run on the SDK's own threads with bounded queues: an unreachable
//! collector never slows delivery. Its failures are logged once per change of
//! state (failing, working again), not per attempt.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opentelemetry::KeyValue;
use opentelemetry::trace::{TraceContextExt, TracerProvider};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::metrics::data::ResourceMetrics;
use opentelemetry_sdk::metrics::exporter::PushMetricExporter;
use opentelemetry_sdk::metrics::{PeriodicReader, SdkMeterProvider, Temporality};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};
use tracing::{Event, Subscriber};
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::filter::filter_fn;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::parse::mask_password;
use crate::config::{LogFormat, LoggingArgs};

/// Name of this service when `OTEL_SERVICE_NAME` does not give one.
const SERVICE_NAME: &str = "notification-scheduler";

/// The installed providers, to flush and shut down last.
pub struct Telemetry {
    tracer: SdkTracerProvider,
    meter: Option<SdkMeterProvider>,
}

impl Telemetry {
    /// Flushes and stops the exporters, bounded so a dead collector cannot
    /// hold up the exit.
    pub async fn shutdown(self) {
        let shutdown = tokio::task::spawn_blocking(move || {
            let _ = self.tracer.shutdown();
            if let Some(meter) = self.meter {
                let _ = meter.shutdown();
            }
        });
        if tokio::time::timeout(Duration::from_secs(5), shutdown)
            .await
            .is_err()
        {
            tracing::warn!("telemetry did not flush within 5s; some spans or metrics may be lost");
        }
    }
}

/// A name for this process in broker connection lists and telemetry
/// (`service.instance.id`): host name and process id.
pub fn instance_id() -> &'static str {
    static INSTANCE_ID: OnceLock<String> = OnceLock::new();
    INSTANCE_ID.get_or_init(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|name| name.trim().to_owned())
            .unwrap_or_else(|_| "unknown-host".to_owned());
        format!("{host}:{}", std::process::id())
    })
}

static METRICS_EXPORTED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are exported, so that observations which cost a query are
/// made only when someone reads them.
pub fn metrics_exported() -> bool {
    METRICS_EXPORTED.load(Ordering::Relaxed)
}

/// Installs the global subscriber and the OpenTelemetry providers. Must run
/// inside the Tokio runtime (the gRPC exporter binds to it). Fails with a
/// one-line message for an invalid RUST_LOG or OTLP setting.
pub fn init(args: &LoggingArgs) -> Result<Telemetry, String> {
    check_otlp_settings()?;
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives).map_err(|err| {
            format!("invalid RUST_LOG: '{directives}' ({err}); expected tracing directives such as info,actors=debug")
        })?,
        // lapin logs every returned message with its whole body at warn; the
        // scheduler reports returns itself, once per batch.
        _ => EnvFilter::new(format!("{},lapin::returned_messages=error", args.log_level.as_directive())),
    };
    let resource = resource(instance_id());
    let mut tracer = SdkTracerProvider::builder().with_resource(resource.clone());
    if exported("TRACES") {
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .build()
            .map_err(|err| {
                format!(
                    "invalid OTLP trace export settings: {}",
                    mask_password(&err.to_string())
                )
            })?;
        tracer = tracer.with_batch_exporter(Reporting::new("traces", exporter));
    }
    let tracer = tracer.build();
    opentelemetry::global::set_tracer_provider(tracer.clone());
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let meter = if exported("METRICS") {
        let exporter = opentelemetry_otlp::MetricExporter::builder()
            .with_temporality(Temporality::Cumulative)
            .build()
            .map_err(|err| {
                format!(
                    "invalid OTLP metric export settings: {}",
                    mask_password(&err.to_string())
                )
            })?;
        let provider = SdkMeterProvider::builder()
            .with_resource(resource)
            .with_reader(PeriodicReader::builder(Reporting::new("metrics", exporter)).build())
            .build();
        opentelemetry::global::set_meter_provider(provider.clone());
        METRICS_EXPORTED.store(true, Ordering::Relaxed);
        Some(provider)
    } else {
        None
    };

    // ractor wraps each actor's whole life in a span: not an operation.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer.tracer(SERVICE_NAME))
        .with_filter(filter_fn(|metadata| {
            !metadata.target().starts_with("ractor")
        }));
    let logs = match args.log_format {
        LogFormat::Text => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(std::io::stderr().is_terminal())
            .boxed(),
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .event_format(JsonLines)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(filter)
        .with(traces)
        .with(logs)
        .try_init()
        .map_err(|err| format!("cannot install the logger: {err}"))?;
    Ok(Telemetry { tracer, meter })
}

/// The OTLP exporter silently ignores a protocol it does not know and quotes
/// a bad endpoint whole, credentials included; check both first, naming the
/// variable.
fn check_otlp_settings() -> Result<(), String> {
    for name in [
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
    ] {
        if let Ok(value) = std::env::var(name)
            && !value.trim().is_empty()
        {
            let valid = (value.starts_with("http://") || value.starts_with("https://"))
                && value
                    .parse::<axum::http::Uri>()
                    .is_ok_and(|uri| uri.host().is_some_and(|host| !host.is_empty()));
            if !valid {
                return Err(format!(
                    "invalid {name}: '{}'; expected http://host:port or https://host:port",
                    mask_password(&value)
                ));
            }
        }
    }
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL",
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
    ] {
        if let Ok(value) = std::env::var(name)
            && !value.trim().is_empty()
            && !matches!(value.trim(), "grpc" | "http/protobuf")
        {
            return Err(format!(
                "invalid {name}: '{value}'; expected grpc or http/protobuf"
            ));
        }
    }
    Ok(())
}

/// Whether OTLP export of a signal (`TRACES`, `METRICS`) is configured.
fn exported(signal: &str) -> bool {
    let set = |name: &str| std::env::var(name).is_ok_and(|value| !value.trim().is_empty());
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"))
        || std::env::var(format!("OTEL_{signal}_EXPORTER"))
            .is_ok_and(|v| v.eq_ignore_ascii_case("none"));
    !disabled
        && (set("OTEL_EXPORTER_OTLP_ENDPOINT")
            || set(&format!("OTEL_EXPORTER_OTLP_{signal}_ENDPOINT")))
}

/// service.name, service.version and service.instance.id, unless
/// `OTEL_SERVICE_NAME` or `OTEL_RESOURCE_ATTRIBUTES` set them.
fn resource(instance_id: &str) -> Resource {
    let given = std::env::var("OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
    let sets = |key: &str| {
        given
            .split(',')
            .any(|pair| pair.trim().starts_with(&format!("{key}=")))
    };
    let mut builder = Resource::builder();
    if std::env::var("OTEL_SERVICE_NAME").is_err() && !sets("service.name") {
        builder = builder.with_service_name(SERVICE_NAME);
    }
    if !sets("service.version") {
        builder =
            builder.with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
    }
    if !sets("service.instance.id") {
        builder =
            builder.with_attribute(KeyValue::new("service.instance.id", instance_id.to_owned()));
    }
    builder.build()
}

/// The W3C `traceparent` of the current span, to store with what it creates.
pub fn current_traceparent() -> Option<String> {
    actors::trace_context::of_span(&tracing::Span::current())
}

/// Wraps an exporter and logs when exporting starts failing or works again.
#[derive(Debug)]
struct Reporting<E> {
    signal: &'static str,
    inner: E,
    failing: Arc<AtomicBool>,
}

impl<E> Reporting<E> {
    fn new(signal: &'static str, inner: E) -> Self {
        Self {
            signal,
            inner,
            failing: Arc::default(),
        }
    }

    fn observe(&self, result: &OTelSdkResult) {
        match result {
            Err(err) if !self.failing.swap(true, Ordering::Relaxed) => {
                tracing::warn!(signal = self.signal, error = %err, "telemetry export failing; delivery is unaffected, retrying quietly");
            }
            Ok(()) if self.failing.swap(false, Ordering::Relaxed) => {
                tracing::info!(signal = self.signal, "telemetry export works again");
            }
            _ => {}
        }
    }
}

impl<E: SpanExporter> SpanExporter for Reporting<E> {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        let result = self.inner.export(batch).await;
        self.observe(&result);
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

impl<E: PushMetricExporter> PushMetricExporter for Reporting<E> {
    async fn export(&self, metrics: &ResourceMetrics) -> OTelSdkResult {
        let result = self.inner.export(metrics).await;
        self.observe(&result);
        result
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn temporality(&self) -> Temporality {
        self.inner.temporality()
    }
}

/// One JSON object per event: time, level, target, fields, the current span's
/// name and the OpenTelemetry trace and span ids.
struct JsonLines;

impl<S, N> FormatEvent<S, N> for JsonLines
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        let metadata = event.metadata();
        let mut line = serde_json::Map::new();
        line.insert(
            "timestamp".into(),
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
                .into(),
        );
        line.insert("level".into(), metadata.level().as_str().into());
        line.insert("target".into(), metadata.target().into());
        event.record(&mut JsonFields(&mut line));
        if let Some(span) = ctx.lookup_current() {
            line.insert("span".into(), span.name().into());
            let context = tracing::Span::current().context();
            let otel_span = context.span();
            let ids = otel_span.span_context();
            if ids.is_valid() {
                line.insert("trace_id".into(), ids.trace_id().to_string().into());
                line.insert("span_id".into(), ids.span_id().to_string().into());
            }
        }
        writeln!(writer, "{}", serde_json::Value::Object(line))
    }
}

struct JsonFields<'a>(&'a mut serde_json::Map<String, serde_json::Value>);

impl tracing::field::Visit for JsonFields<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn fmt::Debug) {
        self.0
            .insert(field.name().into(), format!("{value:?}").into());
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_i64(&mut self, field: &tracing::field::Field, value: i64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_u64(&mut self, field: &tracing::field::Field, value: u64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_f64(&mut self, field: &tracing::field::Field, value: f64) {
        self.0.insert(field.name().into(), value.into());
    }

    fn record_bool(&mut self, field: &tracing::field::Field, value: bool) {
        self.0.insert(field.name().into(), value.into());
    }
}
