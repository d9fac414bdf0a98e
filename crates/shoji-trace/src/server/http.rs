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

/// What a span receiver's handler gets: the store and the request size limit.
#[derive(Clone)]
pub(super) struct Ctx {
    pub(super) store: Store,
    pub(super) max: usize,
}

/// A span receiver's routes: `POST path` to `handler`, a body over `max_request_bytes` refused
/// with 413 before it is read whole. The `Host` check is added by the caller, like on every
/// listener. The OTLP/HTTP and Zipkin receivers are built with it.
pub(super) fn receiver<H, T>(
    path: &str,
    handler: H,
    store: Store,
    max_request_bytes: usize,
) -> Router
where
    H: axum::handler::Handler<T, Ctx>,
    T: 'static,
{
    Router::new()
        .route(path, post(handler))
        .layer(DefaultBodyLimit::max(max_request_bytes))
        .with_state(Ctx {
            store,
            max: max_request_bytes,
        })
}

/// The OTLP/HTTP receiver's routes.
pub(super) fn router(store: Store, max_request_bytes: usize) -> Router {
    receiver("/v1/traces", export, store, max_request_bytes)
}

#[derive(Clone, Copy, PartialEq)]
enum Encoding {
    Protobuf,
    Json,
}

async fn export(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let Some(enc) = ctype.and_then(encoding) else {
        // No default: a web page can POST text/plain (or no type) cross-origin without a
        // preflight, and must not be able to write spans (docs/threat-model.md).
        return error(
            Encoding::Json,
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {}: use application/x-protobuf or application/json",
                ctype.map_or_else(|| "(none)".to_string(), |c| format!("{c:?}"))
            ),
        );
    };
    let body = match gunzip_if_asked(&headers, body, ctx.max) {
        Ok(b) => b,
        Err((code, msg)) => return error(enc, code, msg),
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

/// The body, decompressed when `Content-Encoding: gzip` says so. Bounded: a small gzip bomb
/// must not expand past the request limit.
pub(super) fn gunzip_if_asked(
    headers: &HeaderMap,
    body: Bytes,
    max: usize,
) -> Result<Bytes, (StatusCode, String)> {
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    if !gzip {
        return Ok(body);
    }
    let mut out = Vec::new();
    let d = flate2::read::GzDecoder::new(&body[..]);
    match d.take(max as u64 + 1).read_to_end(&mut out) {
        Ok(n) if n > max => Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("decompressed request exceeds the limit of {max} bytes"),
        )),
        Ok(_) => Ok(Bytes::from(out)),
        Err(e) => Err((StatusCode::BAD_REQUEST, format!("invalid gzip body: {e}"))),
    }
}

/// The media type of a `Content-Type`, without parameters, lowercase.
pub(super) fn media_type(ctype: &str) -> String {
    ctype
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase()
}

/// The encoding a `Content-Type` names: its media type (parameters such as `charset` ignored,
/// case-insensitive) must be one OTLP/HTTP defines.
fn encoding(ctype: &str) -> Option<Encoding> {
    match media_type(ctype).as_str() {
        "application/json" => Some(Encoding::Json),
        "application/x-protobuf" | "application/protobuf" => Some(Encoding::Protobuf),
        _ => None,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_otlp_media_types_are_accepted_with_or_without_parameters() {
        for (t, want) in [
            ("application/json", Some(Encoding::Json)),
            ("Application/JSON; charset=utf-8", Some(Encoding::Json)),
            ("application/x-protobuf", Some(Encoding::Protobuf)),
            ("application/protobuf ; foo=bar", Some(Encoding::Protobuf)),
        ] {
            assert!(encoding(t) == want, "{t}");
        }
        for t in [
            "text/plain",
            "application/x-www-form-urlencoded",
            "multipart/form-data; boundary=x",
            "application/jsonx",
            "",
        ] {
            assert!(encoding(t).is_none(), "{t} must be refused");
        }
    }
}
