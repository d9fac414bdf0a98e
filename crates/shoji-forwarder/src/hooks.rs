//! Plugs the host's span pipeline into a sandbox ([`TraceHooks`]): the built-in forwarder for
//! the agent's spans, the clock offset, trace context on every agent call. Shared by `shoji run`,
//! the lifecycle's sandbox process and the containerd shim.

use std::time::SystemTime;

use shoji_runtime::lifecycle::state::{TraceExport, TraceRoot};
use shoji_telemetry::host::{SandboxStamp, SinkTarget, TelemetryGuard};
use shoji_telemetry::pipeline::Pipeline;

/// Plugs the span pipeline into a sandbox: the built-in forwarder for the agent's spans, the
/// clock offset, and trace context on every agent call.
pub struct TraceHooks {
    pipeline: Option<Pipeline>,
    target: Option<(SinkTarget, String)>,
    stamp: SandboxStamp,
    agent_tracing: bool,
    runtime_tracing: bool,
    forwarder: Option<crate::Forwarder>,
    root_start: Option<SystemTime>,
    past_spans: shoji_telemetry::host::PastSpanRecorder,
    /// Each request is a trace of its own (the shim under containerd): whether one is sampled
    /// says nothing of the next, so the forwarder runs whatever the boot's trace decided.
    per_request_traces: bool,
    /// The sandbox's one trace was not sampled: nothing was forwarded.
    sampled_out: bool,
}

impl TraceHooks {
    /// Takes what it needs from `telemetry` (which must outlive the sandbox's spans).
    pub fn new(telemetry: &TelemetryGuard, runtime_tracing: bool, agent_tracing: bool) -> Self {
        Self {
            pipeline: telemetry.pipeline.clone(),
            target: telemetry.target.clone(),
            stamp: telemetry.sandbox_stamp(),
            agent_tracing,
            runtime_tracing,
            forwarder: None,
            root_start: None,
            past_spans: telemetry.past_span_recorder(),
            per_request_traces: false,
            sampled_out: false,
        }
    }

    /// No span export at all: the hooks do nothing.
    pub fn off() -> Self {
        Self {
            pipeline: None,
            target: None,
            stamp: SandboxStamp::default(),
            agent_tracing: false,
            runtime_tracing: false,
            forwarder: None,
            root_start: None,
            past_spans: Default::default(),
            per_request_traces: false,
            sampled_out: false,
        }
    }

    /// Each request makes its own trace, sampled on its own (the shim): the forwarder runs
    /// for the sandbox's life whatever the boot's trace decided, and the agent samples each
    /// request's spans on the `traceparent` the request carries.
    pub fn per_request_traces(mut self) -> Self {
        self.per_request_traces = true;
        self
    }

    /// The sandbox's trace was decided against at its root (head sampling): nothing of it was
    /// exported, and no agent span was forwarded.
    pub fn sampled_out(&self) -> bool {
        self.sampled_out
    }

    /// When the root span began (taken just before it was made): recorded with the root, for
    /// whoever has to end it if this process cannot.
    pub fn rooted_at(mut self, start: SystemTime) -> Self {
        self.root_start = Some(start);
        self
    }

    /// Stops the forwarder once the agent has flushed (it has, when `Shutdown` answered):
    /// open connections get `grace` to deliver what they hold. Returns the frames and spans
    /// it rejected or dropped.
    pub async fn finish(&mut self, grace: std::time::Duration) -> u64 {
        match self.forwarder.take() {
            Some(f) => {
                let stats = f.stats.clone();
                f.shutdown(grace).await;
                stats.rejected()
            }
            None => 0,
        }
    }
}

impl shoji_runtime::sandbox::RunHooks for TraceHooks {
    fn sandbox_ready(&mut self, sb: &shoji_runtime::sandbox::SandboxDir) {
        self.stamp.set(&sb.id);
        let Some(pipeline) = self.pipeline.clone() else {
            return;
        };
        if !self.agent_tracing {
            return;
        }
        // The root decided against this sandbox's trace: the agent, told so by the sampled
        // flag of every `traceparent` it gets, exports nothing, and nothing it might send
        // anyway is taken in.
        if self.trace_sampled_out() {
            self.sampled_out = true;
            tracing::info!(
                sandbox_id = %sb.id,
                "trace not sampled: nothing of this sandbox is exported"
            );
            return;
        }
        let identity = crate::Identity {
            sandbox_id: sb.id.clone(),
            service_name: "shoji-agent".into(),
        };
        let path = sb.host_port_socket(shoji_protocols::TRACE_VSOCK_PORT);
        // Agent spans wait for room in the pipeline: a slow sink slows the guest's span
        // writer instead of losing spans (the runtime's own spans never wait).
        let deliver = crate::to_pipeline(pipeline);
        match crate::Forwarder::start(&path, identity, deliver) {
            Ok(f) => self.forwarder = Some(f),
            Err(e) => tracing::warn!(error = %e, "agent spans will be lost"),
        }
    }

    fn clock_measured(&mut self, _sandbox_id: &str, offset: shoji_runtime::agent::ClockOffset) {
        if let Some(f) = &self.forwarder {
            f.set_clock_offset(offset.offset_ns);
        }
    }

    fn agent_spans_received(&self) -> Option<shoji_runtime::sandbox::SpanCount> {
        self.forwarder.as_ref().map(|f| {
            let stats = f.stats.clone();
            shoji_runtime::sandbox::SpanCount(std::sync::Arc::new(move || {
                stats
                    .spans_forwarded
                    .load(std::sync::atomic::Ordering::Relaxed)
            }))
        })
    }

    fn past_span(&mut self, parent: &str, span: shoji_runtime::sandbox::PastSpan) {
        let span = shoji_telemetry::host::PastSpan {
            name: span.name,
            start: span.start,
            end: span.end,
            attributes: span
                .attributes
                .into_iter()
                .map(|(k, v)| shoji_telemetry::KeyValue::new(k, v))
                .collect(),
        };
        self.past_spans.record(parent, span);
    }

    fn context_injector(&self) -> Option<shoji_runtime::agent::ContextInjector> {
        // Without runtime spans there is no parent to name: the agent roots its own trace.
        self.runtime_spans().then_some(
            shoji_telemetry::current_trace_context as shoji_runtime::agent::ContextInjector,
        )
    }

    fn trace_sampled_out(&self) -> bool {
        self.runtime_spans() && !self.per_request_traces && !current_is_sampled()
    }

    fn trace_root(&self) -> Option<TraceRoot> {
        if !self.runtime_spans() {
            return None;
        }
        let (trace_id, span_id) = shoji_telemetry::current_sampled_ids()?;
        let (target, service_name) = self.target.clone()?;
        let start = self.root_start.unwrap_or_else(SystemTime::now);
        Some(TraceRoot {
            trace_id,
            span_id,
            start_unix_nano: unix_nanos(start),
            service_name,
            export: match target {
                SinkTarget::Store(data_dir) => TraceExport::Store { data_dir },
                SinkTarget::Grpc(endpoint) => TraceExport::Grpc { endpoint },
                SinkTarget::Http(endpoint) => TraceExport::Http { endpoint },
                SinkTarget::HttpJson(endpoint) => TraceExport::HttpJson { endpoint },
            },
            clock_offset_ns: None,
        })
    }
}

impl TraceHooks {
    fn runtime_spans(&self) -> bool {
        self.runtime_tracing && self.pipeline.is_some()
    }
}

/// Whether the current span's trace is sampled (a span with no valid context counts as not).
fn current_is_sampled() -> bool {
    shoji_telemetry::current_sampled_ids().is_some()
}

fn unix_nanos(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64)
}
