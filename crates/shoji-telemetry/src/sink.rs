//! Where spans end up: the embedded store, or an OTLP endpoint (gRPC or HTTP/protobuf).

use std::path::Path;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    #[error("trace store: {0}")]
    Store(String),
    #[error("OTLP export to {endpoint} failed: {message}")]
    Otlp { endpoint: String, message: String },
    #[error("invalid span ids: trace {trace_id:?}, span {span_id:?}")]
    InvalidIds { trace_id: String, span_id: String },
    #[error("unknown OTLP protocol {0:?}: use grpc, http/protobuf or http/json ([runtime] otlp_protocol, OTEL_EXPORTER_OTLP_PROTOCOL or --otlp-protocol)")]
    Protocol(String),
}

/// The OTLP transports, by the names of `OTEL_EXPORTER_OTLP_PROTOCOL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Grpc,
    HttpProtobuf,
    HttpJson,
}

impl std::str::FromStr for OtlpProtocol {
    type Err = SinkError;
    fn from_str(s: &str) -> Result<Self, SinkError> {
        match s.trim() {
            "grpc" => Ok(Self::Grpc),
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            other => Err(SinkError::Protocol(other.to_string())),
        }
    }
}

/// The sink for an OTLP endpoint and protocol.
pub fn otlp_sink(endpoint: &str, protocol: OtlpProtocol) -> Result<Box<dyn SpanSink>, SinkError> {
    Ok(match protocol {
        OtlpProtocol::Grpc => Box::new(GrpcSink::new(endpoint)?),
        OtlpProtocol::HttpProtobuf => Box::new(HttpSink::new(endpoint, false)),
        OtlpProtocol::HttpJson => Box::new(HttpSink::new(endpoint, true)),
    })
}

/// Receives OTLP requests, synchronously, from the pipeline's worker thread.
pub trait SpanSink: Send {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError>;
    /// Several requests at once (a backlog); by default one by one. Returns the number of
    /// spans that could not be delivered, and the first error.
    fn export_batch(&mut self, reqs: Vec<ExportTraceServiceRequest>) -> (u64, Option<SinkError>) {
        let mut failed = 0;
        let mut first = None;
        for req in reqs {
            let n = crate::convert::span_count(&req) as u64;
            if let Err(e) = self.export(req) {
                failed += n;
                first.get_or_insert(e);
            }
        }
        (failed, first)
    }
    /// Human description for logs and `shoji env`.
    fn describe(&self) -> String;
}

/// The embedded store in the data directory.
pub struct StoreSink {
    store: shoji_trace::store::Store,
}

impl StoreSink {
    pub fn open(data_dir: &Path) -> Result<Self, SinkError> {
        shoji_trace::store::Store::open(data_dir)
            .map(|store| Self { store })
            .map_err(|e| SinkError::Store(e.to_string()))
    }
}

impl SpanSink for StoreSink {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        self.store
            .ingest(&req)
            .map(|_| ())
            .map_err(|e| SinkError::Store(e.to_string()))
    }
    /// One transaction for the whole backlog: a commit costs far more than a span.
    fn export_batch(&mut self, reqs: Vec<ExportTraceServiceRequest>) -> (u64, Option<SinkError>) {
        match self.store.ingest_batch(&reqs) {
            Ok(_) => (0, None),
            Err(e) => (
                reqs.iter()
                    .map(|r| crate::convert::span_count(r) as u64)
                    .sum(),
                Some(SinkError::Store(e.to_string())),
            ),
        }
    }
    fn describe(&self) -> String {
        format!("embedded store {}", self.store.path().display())
    }
}

/// OTLP over gRPC (tonic), driven by a small runtime owned by the worker thread.
pub struct GrpcSink {
    endpoint: String,
    rt: tokio::runtime::Runtime,
    client: Option<
        opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient<
            tonic::transport::Channel,
        >,
    >,
    retry: RetryState,
}

impl GrpcSink {
    pub fn new(endpoint: &str) -> Result<Self, SinkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| SinkError::Otlp {
                endpoint: endpoint.into(),
                message: e.to_string(),
            })?;
        Ok(Self {
            endpoint: endpoint.into(),
            rt,
            client: None,
            retry: RetryState::default(),
        })
    }
}

