//! Issue 11: a real Jaeger (the all-in-one, v1.76.0, built by `scripts/lib.sh`'s
//! `ensure_jaeger`) receives a traced `shoji run` over OTLP gRPC and over OTLP/HTTP, and forwards
//! what it received to `shoji trace serve` (its own OTLP exporter). The trace read back through
//! Jaeger's `/api/traces/{id}` equals Shoji's `/api/traces/{id}` and `shoji trace export
//! --format jaeger-json`, field by field, after [`normalised`] (which lists what legitimately
//! differs).

use crate::common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{shoji_bin, text, TestEnv};
use serde_json::Value;

/// The Jaeger binary: `$SHOJI_JAEGER` (set by `scripts/test.sh`), else where `ensure_jaeger`
/// caches it.
fn jaeger_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOJI_JAEGER") {
        return p.into();
    }
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| Path::new(&h).join(".cache")))
        .expect("HOME or XDG_CACHE_HOME")
        .join("shoji/go-tools/jaeger-v1.76.0");
    assert!(
        cache.is_file(),
        "{} missing: run `. scripts/lib.sh && ensure_jaeger` (scripts/test.sh does)",
        cache.display()
    );
    cache
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Kills and reaps a child on every path out of the test.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `shoji trace serve` on free ports: (process, OTLP/gRPC address, query base URL).
fn shoji_serve(data: &Path) -> (Reaped, String, String) {
    let mut child = Command::new(shoji_bin())
        .args(["trace", "serve"])
        .args(["--grpc-port", "0", "--http-port", "0", "--query-port", "0"])
        .args(["--zipkin-port", "0", "--data-dir"])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start shoji trace serve");
    let out = child.stdout.take().expect("stdout");
    let child = Reaped(child);
    let mut grpc = String::new();
    let mut query = String::new();
    for line in BufReader::new(out).lines().map_while(Result::ok) {
        if let Some(a) = line.strip_prefix("otlp-grpc ") {
            grpc = a.to_string();
        }
        if let Some(u) = line.strip_prefix("query ") {
            query = u.trim_end_matches('/').to_string();
            break;
        }
    }
    assert!(
        !grpc.is_empty() && !query.is_empty(),
        "serve printed no addresses"
    );
    (child, grpc, query)
}

struct Jaeger {
    _proc: Reaped,
    otlp_grpc: String,
    otlp_http: String,
    query: String,
}

