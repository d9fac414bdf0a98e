//! `shoji trace forward --dump-only`, the Kata way: listens on `PATH_10240`, prints each span
//! with host-stamped identity, rejects bad frames, and exits cleanly on Ctrl-C.

use std::io::Write;
use std::os::unix::net::UnixStream;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;

#[test]
fn standalone_forwarder_dumps_spans_with_host_identity() {
    let dir = tempfile::tempdir().unwrap();
    let sb = dir.path().join("sandbox-7");
    std::fs::create_dir(&sb).unwrap();
    let uds = sb.join("vm.vsock");
    let child = Command::new(env!("CARGO_BIN_EXE_shoji"))
        .args(["trace", "forward", "--dump-only", "--socket-path"])
        .arg(&uds)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let listen = sb.join("vm.vsock_10240");
    let start = Instant::now();
    while !listen.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "forwarder did not listen"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: vec![Span {
                    trace_id: vec![1; 16],
                    span_id: vec![2; 8],
                    name: "container.create".into(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    let frame = shoji_protocols::frame::encode(&req.encode_to_vec()).unwrap();
    UnixStream::connect(&listen)
        .unwrap()
        .write_all(&frame)
        .unwrap();
    UnixStream::connect(&listen)
        .unwrap()
        .write_all(b"NOPE\0\0\0\0\0\0\0\0")
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .unwrap();
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(stdout.contains("container.create"), "{stdout}");
    assert!(
        stdout.contains("source=agent") && stdout.contains("sandbox_id=sandbox-7"),
        "{stdout}"
    );
    assert!(
        stderr.contains("forwarded 1 spans in 1 frames, rejected 1 frames"),
        "{stderr}"
    );
}
