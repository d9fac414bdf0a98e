//! Receives the agent's `SHJT` span frames over hybrid vsock and hands them to a sink.
//!
//! The guest is hostile (docs/threat-model.md): every frame header is validated before its
//! payload is allocated (at most 4 MiB), the payload must decode as an OTLP
//! `ExportTraceServiceRequest`, and any violation closes that connection and is counted, while the
//! listener keeps serving others. Identity is stamped from the listener, never taken from the
//! guest: `sandbox_id`, `service.name` (`shoji-agent`) and `source` (`agent`) are overwritten on
//! every span and resource. Span times are shifted from guest to host clock by the measured
//! offset, recorded as `shoji.clock_offset_ns`. A connection is read no faster than its
//! requests are delivered ([`Deliver`]): a slow sink pushes back into the guest rather than
//! filling the host's memory or losing spans (ADR 006).

pub mod hooks;
pub mod roots;

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue};
use prost::Message;
use shoji_protocols::frame::{FrameDecoder, FrameError, MAX_PAYLOAD_LEN};
use shoji_telemetry::convert;
use shoji_telemetry::pipeline::Pipeline;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;
use tokio::task::JoinSet;

/// How long spans wait for the clock offset before they are passed on uncorrected.
pub const OFFSET_WAIT: std::time::Duration = std::time::Duration::from_secs(30);

/// Connections one listener serves at once. The agent uses one at a time; each may hold a frame
/// of up to 4 MiB being read and a decoded request waiting for room, so without a cap a guest
/// could make the host hold that without end (at this cap, at most 256 MiB of partial frames,
/// besides the pipeline's 32 MiB). Connections past the cap are closed at once and counted
/// (`rejected_connections`).
pub const MAX_CONNECTIONS: usize = 64;

/// Named counters of what the forwarder saw.
#[derive(Debug, Default)]
pub struct Stats {
    pub connections: AtomicU64,
    pub frames_ok: AtomicU64,
    pub spans_forwarded: AtomicU64,
    pub rejected_header: AtomicU64,
    pub rejected_oversize: AtomicU64,
    pub rejected_truncated: AtomicU64,
    pub rejected_protobuf: AtomicU64,
    /// Connections closed unread because [`MAX_CONNECTIONS`] were open.
    pub rejected_connections: AtomicU64,
}

impl Stats {
    pub fn rejected(&self) -> u64 {
        self.rejected_header.load(Ordering::Relaxed)
            + self.rejected_oversize.load(Ordering::Relaxed)
            + self.rejected_truncated.load(Ordering::Relaxed)
            + self.rejected_protobuf.load(Ordering::Relaxed)
            + self.rejected_connections.load(Ordering::Relaxed)
    }
}

/// Handing one request on; the connection is not read further until it is done.
pub type Delivery = Pin<Box<dyn Future<Output = ()> + Send>>;

/// Where accepted requests go (the telemetry pipeline, a printer, a test). A slow delivery
/// slows reading from that connection, and so the guest's sender (vsock flow control); other
/// connections are served meanwhile.
pub type Deliver = Arc<dyn Fn(ExportTraceServiceRequest) -> Delivery + Send + Sync>;

/// Into the span pipeline, waiting for room there (up to its deadline, then dropped and
/// counted by the pipeline): a sink slower than the guest loses nothing.
pub fn to_pipeline(pipeline: Pipeline) -> Deliver {
    let pipeline = Arc::new(pipeline);
    Arc::new(move |req| {
        let p = pipeline.clone();
        Box::pin(async move {
            p.send(req).await;
        })
    })
}

/// A delivery that is done at once (a printer, a counter).
pub fn at_once(f: impl Fn(ExportTraceServiceRequest) + Send + Sync + 'static) -> Deliver {
    Arc::new(move |req| {
        f(req);
        Box::pin(std::future::ready(()))
    })
}

#[derive(Debug, thiserror::Error)]
pub enum ForwarderError {
    #[error("cannot listen on {path}")]
    Listen {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Identity the host stamps on everything arriving on one listener.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sandbox_id: String,
    pub service_name: String,
}

pub struct Forwarder {
    offset_ns: tokio::sync::watch::Sender<Option<i64>>,
    pub stats: Arc<Stats>,
    accept: tokio::task::JoinHandle<()>,
    conns: Arc<tokio::sync::Mutex<JoinSet<()>>>,
    path: PathBuf,
}

impl std::fmt::Debug for Forwarder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Forwarder({})", self.path.display())
    }
}

