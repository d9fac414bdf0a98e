//! `GET /api/viewer/traces/{id}`: one trace in the compact, column-wise form the viewer reads.
//!
//! Jaeger's model repeats every tag key, type and trace id on every span: 100,000 spans are
//! about 55 MB of JSON, and parsing that alone took the browser seconds. Here strings and tag
//! values are sent once (`values`) and spans are columns of numbers, about a tenth of the size.
//! Each span also carries its self time from [`crate::analysis::self_times`], the function
//! `shoji trace summary` uses, so the viewer shows the CLI's numbers instead of computing its own.
//! The content is that of `/api/traces/{id}` (built from it), which stays the exchange format.

use std::collections::{BTreeMap, HashMap};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Serialize;
use serde_json::Value;

use super::api::{error_chain, fail};
use crate::analysis::self_times;
use crate::jaeger::{Envelope, JaegerTrace, Log, Process, Reference};
use crate::model::{span_id_hex, Trace};
use crate::store::{Store, StoreError};

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ViewerTrace {
    #[serde(rename = "traceID")]
    trace_id: String,
    span_count: usize,
    /// Every distinct operation name, tag key and tag value, once; columns index into it.
    values: Vec<Value>,
    processes: Vec<Process>,
    /// 16 hex digits per span, concatenated.
    span_ids: String,
    /// Index of the span's parent in these columns, as its `parent_span_id` names it (the
    /// viewer recovers cycles as the CLI does); -1 for none or for a parent not in the trace.
    parent: Vec<i64>,
    /// By span index: the parent's id where the parent is not (yet) in the trace.
    missing_parents: BTreeMap<usize, String>,
    /// Microseconds since the Unix epoch of the earliest span; `start` counts from it.
    start_base: u64,
    start: Vec<u64>,
    duration: Vec<u64>,
    self_time: Vec<u64>,
    /// Index into `values`.
    name: Vec<u32>,
    /// Index into `processes`.
    process: Vec<u32>,
    /// Every span's tags as `key, value` pairs of indices into `values`, one flat list (100,000
    /// small arrays cost the browser more to parse than one big one); span `i`'s pairs are
    /// `tags[tag_start[i]..tag_start[i + 1]]`.
    tags: Vec<u32>,
    tag_start: Vec<u32>,
    /// By span index, only for spans that have them: references other than the parent
    /// (links, in Jaeger's terms), events, warnings.
    links: BTreeMap<usize, Vec<Reference>>,
    logs: BTreeMap<usize, Vec<Log>>,
    warnings: BTreeMap<usize, Vec<String>>,
}

#[derive(Default)]
struct Interner {
    values: Vec<Value>,
    index: HashMap<String, u32>,
}

impl Interner {
    fn add(&mut self, v: Value) -> u32 {
        // The JSON text tells "2" from 2 and true from "true".
        let key = v.to_string();
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let i = self.values.len() as u32;
        self.values.push(v);
        self.index.insert(key, i);
        i
    }
}

impl ViewerTrace {
    pub(super) fn from_trace(trace: &Trace) -> ViewerTrace {
        let tree = trace.tree();
        let selfs = self_times(trace, &tree);
        let jaeger = JaegerTrace::from_trace(trace);
        let mut proc_index: HashMap<String, u32> = HashMap::new();
        let mut processes = Vec::new();
        for (pid, p) in jaeger.processes {
            proc_index.insert(pid, processes.len() as u32);
            processes.push(p);
        }
        let n = jaeger.spans.len();
        let start_base = jaeger.spans.iter().map(|s| s.start_time).min().unwrap_or(0);
        let mut v = ViewerTrace {
            trace_id: jaeger.trace_id,
            span_count: n,
            values: Vec::new(),
            processes,
            span_ids: String::with_capacity(n * 16),
            parent: Vec::with_capacity(n),
            missing_parents: BTreeMap::new(),
            start_base,
            start: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            self_time: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            process: Vec::with_capacity(n),
            tags: Vec::new(),
            tag_start: Vec::with_capacity(n + 1),
            links: BTreeMap::new(),
            logs: BTreeMap::new(),
            warnings: BTreeMap::new(),
        };
        let mut values = Interner::default();
        let index: HashMap<_, usize> = trace
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        // `JaegerTrace::from_trace` keeps the trace's span order, which `self_times` indexes.
        for (i, (s, rec)) in jaeger.spans.into_iter().zip(&trace.spans).enumerate() {
            v.span_ids.push_str(&s.span_id);
            let parent = rec.parent_id.map(|p| span_id_hex(&p));
            match rec.parent_id.map(|p| index.get(&p)) {
                None => v.parent.push(-1),
                Some(Some(&p)) => v.parent.push(p as i64),
                Some(None) => {
                    v.parent.push(-1);
                    v.missing_parents
                        .insert(i, parent.clone().unwrap_or_default());
                }
            }
            v.start.push(s.start_time - start_base);
            v.duration.push(s.duration);
            v.self_time.push(selfs.get(i).copied().unwrap_or(0) / 1000);
            v.name.push(values.add(Value::String(s.operation_name)));
            v.process
                .push(proc_index.get(&s.process_id).copied().unwrap_or(0));
            v.tag_start.push(v.tags.len() as u32);
            for t in s.tags {
                v.tags.push(values.add(Value::String(t.key)));
                v.tags.push(values.add(t.value));
            }
            let links: Vec<Reference> = s
                .references
                .into_iter()
                .filter(|r| {
                    !(r.ref_type == "CHILD_OF"
                        && r.trace_id == v.trace_id
                        && Some(&r.span_id) == parent.as_ref())
                })
                .collect();
            if !links.is_empty() {
                v.links.insert(i, links);
            }
            if !s.logs.is_empty() {
                v.logs.insert(i, s.logs);
            }
            if let Some(w) = s.warnings.filter(|w| !w.is_empty()) {
                v.warnings.insert(i, w);
            }
        }
        v.tag_start.push(v.tags.len() as u32);
        v.values = values.values;
        v
    }
}

