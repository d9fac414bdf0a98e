//! Jaeger's JSON model (as its query service and UI speak it), built from stored traces, and
//! read back by `shoji trace import`.

pub mod import;

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::ResourceSpans;
use serde::{Deserialize, Serialize};

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;

use crate::model::{any_value_text, span_id_hex, trace_id_hex, SpanRecord, Trace};

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
        let trace_id = trace_id_hex(&trace.trace_id);
        let mut processes = Processes::default();
        let mut spans = Vec::with_capacity(trace.spans.len());
        for s in &trace.spans {
            let pid = format!("p{}", processes.of(s) + 1);
            let mut tags: Vec<Tag> = Vec::with_capacity(s.span.attributes.len() + 4);
            let warnings = span_tags(s, |key, value| tags.push(value.into_tag(key)));
            spans.push(JaegerSpan {
                trace_id: trace_id.clone(),
                span_id: span_id_hex(&s.span_id),
                flags: s.span.flags & 0xff,
                operation_name: s.span.name.clone(),
                references: references(s),
                start_time: s.start_ns / 1000,
                duration: s.duration_ns() / 1000,
                tags,
                logs: logs(s),
                process_id: pid,
                warnings,
                parent_span_id: None,
                process: None,
            });
        }
        JaegerTrace {
            trace_id,
            spans,
            processes: processes
                .list
                .into_iter()
                .enumerate()
                .map(|(i, p)| (format!("p{}", i + 1), p))
                .collect(),
            warnings: None,
        }
    }
}

/// Jaeger's processes: one per distinct resource and scope a span arrived with (the store
/// shares one `Arc` per distinct context), numbered in order of first use.
#[derive(Default)]
pub(crate) struct Processes {
    index: HashMap<*const ResourceSpans, usize>,
    pub(crate) list: Vec<Process>,
}

impl Processes {
    /// The index in `list` of the span's process, added on first sight.
    pub(crate) fn of(&mut self, s: &SpanRecord) -> usize {
        let key = Arc::as_ptr(&s.context);
        if let Some(&i) = self.index.get(&key) {
            return i;
        }
        let tags = s
            .context
            .resource
            .as_ref()
            .map(|r| {
                r.attributes
                    .iter()
                    .filter(|kv| kv.key != "service.name")
                    .map(|kv| TagValue::of(kv).into_tag(&kv.key))
                    .collect()
            })
            .unwrap_or_default();
        let i = self.list.len();
        self.list.push(Process {
            service_name: s.service.clone(),
            tags,
        });
        self.index.insert(key, i);
        i
    }
}

/// A tag's value as Jaeger's JSON carries it, borrowed from the span where it can be.
#[derive(Debug, Clone)]
pub(crate) enum TagValue<'a> {
    Str(Cow<'a, str>),
    Bool(bool),
    Int(i64),
    /// Written as `null` when not finite, as JSON has no NaN or infinity.
    Double(f64),
    /// Base64 text: Jaeger's JSON carries binary values as Go encodes a byte slice.
    Binary(String),
}

impl<'a> TagValue<'a> {
    /// An OTLP attribute's value; lists and maps become their display text.
    pub(crate) fn of(kv: &'a KeyValue) -> TagValue<'a> {
        match kv.value.as_ref().and_then(|v| v.value.as_ref()) {
            Some(Value::BoolValue(b)) => TagValue::Bool(*b),
            Some(Value::IntValue(i)) => TagValue::Int(*i),
            Some(Value::DoubleValue(d)) => TagValue::Double(*d),
            Some(Value::BytesValue(b)) => TagValue::Binary(BASE64.encode(b)),
            Some(Value::StringValue(s)) => TagValue::Str(Cow::Borrowed(s)),
            _ => TagValue::Str(Cow::Owned(any_value_text(kv.value.as_ref()))),
        }
    }

    /// Jaeger's tag `type`.
    pub(crate) fn kind(&self) -> &'static str {
        match self {
            TagValue::Str(_) => "string",
            TagValue::Bool(_) => "bool",
            TagValue::Int(_) => "int64",
            TagValue::Double(_) => "float64",
            TagValue::Binary(_) => "binary",
        }
    }

