//! Helpers shared by the integration tests: an in-process server on free loopback ports, a
//! server in a child process (for kill -9), and OTLP request builders.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use shoji_trace::server::{self, RunningServer, ServeConfig};
use shoji_trace::store::Store;

pub struct TestServer {
    pub rt: tokio::runtime::Runtime,
    pub server: Option<RunningServer>,
    pub store: Store,
    pub dir: tempfile::TempDir,
}

impl TestServer {
    pub fn start() -> TestServer {
        Self::start_with(|_| {})
    }

    pub fn start_with(f: impl FnOnce(&mut ServeConfig)) -> TestServer {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open store");
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        let mut cfg = ServeConfig {
            grpc_port: 0,
            http_port: 0,
            query_port: 0,
            zipkin_port: 0,
            ..ServeConfig::default()
        };
        f(&mut cfg);
        let server = rt
            .block_on(server::start(store.clone(), cfg))
            .expect("start server");
        TestServer {
            rt,
            server: Some(server),
            store,
            dir,
        }
    }

    pub fn grpc_url(&self) -> String {
        format!(
            "http://{}",
            self.server.as_ref().map(|s| s.grpc_addr).expect("server")
        )
    }
    pub fn http_url(&self) -> String {
        format!(
            "http://{}/v1/traces",
            self.server.as_ref().map(|s| s.http_addr).expect("server")
        )
    }
    pub fn query_url(&self) -> String {
        format!(
            "http://{}",
            self.server.as_ref().map(|s| s.query_addr).expect("server")
        )
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        if let Some(s) = self.server.take() {
            self.rt.block_on(s.shutdown());
        }
    }
}

pub fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

pub fn span(trace: u8, id: u64, parent: Option<u64>, name: &str, start: u64, end: u64) -> Span {
    Span {
        trace_id: vec![trace; 16],
        span_id: id.to_be_bytes().to_vec(),
        parent_span_id: parent.map(|p| p.to_be_bytes().to_vec()).unwrap_or_default(),
        name: name.into(),
        start_time_unix_nano: start,
        end_time_unix_nano: end,
        ..Span::default()
    }
}

pub fn request(service: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![kv("service.name", service)],
                ..Resource::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans,
                ..ScopeSpans::default()
            }],
            schema_url: String::new(),
        }],
    }
}

/// A batch of `n` spans in trace `trace_id` with ids from `first_id`, all children of span 1.
pub fn batch(trace_id: [u8; 16], first_id: u64, n: u64) -> ExportTraceServiceRequest {
    let t0 = 1_700_000_000_000_000_000u64;
    let spans = (first_id..first_id + n)
        .map(|id| Span {
            trace_id: trace_id.to_vec(),
            span_id: id.to_be_bytes().to_vec(),
            parent_span_id: if id == 1 {
                vec![]
            } else {
                1u64.to_be_bytes().to_vec()
            },
            name: format!("op-{}", id % 7),
            start_time_unix_nano: t0 + id * 1000,
            end_time_unix_nano: t0 + id * 1000 + 500,
            attributes: vec![kv("source", "runtime"), kv("subsystem", "test")],
            ..Span::default()
        })
        .collect();
    request("bench", spans)
}

/// Env var that makes `serve_in_child` (below) run the server.
pub const CHILD_ENV: &str = "SHOJI_TRACE_TEST_CHILD_DATA_DIR";

/// The server of [`ChildServer`]: this test binary, re-executed with this ignored test alone.
#[test]
#[ignore = "helper: runs the server when re-executed by a test"]
fn serve_in_child() {
    child_main();
}

/// Runs the server in this process until killed, printing its addresses; called by the
/// ignored test `serve_in_child` when `CHILD_ENV` is set.
fn child_main() {
    let Some(dir) = std::env::var_os(CHILD_ENV) else {
        return;
    };
    let store = Store::open(Path::new(&dir)).expect("open store");
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async move {
        let s = server::start(
            store,
            ServeConfig {
                grpc_port: 0,
                http_port: 0,
                query_port: 0,
                zipkin_port: 0,
                ..ServeConfig::default()
            },
        )
        .await
        .expect("start");
        println!("ADDRS {} {} {}", s.grpc_addr, s.http_addr, s.query_addr);
        s.wait().await;
    });
}

/// A server in a child process (this test binary re-executed), so that it can be SIGKILLed.
pub struct ChildServer {
    pub child: Child,
    pub grpc: SocketAddr,
    pub http: SocketAddr,
}

impl ChildServer {
    pub fn spawn(data_dir: &Path) -> ChildServer {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args([
                "common::serve_in_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_ENV, data_dir)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child server");
        let stdout = child.stdout.take();
        // Owned by the guard from here on, so every panic path below kills and reaps it.
        let mut me = ChildServer {
            child,
            grpc: SocketAddr::from(([127, 0, 0, 1], 0)),
            http: SocketAddr::from(([127, 0, 0, 1], 0)),
        };
        let stdout = stdout.expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        loop {
            let line = lines
                .next()
                .expect("child server exited before printing its addresses")
                .expect("read child stdout");
            // libtest prints "test serve_in_child ... " on the same line first.
            if let Some(rest) = line.split_once("ADDRS ").map(|(_, r)| r) {
                let a: Vec<SocketAddr> = rest
                    .split_whitespace()
                    .map(|s| s.parse().expect("addr"))
                    .collect();
                // Keep draining stdout so the child never blocks on a full pipe.
                std::thread::spawn(move || for _ in lines {});
                me.grpc = a[0];
                me.http = a[1];
                return me;
            }
        }
    }

    pub fn kill9(&mut self) {
        // SIGKILL: no destructor, no flush, no checkpoint runs in the server.
        self.child.kill().expect("kill -9");
        self.child.wait().expect("reap");
    }
}

impl Drop for ChildServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn post_protobuf(url: &str, body: Vec<u8>) -> reqwest::blocking::Response {
    reqwest::blocking::Client::new()
        .post(url)
        .header("content-type", "application/x-protobuf")
        .body(body)
        .send()
        .expect("POST")
}
