//! `GET /api/viewer/traces/{id}`: one trace in the compact, column-wise form the viewer reads.
//!
//! Jaeger's model repeats every tag key, type and trace id on every span: 100,000 spans are
//! about 55 MB of JSON, and parsing that alone took the browser seconds. Here strings and tag
//! values are sent once (`values`) and spans are columns of numbers, about a tenth of the size.
//! Each span also carries its self time from [`crate::analysis::self_times`], the function
//! `shoji trace summary` uses, so the viewer shows the CLI's numbers instead of computing its own.
//! The content is that of `/api/traces/{id}` (made by the same functions), which stays the
//! exchange format.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::api::{error_chain, fail};
use crate::analysis::self_times;
use crate::jaeger::{
    logs, references, span_tags, Envelope, Log, Process, Processes, Reference, TagValue,
};
use crate::model::{span_id_hex, trace_id_hex, SpanId, Trace, TraceId};
use crate::store::{Store, StoreError, TraceVersion};

type Fast = foldhash::fast::RandomState;

const HEX_DIGITS: &[u8; 16] = b"0123456789abcdef";

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ViewerTrace<'a> {
    #[serde(rename = "traceID")]
    trace_id: String,
    span_count: usize,
    /// Every distinct operation name, tag key and tag value, once; columns index into it.
    values: Vec<TagValue<'a>>,
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

/// A value's identity in the table: its JSON text tells "2" from 2 and true from "true", and
/// so does this, without writing the text.
#[derive(PartialEq, Eq, Hash)]
enum ValueKey<'a> {
    Str(&'a str),
    Owned(String),
    Bool(bool),
    Int(i64),
    Double(u64),
}

#[derive(Default)]
struct Interner<'a> {
    values: Vec<TagValue<'a>>,
    index: HashMap<ValueKey<'a>, u32, Fast>,
}

impl<'a> Interner<'a> {
    fn add(&mut self, v: TagValue<'a>) -> u32 {
        let key = match &v {
            TagValue::Str(Cow::Borrowed(s)) => ValueKey::Str(s),
            // Binary values are base64 strings in JSON, as the same text would be.
            TagValue::Str(Cow::Owned(s)) | TagValue::Binary(s) => ValueKey::Owned(s.clone()),
            TagValue::Bool(b) => ValueKey::Bool(*b),
            TagValue::Int(i) => ValueKey::Int(*i),
            TagValue::Double(d) => ValueKey::Double(d.to_bits()),
        };
        let next = self.values.len() as u32;
        let i = *self.index.entry(key).or_insert(next);
        if i == next {
            self.values.push(v);
        }
        i
    }

    fn add_str(&mut self, s: &'a str) -> u32 {
        self.add(TagValue::Str(Cow::Borrowed(s)))
    }
}

