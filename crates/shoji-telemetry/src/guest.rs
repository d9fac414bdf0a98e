//! The agent's span export: each finished span becomes an OTLP request in a `SHJT` frame,
//! written to the host (vsock CID 2, port 10240) by one writer thread. The exporter only queues:
//! a connect to a host with no forwarder can take seconds, and it must never hold up the agent's
//! RPC handlers. The queue is bounded; frames that do not fit, or that cannot be delivered (no
//! forwarder, which is retried at most once a second), are dropped and counted. A host that reads
//! slowly (its sink is behind: ADR 006) holds up only the writer thread; the queue then fills and
//! drops. A flush is bounded as a whole, and what it leaves queued is counted as dropped.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::convert;
use crate::levels::{LevelProcessor, Levels};

/// Frames waiting for the writer at most.
pub const QUEUE_FRAMES: usize = 256;
/// After a failed connect, frames are dropped without trying again for this long.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct GuestCounters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    /// Spans queued or being written: lost if the VM stops now.
    pub pending: AtomicU64,
}

enum Msg {
    Frame(Vec<u8>, u64),
    Flush(SyncSender<()>),
}

#[derive(Debug)]
pub struct FrameExporter {
    tx: SyncSender<Msg>,
    counters: Arc<GuestCounters>,
    resource: Resource,
}

fn writer(rx: Receiver<Msg>, port: u32, counters: Arc<GuestCounters>) {
    let mut conn: Option<vsock::VsockStream> = None;
    let mut retry_at = Instant::now();
    for msg in rx {
        let (frame, n) = match msg {
            Msg::Frame(f, n) => (f, n),
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        if conn.is_none() && Instant::now() >= retry_at {
            conn = vsock::VsockStream::connect_with_cid_port(shoji_protocols::HOST_CID, port).ok();
            if conn.is_none() {
                retry_at = Instant::now() + RECONNECT_BACKOFF;
            }
        }
        let sent = match conn.as_mut() {
            Some(c) => c.write_all(&frame).is_ok(),
            None => false,
        };
        if sent {
            counters.exported.fetch_add(n, Ordering::Relaxed);
        } else {
            conn = None;
            counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
        counters.pending.fetch_sub(n, Ordering::Relaxed);
    }
}

impl opentelemetry_sdk::trace::SpanExporter for FrameExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len() as u64;
        let req = convert::to_request(batch, &self.resource);
        // Counted as pending before the writer can take it off again.
        self.counters.pending.fetch_add(n, Ordering::Relaxed);
        let queued = match shoji_protocols::frame::encode(&req.encode_to_vec()) {
            Ok(frame) => match self.tx.try_send(Msg::Frame(frame, n)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            Err(_) => false,
        };
        if !queued {
            self.counters.pending.fetch_sub(n, Ordering::Relaxed);
        }
        if !queued {
            self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
        Ok(())
    }
    fn set_resource(&mut self, resource: &Resource) {
        self.resource = resource.clone();
    }
}

/// Handle to wait for queued frames.
#[derive(Debug, Clone)]
pub struct GuestFlusher {
    tx: SyncSender<Msg>,
}

impl GuestFlusher {
    /// Waits (at most `timeout` in all) until every frame queued so far was written or dropped.
    /// The queue may be full behind a host that reads slowly: getting into it counts against
    /// the timeout too.
    pub fn flush(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let (tx, rx) = sync_channel(1);
        let mut msg = Msg::Flush(tx);
        loop {
            match self.tx.try_send(msg) {
                Ok(()) => break,
                Err(TrySendError::Full(m)) if Instant::now() < deadline => {
                    msg = m;
                    std::thread::sleep(Duration::from_millis(1));
                }
                Err(_) => return false,
            }
        }
        rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            .is_ok()
    }
}

/// A tracer provider exporting through [`FrameExporter`] to host `port` the spans `levels`
/// keeps (re-parented past those it leaves out), sampled on their parent: a parent the host
/// did not sample (the `traceparent` flag on the kernel command line or in a request's
/// metadata) exports nothing under it.
pub fn provider(
    service: &str,
    port: u32,
    levels: Levels,
) -> (SdkTracerProvider, Arc<GuestCounters>, GuestFlusher) {
    let counters = Arc::new(GuestCounters::default());
    let resource = Resource::builder()
        .with_service_name(service.to_string())
        .build();
    let (tx, rx) = sync_channel(QUEUE_FRAMES);
    let c = counters.clone();
    let _ = std::thread::Builder::new()
        .name("span-writer".into())
        .spawn(move || writer(rx, port, c));
    let exporter = FrameExporter {
        tx: tx.clone(),
        counters: counters.clone(),
        resource: resource.clone(),
    };
    let processor = LevelProcessor::new(
        opentelemetry_sdk::trace::SimpleSpanProcessor::new(exporter),
        levels,
        "agent",
    );
    crate::levels::install(processor.dropped());
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::AlwaysOn)))
        .with_span_processor(processor)
        .build();
    (provider, counters, GuestFlusher { tx })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_behind_a_full_queue_gives_up_at_its_timeout() {
        // A writer stuck on a host that does not read: nothing leaves the queue.
        let (tx, _rx) = sync_channel(QUEUE_FRAMES);
        for _ in 0..QUEUE_FRAMES {
            tx.try_send(Msg::Frame(Vec::new(), 1)).unwrap();
        }
        let start = Instant::now();
        assert!(!GuestFlusher { tx }.flush(Duration::from_millis(100)));
        let took = start.elapsed();
        assert!(took >= Duration::from_millis(100), "{took:?}");
        assert!(took < Duration::from_secs(2), "{took:?}");
    }
}
