//! The official OpenTelemetry Python SDK's OTLP exporters (gRPC and HTTP protobuf) talking to
//! the real server. The Python packages come from `scripts/requirements-test.txt` (installed
//! by the set-up script); if they are missing this test fails rather than skips.

use crate::common;

use std::process::Command;

const SCRIPT: &str = r#"
import sys
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
kind, endpoint = sys.argv[1], sys.argv[2]
if kind == "grpc":
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True)
else:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    exporter = OTLPSpanExporter(endpoint=endpoint)
provider = TracerProvider(resource=Resource.create({"service.name": "py-" + kind}))
provider.add_span_processor(SimpleSpanProcessor(exporter))
tracer = provider.get_tracer("test")
with tracer.start_as_current_span("container.start") as root:
    with tracer.start_as_current_span("agent.exec") as child:
        child.set_attribute("source", "agent")
        child.set_attribute("process.pid", 42)
        child.add_event("started", {"argv0": "sh"})
print(format(root.get_span_context().trace_id, "032x"))
provider.shutdown()
"#;

fn run_python(kind: &str, endpoint: &str) -> [u8; 16] {
    let out = Command::new("python3")
        .args(["-c", SCRIPT, kind, endpoint])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .expect("python3 must be installed (scripts/setup.sh)");
    assert!(
        out.status.success(),
        "python OTLP client failed (pip install -r scripts/requirements-test.txt):\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let hex_id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    hex::decode(&hex_id)
        .ok()
        .and_then(|v| v.try_into().ok())
        .unwrap_or_else(|| panic!("bad trace id from python: {hex_id:?}"))
}

fn check(srv: &common::TestServer, id: [u8; 16], service: &str) {
    let t = srv.store.trace(&id).expect("read").expect("trace stored");
    assert_eq!(t.spans.len(), 2);
    let root = t
        .spans
        .iter()
        .find(|s| s.name() == "container.start")
        .expect("root");
    let child = t
        .spans
        .iter()
        .find(|s| s.name() == "agent.exec")
        .expect("child");
    assert_eq!(child.parent_id, Some(root.span_id));
    assert_eq!(child.attr("source").as_deref(), Some("agent"));
    assert_eq!(child.attr("process.pid").as_deref(), Some("42"));
    assert_eq!(child.span.events.len(), 1);
    assert_eq!(child.service, service);
}

#[test]
fn python_grpc_exporter_spans_are_stored() {
    let srv = common::TestServer::start();
    let id = run_python("grpc", &srv.grpc_url());
    check(&srv, id, "py-grpc");
}

#[test]
fn python_http_exporter_spans_are_stored() {
    let srv = common::TestServer::start();
    let id = run_python("http", &srv.http_url());
    check(&srv, id, "py-http");
}
