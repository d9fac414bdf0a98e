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
}
