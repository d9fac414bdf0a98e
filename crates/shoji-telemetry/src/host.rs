//! The host binaries' telemetry: a `tracing` subscriber that logs to stderr (every line with its
//! trace and span id) and, with tracing on, bridges spans to OpenTelemetry and exports them
//! through the [`Pipeline`] to the chosen sink. [`export_detached`] sends, the same way, a span
//! that its own process died before ending (the root of a killed sandbox process).

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
use crate::levels::{LevelProcessor, Levels};
use crate::logs::{span_event_level, span_layer, LogLayer};
use crate::pipeline::Pipeline;
use crate::sink::{otlp_sink, OtlpProtocol, SinkError, SpanSink, StoreSink};

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
    /// `[tracing] sample_ratio`: overrides `sampler` and the `OTEL_TRACES_SAMPLER*` variables.
    pub sample_ratio: Option<f64>,
    /// Which of this process's spans are exported, per source.
    pub levels: Levels,
    /// Log records at this level and above become span events.
    pub span_event_level: String,
}

/// What setting up the host's telemetry can fail on.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    #[error("cannot open the span sink")]
    Sink(#[from] SinkError),
    #[error("invalid sampling settings")]
    Sampling(#[from] crate::sampling::SamplingError),
}

/// Where spans go, once the configuration and the environment have been read: recorded by a
/// process that may die before it ends all its spans, so that whoever ends them in its place
/// ([`export_detached`]) sends them to the same place whatever its own environment says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SinkTarget {
    /// The embedded store in this data directory.
    Store(PathBuf),
    /// OTLP/gRPC to this endpoint.
    Grpc(String),
    /// OTLP/HTTP (protobuf) to this endpoint.
    Http(String),
    /// OTLP/HTTP (JSON) to this endpoint.
    HttpJson(String),
}

impl SinkTarget {
    /// What the configuration keys, then the `OTEL_*` variables, select. An unknown protocol
    /// is an error (with an endpoint; without one it does not matter).
    pub fn resolve(cfg: &TelemetryConfig) -> Result<Self, SinkError> {
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
        let Some(ep) = endpoint else {
            return Ok(Self::Store(cfg.data_dir.clone()));
        };
        Ok(match protocol.parse()? {
            OtlpProtocol::Grpc => Self::Grpc(ep),
            OtlpProtocol::HttpProtobuf => Self::Http(ep),
            OtlpProtocol::HttpJson => Self::HttpJson(ep),
        })
    }

    pub fn open(&self) -> Result<Box<dyn SpanSink>, SinkError> {
        match self {
            Self::Store(dir) => Ok(Box::new(StoreSink::open(dir)?)),
            Self::Grpc(ep) => otlp_sink(ep, OtlpProtocol::Grpc),
            Self::Http(ep) => otlp_sink(ep, OtlpProtocol::HttpProtobuf),
            Self::HttpJson(ep) => otlp_sink(ep, OtlpProtocol::HttpJson),
        }
    }
}

/// Which sink the configuration and environment select.
pub fn select_sink(cfg: &TelemetryConfig) -> Result<Box<dyn SpanSink>, SinkError> {
    SinkTarget::resolve(cfg)?.open()
}

/// The runtime's `service.name`: the configuration key, else `OTEL_SERVICE_NAME`, else
/// `shoji-runtime`.
fn service_name(cfg: &TelemetryConfig) -> String {
    cfg.service_name
        .clone()
        .or_else(|| {
            std::env::var("OTEL_SERVICE_NAME")
                .ok()
                .filter(|v| !v.is_empty())
        })
        .unwrap_or_else(|| "shoji-runtime".into())
}

/// Runtime spans into the pipeline, stamped with the defaults every span must carry.
#[derive(Debug, Clone)]
struct PipelineExporter {
    pipeline: Pipeline,
    own_spans: bool,
    resource: Resource,
    sandbox_id: Arc<Mutex<Option<String>>>,
    /// For spans recorded after the fact, which bypass the SDK ([`PastSpanRecorder`]).
    levels: Levels,
}

impl PipelineExporter {
    fn submit(&self, batch: Vec<SpanData>) {
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
    }
}

impl opentelemetry_sdk::trace::SpanExporter for PipelineExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        if self.own_spans {
            self.submit(batch);
        }
        Ok(())
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// Records spans measured after the fact into the runtime's span pipeline; does nothing when
/// the runtime's spans are not exported ([`TelemetryGuard::past_span_recorder`]).
#[derive(Debug, Clone, Default)]
pub struct PastSpanRecorder(Option<PipelineExporter>);