impl SpanSink for GrpcSink {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        let endpoint = self.endpoint.clone();
        let err = |m: String| SinkError::Otlp {
            endpoint: endpoint.clone(),
            message: m,
        };
        let mut retry = std::mem::take(&mut self.retry);
        let result = retry.run(&RETRY, || {
            if self.client.is_none() {
                let ep = self.endpoint.clone();
                // Not connected (the receiver is not up yet, or went away): worth retrying.
                let c = self
                    .rt
                    .block_on(opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(ep))
                    .map_err(|e| Attempt::Retry(err(e.to_string()), None))?;
                self.client = Some(c);
            }
            let Some(client) = self.client.as_mut() else {
                return Err(Attempt::Fatal(err("no client".into())));
            };
            match self.rt.block_on(client.export(req.clone())) {
                Ok(_) => Ok(()),
                Err(status) => {
                    self.client = None;
                    let e = err(status.to_string());
                    Err(if grpc_code_is_retryable(status.code()) {
                        Attempt::Retry(e, None)
                    } else {
                        Attempt::Fatal(e)
                    })
                }
            }
        });
        self.retry = retry;
        result
    }
    fn describe(&self) -> String {
        format!("OTLP/gRPC {}", self.endpoint)
    }
}

/// The gRPC codes OTLP calls retryable (the specification's "OTLP/gRPC Throttling" and
/// "Failures" sections): the receiver is alive but cannot take the request now.
fn grpc_code_is_retryable(code: tonic::Code) -> bool {
    use tonic::Code::*;
    matches!(
        code,
        Cancelled
            | DeadlineExceeded
            | ResourceExhausted
            | Aborted
            | OutOfRange
            | Unavailable
            | DataLoss
    )
}

/// OTLP over HTTP, `POST {endpoint}/v1/traces`, with protobuf or JSON bodies (the OTLP JSON
/// mapping: hex ids, camelCase names, as opentelemetry-proto's serde support writes it).
pub struct HttpSink {
    url: String,
    agent: ureq::Agent,
    json: bool,
    retry: RetryState,
}

impl HttpSink {
    pub fn new(endpoint: &str, json: bool) -> Self {
        let base = endpoint.trim_end_matches('/');
        let url = if base.ends_with("/v1/traces") {
            base.to_string()
        } else {
            format!("{base}/v1/traces")
        };
        Self {
            url,
            agent: ureq::AgentBuilder::new()
                .timeout(std::time::Duration::from_secs(10))
                .build(),
            json,
            retry: RetryState::default(),
        }
    }
}

impl SpanSink for HttpSink {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        let err = |message: String| SinkError::Otlp {
            endpoint: self.url.clone(),
            message,
        };
        let (body, content_type) = if self.json {
            let body = serde_json::to_vec(&req).map_err(|e| err(e.to_string()))?;
            (body, "application/json")
        } else {
            (req.encode_to_vec(), "application/x-protobuf")
        };
        let (agent, url) = (&self.agent, &self.url);
        self.retry.run(&RETRY, || {
            match agent
                .post(url)
                .set("content-type", content_type)
                .send_bytes(&body)
            {
                Ok(_) => Ok(()),
                // OTLP/HTTP: 429, 502, 503 and 504 are retryable, after `Retry-After` if given.
                Err(ureq::Error::Status(code, response)) => {
                    let after = response
                        .header("retry-after")
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let e = err(format!("HTTP {code} {}", response.status_text()));
                    Err(if matches!(code, 429 | 502 | 503 | 504) {
                        Attempt::Retry(e, after)
                    } else {
                        Attempt::Fatal(e)
                    })
                }
                // Refused connection, reset, timeout: the receiver may be starting or busy.
                Err(e @ ureq::Error::Transport(_)) => Err(Attempt::Retry(err(e.to_string()), None)),
            }
        })
    }
    fn describe(&self) -> String {
        let enc = if self.json { "json" } else { "protobuf" };
        format!("OTLP/HTTP ({enc}) {}", self.url)
    }
}

/// One try of an export: what went wrong, and whether trying again can help (with the delay
/// the receiver asked for, if it did).
enum Attempt {
    Retry(SinkError, Option<Duration>),
    Fatal(SinkError),
}

/// Bounded exponential backoff for OTLP exports, as the OTLP specification asks of clients
/// when a receiver signals a transient failure. Bounded because the pipeline's worker waits
/// for the export: a receiver that stays away costs at most `max_elapsed` of delay (plus the
/// attempts themselves) before the batch is counted as dropped.
struct Retry {
    initial: Duration,
    max_interval: Duration,
    max_elapsed: Duration,
}

