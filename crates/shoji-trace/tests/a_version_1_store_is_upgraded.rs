//! Stores written by earlier versions (schema 1: one row per span) are upgraded in place when
//! opened: every span is still there, summaries and operations are kept, the old table is gone.
//! Also: spans re-sent in a different grouping are returned once, and new stores use large pages.

use crate::common;

use std::path::Path;

use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prost::Message;
use rusqlite::{params, Connection};
use shoji_trace::store::{Store, SummaryFilter};

/// Schema 1 as it shipped, written here by hand: the code that wrote it is gone.
const V1: &str = "
PRAGMA auto_vacuum=INCREMENTAL;
PRAGMA journal_mode=WAL;
CREATE TABLE contexts (id INTEGER PRIMARY KEY, body BLOB NOT NULL UNIQUE);
CREATE TABLE spans (
    trace_id BLOB NOT NULL, span_id BLOB NOT NULL, parent_id BLOB, name TEXT NOT NULL,
    start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL, context_id INTEGER NOT NULL,
    body BLOB NOT NULL, PRIMARY KEY (trace_id, span_id)) WITHOUT ROWID;
CREATE TABLE traces (
    trace_id BLOB PRIMARY KEY, start_ns INTEGER NOT NULL, end_ns INTEGER NOT NULL,
    span_count INTEGER NOT NULL, bytes INTEGER NOT NULL, root_name TEXT NOT NULL,
    root_service TEXT NOT NULL, has_root INTEGER NOT NULL, services TEXT NOT NULL,
    updated_ns INTEGER NOT NULL);
CREATE INDEX traces_by_start ON traces (start_ns);
CREATE TABLE operations (service TEXT NOT NULL, name TEXT NOT NULL, kind INTEGER NOT NULL,
    PRIMARY KEY (service, name, kind)) WITHOUT ROWID;
PRAGMA user_version=1;
";

fn context(service: &str) -> Vec<u8> {
    ResourceSpans {
        resource: Some(Resource {
            attributes: vec![common::kv("service.name", service)],
            ..Default::default()
        }),
        scope_spans: vec![ScopeSpans::default()],
        ..Default::default()
    }
    .encode_to_vec()
}

/// A version 1 store with one trace: a runtime root and `n` agent children, in two contexts.
fn write_v1(dir: &Path, t0: u64, n: u64) {
    let conn = Connection::open(dir.join("traces.db")).expect("create v1 store");
    conn.execute_batch(V1).expect("v1 schema");
    let ctx = [context("shoji-runtime"), context("shoji-agent")];
    for (i, c) in ctx.iter().enumerate() {
        conn.execute(
            "INSERT INTO contexts (id, body) VALUES (?1, ?2)",
            params![i as i64 + 1, c],
        )
        .expect("context");
    }
    let mut spans = vec![(1, common::span(7, 1, None, "run", t0, t0 + 1000))];
    for i in 0..n {
        let s = common::span(7, 10 + i, Some(1), "agent.op", t0 + i + 1, t0 + i + 2);
        spans.push((2, s));
    }
    for (ctx, s) in &spans {
        let parent = (!s.parent_span_id.is_empty()).then(|| s.parent_span_id.clone());
        conn.execute(
            "INSERT INTO spans VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                s.trace_id,
                s.span_id,
                parent,
                s.name,
                s.start_time_unix_nano as i64,
                s.end_time_unix_nano as i64,
                ctx,
                s.encode_to_vec()
            ],
        )
        .expect("span");
    }
    let sep = '\u{1f}';
    conn.execute(
        "INSERT INTO traces VALUES (?1, ?2, ?3, ?4, ?5, 'run', 'shoji-runtime', 1, ?6, 0)",
        params![
            vec![7u8; 16],
            t0 as i64,
            (t0 + 1000) as i64,
            spans.len() as i64,
            1234,
            format!("{sep}shoji-agent{sep}shoji-runtime{sep}")
        ],
    )
    .expect("summary");
    for (service, name) in [("shoji-runtime", "run"), ("shoji-agent", "agent.op")] {
        conn.execute(
            "INSERT INTO operations VALUES (?1, ?2, 1)",
            params![service, name],
        )
        .expect("operation");
    }
}

fn pragma(dir: &Path, name: &str) -> i64 {
    Connection::open(dir.join("traces.db"))
        .expect("open")
        .query_row(&format!("PRAGMA {name}"), [], |r| r.get(0))
        .expect("pragma")
}