/// Jaeger on free ports (its defaults are Shoji's: 4317, 4318, 16686), memory storage, and an
/// OTLP exporter forwarding every span it receives to `forward_to` (Shoji's OTLP/gRPC).
fn start_jaeger(dir: &Path, forward_to: &str) -> Jaeger {
    let (g, h, q, qg) = (free_port(), free_port(), free_port(), free_port());
    let config = format!(
        r#"
service:
  extensions: [jaeger_storage, jaeger_query]
  pipelines:
    traces:
      receivers: [otlp]
      exporters: [jaeger_storage_exporter, otlp/shoji]
  telemetry:
    metrics:
      level: none
    logs:
      level: warn
extensions:
  jaeger_query:
    storage:
      traces: mem
    http:
      endpoint: 127.0.0.1:{q}
    grpc:
      endpoint: 127.0.0.1:{qg}
  jaeger_storage:
    backends:
      mem:
        memory:
          max_traces: 1000
receivers:
  otlp:
    protocols:
      grpc:
        endpoint: 127.0.0.1:{g}
      http:
        endpoint: 127.0.0.1:{h}
exporters:
  jaeger_storage_exporter:
    trace_storage: mem
  otlp/shoji:
    endpoint: {forward_to}
    tls:
      insecure: true
"#
    );
    let file = dir.join("jaeger.yaml");
    std::fs::write(&file, config).expect("write the Jaeger config");
    let log = std::fs::File::create(dir.join("jaeger.log")).expect("jaeger log");
    let proc = Command::new(jaeger_bin())
        .arg("--config")
        .arg(&file)
        .stdout(log.try_clone().expect("log"))
        .stderr(log)
        .spawn()
        .expect("start jaeger");
    let j = Jaeger {
        _proc: Reaped(proc),
        otlp_grpc: format!("http://127.0.0.1:{g}"),
        otlp_http: format!("http://127.0.0.1:{h}"),
        query: format!("http://127.0.0.1:{q}"),
    };
    let deadline = Instant::now() + Duration::from_secs(60);
    while get(&format!("{}/api/services", j.query)).is_none() {
        assert!(
            Instant::now() < deadline,
            "Jaeger did not answer in 60 s: {}",
            std::fs::read_to_string(dir.join("jaeger.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    j
}

/// GET a URL; the JSON body on 200, else `None`.
fn get(url: &str) -> Option<Value> {
    let r = reqwest::blocking::get(url).ok()?;
    if r.status() != 200 {
        return None;
    }
    serde_json::from_str(&r.text().ok()?).ok()
}

/// A Jaeger trace in a form where equal means "the same trace":
/// - spans in span-id order, each with its process inlined (process ids are per-response
///   numbering: `p1`, `p2` follow the order spans were returned in);
/// - tags, process tags and log fields sorted by key (Jaeger's query sorts attributes; Shoji
///   keeps the order they arrived in);
/// - `flags` dropped: Jaeger's model takes them from the OTLP span's W3C flags, which this
///   comparison does not test (the runtime sets none), and Shoji keeps the OTLP value;
/// - an absent, null or empty `warnings` is the same.
fn normalised(trace: &Value) -> Value {
    let processes = trace["processes"].clone();
    let sort_by_key = |v: &mut Value| {
        if let Some(a) = v.as_array_mut() {
            a.sort_by(|x, y| x["key"].to_string().cmp(&y["key"].to_string()));
        }
    };
    let mut spans: Vec<Value> = trace["spans"].as_array().cloned().unwrap_or_default();
    for s in &mut spans {
        let mut p = processes[s["processID"].as_str().unwrap_or_default()].clone();
        sort_by_key(&mut p["tags"]);
        let o = s.as_object_mut().expect("span object");
        o.remove("processID");
        o.remove("flags");
        o.insert("process".into(), p);
        if o.get("warnings")
            .is_none_or(|w| w.is_null() || w.as_array().is_some_and(Vec::is_empty))
        {
            o.insert("warnings".into(), Value::Null);
        }
        sort_by_key(&mut s["tags"]);
        if let Some(logs) = s["logs"].as_array_mut() {
            for l in logs {
                sort_by_key(&mut l["fields"]);
            }
        }
    }
    spans.sort_by(|a, b| a["spanID"].to_string().cmp(&b["spanID"].to_string()));
    serde_json::json!({"traceID": trace["traceID"], "spans": spans})
}

/// The first difference between two normalised traces, for a readable failure.
fn first_difference(a: &Value, b: &Value) -> String {
    let (sa, sb) = (a["spans"].as_array(), b["spans"].as_array());
    let (Some(sa), Some(sb)) = (sa, sb) else {
        return "no spans".into();
    };
    if sa.len() != sb.len() {
        return format!("{} spans against {}", sa.len(), sb.len());
    }
    for (x, y) in sa.iter().zip(sb) {
        if x != y {
            return format!("span differs:\n  {x}\n  {y}");
        }
    }
    format!("trace ids {} and {}", a["traceID"], b["traceID"])
}

#[test]
fn vm_jaeger_and_shoji_show_the_same_trace_received_over_grpc_and_http() {
    let env = TestEnv::new();
    let shoji_data = env.dir.path().join("server");
    let (_serve, shoji_grpc, shoji_query) = shoji_serve(&shoji_data);
    let jaeger = start_jaeger(env.dir.path(), &shoji_grpc);

    env.traced_run_to(&jaeger.otlp_grpc, "grpc");
    env.traced_run_to(&jaeger.otlp_http, "http/protobuf");

    // Jaeger forwards asynchronously: wait until Shoji has both traces, each with as many
    // spans as Jaeger.
    let deadline = Instant::now() + Duration::from_secs(60);
    let (ids, jaeger_traces) = loop {
        let ls = Command::new(shoji_bin())
            .args(["trace", "ls", "--json", "--data-dir"])
            .arg(&shoji_data)
            .output()
            .expect("shoji trace ls");
        let ids: Vec<String> = text(&ls.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter_map(|v| v["trace_id"].as_str().map(str::to_string))
            .collect();
        let jaeger_traces: Vec<Option<Value>> = ids
            .iter()
            .map(|id| get(&format!("{}/api/traces/{id}", jaeger.query)))
            .collect();
        let complete = ids.len() == 2
            && ids.iter().zip(&jaeger_traces).all(|(id, j)| {
                let shoji = get(&format!("{shoji_query}/api/traces/{id}"));
                let n = |v: &Option<Value>| {
                    v.as_ref()
                        .and_then(|v| v["data"][0]["spans"].as_array().map(Vec::len))
                };
                n(j).is_some() && n(j) == n(&shoji)
            });
        if complete {
            break (ids, jaeger_traces);
        }
        assert!(
            Instant::now() < deadline,
            "Shoji and Jaeger did not get the same traces in 60 s: shoji has {ids:?}; jaeger log: {}",
            std::fs::read_to_string(env.dir.path().join("jaeger.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(300));
    };

    for (id, from_jaeger) in ids.iter().zip(jaeger_traces) {
        let from_jaeger = normalised(&from_jaeger.expect("jaeger trace")["data"][0]);
        let from_api = normalised(
            &get(&format!("{shoji_query}/api/traces/{id}")).expect("shoji trace")["data"][0],
        );
        let export = Command::new(shoji_bin())
            .args([
                "trace",
                "export",
                id,
                "--format",
                "jaeger-json",
                "--data-dir",
            ])
            .arg(&shoji_data)
            .output()
            .expect("shoji trace export");
        assert!(export.status.success(), "{}", text(&export.stderr));
        let exported: Value = serde_json::from_slice(&export.stdout).expect("export is JSON");
        let from_export = normalised(&exported["data"][0]);

        let spans = from_jaeger["spans"].as_array().map_or(0, Vec::len);
        assert!(spans >= 10, "a run is at least ten spans, got {spans}");
        assert!(
            from_jaeger == from_api,
            "trace {id}: Jaeger's /api/traces and Shoji's differ: {}",
            first_difference(&from_jaeger, &from_api)
        );
        assert!(
            from_jaeger == from_export,
            "trace {id}: Jaeger's /api/traces and Shoji's jaeger-json export differ: {}",
            first_difference(&from_jaeger, &from_export)
        );
    }
}
