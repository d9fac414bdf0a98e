//! The critical path: the chain of spans that determined the trace's duration. Walking back
//! from the end of the root, the last child to finish is on the path, then the last child to
//! finish before that one started, and so on, recursively; the gaps between are the parent's
//! own time (the method of Jaeger's UI). A child finishes when its whole subtree does, so work
//! that outlives the span that started it stays on the path.

use serde::Serialize;

use crate::model::Trace;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Segment {
    /// Index into `Trace::spans`.
    pub span: usize,
    /// Hex span id, for clients that address spans by id (the viewer).
    pub span_id: String,
    pub name: String,
    pub service: String,
    pub depth: usize,
    pub start_ns: u64,
    pub end_ns: u64,
}

impl Segment {
    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }
}

/// Segments in time order, from the trace's main root (the root that ends last). Consecutive
/// segments of the same span are merged.
pub fn critical_path(trace: &Trace) -> Vec<Segment> {
    let tree = trace.tree();
    let Some(&root) = tree
        .roots
        .iter()
        .max_by_key(|&&r| (trace.spans[r].end_ns, trace.spans[r].duration_ns()))
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    // Explicit stack instead of recursion: a hostile trace can be 100,000 spans deep.
    // Frame: (span, depth, cursor, next child position in end-desc order).
    // A child counts until its whole subtree ends: `vm.start` returns once QEMU runs, but the
    // guest boot under it goes on and is what the rest of the run waits for.
    let ends = super::subtree_ends(trace, &tree);
    let sorted_children = |i: usize| {
        let mut c = tree.children[i].clone();
        c.sort_by_key(|&c| std::cmp::Reverse((ends[c], trace.spans[c].start_ns)));
        c
    };
    let root_span = &trace.spans[root];
    let mut stack = vec![(
        root,
        0usize,
        root_span.end_ns,
        sorted_children(root),
        0usize,
    )];
    while let Some(frame) = stack.last_mut() {
        let (i, depth, cursor, children, pos) = frame;
        let s = &trace.spans[*i];
        let mut descended = None;
        while *pos < children.len() {
            let c = children[*pos];
            *pos += 1;
            let cs = &trace.spans[c];
            if cs.start_ns >= *cursor {
                continue;
            }
            let c_end = ends[c].min(*cursor);
            if *cursor > c_end {
                out.push(seg(trace, *i, *depth, c_end, *cursor));
            }
            *cursor = cs.start_ns.max(s.start_ns);
            descended = Some((c, *depth + 1, c_end));
            break;
        }
        match descended {
            Some((c, d, end)) => stack.push((c, d, end, sorted_children(c), 0)),
            None => {
                if *cursor > s.start_ns {
                    out.push(seg(trace, *i, *depth, s.start_ns, *cursor));
                }
                stack.pop();
            }
        }
    }
    out.reverse();
    let mut merged: Vec<Segment> = Vec::with_capacity(out.len());
    for s in out {
        match merged.last_mut() {
            Some(last) if last.span == s.span && last.end_ns == s.start_ns => {
                last.end_ns = s.end_ns
            }
            _ => merged.push(s),
        }
    }
    merged
}

fn seg(trace: &Trace, i: usize, depth: usize, start: u64, end: u64) -> Segment {
    let s = &trace.spans[i];
    Segment {
        span: i,
        span_id: hex::encode(s.span_id),
        name: s.name().to_string(),
        service: s.service.clone(),
        depth,
        start_ns: start,
        end_ns: end,
    }
}
