//! Issue 11: `shoji trace import` detects OTLP JSON, Jaeger JSON (wrapped, one trace, a list)
//! and Zipkin v2 JSON, and round trips keep ids, parents, references (same- and cross-trace),
//! logs, status, resource, scope and warnings. The inputs are written here from the published
//! schemas: Jaeger's UI JSON model (`model/json` in jaeger, what `/api/traces` answers and Jaeger
//! UI downloads), Zipkin's `zipkin2-api.yaml` v2 span, OTLP's `TracesData` JSON mapping.

use crate::common;

use serde_json::{json, Value};
use shoji_trace::cli::{ExportArgs, ImportArgs};
use shoji_trace::formats::{self, ExportFormat};
use shoji_trace::store::Store;

const TRACE: &str = "00000000000000000000000000000a11";
const OTHER_TRACE: &str = "000000000000000000000000000000b2";

/// A Jaeger trace as Jaeger UI downloads it: one trace object, no `{"data": [...]}`. The
/// trace id is 16 digits (a 64-bit id), span ids are short (leading zeros dropped, as some
/// Jaeger clients write them).
fn jaeger_trace() -> Value {
    json!({
        "traceID": "0000000000000a11",
        "spans": [
            {
                "traceID": "0000000000000a11",
                "spanID": "1",
                "operationName": "GET /checkout",
                "references": [],
                "startTime": 1_700_000_000_000_000u64,
                "duration": 5000,
                "tags": [
                    {"key": "otel.scope.name", "type": "string", "value": "shop-http"},
                    {"key": "otel.scope.version", "type": "string", "value": "1.2.0"},
                    {"key": "http.status_code", "type": "int64", "value": 503},
                    {"key": "payload", "type": "binary", "value": "AAEC/w=="},
                    {"key": "span.kind", "type": "string", "value": "server"},
                    {"key": "otel.status_code", "type": "string", "value": "ERROR"},
                    {"key": "error", "type": "bool", "value": true},
                    {"key": "otel.status_description", "type": "string", "value": "backend down"}
                ],
                "logs": [
                    {"timestamp": 1_700_000_000_001_000u64, "fields": [
                        {"key": "event", "type": "string", "value": "retry"},
                        {"key": "attempt", "type": "int64", "value": 2}
                    ]}
                ],
                "processID": "p1",
                "warnings": ["clock skew adjusted"]
            },
            {
                "traceID": "0000000000000a11",
                "spanID": "2",
                "operationName": "charge",
                // The case: CHILD_OF another trace, CHILD_OF the parent, FOLLOWS_FROM.
                "references": [
                    {"refType": "CHILD_OF", "traceID": "b2", "spanID": "00000000000000c3"},
                    {"refType": "CHILD_OF", "traceID": "0000000000000a11", "spanID": "1"},
                    {"refType": "FOLLOWS_FROM", "traceID": "0000000000000a11", "spanID": "3"}
                ],
                "startTime": 1_700_000_000_001_000u64,
                "duration": 2000,
                "tags": [{"key": "span.kind", "type": "string", "value": "client"}],
                "logs": [],
                "processID": "p2"
            },
            {
                "traceID": "0000000000000a11",
                "spanID": "3",
                "operationName": "reserve",
                "references": [{"refType": "CHILD_OF", "traceID": "0000000000000a11", "spanID": "1"}],
                "startTime": 1_700_000_000_000_500u64,
                "duration": 100,
                "tags": [],
                "logs": [],
                "processID": "p1"
            }
        ],
        "processes": {
            "p1": {"serviceName": "frontend", "tags": [
                {"key": "host.name", "type": "string", "value": "web-1"}
            ]},
            "p2": {"serviceName": "payments", "tags": []}
        }
    })
}

fn import_text(dir: &std::path::Path, name: &str, text: &str) -> String {
    let file = dir.join(name);
    std::fs::write(&file, text).expect("write input");
    ImportArgs { file }
        .run(&dir.join("data"))
        .unwrap_or_else(|e| panic!("import {name}: {}", chain(&e)))
}

fn export(dir: &std::path::Path, id: &str, format: ExportFormat) -> String {
    ExportArgs {
        id: id.into(),
        format,
        output: None,
    }
    .run(&dir.join("data"))
    .expect("export")
}

use shoji_protocols::error_chain as chain;

fn span<'a>(trace: &'a Value, op: &str) -> &'a Value {
    trace["spans"]
        .as_array()
        .expect("spans")
        .iter()
        .find(|s| s["operationName"] == op)
        .unwrap_or_else(|| panic!("no span {op} in {trace}"))
}

