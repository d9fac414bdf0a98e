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
//!
//! A shim that is killed cannot end its root. What it takes to end it in the shim's place (its
//! ids, start and where the spans went) is kept in the sandbox's bundle ([`RECORD`]), and
//! containerd's `delete` of the sandbox's container after the dead shim ends it there
//! ([`end_in_place`]), as `shoji delete` does for a killed `shoji create` sandbox process.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use shoji_forwarder::hooks::TraceHooks;
use shoji_runtime::lifecycle::state::TraceRoot;
use shoji_runtime::sandbox::RunHooks as _;
use shoji_telemetry::host::DetachedSpan;
use shoji_telemetry::{KeyValue, SpanContext};
use tracing::info_span;

/// The file in the sandbox's bundle that records its lifetime root while the shim serves.
pub const RECORD: &str = "shoji-lifetime-root.json";

/// The value of `shoji.root_ended_by` on a root ended in a killed shim's place.
pub const ENDED_BY_DELETE: &str = "containerd-shim-shoji-v2 delete";

/// The sandbox's lifetime root and its context, when it is exported.
#[derive(Debug)]
pub struct Lifetime {
    /// `None` once ended.
    root: Mutex<Option<tracing::Span>>,
    root_cx: Option<SpanContext>,
    /// The root's record in the bundle, removed when the root is ended here.
    record: Mutex<Option<PathBuf>>,
}

impl Lifetime {
    /// Starts the root `sandbox` of sandbox `id`'s lifetime trace (a root whatever span is
    /// current); with `traced` false, nothing is recorded.
    pub fn start(id: &str, traced: bool) -> Self {
        if !traced {
            return Self {
                root: Mutex::new(None),
                root_cx: None,
                record: Mutex::new(None),
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
            record: Mutex::new(None),
        }
    }

    /// Records the root in `bundle` ([`RECORD`]) for whoever must end it if the shim is
    /// killed: `hooks` say where spans go, `started` is when the root began (taken just before
    /// [`Lifetime::start`]). A failure costs only that root, and is logged.
    pub fn keep_record(&self, hooks: TraceHooks, started: SystemTime, bundle: &Path) -> TraceHooks {
        let hooks = hooks.rooted_at(started);
        let (Some(root), Some(_)) = (self.root(), &self.root_cx) else {
            return hooks;
        };
        let Some(record) = root.in_scope(|| hooks.trace_root()) else {
            return hooks;
        };
        let path = bundle.join(RECORD);
        let written = serde_json::to_vec(&record)
            .map_err(std::io::Error::other)
            .and_then(|json| shoji_runtime::private_fs::write_private(&path, &json));
        match written {
            Ok(()) => *self.record.lock().unwrap_or_else(|p| p.into_inner()) = Some(path),
            Err(e) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot record the lifetime root: a killed shim's trace will not be ended")
            }
        }
        hooks
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
        if let Some(path) = self.record.lock().unwrap_or_else(|p| p.into_inner()).take() {
            let _ = std::fs::remove_file(path);
        }
    }
}

/// The root `sandbox` that stands for one a killed shim did not end: the recorded ids and
/// start, the root's identity, status Error, and [`ENDED_BY_DELETE`].
pub fn lost_root(record: &TraceRoot, sandbox_id: &str, noticed: SystemTime) -> DetachedSpan {
    DetachedSpan {
        trace_id: record.trace_id.clone(),
        span_id: record.span_id.clone(),
        name: "sandbox",
        start: SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(record.start_unix_nano),
        end: noticed,
        attributes: vec![
            KeyValue::new("source", "runtime"),
            KeyValue::new("package", "shoji_shim::lifetime"),
            KeyValue::new("subsystem", "shim"),
            KeyValue::new("sandbox_id", sandbox_id.to_string()),
            KeyValue::new("shoji.root_ended_by", ENDED_BY_DELETE),
        ],
        error: Some("the shim exited unexpectedly".into()),
    }
}

/// Ends the lifetime root recorded in `bundle` in the place of a shim that died without ending
/// it, where its spans went; nothing when there is no record (the shim ended it, or did not
/// trace). Returns what went wrong, for the log: the cleanup matters more than the trace.
pub fn end_in_place(bundle: &Path, sandbox_id: &str) -> Result<(), String> {
    let path = bundle.join(RECORD);
    let json = match std::fs::read(&path) {
        Ok(j) => j,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(format!("cannot read {}: {e}", path.display())),
    };
    let _ = std::fs::remove_file(&path);
    let record: TraceRoot = serde_json::from_slice(&json)
        .map_err(|e| format!("{} is not a lifetime root record: {e}", path.display()))?;
    let span = lost_root(&record, sandbox_id, SystemTime::now());
    let target = shoji_forwarder::roots::sink_of(&record.export);
    match shoji_telemetry::host::export_detached(&target, &record.service_name, span) {
        Ok(0) => Ok(()),
        Ok(_) => Err(format!(
            "the lifetime root of trace {} could not be exported",
            record.trace_id
        )),
        Err(e) => Err(format!(
            "cannot end the lifetime root of trace {}: {e}",
            record.trace_id
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoji_runtime::lifecycle::state::TraceExport;

    /// The root that stands for a killed shim's carries the real root's identity under the same
    /// names, the recorded ids and start, and who ended it.
    #[test]
    fn a_lost_lifetime_root_is_the_recorded_one_ended_by_delete() {
        let record = TraceRoot {
            trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
            span_id: "b7ad6b7169203331".into(),
            start_unix_nano: 2_000,
            service_name: "shoji-shim".into(),
            export: TraceExport::Store {
                data_dir: "/d".into(),
            },
            clock_offset_ns: None,
        };
        let noticed = SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(3);
        let span = lost_root(&record, "pod1", noticed);
        assert_eq!((span.name, span.end), ("sandbox", noticed));
        assert_eq!(
            span.start,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(2)
        );
        assert_eq!(
            (span.trace_id.as_str(), span.span_id.as_str()),
            (record.trace_id.as_str(), record.span_id.as_str())
        );
        assert!(span.error.is_some());
        let real = Lifetime::start("pod1", true);
        let real = real.root().expect("a root");
        let fields = real.metadata().expect("the root's metadata").fields();
        for kv in &span.attributes {
            let key = kv.key.as_str();
            if key == "shoji.root_ended_by" {
                assert_eq!(kv.value.as_str(), ENDED_BY_DELETE);
            } else {
                assert!(
                    fields.field(key).is_some(),
                    "the real root has no field {key}"
                );
            }
        }
    }

    /// Without a record (the shim ended its root, or did not trace) `delete` does nothing.
    #[test]
    fn no_record_means_nothing_to_end() {
        let dir = tempfile::tempdir().expect("tempdir");
        assert_eq!(end_in_place(dir.path(), "pod1"), Ok(()));
        std::fs::write(dir.path().join(RECORD), "{").expect("write");
        let e = end_in_place(dir.path(), "pod1").expect_err("a bad record is told");
        assert!(e.contains(RECORD), "{e}");
        assert!(
            !dir.path().join(RECORD).exists(),
            "a bad record is not read twice"
        );
    }
}
