//! Backpressure: a connection is read no faster than its requests are delivered, so a sink
//! slower than the guest loses no span and holds bounded memory; one connection waiting on
//! delivery does not hold up another.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use shoji_forwarder::{Deliver, Forwarder, Identity};
use shoji_protocols::frame;
use shoji_telemetry::pipeline::{Limits, Pipeline};
use shoji_telemetry::sink::{SinkError, SpanSink};
use tokio::io::AsyncWriteExt;
use tokio::net::UnixStream;

/// A frame of `spans` spans named `{who} {i}`, each name padded to `pad` bytes.
fn frame_of(who: &str, spans: usize, pad: usize) -> Vec<u8> {
    let req = ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            scope_spans: vec![ScopeSpans {
                spans: (0..spans)
                    .map(|i| Span {
                        trace_id: vec![7; 16],
                        span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                        name: format!("{who} {i:0pad$}"),
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        }],
    };
    frame::encode(&req.encode_to_vec()).unwrap()
}

/// The connection a request came from: the first word of its span names.
fn who(req: &ExportTraceServiceRequest) -> String {
    let name = &req.resource_spans[0].scope_spans[0].spans[0].name;
    name.split(' ').next().unwrap_or_default().to_string()
}

fn start(dir: &std::path::Path, deliver: Deliver) -> (Forwarder, std::path::PathBuf) {
    let path = dir.join("vm.vsock_10240");
    let f = Forwarder::start(
        &path,
        Identity {
            sandbox_id: "sb-1".into(),
            service_name: "shoji-agent".into(),
        },
        deliver,
    )
    .unwrap();
    f.set_clock_offset(0);
    (f, path)
}

/// Writes `frames` copies of `frame` on a new connection, then hangs up.
fn send_all(path: &std::path::Path, frame: Vec<u8>, frames: usize) -> tokio::task::JoinHandle<()> {
    let path = path.to_path_buf();
    tokio::spawn(async move {
        let mut s = UnixStream::connect(&path).await.unwrap();
        for _ in 0..frames {
            s.write_all(&frame).await.unwrap();
        }
        s.shutdown().await.unwrap();
    })
}

async fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
    for _ in 0..3000 {
        if done() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("timed out waiting until {what}");
}

type Counts = Arc<Mutex<HashMap<String, u64>>>;

fn count(counts: &Counts, req: &ExportTraceServiceRequest) {
    let n = shoji_telemetry::convert::span_count(req) as u64;
    *counts.lock().unwrap().entry(who(req)).or_default() += n;
}

fn counted(counts: &Counts, who: &str) -> u64 {
    counts.lock().unwrap().get(who).copied().unwrap_or(0)
}

#[tokio::test]
async fn two_connections_flooding_a_slow_deliver_lose_no_span() {
    let t = tempfile::tempdir().unwrap();
    let counts: Counts = Arc::default();
    let c = counts.clone();
    let deliver: Deliver = Arc::new(move |req| {
        let c = c.clone();
        Box::pin(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            count(&c, &req);
        })
    });
    let (f, path) = start(t.path(), deliver);
    let a = send_all(&path, frame_of("A", 16, 8), 300);
    let b = send_all(&path, frame_of("B", 16, 8), 300);
    a.await.unwrap();
    b.await.unwrap();
    wait_until("every span is delivered", || {
        counted(&counts, "A") == 300 * 16 && counted(&counts, "B") == 300 * 16
    })
    .await;
    assert_eq!(f.stats.spans_forwarded.load(Ordering::Relaxed), 600 * 16);
    assert_eq!(f.stats.rejected(), 0);
    f.shutdown(Duration::from_secs(1)).await;
}

/// A store that takes 2 ms a batch.
struct SlowStore(Arc<AtomicU64>);
impl SpanSink for SlowStore {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        std::thread::sleep(Duration::from_millis(2));
        self.0.fetch_add(
            shoji_telemetry::convert::span_count(&req) as u64,
            Ordering::Relaxed,
        );
        Ok(())
    }
    fn export_batch(&mut self, reqs: Vec<ExportTraceServiceRequest>) -> (u64, Option<SinkError>) {
        std::thread::sleep(Duration::from_millis(2));
        let n: usize = reqs.iter().map(shoji_telemetry::convert::span_count).sum();
        self.0.fetch_add(n as u64, Ordering::Relaxed);
        (0, None)
    }
    fn describe(&self) -> String {
        "slow store".into()
    }
}

#[tokio::test]
async fn through_the_pipeline_a_slow_store_gets_every_span_within_the_byte_bound() {
    let t = tempfile::tempdir().unwrap();
    let stored = Arc::new(AtomicU64::new(0));
    // Room for about four frames: the sender has to wait most of the time.
    let bound = 4 * 32 * 600;
    let pipeline = Pipeline::with_limits(
        Box::new(SlowStore(stored.clone())),
        Limits {
            bytes: bound,
            ..Limits::default()
        },
    );
    let (f, path) = start(t.path(), shoji_forwarder::to_pipeline(pipeline.clone()));
    let a = send_all(&path, frame_of("A", 32, 64), 200);
    let b = send_all(&path, frame_of("B", 32, 64), 200);
    let mut most = 0;
    while stored.load(Ordering::Relaxed) < 400 * 32 {
        most = most.max(pipeline.queued_bytes());
        tokio::time::sleep(Duration::from_micros(200)).await;
    }
    a.await.unwrap();
    b.await.unwrap();
    assert!(pipeline.flush(Duration::from_secs(10)));
    assert_eq!(stored.load(Ordering::Relaxed), 400 * 32);
    assert_eq!(pipeline.dropped(), 0);
    assert!(most <= bound, "{most} bytes queued, bound {bound}");
    assert!(
        most > bound / 2,
        "the senders should have filled the room: {most} of {bound}"
    );
    f.shutdown(Duration::from_secs(1)).await;
}

#[tokio::test]
async fn a_connection_waiting_on_delivery_is_not_read_and_others_are_still_served() {
    let t = tempfile::tempdir().unwrap();
    let counts: Counts = Arc::default();
    let (open, gate) = tokio::sync::watch::channel(false);
    let c = counts.clone();
    let deliver: Deliver = Arc::new(move |req| {
        let (c, mut gate) = (c.clone(), gate.clone());
        Box::pin(async move {
            if who(&req) == "A" {
                let _ = gate.wait_for(|open| *open).await;
            }
            count(&c, &req);
        })
    });
    let (f, path) = start(t.path(), deliver);
    // 1000 frames of about 8 KiB: far more than the socket buffers and the forwarder's read
    // buffer hold, so the writer can only finish if the forwarder keeps reading.
    let a = send_all(&path, frame_of("A", 16, 500), 1000);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!a.is_finished(), "the blocked connection was read on");
    assert_eq!(counted(&counts, "A"), 0);
    let b = send_all(&path, frame_of("B", 16, 8), 50);
    wait_until("the other connection's spans are delivered", || {
        counted(&counts, "B") == 50 * 16
    })
    .await;
    b.await.unwrap();
    assert!(!a.is_finished());
    assert_eq!(counted(&counts, "A"), 0);
    open.send(true).unwrap();
    a.await.unwrap();
    wait_until("every span of the blocked connection is delivered", || {
        counted(&counts, "A") == 1000 * 16
    })
    .await;
    f.shutdown(Duration::from_secs(1)).await;
}
