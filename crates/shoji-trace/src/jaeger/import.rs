//! Jaeger JSON to OTLP: `{"data": [trace...]}` (the UI's download/upload format, and the query
//! API's response), or a single trace object.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, ScopeSpans, Span, Status};

use super::{tag_to_kv, Envelope, JaegerError, JaegerTrace, Process, KINDS};

/// Parses Jaeger JSON into OTLP, one `ResourceSpans` per (trace, process).
pub fn to_otlp(text: &str) -> Result<Vec<ResourceSpans>, JaegerError> {
    let traces: Vec<JaegerTrace> = match serde_json::from_str::<Envelope<Vec<JaegerTrace>>>(text) {
        Ok(env) => env.data,
        Err(e) => match serde_json::from_str::<JaegerTrace>(text) {
            Ok(t) => vec![t],
            Err(_) => return Err(JaegerError::Json(e)),
        },
    };
    let mut out = Vec::new();
    for t in traces {
        let mut by_process: BTreeMap<String, Vec<Span>> = BTreeMap::new();
        for s in &t.spans {
            let trace_id = parse_id::<16>(if s.trace_id.is_empty() {
                &t.trace_id
            } else {
                &s.trace_id
            })
            .ok_or_else(|| JaegerError::TraceId(s.trace_id.clone()))?;
            let span_id =
                parse_id::<8>(&s.span_id).ok_or_else(|| JaegerError::SpanId(s.span_id.clone()))?;
            let parent = s
                .references
                .iter()
                .find(|r| r.ref_type.eq_ignore_ascii_case("CHILD_OF"))
                .or_else(|| s.references.first())
                .map(|r| {
                    parse_id::<8>(&r.span_id).ok_or_else(|| JaegerError::SpanId(r.span_id.clone()))
                })
                .transpose()?;
            let mut kind = 0;
            let mut status: Option<Status> = None;
            let mut attributes = Vec::new();
            for tag in &s.tags {
                match tag.key.as_str() {
                    "span.kind" => {
                        let v = tag.value.as_str().unwrap_or_default();
                        kind = KINDS
                            .iter()
                            .position(|k| *k == v && !k.is_empty())
                            .unwrap_or(0) as i32;
                    }
                    "otel.status_code" => {
                        let code = match tag.value.as_str() {
                            Some("OK") => 1,
                            Some("ERROR") => 2,
                            _ => 0,
                        };
                        status.get_or_insert_with(Status::default).code = code;
                    }
                    "otel.status_description" => {
                        status.get_or_insert_with(Status::default).message =
                            tag.value.as_str().unwrap_or_default().to_string();
                    }
                    // Derived from the status on export; keeping it would add an attribute.
                    "error" if tag.value == serde_json::Value::Bool(true) => {
                        let st = status.get_or_insert_with(Status::default);
                        if st.code == 0 {
                            st.code = 2;
                        }
                    }
                    "otel.scope.name" => {}
                    _ => attributes.push(tag_to_kv(tag)),
                }
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
            by_process
                .entry(s.process_id.clone())
                .or_default()
                .push(Span {
                    trace_id: trace_id.to_vec(),
                    span_id: span_id.to_vec(),
                    parent_span_id: parent.map(|p| p.to_vec()).unwrap_or_default(),
                    flags: s.flags,
                    name: s.operation_name.clone(),
                    kind,
                    start_time_unix_nano: start,
                    end_time_unix_nano: start.saturating_add(s.duration.saturating_mul(1000)),
                    attributes,
                    events,
                    status,
                    ..Span::default()
                });
        }
        for (pid, spans) in by_process {
            out.push(ResourceSpans {
                resource: Some(resource(t.processes.get(&pid))),
                scope_spans: vec![ScopeSpans {
                    spans,
                    ..ScopeSpans::default()
                }],
                schema_url: String::new(),
            });
        }
    }
    Ok(out)
}

fn resource(p: Option<&Process>) -> Resource {
    let mut attributes = vec![KeyValue {
        key: "service.name".into(),
        value: Some(AnyValue {
            value: Some(Value::StringValue(
                p.map(|p| p.service_name.clone())
                    .unwrap_or_else(|| "unknown_service".into()),
            )),
        }),
        ..KeyValue::default()
    }];
    if let Some(p) = p {
        attributes.extend(p.tags.iter().map(tag_to_kv));
    }
    Resource {
        attributes,
        ..Resource::default()
    }
}

/// Jaeger ids are hex of up to N bytes, sometimes without leading zeros.
fn parse_id<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.is_empty() || s.len() > 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let padded = format!("{s:0>width$}", width = 2 * N);
    hex::decode(padded).ok()?.try_into().ok()
}
