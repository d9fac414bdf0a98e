//! The agent's tracing set-up. Today: log lines to the console. The OTLP span export over vsock
//! (port 10240, SHJT frames) plugs in here; see docs/tracing.md for what is and is not done.

use std::collections::HashMap;

/// Installs the console logger at `level`.
pub fn init(level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(false)
        .without_time()
        .with_writer(std::io::stderr)
        .try_init();
}

/// Makes `span` a child of the caller's span named by the W3C `traceparent` in ttRPC metadata.
/// Without a span exporter there is nothing to link yet; the value is logged at debug.
pub fn set_parent_from_metadata(span: &tracing::Span, metadata: &HashMap<String, Vec<String>>) {
    if let Some(tp) = metadata
        .get(shoji_protocols::TRACEPARENT_KEY)
        .and_then(|v| v.first())
    {
        span.in_scope(|| tracing::debug!(traceparent = %tp, "caller context"));
    }
}

/// Spans dropped so far.
pub fn dropped_spans() -> u64 {
    0
}

/// Flushes pending spans; returns (exported, dropped).
pub fn flush() -> (u64, u64) {
    (0, 0)
}
