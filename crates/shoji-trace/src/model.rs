//! The in-memory form of a stored trace: OTLP spans with their resource and scope, plus the
//! derived fields (ids, service, times) that analysis and rendering need.

use std::collections::HashMap;
use std::sync::Arc;

use opentelemetry_proto::tonic::common::v1::{any_value::Value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, Span};

/// A 16-byte trace id.
pub type TraceId = [u8; 16];
/// An 8-byte span id.
pub type SpanId = [u8; 8];

/// One span as stored: the OTLP span, and the resource/scope it arrived with.
#[derive(Debug, Clone)]
pub struct SpanRecord {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    /// `None` for a root span (empty `parent_span_id`).
    pub parent_id: Option<SpanId>,
    /// `service.name` of the resource, `unknown_service` when absent.
    pub service: String,
    pub start_ns: u64,
    /// Never before `start_ns`: a span claiming to end before it starts is clamped.
    pub end_ns: u64,
    pub span: Span,
    /// Resource and scope the span came with (`scope_spans[0].spans` is empty).
    pub context: Arc<ResourceSpans>,
}

impl SpanRecord {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns - self.start_ns
    }

    /// Value of a span attribute, else of a resource attribute, as display text.
    pub fn attr(&self, key: &str) -> Option<String> {
        find_attr(&self.span.attributes, key).or_else(|| {
            self.context
                .resource
                .as_ref()
                .and_then(|r| find_attr(&r.attributes, key))
        })
    }

    /// Kata's `source` attribute (runtime, agent, hypervisor), if any.
    pub fn source(&self) -> Option<String> {
        self.attr("source")
    }
}

/// All the spans of one trace that the store holds, in start order.
#[derive(Debug, Clone)]
pub struct Trace {
    pub trace_id: TraceId,
    pub spans: Vec<SpanRecord>,
}

impl Trace {
    pub fn new(trace_id: TraceId, mut spans: Vec<SpanRecord>) -> Self {
        spans.sort_by(|a, b| {
            (a.start_ns, std::cmp::Reverse(a.end_ns))
                .cmp(&(b.start_ns, std::cmp::Reverse(b.end_ns)))
        });
        Trace { trace_id, spans }
    }

    pub fn start_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.start_ns).min().unwrap_or(0)
    }

    pub fn end_ns(&self) -> u64 {
        self.spans.iter().map(|s| s.end_ns).max().unwrap_or(0)
    }

    pub fn duration_ns(&self) -> u64 {
        self.end_ns().saturating_sub(self.start_ns())
    }

    /// The tree: children of each span (indices into `spans`, in start order) and the roots.
    /// A span whose parent is not (yet) in the store is a root here, so a trace is viewable
    /// while incomplete and late parents are linked simply by being present at query time.
    pub fn tree(&self) -> SpanTree {
        let index: HashMap<SpanId, usize> = self
            .spans
            .iter()
            .enumerate()
            .map(|(i, s)| (s.span_id, i))
            .collect();
        let mut children = vec![Vec::new(); self.spans.len()];
        let mut roots = Vec::new();
        let mut parent = vec![None; self.spans.len()];
        for (i, s) in self.spans.iter().enumerate() {
            match s.parent_id.and_then(|p| index.get(&p)) {
                Some(&p) if p != i => {
                    children[p].push(i);
                    parent[i] = Some(p);
                }
                _ => roots.push(i),
            }
        }
        // A cycle (hostile or buggy input: a->b->a) would leave spans unreachable from any
        // root; make the first span of every unreachable group a root so nothing disappears.
        let mut reached = vec![false; self.spans.len()];
        let mut stack: Vec<usize> = roots.clone();
        while let Some(i) = stack.pop() {
            reached[i] = true;
            stack.extend(children[i].iter().copied());
        }
        for i in 0..self.spans.len() {
            if !reached[i] {
                if let Some(p) = parent[i] {
                    children[p].retain(|&c| c != i);
                }
                parent[i] = None;
                roots.push(i);
                let mut stack = vec![i];
                while let Some(j) = stack.pop() {
                    reached[j] = true;
                    stack.extend(children[j].iter().copied());
                }
            }
        }
        SpanTree {
            children,
            roots,
            parent,
        }
    }
}

