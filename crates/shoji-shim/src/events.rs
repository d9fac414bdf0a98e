//! The events the shim sends containerd (`TaskExit`, `TaskOOM`, ...), forwarded in order over
//! containerd's ttRPC events service, and kept across a containerd restart.
//!
//! containerd-shim's own `RemotePublisher` reconnects only when its client says the connection
//! closed; once containerd has been killed its client fails with "channel closed" instead, so it
//! retries the dead connection five times and drops the event: an exit that happens while
//! containerd is down, or after it came back, never reaches it. Here one task sends the events
//! one by one; when containerd cannot be reached it reconnects and retries the same event
//! (backing off up to [`MAX_BACKOFF`]) until containerd takes it, so the order holds. An event
//! containerd answers with an error is dropped, as is one that finds the queue full; both are
//! counted and logged.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use containerd_shim::protos::protobuf::MessageDyn;
use containerd_shim::protos::shim::event::Envelope;
use containerd_shim::protos::shim::events::ForwardRequest;
use containerd_shim::protos::shim_async::EventsClient;
use containerd_shim::protos::ttrpc;
use tokio::sync::mpsc;

/// Events waiting for containerd; more are dropped (and counted).
const QUEUE: usize = 1024;
/// The longest wait between two attempts to reach containerd.
const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// How long one attempt may take.
const ATTEMPT: Duration = Duration::from_secs(5);

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("cannot encode the {topic} event")]
    Encode {
        topic: String,
        #[source]
        source: containerd_shim::Error,
    },
    #[error("the event queue to containerd is full: {topic} dropped ({dropped} dropped so far)")]
    Full { topic: String, dropped: u64 },
}

/// Sends events to containerd's ttRPC address, in order, reconnecting as needed.
pub struct EventForwarder {
    tx: mpsc::Sender<Envelope>,
    dropped: Arc<AtomicU64>,
}

impl EventForwarder {
    /// Starts the task that forwards events to containerd at `address` (its ttRPC socket, a
    /// path or a `unix://` address).
    pub fn start(address: &str) -> Self {
        let address = if address.contains("://") {
            address.to_string()
        } else {
            format!("unix://{address}")
        };
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        tokio::spawn(forward(address, rx, dropped.clone()));
        Self { tx, dropped }
    }

    /// Queues `event` under `topic` in containerd's `namespace`.
    pub fn publish(
        &self,
        topic: &str,
        namespace: &str,
        event: Box<dyn MessageDyn>,
    ) -> Result<(), EventError> {
        let encode = |source| EventError::Encode {
            topic: topic.to_string(),
            source,
        };
        let mut envelope = Envelope::new();
        envelope.set_topic(topic.to_owned());
        envelope.set_namespace(namespace.to_owned());
        envelope.set_timestamp(containerd_shim::util::timestamp().map_err(encode)?);
        envelope.set_event(containerd_shim::util::convert_to_any(event).map_err(encode)?);
        self.tx.try_send(envelope).map_err(|_| EventError::Full {
            topic: topic.to_string(),
            dropped: self.dropped.fetch_add(1, Ordering::Relaxed) + 1,
        })
    }
}

async fn forward(address: String, mut rx: mpsc::Receiver<Envelope>, dropped: Arc<AtomicU64>) {
    let mut client: Option<EventsClient> = None;
    while let Some(envelope) = rx.recv().await {
        let topic = envelope.topic.clone();
        let mut req = ForwardRequest::new();
        req.set_envelope(envelope);
        let mut backoff = Duration::from_millis(50);
        let mut told = false;
        loop {
            let c = match &client {
                Some(c) => c,
                None => match ttrpc::r#async::Client::connect(&address).await {
                    Ok(c) => client.insert(EventsClient::new(c)),
                    Err(e) => {
                        if !told {
                            tracing::warn!(%address, error = %e, %topic, "containerd is not reachable; the event waits for it");
                            told = true;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(MAX_BACKOFF);
                        continue;
                    }
                },
            };
            let ctx = ttrpc::context::with_timeout(ATTEMPT.as_nanos() as i64);
            match c.forward(ctx, &req).await {
                Ok(_) => break,
                // containerd answered: retrying would get the same answer.
                Err(ttrpc::Error::RpcStatus(s)) => {
                    let n = dropped.fetch_add(1, Ordering::Relaxed) + 1;
                    tracing::warn!(%topic, status = ?s, dropped = n, "containerd refused the event");
                    break;
                }
                // The connection is gone (containerd stopped or restarted): a new one.
                Err(e) => {
                    if !told {
                        tracing::warn!(error = %e, %topic, "cannot send the event to containerd; reconnecting");
                        told = true;
                    }
                    client = None;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}