pub(super) async fn trace(State(store): State<Store>, Path(id): Path<String>) -> Response {
    let shown = id.clone();
    let found = tokio::task::spawn_blocking(move || -> Result<Option<ViewerTrace>, StoreError> {
        let tid = match store.resolve_id(&id) {
            Ok(t) => t,
            Err(StoreError::Id(_)) => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(store.trace(&tid)?.map(|t| ViewerTrace::from_trace(&t)))
    })
    .await;
    match found {
        Ok(Ok(Some(t))) => Json(Envelope::ok(vec![t])).into_response(),
        Ok(Ok(None)) => fail(StatusCode::NOT_FOUND, format!("trace {shown} not found")),
        Ok(Err(e)) => fail(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("reading trace {shown}: {}", error_chain(&e)),
        ),
        Err(e) => fail(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

    use super::*;
    use crate::model::SpanRecord;

    fn rec(id: u8, parent: Option<u8>, start_us: u64, dur_us: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_id: parent.map(|p| [p; 8]),
            service: "svc".into(),
            start_ns: start_us * 1000,
            end_ns: (start_us + dur_us) * 1000,
            span: Span {
                name: format!("op-{id}"),
                attributes: vec![KeyValue {
                    key: "n".into(),
                    value: Some(AnyValue {
                        value: Some(any_value::Value::IntValue(2)),
                    }),
                    ..KeyValue::default()
                }],
                ..Span::default()
            },
            context: Arc::new(ResourceSpans::default()),
        }
    }

    #[test]
    fn columns_carry_the_clis_self_times_and_parents() {
        let t = Trace::new(
            [1; 16],
            vec![
                rec(1, None, 100, 50),
                rec(2, Some(1), 110, 20),
                rec(3, Some(9), 200, 5),
            ],
        );
        let v = ViewerTrace::from_trace(&t);
        assert_eq!(v.span_count, 3);
        assert_eq!(
            v.span_ids,
            "010101010101010102020202020202020303030303030303"
        );
        assert_eq!(v.parent, vec![-1, 0, -1]);
        assert_eq!(v.missing_parents[&2], "0909090909090909");
        assert_eq!(v.start_base, 100);
        assert_eq!(v.start, vec![0, 10, 100]);
        assert_eq!(v.duration, vec![50, 20, 5]);
        let tree = t.tree();
        let cli: Vec<u64> = self_times(&t, &tree).iter().map(|ns| ns / 1000).collect();
        assert_eq!(v.self_time, cli);
        assert_eq!(v.self_time, vec![30, 20, 5]);
        // One value per distinct string: "n" and 2 are sent once for all three spans.
        assert_eq!(v.tag_start, vec![0, 2, 4, 6]);
        assert_eq!(v.tags[0..2], v.tags[2..4]);
        let n = v.values.iter().filter(|x| x.as_str() == Some("n")).count();
        assert_eq!(n, 1);
        assert!(v.links.is_empty(), "the parent is not repeated as a link");
    }
}