impl Forwarder {
    /// Listens on the Unix socket `path` (hybrid vsock: `<uds>_10240`).
    pub fn start(
        path: &Path,
        identity: Identity,
        deliver: Deliver,
    ) -> Result<Self, ForwarderError> {
        let _ = std::fs::remove_file(path);
        let listener = UnixListener::bind(path).map_err(|source| ForwarderError::Listen {
            path: path.to_path_buf(),
            source,
        })?;
        // Spans are held until the offset is known: the agent's boot spans arrive before the
        // runtime has measured it.
        let (offset_ns, offset_rx) = tokio::sync::watch::channel(None);
        let stats = Arc::new(Stats::default());
        let conns = Arc::new(tokio::sync::Mutex::new(JoinSet::new()));
        let (o, s, c) = (offset_rx, stats.clone(), conns.clone());
        let accept = tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                s.connections.fetch_add(1, Ordering::Relaxed);
                let mut set = c.lock().await;
                // Finished connections are reaped here, so that a guest connecting over and
                // over does not grow the set.
                while set.try_join_next().is_some() {}
                if set.len() >= MAX_CONNECTIONS {
                    s.rejected_connections.fetch_add(1, Ordering::Relaxed);
                    drop(stream);
                    continue;
                }
                let (o, s, d, id) = (o.clone(), s.clone(), deliver.clone(), identity.clone());
                set.spawn(serve(stream, id, o, s, d));
            }
        });
        Ok(Self {
            offset_ns,
            stats,
            accept,
            conns,
            path: path.to_path_buf(),
        })
    }

    /// guest - host clock offset in ns, applied to spans that arrive from now on.
    pub fn set_clock_offset(&self, offset_ns: i64) {
        let _ = self.offset_ns.send(Some(offset_ns));
    }

    /// Stops accepting, lets open connections finish for up to `grace`, then ends them.
    pub async fn shutdown(self, grace: std::time::Duration) {
        self.accept.abort();
        // Whatever still waits for an offset goes out uncorrected rather than not at all.
        self.offset_ns.send_if_modified(|o| {
            if o.is_none() {
                *o = Some(0);
                true
            } else {
                false
            }
        });
        let mut set = self.conns.lock().await;
        let _ =
            tokio::time::timeout(grace, async { while set.join_next().await.is_some() {} }).await;
        set.abort_all();
        let _ = std::fs::remove_file(&self.path);
    }
}

async fn serve(
    mut stream: tokio::net::UnixStream,
    id: Identity,
    mut offset: tokio::sync::watch::Receiver<Option<i64>>,
    stats: Arc<Stats>,
    deliver: Deliver,
) {
    let mut dec = FrameDecoder::new(MAX_PAYLOAD_LEN);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        let want = dec.wanted().clamp(1, buf.len());
        let n = match stream.read(&mut buf[..want]).await {
            Ok(n) => n,
            Err(_) => return,
        };
        if n == 0 {
            if dec.finish().is_err() {
                stats.rejected_truncated.fetch_add(1, Ordering::Relaxed);
            }
            return;
        }
        dec.extend(&buf[..n]);
        loop {
            match dec.next_frame() {
                Ok(None) => break,
                Ok(Some(payload)) => match ExportTraceServiceRequest::decode(payload) {
                    Ok(mut req) => {
                        stats.frames_ok.fetch_add(1, Ordering::Relaxed);
                        // Known after the first frames: no timer then.
                        let known = *offset.borrow();
                        let off = match known {
                            Some(o) => o,
                            None => {
                                tokio::time::timeout(OFFSET_WAIT, offset.wait_for(Option::is_some))
                                    .await
                                    .ok()
                                    .and_then(|r| r.ok().and_then(|o| *o))
                                    .unwrap_or(0)
                            }
                        };
                        stamp(&mut req, &id, off);
                        // Counted before the delivery is done: the runtime stops the VM once
                        // the spans are out of the guest (`agent_spans_received`), whatever the
                        // sink's pace.
                        stats
                            .spans_forwarded
                            .fetch_add(convert::span_count(&req) as u64, Ordering::Relaxed);
                        deliver(req).await;
                    }
                    Err(_) => {
                        stats.rejected_protobuf.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                },
                Err(FrameError::TooLong { .. }) => {
                    stats.rejected_oversize.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(_) => {
                    stats.rejected_header.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
        }
    }
}

fn int(v: i64) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::IntValue(v)),
    }
}

/// Host-side identity and clock correction for one request.
pub fn stamp(req: &mut ExportTraceServiceRequest, id: &Identity, offset_ns: i64) {
    let offset = int(offset_ns);
    for rs in &mut req.resource_spans {
        let res = rs.resource.get_or_insert_with(Default::default);
        convert::set_str(&mut res.attributes, "service.name", &id.service_name);
        convert::set_str(&mut res.attributes, "sandbox_id", &id.sandbox_id);
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                convert::set_str(&mut span.attributes, "source", "agent");
                convert::set_str(&mut span.attributes, "sandbox_id", &id.sandbox_id);
                convert::default(&mut span.attributes, "package", "shoji_agent");
                convert::default(&mut span.attributes, "subsystem", "agent");
                convert::set(
                    &mut span.attributes,
                    "shoji.clock_offset_ns",
                    offset.clone(),
                );
                span.start_time_unix_nano = shift(span.start_time_unix_nano, offset_ns);
                span.end_time_unix_nano = shift(span.end_time_unix_nano, offset_ns);
                for e in &mut span.events {
                    e.time_unix_nano = shift(e.time_unix_nano, offset_ns);
                }
            }
        }
    }
}

fn shift(t: u64, offset_ns: i64) -> u64 {
    if t == 0 {
        return 0;
    }
    (t as i128 - offset_ns as i128).clamp(0, u64::MAX as i128) as u64
}
