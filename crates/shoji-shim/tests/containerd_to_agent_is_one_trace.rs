//! With containerd's tracing on (`OTEL_*` in its environment, which its shims inherit), each
//! containerd request that reaches the shim is ONE trace from containerd's span to the agent's:
//! the shim's `containerd.task.v3.Task/<Method>` server span is a child of containerd's ttRPC
//! client span (W3C `traceparent` in the ttRPC metadata), the VM's boot and the agent's spans are
//! under the shim's `Create`, and nothing is orphaned. All three services export to one real
//! receiver, `shoji trace serve`.

use crate::containerd;
use std::collections::HashMap;

use containerd::traces::{
    assert_one_tree_from_containerd, containerd_tracing_env, request_trace, serve,
};
use containerd::Containerd;
use shoji_trace::model::SpanRecord;

#[test]
fn vm_containerd_request_to_agent_is_one_trace() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, http) = serve(data.path());
    let mut c = Containerd::start(&containerd_tracing_env(&http));
    let image = c.import_busybox();
    let out = c.ctr_run_rm(&[], &image, "traced-1", "echo hi");
    c.assert_output(&out, "hi\n", 0);
    // containerd exports what it still holds when it stops.
    c.stop();
    c.assert_nothing_left();

    // Create: containerd's task service > its ttRPC call > the shim > boot > the agent.
    let create = request_trace(
        data.path(),
        "Create",
        &[
            ("containerd", "containerd.task.v3.Task/Create"),
            ("shoji-shim", "vm.start"),
            ("shoji-shim", "guest.boot"),
            ("shoji-shim", "container.create"),
            ("shoji-shim", "container.wait"),
            ("shoji-agent", "agent.boot"),
            ("shoji-agent", "shoji.agent.v1.AgentService/CreateContainer"),
        ],
    );
    assert_one_tree_from_containerd(&create, "containerd.task.v3.Task/Create");
    // The agent's spans sit under the host's: its server spans under the shim's client spans.
    let by_id: HashMap<[u8; 8], &SpanRecord> =
        create.spans.iter().map(|s| (s.span_id, s)).collect();
    for s in create.spans.iter().filter(|s| s.service == "shoji-agent") {
        let p = by_id[&s.parent_id.expect("agent spans have a parent")];
        if s.name().starts_with("shoji.agent.v1.AgentService/") {
            assert_eq!((p.service.as_str(), p.name()), ("shoji-shim", s.name()));
        }
    }

    // Start: the same shape, down to the agent's StartContainer.
    let start = request_trace(
        data.path(),
        "Start",
        &[("shoji-agent", "shoji.agent.v1.AgentService/StartContainer")],
    );
    assert_one_tree_from_containerd(&start, "containerd.task.v3.Task/Start");
    assert_ne!(
        create.trace_id, start.trace_id,
        "one trace per containerd request"
    );

    drop(server);
}
