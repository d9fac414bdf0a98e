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

/// OTLP over HTTP with protobuf bodies, `POST {endpoint}/v1/traces`.
pub struct HttpSink {
    url: String,
    agent: ureq::Agent,
}

impl HttpSink {
    pub fn new(endpoint: &str) -> Self {
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
        }
    }
}

impl SpanSink for HttpSink {
    fn export(&mut self, req: ExportTraceServiceRequest) -> Result<(), SinkError> {
        let body = req.encode_to_vec();
        self.agent
            .post(&self.url)
            .set("content-type", "application/x-protobuf")
            .send_bytes(&body)
            .map(|_| ())
            .map_err(|e| SinkError::Otlp {
                endpoint: self.url.clone(),
                message: e.to_string(),
            })
    }
    fn describe(&self) -> String {
        format!("OTLP/HTTP {}", self.url)
    }
}
