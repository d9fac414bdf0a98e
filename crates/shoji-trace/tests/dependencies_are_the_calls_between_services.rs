//! Issue 11: `/api/dependencies?endTs=&lookback=` answers Jaeger's shape: one edge per pair of
//! services where a span's parent (in the same trace) belongs to the other service, with the
//! number of such spans, over the traces that started in the window.

use crate::common;

use serde_json::{json, Value};

const MS: u64 = 1_000_000;

fn get(url: &str) -> (u16, Value) {
    let r = reqwest::blocking::get(url).expect("GET");
    let code = r.status().as_u16();
    (
        code,
        serde_json::from_str(&r.text().expect("body")).expect("json"),
    )
}

#[test]
fn dependencies_count_cross_service_parent_child_spans_in_the_window() {
    let srv = common::TestServer::start();
    let t0 = 1_700_000_000_000 * MS; // a Unix time in ms, as ns
    for (trace, start) in [(1u8, t0), (2, t0 + 1_000 * MS), (3, t0 - 3_600_000 * MS)] {
        let root = common::span(trace, 1, None, "GET /", start, start + 50 * MS);
        let same = common::span(trace, 2, Some(1), "render", start + MS, start + 2 * MS);
        let call_a = common::span(trace, 3, Some(1), "charge", start + 3 * MS, start + 9 * MS);
        let call_b = common::span(
            trace,
            4,
            Some(1),
            "refund",
            start + 10 * MS,
            start + 12 * MS,
        );
        let db = common::span(trace, 5, Some(3), "SELECT", start + 4 * MS, start + 5 * MS);
        // A span whose parent is not in the trace is no call.
        let orphan = common::span(trace, 6, Some(99), "late", start + 4 * MS, start + 5 * MS);
        srv.store
            .ingest(&common::request("frontend", vec![root, same]))
            .expect("ingest");
        srv.store
            .ingest(&common::request("payments", vec![call_a, call_b, orphan]))
            .expect("ingest");
        srv.store
            .ingest(&common::request("postgres", vec![db]))
            .expect("ingest");
    }
    let end_ms = t0 / MS + 60_000;
    // The last ten minutes: traces 1 and 2, not trace 3 (an hour earlier).
    let (code, v) = get(&format!(
        "{}/api/dependencies?endTs={end_ms}&lookback=600000",
        srv.query_url()
    ));
    assert_eq!(code, 200);
    assert_eq!(
        v,
        json!({
            "data": [
                {"parent": "frontend", "child": "payments", "callCount": 4},
                {"parent": "payments", "child": "postgres", "callCount": 2}
            ],
            "total": 2, "limit": 0, "offset": 0, "errors": null
        })
    );
    let (_, v) = get(&format!(
        "{}/api/dependencies?endTs={end_ms}&lookback=86400000",
        srv.query_url()
    ));
    assert_eq!(v["data"][0]["callCount"], 6, "a day back includes trace 3");
    let (code, v) = get(&format!("{}/api/dependencies?endTs=soon", srv.query_url()));
    assert_eq!(code, 400);
    assert!(v["errors"][0]["msg"]
        .as_str()
        .expect("msg")
        .contains("endTs"));
}
