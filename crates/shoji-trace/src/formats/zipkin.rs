//! Zipkin v2 JSON (a list of spans, as `POST /api/v2/spans` takes it and Zipkin's UI
//! downloads it) to OTLP, following the OpenTelemetry Collector's Zipkin translator: the local
//! endpoint's service is the resource's `service.name`; `kind` maps to the span kind;
//! annotations become events; tags become string attributes, except `error` (the status,
//! its value the message), `otel.status_code`/`otel.status_description`, `otel.scope.*` (the
//! scope) and `w3c.tracestate`; the remote endpoint becomes `peer.service`, `net.peer.ip` and
//! `net.peer.port`, the local endpoint's address `net.host.ip` and `net.host.port`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, ResourceSpans, Span, Status};
use serde::Deserialize;

use crate::jaeger::import::{parse_id, resource_spans};

/// One Zipkin v2 span (`zipkin2.Span`, as in zipkin-api's `zipkin2-api.yaml`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ZipkinSpan {
    pub trace_id: String,
    pub id: String,
    #[serde(default)]
    pub parent_id: Option<String>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    /// Microseconds since the Unix epoch.
    #[serde(default)]
    pub timestamp: Option<u64>,
    /// Microseconds.
    #[serde(default)]
    pub duration: Option<u64>,
    #[serde(default)]
    pub local_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub remote_endpoint: Option<Endpoint>,
    #[serde(default)]
    pub annotations: Vec<Annotation>,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    #[serde(default)]
    pub debug: Option<bool>,
    #[serde(default)]
    pub shared: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Endpoint {
    #[serde(default)]
    pub service_name: Option<String>,
    #[serde(default)]
    pub ipv4: Option<String>,
    #[serde(default)]
    pub ipv6: Option<String>,
    #[serde(default)]
    pub port: Option<u16>,
}

