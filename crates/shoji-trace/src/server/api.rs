//! The Jaeger-compatible query API (`/api/...`) in Jaeger's JSON model, for the viewer, for
//! Grafana's Jaeger data source and for scripts.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;

use crate::jaeger::{ApiError, Envelope, JaegerTrace};
use crate::query::{self, TraceQuery};
use crate::store::{Store, StoreError, SummaryFilter};
use crate::units::parse_duration;

pub(super) fn router(store: Store) -> Router {
    Router::new()
        .route("/api/services", get(services))
        .route(
            "/api/services/{service}/operations",
            get(service_operations),
        )
        .route("/api/operations", get(operations))
        .route("/api/traces", get(search))
        .route("/api/traces/{id}", get(trace))
        .route("/api/dependencies", get(dependencies))
        // Shoji's own analysis, for the viewer: same answers as the CLI, as JSON.
        .route("/api/analysis/search", get(search_summaries))
        .route("/api/analysis/summary/{id}", get(summary))
        .route("/api/analysis/critical-path/{id}", get(critical_path))
        .route("/api/analysis/diff/{a}/{b}", get(diff))
        .with_state(store.clone())
        .merge(
            Router::new()
                .route("/api/viewer/traces/{id}", get(super::viewer_api::trace))
                .with_state(super::viewer_api::ViewerState {
                    store,
                    cache: Default::default(),
                }),
        )
}

pub(super) fn fail(code: StatusCode, msg: String) -> Response {
    let env: Envelope<Option<()>> = Envelope {
        data: None,
        total: 0,
        limit: 0,
        offset: 0,
        errors: Some(vec![ApiError {
            code: code.as_u16(),
            msg,
            trace_id: None,
        }]),
    };
    (code, Json(env)).into_response()
}

/// Runs a store read off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, Response> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e))),
        Err(e) => Err(fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}

pub(super) use crate::query::error_chain;

fn ok<T: Serialize>(data: Vec<T>) -> Response {
    Json(Envelope::ok(data)).into_response()
}

async fn services(State(store): State<Store>) -> Response {
    match blocking(move || store.services()).await {
        Ok(s) => ok(s),
        Err(r) => r,
    }
}

async fn service_operations(State(store): State<Store>, Path(service): Path<String>) -> Response {
    match blocking(move || store.operations(&service)).await {
        Ok(ops) => {
            let mut names: Vec<String> = ops.into_iter().map(|(n, _)| n).collect();
            names.dedup();
            ok(names)
        }
        Err(r) => r,
    }
}

#[derive(Serialize)]
struct Operation {
    name: String,
    #[serde(rename = "spanKind")]
    span_kind: &'static str,
}

async fn operations(
    State(store): State<Store>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let Some(service) = q.get("service").cloned() else {
        return fail(
            StatusCode::BAD_REQUEST,
            "parameter 'service' is required".into(),
        );
    };
    let kind_filter = q.get("spanKind").cloned().filter(|k| !k.is_empty());
    match blocking(move || store.operations(&service)).await {
        Ok(ops) => ok(ops
            .into_iter()
            .map(|(name, kind)| Operation {
                name,
                span_kind: ["", "internal", "server", "client", "producer", "consumer"]
                    .get(kind as usize)
                    .copied()
                    .unwrap_or(""),
            })
            .filter(|o| kind_filter.as_deref().is_none_or(|k| k == o.span_kind))
            .collect()),
        Err(r) => r,
    }
}