impl PastSpanRecorder {
    /// Records `span`, whose times were measured after the fact (QEMU's launch until the guest
    /// kernel's entry, known once the guest clock is), as a child of the span that the W3C
    /// `parent` traceparent names, the way the runtime's own spans go. Returns whether it was
    /// recorded: not when the runtime's spans are not exported, or `parent` is not a sampled
    /// span.
    pub fn record(&self, parent: &str, span: PastSpan) -> bool {
        use opentelemetry::propagation::TextMapPropagator;
        use opentelemetry::trace::{SpanKind, Status, TraceContextExt};
        use opentelemetry_sdk::trace::IdGenerator;
        let Some(exporter) = self.0.as_ref().filter(|e| e.own_spans) else {
            return false;
        };
        let source = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "source")
            .map_or_else(|| "runtime".into(), |kv| kv.value.as_str().into_owned());
        if !exporter.levels.keeps(&source, span.name) {
            return false;
        }
        let carrier =
            std::collections::HashMap::from([("traceparent".to_string(), parent.to_string())]);
        let cx = opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier);
        let parent = cx.span().span_context().clone();
        if !parent.is_valid() || !parent.is_sampled() {
            return false;
        }
        let span_id = opentelemetry_sdk::trace::RandomIdGenerator::default().new_span_id();
        let data = SpanData {
            span_context: opentelemetry::trace::SpanContext::new(
                parent.trace_id(),
                span_id,
                parent.trace_flags(),
                false,
                parent.trace_state().clone(),
            ),
            parent_span_id: parent.span_id(),
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: span.name.into(),
            start_time: span.start,
            end_time: span.end.max(span.start),
            attributes: span.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: Status::Unset,
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("shoji").build(),
        };
        exporter.submit(vec![data]);
        true
    }
}

/// Keeps telemetry alive; flushes everything when dropped.
pub struct TelemetryGuard {
    provider: Option<SdkTracerProvider>,
    /// What the runtime's own spans go through (for [`TelemetryGuard::record_past_span`]).
    exporter: Option<PipelineExporter>,
    pub pipeline: Option<Pipeline>,
    sandbox_id: Arc<Mutex<Option<String>>>,
    /// Where the spans go and under which service name, with tracing on.
    pub target: Option<(SinkTarget, String)>,
}

impl std::fmt::Debug for TelemetryGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TelemetryGuard")
    }
}

impl TelemetryGuard {
    /// Stamps `sandbox_id` on runtime spans that do not carry one.
    pub fn set_sandbox_id(&self, id: &str) {
        self.sandbox_stamp().set(id);
    }

    /// A handle that sets the `sandbox_id` [`Self::set_sandbox_id`] sets, for whoever learns
    /// the id later and does not hold the guard.
    pub fn sandbox_stamp(&self) -> SandboxStamp {
        SandboxStamp(self.sandbox_id.clone())
    }

    /// Spans dropped or lost so far on the host side.
    pub fn dropped(&self) -> u64 {
        self.pipeline.as_ref().map_or(0, Pipeline::dropped)
    }

    /// Spans this process left out by their level so far (`[tracing]` levels).
    pub fn dropped_by_level(&self) -> u64 {
        crate::levels::dropped_by_level()
    }

    /// Records `span`, whose times were measured after the fact, as a child of the span that
    /// the W3C `parent` traceparent names ([`PastSpanRecorder::record`]).
    pub fn record_past_span(&self, parent: &str, span: PastSpan) -> bool {
        self.past_span_recorder().record(parent, span)
    }

