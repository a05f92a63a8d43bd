//! W3C trace context: stored with rows (turned into span links) and carried
//! by every published message.

use std::collections::HashMap;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The `traceparent` of `span`, when spans are exported (otherwise the span
/// has no OpenTelemetry context and there is nothing to propagate).
pub fn of_span(span: &tracing::Span) -> Option<String> {
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&span.context(), &mut carrier);
    carrier.remove("traceparent")
}

/// The span context a `traceparent` (version 00) names, if it is well formed
/// and valid (non-zero ids).
pub fn from_traceparent(traceparent: &str) -> Option<SpanContext> {
    // The propagator reads ids with from_str_radix (short or '+'-signed ones pass)
    // and takes future versions; stored values must be exact version-00 ones.
    let exact = traceparent.starts_with("00-")
        && traceparent.split('-').map(str::len).eq([2, 32, 16, 2])
        && traceparent
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_hexdigit());
    let carrier = HashMap::from([("traceparent".to_owned(), traceparent.to_owned())]);
    let context = TraceContextPropagator::new().extract(&carrier);
    let span_context = context.span().span_context().clone();
    (exact && span_context.is_valid()).then_some(span_context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_well_formed_traceparent_gives_its_ids() {
        let context =
            from_traceparent("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        assert_eq!(
            context.trace_id().to_string(),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(context.span_id().to_string(), "00f067aa0ba902b7");
        assert!(context.is_sampled());
        assert!(context.is_remote());
    }

    #[test]
    fn malformed_or_zero_traceparents_give_nothing() {
        for bad in [
            "",
            "garbage",
            "01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
        ] {
            assert_eq!(from_traceparent(bad), None, "{bad}");
        }
    }
}
