//! Spans of one trace arriving in any order, in many requests: the trace is visible while
//! incomplete (children of a missing parent are roots), and the parent links up on arrival.

use crate::common;

use shoji_trace::store::Store;

#[test]
fn late_parents_are_linked_when_they_arrive() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let t0 = 1_700_000_000_000_000_000;
    // The grandchild first, then the child, then the root, each in its own request.
    store
        .ingest(&common::request(
            "shoji-agent",
            vec![common::span(9, 3, Some(2), "agent.exec", t0 + 30, t0 + 40)],
        ))
        .expect("ingest");
    let t = store
        .trace(&[9; 16])
        .expect("read")
        .expect("visible while incomplete");
    assert_eq!(t.tree().roots.len(), 1);
    let s = store.summary(&[9; 16]).expect("read").expect("summary");
    assert!(!s.has_root);
    assert_eq!(s.root_name, "agent.exec");

    store
        .ingest(&common::request(
            "shoji-runtime",
            vec![common::span(
                9,
                2,
                Some(1),
                "container.start",
                t0 + 20,
                t0 + 50,
            )],
        ))
        .expect("ingest");
    store
        .ingest(&common::request(
            "shoji-runtime",
            vec![common::span(9, 1, None, "run", t0, t0 + 100)],
        ))
        .expect("ingest");
    let t = store.trace(&[9; 16]).expect("read").expect("trace");
    let tree = t.tree();
    assert_eq!(tree.roots.len(), 1, "one root once the parent arrived");
    let order: Vec<(&str, usize)> = tree
        .walk()
        .into_iter()
        .map(|(i, d)| (t.spans[i].name(), d))
        .collect();
    assert_eq!(
        order,
        vec![("run", 0), ("container.start", 1), ("agent.exec", 2)]
    );
    let s = store.summary(&[9; 16]).expect("read").expect("summary");
    assert!(s.has_root);
    assert_eq!(s.root_name, "run");
    assert_eq!(s.span_count, 3);
    assert_eq!((s.start_ns, s.end_ns), (t0, t0 + 100));
    assert_eq!(s.services, vec!["shoji-agent", "shoji-runtime"]);
}

#[test]
fn a_resent_span_is_stored_once() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let req = common::batch([8; 16], 1, 50);
    assert_eq!(store.ingest(&req).expect("ingest").stored, 50);
    let again = store.ingest(&req).expect("ingest");
    assert_eq!((again.stored, again.duplicates), (0, 50));
    assert_eq!(
        store
            .summary(&[8; 16])
            .expect("read")
            .expect("s")
            .span_count,
        50
    );
}
