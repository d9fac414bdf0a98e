//! `shoji trace show`: the span tree with durations and a timeline bar per span.

use crate::model::{any_value_text, span_id_hex, Trace};

use super::{fmt_duration, fmt_time, sanitize, source_color, Color};

#[derive(Debug, Clone, Copy)]
pub struct ShowOptions {
    pub verbose: bool,
    pub color: Color,
    /// Width of the timeline bar in characters.
    pub bar_width: usize,
}

impl Default for ShowOptions {
    fn default() -> Self {
        ShowOptions {
            verbose: false,
            color: Color::Never,
            bar_width: 40,
        }
    }
}

pub fn show(trace: &Trace, opts: &ShowOptions) -> String {
    let t0 = trace.start_ns();
    let total = trace.duration_ns().max(1);
    let tree = trace.tree();
    let walk = tree.walk();
    let mut out = format!(
        "trace {}  {} spans  {}  started {} UTC\n",
        hex::encode(trace.trace_id),
        trace.spans.len(),
        fmt_duration(trace.duration_ns()),
        fmt_time(t0)
    );
    let orphans = tree
        .roots
        .iter()
        .filter(|&&r| trace.spans[r].parent_id.is_some())
        .count();
    if orphans > 0 {
        out.push_str(&format!(
            "({orphans} span(s) whose parent has not arrived are shown as roots)\n"
        ));
    }
    out.push_str(&legend(opts.color));
    let labels: Vec<String> = walk
        .iter()
        .map(|&(i, depth)| {
            let s = &trace.spans[i];
            format!("{}{}", "  ".repeat(depth.min(40)), sanitize(s.name()))
        })
        .collect();
    let label_width = labels
        .iter()
        .map(|l| l.chars().count())
        .max()
        .unwrap_or(0)
        .min(60);
    for (&(i, depth), label) in walk.iter().zip(&labels) {
        let s = &trace.spans[i];
        let source = s.source();
        let color = source_color(source.as_deref());
        let w = opts.bar_width as u128;
        let from = ((s.start_ns - t0) as u128 * w / total as u128) as usize;
        let to = (((s.end_ns - t0) as u128 * w).div_ceil(total as u128) as usize)
            .max(from + 1)
            .min(opts.bar_width);
        let from = from.min(to.saturating_sub(1));
        let bar = format!(
            "{}{}{}",
            " ".repeat(from),
            opts.color.paint(color, &"█".repeat(to - from)),
            " ".repeat(opts.bar_width - to)
        );
        let mut label: String = label.chars().take(label_width).collect();
        let pad = label_width - label.chars().count();
        label = format!("{}{}", opts.color.paint(color, &label), " ".repeat(pad));
        out.push_str(&format!(
            "{label}  {:>10}  |{bar}|  {}\n",
            fmt_duration(s.duration_ns()),
            sanitize(&s.service)
        ));
        if opts.verbose {
            let indent = "  ".repeat(depth.min(40) + 2);
            out.push_str(&format!(
                "{indent}span_id={} parent={} start=+{}\n",
                span_id_hex(&s.span_id),
                s.parent_id
                    .map(|p| span_id_hex(&p))
                    .unwrap_or_else(|| "-".into()),
                fmt_duration(s.start_ns - t0)
            ));
            if let Some(st) = s.span.status.as_ref().filter(|st| st.code != 0) {
                let code = if st.code == 2 { "ERROR" } else { "OK" };
                out.push_str(&format!(
                    "{indent}status={code} {}\n",
                    sanitize(&st.message)
                ));
            }
            for kv in &s.span.attributes {
                out.push_str(&format!(
                    "{indent}{}={}\n",
                    sanitize(&kv.key),
                    sanitize(&any_value_text(kv.value.as_ref()))
                ));
            }
            for e in &s.span.events {
                let attrs: Vec<String> = e
                    .attributes
                    .iter()
                    .map(|kv| format!("{}={}", kv.key, any_value_text(kv.value.as_ref())))
                    .collect();
                out.push_str(&format!(
                    "{indent}event +{} {} {}\n",
                    fmt_duration(e.time_unix_nano.saturating_sub(t0)),
                    sanitize(&e.name),
                    sanitize(&attrs.join(" "))
                ));
            }
        }
    }
    out
}

fn legend(color: Color) -> String {
    if color == Color::Never {
        return String::new();
    }
    let items: Vec<String> = ["runtime", "agent", "hypervisor"]
        .iter()
        .map(|s| color.paint(source_color(Some(s)), &format!("■ {s}")))
        .collect();
    format!("{}\n", items.join("  "))
}
