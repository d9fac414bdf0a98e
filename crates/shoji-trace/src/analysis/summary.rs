//! Where the time went: total and self time grouped by operation, `subsystem` and `source`.

use std::collections::HashMap;

use serde::Serialize;

use super::self_times;
use crate::model::Trace;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Group {
    /// The grouping value: `service: span name` for operations, else the attribute's value
    /// (`(none)` when spans lack it).
    pub key: String,
    pub count: u64,
    /// Sum of span durations (overlapping spans both count).
    pub total_ns: u64,
    /// Sum of self times: time in these spans not covered by a child.
    pub self_ns: u64,
    pub max_ns: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub trace_id: String,
    pub duration_ns: u64,
    pub span_count: usize,
    /// Hot spots first: sorted by self time, then total time.
    pub by_operation: Vec<Group>,
    pub by_subsystem: Vec<Group>,
    pub by_source: Vec<Group>,
}

pub fn summarize(trace: &Trace) -> Summary {
    let tree = trace.tree();
    let selfs = self_times(trace, &tree);
    let group = |key_of: &dyn Fn(usize) -> String| {
        let mut m: HashMap<String, Group> = HashMap::new();
        for (i, s) in trace.spans.iter().enumerate() {
            let key = key_of(i);
            let g = m.entry(key.clone()).or_insert(Group {
                key,
                count: 0,
                total_ns: 0,
                self_ns: 0,
                max_ns: 0,
            });
            g.count += 1;
            g.total_ns += s.duration_ns();
            g.self_ns += selfs[i];
            g.max_ns = g.max_ns.max(s.duration_ns());
        }
        let mut v: Vec<Group> = m.into_values().collect();
        v.sort_by(|a, b| (b.self_ns, b.total_ns, &a.key).cmp(&(a.self_ns, a.total_ns, &b.key)));
        v
    };
    let attr =
        |k: &'static str| move |i: usize| trace.spans[i].attr(k).unwrap_or_else(|| "(none)".into());
    Summary {
        trace_id: hex::encode(trace.trace_id),
        duration_ns: trace.duration_ns(),
        span_count: trace.spans.len(),
        by_operation: group(&|i| format!("{}: {}", trace.spans[i].service, trace.spans[i].name())),
        by_subsystem: group(&attr("subsystem")),
        by_source: group(&attr("source")),
    }
}
