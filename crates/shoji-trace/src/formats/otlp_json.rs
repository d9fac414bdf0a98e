//! OTLP JSON lines: one `TracesData` per line with hex ids, as the OpenTelemetry Collector's
//! file exporter writes them. Import also takes one pretty-printed `TracesData` document.

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, TracesData};

use super::FormatError;
use crate::model::Trace;

/// One line: all spans of the trace, grouped by the resource and scope they arrived with.
pub fn export(trace: &Trace) -> Result<String, FormatError> {
    let data = TracesData {
        resource_spans: group(trace),
    };
    serde_json::to_string(&data).map_err(FormatError::Serialise)
}

/// Spans regrouped under their original resource and scope, in first-seen order.
pub fn group(trace: &Trace) -> Vec<ResourceSpans> {
    let mut order: Vec<ResourceSpans> = Vec::new();
    let mut index: HashMap<*const ResourceSpans, usize> = HashMap::new();
    for s in &trace.spans {
        let key = std::sync::Arc::as_ptr(&s.context);
        let i = *index.entry(key).or_insert_with(|| {
            let mut rs = (*s.context).clone();
            if rs.scope_spans.is_empty() {
                rs.scope_spans.push(ScopeSpans::default());
            }
            order.push(rs);
            order.len() - 1
        });
        if let Some(ss) = order[i].scope_spans.first_mut() {
            ss.spans.push(s.span.clone());
        }
    }
    order
}

/// Every `TracesData` line of `text`; blank lines are skipped. A file that is one
/// pretty-printed document (not one per line) is accepted too.
pub fn import(text: &str) -> Result<Vec<ResourceSpans>, FormatError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<TracesData>(line) {
            Ok(data) => out.extend(data.resource_spans),
            Err(source) => {
                if n == 0 {
                    if let Ok(data) = serde_json::from_str::<TracesData>(text) {
                        return Ok(data.resource_spans);
                    }
                }
                return Err(FormatError::OtlpLine {
                    line: n + 1,
                    source,
                });
            }
        }
    }
    if out.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(out)
}
