//! Tracing set-up for Shoji's binaries: OpenTelemetry bridge, exporters, span sinks.
//!
//! How the parts compose: spans are recorded with `tracing` and bridged to the OpenTelemetry SDK
//! by `tracing-opentelemetry`. The SDK hands finished spans to an exporter that converts them to
//! OTLP (`ExportTraceServiceRequest`, via opentelemetry-proto's transform) — never an SDK struct
//! on the wire. On the host ([`host`]), that request and the agent's forwarded requests enter one
//! bounded [`pipeline::Pipeline`] that feeds one [`sink::SpanSink`] (the embedded store or an OTLP
//! endpoint). In the guest ([`guest`]), the request is framed (`SHJT`) and written to vsock port
//! 10240.

pub mod convert;
#[cfg(feature = "guest")]
pub mod guest;
#[cfg(feature = "host")]
pub mod host;
pub mod levels;
pub mod logs;
#[cfg(feature = "host")]
pub mod pipeline;
#[cfg(feature = "host")]
pub mod sampling;
#[cfg(feature = "host")]
pub mod sink;

pub use opentelemetry::trace::SpanContext;
pub use opentelemetry::KeyValue;
pub use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// W3C trace-context entries (`traceparent`, `tracestate`) for the current `tracing` span, or
/// for its nearest ancestor that is exported when the span's level leaves it out
/// ([`levels::kept_context`]): a span made elsewhere under it must not name a span that never
/// arrives. The sampled flag is the trace's decision, so the receiver honours it.
pub fn current_trace_context() -> Vec<(String, String)> {
    use opentelemetry::propagation::TextMapPropagator;
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let kept = levels::kept_context(cx.span().span_context());
    let cx = opentelemetry::Context::new().with_remote_span_context(kept);
    let mut map = std::collections::HashMap::new();
    opentelemetry_sdk::propagation::TraceContextPropagator::new().inject_context(&cx, &mut map);
    map.into_iter().collect()
}

/// The trace and span id (hex) of the current `tracing` span, if it is sampled: what another
/// process needs to end that span in its place when this one dies (`host::export_detached`).
pub fn current_sampled_ids() -> Option<(String, String)> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let cx = tracing::Span::current().context();
    let sc = cx.span().span_context().clone();
    (sc.is_valid() && sc.is_sampled())
        .then(|| (sc.trace_id().to_string(), sc.span_id().to_string()))
}

/// Makes `span` a child of the context carried by W3C `traceparent`/`tracestate` values.
pub fn set_parent_from_w3c(span: &tracing::Span, get: impl Fn(&str) -> Option<String>) {
    use opentelemetry::propagation::TextMapPropagator;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let mut map = std::collections::HashMap::new();
    for key in ["traceparent", "tracestate"] {
        if let Some(v) = get(key) {
            map.insert(key.to_string(), v);
        }
    }
    if map.is_empty() {
        return;
    }
    let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&map);
    let _ = span.set_parent(cx);
}

/// The context of `span` when the span is exported: valid, sampled, and kept by its level
/// ([`levels::kept_context`]). What another span may link to; `None` for a span nobody will
/// see, since a link to it would lead nowhere.
pub fn exported_context(span: &tracing::Span) -> Option<SpanContext> {
    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    let sc = span.context().span().span_context().clone();
    let kept =
        sc.is_valid() && sc.is_sampled() && levels::kept_context(&sc).span_id() == sc.span_id();
    kept.then_some(sc)
}

/// Adds an OTLP link from `span` to the span `to` names (in any trace). Jaeger's form shows it
/// as a `FOLLOWS_FROM` reference.
pub fn add_link(span: &tracing::Span, to: SpanContext) {
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    span.add_link(to);
}