#[derive(Debug, Deserialize)]
pub struct Annotation {
    pub timestamp: u64,
    pub value: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ZipkinError {
    #[error("not a list of Zipkin v2 spans")]
    Json(#[source] serde_json::Error),
}

/// What an import made of Zipkin spans: OTLP, and the spans it left out (bad ids).
#[derive(Debug, Default)]
pub struct Converted {
    pub resource_spans: Vec<ResourceSpans>,
    pub skipped: Vec<String>,
}

/// Parses a Zipkin v2 JSON body (a list of spans).
pub fn parse(bytes: &[u8]) -> Result<Vec<ZipkinSpan>, ZipkinError> {
    serde_json::from_slice(bytes).map_err(ZipkinError::Json)
}

/// Spans of one (scope name, scope version).
type ScopeGroup = ((String, String), Vec<Span>);

/// Converts Zipkin spans to OTLP: one `ResourceSpans` per local service, one `ScopeSpans` per
/// scope, in first-seen order.
pub fn to_otlp(spans: Vec<ZipkinSpan>) -> Converted {
    let mut out = Converted::default();
    let mut by_service: Vec<(String, Vec<ScopeGroup>)> = Vec::new();
    for z in spans {
        let (Some(trace_id), Some(span_id)) = (parse_id::<16>(&z.trace_id), parse_id::<8>(&z.id))
        else {
            out.skipped.push(format!(
                "span {:?} of trace {:?}: ids are not hex (trace 16 or 32 digits, span 16)",
                z.id, z.trace_id
            ));
            continue;
        };
        let service = z
            .local_endpoint
            .as_ref()
            .and_then(|e| e.service_name.clone())
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "unknown_service".into());
        let (scope, span) = convert(z, trace_id, span_id);
        let i = match by_service.iter().position(|(s, _)| *s == service) {
            Some(i) => i,
            None => {
                by_service.push((service, Vec::new()));
                by_service.len() - 1
            }
        };
        let scopes = &mut by_service[i].1;
        match scopes.iter_mut().find(|(s, _)| *s == scope) {
            Some((_, v)) => v.push(span),
            None => scopes.push((scope, vec![span])),
        }
    }
    for (service, scopes) in by_service {
        let resource = Resource {
            attributes: vec![str_kv("service.name", &service)],
            ..Resource::default()
        };
        out.resource_spans.push(resource_spans(resource, scopes));
    }
    out
}

fn convert(z: ZipkinSpan, trace_id: [u8; 16], span_id: [u8; 8]) -> ((String, String), Span) {
    let kind = match z.kind.as_deref() {
        Some("SERVER") => 2,
        Some("CLIENT") => 3,
        Some("PRODUCER") => 4,
        Some("CONSUMER") => 5,
        _ => 0,
    };
    let mut scope = (String::new(), String::new());
    let mut trace_state = String::new();
    let mut error: Option<String> = None;
    let mut code: Option<i32> = None;
    let mut description: Option<String> = None;
    let mut attributes = Vec::with_capacity(z.tags.len() + 3);
    for (k, v) in z.tags {
        match k.as_str() {
            "otel.scope.name" | "otel.library.name" => scope.0 = v,
            "otel.scope.version" | "otel.library.version" => scope.1 = v,
            "w3c.tracestate" => trace_state = v,
            "error" => error = Some(v),
            "otel.status_code" => {
                code = Some(match v.to_ascii_uppercase().as_str() {
                    "OK" => 1,
                    "ERROR" => 2,
                    _ => 0,
                })
            }
            "otel.status_description" => description = Some(v),
            _ => attributes.push(str_kv(&k, &v)),
        }
    }
    let status = match (code, error) {
        (Some(c), _) => Some(Status {
            code: c,
            message: description.unwrap_or_default(),
        }),
        // Zipkin's `error` tag holds the message ("" or "true" when there is none).
        (None, Some(msg)) => Some(Status {
            code: 2,
            message: description.unwrap_or(if msg == "true" { String::new() } else { msg }),
        }),
        (None, None) => None,
    };
    if let Some(e) = &z.local_endpoint {
        if let Some(ip) = e.ipv4.as_ref().or(e.ipv6.as_ref()) {
            attributes.push(str_kv("net.host.ip", ip));
        }
        if let Some(p) = e.port.filter(|p| *p != 0) {
            attributes.push(int_kv("net.host.port", i64::from(p)));
        }
    }
    if let Some(e) = &z.remote_endpoint {
        if let Some(s) = e.service_name.as_ref().filter(|s| !s.is_empty()) {
            attributes.push(str_kv("peer.service", s));
        }
        if let Some(ip) = e.ipv4.as_ref().or(e.ipv6.as_ref()) {
            attributes.push(str_kv("net.peer.ip", ip));
        }
        if let Some(p) = e.port.filter(|p| *p != 0) {
            attributes.push(int_kv("net.peer.port", i64::from(p)));
        }
    }
    let start = z.timestamp.unwrap_or(0).saturating_mul(1000);
    let span = Span {
        trace_id: trace_id.to_vec(),
        span_id: span_id.to_vec(),
        trace_state,
        parent_span_id: z
            .parent_id
            .as_deref()
            .and_then(parse_id::<8>)
            .filter(|p| *p != [0; 8])
            .map(|p| p.to_vec())
            .unwrap_or_default(),
        name: z.name.unwrap_or_default(),
        kind,
        start_time_unix_nano: start,
        end_time_unix_nano: start.saturating_add(z.duration.unwrap_or(0).saturating_mul(1000)),
        attributes,
        events: z
            .annotations
            .into_iter()
            .map(|a| span::Event {
                time_unix_nano: a.timestamp.saturating_mul(1000),
                name: a.value,
                ..span::Event::default()
            })
            .collect(),
        status,
        ..Span::default()
    };
    (scope, span)
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

fn int_kv(key: &str, value: i64) -> KeyValue {
    KeyValue {
        key: key.into(),
        value: Some(AnyValue {
            value: Some(Value::IntValue(value)),
        }),
        ..KeyValue::default()
    }
}
