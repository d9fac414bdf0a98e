//! Instrumentation levels: which spans a source exports, and how the trace stays whole when some
//! are left out.
//!
//! Every span belongs to one level ([`span_level`], by name; the table is in
//! `docs/tracing.md`) and to one source (its `source` attribute: `runtime`, `hypervisor`,
//! `agent`). A span is exported when its level is at or below its source's level ([`Levels`]).
//!
//! The decision is taken where spans start, in the SDK ([`LevelProcessor`], a span processor
//! in front of the exporter's), not in the `tracing` layer: a per-layer filter there would make
//! a span whose explicit parent was filtered out the root of a new trace, and a task spawned
//! under a filtered span would lose its context (tracing-opentelemetry looks a parent up only
//! among the spans its layer saw). In the SDK every span still has its context and its parent;
//! the processor only remembers the spans it leaves out ([`DroppedSpans`]) and, when a kept
//! span ends, names as its parent the nearest ancestor that was kept. Context sent elsewhere
//! (ttRPC metadata, the kernel command line) goes through [`DroppedSpans::nearest_kept`] too,
//! so the agent's spans never hang from a span the host left out.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use opentelemetry::trace::{SpanContext, SpanId};
use opentelemetry::Context;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{Span, SpanData, SpanProcessor};
use opentelemetry_sdk::Resource;
use shoji_protocols::TraceLevel;

/// The level each span belongs to. Roots (`run`, `sandbox`, the agent's own `agent`, the shim's
/// per-request server spans and their `sandbox.request` in the shim's lifetime trace) are
/// `boot`: they hold the trace together. Names not in the table
/// are `debug`, so a new span is exported by default and left out at every lower level until it
/// is classified here.
pub fn span_level(name: &str) -> TraceLevel {
    const RPC_PREFIX: &str = "shoji.agent.v1.AgentService/";
    match name {
        "run" | "sandbox" | "sandbox.request" | "agent" | "vm.start" | "helper.start"
        | "qemu.launch" | "guest.boot" | "vm.firmware" | "clock.sync" | "agent.boot"
        | "kernel.boot" | "agent.setup" | "modules.load" | "agent.start" => TraceLevel::Boot,
        // Polled by the kubelet (CRI stats) and monitoring: one pair per poll.
        "containerd.task.v3.Task/Stats" | "shoji.agent.v1.AgentService/StatsContainer" => {
            TraceLevel::Debug
        }
        n if n.starts_with("containerd.task.v3.Task/") => TraceLevel::Boot,
        "image.pull"
        | "image.pull.blob"
        | "image.unpack"
        | "network.prepare"
        | "network.setup"
        | "network.configure"
        | "container.create"
        | "container.start"
        | "container.wait"
        | "container.exec"
        | "container.kill"
        | "container.delete"
        | "stdio.copy"
        | "vm.stop"
        | "sandbox.cleanup"
        | "rootfs.mount"
        | "process.spawn"
        | "security.check"
        | "seccomp.compile"
        | "process.wait"
        | "container.oom"
        | "container.oom_watch"
        | "cgroup.freeze"
        | "cgroup.update" => TraceLevel::Lifecycle,
        // Polled: five per clock sync, one or more per boot while the runtime waits.
        "shoji.agent.v1.AgentService/Ping" => TraceLevel::Debug,
        n if n.starts_with(RPC_PREFIX) => TraceLevel::Rpc,
        _ => TraceLevel::Debug,
    }
}

/// The level of each source of spans in one process.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Levels {
    /// Spans with `source=runtime`, and spans without a `source` on the host.
    pub runtime: TraceLevel,
    /// Spans with `source=hypervisor`: the VM's start, the guest's boot as the host sees it,
    /// the VM's stop.
    pub hypervisor: TraceLevel,
    /// Spans with `source=agent`.
    pub agent: TraceLevel,
}

impl Levels {
    /// Every source at `level`.
    pub fn all(level: TraceLevel) -> Self {
        Self {
            runtime: level,
            hypervisor: level,
            agent: level,
        }
    }

