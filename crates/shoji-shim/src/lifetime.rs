//! The sandbox's lifetime trace, and its links with the request traces.
//!
//! Under containerd each task request continues the trace of the containerd request that made
//! it, so a pod's life is spread over many traces: one per `RunPodSandbox`, `StartContainer`,
//! `ExecSync`, ... The shim also keeps a trace of its own for the sandbox, as `shoji create`
//! does: the root `sandbox`, from the shim's server start (just before the sandbox's first
//! `Create`, which boots the VM) until the shim exits, and under it one `sandbox.request` per
//! task request, as long as the request. The two kinds are linked both ways with OTLP span
//! links: each request's server span links to `sandbox`, and each `sandbox.request` links to
//! its request's server span. A link can only name a span that is exported, so a request that
//! is not (containerd did not sample it, or its level leaves it out) gets no `sandbox.request`,
//! and nothing links to an unsampled `sandbox`.

use std::sync::Mutex;

use shoji_telemetry::SpanContext;
use tracing::info_span;

/// The sandbox's lifetime root and its context, when it is exported.
#[derive(Debug)]
pub struct Lifetime {
    /// `None` once ended.
    root: Mutex<Option<tracing::Span>>,
    root_cx: Option<SpanContext>,
}

impl Lifetime {
    /// Starts the root `sandbox` of sandbox `id`'s lifetime trace (a root whatever span is
    /// current); with `traced` false, nothing is recorded.
    pub fn start(id: &str, traced: bool) -> Self {
        if !traced {
            return Self {
                root: Mutex::new(None),
                root_cx: None,
            };
        }
        let root = info_span!(
            parent: None,
            "sandbox",
            source = "runtime",
            package = "shoji_shim::lifetime",
            subsystem = "shim",
            sandbox_id = %id,
            vm.accel = tracing::field::Empty,
            shoji.dropped_spans = tracing::field::Empty,
            shoji.level_dropped_spans = tracing::field::Empty,
        );
        let root_cx = shoji_telemetry::exported_context(&root);
        Self {
            root: Mutex::new(Some(root)),
            root_cx,
        }
    }

    fn root(&self) -> Option<tracing::Span> {
        self.root.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Links the task request `method`'s server span `request` (just made, its parent set) to
    /// the lifetime root, and returns the request's `sandbox.request` span in the lifetime
    /// trace, linked back: keep it until the request is answered. `Span::none()` when either
    /// side is not exported.
    pub fn request(
        &self,
        request: &tracing::Span,
        method: &str,
        container_id: &str,
        exec_id: &str,
    ) -> tracing::Span {
        let (Some(root), Some(root_cx)) = (self.root(), self.root_cx.clone()) else {
            return tracing::Span::none();
        };
        // Before the request's span is started, so that the link is there from its start.
        shoji_telemetry::add_link(request, root_cx);
        let Some(request_cx) = shoji_telemetry::exported_context(request) else {
            return tracing::Span::none();
        };
        let span = info_span!(
            parent: &root,
            "sandbox.request",
            source = "runtime",
            package = "shoji_shim::lifetime",
            subsystem = "shim",
            rpc.system = "ttrpc",
            rpc.service = "containerd.task.v3.Task",
            rpc.method = method,
            container_id = %container_id,
            exec_id = %exec_id,
        );
        shoji_telemetry::add_link(&span, request_cx);
        span
    }

    /// Records the VM's accelerator on the root once the VM has booted.
    pub fn booted(&self, accel: &str) {
        if let Some(root) = self.root() {
            root.record("vm.accel", accel);
        }
    }

    /// Ends the root with the shim's span counts: host spans lost (`dropped`) and left out by
    /// level (`left_out`). A `sandbox.request` still open holds it until it ends.
    pub fn end(&self, dropped: u64, left_out: u64) {
        let root = self.root.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(root) = root {
            root.record("shoji.dropped_spans", dropped);
            root.record("shoji.level_dropped_spans", left_out);
        }
    }
}
