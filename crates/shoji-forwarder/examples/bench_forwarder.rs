//! Forwarder throughput: synthetic valid SHJT frames (OTLP, 512 spans each) pushed into the
//! hybrid-vsock Unix socket, decoded, stamped and handed (a) to a counting sink and (b) to the
//! embedded store through the telemetry pipeline. Prints spans/s (wall clock), spans per
//! CPU-second of the threads involved (what one dedicated core would do: stable on a shared
//! machine), and loss, checked against the store's own count.
//!
//!     cargo run --release -p shoji-forwarder --example bench_forwarder [FRAMES]

/// The allocator the `shoji` binary uses: the figures are those of the real forwarder.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

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

/// A fixed pseudo-random 64-bit value for `x` (splitmix64): ids as random as real ones, the
/// same on every run.
fn mix(x: u64) -> u64 {
    let mut z = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

/// Frame `seq`: one trace of 512 spans with random trace and span ids, as the agent makes them.
fn frame(seq: u64) -> Vec<u8> {
    let spans = (0..SPANS_PER_FRAME)
        .map(|i| {
            let mut tid = [0u8; 16];
            tid[..8].copy_from_slice(&mix(seq).to_be_bytes());
            tid[8..].copy_from_slice(&mix(!seq).to_be_bytes());
            let sid = mix((seq << 20) | i as u64 | 1 << 63).to_be_bytes();
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

/// CPU time (ns) each thread of this process has run so far, by thread name.
fn thread_cpu_ns() -> std::collections::HashMap<String, u64> {
    let mut out = std::collections::HashMap::new();
    for t in std::fs::read_dir("/proc/self/task")
        .into_iter()
        .flatten()
        .flatten()
    {
        let comm = std::fs::read_to_string(t.path().join("comm")).unwrap_or_default();
        // schedstat: time on CPU (ns), wait time, timeslices.
        let ns = std::fs::read_to_string(t.path().join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok())
            .unwrap_or(0);
        *out.entry(comm.trim().to_string()).or_default() += ns;
    }
    out
}

/// What one stage measured.
struct Stage {
    spans: u64,
    wall_rate: f64,
    lost: u64,
    /// CPU seconds by thread name over the stage.
    cpu: Vec<(String, f64)>,
}

impl Stage {
    fn cpu_total(&self) -> f64 {
        self.cpu.iter().map(|(_, s)| s).sum()
    }
    fn report(&self, what: &str) {
        let done = self.spans - self.lost;
        let cpu: Vec<String> = self
            .cpu
            .iter()
            .filter(|(_, s)| *s > 0.001)
            .map(|(t, s)| format!("{t} {:.2} us", s * 1e6 / done as f64))
            .collect();
        println!(
            "{what}: {:.0} spans/s wall, {:.0} spans per CPU-second; CPU per span: {}; {} lost of {}",
            self.wall_rate,
            done as f64 / self.cpu_total(),
            cpu.join(", "),
            self.lost,
            self.spans
        );
    }
}

async fn run(frames: u64, deliver: shoji_forwarder::Deliver, done: impl Fn() -> u64) -> Stage {
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
    // Every frame distinct (one trace each): repeated frames would be duplicates, which the
    // store skips, and would flatter it.
    let payloads: Vec<Vec<u8>> = (0..frames).map(frame).collect();
    let cpu0 = thread_cpu_ns();
    let start = Instant::now();
    let mut s = tokio::net::UnixStream::connect(&path)
        .await
        .expect("connect");
    for i in 0..frames {
        s.write_all(&payloads[i as usize]).await.expect("write");
    }
    s.shutdown().await.expect("shutdown");
    let want = frames * SPANS_PER_FRAME as u64;
    while done() < want && start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let secs = start.elapsed().as_secs_f64();
    let cpu1 = thread_cpu_ns();
    let got = done();
    f.shutdown(Duration::from_secs(1)).await;
    let mut cpu: Vec<(String, f64)> = cpu1
        .iter()
        .map(|(t, ns)| {
            let before = cpu0.get(t).copied().unwrap_or(0);
            (t.clone(), ns.saturating_sub(before) as f64 / 1e9)
        })
        .collect();
    cpu.sort_by(|a, b| a.0.cmp(&b.0));
    Stage {
        spans: want,
        wall_rate: want as f64 / secs,
        lost: want.saturating_sub(got),
        cpu,
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    // As `shoji` does (its main): no transparent huge pages for the allocator's heaps.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let frames: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(2000);
    let n = Arc::new(AtomicU64::new(0));
    let c = n.clone();
    let deliver = shoji_forwarder::at_once(move |r| {
        c.fetch_add(
            shoji_telemetry::convert::span_count(&r) as u64,
            Ordering::Relaxed,
        );
    });
    run(frames, deliver, || n.load(Ordering::Relaxed))
        .await
        .report("forwarder -> counting sink");

    let dir = tempfile::tempdir().expect("tempdir");
    let sink = shoji_telemetry::sink::StoreSink::open(dir.path()).expect("store");
    let pipeline = shoji_telemetry::pipeline::Pipeline::start(Box::new(sink));
    let deliver = shoji_forwarder::to_pipeline(pipeline.clone());
    let counters = pipeline.counters.clone();
    // Lost = dropped by the bounded queue or failed in the store: stored spans are `exported`.
    let stage = run(frames, deliver, || {
        counters.exported.load(Ordering::Relaxed)
            + counters.dropped.load(Ordering::Relaxed)
            + counters.failed.load(Ordering::Relaxed)
    })
    .await;
    pipeline.flush(Duration::from_secs(60));
    let stored = pipeline.counters.exported.load(Ordering::Relaxed);
    Stage {
        lost: stage.spans.saturating_sub(stored),
        ..stage
    }
    .report("forwarder -> embedded store");
    let store = shoji_trace::store::Store::open(dir.path()).expect("reopen the store");
    let counted = store
        .summaries(&Default::default(), 1_000_000, 0)
        .map(|t| t.iter().map(|s| s.span_count).sum::<u64>())
        .unwrap_or(0);
    println!("spans in the store afterwards: {counted}");
}