    /// The level of `source` (unknown sources: the runtime's).
    pub fn of(&self, source: &str) -> TraceLevel {
        match source {
            "hypervisor" => self.hypervisor,
            "agent" => self.agent,
            _ => self.runtime,
        }
    }

    /// Whether the span `name` of `source` is exported.
    pub fn keeps(&self, source: &str, name: &str) -> bool {
        let level = self.of(source);
        level != TraceLevel::Off && span_level(name) <= level
    }

    /// Whether every span is exported (nothing to filter).
    pub fn keeps_everything(&self) -> bool {
        *self == Self::all(TraceLevel::Debug)
    }
}

/// A span left out, remembered while a span below it may still need its parent.
#[derive(Debug)]
struct Dropped {
    parent: SpanId,
    /// The span itself while it runs, plus its children (kept or not) still running.
    holds: u32,
}

/// The spans a [`LevelProcessor`] left out and that something still hangs from, and how many
/// spans it left out in all.
#[derive(Debug, Default)]
pub struct DroppedSpans {
    nodes: Mutex<HashMap<SpanId, Dropped>>,
    count: AtomicU64,
}

impl DroppedSpans {
    /// How many spans were left out so far.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// `id` if it was kept (or is not known here: another process's span, a remote parent),
    /// else its nearest ancestor that was; `SpanId::INVALID` if none was.
    pub fn nearest_kept(&self, id: SpanId) -> SpanId {
        let Ok(nodes) = self.nodes.lock() else {
            return id;
        };
        Self::walk(&nodes, id)
    }

    fn walk(nodes: &HashMap<SpanId, Dropped>, mut id: SpanId) -> SpanId {
        // Bounded: a parent always started before its child, so the chain has no cycle, but a
        // bound costs nothing and keeps a bug from hanging the process.
        for _ in 0..nodes.len() + 1 {
            match nodes.get(&id) {
                Some(d) => id = d.parent,
                None => return id,
            }
        }
        id
    }

    /// `cx` with its span replaced by its nearest kept ancestor: what to send as the parent of
    /// spans made elsewhere. Invalid when nothing above it was kept.
    pub fn kept_context(&self, cx: &SpanContext) -> SpanContext {
        let id = self.nearest_kept(cx.span_id());
        if id == cx.span_id() {
            return cx.clone();
        }
        if id == SpanId::INVALID {
            return SpanContext::empty_context();
        }
        SpanContext::new(
            cx.trace_id(),
            id,
            cx.trace_flags(),
            true,
            cx.trace_state().clone(),
        )
    }

    fn started(&self, id: SpanId, parent: SpanId, kept: bool) {
        let Ok(mut nodes) = self.nodes.lock() else {
            return;
        };
        if let Some(p) = nodes.get_mut(&parent) {
            p.holds += 1;
        }
        if !kept {
            nodes.insert(id, Dropped { parent, holds: 1 });
        }
    }

    /// Lets go of `id`'s hold (its own end, or a child's), forgetting spans nothing holds.
    fn release(nodes: &mut HashMap<SpanId, Dropped>, mut id: SpanId) {
        while let Some(d) = nodes.get_mut(&id) {
            d.holds = d.holds.saturating_sub(1);
            if d.holds > 0 {
                return;
            }
            let parent = d.parent;
            nodes.remove(&id);
            id = parent;
        }
    }

    /// A span ended: returns the parent to export it with (`None`: it was left out).
    fn ended(&self, id: SpanId, parent: SpanId, kept: bool) -> Option<SpanId> {
        let Ok(mut nodes) = self.nodes.lock() else {
            return kept.then_some(parent);
        };
        if kept {
            let new_parent = Self::walk(&nodes, parent);
            Self::release(&mut nodes, parent);
            Some(new_parent)
        } else {
            self.count.fetch_add(1, Ordering::Relaxed);
            Self::release(&mut nodes, id);
            None
        }
    }

