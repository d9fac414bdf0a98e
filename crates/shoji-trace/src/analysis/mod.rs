//! Questions about one trace, or two: where the time went ([`summary`]), which chain of spans
//! set the trace's duration ([`critical_path`]), what changed between two runs ([`diff`]);
//! and one question about many: which services call which ([`dependencies`]).

pub mod critical_path;
pub mod dependencies;
pub mod diff;
pub mod summary;

use crate::model::{SpanTree, Trace};

/// Self time of every span: its duration minus the union of its children's intervals (clipped
/// to the span), so time where children overlap each other is not subtracted twice. A child's
/// interval runs to the end of its whole subtree: work a child started that outlives it (the
/// guest booting under a `vm.start` that returned once QEMU ran) is not the parent's own time.
pub fn self_times(trace: &Trace, tree: &SpanTree) -> Vec<u64> {
    let subtree_end = subtree_ends(trace, tree);
    trace
        .spans
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let mut iv: Vec<(u64, u64)> = tree.children[i]
                .iter()
                .map(|&c| {
                    (
                        trace.spans[c].start_ns.max(s.start_ns),
                        subtree_end[c].min(s.end_ns),
                    )
                })
                .filter(|(a, b)| a < b)
                .collect();
            iv.sort_unstable();
            let mut covered = 0;
            let mut cur: Option<(u64, u64)> = None;
            for (a, b) in iv {
                match cur {
                    Some((ca, cb)) if a <= cb => cur = Some((ca, cb.max(b))),
                    Some((ca, cb)) => {
                        covered += cb - ca;
                        cur = Some((a, b));
                    }
                    None => cur = Some((a, b)),
                }
            }
            if let Some((a, b)) = cur {
                covered += b - a;
            }
            s.duration_ns().saturating_sub(covered)
        })
        .collect()
}

/// When each span's subtree ends: the latest end among the span and all its descendants.
pub(crate) fn subtree_ends(trace: &Trace, tree: &SpanTree) -> Vec<u64> {
    let mut end: Vec<u64> = trace.spans.iter().map(|s| s.end_ns).collect();
    // Children come after their parents in the walk: fold ends upwards in reverse.
    for &(i, _) in tree.walk().iter().rev() {
        if let Some(p) = tree.parent[i] {
            end[p] = end[p].max(end[i]);
        }
    }
    end
}
