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
/// Spans the worker hands to the sink at once, at most, when requests have queued up.
pub const BATCH_SPANS: usize = 16 * 1024;

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

/// The worker: whatever has queued up goes to the sink in one batch (no waiting for more), so a
/// backlog costs one store transaction, not one per request; a flush is answered after the
/// batch before it.
fn worker(rx: Receiver<Msg>, sink: &mut dyn SpanSink, c: &Counters) {
    let mut pending: Option<Msg> = None;
    loop {
        let first = match pending.take() {
            Some(m) => m,
            None => match rx.recv() {
                Ok(m) => m,
                Err(_) => return,
            },
        };
        let req = match first {
            Msg::Spans(req) => req,
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut n = span_count(&req);
        let mut batch = vec![req];
        while n < BATCH_SPANS {
            match rx.try_recv() {
                Ok(Msg::Spans(req)) => {
                    n += span_count(&req);
                    batch.push(req);
                }
                Ok(flush) => {
                    pending = Some(flush);
                    break;
                }
                Err(_) => break,
            }
        }
        let (failed, err) = sink.export_batch(batch);
        c.exported.fetch_add(n as u64 - failed, Ordering::Relaxed);
        if failed > 0 {
            // Not traced: a span about a failed export would loop. Only the first failure is
            // told here; the total at flush.
            if c.failed.fetch_add(failed, Ordering::Relaxed) == 0 {
                if let Some(e) = err {
                    eprintln!("shoji: warning: {e}; spans are being lost");
                }
            }
        }
    }
}

impl Pipeline {
    pub fn start(mut sink: Box<dyn SpanSink>) -> Self {
        let (tx, rx): (SyncSender<Msg>, Receiver<Msg>) = sync_channel(QUEUE_REQUESTS);
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("shoji-spans".into())
            .spawn(move || worker(rx, sink.as_mut(), &c))
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

    /// Records the size of every batch it is handed; the first export blocks until released.
    struct Gate {
        batches: Arc<Mutex<Vec<usize>>>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
    }
    impl SpanSink for Gate {
        fn export(&mut self, _r: ExportTraceServiceRequest) -> Result<(), SinkError> {
            unreachable!("the pipeline hands over batches")
        }
        fn export_batch(
            &mut self,
            reqs: Vec<ExportTraceServiceRequest>,
        ) -> (u64, Option<SinkError>) {
            if let Some(g) = self.gate.take() {
                let _ = g.recv();
            }
            self.batches.lock().unwrap().push(reqs.len());
            (0, None)
        }
        fn describe(&self) -> String {
            "gate".into()
        }
    }

    #[test]
    fn a_backlog_reaches_the_sink_in_batches_and_a_flush_waits_for_it() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = sync_channel(1);
        let p = Pipeline::start(Box::new(Gate {
            batches: batches.clone(),
            gate: Some(gate),
        }));
        p.submit(one_span());
        // Give the worker the first request, so that the rest queue up behind the gate.
        std::thread::sleep(Duration::from_millis(50));
        for _ in 0..100 {
            p.submit(one_span());
        }
        open.send(()).unwrap();
        assert!(p.flush(Duration::from_secs(10)));
        let b = batches.lock().unwrap().clone();
        assert_eq!(b.iter().sum::<usize>(), 101, "{b:?}");
        assert!(b.len() < 10, "the backlog should go in few batches: {b:?}");
        assert_eq!(p.counters.exported.load(Ordering::Relaxed), 101);
        assert_eq!(p.dropped(), 0);
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
