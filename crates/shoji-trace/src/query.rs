//! Trace search shared by `shoji trace ls` and the query API: the summary filter the store
//! answers in SQL, plus tag conditions checked on the spans of each candidate trace.

use crate::model::{Trace, TraceId};
use crate::store::{Store, StoreError, SummaryFilter, TraceSummary};

/// A search: summary conditions plus `key=value` tags (all must match, on one span or on
/// its resource).
#[derive(Debug, Clone, Default)]
pub struct TraceQuery {
    pub filter: SummaryFilter,
    pub tags: Vec<(String, String)>,
    pub limit: usize,
}

/// How many candidate summaries to fetch per round while tag conditions discard some.
const PAGE: usize = 200;
/// Give up after examining this many candidates for a tag search, so that a query for a tag
/// that matches nothing does not decode the whole store.
const MAX_TAG_CANDIDATES: usize = 20_000;

/// What a search found, and what it could not look at.
#[derive(Debug, Default)]
pub struct SearchOutcome {
    /// Matching traces, newest first, at most the query's limit.
    pub traces: Vec<TraceSummary>,
    /// Traces whose stored spans could not be decoded (a corrupt chunk): skipped, so that
    /// one bad trace does not fail every search, and reported.
    pub skipped: Vec<SkippedTrace>,
    /// Set when a tag search stopped at [`MAX_TAG_CANDIDATES`] before finding `limit`
    /// traces: older traces were not examined, so the answer may be incomplete.
    pub stopped_at: Option<usize>,
}

/// A trace a search skipped, and why.
#[derive(Debug, Clone)]
pub struct SkippedTrace {
    pub trace_id: TraceId,
    pub reason: String,
}

impl SearchOutcome {
    /// One line per thing the user should know about the answer (empty when complete).
    pub fn notes(&self) -> Vec<String> {
        let mut notes: Vec<String> = self
            .skipped
            .iter()
            .map(|s| format!("skipped trace {}: {}", hex::encode(s.trace_id), s.reason))
            .collect();
        if let Some(n) = self.stopped_at {
            notes.push(format!(
                "tag search stopped after examining {n} traces (its bound): older traces were not searched; narrow the search by time, service or operation"
            ));
        }
        notes
    }
}

/// Candidates examined by a tag search before it gives up (public for the notes and docs).
pub const TAG_SEARCH_BOUND: usize = MAX_TAG_CANDIDATES;

/// Loads a trace for a search: `Ok(None)` when it is gone or corrupt (then noted in `skipped`).
pub fn load_for_search(
    store: &Store,
    id: &TraceId,
    skipped: &mut Vec<SkippedTrace>,
) -> Result<Option<Trace>, StoreError> {
    match store.trace(id) {
        Ok(t) => Ok(t),
        Err(e @ StoreError::Corrupt { .. }) => {
            tracing::warn!(trace_id = %hex::encode(id), error = %error_chain(&e), "skipping a corrupt trace");
            skipped.push(SkippedTrace {
                trace_id: *id,
                reason: error_chain(&e),
            });
            Ok(None)
        }
        Err(e) => Err(e),
    }
}

pub(crate) use shoji_protocols::error_chain;

/// Matching traces, newest first, at most `q.limit`.
pub fn search(store: &Store, q: &TraceQuery) -> Result<SearchOutcome, StoreError> {
    search_bounded(store, q, MAX_TAG_CANDIDATES)
}

fn search_bounded(
    store: &Store,
    q: &TraceQuery,
    bound: usize,
) -> Result<SearchOutcome, StoreError> {
    if q.tags.is_empty() {
        return Ok(SearchOutcome {
            traces: store.summaries(&q.filter, q.limit, 0)?,
            ..SearchOutcome::default()
        });
    }
    let mut out = SearchOutcome::default();
    let mut offset = 0;
    while out.traces.len() < q.limit {
        if offset >= bound {
            // Only incomplete if something was left unexamined.
            if !store.summaries(&q.filter, 1, offset)?.is_empty() {
                out.stopped_at = Some(offset);
            }
            break;
        }
        let page = store.summaries(&q.filter, PAGE.min(bound - offset), offset)?;
        if page.is_empty() {
            break;
        }
        offset += page.len();
        for s in page {
            if let Some(t) = load_for_search(store, &s.trace_id, &mut out.skipped)? {
                if trace_has_tags(&t, &q.tags, q.filter.service.as_deref()) {
                    out.traces.push(s);
                    if out.traces.len() == q.limit {
                        break;
                    }
                }
            }
        }
    }
    Ok(out)
}

/// True if one span (of `service`, if given) carries every tag, as a span attribute, a
/// resource attribute, or (for `error=true`) an error status.
pub fn trace_has_tags(t: &Trace, tags: &[(String, String)], service: Option<&str>) -> bool {
    t.spans.iter().any(|s| {
        service.is_none_or(|sv| s.service == sv)
            && tags.iter().all(|(k, v)| {
                s.attr(k).is_some_and(|a| a == *v)
                    || (k == "error"
                        && v == "true"
                        && s.span.status.as_ref().is_some_and(|st| st.code == 2))
            })
    })
}

/// `k=v` (also `k:v`, as Jaeger's UI writes tags) into a pair.
pub fn parse_tag(text: &str) -> Option<(String, String)> {
    let (k, v) = text.split_once('=').or_else(|| text.split_once(':'))?;
    let k = k.trim();
    if k.is_empty() {
        return None;
    }
    Some((k.to_string(), v.trim().to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};

    fn store_with(n: u8) -> (tempfile::TempDir, Store) {
        let dir = tempfile::tempdir().expect("tempdir");
        let store = Store::open(dir.path()).expect("open");
        let spans = (1..=n)
            .map(|i| Span {
                trace_id: vec![i; 16],
                span_id: vec![i; 8],
                name: "op".into(),
                start_time_unix_nano: 1_000 * u64::from(i),
                end_time_unix_nano: 1_000 * u64::from(i) + 10,
                attributes: vec![KeyValue {
                    key: "k".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::StringValue(format!("v{i}"))),
                    }),
                    ..KeyValue::default()
                }],
                ..Span::default()
            })
            .collect();
        store
            .ingest_resource_spans(&[ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                ..ResourceSpans::default()
            }])
            .expect("ingest");
        (dir, store)
    }

    /// Issue 10: a tag search that gives up says so instead of answering "nothing found".
    #[test]
    fn a_tag_search_that_hits_its_bound_says_so() {
        let (_dir, store) = store_with(5);
        let q = TraceQuery {
            tags: vec![("k".into(), "v1".into())],
            limit: 10,
            ..TraceQuery::default()
        };
        // Newest first: v1 is the oldest, out of reach of a bound of 3.
        let cut = search_bounded(&store, &q, 3).expect("search");
        assert!(cut.traces.is_empty());
        assert_eq!(cut.stopped_at, Some(3));
        assert!(cut.notes()[0].contains("stopped after examining 3 traces"));
        let whole = search_bounded(&store, &q, 100).expect("search");
        assert_eq!(whole.traces.len(), 1);
        assert_eq!(whole.stopped_at, None, "a search that finished is complete");
        assert!(whole.notes().is_empty());
    }
}