    #[cfg(test)]
    fn remembered(&self) -> usize {
        self.nodes.lock().map_or(0, |n| n.len())
    }
}

/// The process's [`DroppedSpans`], for the context it sends elsewhere
/// ([`crate::current_trace_context`]).
static INSTALLED: OnceLock<Arc<DroppedSpans>> = OnceLock::new();

/// Makes `dropped` the one [`crate::current_trace_context`] consults; the first call wins.
pub fn install(dropped: Arc<DroppedSpans>) {
    let _ = INSTALLED.set(dropped);
}

/// `cx` with the spans this process left out skipped ([`DroppedSpans::kept_context`]).
pub fn kept_context(cx: &SpanContext) -> SpanContext {
    match INSTALLED.get() {
        Some(d) => d.kept_context(cx),
        None => cx.clone(),
    }
}

/// Spans left out by level in this process so far.
pub fn dropped_by_level() -> u64 {
    INSTALLED.get().map_or(0, |d| d.count())
}

/// A span processor that passes to `inner` only the spans [`Levels`] keeps, each with the
/// nearest kept ancestor as its parent.
#[derive(Debug)]
pub struct LevelProcessor<P> {
    inner: P,
    levels: Levels,
    /// The source of spans that carry no `source` attribute.
    default_source: &'static str,
    dropped: Arc<DroppedSpans>,
}

impl<P> LevelProcessor<P> {
    pub fn new(inner: P, levels: Levels, default_source: &'static str) -> Self {
        Self {
            inner,
            levels,
            default_source,
            dropped: Arc::default(),
        }
    }

    /// What it left out (and a handle for [`install`]).
    pub fn dropped(&self) -> Arc<DroppedSpans> {
        self.dropped.clone()
    }

    fn keeps(&self, span: &SpanData) -> bool {
        let source = span
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "source")
            .map(|kv| kv.value.as_str());
        let source = source.as_deref().unwrap_or(self.default_source);
        self.levels.keeps(source, &span.name)
    }
}

impl<P: SpanProcessor> SpanProcessor for LevelProcessor<P> {
    fn on_start(&self, span: &mut Span, cx: &Context) {
        if let Some(data) = span.exported_data() {
            let kept = self.keeps(&data);
            self.dropped
                .started(data.span_context.span_id(), data.parent_span_id, kept);
        }
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, mut span: SpanData) {
        let kept = self.keeps(&span);
        let id = span.span_context.span_id();
        if let Some(parent) = self.dropped.ended(id, span.parent_span_id, kept) {
            span.parent_span_id = parent;
            self.inner.on_end(span);
        }
    }

