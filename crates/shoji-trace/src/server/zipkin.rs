//! Zipkin v2 receiver: `POST /api/v2/spans` with a JSON list of spans (Zipkin's own
//! endpoint, port 9411), converted to OTLP ([`crate::formats::zipkin`]) and stored like any
//! other request. Zipkin's protobuf encoding is refused with 415 (JSON is what Zipkin's
//! reporters send by default).

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Router;

use super::http::{gunzip_if_asked, media_type, receiver, Ctx};
use crate::formats::zipkin;
use crate::store::Store;

/// The receiver's routes ([`receiver`]).
pub(super) fn router(store: Store, max_request_bytes: usize) -> Router {
    receiver("/api/v2/spans", spans, store, max_request_bytes)
}

async fn spans(State(ctx): State<Ctx>, headers: HeaderMap, body: Bytes) -> Response {
    let ctype = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    // Like the OTLP receiver: no default type, so a web page cannot post spans without a
    // preflight (text/plain and form types are refused).
    if ctype.map(media_type).as_deref() != Some("application/json") {
        return (
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!(
                "unsupported content type {}: this receiver takes Zipkin v2 JSON (application/json)",
                ctype.map_or_else(|| "(none)".to_string(), |c| format!("{c:?}"))
            ),
        )
            .into_response();
    }
    let body = match gunzip_if_asked(&headers, body, ctx.max) {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let spans = match zipkin::parse(&body) {
        Ok(s) => s,
        Err(e) => {
            let cause = std::error::Error::source(&e)
                .map(|c| format!(": {c}"))
                .unwrap_or_default();
            return (StatusCode::BAD_REQUEST, format!("{e}{cause}")).into_response();
        }
    };
    let converted = zipkin::to_otlp(spans);
    let skipped = converted.skipped.len();
    let store = ctx.store.clone();
    let rs = converted.resource_spans;
    match tokio::task::spawn_blocking(move || store.ingest_resource_spans(&rs)).await {
        Ok(Ok(_)) if skipped == 0 => StatusCode::ACCEPTED.into_response(),
        Ok(Ok(_)) => (
            StatusCode::BAD_REQUEST,
            format!(
                "{skipped} spans had ids that are not hex and were dropped, the others stored: {}",
                converted.skipped.join("; ")
            ),
        )
            .into_response(),
        Ok(Err(e)) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("cannot store spans: {e}"),
        )
            .into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("ingest task failed: {e}"),
        )
            .into_response(),
    }
}
