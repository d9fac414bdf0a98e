//! `shoji trace import` of Jaeger JSON: any bytes must give spans or an error, never a panic.
//! What parses is also rendered and exported, which exercises the tree building, critical
//! path and Chrome track assignment on hostile shapes (cycles, duplicates, inverted times).
#![no_main]

use libfuzzer_sys::fuzz_target;
use shoji_trace::model::{SpanRecord, Trace};
use std::sync::Arc;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(rs) = shoji_trace::jaeger::import::to_otlp(text) else {
        return;
    };
    let mut spans = Vec::new();
    for r in &rs {
        let ctx = Arc::new(r.clone());
        for ss in &r.scope_spans {
            for s in &ss.spans {
                let (Ok(trace_id), Ok(span_id)) =
                    (s.trace_id.as_slice().try_into(), s.span_id.as_slice().try_into())
                else {
                    continue;
                };
                spans.push(SpanRecord {
                    trace_id,
                    span_id,
                    parent_id: s.parent_span_id.as_slice().try_into().ok(),
                    service: "fuzz".into(),
                    start_ns: s.start_time_unix_nano,
                    end_ns: s.end_time_unix_nano.max(s.start_time_unix_nano),
                    span: s.clone(),
                    context: ctx.clone(),
                });
            }
        }
    }
    if spans.is_empty() {
        return;
    }
    let t = Trace::new(spans[0].trace_id, spans);
    let _ = shoji_trace::render::show(&t, &shoji_trace::render::ShowOptions::default());
    let _ = shoji_trace::analysis::critical_path::critical_path(&t);
    let _ = shoji_trace::analysis::summary::summarize(&t);
    let _ = shoji_trace::formats::export(&t, shoji_trace::formats::ExportFormat::Chrome);
});
