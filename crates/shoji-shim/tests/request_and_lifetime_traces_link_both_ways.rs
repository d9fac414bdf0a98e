//! A pod under containerd has two kinds of trace: one per containerd request (the shim's
//! `containerd.task.v3.Task/<Method>` server span under containerd's spans) and the sandbox's
//! own lifetime trace (the shim's root `sandbox`, one `sandbox.request` per task request). They
//! are linked both ways with OTLP span links: every request's shim span links to `sandbox`, and
//! every `sandbox.request` links to its request's shim span. Checked on the spans a real
//! receiver (`shoji trace serve`) stored, from a real containerd with tracing on driven by
//! crictl through a pod's life, and on what its Jaeger API (`/api/traces/{id}`, `FOLLOWS_FROM`
//! with the other trace's id) and the viewer's API give for them.

use crate::containerd;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use containerd::traces::{
    all_traces, attr, containerd_tracing_env, lifetime_root, lifetime_trace, links, serve_all,
};
use containerd::{Containerd, HANDLER};
use shoji_trace::model::SpanRecord;

const SERVER_PREFIX: &str = "containerd.task.v3.Task/";

/// `path` of the receiver's query API, as JSON.
fn get_json(query: &str, path: &str) -> serde_json::Value {
    let url = format!("{query}{path}");
    let resp = reqwest::blocking::get(&url).unwrap_or_else(|e| panic!("GET {url}: {e}"));
    assert!(resp.status().is_success(), "GET {url}: {}", resp.status());
    let body = resp.text().unwrap_or_else(|e| panic!("GET {url}: {e}"));
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}: {body}"))
}

/// The `FOLLOWS_FROM` references of span `span_id` in the Jaeger JSON of trace `trace_id`.
fn follows_from(query: &str, trace_id: &[u8], span_id: &[u8]) -> Vec<(String, String)> {
    let t = get_json(query, &format!("/api/traces/{}", hex::encode(trace_id)));
    let spans = t["data"][0]["spans"].as_array().expect("the trace's spans");
    let span = spans
        .iter()
        .find(|s| s["spanID"] == hex::encode(span_id))
        .expect("the span in /api/traces");
    span["references"]
        .as_array()
        .expect("references")
        .iter()
        .filter(|r| r["refType"] == "FOLLOWS_FROM")
        .map(|r| {
            (
                r["traceID"].as_str().unwrap_or_default().to_string(),
                r["spanID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
fn vm_request_and_lifetime_traces_link_both_ways() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, http, _grpc, query) = serve_all(data.path());
    let mut c = Containerd::start_cri(&containerd_tracing_env(&http));
    let pod_json = c.pod_config("linked", "linked-pod");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let ctr_json = c.container_config("worker", &["sleep", "600"]);
    let id = c.crictl_ok(&["create", &pod, &ctr_json, &pod_json]);
    c.crictl_ok(&["start", &id]);
    assert_eq!(c.crictl_ok(&["exec", "--sync", &id, "echo", "hi"]), "hi");
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    // containerd exports what it still holds when it stops; the shim ends its lifetime root
    // when it exits, after the pod's removal.
    c.stop();
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();

    // A pod's life: the pause container's and the worker's create, start, the exec's, kills,
    // deletes, and the shim's shutdown.
    let want = [
        "Create", "Start", "Exec", "Wait", "Kill", "Delete", "Shutdown",
    ];
    let life = lifetime_trace(data.path(), &pod, &want);
    let root = lifetime_root(&life);
    assert!(
        !attr(root, "vm.accel").is_empty(),
        "the root names the accelerator"
    );

    // Every shim server span in the store, whatever trace it is in, by id.
    let traces = all_traces(data.path());
    let servers: HashMap<[u8; 8], &SpanRecord> = traces
        .iter()
        .flat_map(|t| t.spans.iter())
        .filter(|s| s.service == "shoji-shim" && s.name().starts_with(SERVER_PREFIX))
        .map(|s| (s.span_id, s))
        .collect();
    let by_id: HashMap<[u8; 8], &SpanRecord> = traces
        .iter()
        .flat_map(|t| t.spans.iter())
        .map(|s| (s.span_id, s))
        .collect();

    // Lifetime -> request: each `sandbox.request` links to its request's shim span, in a trace
    // of its own that containerd's request started.
    let mut linked_back = BTreeSet::new();
    for s in life.spans.iter().filter(|s| s.name() == "sandbox.request") {
        let [(trace, span)] = links(s)[..] else {
            panic!(
                "sandbox.request {} has links {:?}",
                attr(s, "rpc.method"),
                links(s)
            );
        };
        assert_ne!(trace, life.trace_id, "the link leads to another trace");
        let server = servers.get(&span).unwrap_or_else(|| {
            panic!(
                "sandbox.request links to {} which is no shim request span",
                hex::encode(span)
            )
        });
        assert_eq!(server.trace_id, trace);
        assert_eq!(
            server.name(),
            format!("{SERVER_PREFIX}{}", attr(s, "rpc.method")),
            "the link names the request's own span"
        );
        assert_eq!(attr(server, "container_id"), attr(s, "container_id"));
        // A request containerd sent with its trace context continues containerd's trace (one
        // it sent without is a root of its own, linked all the same).
        if let Some(p) = server.parent_id {
            let parent = by_id
                .get(&p)
                .unwrap_or_else(|| panic!("{}'s parent is not stored", server.name()));
            assert_eq!(
                parent.service,
                "containerd",
                "{} is under containerd's span",
                server.name()
            );
        }
        linked_back.insert(span);
    }

    // Request -> lifetime: every shim request span links to the lifetime root, and is the one
    // a `sandbox.request` links back to.
    let mut methods = BTreeSet::new();
    for s in servers.values() {
        assert_eq!(
            links(s),
            [(life.trace_id, root.span_id)],
            "{} links to the sandbox's lifetime root",
            s.name()
        );
        assert!(
            linked_back.contains(&s.span_id),
            "{} has its sandbox.request",
            s.name()
        );
        methods.insert(s.name().trim_start_matches(SERVER_PREFIX).to_string());
    }
    for m in want {
        assert!(
            methods.contains(m),
            "a shim {m} span is stored: {methods:?}"
        );
    }

    // The links survive the Jaeger API both ways, as FOLLOWS_FROM the other trace...
    let create = servers
        .values()
        .find(|s| s.name() == format!("{SERVER_PREFIX}Create"))
        .expect("a shim Create");
    assert!(
        create.parent_id.is_some(),
        "the Create continues containerd's RunPodSandbox trace"
    );
    assert_eq!(
        follows_from(&query, &create.trace_id, &create.span_id),
        [(hex::encode(life.trace_id), hex::encode(root.span_id))],
        "the request's span refers to the lifetime root"
    );
    let back = life
        .spans
        .iter()
        .find(|s| links(s).first().is_some_and(|l| l.1 == create.span_id))
        .expect("the Create's sandbox.request");
    assert_eq!(
        follows_from(&query, &life.trace_id, &back.span_id),
        [(hex::encode(create.trace_id), hex::encode(create.span_id))],
        "the lifetime's span refers to the request's"
    );
    // ... and the viewer's form, which the viewer draws its link list from.
    let viewer = get_json(
        &query,
        &format!("/api/viewer/traces/{}", hex::encode(life.trace_id)),
    );
    let text = viewer.to_string();
    assert!(
        text.contains(&hex::encode(create.trace_id)) && text.contains(&hex::encode(create.span_id)),
        "the viewer's form of the lifetime trace carries the link to the Create"
    );
    drop(server);
}
