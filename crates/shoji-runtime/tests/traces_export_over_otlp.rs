//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, a traced run goes over OTLP (HTTP/protobuf, gRPC and
//! HTTP/JSON) to a real receiver (`shoji trace serve`), not to the local store. An unknown
//! protocol is refused before anything starts.

use crate::common;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::{busybox_image, shoji_bin, text, TestEnv};

/// Starts `shoji trace serve` on free ports; returns the child, the gRPC address and HTTP URL.
fn serve(data: &std::path::Path) -> (std::process::Child, String, String) {
    let mut child = Command::new(shoji_bin())
        .args([
            "trace",
            "serve",
            "--grpc-port",
            "0",
            "--http-port",
            "0",
            "--query-port",
            "0",
            "--zipkin-port",
            "0",
            "--data-dir",
        ])
        .arg(data)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut grpc = String::new();
    let mut http = String::new();
    let out = child.stdout.take().unwrap();
    let lines: Vec<String> = BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        // store, otlp-grpc, otlp-http, zipkin, query: all read, so none is written to a closed pipe.
        .take(5)
        .collect();
    for l in &lines {
        if let Some(a) = l.strip_prefix("otlp-grpc ") {
            grpc = format!("http://{a}");
        }
        if let Some(u) = l.strip_prefix("otlp-http ") {
            http = u.trim_end_matches("/v1/traces").to_string();
        }
    }
    assert!(
        !grpc.is_empty() && !http.is_empty(),
        "serve printed {lines:?}"
    );
    (child, grpc, http)
}

/// Stops the receiver and lists the traces it stored, one JSON line each.
fn stop_and_list(mut server: std::process::Child, data: &std::path::Path) -> Vec<String> {
    let _ = server.kill();
    let _ = server.wait();
    let ls = Command::new(shoji_bin())
        .args(["trace", "ls", "--json", "--data-dir"])
        .arg(data)
        .output()
        .unwrap();
    text(&ls.stdout).lines().map(str::to_string).collect()
}

/// Nothing went to the local store: the spans went to the receiver only.
fn assert_local_store_empty(env: &TestEnv) {
    let local = env.run(&["trace", "ls", "--json"]);
    assert!(
        text(&local.stdout).trim().is_empty(),
        "local store got {}",
        text(&local.stdout)
    );
}

#[test]
fn vm_traced_run_exports_over_otlp_http_and_grpc_to_a_real_receiver() {
    let env = TestEnv::new();
    let server_data = env.dir.path().join("server");
    let (server, grpc, http) = serve(&server_data);
    env.traced_run_to(&http, "http/protobuf");
    env.traced_run_to(&grpc, "grpc");
    env.traced_run_to(&http, "http/json");
    let lines = stop_and_list(server, &server_data);
    assert_eq!(lines.len(), 3, "three traces at the receiver: {lines:?}");
    for l in &lines {
        assert!(l.contains("\"root_name\":\"run\""), "{l}");
        assert!(
            l.contains("shoji-agent") && l.contains("shoji-runtime"),
            "{l}"
        );
    }
    assert_local_store_empty(&env);
}

/// The endpoint is down: the workload runs as if tracing were off, and the loss is told once and
/// counted, not once per span.
#[test]
fn vm_otlp_endpoint_down_leaves_the_workload_unaffected_and_counts_the_loss() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let out = env
        .cmd()
        .args(["run", "--rm", "--trace", &image, "--", "echo", "still-runs"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .output()
        .unwrap();
    env.assert_nothing_left();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "still-runs\n");
    let err = text(&out.stderr);
    let warnings: Vec<&str> = err.lines().filter(|l| l.contains("warning")).collect();
    assert!(warnings.iter().any(|l| l.contains("127.0.0.1:9")), "{err}");
    assert!(
        warnings
            .iter()
            .any(|l| l.contains("spans could not be exported")),
        "{err}"
    );
    assert!(warnings.len() <= 3, "one warning per span is noise: {err}");
}

/// A killed sandbox process's spans went over OTLP: the root that `delete` ends in its place
/// goes to the same receiver, though `delete` runs without the variable (the sandbox process
/// recorded where its spans go), and nothing goes to the local store.
#[test]
fn vm_the_root_of_a_killed_sandbox_goes_where_its_spans_went() {
    let env = TestEnv::new();
    let server_data = env.dir.path().join("server");
    let (server, _, http) = serve(&server_data);
    let image = busybox_image().0.display().to_string();
    let id = "killed-otlp";
    let out = env
        .cmd()
        .args(["create", "--trace", &image, id, "--", "sleep", "1000"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &http)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let st = env.cmd().args(["state", id]).output().unwrap();
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).expect("state is JSON");
    let pid = st["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let out = env
        .cmd()
        .args(["delete", id])
        .env_remove("OTEL_EXPORTER_OTLP_ENDPOINT")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    env.assert_nothing_left();
    let lines = stop_and_list(server, &server_data);
    assert_eq!(lines.len(), 1, "one trace at the receiver: {lines:?}");
    let trace_id = st["annotations"]["shoji.trace_id"].as_str().unwrap();
    assert!(lines[0].contains(trace_id), "{}", lines[0]);
    assert!(
        lines[0].contains("\"root_name\":\"sandbox\""),
        "{}",
        lines[0]
    );
    assert_local_store_empty(&env);
}

#[test]
fn an_unknown_otlp_protocol_is_refused_with_the_known_ones_named() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let out = env
        .cmd()
        .args(["run", "--rm", "--trace", &image, "--", "true"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
        .env("OTEL_EXPORTER_OTLP_PROTOCOL", "http/jsn")
        .output()
        .unwrap();
    env.assert_nothing_left();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(
        err.contains("\"http/jsn\"") && err.contains("grpc, http/protobuf or http/json"),
        "{err}"
    );
}
