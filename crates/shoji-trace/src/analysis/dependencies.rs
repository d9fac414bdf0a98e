//! The service call graph (`/api/dependencies`, Jaeger's shape): for every span whose parent
//! is in the same trace and belongs to another service, one call from the parent's service to
//! the span's, counted over the traces that started in a time window.

use std::collections::{BTreeMap, HashMap};

use crate::model::{SpanId, Trace};
use crate::query::{self, SkippedTrace};
use crate::store::{Store, StoreError, SummaryFilter};

/// One edge of the graph, named as Jaeger names it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct DependencyLink {
    pub parent: String,
    pub child: String,
    #[serde(rename = "callCount")]
    pub call_count: u64,
}

/// Traces examined at most per request: the graph of a busy store's last day comes from its
/// newest traces, and the answer says when it stopped (see [`Dependencies::stopped_at`]).
pub const MAX_TRACES: usize = 10_000;

/// The graph and what it could not look at.
#[derive(Debug, Default)]
pub struct Dependencies {
    pub links: Vec<DependencyLink>,
    pub skipped: Vec<SkippedTrace>,
    /// Set when more traces started in the window than [`MAX_TRACES`].
    pub stopped_at: Option<usize>,
}

/// Cross-service parent/child calls of one trace, added into `counts`.
pub fn count_calls(trace: &Trace, counts: &mut BTreeMap<(String, String), u64>) {
    let service: HashMap<SpanId, &str> = trace
        .spans
        .iter()
        .map(|s| (s.span_id, s.service.as_str()))
        .collect();
    for s in &trace.spans {
        let Some(parent) = s.parent_id.and_then(|p| service.get(&p)) else {
            continue;
        };
        if *parent != s.service {
            *counts
                .entry((parent.to_string(), s.service.clone()))
                .or_default() += 1;
        }
    }
}

/// The call graph of the traces that started in `[start_ns, end_ns]`, newest first, at most
/// `bound` traces.
pub fn dependencies(
    store: &Store,
    start_ns: u64,
    end_ns: u64,
    bound: usize,
) -> Result<Dependencies, StoreError> {
    let filter = SummaryFilter {
        start_min_ns: Some(start_ns),
        start_max_ns: Some(end_ns),
        ..SummaryFilter::default()
    };
    let mut out = Dependencies::default();
    let mut counts = BTreeMap::new();
    let mut offset = 0;
    loop {
        if offset >= bound {
            if !store.summaries(&filter, 1, offset)?.is_empty() {
                out.stopped_at = Some(offset);
            }
            break;
        }
        let page = store.summaries(&filter, 200.min(bound - offset), offset)?;
        if page.is_empty() {
            break;
        }
        offset += page.len();
        for s in page {
            if let Some(t) = query::load_for_search(store, &s.trace_id, &mut out.skipped)? {
                count_calls(&t, &mut counts);
            }
        }
    }
    out.links = counts
        .into_iter()
        .map(|((parent, child), call_count)| DependencyLink {
            parent,
            child,
            call_count,
        })
        .collect();
    Ok(out)
}
