//! Differences between two traces, by operation (`service: span name`): what got slower or
//! faster, and what happened in only one of them.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::model::Trace;

#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct OpDiff {
    pub operation: String,
    pub count_a: u64,
    pub count_b: u64,
    /// Summed span durations in A and in B.
    pub total_a_ns: u64,
    pub total_b_ns: u64,
}

impl OpDiff {
    pub fn delta_ns(&self) -> i128 {
        self.total_b_ns as i128 - self.total_a_ns as i128
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct TraceDiff {
    pub a: String,
    pub b: String,
    pub duration_a_ns: u64,
    pub duration_b_ns: u64,
    /// Operations in both, largest absolute change first.
    pub changed: Vec<OpDiff>,
    pub only_in_a: Vec<OpDiff>,
    pub only_in_b: Vec<OpDiff>,
}

pub fn diff(a: &Trace, b: &Trace) -> TraceDiff {
    let mut ops: BTreeMap<String, OpDiff> = BTreeMap::new();
    for (t, is_a) in [(a, true), (b, false)] {
        for s in &t.spans {
            let key = format!("{}: {}", s.service, s.name());
            let e = ops.entry(key.clone()).or_insert(OpDiff {
                operation: key,
                count_a: 0,
                count_b: 0,
                total_a_ns: 0,
                total_b_ns: 0,
            });
            if is_a {
                e.count_a += 1;
                e.total_a_ns += s.duration_ns();
            } else {
                e.count_b += 1;
                e.total_b_ns += s.duration_ns();
            }
        }
    }
    let (mut changed, mut only_in_a, mut only_in_b) = (Vec::new(), Vec::new(), Vec::new());
    for d in ops.into_values() {
        match (d.count_a, d.count_b) {
            (_, 0) => only_in_a.push(d),
            (0, _) => only_in_b.push(d),
            _ => changed.push(d),
        }
    }
    changed.sort_by_key(|d| std::cmp::Reverse(d.delta_ns().unsigned_abs()));
    TraceDiff {
        a: hex::encode(a.trace_id),
        b: hex::encode(b.trace_id),
        duration_a_ns: a.duration_ns(),
        duration_b_ns: b.duration_ns(),
        changed,
        only_in_a,
        only_in_b,
    }
}