/// 100 ms, 200 ms, 400 ms, 800 ms, 1 s...: about 2.5 s of waiting at most.
const RETRY: Retry = Retry {
    initial: Duration::from_millis(100),
    max_interval: Duration::from_secs(1),
    max_elapsed: Duration::from_millis(2500),
};

/// What one sink remembers between exports: whether the receiver stayed away through a whole
/// retry budget. While it does, each export is tried once, so a receiver that is down for a
/// whole run costs one budget, not one per batch; the first export that gets through ends it.
#[derive(Default)]
struct RetryState {
    receiver_away: bool,
}

impl RetryState {
    fn run(
        &mut self,
        policy: &Retry,
        mut attempt: impl FnMut() -> Result<(), Attempt>,
    ) -> Result<(), SinkError> {
        let mut waited = Duration::ZERO;
        let mut next = policy.initial;
        loop {
            match attempt() {
                Ok(()) => {
                    self.receiver_away = false;
                    return Ok(());
                }
                Err(Attempt::Fatal(e)) => return Err(e),
                Err(Attempt::Retry(e, asked)) => {
                    // No logging here: this runs on the span pipeline's own thread.
                    let delay = asked.unwrap_or(next);
                    if self.receiver_away || waited + delay > policy.max_elapsed {
                        self.receiver_away = true;
                        return Err(e);
                    }
                    std::thread::sleep(delay);
                    waited += delay;
                    next = (next * 2).min(policy.max_interval);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[test]
    fn protocols_are_parsed_by_their_otel_names_and_others_refused() {
        assert_eq!("grpc".parse::<OtlpProtocol>().unwrap(), OtlpProtocol::Grpc);
        assert_eq!(
            "http/protobuf".parse::<OtlpProtocol>().unwrap(),
            OtlpProtocol::HttpProtobuf
        );
        assert_eq!(
            "http/json".parse::<OtlpProtocol>().unwrap(),
            OtlpProtocol::HttpJson
        );
        let e = "http/jsn".parse::<OtlpProtocol>().unwrap_err().to_string();
        assert!(e.contains("\"http/jsn\"") && e.contains("http/json"), "{e}");
    }

    /// `shoji trace serve`'s receivers on its own runtime: gRPC on `grpc_port` (0: any), the
    /// other ports anywhere.
    fn receiver(
        store: shoji_trace::store::Store,
        grpc_port: u16,
    ) -> (tokio::runtime::Runtime, shoji_trace::server::RunningServer) {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cfg = shoji_trace::server::ServeConfig {
            grpc_port,
            http_port: 0,
            query_port: 0,
            zipkin_port: 0,
            ..Default::default()
        };
        let server = rt.block_on(shoji_trace::server::start(store, cfg)).unwrap();
        (rt, server)
    }

    /// Both HTTP encodings reach a real OTLP receiver (`shoji trace serve`'s) and are stored
    /// with their ids intact.
    #[test]
    fn http_protobuf_and_json_reach_a_real_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let store = shoji_trace::store::Store::open(dir.path()).unwrap();
        let (rt, server) = receiver(store.clone(), 0);
        let endpoint = format!("http://{}", server.http_addr);
        for (n, protocol) in [
            (1u8, OtlpProtocol::HttpProtobuf),
            (2, OtlpProtocol::HttpJson),
        ] {
            let req = ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![Span {
                            trace_id: vec![n; 16],
                            span_id: vec![0xab; 8],
                            name: format!("span over {protocol:?}"),
                            start_time_unix_nano: 1_700_000_000_000_000_000,
                            end_time_unix_nano: 1_700_000_000_000_000_100,
                            ..Default::default()
                        }],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            };
            let mut sink = otlp_sink(&endpoint, protocol).unwrap();
            sink.export(req).unwrap();
            let t = store.trace(&[n; 16]).unwrap().expect("stored");
            assert_eq!(t.spans.len(), 1);
            assert_eq!(t.spans[0].span_id, [0xab; 8]);
            assert_eq!(t.spans[0].name(), format!("span over {protocol:?}"));
        }
        rt.block_on(server.shutdown());
    }

    /// A receiver that answers each connection with the next of `answers` (status line and
    /// headers), then closes; returns its address and how many requests it read.
    fn http_receiver(
        answers: Vec<&'static str>,
    ) -> (String, std::sync::Arc<std::sync::atomic::AtomicUsize>) {
        use std::io::{BufRead, BufReader, Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let counter = seen.clone();
        std::thread::spawn(move || {
            for answer in answers {
                let Ok((stream, _)) = listener.accept() else {
                    return;
                };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let mut len = 0usize;
                loop {
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        len = v.trim().parse().unwrap();
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; len];
                reader.read_exact(&mut body).unwrap();
                counter.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                let mut stream = stream;
                write!(
                    stream,
                    "{answer}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
                )
                .unwrap();
            }
        });
        (format!("http://{addr}"), seen)
    }

    fn one_span_request() -> ExportTraceServiceRequest {
        ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        trace_id: vec![7; 16],
                        span_id: vec![7; 8],
                        name: "retried".into(),
                        start_time_unix_nano: 1_700_000_000_000_000_000,
                        end_time_unix_nano: 1_700_000_000_000_000_100,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        }
    }

    #[test]
    fn http_export_retries_what_otlp_calls_transient_and_not_the_rest() {
        let (endpoint, seen) = http_receiver(vec![
            "HTTP/1.1 503 Service Unavailable\r\nretry-after: 0",
            "HTTP/1.1 429 Too Many Requests",
            "HTTP/1.1 200 OK",
        ]);
        let mut sink = otlp_sink(&endpoint, OtlpProtocol::HttpProtobuf).unwrap();
        sink.export(one_span_request())
            .expect("delivered on the third try");
        assert_eq!(seen.load(std::sync::atomic::Ordering::SeqCst), 3);

        let (endpoint, seen) = http_receiver(vec!["HTTP/1.1 400 Bad Request", "HTTP/1.1 200 OK"]);
        let mut sink = otlp_sink(&endpoint, OtlpProtocol::HttpProtobuf).unwrap();
        let e = sink.export(one_span_request()).unwrap_err().to_string();
        assert!(e.contains("400"), "{e}");
        assert_eq!(
            seen.load(std::sync::atomic::Ordering::SeqCst),
            1,
            "a 400 is not retried"
        );
    }

    #[test]
    fn retries_stop_at_their_bound() {
        let policy = Retry {
            initial: Duration::from_millis(10),
            max_interval: Duration::from_millis(40),
            max_elapsed: Duration::from_millis(100),
        };
        let mut state = RetryState::default();
        let mut tries = 0;
        let t0 = std::time::Instant::now();
        let down = || Err(Attempt::Retry(SinkError::Store("down".into()), None));
        let r = state.run(&policy, || {
            tries += 1;
            down()
        });
        assert!(r.is_err());
        // Waits of 10, 20 and 40 ms fit in 100 ms; a fourth (40 ms) would not.
        assert_eq!(tries, 4);
        assert!(t0.elapsed() < Duration::from_secs(2));
        // The receiver stayed away through a whole budget: the next export tries once...
        tries = 0;
        assert!(state
            .run(&policy, || {
                tries += 1;
                down()
            })
            .is_err());
        assert_eq!(tries, 1);
        // ...until one gets through, which restores the budget.
        assert!(state.run(&policy, || Ok(())).is_ok());
        tries = 0;
        let _ = state.run(&policy, || {
            tries += 1;
            down()
        });
        assert_eq!(tries, 4);
    }

    /// The receiver comes up 300 ms after the export started: the gRPC export waits for it
    /// rather than dropping the batch at the first refused connection.
    #[test]
    fn grpc_export_waits_for_a_receiver_that_is_starting() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let store = shoji_trace::store::Store::open(dir.path()).unwrap();
        let server_store = store.clone();
        let (stop, stopped) = std::sync::mpsc::channel::<()>();
        let server = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(300));
            let (rt, server) = receiver(server_store, port);
            let _ = stopped.recv();
            rt.block_on(server.shutdown());
        });
        let mut sink = otlp_sink(&format!("http://127.0.0.1:{port}"), OtlpProtocol::Grpc).unwrap();
        sink.export(one_span_request())
            .expect("delivered once the receiver is up");
        assert!(store.trace(&[7; 16]).unwrap().is_some());
        // The server's graceful shutdown waits for the sink's open connection.
        drop(sink);
        stop.send(()).unwrap();
        server.join().unwrap();
    }
}
