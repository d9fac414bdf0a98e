//! Trace search shared by `shoji trace ls` and the query API: the summary filter the store
//! answers in SQL, plus tag conditions checked on the spans of each candidate trace.

use crate::model::Trace;
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

/// Matching traces, newest first, at most `q.limit`.
pub fn search(store: &Store, q: &TraceQuery) -> Result<Vec<TraceSummary>, StoreError> {
    if q.tags.is_empty() {
        return store.summaries(&q.filter, q.limit, 0);
    }
    let mut out = Vec::new();
    let mut offset = 0;
    while out.len() < q.limit && offset < MAX_TAG_CANDIDATES {
        let page = store.summaries(&q.filter, PAGE, offset)?;
        if page.is_empty() {
            break;
        }
        offset += page.len();
        for s in page {
            if let Some(t) = store.trace(&s.trace_id)? {
                if trace_has_tags(&t, &q.tags, q.filter.service.as_deref()) {
                    out.push(s);
                    if out.len() == q.limit {
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
