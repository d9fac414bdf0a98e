//! The one path every span takes on the host: a queue into a worker thread that owns the sink,
//! bounded twice over. The runtime's own spans ([`Pipeline::submit`]) never wait: when their
//! room (a number of requests) is full, the request is dropped and counted. Forwarded agent spans
//! ([`Pipeline::send`]) wait for room (a number of bytes in memory) up to a deadline, so that a
//! slow sink slows the guest's sender instead of losing its spans (ADR 006); after the deadline
//! (a wedged sink) the request is dropped and counted. Room is a permit that travels with the
//! queued request and is given back once the sink is done with it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, sync_channel, Receiver, Sender, SyncSender};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::convert::{heap_size, span_count};
use crate::sink::SpanSink;

/// Requests of the runtime's own spans ([`Pipeline::submit`]) waiting for the sink at most.
pub const QUEUE_REQUESTS: usize = 1024;
/// Bytes of forwarded requests ([`Pipeline::send`]) waiting for the sink at most, counted as the
/// heap their decoded form holds ([`heap_size`]). A request larger than this alone is let in
/// when the queue is empty.
pub const QUEUE_BYTES: usize = 32 << 20;
/// How long [`Pipeline::send`] waits for room before it drops the request: long enough for any
/// working sink to catch up, short enough that a wedged one (a blackholed OTLP endpoint) cannot
/// hold a connection for long.
pub const SEND_DEADLINE: Duration = Duration::from_secs(5);
/// Spans the worker hands to the sink at once, at most, when requests have queued up.
pub const BATCH_SPANS: usize = 16 * 1024;

/// The pipeline's bounds; [`Limits::default`] is the constants above.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub requests: usize,
    pub bytes: usize,
    pub send_deadline: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            requests: QUEUE_REQUESTS,
            bytes: QUEUE_BYTES,
            send_deadline: SEND_DEADLINE,
        }
    }
}

enum Msg {
    /// A request and its room in the queue, given back after the sink has it.
    Spans(ExportTraceServiceRequest, OwnedSemaphorePermit),
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
    tx: Sender<Msg>,
    /// Room for `submit`, in requests.
    requests: Arc<Semaphore>,
    /// Room for `send`, in bytes.
    bytes: Arc<Semaphore>,
    limits: Limits,
    pub counters: Arc<Counters>,
}

impl std::fmt::Debug for Pipeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Pipeline")
    }
}

/// The worker: whatever has queued up goes to the sink in one batch (no waiting for more), so a
/// backlog costs one store transaction, not one per request; a flush is answered after the
/// batch before it. The batch's room is given back once the sink has returned.
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
        let (req, permit) = match first {
            Msg::Spans(req, permit) => (req, permit),
            Msg::Flush(done) => {
                let _ = done.send(());
                continue;
            }
        };
        let mut n = span_count(&req);
        let mut batch = vec![req];
        let mut room = vec![permit];
        while n < BATCH_SPANS {
            match rx.try_recv() {
                Ok(Msg::Spans(req, permit)) => {
                    n += span_count(&req);
                    batch.push(req);
                    room.push(permit);
                }
                Ok(flush) => {
                    pending = Some(flush);
                    break;
                }
                Err(_) => break,
            }
        }
        let (failed, err) = sink.export_batch(batch);
        drop(room);
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

/// Counts a request's spans as dropped unless it was queued, also when the future that holds
/// it is dropped while it waits (a connection ended at shutdown).
struct Unqueued<'a> {
    spans: u64,
    counters: &'a Counters,
}

impl Drop for Unqueued<'_> {
    fn drop(&mut self) {
        self.counters
            .dropped
            .fetch_add(self.spans, Ordering::Relaxed);
    }
}

impl Pipeline {
    pub fn start(sink: Box<dyn SpanSink>) -> Self {
        Self::with_limits(sink, Limits::default())
    }

