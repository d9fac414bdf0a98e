//! The query API on the real server answers in Jaeger's JSON model: services, operations,
//! search with filters, one trace, and errors for unknown ids and bad parameters.

use crate::common;

use serde_json::Value;

fn get(url: &str) -> (u16, Value) {
    let r = reqwest::blocking::get(url).expect("GET");
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_slice(&r.bytes().expect("body")).expect("json body"),
    )
}

#[test]
fn query_api_speaks_jaeger_json() {
    let srv = common::TestServer::start();
    let t0 = 1_700_000_000_000_000_000u64;
    let mut root = common::span(7, 1, None, "run", t0, t0 + 900_000_000);
    root.attributes.push(common::kv("sandbox_id", "sb-1"));
    let child = common::span(7, 2, Some(1), "vm.boot", t0 + 1000, t0 + 500_000_000);
    srv.store
        .ingest(&common::request("shoji-runtime", vec![root, child]))
        .expect("ingest");
    let other = common::span(8, 1, None, "exec", t0, t0 + 1_000_000);
    srv.store
        .ingest(&common::request("shoji-agent", vec![other]))
        .expect("ingest");
    let q = srv.query_url();

    let (code, v) = get(&format!("{q}/api/services"));
    assert_eq!(code, 200);
    assert_eq!(
        v["data"],
        serde_json::json!(["shoji-agent", "shoji-runtime"])
    );
    assert_eq!(v["total"], 2);
    assert!(v["errors"].is_null());

    let (_, v) = get(&format!("{q}/api/services/shoji-runtime/operations"));
    assert_eq!(v["data"], serde_json::json!(["run", "vm.boot"]));

    let (_, v) = get(&format!(
        "{q}/api/traces?service=shoji-runtime&operation=vm.boot&minDuration=800ms&limit=5"
    ));
    let traces = v["data"].as_array().expect("data");
    assert_eq!(traces.len(), 1);
    let t = &traces[0];
    assert_eq!(t["traceID"], "07070707070707070707070707070707");
    let spans = t["spans"].as_array().expect("spans");
    let boot = spans
        .iter()
        .find(|s| s["operationName"] == "vm.boot")
        .expect("boot");
    assert_eq!(boot["references"][0]["refType"], "CHILD_OF");
    assert_eq!(boot["references"][0]["spanID"], "0000000000000001");
    assert_eq!(boot["startTime"], (t0 + 1000) / 1000);
    assert_eq!(boot["duration"], 499_999);
    let pid = boot["processID"].as_str().expect("pid");
    assert_eq!(t["processes"][pid]["serviceName"], "shoji-runtime");

    let tags = "%7B%22sandbox_id%22%3A%22sb-1%22%7D"; // {"sandbox_id":"sb-1"}
    let (_, v) = get(&format!("{q}/api/traces?service=shoji-runtime&tags={tags}"));
    assert_eq!(v["data"].as_array().map(Vec::len), Some(1));
    let (_, v) = get(&format!(
        "{q}/api/traces?service=shoji-runtime&tags=sandbox_id%3Dother"
    ));
    assert_eq!(v["data"].as_array().map(Vec::len), Some(0));
    let (_, v) = get(&format!(
        "{q}/api/traces?service=shoji-runtime&minDuration=2s"
    ));
    assert_eq!(v["data"].as_array().map(Vec::len), Some(0));

    // The viewer's result list: the same search, one summary per trace.
    let (code, v) = get(&format!(
        "{q}/api/analysis/search?tags={tags}&minDuration=800ms"
    ));
    assert_eq!(code, 200);
    let found = v["data"].as_array().expect("data");
    assert_eq!(found.len(), 1);
    assert_eq!(found[0]["trace_id"], "07070707070707070707070707070707");
    assert_eq!(found[0]["span_count"], 2);
    assert_eq!(found[0]["root_name"], "run");
    assert_eq!(found[0]["end_ns"], t0 + 900_000_000);
    let (code, v) = get(&format!("{q}/api/analysis/search?minDuration=soon"));
    assert_eq!(code, 400);
    assert!(v["errors"][0]["msg"]
        .as_str()
        .expect("msg")
        .contains("minDuration"));

    let (code, v) = get(&format!("{q}/api/traces/0707070707070707*"));
    assert_eq!(code, 200, "a unique prefix, asked for with '*', works too");
    assert_eq!(v["data"][0]["spans"].as_array().map(Vec::len), Some(2));

    let (code, v) = get(&format!("{q}/api/traces/{}", "ab".repeat(16)));
    assert_eq!(code, 404);
    assert_eq!(v["errors"][0]["code"], 404);

    let (code, v) = get(&format!(
        "{q}/api/analysis/critical-path/{}",
        "07".repeat(16)
    ));
    assert_eq!(code, 200);
    assert_eq!(v["data"][1]["name"], "vm.boot");
    assert_eq!(v["data"][1]["span_id"], "0000000000000002");
    let (code, v) = get(&format!("{q}/api/analysis/summary/0707*"));
    assert_eq!(code, 200);
    assert_eq!(v["data"][0]["span_count"], 2);
    let (code, v) = get(&format!("{q}/api/analysis/diff/0707*/0808*"));
    assert_eq!(code, 200);
    assert_eq!(
        v["data"][0]["only_in_b"][0]["operation"],
        "shoji-agent: exec"
    );

    let (code, v) = get(&format!("{q}/api/traces?service=x&minDuration=soon"));
    assert_eq!(code, 400);
    assert!(v["errors"][0]["msg"]
        .as_str()
        .is_some_and(|m| m.contains("minDuration")));
}

#[test]
fn viewer_is_served_beside_the_api() {
    let srv = common::TestServer::start();
    let r = reqwest::blocking::get(format!("{}/", srv.query_url())).expect("GET");
    assert_eq!(r.status(), 200);
}
