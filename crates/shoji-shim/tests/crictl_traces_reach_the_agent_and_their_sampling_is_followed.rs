//! With crictl's client tracing on, one trace runs from crictl's gRPC call through containerd's
//! CRI server and the shim to the agent; and the sampling decision made at crictl, the root, is
//! the one every service follows (parent-based): a request crictl leaves unsampled exports no
//! span from containerd, the shim or the agent, while the next, sampled, request of the same pod
//! exports them all. crictl, containerd, the shim and the agent export to one real receiver,
//! `shoji trace serve` (crictl over OTLP/gRPC, the others over OTLP/HTTP).

use crate::containerd;

use std::time::Duration;

use containerd::traces::{
    assert_services_nest, containerd_tracing_env, names, serve_both, trace_with, traces_with,
};
use containerd::{Containerd, HANDLER};
use shoji_trace::model::{SpanRecord, Trace};
use shoji_trace::store::{Store, SummaryFilter};

/// crictl's global flags for tracing to `grpc`, sampling `per_million` of its roots.
fn traced<'a>(grpc: &'a str, per_million: &'a str, args: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "--enable-tracing",
        "--tracing-endpoint",
        grpc,
        "--tracing-sampling-rate-per-million",
        per_million,
    ];
    all.extend_from_slice(args);
    all
}

#[test]
fn vm_crictl_traces_reach_the_agent_and_their_sampling_is_followed() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, http, grpc) = serve_both(data.path());
    let mut c = Containerd::start_cri(&containerd_tracing_env(&http));
    let pod_json = c.pod_config("sampled", "sampled-pod");
    // Unsampled at crictl: the pod's VM boots under a `traceparent` whose sampled flag is off.
    let pod = c.crictl_ok(&traced(
        &grpc,
        "0",
        &["runp", "--runtime", HANDLER, &pod_json],
    ));
    // Sampled at crictl (-1: always): a container joining the pod's VM.
    let ctr_json = c.container_config("worker", &["sleep", "600"]);
    let id = c.crictl_ok(&traced(
        &grpc,
        "-1",
        &["create", &pod, &ctr_json, &pod_json],
    ));
    c.crictl_ok(&traced(&grpc, "-1", &["start", &id]));
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    // containerd exports what it still holds when it stops.
    c.stop();
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();

    // CRI's CreateContainer only records the container in containerd; its task (the shim's
    // Create, the agent's CreateContainer) is made by StartContainer.
    let create = trace_with(
        data.path(),
        "cri-tools",
        "runtime.v1.RuntimeService/CreateContainer",
        &[("containerd", "runtime.v1.RuntimeService/CreateContainer")],
    );
    assert_one_tree_from_crictl(&create);
    let start = trace_with(
        data.path(),
        "cri-tools",
        "runtime.v1.RuntimeService/StartContainer",
        &[
            ("containerd", "runtime.v1.RuntimeService/StartContainer"),
            ("containerd", "containerd.task.v3.Task/Create"),
            ("shoji-shim", "containerd.task.v3.Task/Create"),
            ("shoji-agent", "shoji.agent.v1.AgentService/CreateContainer"),
            ("shoji-shim", "containerd.task.v3.Task/Start"),
            ("shoji-agent", "shoji.agent.v1.AgentService/StartContainer"),
        ],
    );
    assert_one_tree_from_crictl(&start);
    assert_ne!(create.trace_id, start.trace_id, "one trace per crictl call");

    // Nothing of the unsampled RunPodSandbox was exported by anyone: not crictl's call,
    // containerd's server span, the shim's Create and boot, or the agent's boot.
    let store = Store::open(data.path()).expect("opening the receiver's store");
    for (service, name) in [
        ("cri-tools", "runtime.v1.RuntimeService/RunPodSandbox"),
        ("containerd", "runtime.v1.RuntimeService/RunPodSandbox"),
        ("shoji-shim", "vm.start"),
        ("shoji-shim", "guest.boot"),
        ("shoji-agent", "agent.boot"),
    ] {
        let found = traces_with(&store, service, name);
        assert!(
            found.is_empty(),
            "{service}:{name} was exported although crictl did not sample it: {}",
            found.iter().map(names).collect::<Vec<_>>().join(" | ")
        );
    }
    // The unsampled request's shim Create is in no trace either: the only shim Create stored is
    // the sampled container's.
    let creates: usize = store
        .summaries(&SummaryFilter::default(), 1000, 0)
        .expect("listing traces")
        .iter()
        .filter_map(|s| store.trace(&s.trace_id).expect("reading a trace"))
        .map(|t| {
            t.spans
                .iter()
                .filter(|s| {
                    s.service == "shoji-shim" && s.name() == "containerd.task.v3.Task/Create"
                })
                .count()
        })
        .sum();
    assert_eq!(creates, 1, "the shim's Create spans stored");
    drop(server);
}

/// One root, crictl's client span; no orphan; the first ancestor of another service is crictl's
/// for containerd's spans, containerd's for the shim's and the shim's for the agent's.
fn assert_one_tree_from_crictl(t: &Trace) {
    let roots: Vec<&SpanRecord> = t.spans.iter().filter(|s| s.parent_id.is_none()).collect();
    assert_eq!(
        roots.iter().map(|s| s.service.as_str()).collect::<Vec<_>>(),
        ["cri-tools"],
        "one root, crictl's: {}",
        names(t)
    );
    assert_services_nest(t, "cri-tools", |service| match service {
        "containerd" => "cri-tools",
        "shoji-shim" => "containerd",
        _ => "shoji-shim",
    });
}
