//! Forwarder throughput: synthetic valid SHJT frames (OTLP, 512 spans each) pushed into the
//! hybrid-vsock Unix socket, decoded, stamped and handed (a) to a counting sink and (b) to the
//! embedded store through the telemetry pipeline. Prints spans/s and loss.
//!
//!     cargo run --release -p shoji-forwarder --example bench_forwarder [FRAMES]

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use shoji_forwarder::{Forwarder, Identity};
use tokio::io::AsyncWriteExt;

const SPANS_PER_FRAME: usize = 512;

fn frame(seq: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_FRAME)
        .map(|i| {
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&seq.to_be_bytes());
            let mut sid = [0u8; 8];
            sid[..4].copy_from_slice(&(i as u32 + 1).to_be_bytes());
            sid[4..].copy_from_slice(&(seq as u32).to_be_bytes());
            Span {
                trace_id: tid.to_vec(),
                span_id: sid.to_vec(),
                name: "shoji.agent.v1.AgentService/WaitProcess".into(),
                start_time_unix_nano: 1_700_000_000_000_000_000 + i as u64,
                end_time_unix_nano: 1_700_000_000_000_100_000 + i as u64,
                attributes: vec![KeyValue {
                    key: "container_id".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue("c1".into())),
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }
        })
        .collect();
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans,
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    shoji_protocols::frame::encode(&req.encode_to_vec()).expect("frame fits")
}

async fn run(frames: u64, deliver: shoji_forwarder::Deliver, wait: impl Fn() -> u64) -> (f64, u64) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("vm.vsock_10240");
    let f = Forwarder::start(
        &path,
        Identity {
            sandbox_id: "bench".into(),
            service_name: "shoji-agent".into(),
        },
        deliver,
    )
    .expect("listen");
    f.set_clock_offset(0);
    let payloads: Vec<Vec<u8>> = (0..64).map(frame).collect();
    let start = Instant::now();
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    for i in 0..frames {
        s.write_all(&payloads[(i % 64) as usize])
            .await
            .expect("write");
    }
    s.shutdown().await.expect("shutdown");
    let want = frames * SPANS_PER_FRAME as u64;
    while wait() < want && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let got = wait();
    f.shutdown(Duration::from_secs(1)).await;
    (want as f64 / secs, want.saturating_sub(got))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let frames: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    let deliver: shoji_forwarder::Deliver = Arc::new(move |r| {
        c.fetch_add(
            shoji_telemetry::convert::span_count(&r) as u64,
            Ordering::Relaxed,
        );
    });
    let (rate, lost) = run(frames, deliver, || n.load(Ordering::Relaxed)).await;
    println!("forwarder -> counting sink: {:.0} spans/s, {lost} lost ({} frames of {SPANS_PER_FRAME} spans, one core)", rate, frames);

    let dir = tempfile::tempdir().expect("tempdir");
    let sink = shoji_telemetry::sink::StoreSink::open(dir.path()).expect("store");
    let pipeline = shoji_telemetry::pipeline::Pipeline::start(Box::new(sink));
    let p = pipeline.clone();
    let deliver: shoji_forwarder::Deliver = Arc::new(move |r| p.submit(r));
    let store_frames = frames.min(400);
    let counters = pipeline.counters.clone();
    let (rate, _) = run(store_frames, deliver, || {
        counters.exported.load(Ordering::Relaxed) + counters.dropped.load(Ordering::Relaxed)
    })
    .await;
    pipeline.flush(Duration::from_secs(60));
    println!(
        "forwarder -> embedded store: {:.0} spans/s, {} dropped by the bounded queue, {} stored ({} frames)",
        rate,
        pipeline.counters.dropped.load(Ordering::Relaxed),
        pipeline.counters.exported.load(Ordering::Relaxed),
        store_frames
    );
}