/// Parent/child structure of a [`Trace`], by index into `Trace::spans`.
#[derive(Debug, Clone)]
pub struct SpanTree {
    pub children: Vec<Vec<usize>>,
    pub roots: Vec<usize>,
    pub parent: Vec<Option<usize>>,
}

impl SpanTree {
    /// Depth-first order with depth, roots in start order.
    pub fn walk(&self) -> Vec<(usize, usize)> {
        let mut out = Vec::with_capacity(self.parent.len());
        let mut stack: Vec<(usize, usize)> = self.roots.iter().rev().map(|&r| (r, 0)).collect();
        while let Some((i, d)) = stack.pop() {
            out.push((i, d));
            stack.extend(self.children[i].iter().rev().map(|&c| (c, d + 1)));
        }
        out
    }
}

pub fn find_attr(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs
        .iter()
        .find(|kv| kv.key == key)
        .map(|kv| any_value_text(kv.value.as_ref()))
}

/// An attribute value as plain text (strings unquoted, arrays and maps as JSON-like text).
pub fn any_value_text(v: Option<&AnyValue>) -> String {
    match v.and_then(|v| v.value.as_ref()) {
        None => String::new(),
        Some(Value::StringValue(s)) => s.clone(),
        Some(Value::BoolValue(b)) => b.to_string(),
        Some(Value::IntValue(i)) => i.to_string(),
        Some(Value::DoubleValue(d)) => d.to_string(),
        Some(Value::BytesValue(b)) => hex::encode(b),
        // Profiles-only dictionary reference; traces never carry it, so show the index.
        Some(Value::StringValueStrindex(i)) => format!("strindex:{i}"),
        Some(Value::ArrayValue(a)) => {
            let items: Vec<String> = a.values.iter().map(|v| any_value_text(Some(v))).collect();
            format!("[{}]", items.join(", "))
        }
        Some(Value::KvlistValue(kv)) => {
            let items: Vec<String> = kv
                .values
                .iter()
                .map(|kv| format!("{}={}", kv.key, any_value_text(kv.value.as_ref())))
                .collect();
            format!("{{{}}}", items.join(", "))
        }
    }
}

/// `service.name` of a resource-spans context.
pub fn service_name(rs: &ResourceSpans) -> String {
    rs.resource
        .as_ref()
        .and_then(|r| find_attr(&r.attributes, "service.name"))
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown_service".to_string())
}

pub fn trace_id_hex(id: &TraceId) -> String {
    hex::encode(id)
}

pub fn span_id_hex(id: &SpanId) -> String {
    hex::encode(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: u8, parent: Option<u8>, start: u64) -> SpanRecord {
        SpanRecord {
            trace_id: [1; 16],
            span_id: [id; 8],
            parent_id: parent.map(|p| [p; 8]),
            service: "s".into(),
            start_ns: start,
            end_ns: start + 10,
            span: Span::default(),
            context: Arc::new(ResourceSpans::default()),
        }
    }

    /// Hostile input: a parent cycle (2 -> 3 -> 2) must not make spans vanish or loop.
    #[test]
    fn a_parent_cycle_still_shows_every_span_once() {
        let t = Trace::new(
            [1; 16],
            vec![
                rec(1, None, 0),
                rec(2, Some(3), 1),
                rec(3, Some(2), 2),
                rec(4, Some(4), 3),
            ],
        );
        let walk = t.tree().walk();
        let mut seen: Vec<usize> = walk.iter().map(|&(i, _)| i).collect();
        seen.sort();
        assert_eq!(seen, vec![0, 1, 2, 3]);
    }
}
