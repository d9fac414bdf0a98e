//! With containerd's tracing on, a CRI request that reaches the shim is ONE trace from
//! containerd's CRI server span down to the agent's spans: `RunPodSandbox` (containerd) > its
//! task create (containerd's ttRPC client span) > the shim's `Create` > `vm.start` and the boot,
//! the pod network's set-up (host and agent sides) > the agent's `CreateContainer`, and the pause container's start down to the agent's
//! `StartContainer`, with containerd's spans the ancestors of the shim's and nothing orphaned. All three services export to one real receiver, `shoji trace serve`.

use crate::containerd;

use std::collections::HashMap;

use containerd::traces::{
    assert_one_tree_from_containerd, assert_services_nest, containerd_tracing_env, serve,
    trace_with,
};
use containerd::{Containerd, HANDLER};
use shoji_trace::model::SpanRecord;

#[test]
fn vm_cri_run_pod_sandbox_to_agent_is_one_trace() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, http) = serve(data.path());
    let mut c = Containerd::start_cri(&containerd_tracing_env(&http));
    let pod_json = c.pod_config("traced", "traced-pod");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    // containerd exports what it still holds when it stops.
    c.stop();
    c.wait_until_nothing_left(std::time::Duration::from_secs(20));
    c.assert_nothing_left();

    let run = "runtime.v1.RuntimeService/RunPodSandbox";
    let t = trace_with(
        data.path(),
        "containerd",
        run,
        &[
            ("containerd", "containerd.task.v3.Task/Create"),
            ("shoji-shim", "containerd.task.v3.Task/Create"),
            ("shoji-shim", "vm.start"),
            ("shoji-shim", "guest.boot"),
            // The pod's network namespace mirrored into the VM, the guest told.
            ("shoji-shim", "network.prepare"),
            ("shoji-shim", "network.setup"),
            ("shoji-agent", "network.configure"),
            ("shoji-shim", "container.create"),
            ("shoji-agent", "agent.boot"),
            ("shoji-agent", "shoji.agent.v1.AgentService/CreateContainer"),
            // The pause container is started within RunPodSandbox too.
            ("shoji-shim", "containerd.task.v3.Task/Start"),
            ("shoji-agent", "shoji.agent.v1.AgentService/StartContainer"),
        ],
    );
    assert_one_tree_from_containerd(&t, "containerd.task.v3.Task/Create");
    let by_id: HashMap<[u8; 8], &SpanRecord> = t.spans.iter().map(|s| (s.span_id, s)).collect();
    let root = t
        .spans
        .iter()
        .find(|s| s.parent_id.is_none())
        .expect("a root");
    assert_eq!(
        (root.service.as_str(), root.name()),
        ("containerd", run),
        "the trace starts at containerd's CRI request"
    );
    // Every span of the shim and the agent descends from containerd's spans: walking up from
    // each, the first span of another service is containerd's (shim) or the shim's (agent).
    assert_services_nest(&t, "containerd", |service| match service {
        "shoji-agent" => "shoji-shim",
        _ => "containerd",
    });
    // The pod network's spans hang under the shim's Create, the agent's under the shim's setup.
    let parent = |s: &SpanRecord| by_id[&s.parent_id.expect("a parent")];
    let span = |svc: &str, name: &str| {
        t.spans
            .iter()
            .find(|s| s.service == svc && s.name() == name)
            .expect("a span")
    };
    for name in ["network.prepare", "network.setup"] {
        let mut p = parent(span("shoji-shim", name));
        while p.name() != "containerd.task.v3.Task/Create" {
            p = parent(p);
        }
        assert_eq!(p.service, "shoji-shim", "{name} is under the shim's Create");
    }
    let mut p = parent(span("shoji-agent", "network.configure"));
    while p.name() != "network.setup" {
        assert_ne!(
            p.name(),
            "containerd.task.v3.Task/Create",
            "the agent's side is under the host's network.setup"
        );
        p = parent(p);
    }
    // Each shim request span ends with its request: inside containerd's client span for it
    // (same host clock), however long what it started runs on (the init's wait under Create,
    // the OOM watch under Start).
    for name in [
        "containerd.task.v3.Task/Create",
        "containerd.task.v3.Task/Start",
    ] {
        let server = span("shoji-shim", name);
        let client = parent(server);
        assert_eq!(
            (client.service.as_str(), client.name()),
            ("containerd", name)
        );
        assert!(
            server.end_ns <= client.end_ns,
            "the shim's {name} ends {} ms after containerd's call returned",
            (server.end_ns - client.end_ns) / 1_000_000
        );
    }
    drop(server);
}