#[test]
fn a_version_1_store_is_upgraded_with_every_span() {
    let dir = tempfile::tempdir().expect("tempdir");
    let t0 = 1_700_000_000_000_000_000;
    // More spans than one migrated chunk holds, so the trace spans several chunks.
    write_v1(dir.path(), t0, 2500);

    let store = Store::open(dir.path()).expect("open upgrades the store");
    assert_eq!(pragma(dir.path(), "user_version"), 2);
    let tables: i64 = Connection::open(dir.path().join("traces.db"))
        .expect("open")
        .query_row(
            "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'spans'",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(tables, 0, "the version 1 span table is dropped");

    let t = store.trace(&[7; 16]).expect("read").expect("trace");
    assert_eq!(t.spans.len(), 2501);
    let tree = t.tree();
    assert_eq!(tree.roots.len(), 1);
    assert_eq!(t.spans[tree.roots[0]].name(), "run");
    assert_eq!(t.spans[tree.roots[0]].service, "shoji-runtime");
    assert!(t
        .spans
        .iter()
        .filter(|s| s.name() == "agent.op")
        .all(|s| s.service == "shoji-agent" && s.parent_id == Some(1u64.to_be_bytes())));

    let s = store.summary(&[7; 16]).expect("read").expect("summary");
    assert_eq!((s.span_count, s.root_name.as_str()), (2501, "run"));
    assert_eq!(
        store.services().expect("services"),
        ["shoji-agent", "shoji-runtime"]
    );
    // The operation filter reads the migrated chunks' name lists.
    let f = SummaryFilter {
        operation: Some("agent.op".into()),
        ..Default::default()
    };
    assert_eq!(store.summaries(&f, 10, 0).expect("search").len(), 1);
    let f = SummaryFilter {
        operation: Some("agent".into()),
        ..Default::default()
    };
    assert!(store.summaries(&f, 10, 0).expect("search").is_empty());

    // Opening again is a no-op, and new spans go into the upgraded store.
    drop(store);
    let store = Store::open(dir.path()).expect("reopen");
    let late = common::request(
        "shoji-agent",
        vec![common::span(7, 9000, Some(1), "late", t0 + 5, t0 + 6)],
    );
    assert_eq!(store.ingest(&late).expect("ingest").stored, 1);
    assert_eq!(
        store.trace(&[7; 16]).expect("read").expect("t").spans.len(),
        2502
    );
    // Removing the trace removes every chunk, old and new.
    let r = store.delete_traces(&[vec![7; 16]]).expect("delete");
    assert_eq!((r.traces, r.spans), (1, 2502));
    assert!(store.trace(&[7; 16]).expect("read").is_none());
}

#[test]
fn a_store_from_a_newer_shoji_is_refused_untouched() {
    let dir = tempfile::tempdir().expect("tempdir");
    Connection::open(dir.path().join("traces.db"))
        .expect("create")
        .execute_batch("CREATE TABLE future (x); PRAGMA user_version=99;")
        .expect("future schema");
    let err = Store::open(dir.path()).expect_err("a newer schema is refused");
    assert!(err.to_string().contains("schema version 99"), "{err}");
    assert_eq!(pragma(dir.path(), "user_version"), 99);
}

#[test]
fn spans_sent_again_in_another_grouping_are_read_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    assert_eq!(pragma(dir.path(), "page_size"), 32768);
    let t0 = 1_700_000_000_000_000_000;
    let s = |id| common::span(3, id, Some(1), "op", t0 + id, t0 + id + 1);
    store
        .ingest(&common::request("a", vec![s(1), s(2), s(3)]))
        .expect("first");
    // Overlaps the first request without being the same request: not refused as a retry.
    let second: Vec<Span> = vec![s(2), s(3), s(4)];
    store.ingest(&common::request("a", second)).expect("second");
    let t = store.trace(&[3; 16]).expect("read").expect("trace");
    let mut ids: Vec<u64> = t
        .spans
        .iter()
        .map(|s| u64::from_be_bytes(s.span_id))
        .collect();
    ids.sort();
    assert_eq!(ids, [1, 2, 3, 4]);
}

#[test]
fn one_name_with_two_kinds_in_one_request_is_two_operations() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let t0 = 1_700_000_000_000_000_000;
    let mut client = common::span(4, 1, None, "call", t0, t0 + 10);
    client.kind = 3;
    let mut server = common::span(4, 2, Some(1), "call", t0 + 1, t0 + 9);
    server.kind = 2;
    store
        .ingest(&common::request("svc", vec![client, server]))
        .expect("ingest");
    assert_eq!(
        store.operations("svc").expect("operations"),
        [("call".to_string(), 2), ("call".to_string(), 3)]
    );
}
