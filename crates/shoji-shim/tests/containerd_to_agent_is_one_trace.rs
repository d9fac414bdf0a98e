//! With containerd's tracing on (`OTEL_*` in its environment, which its shims inherit), each
//! containerd request that reaches the shim is ONE trace from containerd's span to the agent's:
//! the shim's `containerd.task.v3.Task/<Method>` server span is a child of containerd's ttRPC
//! client span (W3C `traceparent` in the ttRPC metadata), the VM's boot and the agent's spans are
//! under the shim's `Create`, and nothing is orphaned. All three services export to one real
//! receiver, `shoji trace serve`.

mod containerd;
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use containerd::common::shoji_bin;
use containerd::{text, Containerd, RUNTIME};
use shoji_trace::model::{SpanRecord, Trace};
use shoji_trace::store::{Store, SummaryFilter};

/// `shoji trace serve` on free ports, storing into `data`; returns it and its OTLP/HTTP base URL.
fn serve(data: &std::path::Path) -> (std::process::Child, String) {
    let mut child = Command::new(shoji_bin())
        .args(["trace", "serve", "--grpc-port", "0", "--http-port", "0"])
        .args(["--query-port", "0", "--zipkin-port", "0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("starting shoji trace serve");
    let out = child.stdout.take().expect("its stdout");
    // store, otlp-grpc, otlp-http, zipkin, query: all read, so none is written to a closed pipe.
    let lines: Vec<String> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .take(5)
        .collect();
    let http = lines
        .iter()
        .find_map(|l| l.strip_prefix("otlp-http "))
        .map(|u| u.trim_end_matches("/v1/traces").to_string())
        .unwrap_or_else(|| panic!("serve printed {lines:?}"));
    (child, http)
}

/// Every stored trace that holds a span named `name` from `service`.
fn traces_with(store: &Store, service: &str, name: &str) -> Vec<Trace> {
    store
        .summaries(&SummaryFilter::default(), 1000, 0)
        .expect("listing traces")
        .iter()
        .filter_map(|s| store.trace(&s.trace_id).expect("reading a trace"))
        .filter(|t| {
            t.spans
                .iter()
                .any(|s| s.service == service && s.name() == name)
        })
        .collect()
}

/// The one trace with the shim's `method` server span, once it holds every span in `want`
/// (service, name); containerd and the shim export in batches: poll, bounded.
fn request_trace(data: &std::path::Path, method: &str, want: &[(&str, &str)]) -> Trace {
    let name = format!("containerd.task.v3.Task/{method}");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let store = Store::open(data).expect("opening the receiver's store");
        let found = traces_with(&store, "shoji-shim", &name);
        if let [t] = found.as_slice() {
            let missing: Vec<_> = want
                .iter()
                .filter(|(svc, n)| !t.spans.iter().any(|s| s.service == *svc && s.name() == *n))
                .collect();
            if missing.is_empty() {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "{name}'s trace lacks {missing:?}: {}",
                names(t)
            );
        } else {
            assert!(found.len() < 2, "{name} is in {} traces", found.len());
            assert!(Instant::now() < deadline, "no trace with the shim's {name}");
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn names(t: &Trace) -> String {
    t.spans
        .iter()
        .map(|s| format!("{}:{}", s.service, s.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One root (containerd's), every other span's parent in the trace, and the shim's server span
/// `name` a child of containerd's client span of the same name.
fn assert_one_tree_from_containerd(t: &Trace, name: &str) {
    let by_id: HashMap<[u8; 8], &SpanRecord> = t.spans.iter().map(|s| (s.span_id, s)).collect();
    let roots: Vec<&SpanRecord> = t.spans.iter().filter(|s| s.parent_id.is_none()).collect();
    assert_eq!(
        roots.len(),
        1,
        "one root: {:?}",
        roots.iter().map(|s| s.name()).collect::<Vec<_>>()
    );
    assert_eq!(
        roots[0].service,
        "containerd",
        "the root is containerd's: {}",
        roots[0].name()
    );
    for s in &t.spans {
        if let Some(p) = s.parent_id {
            assert!(
                by_id.contains_key(&p),
                "orphan {}:{} in {}",
                s.service,
                s.name(),
                names(t)
            );
        }
    }
    let shim = t
        .spans
        .iter()
        .find(|s| s.service == "shoji-shim" && s.name() == name)
        .expect("the shim's span");
    let parent = by_id[&shim.parent_id.expect("the shim's span has a parent")];
    assert_eq!(
        (parent.service.as_str(), parent.name()),
        ("containerd", name),
        "the shim's server span is under containerd's ttRPC client span"
    );
}

#[test]
fn vm_containerd_request_to_agent_is_one_trace() {
    let data = tempfile::tempdir().expect("tempdir");
    let (mut server, http) = serve(data.path());
    let mut c = Containerd::start(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", &http),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "containerd"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ]);
    let image = c.import_busybox();
    let out = c.ctr(&[
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        &image,
        "traced-1",
        "sh",
        "-c",
        "echo hi",
    ]);
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("hi\n", Some(0)),
        "{}",
        text(&out.stderr)
    );
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

    let _ = server.kill();
    let _ = server.wait();
}
