//! `shoji trace ls`: one line per trace, newest first.

use crate::store::TraceSummary;

use super::{fmt_duration, fmt_time, sanitize};

pub fn ls(traces: &[TraceSummary]) -> String {
    let mut out = format!(
        "{:<32}  {:<23}  {:>10}  {:>6}  {:<28}  {}\n",
        "TRACE ID", "START (UTC)", "DURATION", "SPANS", "ROOT", "SERVICES"
    );
    for t in traces {
        let mut root = sanitize(&t.root_name);
        if !t.has_root {
            root = format!("{root} (no root yet)");
        }
        out.push_str(&format!(
            "{:<32}  {:<23}  {:>10}  {:>6}  {:<28}  {}\n",
            hex::encode(t.trace_id),
            fmt_time(t.start_ns),
            fmt_duration(t.duration_ns()),
            t.span_count,
            root,
            sanitize(&t.services.join(","))
        ));
    }
    out
}
