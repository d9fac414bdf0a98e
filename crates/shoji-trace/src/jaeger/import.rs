//! Jaeger JSON to OTLP, with the mapping Jaeger itself uses (the OpenTelemetry Collector's
//! Jaeger translator): the parent is the first `CHILD_OF` reference within the same trace;
//! every other reference becomes a link typed by `opentracing.ref_type`; `otel.scope.*` tags
//! become the scope, `w3c.tracestate` the trace state, `span.kind` and the status tags the
//! span's kind and status; `warnings` are kept as the `@jaeger@warnings` attribute; `binary`
//! tags are base64.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{
    any_value::Value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use super::{
    tag_to_kv, JaegerSpan, JaegerTrace, Process, KINDS, REF_TYPE, SCOPE_NAME, SCOPE_VERSION,
    STATUS_CODE, STATUS_DESCRIPTION, TRACE_STATE, WARNINGS,
};

/// What an import made of a Jaeger document: OTLP, and the spans it had to leave out.
#[derive(Debug, Default)]
pub struct Converted {
    pub resource_spans: Vec<ResourceSpans>,
    /// One line per span left out (an id Jaeger would refuse too), naming it.
    pub skipped: Vec<String>,
}

/// Converts Jaeger traces into OTLP, one `ResourceSpans` per (trace, process) with one
/// `ScopeSpans` per scope. A span whose ids Jaeger cannot parse (not hex, or too long) is
/// left out and named in `skipped`, not a reason to refuse the whole file.
pub fn to_otlp(traces: Vec<JaegerTrace>) -> Converted {
    let mut out = Converted::default();
    for mut t in traces {
        // Spans with their process embedded (older Jaeger JSON): give each a process id.
        for (i, s) in t.spans.iter_mut().enumerate() {
            if let Some(p) = s.process.take() {
                let pid = format!("embedded-{i}");
                t.processes.insert(pid.clone(), p);
                s.process_id = pid;
            }
        }
        // (process id, scope name, scope version) -> spans
        let mut groups: BTreeMap<String, BTreeMap<(String, String), Vec<Span>>> = BTreeMap::new();
        for s in t.spans {
            let tid_text = if s.trace_id.is_empty() {
                t.trace_id.clone()
            } else {
                s.trace_id.clone()
            };
            let Some(trace_id) = parse_id::<16>(&tid_text) else {
                out.skipped.push(format!(
                    "span {:?}: trace id {tid_text:?} is not 1 to 32 hex digits",
                    s.span_id
                ));
                continue;
            };
            let Some(span_id) = parse_id::<8>(&s.span_id) else {
                out.skipped.push(format!(
                    "span {:?} of trace {tid_text}: span id is not 1 to 16 hex digits",
                    s.span_id
                ));
                continue;
            };
            match convert(s, trace_id, span_id) {
                Ok((process, scope, span)) => groups
                    .entry(process)
                    .or_default()
                    .entry(scope)
                    .or_default()
                    .push(span),
                Err(msg) => out.skipped.push(format!(
                    "span {} of trace {tid_text}: {msg}",
                    hex::encode(span_id)
                )),
            }
        }
        for (pid, scopes) in groups {
            out.resource_spans
                .push(resource_spans(resource(t.processes.get(&pid)), scopes));
        }
    }
    out
}

/// One resource's spans, grouped by instrumentation scope `(name, version)`; an empty name is
/// no scope. Shared by the Jaeger and Zipkin imports.
pub(crate) fn resource_spans(
    resource: Resource,
    scopes: impl IntoIterator<Item = ((String, String), Vec<Span>)>,
) -> ResourceSpans {
    ResourceSpans {
        resource: Some(resource),
        scope_spans: scopes
            .into_iter()
            .map(|((name, version), spans)| ScopeSpans {
                scope: (!name.is_empty()).then(|| InstrumentationScope {
                    name,
                    version,
                    ..InstrumentationScope::default()
                }),
                spans,
                schema_url: String::new(),
            })
            .collect(),
        schema_url: String::new(),
    }
}

type Converted1 = (String, (String, String), Span);

