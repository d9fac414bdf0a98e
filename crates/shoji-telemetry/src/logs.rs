//! Log records, as lines and as span events, the same way in the runtime and in the agent.
//!
//! Two layers see every `tracing` event. [`LogLayer`] writes it as one line,
//! `PREFIX: LEVEL: message key=value ... trace_id=.. span_id=..`, the ids being those of the
//! OpenTelemetry span current on this thread (`tracing-opentelemetry` attaches a span's context
//! when the span is entered), so that a log line leads to its span and back. [`span_layer`] is
//! the OpenTelemetry bridge, filtered so that events at the configured level and above become
//! span events while spans at `info` and above always pass: the level chooses which *log
//! records* are kept on the trace, never which of Shoji's spans exist.

use std::fmt::Write as _;

use opentelemetry::trace::{SpanContext, TraceContextExt};
use tracing::field::{Field, Visit};
use tracing::{Event, Subscriber};
use tracing_subscriber::filter::{FilterFn, LevelFilter};
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// Where finished lines go; each call gets one whole line, newline included.
pub type LineWriter = Box<dyn Fn(&str) + Send + Sync>;

/// One line per event, carrying the current span's trace and span id.
pub struct LogLayer {
    prefix: &'static str,
    writer: LineWriter,
    /// Ids for lines logged outside any span (the agent before its first RPC: the runtime's
    /// boot span, or the agent's own root span).
    fallback: Option<SpanContext>,
}

impl std::fmt::Debug for LogLayer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogLayer")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl LogLayer {
    pub fn new(prefix: &'static str, writer: impl Fn(&str) + Send + Sync + 'static) -> Self {
        Self {
            prefix,
            writer: Box::new(writer),
            fallback: None,
        }
    }

    /// Lines written to stderr, one `write_all` each so that threads do not interleave.
    pub fn stderr(prefix: &'static str) -> Self {
        Self::new(prefix, |line| {
            use std::io::Write;
            let _ = std::io::stderr().lock().write_all(line.as_bytes());
        })
    }

    /// Ids to print when no span is current; ignored unless valid.
    pub fn with_fallback(mut self, cx: SpanContext) -> Self {
        self.fallback = cx.is_valid().then_some(cx);
        self
    }

    /// The line for `event`, without the trailing newline.
    fn format(&self, event: &Event<'_>) -> String {
        let mut line = format!(
            "{}: {}",
            self.prefix,
            event.metadata().level().as_str().to_lowercase()
        );
        event.record(&mut Fields(&mut line));
        let current = opentelemetry::Context::map_current(|cx| cx.span().span_context().clone());
        let ids = if current.is_valid() {
            Some(current)
        } else {
            self.fallback.clone()
        };
        if let Some(sc) = ids {
            let _ = write!(line, " trace_id={} span_id={}", sc.trace_id(), sc.span_id());
        }
        line
    }
}

impl<S: Subscriber> Layer<S> for LogLayer {
    fn on_event(&self, event: &Event<'_>, _ctx: Context<'_, S>) {
        let mut line = self.format(event);
        line.push('\n');
        (self.writer)(&line);
    }
}

struct Fields<'a>(&'a mut String);

impl Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            let _ = write!(self.0, ": {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        if field.name() == "message" {
            let _ = write!(self.0, ": {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}

/// `trace_log_level` as a filter: `error`..`trace`, or `off`. Anything else means the default,
/// `info`.
pub fn span_event_level(level: &str) -> LevelFilter {
    level.trim().parse().unwrap_or(LevelFilter::INFO)
}

/// The OpenTelemetry bridge for `tracer`: spans at `info` and above, and the events at `level`
/// and above as span events of the current span.
pub fn span_layer<S, T>(tracer: T, level: LevelFilter) -> impl Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: opentelemetry::trace::Tracer + Send + Sync + 'static,
    T::Span: Send + Sync,
{
    tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(events_at(level))
}

/// Spans at `info` and above whatever the level; below that they are libraries' internals
/// (h2 and tonic trace their frame handling: exporting those spans would trace the export path
/// itself, one trace per frame sent). Events at `level` and above.
fn events_at(level: LevelFilter) -> FilterFn<impl Fn(&tracing::Metadata<'_>) -> bool> {
    tracing_subscriber::filter::filter_fn(move |m| {
        if m.is_span() {
            *m.level() <= tracing::Level::INFO
        } else {
            *m.level() <= level
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn level_names_parse_and_nonsense_means_info() {
        assert_eq!(span_event_level("debug"), LevelFilter::DEBUG);
        assert_eq!(span_event_level("WARN"), LevelFilter::WARN);
        assert_eq!(span_event_level("off"), LevelFilter::OFF);
        assert_eq!(span_event_level("shoji=debug"), LevelFilter::INFO);
    }
}