    fn into_tag(self, key: &str) -> Tag {
        Tag {
            key: key.into(),
            kind: self.kind().into(),
            value: match self {
                TagValue::Str(s) => s.into_owned().into(),
                TagValue::Bool(b) => b.into(),
                TagValue::Int(i) => i.into(),
                TagValue::Double(d) => d.into(),
                TagValue::Binary(b) => b.into(),
            },
        }
    }
}

impl Serialize for TagValue<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            TagValue::Str(v) => s.serialize_str(v),
            TagValue::Binary(v) => s.serialize_str(v),
            TagValue::Bool(b) => s.serialize_bool(*b),
            TagValue::Int(i) => s.serialize_i64(*i),
            TagValue::Double(d) if d.is_finite() => s.serialize_f64(*d),
            TagValue::Double(_) => s.serialize_unit(),
        }
    }
}

/// Calls `tag` with every tag of the span in Jaeger's order (the OpenTelemetry Collector's
/// translator, which Jaeger uses): scope, attributes, kind, status, error, status message,
/// trace state. Returns the span's warnings, which travel as an attribute in OTLP. The Jaeger
/// model and the viewer's compact form are both made by this, so they cannot differ.
pub(crate) fn span_tags<'a>(
    s: &'a SpanRecord,
    mut tag: impl FnMut(&'a str, TagValue<'a>),
) -> Option<Vec<String>> {
    let str_tag = |v: &'a str| TagValue::Str(Cow::Borrowed(v));
    if let Some(scope) = s
        .context
        .scope_spans
        .first()
        .and_then(|ss| ss.scope.as_ref())
        .filter(|sc| !sc.name.is_empty())
    {
        tag(SCOPE_NAME, str_tag(&scope.name));
        if !scope.version.is_empty() {
            tag(SCOPE_VERSION, str_tag(&scope.version));
        }
    }
    let mut warnings = None;
    for kv in &s.span.attributes {
        if kv.key == WARNINGS {
            warnings = Some(string_list(kv.value.as_ref()));
        } else {
            tag(&kv.key, TagValue::of(kv));
        }
    }
    if let Some(kind) = KINDS.get(s.span.kind as usize).filter(|k| !k.is_empty()) {
        tag("span.kind", str_tag(kind));
    }
    if let Some(st) = &s.span.status {
        match st.code {
            1 => tag(STATUS_CODE, str_tag("OK")),
            2 => {
                tag(STATUS_CODE, str_tag("ERROR"));
                tag("error", TagValue::Bool(true));
            }
            _ => {}
        }
        if !st.message.is_empty() {
            tag(STATUS_DESCRIPTION, str_tag(&st.message));
        }
    }
    if !s.span.trace_state.is_empty() {
        tag(TRACE_STATE, str_tag(&s.span.trace_state));
    }
    warnings
}

/// The span's events as Jaeger logs: the event name as an `event` field unless an attribute
/// is named so.
pub(crate) fn logs(s: &SpanRecord) -> Vec<Log> {
    s.span
        .events
        .iter()
        .map(|e| {
            let mut fields = Vec::with_capacity(e.attributes.len() + 1);
            if !e.name.is_empty() && !e.attributes.iter().any(|kv| kv.key == "event") {
                fields.push(TagValue::Str(Cow::Borrowed(&e.name)).into_tag("event"));
            }
            fields.extend(
                e.attributes
                    .iter()
                    .map(|kv| TagValue::of(kv).into_tag(&kv.key)),
            );
            Log {
                timestamp: e.time_unix_nano / 1000,
                fields,
            }
        })
        .collect()
}

/// The parent as `CHILD_OF` first, then every link, typed by its `opentracing.ref_type`
/// attribute (`FOLLOWS_FROM` unless it says `child_of`); a link to the parent itself only
/// changes the parent reference's type. As Jaeger does.
pub(crate) fn references(s: &SpanRecord) -> Vec<Reference> {
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