    /// A handle that records past spans the way [`TelemetryGuard::record_past_span`] does, for
    /// whoever cannot hold the guard (the sandbox's hooks).
    pub fn past_span_recorder(&self) -> PastSpanRecorder {
        PastSpanRecorder(self.exporter.clone())
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

/// Sets the `sandbox_id` stamped on runtime spans that do not carry one.
#[derive(Debug, Clone, Default)]
pub struct SandboxStamp(Arc<Mutex<Option<String>>>);

impl SandboxStamp {
    pub fn set(&self, id: &str) {
        if let Ok(mut g) = self.0.lock() {
            *g = Some(id.to_string());
        }
    }
}

/// Installs the global subscriber. Without tracing only the log layer is installed.
pub fn init(cfg: &TelemetryConfig) -> Result<TelemetryGuard, TelemetryError> {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    let log_filter = tracing_subscriber::EnvFilter::try_from_env("SHOJI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let log = LogLayer::stderr("shoji").with_filter(log_filter);
    let sandbox_id = Arc::new(Mutex::new(None));
    if !cfg.tracing || disabled {
        let _ = tracing_subscriber::registry().with(log).try_init();
        return Ok(TelemetryGuard {
            provider: None,
            exporter: None,
            pipeline: None,
            sandbox_id,
            target: None,
        });
    }
    let sampler = crate::sampling::resolve(cfg.sample_ratio, cfg.sampler.as_deref(), |k| {
        std::env::var(k).ok()
    })?;
    let target = SinkTarget::resolve(cfg)?;
    let pipeline = Pipeline::start(target.open()?);
    let service = service_name(cfg);
    let resource = Resource::builder()
        .with_service_name(service.clone())
        .build();
    let exporter = PipelineExporter {
        pipeline: pipeline.clone(),
        own_spans: cfg.runtime_spans,
        resource: resource.clone(),
        sandbox_id: sandbox_id.clone(),
        levels: cfg.levels,
    };
    let levels = LevelProcessor::new(
        opentelemetry_sdk::trace::SimpleSpanProcessor::new(exporter.clone()),
        cfg.levels,
        "runtime",
    );
    crate::levels::install(levels.dropped());
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(sampler)
        .with_span_processor(levels)
        .build();
    let otel = span_layer(
        provider.tracer("shoji"),
        span_event_level(&cfg.span_event_level),
    );
    let _ = tracing_subscriber::registry()
        .with(log)
        .with(otel)
        .try_init();
    Ok(TelemetryGuard {
        provider: Some(provider),
        exporter: Some(exporter),
        pipeline: Some(pipeline),
        sandbox_id,
        target: Some((target, service)),
    })
}

/// A span of this process whose times were measured after the fact
/// ([`TelemetryGuard::record_past_span`]).
#[derive(Debug, Clone)]
pub struct PastSpan {
    pub name: &'static str,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
    pub attributes: Vec<opentelemetry::KeyValue>,
}

/// A span that another process than the one that started it ends: the root of a sandbox whose
/// process was killed, ended by `shoji delete` with the ids and start the sandbox process
/// recorded (ADR 007).
#[derive(Debug, Clone)]
pub struct DetachedSpan {
    /// 32 hex digits.
    pub trace_id: String,
    /// 16 hex digits.
    pub span_id: String,
    pub name: &'static str,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
    pub attributes: Vec<opentelemetry::KeyValue>,
    /// `Some(message)`: status Error with that message.
    pub error: Option<String>,
}

impl DetachedSpan {
    fn into_span_data(self) -> Result<SpanData, SinkError> {
        use opentelemetry::trace::{
            SpanContext, SpanId, SpanKind, Status, TraceFlags, TraceId, TraceState,
        };
        let bad = || SinkError::InvalidIds {
            trace_id: self.trace_id.clone(),
            span_id: self.span_id.clone(),
        };
        let trace_id = TraceId::from_hex(&self.trace_id).map_err(|_| bad())?;
        let span_id = SpanId::from_hex(&self.span_id).map_err(|_| bad())?;
        if trace_id == TraceId::INVALID || span_id == SpanId::INVALID {
            return Err(bad());
        }
        Ok(SpanData {
            span_context: SpanContext::new(
                trace_id,
                span_id,
                TraceFlags::SAMPLED,
                false,
                TraceState::default(),
            ),
            parent_span_id: SpanId::INVALID,
            parent_span_is_remote: false,
            span_kind: SpanKind::Internal,
            name: self.name.into(),
            start_time: self.start,
            end_time: self.end.max(self.start),
            attributes: self.attributes,
            dropped_attributes_count: 0,
            events: Default::default(),
            links: Default::default(),
            status: match self.error {
                Some(message) => Status::error(message),
                None => Status::Unset,
            },
            // The scope the runtime's tracer uses (`init`), so the span groups with its own.
            instrumentation_scope: opentelemetry::InstrumentationScope::builder("shoji").build(),
        })
    }
}

/// Exports `span` to `target` under `service` the way the runtime's own spans go (the same
/// conversion, defaults and pipeline), and waits until the sink has it. Returns how many spans
/// could not be delivered (0 or 1).
pub fn export_detached(
    target: &SinkTarget,
    service: &str,
    span: DetachedSpan,
) -> Result<u64, SinkError> {
    let span = span.into_span_data()?;
    let pipeline = Pipeline::start(target.open()?);
    let exporter = PipelineExporter {
        pipeline: pipeline.clone(),
        own_spans: true,
        resource: Resource::builder()
            .with_service_name(service.to_string())
            .build(),
        sandbox_id: Arc::new(Mutex::new(None)),
        levels: Levels::default(),
    };
    exporter.submit(vec![span]);
    if !pipeline.flush(Duration::from_secs(10)) {
        return Ok(1);
    }
    Ok(pipeline.dropped())
}

#[cfg(test)]
mod tests {
    //! The layers `init` installs, under a local subscriber with an in-memory exporter.

    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::Layer;

    use crate::logs::{span_event_level, span_layer, LogLayer};

    /// Runs `body` under the runtime's layers (log lines at debug, span events at `level`);
    /// returns the finished spans and the log lines.
    fn traced(level: &str, body: impl FnOnce()) -> (Vec<SpanData>, Vec<String>) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .build();
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log = LogLayer::new("shoji", move |l| sink.lock().unwrap().push(l.to_string()))
            .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG);
        let subscriber = tracing_subscriber::registry().with(log).with(span_layer(
            provider.tracer("shoji"),
            span_event_level(level),
        ));
        tracing::subscriber::with_default(subscriber, body);
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let lines = lines.lock().unwrap().clone();
        (spans, lines)
    }

    fn work() {
        let span = tracing::info_span!("vm.start");
        let _e = span.enter();
        // A library's internals (h2 traces every frame): never a span of ours, at any level.
        tracing::trace_span!("send_data").in_scope(|| {});
        tracing::debug!("helper socket appeared");
        tracing::info!(accel = "tcg", "accelerator chosen");
        tracing::warn!("agent shutdown failed");
    }

    fn event_names(s: &SpanData) -> Vec<String> {
        s.events.iter().map(|e| e.name.to_string()).collect()
    }

    #[test]
    fn log_records_at_the_configured_level_become_events_of_the_current_span() {
        let (spans, _) = traced("info", work);
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].name, "vm.start");
        assert_eq!(
            event_names(&spans[0]),
            ["accelerator chosen", "agent shutdown failed"]
        );
        let (spans, _) = traced("trace", work);
        assert_eq!(spans.len(), 1, "trace-level spans are not exported");
        assert_eq!(event_names(&spans[0]).len(), 3);
    }

    #[test]
    fn a_stricter_level_keeps_every_span_and_fewer_events() {
        // Regression: the level once filtered the bridge as a whole, dropping info spans.
        let (spans, _) = traced("warn", work);
        assert_eq!(spans.len(), 1, "the info span must still be exported");
        assert_eq!(event_names(&spans[0]), ["agent shutdown failed"]);
        let (spans, _) = traced("off", work);
        assert_eq!(spans.len(), 1);
        assert!(spans[0].events.is_empty());
    }

    #[test]
    fn every_log_line_carries_the_trace_and_span_id_of_its_span() {
        let (spans, lines) = traced("info", || {
            work();
            tracing::info!("outside any span");
        });
        let sc = spans[0].span_context.clone();
        let ids = format!("trace_id={} span_id={}", sc.trace_id(), sc.span_id());
        assert_eq!(lines.len(), 4, "{lines:?}");
        for line in &lines[..3] {
            assert!(line.ends_with(&format!("{ids}\n")), "{line:?} lacks {ids}");
        }
        assert_eq!(
            lines[1],
            format!("shoji: info: accelerator chosen accel=tcg {ids}\n")
        );
        assert_eq!(lines[3], "shoji: info: outside any span\n");
    }

    #[test]
    fn a_detached_span_reaches_the_store_with_its_ids_times_and_error() {
        use super::{export_detached, DetachedSpan, SinkTarget};
        use std::time::{Duration, SystemTime};
        let data = tempfile::tempdir().unwrap();
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let span = DetachedSpan {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            name: "sandbox",
            start,
            end: start + Duration::from_secs(3),
            attributes: vec![
                opentelemetry::KeyValue::new("sandbox_id", "c1"),
                opentelemetry::KeyValue::new("shoji.clock_offset_ns", -5_i64),
            ],
            error: Some("the sandbox process exited unexpectedly".into()),
        };
        let target = SinkTarget::Store(data.path().to_path_buf());
        assert_eq!(export_detached(&target, "svc", span).unwrap(), 0);
        let store = shoji_trace::store::Store::open(data.path()).unwrap();
        let id: [u8; 16] = [
            0x0a, 0xf7, 0x65, 0x19, 0x16, 0xcd, 0x43, 0xdd, 0x84, 0x48, 0xeb, 0x21, 0x1c, 0x80,
            0x31, 0x9c,
        ];
        let trace = store.trace(&id).unwrap().expect("the trace");
        assert_eq!(trace.spans.len(), 1);
        let s = &trace.spans[0];
        assert_eq!(s.name(), "sandbox");
        assert_eq!(s.span_id, [0xb7, 0xad, 0x6b, 0x71, 0x69, 0x20, 0x33, 0x31]);
        assert_eq!(s.parent_id, None);
        assert_eq!(s.service, "svc");
        assert_eq!(s.start_ns, 1_800_000_000_000_000_000);
        assert_eq!(s.duration_ns(), 3_000_000_000);
        let status = s.span.status.clone().unwrap();
        assert_eq!(status.code, 2);
        assert_eq!(status.message, "the sandbox process exited unexpectedly");
        assert_eq!(s.attr("sandbox_id").as_deref(), Some("c1"));
        assert_eq!(s.attr("shoji.clock_offset_ns").as_deref(), Some("-5"));
        // The runtime's defaults, as on its own spans.
        assert_eq!(s.attr("source").as_deref(), Some("runtime"));

        let bad = DetachedSpan {
            trace_id: "not hex".into(),
            span_id: "b7ad6b7169203331".into(),
            name: "x",
            start,
            end: start,
            attributes: vec![],
            error: None,
        };
        assert!(export_detached(&target, "svc", bad).is_err());
    }

    #[test]
    fn the_configured_endpoint_and_protocol_choose_the_sink() {
        use super::{SinkTarget, TelemetryConfig};
        let cfg = |endpoint: Option<&str>, protocol: &str| TelemetryConfig {
            data_dir: "/d".into(),
            otlp_endpoint: endpoint.map(String::from),
            otlp_protocol: Some(protocol.into()),
            ..Default::default()
        };
        assert_eq!(
            SinkTarget::resolve(&cfg(Some("http://h:4317"), "grpc")).unwrap(),
            SinkTarget::Grpc("http://h:4317".into())
        );
        assert_eq!(
            SinkTarget::resolve(&cfg(Some("http://h:4318"), "http/protobuf")).unwrap(),
            SinkTarget::Http("http://h:4318".into())
        );
        assert_eq!(
            SinkTarget::resolve(&cfg(Some("http://h:4318"), "http/json")).unwrap(),
            SinkTarget::HttpJson("http://h:4318".into())
        );
        assert!(SinkTarget::resolve(&cfg(Some("http://h:4318"), "json")).is_err());
        // Without an endpoint the protocol is not used.
        assert_eq!(
            SinkTarget::resolve(&cfg(None, "json")).unwrap(),
            SinkTarget::Store("/d".into())
        );
    }

    #[test]
    fn lines_outside_any_span_carry_the_fallback_ids() {
        use opentelemetry::trace::{SpanContext, SpanId, TraceFlags, TraceId, TraceState};
        let cx = SpanContext::new(
            TraceId::from_hex("0af7651916cd43dd8448eb211c80319c").unwrap(),
            SpanId::from_hex("b7ad6b7169203331").unwrap(),
            TraceFlags::SAMPLED,
            true,
            TraceState::default(),
        );
        let lines = Arc::new(Mutex::new(Vec::new()));
        let sink = lines.clone();
        let log = LogLayer::new("shoji-agent", move |l| {
            sink.lock().unwrap().push(l.to_string())
        })
        .with_fallback(cx);
        tracing::subscriber::with_default(tracing_subscriber::registry().with(log), || {
            tracing::info!("serving");
        });
        assert_eq!(
            lines.lock().unwrap().as_slice(),
            ["shoji-agent: info: serving trace_id=0af7651916cd43dd8448eb211c80319c span_id=b7ad6b7169203331\n"]
        );
    }
}
