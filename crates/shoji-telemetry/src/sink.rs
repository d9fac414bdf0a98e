//! Where spans end up: the embedded store, or an OTLP endpoint (gRPC or HTTP/protobuf).

use std::path::Path;

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
        })
    }
}

impl SpanSink for GrpcSink {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        let err = |m: String| SinkError::Otlp {
            endpoint: self.endpoint.clone(),
            message: m,
        };
        if self.client.is_none() {
            let ep = self.endpoint.clone();
            let c = self
                .rt
                .block_on(opentelemetry_proto::tonic::collector::trace::v1::trace_service_client::TraceServiceClient::connect(ep))
                .map_err(|e| err(e.to_string()))?;
            self.client = Some(c);
        }
        let Some(client) = self.client.as_mut() else {
            return Err(err("no client".into()));
        };
        let r = self.rt.block_on(client.export(req));
        if let Err(e) = r {
            self.client = None;
            return Err(err(e.to_string()));
        }
        Ok(())
    }
    fn describe(&self) -> String {
        format!("OTLP/gRPC {}", self.endpoint)
    }
}

/// OTLP over HTTP, `POST {endpoint}/v1/traces`, with protobuf or JSON bodies (the OTLP JSON
/// mapping: hex ids, camelCase names, as opentelemetry-proto's serde support writes it).
pub struct HttpSink {
    url: String,
    agent: ureq::Agent,
    json: bool,
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
        self.agent
            .post(&self.url)
            .set("content-type", content_type)
            .send_bytes(&body)
            .map(|_| ())
            .map_err(|e| err(e.to_string()))
    }
    fn describe(&self) -> String {
        let enc = if self.json { "json" } else { "protobuf" };
        format!("OTLP/HTTP ({enc}) {}", self.url)
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

    /// Both HTTP encodings reach a real OTLP receiver (`shoji trace serve`'s) and are stored
    /// with their ids intact.
    #[test]
    fn http_protobuf_and_json_reach_a_real_receiver() {
        let dir = tempfile::tempdir().unwrap();
        let store = shoji_trace::store::Store::open(dir.path()).unwrap();
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let cfg = shoji_trace::server::ServeConfig {
            grpc_port: 0,
            http_port: 0,
            query_port: 0,
            zipkin_port: 0,
            ..Default::default()
        };
        let server = rt
            .block_on(shoji_trace::server::start(store.clone(), cfg))
            .unwrap();
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
}
