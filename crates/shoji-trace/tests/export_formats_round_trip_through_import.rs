//! `export --format otlp-json|jaeger-json` read back by `import` gives the same trace (ids,
//! parents, names, services, attributes, events; Jaeger keeps microseconds); `chrome` is
//! valid trace-event JSON with strictly nested spans on each track.

use crate::common;

use opentelemetry_proto::tonic::trace::v1::span::Event;
use shoji_trace::formats::{self, ExportFormat};
use shoji_trace::model::Trace;
use shoji_trace::store::Store;

fn sample() -> (tempfile::TempDir, Store, Trace) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let t0 = 1_700_000_000_000_000_000u64;
    let mut root = common::span(4, 1, None, "run", t0, t0 + 10_000_000);
    root.attributes.push(common::kv("source", "runtime"));
    root.kind = 2;
    let mut a = common::span(4, 2, Some(1), "vm.boot", t0 + 1_000_000, t0 + 6_000_000);
    a.attributes.push(common::kv("source", "hypervisor"));
    a.events.push(Event {
        time_unix_nano: t0 + 2_000_000,
        name: "kernel entered".into(),
        ..Event::default()
    });
    // Overlaps `vm.boot`: must go on another Chrome track.
    let b = common::span(
        4,
        3,
        Some(1),
        "image.unpack",
        t0 + 2_000_000,
        t0 + 8_000_000,
    );
    let mut c = common::span(
        4,
        4,
        Some(2),
        "<img src=x onerror=alert(1)>",
        t0 + 3_000_000,
        t0 + 4_000_000,
    );
    c.attributes.push(common::kv("source", "agent"));
    store
        .ingest(&common::request("shoji-runtime", vec![root, a, b]))
        .expect("ingest");
    store
        .ingest(&common::request("shoji-agent", vec![c]))
        .expect("ingest");
    let t = store.trace(&[4; 16]).expect("read").expect("trace");
    (dir, store, t)
}

type Shape = Vec<(
    String,
    String,
    Option<[u8; 8]>,
    [u8; 8],
    u64,
    u64,
    Vec<(String, String)>,
    usize,
)>;

fn shape(t: &Trace) -> Shape {
    let mut v: Shape = t
        .spans
        .iter()
        .map(|s| {
            let mut attrs: Vec<(String, String)> = s
                .span
                .attributes
                .iter()
                .map(|kv| {
                    (
                        kv.key.clone(),
                        shoji_trace::model::any_value_text(kv.value.as_ref()),
                    )
                })
                .collect();
            attrs.sort();
            (
                s.service.clone(),
                s.name().to_string(),
                s.parent_id,
                s.span_id,
                s.start_ns,
                s.end_ns,
                attrs,
                s.span.events.len(),
            )
        })
        .collect();
    v.sort_by_key(|x| x.3);
    v
}

fn round_trip(format: ExportFormat) -> (Trace, Trace) {
    let (_d, _s, original) = sample();
    let text = formats::export(&original, format).expect("export");
    let rs = formats::import(&text).expect("import").resource_spans;
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    store.ingest_resource_spans(&rs).expect("ingest");
    let back = store.trace(&[4; 16]).expect("read").expect("imported");
    (original, back)
}

#[test]
fn otlp_json_round_trips_exactly() {
    let (a, b) = round_trip(ExportFormat::OtlpJson);
    assert_eq!(shape(&a), shape(&b));
    assert_eq!(
        a.spans.iter().map(|s| s.span.kind).sum::<i32>(),
        b.spans.iter().map(|s| s.span.kind).sum::<i32>()
    );
}

#[test]
fn otlp_json_is_one_traces_data_per_line_with_hex_ids() {
    let (_d, _s, t) = sample();
    let text = formats::export(&t, ExportFormat::OtlpJson).expect("export");
    assert_eq!(text.lines().count(), 1);
    let v: serde_json::Value = serde_json::from_str(text.trim()).expect("json");
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "04040404040404040404040404040404");
}

#[test]
fn jaeger_json_round_trips() {
    let (a, b) = round_trip(ExportFormat::JaegerJson);
    // Same values: times were whole microseconds already.
    assert_eq!(shape(&a), shape(&b));
    let kinds: Vec<i32> = b.spans.iter().map(|s| s.span.kind).collect();
    assert!(kinds.contains(&2), "span.kind survives as the OTLP kind");
}

#[test]
fn chrome_events_nest_strictly_per_track() {
    let (_d, _s, t) = sample();
    let text = formats::export(&t, ExportFormat::Chrome).expect("export");
    let v: serde_json::Value = serde_json::from_str(&text).expect("json");
    let events = v["traceEvents"].as_array().expect("events");
    let complete: Vec<&serde_json::Value> = events.iter().filter(|e| e["ph"] == "X").collect();
    assert_eq!(complete.len(), 4);
    // On every (pid, tid), any two complete events are disjoint or nested.
    for x in &complete {
        for y in &complete {
            if std::ptr::eq(*x, *y) || x["pid"] != y["pid"] || x["tid"] != y["tid"] {
                continue;
            }
            let (xs, xe) = (
                x["ts"].as_f64().unwrap_or(0.0),
                x["ts"].as_f64().unwrap_or(0.0) + x["dur"].as_f64().unwrap_or(0.0),
            );
            let (ys, ye) = (
                y["ts"].as_f64().unwrap_or(0.0),
                y["ts"].as_f64().unwrap_or(0.0) + y["dur"].as_f64().unwrap_or(0.0),
            );
            let disjoint = xe <= ys || ye <= xs;
            let nested = (xs <= ys && ye <= xe) || (ys <= xs && xe <= ye);
            assert!(disjoint || nested, "{x} and {y} overlap on one track");
        }
    }
    assert!(events
        .iter()
        .any(|e| e["ph"] == "M" && e["args"]["name"] == "shoji-agent"));
}

use shoji_protocols::error_chain as chain;

#[test]
fn import_rejects_garbage_with_a_line_number() {
    let err = formats::import("{\"resourceSpans\": []}\nnot json\n").expect_err("garbage");
    let msg = chain(&err);
    assert!(msg.contains("line 2"), "{msg}");
    assert!(
        msg.contains("Zipkin v2 JSON"),
        "names the formats tried: {msg}"
    );
    assert!(formats::import("").is_err());
    // Ids Jaeger cannot parse leave that span out, named, not the whole file.
    let got =
        formats::import("{\"data\": [{\"traceID\": \"zz\", \"spans\": [{\"spanID\": \"1\"}]}]}")
            .expect("import");
    assert!(got.resource_spans.is_empty());
    assert!(got.skipped[0].contains("\"zz\""), "{:?}", got.skipped);
}
