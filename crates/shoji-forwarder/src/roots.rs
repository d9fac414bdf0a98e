//! A sandbox's root span, the one trace's top (`run`, or `sandbox` for the lifecycle), and the
//! span that stands for it when a sandbox process dies without ending it (ADR 007): one
//! identity for both, so that a trace ended either way reads the same.

use std::time::SystemTime;

use shoji_runtime::lifecycle::client::LostRoot;
use shoji_runtime::lifecycle::state::TraceExport;
use shoji_telemetry::host::{DetachedSpan, SinkTarget};
use shoji_telemetry::KeyValue;

/// The root `sandbox` that stands for one a sandbox process died without ending (ADR 007):
/// its ids and start, the identity of [`root_span!`] (what is known of it: the state's
/// `shoji.accel` and exit code, the recorded clock offset), status Error with why, and
/// `shoji.root_ended_by` naming the command that ended it. Not `shoji.dropped_spans`: how many
/// spans the dead process had not exported yet is not known.
pub fn lost_root_span(lost: &LostRoot, ended_by: &'static str) -> DetachedSpan {
    let root = &lost.root;
    let id = lost.state.id.clone();
    let mut attributes = vec![
        KeyValue::new("source", "runtime"),
        KeyValue::new("package", "shoji_cli"),
        KeyValue::new("subsystem", "runtime"),
        KeyValue::new("sandbox_id", id.clone()),
        KeyValue::new("container_id", id.clone()),
        KeyValue::new("container.id", id),
    ];
    if let Some(accel) = lost.state.annotations.get("shoji.accel") {
        attributes.push(KeyValue::new("vm.accel", accel.clone()));
    }
    if let Some(offset) = root.clock_offset_ns {
        attributes.push(KeyValue::new("shoji.clock_offset_ns", offset));
    }
    if let Some(code) = lost.state.exit_code {
        attributes.push(KeyValue::new("process.exit_code", i64::from(code)));
    }
    attributes.push(KeyValue::new("shoji.root_ended_by", ended_by));
    DetachedSpan {
        trace_id: root.trace_id.clone(),
        span_id: root.span_id.clone(),
        name: "sandbox",
        start: SystemTime::UNIX_EPOCH + std::time::Duration::from_nanos(root.start_unix_nano),
        end: lost.noticed,
        attributes,
        error: Some(lost.why.clone()),
    }
}

/// Where a recorded root's spans went, as the sink to end it in.
pub fn sink_of(export: &TraceExport) -> SinkTarget {
    match export {
        TraceExport::Store { data_dir } => SinkTarget::Store(data_dir.clone()),
        TraceExport::Grpc { endpoint } => SinkTarget::Grpc(endpoint.clone()),
        TraceExport::Http { endpoint } => SinkTarget::Http(endpoint.clone()),
        TraceExport::HttpJson { endpoint } => SinkTarget::HttpJson(endpoint.clone()),
    }
}

/// Ends a lost root ([`lost_root_span`]) where the sandbox's spans went; a failure is told on
/// stderr and does not fail the command (the cleanup matters more than the trace).
pub fn end_lost_root(lost: &LostRoot, ended_by: &'static str) {
    let root = &lost.root;
    let target = sink_of(&root.export);
    let span = lost_root_span(lost, ended_by);
    match shoji_telemetry::host::export_detached(&target, &root.service_name, span) {
        Ok(0) => {}
        Ok(_) => eprintln!(
            "shoji: warning: the root span of trace {} could not be exported",
            root.trace_id
        ),
        Err(e) => eprintln!(
            "shoji: warning: cannot end the root span of trace {}: {e}",
            root.trace_id
        ),
    }
}

/// The root span of a sandbox's one trace (`run`, or `sandbox` for the lifecycle), with the
/// fields recorded as the sandbox goes. A macro because `tracing` wants the name as a literal.
/// [`lost_root_span`] stands for it when a sandbox process dies: keep their identities alike.
#[macro_export]
macro_rules! root_span {
    ($name:literal) => {
        tracing::info_span!(
            $name,
            source = "runtime",
            package = "shoji_cli",
            subsystem = "runtime",
            sandbox_id = tracing::field::Empty,
            container_id = tracing::field::Empty,
            container.id = tracing::field::Empty,
            vm.accel = tracing::field::Empty,
            process.exit_code = tracing::field::Empty,
            shoji.clock_offset_ns = tracing::field::Empty,
            shoji.agent_dropped_spans = tracing::field::Empty,
            shoji.agent_level_dropped_spans = tracing::field::Empty,
            shoji.dropped_spans = tracing::field::Empty,
            shoji.level_dropped_spans = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        )
    };
}

#[cfg(test)]
mod tests {
    use super::*;
    use shoji_runtime::lifecycle::state::TraceRoot;

    /// The root that stands for a lost one carries only what the real root can carry (and who
    /// ended it), under the same names.
    #[test]
    fn a_lost_roots_attributes_are_the_real_roots_fields() {
        let mut state: shoji_runtime::lifecycle::state::OciState = serde_json::from_value(
            serde_json::json!({"ociVersion": "1.2.0", "id": "c1", "status": "stopped",
                "bundle": "/b", "created": "2026-01-01T00:00:00Z", "exitCode": 137}),
        )
        .unwrap();
        state.annotations.insert("shoji.accel".into(), "tcg".into());
        let lost = LostRoot {
            root: TraceRoot {
                trace_id: "0af7651916cd43dd8448eb211c80319c".into(),
                span_id: "b7ad6b7169203331".into(),
                start_unix_nano: 1_000,
                service_name: "shoji-runtime".into(),
                export: TraceExport::Store {
                    data_dir: "/d".into(),
                },
                clock_offset_ns: Some(-3),
            },
            state,
            why: "the sandbox process exited unexpectedly".into(),
            noticed: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(2),
        };
        let span = lost_root_span(&lost, "shoji delete");
        let real = root_span!("sandbox");
        let fields = real.metadata().expect("the macro's metadata").fields();
        let keys: Vec<&str> = span.attributes.iter().map(|kv| kv.key.as_str()).collect();
        assert_eq!(
            keys,
            [
                "source",
                "package",
                "subsystem",
                "sandbox_id",
                "container_id",
                "container.id",
                "vm.accel",
                "shoji.clock_offset_ns",
                "process.exit_code",
                "shoji.root_ended_by"
            ]
        );
        for key in &keys[..keys.len() - 1] {
            assert!(fields.field(key).is_some(), "root_span! has no field {key}");
        }
        assert!(fields.field("shoji.root_ended_by").is_none());
        assert_eq!(span.name, "sandbox");
        assert_eq!(
            span.start,
            SystemTime::UNIX_EPOCH + std::time::Duration::from_micros(1)
        );
        assert_eq!(span.end, lost.noticed);
        assert_eq!(span.error.as_deref(), Some(lost.why.as_str()));
    }
}
