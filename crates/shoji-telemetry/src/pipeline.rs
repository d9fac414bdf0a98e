//! The one path every span takes on the host: a bounded queue into a worker thread that owns the
//! sink. Producers never block: a full queue drops the request and counts its spans.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::convert::span_count;
use crate::sink::SpanSink;

/// Requests waiting for the sink at most.
pub const QUEUE_REQUESTS: usize = 1024;

enum Msg {
    Spans(ExportTraceServiceRequest),
    Flush(SyncSender<()>),
}

#[derive(Debug, Default)]
pub struct Counters {
    pub exported: AtomicU64,
    pub dropped: AtomicU64,
    pub failed: AtomicU64,
}

#[derive(Clone)]
pub struct Pipeline {
    tx: SyncSender<Msg>,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

impl Pipeline {
    pub fn start(mut sink: Box<dyn SpanSink>) -> Self {
        let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) = sync_channel(QUEUE_REQUESTS);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("shoji-spans".into())
            .spawn(move || {
                for msg in rx {
                    match msg {
                        Msg::Spans(req) => {
                            let n = span_count(&req) as u64;
                            match sink.export(req) {
                                Ok(()) => {
                                    c.exported.fetch_add(n, Ordering::Relaxed);
                                }
                                Err(e) => {
                                    // Not traced: a span about a failed export would loop. Only
                                    // the first failure is told here; the total at flush.
                                    if c.failed.fetch_add(n, Ordering::Relaxed) == 0 {
                                        eprintln!("shoji: warning: {e}; spans are being lost");
                                    }
                                }
                            }
                        }
                        Msg::Flush(done) => {
                            let _ = done.send(());
                        }
                    }
                }
            })
            .ok();
        Self { tx, counters }
    }

    /// Queues a request; drops it (counted) if the queue is full.
    pub fn submit(&self, req: ExportTraceServiceRequest) {
        let n = span_count(&req) as u64;
        match self.tx.try_send(Msg::Spans(req)) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.counters.dropped.fetch_add(n, Ordering::Relaxed);
            }
        }
    }

    /// Waits until everything queued before this call has reached the sink.
    pub fn flush(&self, timeout: Duration) -> bool {
        let (tx, rx) = sync_channel(1);
        if self.tx.send(Msg::Flush(tx)).is_err() {
            return false;
        }
        rx.recv_timeout(timeout).is_ok()
    }

    pub fn dropped(&self) -> u64 {
        self.counters.dropped.load(Ordering::Relaxed) + self.counters.failed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::SinkError;
    use std::sync::Mutex;

    struct Slow(Arc<Mutex<usize>>);
    impl SpanSink for Slow {
        fn export(&mut self, _r: ExportTraceServiceRequest) -> Result<(), SinkError> {
            std::thread::sleep(Duration::from_millis(2));
            *self.0.lock().unwrap() += 1;
            Ok(())
        }
        fn describe(&self) -> String {
            "slow".into()
        }
    }

    fn one_span() -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span::default()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn a_flood_is_bounded_and_counted_never_blocking() {
        let seen = Arc::new(Mutex::new(0));
        let p = Pipeline::start(Box::new(Slow(seen.clone())));
        let start = std::time::Instant::now();
        for _ in 0..(QUEUE_REQUESTS * 4) {
            p.submit(one_span());
        }
        assert!(start.elapsed() < Duration::from_secs(2), "submit blocked");
        assert!(p.flush(Duration::from_secs(30)));
        let delivered = *seen.lock().unwrap() as u64;
        let dropped = p.counters.dropped.load(Ordering::Relaxed);
        assert_eq!(delivered + dropped, (QUEUE_REQUESTS * 4) as u64);
        assert!(dropped > 0, "a flood larger than the queue must drop");
    }
}