async fn trace(State(store): State<Store>, Path(id): Path<String>) -> Response {
    let shown = id.clone();
    let found = blocking(move || {
        let tid = match store.resolve_id(&id) {
            Ok(t) => t,
            Err(StoreError::Id(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        store.trace(&tid)
    })
    .await;
    match found {
        Ok(Some(t)) => ok(vec![JaegerTrace::from_trace(&t)]),
        Ok(None) => fail(StatusCode::NOT_FOUND, format!("trace {shown} not found")),
        Err(r) => r,
    }
}

/// Jaeger's search parameters: `start`/`end` in Unix microseconds, durations like `1.2s`,
/// `tags` as a JSON object (`{"k":"v"}`, as Jaeger UI sends it) or `k=v` pairs.
async fn search(
    State(store): State<Store>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let ids: Vec<String> = params
        .iter()
        .filter(|(n, _)| n == "traceID")
        .map(|(_, v)| v.clone())
        .collect();
    if !ids.is_empty() {
        let traces = blocking(move || {
            let mut out = Vec::new();
            for id in ids {
                if let Ok(tid) = store.resolve_id(&id) {
                    if let Some(t) = store.trace(&tid)? {
                        out.push(JaegerTrace::from_trace(&t));
                    }
                }
            }
            Ok(out)
        })
        .await;
        return match traces {
            Ok(t) => ok(t),
            Err(r) => r,
        };
    }
    let q = match search_query(&params) {
        Ok(q) => q,
        Err(msg) => return fail(StatusCode::BAD_REQUEST, msg),
    };
    let limit = q.limit;
    let found = blocking(move || {
        let mut found = query::search(&store, &q)?;
        let mut out = Vec::new();
        for s in &found.traces {
            if let Some(t) = query::load_for_search(&store, &s.trace_id, &mut found.skipped)? {
                out.push(JaegerTrace::from_trace(&t));
            }
        }
        Ok((out, found))
    })
    .await;
    match found {
        Ok((t, found)) => {
            let mut env = Envelope::ok(t);
            env.limit = limit;
            env.errors = search_errors(&found);
            Json(env).into_response()
        }
        Err(r) => r,
    }
}

/// Jaeger's `/api/dependencies?endTs=<Unix ms>&lookback=<ms>`: the service call graph of the
/// traces that started in `[endTs - lookback, endTs]` (defaults: now, one day).
async fn dependencies(
    State(store): State<Store>,
    Query(q): Query<HashMap<String, String>>,
) -> Response {
    let ms = |k: &str, default: u64| -> Result<u64, String> {
        match q.get(k).filter(|v| !v.is_empty()) {
            None => Ok(default),
            Some(v) => v
                .parse::<u64>()
                .map_err(|_| format!("parameter '{k}' must be milliseconds, got {v:?}")),
        }
    };
    let now_ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let (end, lookback) = match (ms("endTs", now_ms), ms("lookback", 24 * 3600 * 1000)) {
        (Ok(e), Ok(l)) => (e, l),
        (Err(m), _) | (_, Err(m)) => return fail(StatusCode::BAD_REQUEST, m),
    };
    let end_ns = end.saturating_mul(1_000_000);
    let start_ns = end.saturating_sub(lookback).saturating_mul(1_000_000);
    let found = blocking(move || {
        crate::analysis::dependencies::dependencies(
            &store,
            start_ns,
            end_ns,
            crate::analysis::dependencies::MAX_TRACES,
        )
    })
    .await;
    match found {
        Ok(d) => {
            let outcome = query::SearchOutcome {
                traces: Vec::new(),
                skipped: d.skipped,
                stopped_at: None,
            };
            let mut errors = search_errors(&outcome).unwrap_or_default();
            if let Some(n) = d.stopped_at {
                errors.push(ApiError {
                    code: StatusCode::PARTIAL_CONTENT.as_u16(),
                    msg: format!(
                        "the graph counts the newest {n} traces of the window only (its bound); shorten the lookback"
                    ),
                    trace_id: None,
                });
            }
            let mut env = Envelope::ok(d.links);
            env.errors = (!errors.is_empty()).then_some(errors);
            Json(env).into_response()
        }
        Err(r) => r,
    }
}

/// A search's skipped traces and bound, as Jaeger's `errors` entries beside the data: the
/// answer is still given, and says what it is missing.
fn search_errors(found: &query::SearchOutcome) -> Option<Vec<ApiError>> {
    let mut errors: Vec<ApiError> = found
        .skipped
        .iter()
        .map(|s| ApiError {
            code: StatusCode::INTERNAL_SERVER_ERROR.as_u16(),
            msg: format!("skipped: {}", s.reason),
            trace_id: Some(hex::encode(s.trace_id)),
        })
        .collect();
    if found.stopped_at.is_some() {
        errors.extend(found.notes().into_iter().last().map(|msg| ApiError {
            code: StatusCode::PARTIAL_CONTENT.as_u16(),
            msg,
            trace_id: None,
        }));
    }
    (!errors.is_empty()).then_some(errors)
}

/// The same search as `/api/traces`, answered with one summary per trace (id, start, end, span
/// count, root, services) instead of whole traces: what the viewer's result list needs, at a
/// size that does not grow with the traces.
async fn search_summaries(
    State(store): State<Store>,
    Query(params): Query<Vec<(String, String)>>,
) -> Response {
    let q = match search_query(&params) {
        Ok(q) => q,
        Err(msg) => return fail(StatusCode::BAD_REQUEST, msg),
    };
    match blocking(move || query::search(&store, &q)).await {
        Ok(found) => {
            let errors = search_errors(&found);
            let mut env = Envelope::ok(found.traces);
            env.errors = errors;
            Json(env).into_response()
        }
        Err(r) => r,
    }
}

fn search_query(params: &[(String, String)]) -> Result<TraceQuery, String> {
    let get = |k: &str| {
        params
            .iter()
            .find(|(n, v)| n == k && !v.is_empty())
            .map(|(_, v)| v.clone())
    };
    let micros = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|v| {
                v.parse::<u64>()
                    .map(|us| us.saturating_mul(1000))
                    .map_err(|_| format!("parameter '{k}' must be Unix microseconds, got {v:?}"))
            })
            .transpose()
    };
    let duration = |k: &str| -> Result<Option<u64>, String> {
        get(k)
            .map(|v| parse_duration(&v).map_err(|e| format!("parameter '{k}': {e}")))
            .transpose()
    };
    let limit = match get("limit").map(|l| l.parse::<usize>()) {
        None => 20,
        Some(Ok(l)) => l.clamp(1, 1500),
        Some(Err(_)) => return Err("parameter 'limit' must be a number".into()),
    };
    let mut tags = Vec::new();
    for raw in params
        .iter()
        .filter(|(n, _)| n == "tags" || n == "tag")
        .map(|(_, v)| v)
    {
        tags.extend(parse_tags(raw).ok_or_else(|| {
            format!("malformed tags {raw:?}: expected {{\"key\":\"value\"}} or key=value")
        })?);
    }
    Ok(TraceQuery {
        filter: SummaryFilter {
            service: get("service"),
            operation: get("operation").filter(|o| o != "all"),
            min_duration_ns: duration("minDuration")?,
            max_duration_ns: duration("maxDuration")?,
            start_min_ns: micros("start")?,
            start_max_ns: micros("end")?,
        },
        tags,
        limit,
    })
}

fn parse_tags(raw: &str) -> Option<Vec<(String, String)>> {
    let raw = raw.trim();
    if raw.starts_with('{') {
        let map: serde_json::Map<String, serde_json::Value> = serde_json::from_str(raw).ok()?;
        return Some(
            map.into_iter()
                .map(|(k, v)| {
                    let v = v
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| v.to_string());
                    (k, v)
                })
                .collect(),
        );
    }
    raw.split_whitespace().map(query::parse_tag).collect()
}

