//! OTLP/HTTP receiver: `POST /v1/traces`, protobuf or JSON, optionally gzip.

use std::io::Read;

use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTracePartialSuccess, ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use prost::Message;

use crate::store::Store;

#[derive(Clone)]
struct Ctx {
    store: Store,
    max: usize,
}

pub(super) fn router(store: Store, max_request_bytes: usize) -> Router {
    Router::new()
        .route("/v1/traces", post(export))
        // Refuses a body over the limit with 413 before reading it all.
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(Ctx {
            store,
            max: max_request_bytes,
        })
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

async fn export(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/x-protobuf");
    let enc = if ctype.starts_with("application/json") {
        Encoding::Json
    } else if ctype.starts_with("application/x-protobuf")
        || ctype.starts_with("application/protobuf")
    {
        Encoding::Protobuf
    } else {
        return error(
            Encoding::Json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("unsupported content type {ctype:?}: use application/x-protobuf or application/json"),
        );
    };
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let body = if gzip {
        // Bounded: a small gzip bomb must not expand past the request limit.
        let mut out = Vec::new();
        let d = flate2::read::GzDecoder::new(&body[..]);
        match d.take(ctx.max as u64 + 1).read_to_end(&mut out) {
            Ok(n) if n > ctx.max => {
                return error(
                    enc,
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!(
                        "decompressed request exceeds the limit of {} bytes",
                        ctx.max
                    ),
                );
            }
            Ok(_) => Bytes::from(out),
            Err(e) => {
                return error(
                    enc,
                    StatusCode::BAD_REQUEST,
                    format!("invalid gzip body: {e}"),
                )
            }
        }
    } else {
        body
    };
    let req = match enc {
        Encoding::Protobuf => ExportTraceServiceRequest::decode(body)
            .map_err(|e| format!("invalid OTLP protobuf: {e}")),
        Encoding::Json => serde_json::from_slice::<ExportTraceServiceRequest>(&body)
            .map_err(|e| format!("invalid OTLP JSON: {e}")),
    };
    let req = match req {
        Ok(r) => r,
        Err(msg) => return error(enc, StatusCode::BAD_REQUEST, msg),
    };
    let store = ctx.store.clone();
    let stats = match tokio::task::spawn_blocking(move || store.ingest(&req)).await {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            return error(
                enc,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("cannot store spans: {e}"),
            )
        }
        Err(e) => {
            return error(
                enc,
                StatusCode::SERVICE_UNAVAILABLE,
                format!("ingest task failed: {e}"),
            )
        }
    };
    let resp = ExportTraceServiceResponse {
        partial_success: (stats.rejected > 0).then(|| ExportTracePartialSuccess {
            rejected_spans: stats.rejected as i64,
            error_message: format!("{} spans had an invalid trace or span id", stats.rejected),
        }),
    };
    match enc {
        Encoding::Protobuf => (
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            resp.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::to_vec(&resp).unwrap_or_default(),
        )
            .into_response(),
    }
}

/// OTLP/HTTP error body: a `google.rpc.Status` in the request's encoding.
fn error(enc: Encoding, code: StatusCode, message: String) -> Response {
    let status = RpcStatus {
        code: if code == StatusCode::PAYLOAD_TOO_LARGE {
            8
        } else {
            3
        },
        message,
    };
    match enc {
        Encoding::Protobuf => (
            code,
            [(header::CONTENT_TYPE, "application/x-protobuf")],
            status.encode_to_vec(),
        )
            .into_response(),
        Encoding::Json => (
            code,
            [(header::CONTENT_TYPE, "application/json")],
            serde_json::json!({"code": status.code, "message": status.message}).to_string(),
        )
            .into_response(),
    }
}

/// `google.rpc.Status` (code 1, message 2; details omitted), which OTLP/HTTP error bodies use.
#[derive(Clone, PartialEq, prost::Message)]
struct RpcStatus {
    #[prost(int32, tag = "1")]
    code: i32,
    #[prost(string, tag = "2")]
    message: String,
}