    pub fn with_limits(mut sink: Box<dyn SpanSink>, limits: Limits) -> Self {
        let (tx, rx): (Sender<Msg>, Receiver<Msg>) = channel();
        let counters = Arc::new(Counters::default());
        let c = counters.clone();
        std::thread::Builder::new()
            .name("shoji-spans".into())
            .spawn(move || worker(rx, sink.as_mut(), &c))
            .ok();
        // Permits are counted in u32 by `acquire_many`.
        let limits = Limits {
            bytes: limits.bytes.clamp(1, u32::MAX as usize),
            ..limits
        };
        Self {
            tx,
            requests: Arc::new(Semaphore::new(limits.requests)),
            bytes: Arc::new(Semaphore::new(limits.bytes)),
            limits,
            counters,
        }
    }

    /// Queues a request of the runtime's own spans; never waits: drops it (counted) if their
    /// room is full. Forwarded spans have room of their own, so a flood from a guest cannot
    /// crowd these out.
    pub fn submit(&self, req: ExportTraceServiceRequest) {
        let n = span_count(&req) as u64;
        let queued = match self.requests.clone().try_acquire_owned() {
            Ok(permit) => self.tx.send(Msg::Spans(req, permit)).is_ok(),
            Err(_) => false,
        };
        if !queued {
            self.counters.dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    /// Queues a forwarded request, waiting for room (backpressure) up to the deadline
    /// ([`SEND_DEADLINE`] unless set otherwise); then drops it, counted. Returns whether it was
    /// queued. Needs a tokio runtime with time enabled.
    pub async fn send(&self, req: ExportTraceServiceRequest) -> bool {
        let mut unqueued = Unqueued {
            spans: span_count(&req) as u64,
            counters: &self.counters,
        };
        let cost = heap_size(&req).clamp(1, self.limits.bytes) as u32;
        // No timer while there is room: the common case under any working sink.
        let permit = match self.bytes.clone().try_acquire_many_owned(cost) {
            Ok(p) => p,
            Err(_) => match tokio::time::timeout(
                self.limits.send_deadline,
                self.bytes.clone().acquire_many_owned(cost),
            )
            .await
            {
                Ok(Ok(p)) => p,
                Ok(Err(_)) | Err(_) => return false,
            },
        };
        if self.tx.send(Msg::Spans(req, permit)).is_err() {
            return false;
        }
        unqueued.spans = 0;
        true
    }

    /// Bytes of forwarded requests queued or being exported now.
    pub fn queued_bytes(&self) -> usize {
        self.limits.bytes - self.bytes.available_permits()
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
        spans(1)
    }

    fn spans(n: usize) -> ExportTraceServiceRequest {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: (0..n)
                        .map(|i| Span {
                            name: format!("span {i}"),
                            ..Default::default()
                        })
                        .collect(),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    /// Records the number of requests in every batch it is handed and the spans stored. The
    /// first export waits for `gate` if there is one; every export takes `delay`; `alive` goes
    /// down by the batch's size once it has been stored.
    #[derive(Default)]
    struct Batches {
        batches: Arc<Mutex<Vec<usize>>>,
        spans: Arc<AtomicU64>,
        gate: Option<std::sync::mpsc::Receiver<()>>,
        delay: Duration,
        alive: Arc<std::sync::atomic::AtomicI64>,
    }
    impl SpanSink for Batches {
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
            std::thread::sleep(self.delay);
            let size: usize = reqs.iter().map(heap_size).sum();
            let n: usize = reqs.iter().map(span_count).sum();
            self.batches.lock().unwrap().push(reqs.len());
            self.spans.fetch_add(n as u64, Ordering::Relaxed);
            self.alive.fetch_sub(size as i64, Ordering::SeqCst);
            (0, None)
        }
        fn describe(&self) -> String {
            "batches".into()
        }
    }

    #[test]
    fn a_backlog_reaches_the_sink_in_batches_and_a_flush_waits_for_it() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = sync_channel(1);
        let p = Pipeline::start(Box::new(Batches {
            batches: batches.clone(),
            gate: Some(gate),
            ..Default::default()
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

    #[tokio::test]
    async fn a_flood_through_send_waits_for_room_loses_nothing_and_stays_within_the_byte_bound() {
        let alive = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let stored = Arc::new(AtomicU64::new(0));
        let bound = 10 * heap_size(&spans(20));
        let p = Pipeline::with_limits(
            Box::new(Batches {
                alive: alive.clone(),
                spans: stored.clone(),
                delay: Duration::from_millis(2),
                ..Default::default()
            }),
            Limits {
                bytes: bound,
                // Never reached: a slow sink must not lose anything.
                send_deadline: Duration::from_secs(60),
                ..Limits::default()
            },
        );
        let most = Arc::new(std::sync::atomic::AtomicI64::new(0));
        let mut producers = tokio::task::JoinSet::new();
        for _ in 0..4 {
            let (p, alive, most) = (p.clone(), alive.clone(), most.clone());
            producers.spawn(async move {
                for _ in 0..100 {
                    let req = spans(20);
                    let size = heap_size(&req) as i64;
                    assert!(p.send(req).await, "a slow sink must not make send drop");
                    // Counted once queued, uncounted once stored: a lower bound of what the
                    // pipeline holds, so above the bound means the bound did not hold.
                    let now = alive.fetch_add(size, Ordering::SeqCst) + size;
                    most.fetch_max(now, Ordering::SeqCst);
                    assert!(p.queued_bytes() <= bound);
                }
            });
        }
        while let Some(r) = producers.join_next().await {
            r.unwrap();
        }
        assert!(p.flush(Duration::from_secs(30)));
        assert_eq!(stored.load(Ordering::Relaxed), 4 * 100 * 20);
        assert_eq!(p.counters.exported.load(Ordering::Relaxed), 4 * 100 * 20);
        assert_eq!(p.dropped(), 0);
        let most = most.load(Ordering::SeqCst) as usize;
        assert!(most <= bound, "{most} bytes held, bound {bound}");
        assert!(
            most > bound / 2,
            "the flood should have filled the queue: {most} of {bound}"
        );
        assert_eq!(p.queued_bytes(), 0, "all room is given back");
    }

    #[tokio::test]
    async fn a_wedged_sink_makes_send_drop_after_its_deadline_and_submit_never_blocks() {
        let batches = Arc::new(Mutex::new(Vec::new()));
        let (open, gate) = sync_channel(1);
        let size = heap_size(&spans(5));
        let p = Pipeline::with_limits(
            Box::new(Batches {
                batches: batches.clone(),
                gate: Some(gate),
                ..Default::default()
            }),
            Limits {
                requests: 8,
                bytes: 3 * size,
                send_deadline: Duration::from_millis(200),
            },
        );
        // The worker takes the first and wedges in the sink, holding its room.
        assert!(p.send(spans(5)).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(p.send(spans(5)).await);
        assert!(p.send(spans(5)).await);
        assert_eq!(p.queued_bytes(), 3 * size);
        let start = std::time::Instant::now();
        assert!(
            !p.send(spans(5)).await,
            "no room: dropped after the deadline"
        );
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(200), "{waited:?}");
        assert!(waited < Duration::from_secs(5), "{waited:?}");
        assert_eq!(p.counters.dropped.load(Ordering::Relaxed), 5);
        // The runtime's own spans have room of their own, and never wait.
        let start = std::time::Instant::now();
        for _ in 0..100 {
            p.submit(one_span());
        }
        assert!(start.elapsed() < Duration::from_secs(1), "submit blocked");
        assert_eq!(p.counters.dropped.load(Ordering::Relaxed), 5 + 92);
        open.send(()).unwrap();
        assert!(p.flush(Duration::from_secs(10)));
        assert_eq!(batches.lock().unwrap().iter().sum::<usize>(), 3 + 8);
        assert_eq!(p.dropped(), 5 + 92);
        assert_eq!(p.queued_bytes(), 0);
    }

    #[tokio::test]
    async fn a_send_abandoned_while_waiting_is_counted_as_dropped() {
        let (open, gate) = sync_channel(1);
        let p = Pipeline::with_limits(
            Box::new(Batches {
                gate: Some(gate),
                ..Default::default()
            }),
            Limits {
                bytes: heap_size(&spans(3)),
                ..Limits::default()
            },
        );
        assert!(p.send(spans(3)).await);
        // What a forwarder connection ended at shutdown does to the send it was waiting in.
        let abandoned = tokio::time::timeout(Duration::from_millis(50), p.send(spans(3))).await;
        assert!(abandoned.is_err());
        assert_eq!(p.dropped(), 3);
        open.send(()).unwrap();
        assert!(p.flush(Duration::from_secs(10)));
        assert_eq!(p.counters.exported.load(Ordering::Relaxed), 3);
    }
}
