//! Issue 10: one trace whose stored spans cannot be decoded (a damaged chunk) is skipped and
//! reported by searches (`shoji trace ls --tag`, `/api/traces`), never the reason every
//! search fails; asking for that trace by id names it.

use crate::common;

use shoji_trace::cli::LsArgs;

fn ingest_three(store: &shoji_trace::store::Store) {
    for t in 1..=3u8 {
        let mut s = common::span(
            t,
            1,
            None,
            "op",
            u64::from(t) * 1_000,
            u64::from(t) * 1_000 + 500,
        );
        s.attributes.push(common::kv("color", "blue"));
        store
            .ingest(&common::request("svc", vec![s]))
            .expect("ingest");
    }
}

/// Overwrites trace `t`'s chunk body with bytes that are not a protobuf message.
fn corrupt(dir: &std::path::Path, t: u8) {
    let conn = rusqlite::Connection::open(dir.join("traces.db")).expect("open db");
    let n = conn
        .execute(
            "UPDATE chunks SET body = x'0affffffff0f01' WHERE trace_id = ?1",
            [vec![t; 16]],
        )
        .expect("corrupt");
    assert_eq!(n, 1);
}

#[test]
fn ls_with_a_tag_skips_and_names_the_corrupt_trace() {
    let srv = common::TestServer::start();
    ingest_three(&srv.store);
    corrupt(srv.dir.path(), 2);
    let listing = LsArgs {
        service: None,
        operation: None,
        tags: vec!["color=blue".into()],
        min_duration: None,
        since: None,
        limit: 20,
        json: true,
    }
    .run(srv.dir.path())
    .expect("ls must not fail");
    assert_eq!(listing.text.lines().count(), 2, "{}", listing.text);
    assert!(!listing.text.contains(&"02".repeat(16)));
    assert_eq!(listing.notes.len(), 1, "{:?}", listing.notes);
    assert!(
        listing.notes[0].contains(&"02".repeat(16))
            && listing.notes[0].contains("cannot be decoded"),
        "{:?}",
        listing.notes
    );
}

#[test]
fn api_search_answers_with_the_others_and_reports_the_corrupt_one() {
    let srv = common::TestServer::start();
    ingest_three(&srv.store);
    corrupt(srv.dir.path(), 3);
    for query in [
        "service=svc",
        "service=svc&tags=%7B%22color%22%3A%22blue%22%7D",
    ] {
        let r =
            reqwest::blocking::get(format!("{}/api/traces?{query}", srv.query_url())).expect("GET");
        assert_eq!(r.status(), 200, "{query}");
        let v: serde_json::Value = serde_json::from_str(&r.text().expect("body")).expect("json");
        let ids: Vec<&str> = v["data"]
            .as_array()
            .expect("data")
            .iter()
            .map(|t| t["traceID"].as_str().expect("id"))
            .collect();
        assert_eq!(ids, ["02".repeat(16), "01".repeat(16)], "{query}");
        assert_eq!(v["errors"][0]["traceID"], "03".repeat(16), "{query}: {v}");
        assert_eq!(v["errors"][0]["code"], 500);
    }
    let r = reqwest::blocking::get(format!(
        "{}/api/traces/{}",
        srv.query_url(),
        "03".repeat(16)
    ))
    .expect("GET");
    assert_eq!(r.status(), 500);
    let body = r.text().expect("body");
    assert!(body.contains("cannot be decoded"), "{body}");
}