/// Loads a trace by id text; `Ok(None)` when there is no such trace.
async fn load(store: Store, id: String) -> Result<Option<crate::model::Trace>, Response> {
    blocking(move || {
        let tid = match store.resolve_id(&id) {
            Ok(t) => t,
            Err(StoreError::Id(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        store.trace(&tid)
    })
    .await
}

fn not_found(id: &str) -> Response {
    fail(StatusCode::NOT_FOUND, format!("trace {id} not found"))
}

async fn summary(State(store): State<Store>, Path(id): Path<String>) -> Response {
    match load(store, id.clone()).await {
        Ok(Some(t)) => {
            Json(Envelope::ok(vec![crate::analysis::summary::summarize(&t)])).into_response()
        }
        Ok(None) => not_found(&id),
        Err(r) => r,
    }
}

async fn critical_path(State(store): State<Store>, Path(id): Path<String>) -> Response {
    match load(store, id.clone()).await {
        Ok(Some(t)) => ok(crate::analysis::critical_path::critical_path(&t)),
        Ok(None) => not_found(&id),
        Err(r) => r,
    }
}

async fn diff(State(store): State<Store>, Path((a, b)): Path<(String, String)>) -> Response {
    let ta = match load(store.clone(), a.clone()).await {
        Ok(Some(t)) => t,
        Ok(None) => return not_found(&a),
        Err(r) => return r,
    };
    match load(store, b.clone()).await {
        Ok(Some(tb)) => {
            Json(Envelope::ok(vec![crate::analysis::diff::diff(&ta, &tb)])).into_response()
        }
        Ok(None) => not_found(&b),
        Err(r) => r,
    }
}
