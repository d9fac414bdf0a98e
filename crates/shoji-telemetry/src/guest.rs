//! The agent's span export: each finished span becomes an OTLP request in a `SHJT` frame,
//! written to the host (vsock CID 2, port 10240) by one writer thread. The exporter only queues:
//! a connect to a host with no forwarder can take seconds, and it must never hold up the agent's
//! RPC handlers. The queue is bounded; frames that do not fit, or that cannot be delivered (no
//! forwarder, which is retried at most once a second), are dropped and counted.

use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use opentelemetry_sdk::trace::{SdkTracerProvider, SpanData};
use opentelemetry_sdk::Resource;
use prost::Message;

use crate::convert;

/// Frames waiting for the writer at most.
pub const QUEUE_FRAMES: usize = 256;
/// After a failed connect, frames are dropped without trying again for this long.
const RECONNECT_BACKOFF: Duration = Duration::from_secs(1);

#[derive(Debug, Default)]
pub struct GuestCounters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
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
    }
}

impl opentelemetry_sdk::trace::SpanExporter for FrameExporter {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len() as u64;
        let req = convert::to_request(batch, &self.resource);
        let queued = match shoji_protocols::frame::encode(&req.encode_to_vec()) {
            Ok(frame) => match self.tx.try_send(Msg::Frame(frame, n)) {
                Ok(()) => true,
                Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => false,
            },
            Err(_) => false,
        };
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
    /// Waits (at most `timeout`) until every frame queued so far was written or dropped.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        self.tx.send(Msg::Flush(tx)).is_ok() && rx.recv_timeout(timeout).is_ok()
    }
}

/// A tracer provider exporting through [`FrameExporter`] to host `port`.
pub fn provider(service: &str, port: u32) -> (SdkTracerProvider, Arc<GuestCounters>, GuestFlusher) {
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
    let provider = SdkTracerProvider::builder()
        .with_resource(resource)
        .with_simple_exporter(exporter)
        .build();
    (provider, counters, GuestFlusher { tx })
}
