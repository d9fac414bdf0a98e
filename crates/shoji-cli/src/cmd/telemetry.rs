//! The telemetry wiring that `shoji run` and the lifecycle's sandbox process share: the
//! configuration of the span pipeline from the command line and the configuration file. The
//! hooks that plug the pipeline into a sandbox ([`TraceHooks`]) and the sandbox's root span
//! (`root_span!`, `end_lost_root`) live in `shoji-forwarder`, shared with the containerd shim.

pub use shoji_forwarder::hooks::TraceHooks;
pub use shoji_forwarder::root_span;
pub use shoji_forwarder::roots::end_lost_root;
use shoji_runtime::config::Config;
use shoji_telemetry::host::TelemetryConfig;
use shoji_telemetry::levels::Levels;

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
        sample_ratio: config.tracing.sample_ratio,
        levels: levels(config, config.tracing.runtime),
        span_event_level: config.agent.shoji.trace_log_level.clone(),
    }
}

/// The levels a host process exports at, its own runtime spans at `runtime` (the shim has its
/// own key). The agent's level applies in the guest; the host's copy of it is not used.
pub fn levels(config: &Config, runtime: shoji_protocols::TraceLevel) -> Levels {
    Levels {
        runtime,
        hypervisor: config.tracing.hypervisor,
        agent: config.tracing.agent,
    }
}
