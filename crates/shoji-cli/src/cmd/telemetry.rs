//! The telemetry wiring that `shoji run` and the lifecycle's sandbox process share: the
//! configuration of the span pipeline, and the hooks that plug it into a sandbox (the built-in
//! trace forwarder, the clock offset, trace context on agent calls).

use shoji_runtime::config::Config;
use shoji_telemetry::host::{TelemetryConfig, TelemetryGuard};

use super::GlobalArgs;

/// Span export for a runtime command: on if either side traces; the runtime's own spans only
/// with runtime tracing (agent-only mode exports just the forwarded agent spans).
pub fn config(
    config: &Config,
    global: &GlobalArgs,
    runtime_tracing: bool,
    agent_tracing: bool,
) -> TelemetryConfig {
    TelemetryConfig {
        tracing: runtime_tracing || agent_tracing,
        runtime_spans: runtime_tracing,
        data_dir: shoji_trace::data_dir::resolve(global.data_dir.as_deref()),
        otlp_endpoint: config.runtime.otlp_endpoint.clone(),
        otlp_protocol: config.runtime.otlp_protocol.clone(),
        service_name: config.runtime.service_name.clone(),
        sampler: config.runtime.sampler.clone(),
        span_event_level: config.agent.shoji.trace_log_level.clone(),
    }
}

/// Plugs the span pipeline into a sandbox: the built-in forwarder for the agent's spans, the
/// clock offset, and trace context on every agent call.
pub struct TraceHooks<'a> {
    telemetry: &'a TelemetryGuard,
    agent_tracing: bool,
    runtime_tracing: bool,
    forwarder: Option<shoji_forwarder::Forwarder>,
}

impl<'a> TraceHooks<'a> {
    pub fn new(telemetry: &'a TelemetryGuard, runtime_tracing: bool, agent_tracing: bool) -> Self {
        Self {
            telemetry,
            agent_tracing,
            runtime_tracing,
            forwarder: None,
        }
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

impl shoji_runtime::run::RunHooks for TraceHooks<'_> {
    fn sandbox_ready(&mut self, sb: &shoji_runtime::sandbox::SandboxDir) {
        self.telemetry.set_sandbox_id(&sb.id);
        let Some(pipeline) = self.telemetry.pipeline.clone() else {
            return;
        };
        if !self.agent_tracing {
            return;
        }
        let identity = shoji_forwarder::Identity {
            sandbox_id: sb.id.clone(),
            service_name: "shoji-agent".into(),
        };
        let path = sb.host_port_socket(shoji_protocols::TRACE_VSOCK_PORT);
        // Agent spans wait for room in the pipeline: a slow sink slows the guest's span
        // writer instead of losing spans (the runtime's own spans never wait).
        let deliver = shoji_forwarder::to_pipeline(pipeline);
        match shoji_forwarder::Forwarder::start(&path, identity, deliver) {
            Ok(f) => self.forwarder = Some(f),
            Err(e) => tracing::warn!(error = %e, "agent spans will be lost"),
        }
    }

    fn clock_measured(&mut self, _sandbox_id: &str, offset: shoji_runtime::agent::ClockOffset) {
        if let Some(f) = &self.forwarder {
            f.set_clock_offset(offset.offset_ns);
        }
    }

    fn agent_spans_received(&self) -> Option<shoji_runtime::run::SpanCount> {
        self.forwarder.as_ref().map(|f| {
            let stats = f.stats.clone();
            shoji_runtime::run::SpanCount(std::sync::Arc::new(move || {
                stats
                    .spans_forwarded
                    .load(std::sync::atomic::Ordering::Relaxed)
            }))
        })
    }

    fn context_injector(&self) -> Option<shoji_runtime::agent::ContextInjector> {
        // Without runtime spans there is no parent to name: the agent roots its own trace.
        self.runtime_spans().then_some(
            shoji_telemetry::current_trace_context as shoji_runtime::agent::ContextInjector,
        )
    }

    fn trace_id(&self) -> Option<String> {
        self.runtime_spans()
            .then(shoji_telemetry::current_trace_id)
            .flatten()
    }
}

impl TraceHooks<'_> {
    fn runtime_spans(&self) -> bool {
        self.runtime_tracing && self.telemetry.pipeline.is_some()
    }
}

/// The root span of a sandbox's one trace (`run`, or `sandbox` for the lifecycle), with the
/// fields recorded as the sandbox goes. A macro because `tracing` wants the name as a literal.
macro_rules! root_span {
    ($name:literal) => {
        tracing::info_span!(
            $name,
            source = "runtime",
            package = "shoji_cli",
            subsystem = "runtime",
            sandbox_id = tracing::field::Empty,
            container_id = tracing::field::Empty,
            vm.accel = tracing::field::Empty,
            process.exit_code = tracing::field::Empty,
            shoji.clock_offset_ns = tracing::field::Empty,
            shoji.agent_dropped_spans = tracing::field::Empty,
            shoji.dropped_spans = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        )
    };
}
pub(crate) use root_span;
