//! SDK spans to OTLP, and the attribute stamping both sides need.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::transform::common::tonic::ResourceAttributesWithSchema;
use opentelemetry_proto::transform::trace::tonic::group_spans_by_resource_and_scope;
use opentelemetry_sdk::trace::SpanData;
use opentelemetry_sdk::Resource;

/// One OTLP request for a batch of finished SDK spans.
pub fn to_request(batch: Vec<SpanData>, resource: &Resource) -> ExportTraceServiceRequest {
    let res = ResourceAttributesWithSchema::from(resource);
    ExportTraceServiceRequest {
        resource_spans: group_spans_by_resource_and_scope(batch, &res),
    }
}

pub fn string_value(v: impl Into<String>) -> Option<AnyValue> {
    Some(AnyValue {
        value: Some(any_value::Value::StringValue(v.into())),
    })
}

/// Sets `key` to `value`, replacing whatever was there (identity the host stamps): the first
/// entry with that key gets the value, later ones go. Allocates nothing when the value is
/// already right (the agent stamps most of these keys itself).
pub fn set(attrs: &mut Vec<KeyValue>, key: &str, value: AnyValue) {
    set_with(attrs, key, |v| *v == value, || value.clone());
}

/// [`set`] for a string value, built only if it has to be.
pub fn set_str(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    set_with(
        attrs,
        key,
        |v| matches!(&v.value, Some(any_value::Value::StringValue(s)) if s == value),
        || string_value(value).unwrap_or_default(),
    );
}

fn set_with(
    attrs: &mut Vec<KeyValue>,
    key: &str,
    is_right: impl Fn(&AnyValue) -> bool,
    make: impl FnOnce() -> AnyValue,
) {
    let Some(first) = attrs.iter().position(|kv| kv.key == key) else {
        attrs.push(KeyValue {
            key: key.into(),
            value: Some(make()),
            ..Default::default()
        });
        return;
    };
    if !attrs[first].value.as_ref().is_some_and(&is_right) {
        attrs[first].value = Some(make());
    }
    if attrs[first + 1..].iter().any(|kv| kv.key == key) {
        let mut i = 0;
        attrs.retain(|kv| {
            i += 1;
            i <= first + 1 || kv.key != key
        });
    }
}

/// Sets `key` only where it is missing (defaults).
pub fn default(attrs: &mut Vec<KeyValue>, key: &str, value: &str) {
    if !attrs.iter().any(|kv| kv.key == key) {
        attrs.push(KeyValue {
            key: key.into(),
            value: string_value(value),
            ..Default::default()
        });
    }
}

/// Applies `f` to the attributes of every span in `req`.
pub fn for_each_span(
    req: &mut ExportTraceServiceRequest,
    mut f: impl FnMut(&mut opentelemetry_proto::tonic::trace::v1::Span),
) {
    for rs in &mut req.resource_spans {
        for ss in &mut rs.scope_spans {
            for span in &mut ss.spans {
                f(span);
            }
        }
    }
}

/// Number of spans in a request.
pub fn span_count(req: &ExportTraceServiceRequest) -> usize {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum()
}

