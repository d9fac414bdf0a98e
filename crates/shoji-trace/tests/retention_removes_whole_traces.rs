//! Retention by age and by size removes whole traces, oldest first, never part of a trace.

use crate::common;

use std::time::Duration;

use shoji_trace::retention::RetentionPolicy;
use shoji_trace::store::Store;

fn now() -> u64 {
    shoji_trace::units::now_ns()
}

#[test]
fn traces_older_than_max_age_are_removed_whole() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let day = 86_400_000_000_000u64;
    let old = now() - 3 * day;
    // An old trace in two requests, and a fresh one.
    store
        .ingest(&common::request(
            "s",
            vec![common::span(1, 1, None, "old", old, old + 10)],
        ))
        .expect("ingest");
    store
        .ingest(&common::request(
            "s",
            vec![common::span(1, 2, Some(1), "old.child", old + 1, old + 5)],
        ))
        .expect("ingest");
    let fresh = now();
    store
        .ingest(&common::request(
            "s",
            vec![common::span(2, 1, None, "fresh", fresh, fresh + 10)],
        ))
        .expect("ingest");
    let r = store
        .enforce_retention(&RetentionPolicy {
            max_age: Some(Duration::from_secs(86_400)),
            max_bytes: None,
        })
        .expect("retention");
    assert_eq!((r.traces, r.spans), (1, 2));
    assert!(store.trace(&[1; 16]).expect("read").is_none());
    assert!(store.summary(&[1; 16]).expect("read").is_none());
    assert_eq!(
        store
            .trace(&[2; 16])
            .expect("read")
            .expect("kept")
            .spans
            .len(),
        1
    );
}

#[test]
fn oldest_traces_go_first_when_over_max_size() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    for t in 1..=10u8 {
        let mut req = common::batch([t; 16], 1, 100);
        for s in &mut req.resource_spans[0].scope_spans[0].spans {
            s.start_time_unix_nano += t as u64 * 1_000_000_000;
            s.end_time_unix_nano += t as u64 * 1_000_000_000;
        }
        store.ingest(&req).expect("ingest");
    }
    let (_, bytes) = store.totals().expect("totals");
    let r = store
        .enforce_retention(&RetentionPolicy {
            max_age: None,
            max_bytes: Some(bytes / 2),
        })
        .expect("retention");
    assert_eq!(r.traces, 5);
    let (_, after) = store.totals().expect("totals");
    assert!(after <= bytes / 2);
    for t in 1..=5u8 {
        assert!(
            store.trace(&[t; 16]).expect("read").is_none(),
            "old trace {t} removed"
        );
    }
    for t in 6..=10u8 {
        let kept = store.trace(&[t; 16]).expect("read").expect("newer kept");
        assert_eq!(kept.spans.len(), 100, "kept traces are whole");
    }
}

#[test]
fn retention_is_configured_under_trace_store() {
    let p = shoji_trace::retention::from_toml(
        "[trace_store]\nmax_age = \"12h\"\nmax_size = \"2GiB\"\n",
        std::path::Path::new("configuration.toml"),
    )
    .expect("parse");
    assert_eq!(p.max_age, Some(Duration::from_secs(12 * 3600)));
    assert_eq!(p.max_bytes, Some(2 << 30));
}
