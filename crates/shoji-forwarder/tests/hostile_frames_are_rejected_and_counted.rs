//! What a hostile guest can send on the span port: each bad frame closes its connection and is
//! counted; the listener keeps serving; identity comes from the host; memory stays bounded.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use shoji_forwarder::{Forwarder, Identity};
use shoji_protocols::frame;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::UnixStream;

fn kv(k: &str, v: &str) -> KeyValue {
    KeyValue {
        key: k.into(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(v.into())),
        }),
        ..Default::default()
    }
}

/// A request whose spans claim to come from another sandbox and the runtime.
fn lying_request(spans: usize) -> ExportTraceServiceRequest {
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource {
                attributes: vec![
                    kv("service.name", "shoji-runtime"),
                    kv("sandbox_id", "someone-else"),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![1; 16],
                        span_id: vec![(i % 250) as u8 + 1; 8],
                        name: format!("s{i}"),
                        start_time_unix_nano: 2_000_000_000,
                        end_time_unix_nano: 3_000_000_000,
                        attributes: vec![kv("source", "runtime"), kv("sandbox_id", "someone-else")],
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

type Got = Arc<Mutex<Vec<ExportTraceServiceRequest>>>;

fn start(dir: &std::path::Path) -> (Forwarder, Got, std::path::PathBuf) {
    let path = dir.join("vm.vsock_10240");
    let got: Got = Arc::default();
    let g = got.clone();
    let f = Forwarder::start(
        &path,
        Identity {
            sandbox_id: "sb-1".into(),
            service_name: "shoji-agent".into(),
        },
        shoji_forwarder::at_once(move |r| g.lock().unwrap().push(r)),
    )
    .unwrap();
    f.set_clock_offset(1_000_000_000);
    (f, got, path)
}

/// Sends `bytes`, then waits for the forwarder to close the connection (read returns 0).
async fn send_and_expect_close(path: &std::path::Path, bytes: &[u8]) {
    let mut s = UnixStream::connect(path).await.unwrap();
    let _ = s.write_all(bytes).await;
    let mut b = [0u8; 1];
    let r = tokio::time::timeout(Duration::from_secs(5), s.read(&mut b)).await;
    assert!(
        matches!(r, Ok(Ok(0)) | Ok(Err(_))),
        "connection was not closed"
    );
}

async fn send_ok(path: &std::path::Path, req: &ExportTraceServiceRequest) {
    let mut s = UnixStream::connect(path).await.unwrap();
    s.write_all(&frame::encode(&req.encode_to_vec()).unwrap())
        .await
        .unwrap();
    s.shutdown().await.unwrap();
}

async fn wait_for(got: &Got, n: usize) {
    for _ in 0..200 {
        if got.lock().unwrap().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} requests, got {}", got.lock().unwrap().len());
}

#[tokio::test]
async fn oversized_frame_is_rejected_without_allocating_and_others_still_served() {
    let t = tempfile::tempdir().unwrap();
    let (f, got, path) = start(t.path());
    let mut hdr = frame::encode(b"").unwrap();
    hdr[8..12].copy_from_slice(&u32::MAX.to_be_bytes());
    send_and_expect_close(&path, &hdr).await;
    assert_eq!(f.stats.rejected_oversize.load(Ordering::Relaxed), 1);
    send_ok(&path, &lying_request(3)).await;
    wait_for(&got, 1).await;
    f.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn bad_magic_version_truncation_and_garbage_protobuf_each_close_and_count() {
    let t = tempfile::tempdir().unwrap();
    let (f, got, path) = start(t.path());
    let good = frame::encode(&lying_request(1).encode_to_vec()).unwrap();
    let mut magic = good.clone();
    magic[0] = b'X';
    send_and_expect_close(&path, &magic).await;
    let mut version = good.clone();
    version[4] = 9;
    send_and_expect_close(&path, &version).await;
    // Not OTLP: bytes that are not a valid protobuf message.
    send_and_expect_close(&path, &frame::encode(&[0xff; 40]).unwrap()).await;
    // Truncated: half a frame, then the guest hangs up.
    {
        let mut s = UnixStream::connect(&path).await.unwrap();
        s.write_all(&good[..good.len() / 2]).await.unwrap();
        s.shutdown().await.unwrap();
    }
    send_ok(&path, &lying_request(2)).await;
    wait_for(&got, 1).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let s = &f.stats;
    assert_eq!(s.rejected_header.load(Ordering::Relaxed), 2);
    assert_eq!(s.rejected_protobuf.load(Ordering::Relaxed), 1);
    assert_eq!(s.rejected_truncated.load(Ordering::Relaxed), 1);
    assert_eq!(s.frames_ok.load(Ordering::Relaxed), 1);
    f.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn identity_is_stamped_from_the_socket_and_clock_corrected() {
    let t = tempfile::tempdir().unwrap();
    let (f, got, path) = start(t.path());
    send_ok(&path, &lying_request(2)).await;
    wait_for(&got, 1).await;
    let req = got.lock().unwrap()[0].clone();
    let rs = &req.resource_spans[0];
    let attr = |a: &[KeyValue], k: &str| {
        a.iter()
            .find(|kv| kv.key == k)
            .and_then(|kv| kv.value.clone())
            .and_then(|v| v.value)
    };
    let res = &rs.resource.as_ref().unwrap().attributes;
    assert_eq!(
        attr(res, "service.name"),
        Some(any_value::Value::StringValue("shoji-agent".into()))
    );
    assert_eq!(
        attr(res, "sandbox_id"),
        Some(any_value::Value::StringValue("sb-1".into()))
    );
    for span in &rs.scope_spans[0].spans {
        assert_eq!(
            attr(&span.attributes, "source"),
            Some(any_value::Value::StringValue("agent".into()))
        );
        assert_eq!(
            attr(&span.attributes, "sandbox_id"),
            Some(any_value::Value::StringValue("sb-1".into()))
        );
        assert_eq!(
            attr(&span.attributes, "shoji.clock_offset_ns"),
            Some(any_value::Value::IntValue(1_000_000_000))
        );
        // guest - host = 1 s: host time is one second earlier.
        assert_eq!(span.start_time_unix_nano, 1_000_000_000);
        assert_eq!(span.end_time_unix_nano, 2_000_000_000);
        assert_eq!(
            span.attributes
                .iter()
                .filter(|kv| kv.key == "source")
                .count(),
            1
        );
    }
    f.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn many_sandbox_connections_are_served_at_once() {
    let t = tempfile::tempdir().unwrap();
    let (f, got, path) = start(t.path());
    // Open 32 connections first, then send on all of them.
    let mut conns = Vec::new();
    for _ in 0..32 {
        conns.push(UnixStream::connect(&path).await.unwrap());
    }
    let payload = frame::encode(&lying_request(4).encode_to_vec()).unwrap();
    for c in &mut conns {
        c.write_all(&payload).await.unwrap();
    }
    wait_for(&got, 32).await;
    assert_eq!(f.stats.spans_forwarded.load(Ordering::Relaxed), 128);
    drop(conns);
    f.shutdown(Duration::from_secs(1)).await;
}

/// A guest opening connection after connection gets at most `MAX_CONNECTIONS` served at once;
/// the rest are closed unread and counted, and a slot freed is usable again.
#[tokio::test]
async fn connections_past_the_cap_are_closed_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let (f, got, path) = start(dir.path());
    let mut held = Vec::new();
    for _ in 0..shoji_forwarder::MAX_CONNECTIONS {
        held.push(UnixStream::connect(&path).await.unwrap());
    }
    // Let the forwarder accept them all before the one too many.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut extra = UnixStream::connect(&path).await.unwrap();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), extra.read(&mut byte))
        .await
        .expect("the extra connection is closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0);
    assert_eq!(f.stats.rejected_connections.load(Ordering::Relaxed), 1);
    // The held connections are still served.
    let frame = frame::encode(&lying_request(1).encode_to_vec()).unwrap();
    held[0].write_all(&frame).await.unwrap();
    // One closes; a new one takes its place and is served.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = UnixStream::connect(&path).await.unwrap();
    again.write_all(&frame).await.unwrap();
    for _ in 0..100 {
        if got.lock().unwrap().len() == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(got.lock().unwrap().len(), 2, "both served");
    assert_eq!(f.stats.rejected_connections.load(Ordering::Relaxed), 1);
}
