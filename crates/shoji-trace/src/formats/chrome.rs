//! Chrome trace events (`{"traceEvents": [...]}`), which Perfetto, speedscope and
//! chrome://tracing open. One process per service; concurrent spans go on separate threads
//! (tracks), because complete events on one thread must nest strictly.

use std::collections::BTreeMap;

use serde::Serialize;
use serde_json::{Map, Value};

use super::FormatError;
use crate::model::{any_value_text, span_id_hex, Trace};

#[derive(Serialize)]
struct Event {
    name: String,
    cat: String,
    ph: &'static str,
    /// Microseconds from the trace's start (fractions keep nanosecond resolution).
    ts: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    dur: Option<f64>,
    pid: usize,
    tid: usize,
    args: Map<String, Value>,
}

pub fn export(trace: &Trace) -> Result<String, FormatError> {
    let t0 = trace.start_ns();
    let mut pids: BTreeMap<&str, usize> = BTreeMap::new();
    // Per process, the open-span stack of each track: a span goes on the first track whose
    // innermost still-open span contains it, else on a new track.
    let mut tracks: BTreeMap<usize, Vec<Vec<(u64, u64)>>> = BTreeMap::new();
    let mut events = Vec::with_capacity(trace.spans.len() + 8);
    // `Trace::spans` is sorted by start, longest first on ties: parents precede children.
    for s in &trace.spans {
        let next = pids.len() + 1;
        let pid = *pids.entry(s.service.as_str()).or_insert(next);
        let stacks = tracks.entry(pid).or_default();
        let mut tid = None;
        for (i, stack) in stacks.iter_mut().enumerate() {
            while stack.last().is_some_and(|&(_, end)| end <= s.start_ns) {
                stack.pop();
            }
            if stack.last().is_none_or(|&(_, end)| s.end_ns <= end) {
                stack.push((s.start_ns, s.end_ns));
                tid = Some(i);
                break;
            }
        }
        let tid = tid.unwrap_or_else(|| {
            stacks.push(vec![(s.start_ns, s.end_ns)]);
            stacks.len() - 1
        }) + 1;
        let mut args = Map::new();
        args.insert("span_id".into(), span_id_hex(&s.span_id).into());
        if let Some(p) = s.parent_id {
            args.insert("parent_id".into(), span_id_hex(&p).into());
        }
        for kv in &s.span.attributes {
            args.insert(kv.key.clone(), any_value_text(kv.value.as_ref()).into());
        }
        events.push(Event {
            name: s.span.name.clone(),
            cat: s.source().unwrap_or_else(|| s.service.clone()),
            ph: "X",
            ts: (s.start_ns - t0.min(s.start_ns)) as f64 / 1000.0,
            dur: Some(s.duration_ns() as f64 / 1000.0),
            pid,
            tid,
            args,
        });
        for e in &s.span.events {
            let mut args = Map::new();
            for kv in &e.attributes {
                args.insert(kv.key.clone(), any_value_text(kv.value.as_ref()).into());
            }
            events.push(Event {
                name: e.name.clone(),
                cat: "event".into(),
                ph: "i",
                ts: e.time_unix_nano.saturating_sub(t0) as f64 / 1000.0,
                dur: None,
                pid,
                tid,
                args,
            });
        }
    }
    // Metadata events name the processes after services, so tools show "shoji-agent".
    for (service, pid) in &pids {
        let mut args = Map::new();
        args.insert("name".into(), (*service).into());
        events.push(Event {
            name: "process_name".into(),
            cat: String::new(),
            ph: "M",
            ts: 0.0,
            dur: None,
            pid: *pid,
            tid: 0,
            args,
        });
    }
    let doc = serde_json::json!({
        "traceEvents": events,
        "displayTimeUnit": "ms",
        "otherData": { "trace_id": hex::encode(trace.trace_id) },
    });
    serde_json::to_string(&doc).map_err(FormatError::Serialise)
}
