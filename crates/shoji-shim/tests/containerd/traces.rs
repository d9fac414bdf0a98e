//! Traces for the shim's tests: `shoji trace serve` as the one real OTLP receiver of containerd,
//! the shim and the agent, and structural checks of what it stored.

use std::collections::{BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use shoji_trace::model::{SpanRecord, Trace};
use shoji_trace::store::{Store, SummaryFilter};

use super::common::shoji_bin;

/// A running `shoji trace serve`, stopped when dropped: on a failed assertion too.
pub struct Server(std::process::Child);

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shoji trace serve` on free ports, storing into `data`; returns it and its OTLP/HTTP base URL.
pub fn serve(data: &Path) -> (Server, String) {
    let (server, http, _) = serve_both(data);
    (server, http)
}

/// [`serve`], also returning its OTLP/gRPC address (`HOST:PORT`).
pub fn serve_both(data: &Path) -> (Server, String, String) {
    let (server, http, grpc, _) = serve_all(data);
    (server, http, grpc)
}

/// [`serve_both`], also returning its query API's base URL (`http://HOST:PORT`).
pub fn serve_all(data: &Path) -> (Server, String, String, String) {
    let mut server = Server(
        Command::new(shoji_bin())
            .args(["trace", "serve", "--grpc-port", "0", "--http-port", "0"])
            .args(["--query-port", "0", "--zipkin-port", "0", "--data-dir"])
            .arg(data)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting shoji trace serve"),
    );
    let out = server.0.stdout.take().expect("its stdout");
    // store, otlp-grpc, otlp-http, zipkin, query: all read, so none is written to a closed pipe.
    let lines: Vec<String> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .take(5)
        .collect();
    let printed = |key: &str| {
        lines
            .iter()
            .find_map(|l| l.strip_prefix(key))
            .map(str::to_string)
            .unwrap_or_else(|| panic!("serve printed {lines:?}"))
    };
    let http = printed("otlp-http ")
        .trim_end_matches("/v1/traces")
        .to_string();
    let grpc = printed("otlp-grpc ");
    let query = printed("query ").trim_end_matches('/').to_string();
    (server, http, grpc, query)
}

/// containerd's environment for tracing to the receiver at `http` (OTLP/HTTP), exporting
/// quickly; its shims inherit it.
pub fn containerd_tracing_env(http: &str) -> [(&'static str, &str); 4] {
    [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", http),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_SERVICE_NAME", "containerd"),
        ("OTEL_BSP_SCHEDULE_DELAY", "200"),
    ]
}

/// Every stored trace that holds a span named `name` from `service`.
pub fn traces_with(store: &Store, service: &str, name: &str) -> Vec<Trace> {
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

/// The one trace with `service`'s span `name`, once it holds every span in `want` (service,
/// name); containerd and the shim export in batches: poll, bounded.
pub fn trace_with(data: &Path, service: &str, name: &str, want: &[(&str, &str)]) -> Trace {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let store = Store::open(data).expect("opening the receiver's store");
        let found = traces_with(&store, service, name);
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
            assert!(
                Instant::now() < deadline,
                "no trace with {service}'s {name}"
            );
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The one trace with the shim's `method` server span (see [`trace_with`]).
pub fn request_trace(data: &Path, method: &str, want: &[(&str, &str)]) -> Trace {
    trace_with(
        data,
        "shoji-shim",
        &format!("containerd.task.v3.Task/{method}"),
        want,
    )
}

pub fn names(t: &Trace) -> String {
    t.spans
        .iter()
        .map(|s| format!("{}:{}", s.service, s.name()))
        .collect::<Vec<_>>()
        .join(", ")
}

/// One root (containerd's), every other span's parent in the trace, and the shim's server span
/// `name` a child of containerd's client span of the same name.
pub fn assert_one_tree_from_containerd(t: &Trace, name: &str) {
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

/// Every span of a service other than `root_service` descends from the service `above` names for
/// it: walking up from the span, the first span of another service is of that service (e.g. the
/// agent's under the shim's, the shim's under containerd's). Parents must all be in the trace.
pub fn assert_services_nest(t: &Trace, root_service: &str, above: impl Fn(&str) -> &'static str) {
    let by_id: HashMap<[u8; 8], &SpanRecord> = t.spans.iter().map(|s| (s.span_id, s)).collect();
    let parent = |s: &SpanRecord| {
        let id = s
            .parent_id
            .unwrap_or_else(|| panic!("{}:{} has no parent in {}", s.service, s.name(), names(t)));
        *by_id
            .get(&id)
            .unwrap_or_else(|| panic!("orphan {}:{} in {}", s.service, s.name(), names(t)))
    };
    for s in t.spans.iter().filter(|s| s.service != root_service) {
        let mut p = parent(s);
        while p.service == s.service {
            p = parent(p);
        }
        assert_eq!(
            p.service,
            above(&s.service),
            "{}:{} hangs under {}",
            s.service,
            s.name(),
            p.service
        );
    }
}

/// Every stored trace.
pub fn all_traces(data: &Path) -> Vec<Trace> {
    let store = Store::open(data).expect("opening the receiver's store");
    store
        .summaries(&SummaryFilter::default(), 1000, 0)
        .expect("listing traces")
        .iter()
        .filter_map(|s| store.trace(&s.trace_id).expect("reading a trace"))
        .collect()
}

/// The span's links, as (trace id, span id).
pub fn links(s: &SpanRecord) -> Vec<([u8; 16], [u8; 8])> {
    s.span
        .links
        .iter()
        .map(|l| {
            (
                l.trace_id
                    .as_slice()
                    .try_into()
                    .expect("a 16-byte trace id"),
                l.span_id.as_slice().try_into().expect("an 8-byte span id"),
            )
        })
        .collect()
}

pub fn attr(s: &SpanRecord, key: &str) -> String {
    s.attr(key).unwrap_or_default()
}

/// The shim's lifetime trace of sandbox `pod`, once its root has arrived (it ends when the
/// shim exits) with a `sandbox.request` for each method in `want`.
pub fn lifetime_trace(data: &Path, pod: &str, want: &[&str]) -> Trace {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let found: Vec<Trace> = all_traces(data)
            .into_iter()
            .filter(|t| {
                t.spans.iter().any(|s| {
                    s.service == "shoji-shim"
                        && s.name() == "sandbox"
                        && attr(s, "sandbox_id") == pod
                })
            })
            .collect();
        assert!(
            found.len() < 2,
            "the pod has {} lifetime traces",
            found.len()
        );
        if let [t] = found.as_slice() {
            let methods: BTreeSet<String> = t
                .spans
                .iter()
                .filter(|s| s.name() == "sandbox.request")
                .map(|s| attr(s, "rpc.method"))
                .collect();
            if want.iter().all(|m| methods.contains(*m)) {
                return t.clone();
            }
            assert!(
                Instant::now() < deadline,
                "the lifetime trace has requests {methods:?}, not all of {want:?}: {}",
                names(t)
            );
        }
        assert!(Instant::now() < deadline, "no lifetime trace for pod {pod}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The lifetime trace's root `sandbox`, once checked that every other span of the trace is a
/// `sandbox.request` directly under it.
pub fn lifetime_root(life: &Trace) -> &SpanRecord {
    let root = life
        .spans
        .iter()
        .find(|s| s.name() == "sandbox")
        .expect("the lifetime root");
    assert!(root.parent_id.is_none(), "`sandbox` is the lifetime's root");
    for s in life.spans.iter().filter(|s| s.span_id != root.span_id) {
        assert_eq!(
            (s.name(), s.parent_id),
            ("sandbox.request", Some(root.span_id)),
            "the lifetime trace is its root and one child per request: {}",
            names(life)
        );
        assert!(root.start_ns <= s.start_ns, "the root starts first");
    }
    root
}
