//! Jaeger's JSON model (as its query service and UI speak it), built from stored traces, and
//! read back by `shoji trace import`.

pub mod import;

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use serde::{Deserialize, Serialize};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::model::{any_value_text, span_id_hex, trace_id_hex, Trace};

/// The query API's response wrapper: `{data, total, limit, offset, errors}`.
#[derive(Debug, Serialize, Deserialize)]
pub struct Envelope<T> {
    pub data: T,
    #[serde(default)]
    pub total: usize,
    #[serde(default)]
    pub limit: usize,
    #[serde(default)]
    pub offset: usize,
    #[serde(default)]
    pub errors: Option<Vec<ApiError>>,
}

impl<T> Envelope<T> {
    pub fn ok(data: T) -> Self
    where
        T: HasLen,
    {
        let total = data.len_for_total();
        Envelope {
            data,
            total,
            limit: 0,
            offset: 0,
            errors: None,
        }
    }
}

/// How many items `total` reports.
pub trait HasLen {
    fn len_for_total(&self) -> usize;
}

impl<T> HasLen for Vec<T> {
    fn len_for_total(&self) -> usize {
        self.len()
    }
}

#[derive(Debug, Serialize, Deserialize)]
pub struct ApiError {
    pub code: u16,
    pub msg: String,
    #[serde(rename = "traceID", skip_serializing_if = "Option::is_none", default)]
    pub trace_id: Option<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JaegerTrace {
    #[serde(rename = "traceID")]
    pub trace_id: String,
    pub spans: Vec<JaegerSpan>,
    #[serde(default)]
    pub processes: BTreeMap<String, Process>,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct JaegerSpan {
    /// Empty in some files: the trace's id applies.
    #[serde(rename = "traceID", default)]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
    #[serde(default)]
    pub flags: u32,
    #[serde(rename = "operationName", default)]
    pub operation_name: String,
    #[serde(default)]
    pub references: Vec<Reference>,
    /// Microseconds since the Unix epoch.
    #[serde(rename = "startTime", default)]
    pub start_time: u64,
    /// Microseconds.
    #[serde(default)]
    pub duration: u64,
    #[serde(default)]
    pub tags: Vec<Tag>,
    #[serde(default)]
    pub logs: Vec<Log>,
    #[serde(rename = "processID", default)]
    pub process_id: String,
    #[serde(default)]
    pub warnings: Option<Vec<String>>,
    /// Older Jaeger JSON (one span with its process embedded) names the parent here instead
    /// of in `references`; read, never written.
    #[serde(rename = "parentSpanID", default, skip_serializing)]
    pub parent_span_id: Option<String>,
    #[serde(default, skip_serializing)]
    pub process: Option<Process>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Reference {
    #[serde(rename = "refType")]
    pub ref_type: String,
    #[serde(rename = "traceID")]
    pub trace_id: String,
    #[serde(rename = "spanID")]
    pub span_id: String,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Tag {
    pub key: String,
    #[serde(rename = "type", default)]
    pub kind: String,
    #[serde(default)]
    pub value: serde_json::Value,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Log {
    #[serde(default)]
    pub timestamp: u64,
    #[serde(default)]
    pub fields: Vec<Tag>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Process {
    #[serde(rename = "serviceName")]
    pub service_name: String,
    #[serde(default)]
    pub tags: Vec<Tag>,
}

/// Tags and attributes with a meaning in Jaeger's mapping to and from OTLP (the OpenTelemetry
/// Collector's Jaeger translator, which Jaeger itself uses).
pub(crate) const SCOPE_NAME: &str = "otel.scope.name";
pub(crate) const SCOPE_VERSION: &str = "otel.scope.version";
pub(crate) const STATUS_CODE: &str = "otel.status_code";
pub(crate) const STATUS_DESCRIPTION: &str = "otel.status_description";
pub(crate) const TRACE_STATE: &str = "w3c.tracestate";
/// Link attribute carrying the Jaeger reference type (`child_of`, `follows_from`).
pub(crate) const REF_TYPE: &str = "opentracing.ref_type";
/// Span attribute (a list of strings) holding Jaeger's span `warnings`.
pub(crate) const WARNINGS: &str = "@jaeger@warnings";

/// Jaeger's names for OTLP span kinds (index = OTLP enum value).
const KINDS: [&str; 6] = ["", "internal", "server", "client", "producer", "consumer"];

impl JaegerTrace {
    pub fn from_trace(trace: &Trace) -> JaegerTrace {
        // One process per distinct resource (service + its attributes), numbered p1, p2...
        let mut processes: BTreeMap<String, Process> = BTreeMap::new();
        let mut process_of: Vec<(*const _, String)> = Vec::new();
        let trace_id = trace_id_hex(&trace.trace_id);
        let mut spans = Vec::with_capacity(trace.spans.len());
        for s in &trace.spans {
            let key = std::sync::Arc::as_ptr(&s.context);
            let pid = match process_of.iter().find(|(k, _)| *k == key) {
                Some((_, pid)) => pid.clone(),
                None => {
                    let pid = format!("p{}", process_of.len() + 1);
                    let tags = s
                        .context
                        .resource
                        .as_ref()
                        .map(|r| {
                            r.attributes
                                .iter()
                                .filter(|kv| kv.key != "service.name")
                                .map(tag)
                                .collect()
                        })
                        .unwrap_or_default();
                    processes.insert(
                        pid.clone(),
                        Process {
                            service_name: s.service.clone(),
                            tags,
                        },
                    );
                    process_of.push((key, pid.clone()));
                    pid
                }
            };
            // Jaeger's order (the OpenTelemetry Collector's translator, which Jaeger uses):
            // scope, attributes, kind, status, error, status message, trace state.
            let mut tags: Vec<Tag> = Vec::with_capacity(s.span.attributes.len() + 4);
            if let Some(scope) = s
                .context
                .scope_spans
                .first()
                .and_then(|ss| ss.scope.as_ref())
                .filter(|sc| !sc.name.is_empty())
            {
                tags.push(str_tag(SCOPE_NAME, &scope.name));
                if !scope.version.is_empty() {
                    tags.push(str_tag(SCOPE_VERSION, &scope.version));
                }
            }
            let mut warnings = None;
            for kv in &s.span.attributes {
                if kv.key == WARNINGS {
                    warnings = Some(string_list(kv.value.as_ref()));
                } else {
                    tags.push(tag(kv));
                }
            }
            if let Some(kind) = KINDS.get(s.span.kind as usize).filter(|k| !k.is_empty()) {
                tags.push(str_tag("span.kind", kind));
            }
            if let Some(st) = &s.span.status {
                match st.code {
                    1 => tags.push(str_tag(STATUS_CODE, "OK")),
                    2 => {
                        tags.push(str_tag(STATUS_CODE, "ERROR"));
                        tags.push(Tag {
                            key: "error".into(),
                            kind: "bool".into(),
                            value: true.into(),
                        });
                    }
                    _ => {}
                }
                if !st.message.is_empty() {
                    tags.push(str_tag(STATUS_DESCRIPTION, &st.message));
                }
            }
            if !s.span.trace_state.is_empty() {
                tags.push(str_tag(TRACE_STATE, &s.span.trace_state));
            }
            let logs = s
                .span
                .events
                .iter()
                .map(|e| {
                    let mut fields = Vec::with_capacity(e.attributes.len() + 1);
                    if !e.name.is_empty() && !e.attributes.iter().any(|kv| kv.key == "event") {
                        fields.push(str_tag("event", &e.name));
                    }
                    fields.extend(e.attributes.iter().map(tag));
                    Log {
                        timestamp: e.time_unix_nano / 1000,
                        fields,
                    }
                })
                .collect();
            let references = references(s);
            spans.push(JaegerSpan {
                trace_id: trace_id.clone(),
                span_id: span_id_hex(&s.span_id),
                flags: s.span.flags & 0xff,
                operation_name: s.span.name.clone(),
                references,
                start_time: s.start_ns / 1000,
                duration: s.duration_ns() / 1000,
                tags,
                logs,
                process_id: pid,
                warnings,
                parent_span_id: None,
                process: None,
            });
        }
        JaegerTrace {
            trace_id,
            spans,
            processes,
            warnings: None,
        }
    }
}

/// The parent as `CHILD_OF` first, then every link, typed by its `opentracing.ref_type`
/// attribute (`FOLLOWS_FROM` unless it says `child_of`); a link to the parent itself only
/// changes the parent reference's type. As Jaeger does.
fn references(s: &crate::model::SpanRecord) -> Vec<Reference> {
    let trace_id = trace_id_hex(&s.trace_id);
    let mut refs = Vec::with_capacity(s.span.links.len() + 1);
    if let Some(p) = s.parent_id {
        refs.push(Reference {
            ref_type: "CHILD_OF".into(),
            trace_id: trace_id.clone(),
            span_id: span_id_hex(&p),
        });
    }
    for link in &s.span.links {
        let child_of = link
            .attributes
            .iter()
            .find(|kv| kv.key == REF_TYPE)
            .is_some_and(|kv| any_value_text(kv.value.as_ref()) == "child_of");
        let ref_type = if child_of { "CHILD_OF" } else { "FOLLOWS_FROM" };
        let link_trace = hex::encode(&link.trace_id);
        let link_span = hex::encode(&link.span_id);
        if s.parent_id.is_some_and(|p| link.span_id == p) && link_trace == trace_id {
            refs[0].ref_type = ref_type.into();
            continue;
        }
        refs.push(Reference {
            ref_type: ref_type.into(),
            trace_id: link_trace,
            span_id: link_span,
        });
    }
    refs
}

/// The strings of a list attribute (or the one string of a string attribute).
fn string_list(v: Option<&AnyValue>) -> Vec<String> {
    match v.and_then(|v| v.value.as_ref()) {
        Some(Value::ArrayValue(a)) => a.values.iter().map(|v| any_value_text(Some(v))).collect(),
        _ => vec![any_value_text(v)],
    }
}

fn str_tag(key: &str, value: &str) -> Tag {
    Tag {
        key: key.into(),
        kind: "string".into(),
        value: value.into(),
    }
}

fn tag(kv: &KeyValue) -> Tag {
    let (kind, value) = match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Value::BoolValue(b)) => ("bool", serde_json::Value::from(*b)),
        Some(Value::IntValue(i)) => ("int64", serde_json::Value::from(*i)),
        Some(Value::DoubleValue(d)) => ("float64", serde_json::Value::from(*d)),
        // Jaeger's JSON carries binary values as base64 (Go's encoding of a byte slice).
        Some(Value::BytesValue(b)) => ("binary", serde_json::Value::from(BASE64.encode(b))),
        Some(Value::StringValue(s)) => ("string", serde_json::Value::from(s.as_str())),
        _ => (
            "string",
            serde_json::Value::from(any_value_text(kv.value.as_ref())),
        ),
    };
    Tag {
        key: kv.key.clone(),
        kind: kind.into(),
        value,
    }
}

/// A Jaeger tag as an OTLP attribute.
pub(crate) fn tag_to_kv(t: &Tag) -> KeyValue {
    let value = match (t.kind.as_str(), &t.value) {
        ("bool", serde_json::Value::Bool(b)) => Value::BoolValue(*b),
        ("binary", serde_json::Value::String(s)) if BASE64.decode(s).is_ok() => {
            Value::BytesValue(BASE64.decode(s).unwrap_or_default())
        }
        ("int64", v) if v.as_i64().is_some() => Value::IntValue(v.as_i64().unwrap_or(0)),
        ("float64", v) if v.as_f64().is_some() => Value::DoubleValue(v.as_f64().unwrap_or(0.0)),
        (_, serde_json::Value::String(s)) => Value::StringValue(s.clone()),
        (_, serde_json::Value::Bool(b)) => Value::BoolValue(*b),
        (_, v) if v.is_i64() => Value::IntValue(v.as_i64().unwrap_or(0)),
        (_, v) if v.is_number() => Value::DoubleValue(v.as_f64().unwrap_or(0.0)),
        (_, v) => Value::StringValue(v.to_string()),
    };
    KeyValue {
        key: t.key.clone(),
        value: Some(AnyValue { value: Some(value) }),
        ..KeyValue::default()
    }
}