fn refs(s: &Value) -> Vec<(String, String, String)> {
    s["references"]
        .as_array()
        .expect("references")
        .iter()
        .map(|r| {
            (
                r["refType"].as_str().unwrap_or_default().to_string(),
                r["traceID"].as_str().unwrap_or_default().to_string(),
                r["spanID"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

fn tag<'a>(s: &'a Value, key: &str) -> &'a Value {
    s["tags"]
        .as_array()
        .expect("tags")
        .iter()
        .find(|t| t["key"] == key)
        .unwrap_or_else(|| panic!("no tag {key} in {s}"))
}

#[test]
fn an_unwrapped_jaeger_trace_round_trips_field_by_field() {
    let dir = tempfile::tempdir().expect("tempdir");
    let out = import_text(dir.path(), "trace.json", &jaeger_trace().to_string());
    assert!(out.contains("imported 3 spans from jaeger-json"), "{out}");

    // The 16-digit id is the 64-bit id, zero-extended.
    let doc: Value = serde_json::from_str(&export(
        dir.path(),
        "0000000000000a11",
        ExportFormat::JaegerJson,
    ))
    .expect("jaeger json");
    let t = &doc["data"][0];
    assert_eq!(t["traceID"], TRACE);

    let root = span(t, "GET /checkout");
    assert_eq!(root["spanID"], "0000000000000001");
    assert_eq!(root["startTime"], 1_700_000_000_000_000u64);
    assert_eq!(root["duration"], 5000);
    assert!(refs(root).is_empty());
    assert_eq!(tag(root, "otel.scope.name")["value"], "shop-http");
    assert_eq!(tag(root, "otel.scope.version")["value"], "1.2.0");
    assert_eq!(tag(root, "http.status_code")["value"], 503);
    assert_eq!(tag(root, "http.status_code")["type"], "int64");
    assert_eq!(tag(root, "payload")["type"], "binary");
    assert_eq!(
        tag(root, "payload")["value"],
        "AAEC/w==",
        "binary tags stay base64"
    );
    assert_eq!(tag(root, "span.kind")["value"], "server");
    assert_eq!(tag(root, "otel.status_code")["value"], "ERROR");
    assert_eq!(tag(root, "error")["value"], true);
    assert_eq!(
        tag(root, "otel.status_description")["value"],
        "backend down"
    );
    assert_eq!(root["warnings"], json!(["clock skew adjusted"]));
    assert_eq!(root["logs"][0]["timestamp"], 1_700_000_000_001_000u64);
    assert_eq!(
        root["logs"][0]["fields"][0],
        json!({"key": "event", "type": "string", "value": "retry"})
    );
    assert_eq!(root["logs"][0]["fields"][1]["value"], 2);
    let p1 = &t["processes"][root["processID"].as_str().expect("pid")];
    assert_eq!(p1["serviceName"], "frontend");
    assert_eq!(
        p1["tags"][0],
        json!({"key": "host.name", "type": "string", "value": "web-1"})
    );

    // References: the parent first (as Jaeger writes them), the other two kept exactly.
    let charge = span(t, "charge");
    let mut got = refs(charge);
    assert_eq!(
        got[0],
        ("CHILD_OF".into(), TRACE.into(), "0000000000000001".into())
    );
    got.sort();
    assert_eq!(
        got,
        vec![
            (
                "CHILD_OF".into(),
                OTHER_TRACE.into(),
                "00000000000000c3".into()
            ),
            ("CHILD_OF".into(), TRACE.into(), "0000000000000001".into()),
            (
                "FOLLOWS_FROM".into(),
                TRACE.into(),
                "0000000000000003".into()
            ),
        ]
    );
    assert_eq!(
        t["processes"][charge["processID"].as_str().expect("pid")]["serviceName"],
        "payments"
    );

    // Not an orphan: the tree has it under its parent.
    let store = Store::open(&dir.path().join("data")).expect("open");
    let trace = store
        .trace(&hex::decode(TRACE).expect("hex").try_into().expect("16"))
        .expect("read")
        .expect("trace");
    assert_eq!(trace.tree().roots.len(), 1, "one root: nothing orphaned");

    // The same trace exported again and imported into a fresh store gives the same document.
    let dir2 = tempfile::tempdir().expect("tempdir");
    import_text(dir2.path(), "again.json", &doc.to_string());
    let again: Value =
        serde_json::from_str(&export(dir2.path(), TRACE, ExportFormat::JaegerJson)).expect("json");
    assert_eq!(normalised(&again), normalised(&doc));
}

/// Spans in id order, tags and references sorted (their order is not meaningful).
fn normalised(doc: &Value) -> Value {
    let mut t = doc["data"][0].clone();
    let spans = t["spans"].as_array_mut().expect("spans");
    spans.sort_by_key(|s| s["spanID"].as_str().unwrap_or_default().to_string());
    for s in spans.iter_mut() {
        for k in ["tags", "references"] {
            if let Some(a) = s[k].as_array_mut() {
                a.sort_by_key(|v| v.to_string());
            }
        }
    }
    t
}

#[test]
fn wrapped_and_listed_jaeger_traces_are_detected_too() {
    let dir = tempfile::tempdir().expect("tempdir");
    let wrapped =
        json!({"data": [jaeger_trace()], "total": 1, "limit": 0, "offset": 0, "errors": null});
    assert!(import_text(dir.path(), "w.json", &wrapped.to_string())
        .contains("3 spans from jaeger-json"));
    let mut second = jaeger_trace();
    for s in second["spans"].as_array_mut().expect("spans") {
        s["traceID"] = json!("0000000000000a12");
    }
    second["traceID"] = json!("0000000000000a12");
    let list = json!([jaeger_trace(), second]);
    let out = import_text(dir.path(), "l.json", &list.to_string());
    assert!(
        out.contains("3 spans from jaeger-json (3 already stored"),
        "{out}"
    );
}

#[test]
fn spans_with_ids_jaeger_refuses_are_left_out_and_named() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut t = jaeger_trace();
    t["spans"][2]["spanID"] = json!("span-three");
    let out = import_text(dir.path(), "bad-id.json", &t.to_string());
    assert!(out.contains("skipped span \"span-three\""), "{out}");
    assert!(out.contains("imported 2 spans"), "{out}");
}

#[test]
fn zipkin_v2_spans_are_imported() {
    let dir = tempfile::tempdir().expect("tempdir");
    let spans = json!([
        {
            "traceId": "5af7183fb1d4cf5f",
            "id": "6b221d5bc9e6496c",
            "name": "get /api",
            "kind": "SERVER",
            "timestamp": 1_700_000_000_000_000u64,
            "duration": 207_000,
            "localEndpoint": {"serviceName": "frontend", "ipv4": "192.168.99.1", "port": 8080},
            "remoteEndpoint": {"ipv4": "172.19.0.2", "port": 58648},
            "tags": {"http.method": "GET", "http.path": "/api"},
            "annotations": [{"timestamp": 1_700_000_000_010_000u64, "value": "wr"}]
        },
        {
            "traceId": "5af7183fb1d4cf5f",
            "parentId": "6b221d5bc9e6496c",
            "id": "352bff9a74ca9ad2",
            "name": "query",
            "kind": "CLIENT",
            "timestamp": 1_700_000_000_050_000u64,
            "duration": 1000,
            "localEndpoint": {"serviceName": "backend"},
            "remoteEndpoint": {"serviceName": "mysql", "ipv4": "10.0.0.9", "port": 3306},
            "tags": {"error": "connection refused", "otel.scope.name": "db-client"}
        }
    ]);
    let out = import_text(dir.path(), "zipkin.json", &spans.to_string());
    assert!(out.contains("imported 2 spans from zipkin-json"), "{out}");
    let doc: Value = serde_json::from_str(&export(
        dir.path(),
        "5af7183fb1d4cf5f",
        ExportFormat::JaegerJson,
    ))
    .expect("json");
    let t = &doc["data"][0];
    assert_eq!(t["traceID"], "00000000000000005af7183fb1d4cf5f");
    let server = span(t, "get /api");
    assert_eq!(tag(server, "span.kind")["value"], "server");
    assert_eq!(tag(server, "http.method")["value"], "GET");
    assert_eq!(tag(server, "net.host.ip")["value"], "192.168.99.1");
    assert_eq!(tag(server, "net.peer.port")["value"], 58648);
    assert_eq!(server["duration"], 207_000);
    assert_eq!(server["logs"][0]["fields"][0]["value"], "wr");
    let client = span(t, "query");
    assert_eq!(
        refs(client),
        vec![(
            "CHILD_OF".to_string(),
            "00000000000000005af7183fb1d4cf5f".to_string(),
            "6b221d5bc9e6496c".to_string()
        )]
    );
    assert_eq!(tag(client, "span.kind")["value"], "client");
    assert_eq!(tag(client, "peer.service")["value"], "mysql");
    assert_eq!(tag(client, "error")["value"], true);
    assert_eq!(
        tag(client, "otel.status_description")["value"],
        "connection refused"
    );
    assert_eq!(tag(client, "otel.scope.name")["value"], "db-client");
    assert_eq!(
        t["processes"][client["processID"].as_str().expect("pid")]["serviceName"],
        "backend"
    );
}

#[test]
fn one_otlp_document_with_links_shows_them_as_references() {
    let dir = tempfile::tempdir().expect("tempdir");
    let doc = json!({"resourceSpans": [{
        "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "worker"}}]},
        "scopeSpans": [{
            "scope": {"name": "jobs", "version": "0.1"},
            "spans": [
                {
                    "traceId": "0102030405060708090a0b0c0d0e0f10",
                    "spanId": "1111111111111111",
                    "name": "consume",
                    "kind": 5,
                    "startTimeUnixNano": "1700000000000000000",
                    "endTimeUnixNano": "1700000000001000000",
                    "links": [
                        {"traceId": "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0", "spanId": "2222222222222222"},
                        {"traceId": "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0", "spanId": "3333333333333333",
                         "attributes": [{"key": "opentracing.ref_type", "value": {"stringValue": "child_of"}}]}
                    ],
                    "status": {"code": 1}
                }
            ]
        }]
    }]});
    // Pretty-printed: one document over many lines, not JSON lines.
    let out = import_text(
        dir.path(),
        "otlp.json",
        &serde_json::to_string_pretty(&doc).expect("pretty"),
    );
    assert!(out.contains("imported 1 spans from otlp-json"), "{out}");
    let j: Value = serde_json::from_str(&export(
        dir.path(),
        "0102030405060708090a0b0c0d0e0f10",
        ExportFormat::JaegerJson,
    ))
    .expect("json");
    let s = &j["data"][0]["spans"][0];
    assert_eq!(
        refs(s),
        vec![
            (
                "FOLLOWS_FROM".to_string(),
                "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0".to_string(),
                "2222222222222222".to_string()
            ),
            (
                "CHILD_OF".to_string(),
                "a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0a0".to_string(),
                "3333333333333333".to_string()
            ),
        ]
    );
    assert_eq!(tag(s, "otel.status_code")["value"], "OK");
    // And the OTLP export gives the links back as they came.
    let o: Value = serde_json::from_str(
        export(
            dir.path(),
            "0102030405060708090a0b0c0d0e0f10",
            ExportFormat::OtlpJson,
        )
        .trim(),
    )
    .expect("otlp json");
    let links = &o["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["links"];
    assert_eq!(links.as_array().map(Vec::len), Some(2));
    assert_eq!(
        o["resourceSpans"][0]["scopeSpans"][0]["scope"]["name"],
        "jobs"
    );
}

#[test]
fn an_unknown_shape_names_every_format_tried() {
    for (name, text) in [
        ("object", "{\"spans_please\": 1}"),
        ("list", "[{\"name\": \"x\"}]"),
        ("text", "hello\nworld\n"),
    ] {
        let err = formats::import(text).expect_err(name);
        let msg = chain(&err);
        for f in ["OTLP JSON", "Jaeger JSON", "Zipkin v2 JSON"] {
            assert!(msg.contains(f), "{name}: {msg}");
        }
    }
}

#[test]
fn the_zipkin_receiver_stores_v2_json_and_refuses_other_types() {
    let srv = common::TestServer::start();
    let url = format!(
        "http://{}/api/v2/spans",
        srv.server.as_ref().map(|s| s.zipkin_addr).expect("server")
    );
    let body = json!([{
        "traceId": "0af7651916cd43dd8448eb211c80319c",
        "id": "b7ad6b7169203331",
        "name": "post",
        "timestamp": 1_700_000_000_000_000u64,
        "duration": 10,
        "localEndpoint": {"serviceName": "zipkin-client"}
    }])
    .to_string();
    let client = reqwest::blocking::Client::new();
    let r = client
        .post(&url)
        .header("content-type", "text/plain")
        .body(body.clone())
        .send()
        .expect("POST");
    assert_eq!(r.status(), 415);
    let r = client
        .post(&url)
        .header("content-type", "application/json; charset=utf-8")
        .body(body)
        .send()
        .expect("POST");
    assert_eq!(r.status(), 202, "{:?}", r.text());
    let t = srv
        .store
        .trace(
            &hex::decode("0af7651916cd43dd8448eb211c80319c")
                .expect("hex")
                .try_into()
                .expect("16"),
        )
        .expect("read")
        .expect("stored");
    assert_eq!(t.spans[0].service, "zipkin-client");
    let r = client
        .post(&url)
        .header("content-type", "application/json")
        .header("host", "rebind.attacker.example")
        .body("[]")
        .send()
        .expect("POST");
    assert_eq!(r.status(), 403, "the Zipkin port checks Host too");
}