impl<'a> ViewerTrace<'a> {
    /// Made from the spans directly, with the functions that make `JaegerTrace::from_trace`
    /// (tags, processes, references, logs), so the content is that of `/api/traces/{id}`
    /// without building that model first: for 100,000 spans, its strings and tag objects
    /// were most of the answer's time (docs/benchmarks.md).
    pub(super) fn from_trace(trace: &'a Trace) -> ViewerTrace<'a> {
        let tree = trace.tree();
        let selfs = self_times(trace, &tree);
        let n = trace.spans.len();
        let trace_id = trace_id_hex(&trace.trace_id);
        let start_base = trace.start_ns() / 1000;
        let mut processes = Processes::default();
        let mut values = Interner::default();
        let mut v = ViewerTrace {
            trace_id,
            span_count: n,
            values: Vec::new(),
            processes: Vec::new(),
            span_ids: String::with_capacity(n * 16),
            parent: Vec::with_capacity(n),
            missing_parents: BTreeMap::new(),
            start_base,
            start: Vec::with_capacity(n),
            duration: Vec::with_capacity(n),
            self_time: Vec::with_capacity(n),
            name: Vec::with_capacity(n),
            process: Vec::with_capacity(n),
            tags: Vec::with_capacity(n * 4),
            tag_start: Vec::with_capacity(n + 1),
            links: BTreeMap::new(),
            logs: BTreeMap::new(),
            warnings: BTreeMap::new(),
        };
        let mut index: HashMap<SpanId, usize, Fast> =
            HashMap::with_capacity_and_hasher(n, Fast::default());
        for (i, s) in trace.spans.iter().enumerate() {
            index.insert(s.span_id, i);
        }
        for (i, s) in trace.spans.iter().enumerate() {
            for b in s.span_id {
                v.span_ids.push(HEX_DIGITS[usize::from(b >> 4)] as char);
                v.span_ids.push(HEX_DIGITS[usize::from(b & 15)] as char);
            }
            match s.parent_id.map(|p| (p, index.get(&p))) {
                None => v.parent.push(-1),
                Some((_, Some(&p))) => v.parent.push(p as i64),
                Some((p, None)) => {
                    v.parent.push(-1);
                    v.missing_parents.insert(i, span_id_hex(&p));
                }
            }
            v.start.push(s.start_ns / 1000 - start_base);
            v.duration.push(s.duration_ns() / 1000);
            v.self_time.push(selfs.get(i).copied().unwrap_or(0) / 1000);
            v.name.push(values.add_str(&s.span.name));
            v.process.push(processes.of(s) as u32);
            v.tag_start.push(v.tags.len() as u32);
            let warnings = span_tags(s, |key, value| {
                v.tags.push(values.add_str(key));
                v.tags.push(values.add(value));
            });
            // The parent is a column of its own; a span without links has no other reference.
            if !s.span.links.is_empty() {
                let parent = s.parent_id.map(|p| span_id_hex(&p));
                let links: Vec<Reference> = references(s)
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
            }
            if !s.span.events.is_empty() {
                v.logs.insert(i, logs(s));
            }
            if let Some(w) = warnings.filter(|w| !w.is_empty()) {
                v.warnings.insert(i, w);
            }
        }
        v.tag_start.push(v.tags.len() as u32);
        v.values = values.values;
        v.processes = processes.list;
        v
    }
}

/// What answering `/api/viewer/traces/{id}` can fail on (beyond an unknown id, a 404).
#[derive(Debug, thiserror::Error)]
enum ViewerTraceError {
    #[error("reading trace {id}")]
    Read {
        id: String,
        #[source]
        source: StoreError,
    },
    #[error("writing trace {id} as JSON")]
    Encode {
        id: String,
        #[source]
        source: serde_json::Error,
    },
}

/// The encoded answers of the traces opened last, by trace id and [`TraceVersion`], at most
/// [`ANSWER_CACHE_BYTES`] in all: opening a 100,000-span trace again, or a live trace's poll
/// while nothing arrived, is then a copy instead of reading, building and writing it again.
/// A trace that gains spans has a new version, so a cached answer is never a stale one.
#[derive(Default)]
pub(super) struct AnswerCache {
    /// Least recently used first.
    entries: Mutex<VecDeque<(TraceId, TraceVersion, Bytes)>>,
}

/// Enough for the answers of a few 100,000-span traces (some 6 MB each).
pub(super) const ANSWER_CACHE_BYTES: usize = 32 * 1024 * 1024;

impl AnswerCache {
    fn get(&self, id: &TraceId, version: TraceVersion) -> Option<Bytes> {
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        let at = entries.iter().position(|(i, _, _)| i == id)?;
        let hit = entries.remove(at)?;
        if hit.1 != version {
            return None;
        }
        let body = hit.2.clone();
        entries.push_back(hit);
        Some(body)
    }