/// The heap a decoded request holds, about (every `Vec` and `String` by its capacity): what the
/// pipeline's byte bound counts. Not the encoded size: a guest can make a frame whose decoded form
/// is dozens of times larger (an empty attribute is 2 bytes on the wire and ~64 in memory).
/// Destructures every message without `..`, so a field added to the OTLP schema fails to compile
/// here instead of going uncounted.
pub fn heap_size(req: &ExportTraceServiceRequest) -> usize {
    use opentelemetry_proto::tonic::common::v1::{
        ArrayValue, EntityRef, InstrumentationScope, KeyValueList,
    };
    use opentelemetry_proto::tonic::resource::v1::Resource;
    use opentelemetry_proto::tonic::trace::v1::span::{Event, Link};
    use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span, Status};

    fn vec<T>(v: &Vec<T>, each: impl Fn(&T) -> usize) -> usize {
        v.capacity() * std::mem::size_of::<T>() + v.iter().map(each).sum::<usize>()
    }
    fn kvs(v: &Vec<KeyValue>) -> usize {
        vec(v, |kv| {
            let KeyValue {
                key,
                value,
                key_strindex: _,
            } = kv;
            key.capacity() + value.as_ref().map_or(0, any)
        })
    }
    fn any(v: &AnyValue) -> usize {
        use any_value::Value;
        match &v.value {
            Some(Value::StringValue(s)) => s.capacity(),
            Some(Value::BytesValue(b)) => b.capacity(),
            Some(Value::ArrayValue(ArrayValue { values })) => vec(values, any),
            Some(Value::KvlistValue(KeyValueList { values })) => kvs(values),
            Some(Value::BoolValue(_))
            | Some(Value::IntValue(_))
            | Some(Value::DoubleValue(_))
            | Some(Value::StringValueStrindex(_))
            | None => 0,
        }
    }
    let resource = |r: &Resource| {
        let Resource {
            attributes,
            dropped_attributes_count: _,
            entity_refs,
        } = r;
        kvs(attributes)
            + vec(entity_refs, |e| {
                let EntityRef {
                    schema_url,
                    r#type,
                    id_keys,
                    description_keys,
                } = e;
                let strings = |v: &Vec<String>| vec(v, String::capacity);
                schema_url.capacity()
                    + r#type.capacity()
                    + strings(id_keys)
                    + strings(description_keys)
            })
    };
    let scope = |s: &InstrumentationScope| {
        let InstrumentationScope {
            name,
            version,
            attributes,
            dropped_attributes_count: _,
        } = s;
        name.capacity() + version.capacity() + kvs(attributes)
    };
    let event = |e: &Event| {
        let Event {
            time_unix_nano: _,
            name,
            attributes,
            dropped_attributes_count: _,
        } = e;
        name.capacity() + kvs(attributes)
    };
    let link = |l: &Link| {
        let Link {
            trace_id,
            span_id,
            trace_state,
            attributes,
            dropped_attributes_count: _,
            flags: _,
        } = l;
        trace_id.capacity() + span_id.capacity() + trace_state.capacity() + kvs(attributes)
    };
    let span = |s: &Span| {
        let Span {
            trace_id,
            span_id,
            trace_state,
            parent_span_id,
            flags: _,
            name,
            kind: _,
            start_time_unix_nano: _,
            end_time_unix_nano: _,
            attributes,
            dropped_attributes_count: _,
            events,
            dropped_events_count: _,
            links,
            dropped_links_count: _,
            status,
        } = s;
        trace_id.capacity()
            + span_id.capacity()
            + trace_state.capacity()
            + parent_span_id.capacity()
            + name.capacity()
            + kvs(attributes)
            + vec(events, event)
            + vec(links, link)
            + status
                .as_ref()
                .map_or(0, |Status { message, code: _ }| message.capacity())
    };
    let ExportTraceServiceRequest { resource_spans } = req;
    vec(resource_spans, |rs| {
        let ResourceSpans {
            resource: r,
            scope_spans,
            schema_url,
        } = rs;
        r.as_ref().map_or(0, resource)
            + schema_url.capacity()
            + vec(scope_spans, |ss| {
                let ScopeSpans {
                    scope: sc,
                    spans,
                    schema_url,
                } = ss;
                sc.as_ref().map_or(0, scope) + schema_url.capacity() + vec(spans, span)
            })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_replaces_and_default_keeps() {
        let mut a = vec![KeyValue {
            key: "source".into(),
            value: string_value("runtime"),
            ..Default::default()
        }];
        set(&mut a, "source", string_value("agent").unwrap());
        default(&mut a, "source", "x");
        default(&mut a, "subsystem", "boot");
        assert_eq!(a.len(), 2);
        assert_eq!(a[0].value, string_value("agent"));
    }

    #[test]
    fn set_leaves_one_entry_with_the_hosts_value() {
        let kv = |k: &str, v: &str| KeyValue {
            key: k.into(),
            value: string_value(v),
            ..Default::default()
        };
        // A guest that claims the key twice, around another attribute.
        let mut a = vec![
            kv("source", "runtime"),
            kv("x", "1"),
            kv("source", "hypervisor"),
        ];
        set_str(&mut a, "source", "agent");
        assert_eq!(a, vec![kv("source", "agent"), kv("x", "1")]);
        set(&mut a, "source", string_value("agent").unwrap());
        set(
            &mut a,
            "n",
            AnyValue {
                value: Some(any_value::Value::IntValue(3)),
            },
        );
        assert_eq!(a.len(), 3);
        set_str(&mut a, "x", "1");
        assert_eq!(a[1], kv("x", "1"));
    }

    #[test]
    fn heap_size_counts_what_decoding_allocates_not_the_wire_size() {
        use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
        use prost::Message;
        let req = |attrs: Vec<KeyValue>| ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![Span {
                        attributes: attrs,
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        // What a hostile guest can send: empty attributes, 2 bytes each on the wire.
        let wire = req(vec![KeyValue::default(); 10_000]).encode_to_vec();
        let decoded = ExportTraceServiceRequest::decode(wire.as_slice()).unwrap();
        let size = heap_size(&decoded);
        assert!(
            size > 20 * wire.len(),
            "{size} bytes from {} on the wire",
            wire.len()
        );
        // Strings count by what they hold, nested values too.
        let small = heap_size(&req(vec![]));
        let nested = req(vec![KeyValue {
            key: "k".repeat(1000),
            value: Some(AnyValue {
                value: Some(any_value::Value::ArrayValue(
                    opentelemetry_proto::tonic::common::v1::ArrayValue {
                        values: vec![string_value("v".repeat(5000)).unwrap()],
                    },
                )),
            }),
            ..Default::default()
        }]);
        assert!(heap_size(&nested) >= small + 6000);
    }
}