fn convert(s: JaegerSpan, trace_id: [u8; 16], span_id: [u8; 8]) -> Result<Converted1, String> {
    let mut refs = Vec::with_capacity(s.references.len());
    for r in &s.references {
        let rt = if r.trace_id.is_empty() {
            Some(trace_id)
        } else {
            parse_id::<16>(&r.trace_id)
        };
        let (Some(rt), Some(rs)) = (rt, parse_id::<8>(&r.span_id)) else {
            return Err(format!(
                "reference to {}/{} is not hex",
                r.trace_id, r.span_id
            ));
        };
        refs.push((r.ref_type.eq_ignore_ascii_case("CHILD_OF"), rt, rs));
    }
    let parent = refs
        .iter()
        .find(|(child_of, rt, _)| *child_of && *rt == trace_id)
        .map(|(_, _, rs)| *rs)
        .or_else(|| {
            s.parent_span_id
                .as_deref()
                .and_then(parse_id::<8>)
                .filter(|p| *p != [0; 8])
        });
    let links = refs
        .iter()
        .filter(|(child_of, _, rs)| !(*child_of && Some(*rs) == parent))
        .map(|(child_of, rt, rs)| span::Link {
            trace_id: rt.to_vec(),
            span_id: rs.to_vec(),
            attributes: vec![str_kv(
                REF_TYPE,
                if *child_of {
                    "child_of"
                } else {
                    "follows_from"
                },
            )],
            ..span::Link::default()
        })
        .collect();

    let mut scope = (String::new(), String::new());
    let mut kind = 0;
    let mut trace_state = String::new();
    let mut error = false;
    let mut code: Option<&str> = None;
    let mut description: Option<String> = None;
    let mut attributes = Vec::with_capacity(s.tags.len());
    for tag in &s.tags {
        let text = || {
            tag.value
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| tag.value.to_string())
        };
        match tag.key.as_str() {
            SCOPE_NAME => scope.0 = text(),
            SCOPE_VERSION => scope.1 = text(),
            "span.kind" => {
                let v = text();
                kind = KINDS
                    .iter()
                    .position(|k| *k == v && !k.is_empty())
                    .unwrap_or(0) as i32;
            }
            TRACE_STATE => trace_state = text(),
            "error" if tag.value == serde_json::Value::Bool(true) => error = true,
            STATUS_CODE => {
                code = match text().to_ascii_uppercase().as_str() {
                    "OK" => Some("OK"),
                    "ERROR" => Some("ERROR"),
                    _ => Some(""),
                }
            }
            STATUS_DESCRIPTION => description = Some(text()),
            _ => attributes.push(tag_to_kv(tag)),
        }
    }
    // The error tag decides; otherwise otel.status_code; as the Collector's translator.
    let status = if error {
        Some(2)
    } else {
        code.map(|c| match c {
            "OK" => 1,
            "ERROR" => 2,
            _ => 0,
        })
    }
    .map(|code| Status {
        code,
        message: description.clone().unwrap_or_default(),
    });
    if status.is_none() {
        if let Some(d) = description {
            attributes.push(str_kv(STATUS_DESCRIPTION, &d));
        }
    }
    if let Some(w) = s.warnings.filter(|w| !w.is_empty()) {
        attributes.push(KeyValue {
            key: WARNINGS.into(),
            value: Some(AnyValue {
                value: Some(Value::ArrayValue(ArrayValue {
                    values: w
                        .into_iter()
                        .map(|w| AnyValue {
                            value: Some(Value::StringValue(w)),
                        })
                        .collect(),
                })),
            }),
            ..KeyValue::default()
        });
    }
    let events = s
        .logs
        .iter()
        .map(|l| {
            let mut name = String::new();
            let mut attributes = Vec::new();
            for f in &l.fields {
                if f.key == "event" && name.is_empty() {
                    name = f
                        .value
                        .as_str()
                        .map(str::to_owned)
                        .unwrap_or_else(|| f.value.to_string());
                } else {
                    attributes.push(tag_to_kv(f));
                }
            }
            span::Event {
                time_unix_nano: l.timestamp.saturating_mul(1000),
                name,
                attributes,
                dropped_attributes_count: 0,
            }
        })
        .collect();
    let start = s.start_time.saturating_mul(1000);
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state,
        parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
        flags: s.flags,
        name: s.operation_name,
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(s.duration.saturating_mul(1000)),
        attributes,
        events,
        links,
        status,
        ..Span::default()
    };
    Ok((s.process_id, scope, span))
}

fn str_kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(value.into())),
        }),
        ..KeyValue::default()
    }
}

fn resource(p: Option<&Process>) -> Resource {
    let mut attributes = vec![str_kv(
        "service.name",
        &p.map(|p| p.service_name.clone())
            .unwrap_or_else(|| "unknown_service".into()),
    )];
    if let Some(p) = p {
        attributes.extend(p.tags.iter().map(tag_to_kv));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// A Jaeger id: hex of up to N bytes, leading zeros optional (Jaeger zero-extends a 16-digit
/// trace id to 128 bits, and parses ids with Go's `ParseUint(s, 16, 64)` per 64-bit half).
pub(crate) fn parse_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty() || s.len() > 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>width$}", width = 2 * N);
    hex::decode(padded).ok()?.try_into().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn short_ids_are_zero_extended_and_non_hex_ones_refused() {
        assert_eq!(
            parse_id::<16>("1"),
            Some({
                let mut a = [0u8; 16];
                a[15] = 1;
                a
            })
        );
        assert_eq!(parse_id::<8>("abc").map(u64::from_be_bytes), Some(0xabc));
        assert_eq!(parse_id::<8>("trace-1"), None);
        assert_eq!(parse_id::<8>(&"f".repeat(17)), None);
    }
}