    fn force_flush(&self) -> OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &Resource) {
        self.inner.set_resource(resource);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry::trace::{TraceContextExt, Tracer as _, TracerProvider as _};
    use opentelemetry::KeyValue;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SimpleSpanProcessor};
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::layer::SubscriberExt;

    /// A provider whose spans pass a [`LevelProcessor`] at `levels`.
    fn provider(levels: Levels) -> (SdkTracerProvider, InMemorySpanExporter, Arc<DroppedSpans>) {
        let exporter = InMemorySpanExporter::default();
        let p = LevelProcessor::new(
            SimpleSpanProcessor::new(exporter.clone()),
            levels,
            "runtime",
        );
        let dropped = p.dropped();
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        (provider, exporter, dropped)
    }

    /// name -> parent name ("" for a root), of what was exported.
    fn tree(spans: &[SpanData]) -> Vec<(String, String)> {
        let by_id: HashMap<SpanId, &str> = spans
            .iter()
            .map(|s| (s.span_context.span_id(), s.name.as_ref()))
            .collect();
        let mut t: Vec<(String, String)> = spans
            .iter()
            .map(|s| {
                let parent = match s.parent_span_id {
                    SpanId::INVALID => String::new(),
                    p => by_id
                        .get(&p)
                        .map_or_else(|| format!("orphan of {p}"), |n| n.to_string()),
                };
                (s.name.to_string(), parent)
            })
            .collect();
        t.sort();
        t
    }

    /// The shape of a `shoji run` made with `tracing`, as the runtime makes it: an explicit
    /// parent (`guest.boot` under `vm.start`, which ends first) and an RPC client span whose
    /// context is sent on. Returns the exported tree, the name of the span the context sent
    /// from inside the RPC names, and what was left out.
    fn run_at(levels: Levels) -> (Vec<(String, String)>, String, Arc<DroppedSpans>) {
        let (provider, exporter, dropped) = provider(levels);
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("t")));
        // What `current_trace_context` does with the installed handle, on this test's own.
        let sent = tracing::subscriber::with_default(subscriber, || {
            let root = tracing::info_span!("run", source = "runtime");
            let sent = root.in_scope(|| {
                let vm = tracing::info_span!("vm.start", source = "hypervisor");
                vm.in_scope(|| {
                    tracing::info_span!("helper.start", source = "hypervisor").in_scope(|| {});
                });
                let boot = tracing::info_span!(parent: &vm, "guest.boot", source = "hypervisor");
                drop(vm);
                boot.in_scope(|| {
                    tracing::info_span!("shoji.agent.v1.AgentService/Ping", source = "runtime")
                        .in_scope(|| {});
                });
                drop(boot);
                let create = tracing::info_span!("container.create", source = "runtime");
                let sent = create.in_scope(|| {
                    let rpc = tracing::info_span!(
                        "shoji.agent.v1.AgentService/CreateContainer",
                        source = "runtime"
                    );
                    rpc.in_scope(|| {
                        let cx = tracing::Span::current().context();
                        dropped.kept_context(cx.span().span_context())
                    })
                });
                drop(create);
                sent
            });
            drop(root);
            sent
        });
        provider.force_flush().unwrap();
        let spans = exporter.get_finished_spans().unwrap();
        let name_of = |id: SpanId| {
            spans
                .iter()
                .find(|s| s.span_context.span_id() == id)
                .map_or_else(|| "none".to_string(), |s| s.name.to_string())
        };
        let sent_to = name_of(sent.span_id());
        (tree(&spans), sent_to, dropped)
    }

    #[test]
    fn the_level_table_orders_spans_from_boot_to_debug() {
        assert_eq!(span_level("run"), TraceLevel::Boot);
        assert_eq!(
            span_level("containerd.task.v3.Task/Create"),
            TraceLevel::Boot
        );
        assert_eq!(span_level("kernel.boot"), TraceLevel::Boot);
        assert_eq!(span_level("container.wait"), TraceLevel::Lifecycle);
        // A registry pull, as docs/tracing.md lists it.
        assert_eq!(span_level("image.pull"), TraceLevel::Lifecycle);
        assert_eq!(span_level("image.pull.blob"), TraceLevel::Lifecycle);
        assert_eq!(
            span_level("shoji.agent.v1.AgentService/CreateContainer"),
            TraceLevel::Rpc
        );
        assert_eq!(
            span_level("shoji.agent.v1.AgentService/Ping"),
            TraceLevel::Debug
        );
        assert_eq!(
            span_level("containerd.task.v3.Task/Stats"),
            TraceLevel::Debug
        );
        assert_eq!(span_level("container.oom"), TraceLevel::Lifecycle);
        assert_eq!(span_level("container.oom_watch"), TraceLevel::Lifecycle);
        assert_eq!(span_level("cgroup.update"), TraceLevel::Lifecycle);
        assert_eq!(span_level("something.new"), TraceLevel::Debug);
        let l = Levels {
            runtime: TraceLevel::Lifecycle,
            hypervisor: TraceLevel::Off,
            agent: TraceLevel::Boot,
        };
        assert!(l.keeps("runtime", "container.create"));
        assert!(!l.keeps("runtime", "shoji.agent.v1.AgentService/StartContainer"));
        assert!(
            !l.keeps("hypervisor", "vm.start"),
            "off keeps nothing, roots neither"
        );
        assert!(l.keeps("agent", "agent.boot"));
        assert!(!l.keeps("agent", "container.create"));
        assert!(
            l.keeps("no-such-source", "run"),
            "unknown sources are the runtime's"
        );
    }

    #[test]
    fn at_debug_everything_is_exported_as_it_was() {
        let (t, sent_to, dropped) = run_at(Levels::default());
        assert_eq!(
            t,
            [
                ("container.create", "run"),
                ("guest.boot", "vm.start"),
                ("helper.start", "vm.start"),
                ("run", ""),
                (
                    "shoji.agent.v1.AgentService/CreateContainer",
                    "container.create"
                ),
                ("shoji.agent.v1.AgentService/Ping", "guest.boot"),
                ("vm.start", "run"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(sent_to, "shoji.agent.v1.AgentService/CreateContainer");
        assert_eq!(dropped.count(), 0);
    }

    #[test]
    fn left_out_spans_are_skipped_by_their_children_and_by_the_context_sent_on() {
        let levels = Levels {
            runtime: TraceLevel::Boot,
            hypervisor: TraceLevel::Debug,
            agent: TraceLevel::Debug,
        };
        let (t, sent_to, dropped) = run_at(levels);
        // The Ping (debug) and the runtime's lifecycle and rpc spans are left out; nothing
        // points at them.
        assert_eq!(
            t,
            [
                ("guest.boot", "vm.start"),
                ("helper.start", "vm.start"),
                ("run", ""),
                ("vm.start", "run"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        // The agent would be told its parent is the root: the RPC and container.create are out.
        assert_eq!(sent_to, "run");
        assert_eq!(dropped.count(), 3);
        assert_eq!(
            dropped.remembered(),
            0,
            "nothing left out is remembered after its end"
        );
    }

    #[test]
    fn a_kept_span_under_a_left_out_explicit_parent_joins_the_nearest_kept_ancestor() {
        // The hypervisor's spans off: guest.boot's explicit parent vm.start is left out, and
        // the Ping under guest.boot (runtime at debug) hangs from the root.
        let levels = Levels {
            runtime: TraceLevel::Debug,
            hypervisor: TraceLevel::Off,
            agent: TraceLevel::Debug,
        };
        let (t, _, dropped) = run_at(levels);
        assert_eq!(
            t,
            [
                ("container.create", "run"),
                ("run", ""),
                (
                    "shoji.agent.v1.AgentService/CreateContainer",
                    "container.create"
                ),
                ("shoji.agent.v1.AgentService/Ping", "run"),
            ]
            .map(|(a, b)| (a.to_string(), b.to_string()))
        );
        assert_eq!(dropped.count(), 3);
        assert_eq!(dropped.remembered(), 0);
    }

    #[test]
    fn spans_made_with_the_sdk_directly_are_filtered_the_same_way() {
        // The agent's boot phases are made with the OpenTelemetry API, after the fact.
        let levels = Levels {
            agent: TraceLevel::Boot,
            ..Levels::default()
        };
        let exporter = InMemorySpanExporter::default();
        let p = LevelProcessor::new(SimpleSpanProcessor::new(exporter.clone()), levels, "agent");
        let provider = SdkTracerProvider::builder().with_span_processor(p).build();
        let tracer = provider.tracer("t");
        let server = tracer.start("shoji.agent.v1.AgentService/CreateContainer");
        let cx = Context::new().with_span(server);
        let child = tracer
            .span_builder("container.create")
            .with_attributes(vec![KeyValue::new("source", "agent")])
            .start_with_context(&tracer, &cx);
        drop(child);
        let boot = tracer.start_with_context("agent.boot", &cx);
        drop(boot);
        drop(cx);
        provider.force_flush().unwrap();
        let names: Vec<String> = exporter
            .get_finished_spans()
            .unwrap()
            .iter()
            .map(|s| format!("{}:{}", s.name, s.parent_span_id))
            .collect();
        assert_eq!(names, [format!("agent.boot:{}", SpanId::INVALID)]);
    }
}
