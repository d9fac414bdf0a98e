//! The agent's tracing: console log lines always (with trace and span ids when tracing); with
//! `shoji.trace=1` on the kernel command line, spans exported to the host as OTLP in `SHJT`
//! frames (shoji-telemetry's guest exporter), with log records as span events.
//! Boot phases become spans with the times the agent recorded, under the runtime's boot span
//! named by `shoji.traceparent`.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, OnceLock};

use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _, TracerProvider as _};
use opentelemetry::KeyValue;
use opentelemetry_sdk::trace::SdkTracerProvider;
use shoji_telemetry::guest::GuestCounters;
use shoji_telemetry::logs::{span_event_level, span_layer, LogLayer};
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::boot::BootParams;

struct State {
    provider: SdkTracerProvider,
    counters: Arc<GuestCounters>,
    flusher: shoji_telemetry::guest::GuestFlusher,
    /// Agent-only tracing (no context from the host): the agent's lifetime span, parent of
    /// everything else, ended at shutdown.
    root: Option<opentelemetry::Context>,
}

static STATE: OnceLock<State> = OnceLock::new();

/// Installs the console logger at `params.log`, and span export if `params.trace`: log records
/// at `params.log` (the runtime's `trace_log_level`) and above also become span events. Every
/// console line carries the trace and span id of the span it was logged in; lines outside any
/// span carry those of the runtime's boot span (or of the agent's own root span).
pub fn init(params: &BootParams) {
    let console_filter = || {
        tracing_subscriber::EnvFilter::try_new(&params.log)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"))
    };
    let console = LogLayer::new(crate::console::PREFIX, crate::console::write_line);
    if !params.trace || params.trace_level == shoji_protocols::TraceLevel::Off {
        let _ = tracing_subscriber::registry()
            .with(console.with_filter(console_filter()))
            .try_init();
        return;
    }
    let (provider, counters, flusher) = shoji_telemetry::guest::provider(
        "shoji-agent",
        shoji_protocols::TRACE_VSOCK_PORT,
        shoji_telemetry::levels::Levels::all(params.trace_level),
    );
    let root = params.traceparent.is_none().then(|| {
        let tracer = provider.tracer("shoji-agent");
        let start = std::time::UNIX_EPOCH
            + std::time::Duration::from_nanos(crate::boot::kernel_entered_ns());
        let span = tracer
            .span_builder("agent")
            .with_start_time(start)
            .with_attributes(vec![
                KeyValue::new("source", "agent"),
                KeyValue::new("package", "shoji_agent"),
                KeyValue::new("subsystem", "agent"),
                KeyValue::new("sandbox_id", params.sandbox_id.clone()),
            ])
            .start(&tracer);
        opentelemetry::Context::new().with_span(span)
    });
    let outside_spans = match &root {
        Some(cx) => cx.span().span_context().clone(),
        None => boot_parent(params).span().span_context().clone(),
    };
    let otel = span_layer(
        provider.tracer("shoji-agent"),
        span_event_level(&params.log),
    );
    let _ = tracing_subscriber::registry()
        .with(
            console
                .with_fallback(outside_spans)
                .with_filter(console_filter()),
        )
        .with(otel)
        .try_init();
    let _ = STATE.set(State {
        provider,
        counters,
        flusher,
        root,
    });
}

/// The runtime's boot span, named by `shoji.traceparent` on the kernel command line.
fn boot_parent(params: &BootParams) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator;
    let mut carrier = HashMap::new();
    if let Some(tp) = &params.traceparent {
        carrier.insert("traceparent".to_string(), tp.clone());
    }
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier)
}

/// Boot phases as spans: `agent.boot` (kernel entered to agent ready) with one child per phase.
pub fn boot_spans(params: &BootParams, phases: &[(String, u64)]) {
    let Some(state) = STATE.get() else { return };
    let tracer = state.provider.tracer("shoji-agent");
    let parent = match &state.root {
        Some(root) => root.clone(),
        None => boot_parent(params),
    };
    let t = |name: &str| {
        phases
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| std::time::UNIX_EPOCH + std::time::Duration::from_nanos(*t))
    };
    let (Some(k), Some(i), Some(s), Some(m), Some(r)) = (
        t("kernel.entered"),
        t("init.reached"),
        t("basics.ready"),
        t("modules.loaded"),
        t("agent.ready"),
    ) else {
        return;
    };
    let attrs = |subsystem: &'static str| {
        vec![
            KeyValue::new("source", "agent"),
            KeyValue::new("package", "shoji_agent::boot"),
            KeyValue::new("subsystem", subsystem),
            KeyValue::new("sandbox_id", params.sandbox_id.clone()),
        ]
    };
    let root = tracer
        .span_builder("agent.boot")
        .with_start_time(k)
        .with_attributes(attrs("boot"))
        .start_with_context(&tracer, &parent);
    let cx = parent.with_span(root);
    for (name, a, b) in [
        ("kernel.boot", k, i),
        ("agent.setup", i, s),
        ("modules.load", s, m),
        ("agent.start", m, r),
    ] {
        let mut s = tracer
            .span_builder(name)
            .with_start_time(a)
            .with_attributes(attrs("boot"))
            .start_with_context(&tracer, &cx);
        s.end_with_timestamp(b);
    }
    cx.span().end_with_timestamp(r);
}

/// Makes `span` a child of the caller's span named by W3C `traceparent` in ttRPC metadata.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &HashMap<String, Vec<String>>) {
    if let Some(root) = STATE.get().and_then(|s| s.root.clone()) {
        if !metadata.contains_key(shoji_protocols::TRACEPARENT_KEY) {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            let _ = span.set_parent(root);
            return;
        }
    }
    shoji_telemetry::set_parent_from_w3c(span, |k| {
        metadata.get(k).and_then(|v| v.first().cloned())
    });
}

/// Spans dropped so far (host not reachable).
pub fn dropped_spans() -> u64 {
    STATE
        .get()
        .map_or(0, |s| s.counters.dropped.load(Ordering::Relaxed))
}

/// Flushes pending spans; returns (exported, dropped).
pub fn flush() -> (u64, u64) {
    let Some(s) = STATE.get() else { return (0, 0) };
    if let Some(root) = &s.root {
        root.span().end();
    }
    let _ = s.provider.force_flush();
    // Everything queued is written (or counted as dropped) before the VM powers off. A host that
    // reads too slowly (its sink is behind) leaves spans queued at the timeout: the VM stops
    // right after this, so they count as dropped.
    s.flusher.flush(std::time::Duration::from_secs(3));
    (
        s.counters.exported.load(Ordering::Relaxed),
        s.counters.dropped.load(Ordering::Relaxed) + s.counters.pending.load(Ordering::Relaxed),
    )
}
