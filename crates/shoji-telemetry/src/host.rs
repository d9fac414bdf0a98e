//! The host binaries' telemetry: a `tracing` subscriber that logs to stderr (every line with its
//! trace and span id) and, with tracing on, bridges spans to OpenTelemetry and exports them
//! through the [`Pipeline`] to the chosen sink.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

use crate::convert;
use crate::pipeline::Pipeline;
use crate::sink::{GrpcSink, HttpSink, SinkError, SpanSink, StoreSink};

#[derive(Debug, Clone, Default)]
pub struct TelemetryConfig {
    /// Set up span export at all (runtime or agent tracing on).
    pub tracing: bool,
    /// Export the runtime's own spans too; false in agent-only mode, where only forwarded
    /// agent spans go to the sink.
    pub runtime_spans: bool,
    /// The embedded store's data directory, used when no OTLP endpoint is configured.
    pub data_dir: PathBuf,
    /// Config keys; each overrides the matching `OTEL_*` variable.
    pub otlp_endpoint: Option<String>,
    pub otlp_protocol: Option<String>,
    pub service_name: Option<String>,
    pub sampler: Option<String>,
    /// Log records at this level and above become span events.
    pub span_event_level: String,
}

/// Which sink the configuration and environment select.
pub fn select_sink(cfg: &TelemetryConfig) -> Result<Box<dyn SpanSink>, SinkError> {
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    let endpoint = cfg
        .otlp_endpoint
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT"));
    let protocol = cfg
        .otlp_protocol
        .clone()
        .or_else(|| env("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL"))
        .or_else(|| env("OTEL_EXPORTER_OTLP_PROTOCOL"))
        .unwrap_or_else(|| "http/protobuf".into());
    Ok(match endpoint {
        None => Box::new(StoreSink::open(&cfg.data_dir)?),
        Some(ep) if protocol == "grpc" => Box::new(GrpcSink::new(&ep)?),
        Some(ep) => Box::new(HttpSink::new(&ep)),
    })
}

/// Runtime spans into the pipeline, stamped with the defaults every span must carry.
#[derive(Debug, Clone)]
struct PipelineExporter {
    pipeline: Pipeline,
    own_spans: bool,
    resource: Resource,
    sandbox_id: Arc<Mutex<Option<String>>>,
}

impl opentelemetry_sdk::trace::SpanExporter for PipelineExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        if !self.own_spans {
            return Ok(());
        }
        let mut req = convert::to_request(batch, &self.resource);
        let sandbox = self.sandbox_id.lock().ok().and_then(|g| g.clone());
        convert::for_each_span(&mut req, |s| {
            convert::default(&mut s.attributes, "source", "runtime");
            convert::default(&mut s.attributes, "package", "shoji_runtime");
            convert::default(&mut s.attributes, "subsystem", "runtime");
            if let Some(id) = &sandbox {
                convert::default(&mut s.attributes, "sandbox_id", id);
            }
        });
        self.pipeline.submit(req);
        Ok(())
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// Keeps telemetry alive; flushes everything when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    pub pipeline: Option<Pipeline>,
    sandbox_id: Arc<Mutex<Option<String>>>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryGuard")
    }
}

impl TelemetryGuard {
    /// Stamps `sandbox_id` on runtime spans that do not carry one.
    pub fn set_sandbox_id(&self, id: &str) {
        if let Ok(mut g) = self.sandbox_id.lock() {
            *g = Some(id.to_string());
        }
    }

    /// Spans dropped or lost so far on the host side.
    pub fn dropped(&self) -> u64 {
        self.pipeline.as_ref().map_or(0, Pipeline::dropped)
    }

    /// Ends the SDK and waits (bounded) until the sink has everything.
    pub fn flush(&mut self) {
        if let Some(p) = self.provider.take() {
            let _ = p.force_flush();
            let _ = p.shutdown();
        }
        if let Some(p) = &self.pipeline {
            p.flush(Duration::from_secs(10));
            let lost = p.dropped();
            if lost > 0 {
                eprintln!("shoji: warning: {lost} spans could not be exported");
            }
        }
    }
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        self.flush();
    }
}

/// Installs the global subscriber. Without tracing only the log layer is installed.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, SinkError> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let log_filter = tracing_subscriber::EnvFilter::try_from_env("SHOJI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let log = LogLayer.with_filter(log_filter);
    let sandbox_id = Arc::new(Mutex::new(None));
    if !cfg.tracing || disabled {
        let _ = tracing_subscriber::registry().with(log).try_init();
        return Ok(TelemetryGuard {
            provider: None,
            pipeline: None,
            sandbox_id,
        });
    }
    if let Some(s) = &cfg.sampler {
        std::env::set_var("OTEL_TRACES_SAMPLER", s);
    }
    let pipeline = Pipeline::start(select_sink(cfg)?);
    let service = cfg
        .service_name
        .clone()
        .or_else(|| {
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "shoji-runtime".into());
    let resource = Resource::builder().with_service_name(service).build();
    let exporter = PipelineExporter {
        pipeline: pipeline.clone(),
        own_spans: cfg.runtime_spans,
        resource: resource.clone(),
        sandbox_id: sandbox_id.clone(),
    };
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_simple_exporter(exporter)
        .build();
    let tracer = provider.tracer("shoji");
    let level: tracing::Level = cfg.span_event_level.parse().unwrap_or(tracing::Level::INFO);
    let otel = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::LevelFilter::from_level(level));
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init();
    Ok(TelemetryGuard {
        provider: Some(provider),
        pipeline: Some(pipeline),
        sandbox_id,
    })
}

/// Log lines on stderr: `LEVEL message key=value ... trace_id=.. span_id=..`.
struct LogLayer;

impl<S: tracing::Subscriber> Layer<S> for LogLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        use opentelemetry::trace::TraceContextExt;
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let mut v = Fields(String::new());
        event.record(&mut v);
        let cx = tracing::Span::current().context();
        let sc = cx.span().span_context().clone();
        let ids = if sc.is_valid() {
            format!(" trace_id={} span_id={}", sc.trace_id(), sc.span_id())
        } else {
            String::new()
        };
        eprintln!(
            "shoji: {}{}{}",
            event.metadata().level().as_str().to_lowercase(),
            v.0,
            ids
        );
    }
}

struct Fields(String);
impl tracing::field::Visit for Fields {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, ": {value:?}");
        } else {
            let _ = write!(self.0, " {}={value:?}", field.name());
        }
    }
    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        use std::fmt::Write;
        if field.name() == "message" {
            let _ = write!(self.0, ": {value}");
        } else {
            let _ = write!(self.0, " {}={value}", field.name());
        }
    }
}