    fn put(&self, id: TraceId, version: TraceVersion, body: Bytes) {
        if body.len() > ANSWER_CACHE_BYTES {
            return;
        }
        let mut entries = self.entries.lock().unwrap_or_else(|e| e.into_inner());
        entries.retain(|(i, _, _)| *i != id);
        entries.push_back((id, version, body));
        let mut total: usize = entries.iter().map(|(_, _, b)| b.len()).sum();
        while total > ANSWER_CACHE_BYTES {
            match entries.pop_front() {
                Some((_, _, b)) => total -= b.len(),
                None => break,
            }
        }
    }
}

/// The query server's state for this route.
#[derive(Clone)]
pub(super) struct ViewerState {
    pub(super) store: Store,
    pub(super) cache: Arc<AnswerCache>,
}

/// The trace's answer as JSON, `{data: [trace], total: 1, ...}` like every query answer;
/// `None` for an unknown id.
fn answer(state: &ViewerState, id: &str) -> Result<Option<Bytes>, ViewerTraceError> {
    let read = |source| ViewerTraceError::Read {
        id: id.to_string(),
        source,
    };
    let store = &state.store;
    let tid = match store.resolve_id(id) {
        Ok(t) => t,
        Err(StoreError::Id(_)) => return Ok(None),
        Err(e) => return Err(read(e)),
    };
    let Some(version) = store.version(&tid).map_err(read)? else {
        return Ok(None);
    };
    if let Some(body) = state.cache.get(&tid, version) {
        return Ok(Some(body));
    }
    let Some(trace) = store.trace(&tid).map_err(read)? else {
        return Ok(None);
    };
    let body = serde_json::to_vec(&Envelope::ok(vec![ViewerTrace::from_trace(&trace)]))
        .map(Bytes::from)
        .map_err(|source| ViewerTraceError::Encode {
            id: id.to_string(),
            source,
        })?;
    state.cache.put(tid, version, body.clone());
    Ok(Some(body))
}

pub(super) async fn trace(State(state): State<ViewerState>, Path(id): Path<String>) -> Response {
    let shown = id.clone();
    // Reading, building and writing are all CPU or SQLite work: off the async workers.
    match tokio::task::spawn_blocking(move || answer(&state, &id)).await {
        Ok(Ok(Some(body))) => ([(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Ok(Ok(None)) => fail(StatusCode::NOT_FOUND, format!("trace {shown} not found")),
        Ok(Err(e)) => fail(StatusCode::INTERNAL_SERVER_ERROR, error_chain(&e)),
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
        let n = v
            .values
            .iter()
            .filter(|x| matches!(x, TagValue::Str(s) if s == "n"))
            .count();
        assert_eq!(n, 1);
        assert!(v.links.is_empty(), "the parent is not repeated as a link");
    }

    fn kv(key: &str, v: any_value::Value) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: Some(AnyValue { value: Some(v) }),
            ..KeyValue::default()
        }
    }

    /// Every kind of tag Jaeger's model writes, the links and events: the compact form, made
    /// without that model, must say exactly what `/api/traces/{id}` says.
    #[test]
    fn the_compact_form_carries_what_the_jaeger_model_carries() {
        use any_value::Value as V;
        use opentelemetry_proto::tonic::common::v1::{ArrayValue, InstrumentationScope};
        use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
        use opentelemetry_proto::tonic::trace::v1::{ScopeSpans, Status};

        let context = Arc::new(ResourceSpans {
            resource: Some(opentelemetry_proto::tonic::resource::v1::Resource {
                attributes: vec![
                    kv("service.name", V::StringValue("svc".into())),
                    kv("host", V::StringValue("h1".into())),
                ],
                ..Default::default()
            }),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "lib".into(),
                    version: "1.2".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
        let mut a = rec(1, None, 100, 50);
        let mut b = rec(2, Some(1), 110, 20);
        a.context = context.clone();
        b.context = context;
        b.span.kind = 3;
        b.span.trace_state = "k=v".into();
        b.span.status = Some(Status {
            code: 2,
            message: "boom".into(),
        });
        b.span.attributes = vec![
            kv("s", V::StringValue("2".into())),
            kv("i", V::IntValue(2)),
            kv("d", V::DoubleValue(2.5)),
            kv("nan", V::DoubleValue(f64::NAN)),
            kv("t", V::BoolValue(true)),
            kv("bin", V::BytesValue(vec![0, 1, 2])),
            kv(
                "list",
                V::ArrayValue(ArrayValue {
                    values: vec![AnyValue {
                        value: Some(V::IntValue(7)),
                    }],
                }),
            ),
            kv(crate::jaeger::WARNINGS, V::StringValue("clock skew".into())),
        ];
        b.span.events = vec![Event {
            time_unix_nano: 115_000,
            name: "retry".into(),
            attributes: vec![kv("n", V::IntValue(1))],
            ..Default::default()
        }];
        b.span.links = vec![
            Link {
                trace_id: vec![9; 16],
                span_id: vec![9; 8],
                ..Default::default()
            },
            Link {
                trace_id: vec![1; 16],
                span_id: vec![1; 8],
                ..Default::default()
            },
        ];
        let t = Trace::new([1; 16], vec![a, b]);
        let jaeger = serde_json::to_value(crate::jaeger::JaegerTrace::from_trace(&t)).unwrap();
        let compact = serde_json::to_value(ViewerTrace::from_trace(&t)).unwrap();
        let values = compact["values"].as_array().unwrap();
        let tags = compact["tags"].as_array().unwrap();
        let starts = compact["tagStart"].as_array().unwrap();
        for (i, span) in jaeger["spans"].as_array().unwrap().iter().enumerate() {
            let (from, to) = (
                starts[i].as_u64().unwrap() as usize,
                starts[i + 1].as_u64().unwrap() as usize,
            );
            let pairs: Vec<(serde_json::Value, serde_json::Value)> = tags[from..to]
                .chunks(2)
                .map(|p| {
                    let at = |x: &serde_json::Value| values[x.as_u64().unwrap() as usize].clone();
                    (at(&p[0]), at(&p[1]))
                })
                .collect();
            let want: Vec<(serde_json::Value, serde_json::Value)> = span["tags"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| (t["key"].clone(), t["value"].clone()))
                .collect();
            assert_eq!(pairs, want, "span {i}'s tags");
            let name = compact["name"][i].as_u64().unwrap() as usize;
            assert_eq!(values[name], span["operationName"]);
            // The parent is its own column; every other reference is a link.
            let refs: Vec<&serde_json::Value> = span["references"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|r| r["spanID"] != "0101010101010101" || r["refType"] != "CHILD_OF")
                .collect();
            let links = &compact["links"][i.to_string()];
            assert_eq!(
                links.as_array().map(|l| l.iter().collect()),
                (!refs.is_empty()).then_some(refs)
            );
            let logs = &compact["logs"][i.to_string()];
            assert_eq!(logs.is_null(), span["logs"].as_array().unwrap().is_empty());
            if !logs.is_null() {
                assert_eq!(logs, &span["logs"]);
            }
            assert_eq!(compact["warnings"][i.to_string()], span["warnings"]);
        }
        assert_eq!(
            compact["processes"][0], jaeger["processes"]["p1"],
            "the resource's tags"
        );
        // "2" and 2 and 2.5 stay apart; NaN is null, as in Jaeger's JSON.
        assert!(values.contains(&serde_json::json!("2")));
        assert!(values.contains(&serde_json::json!(2)));
        assert!(values.contains(&serde_json::Value::Null));
        assert!(values.contains(&serde_json::json!("AAEC")));
    }

    fn version(n: i64) -> TraceVersion {
        TraceVersion::for_tests(n)
    }

    #[test]
    fn a_cached_answer_is_given_only_for_the_same_version_and_within_the_bound() {
        let cache = AnswerCache::default();
        cache.put([1; 16], version(1), Bytes::from_static(b"one"));
        assert_eq!(
            cache.get(&[1; 16], version(1)).as_deref(),
            Some(&b"one"[..])
        );
        assert!(
            cache.get(&[1; 16], version(2)).is_none(),
            "the trace gained spans"
        );
        assert!(
            cache.get(&[1; 16], version(1)).is_none(),
            "the stale answer is gone"
        );
        // Filling the cache drops the least recently used first.
        let big = Bytes::from(vec![0u8; ANSWER_CACHE_BYTES / 2]);
        cache.put([1; 16], version(1), big.clone());
        cache.put([2; 16], version(1), big.clone());
        assert!(cache.get(&[1; 16], version(1)).is_some());
        cache.put([3; 16], version(1), big.clone());
        assert!(cache.get(&[2; 16], version(1)).is_none());
        assert!(cache.get(&[1; 16], version(1)).is_some());
        assert!(cache.get(&[3; 16], version(1)).is_some());
        // An answer bigger than the whole cache is not kept.
        cache.put(
            [4; 16],
            version(1),
            Bytes::from(vec![0u8; ANSWER_CACHE_BYTES + 1]),
        );
        assert!(cache.get(&[4; 16], version(1)).is_none());
    }
}
