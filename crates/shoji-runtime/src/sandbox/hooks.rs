//! Points where the caller's telemetry plugs into a sandbox's boot and stop.

use super::SandboxDir;
use crate::agent::{ClockOffset, ContextInjector};

/// Points where the telemetry pipeline plugs in. Every method has a no-op default.
pub trait RunHooks: Send {
    /// The sandbox directory exists; the VM is not started yet. The built-in trace forwarder
    /// listens on `sb.host_port_socket(10240)` from here.
    fn sandbox_ready(&mut self, _sb: &SandboxDir) {}
    /// The guest-host clock offset was measured.
    fn clock_measured(&mut self, _sandbox_id: &str, _offset: ClockOffset) {}
    /// Makes outgoing agent calls carry the trace context.
    fn context_injector(&self) -> Option<ContextInjector> {
        None
    }
    /// The current span as the root of its trace, when the runtime's spans are exported: the
    /// lifecycle records it in the state (annotations `shoji.trace_id`, `shoji.root_span_id`,
    /// and what `delete` needs to end the root if the sandbox process cannot).
    fn trace_root(&self) -> Option<crate::lifecycle::state::TraceRoot> {
        None
    }
    /// The runtime's spans are exported, but head sampling decided against the current
    /// span's trace: nothing of the sandbox will be (the lifecycle says so in the state,
    /// annotation `shoji.trace_sampled=false`).
    fn trace_sampled_out(&self) -> bool {
        false
    }
    /// The count of agent spans the built-in forwarder has received; `None` without one. The VM
    /// is stopped only once the spans the agent reports as sent have arrived.
    fn agent_spans_received(&self) -> Option<SpanCount> {
        None
    }
    /// A phase timed after the fact (QEMU's launch until the guest kernel's entry, known once
    /// the guest clock is): record it as a span under the span that the W3C `parent`
    /// traceparent names.
    fn past_span(&mut self, _parent: &str, _span: PastSpan) {}
}

/// A span whose times were measured after the fact ([`RunHooks::past_span`]), in host time.
#[derive(Debug, Clone)]
pub struct PastSpan {
    pub name: &'static str,
    pub start: std::time::SystemTime,
    pub end: std::time::SystemTime,
    pub attributes: Vec<(&'static str, String)>,
}

/// Reads a running count (of spans received, for [`RunHooks::agent_spans_received`]).
#[derive(Clone)]
pub struct SpanCount(pub std::sync::Arc<dyn Fn() -> u64 + Send + Sync>);
impl std::fmt::Debug for SpanCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpanCount({})", (self.0)())
    }
}

/// No telemetry.
#[derive(Debug, Default)]
pub struct NoHooks;
impl RunHooks for NoHooks {}
