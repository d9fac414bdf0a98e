//! Text for `summary`, `critical-path` and `diff`.

use crate::analysis::critical_path::Segment;
use crate::analysis::diff::{OpDiff, TraceDiff};
use crate::analysis::summary::{Group, Summary};

use super::{fmt_duration, sanitize};

pub fn summary(s: &Summary, top: usize) -> String {
    let mut out = format!(
        "trace {}  {} spans  {}\n",
        s.trace_id,
        s.span_count,
        fmt_duration(s.duration_ns)
    );
    let d = s.duration_ns.max(1);
    for (title, groups) in [
        ("operation", &s.by_operation),
        ("subsystem", &s.by_subsystem),
        ("source", &s.by_source),
    ] {
        out.push_str(&format!(
            "\nby {title} (hot spots first)\n  {:>10} {:>6}  {:>10}  {:>5}  {:>10}  {}\n",
            "SELF",
            "SELF%",
            "TOTAL",
            "COUNT",
            "MAX",
            title.to_uppercase()
        ));
        for g in groups.iter().take(top) {
            out.push_str(&group_line(g, d));
        }
        if groups.len() > top {
            out.push_str(&format!("  ... {} more\n", groups.len() - top));
        }
    }
    out
}

fn group_line(g: &Group, d: u64) -> String {
    format!(
        "  {:>10} {:>5.1}%  {:>10}  {:>5}  {:>10}  {}\n",
        fmt_duration(g.self_ns),
        g.self_ns as f64 * 100.0 / d as f64,
        fmt_duration(g.total_ns),
        g.count,
        fmt_duration(g.max_ns),
        sanitize(&g.key)
    )
}

pub fn critical_path(trace_id: &str, total_ns: u64, path: &[Segment]) -> String {
    let on_path: u64 = path.iter().map(Segment::duration_ns).sum();
    let mut out =
        format!(
        "critical path of trace {trace_id}: {} segments, {} of {}\n  {:>10}  {:>10}  {:>6}  SPAN\n",
        path.len(),
        fmt_duration(on_path),
        fmt_duration(total_ns),
        "AT", "TIME", "SHARE"
    );
    let t0 = path.first().map(|s| s.start_ns).unwrap_or(0);
    for s in path {
        out.push_str(&format!(
            "  +{:>9}  {:>10}  {:>5.1}%  {}{} ({})\n",
            fmt_duration(s.start_ns - t0),
            fmt_duration(s.duration_ns()),
            s.duration_ns() as f64 * 100.0 / total_ns.max(1) as f64,
            "  ".repeat(s.depth.min(30)),
            sanitize(&s.name),
            sanitize(&s.service)
        ));
    }
    out
}

pub fn diff(d: &TraceDiff) -> String {
    let delta = d.duration_b_ns as i128 - d.duration_a_ns as i128;
    let mut out = format!(
        "A {}  {}\nB {}  {}\nduration change: {}\n",
        d.a,
        fmt_duration(d.duration_a_ns),
        d.b,
        fmt_duration(d.duration_b_ns),
        signed(delta)
    );
    out.push_str(&format!(
        "\nslower (+) or faster (-), largest change first\n  {:>11}  {:>10}  {:>10}  {:>9}  OPERATION\n",
        "CHANGE", "A", "B", "COUNT A/B"
    ));
    for o in &d.changed {
        out.push_str(&line(o));
    }
    for (title, list) in [("only in A", &d.only_in_a), ("only in B", &d.only_in_b)] {
        if !list.is_empty() {
            out.push_str(&format!("\n{title}\n"));
            for o in list {
                out.push_str(&line(o));
            }
        }
    }
    out
}

fn line(o: &OpDiff) -> String {
    format!(
        "  {:>11}  {:>10}  {:>10}  {:>9}  {}\n",
        signed(o.delta_ns()),
        fmt_duration(o.total_a_ns),
        fmt_duration(o.total_b_ns),
        format!("{}/{}", o.count_a, o.count_b),
        sanitize(&o.operation)
    )
}

fn signed(ns: i128) -> String {
    let sign = if ns < 0 { "-" } else { "+" };
    format!(
        "{sign}{}",
        fmt_duration(ns.unsigned_abs().min(u64::MAX as u128) as u64)
    )
}
