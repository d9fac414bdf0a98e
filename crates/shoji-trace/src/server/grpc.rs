//! OTLP/gRPC receiver: the generated `TraceService` over tonic.

use std::future::Future;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use tokio::net::TcpListener;
use tonic::{Code, Request, Response, Status};

use crate::store::Store;

struct Receiver {
    store: Store,
}

#[tonic::async_trait]
impl TraceService for Receiver {
    async fn export(
        &self,
        request: Request<ExportTraceServiceRequest>,
    ) -> Result<Response<ExportTraceServiceResponse>, Status> {
        let req = request.into_inner();
        let store = self.store.clone();
        let stats = tokio::task::spawn_blocking(move || store.ingest(&req))
            .await
            .map_err(|e| Status::unavailable(format!("ingest task failed: {e}")))?
            // UNAVAILABLE, not INTERNAL: the client's retry policy retries it (the store may
            // be locked by another process for longer than our busy timeout).
            .map_err(|e| Status::unavailable(format!("cannot store spans: {e}")))?;
        let partial_success = (stats.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: stats.rejected as i64,
            error_message: format!("{} spans had an invalid trace or span id", stats.rejected),
        });
        Ok(Response::new(ExportTraceServiceResponse {
            partial_success,
        }))
    }
}

/// tonic reports an oversized message as OUT_OF_RANGE and an undecodable one as INTERNAL;
/// OTLP clients expect RESOURCE_EXHAUSTED and INVALID_ARGUMENT (INTERNAL would make them
/// retry garbage). Our handler returns neither code, so rewriting them is unambiguous.
fn fix_status<B>(mut resp: axum::http::Response<B>) -> axum::http::Response<B> {
    let code = resp
        .headers()
        .get("grpc-status")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<i32>().ok());
    let new = match code.map(Code::from) {
        Some(Code::OutOfRange) => Some(Code::ResourceExhausted),
        Some(Code::Internal) => Some(Code::InvalidArgument),
        _ => None,
    };
    if let Some(c) = new {
        resp.headers_mut()
            .insert("grpc-status", axum::http::HeaderValue::from(c as i32));
    }
    resp
}

pub(super) async fn serve(
    listener: TcpListener,
    store: Store,
    max_request_bytes: usize,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let svc = TraceServiceServer::new(Receiver { store })
        .max_decoding_message_size(max_request_bytes)
        .accept_compressed(tonic::codec::CompressionEncoding::Gzip);
    let incoming = tonic::transport::server::TcpIncoming::from(listener);
    let result = tonic::transport::Server::builder()
        .layer(tower::util::MapResponseLayer::new(fix_status))
        .add_service(svc)
        .serve_with_incoming_shutdown(incoming, shutdown)
        .await;
    if let Err(e) = result {
        tracing::error!(error = %e, "OTLP/gRPC server stopped");
    }
}
