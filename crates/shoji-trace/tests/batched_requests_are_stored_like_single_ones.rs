//! `Store::ingest_batch` (one transaction for a backlog of requests, as the runtime's span
//! pipeline uses it) stores exactly what the same requests ingested one by one would: every
//! span once, summaries merged across the requests of the batch, duplicates skipped.

use crate::common;

use shoji_trace::store::Store;

#[test]
fn batched_requests_are_stored_like_single_ones() {
    let t0 = 1_700_000_000_000_000_000;
    let reqs = vec![
        // Trace 1 in two requests, the root in the second; trace 2 from another service.
        common::request(
            "shoji-agent",
            vec![
                common::span(1, 2, Some(1), "container.create", t0 + 10, t0 + 20),
                common::span(1, 3, Some(1), "process.wait", t0 + 20, t0 + 90),
            ],
        ),
        common::request(
            "shoji-runtime",
            vec![common::span(1, 1, None, "run", t0, t0 + 100)],
        ),
        common::request(
            "shoji-agent",
            vec![common::span(2, 1, None, "agent", t0 + 5, t0 + 6)],
        ),
        // A retry inside the same batch: stored once.
        common::request(
            "shoji-runtime",
            vec![common::span(1, 1, None, "run", t0, t0 + 100)],
        ),
    ];

    let one_by_one = tempfile::tempdir().expect("tempdir");
    let single = Store::open(one_by_one.path()).expect("open");
    for r in &reqs {
        single.ingest(r).expect("ingest");
    }
    let batched_dir = tempfile::tempdir().expect("tempdir");
    let batched = Store::open(batched_dir.path()).expect("open");
    let stats = batched.ingest_batch(&reqs).expect("ingest_batch");
    assert_eq!((stats.stored, stats.duplicates, stats.rejected), (4, 1, 0));

    for trace in [[1u8; 16], [2u8; 16]] {
        let a = single.summary(&trace).expect("read").expect("summary");
        let b = batched.summary(&trace).expect("read").expect("summary");
        assert_eq!(
            (
                a.span_count,
                a.start_ns,
                a.end_ns,
                &a.root_name,
                &a.root_service,
                a.has_root,
                &a.services
            ),
            (
                b.span_count,
                b.start_ns,
                b.end_ns,
                &b.root_name,
                &b.root_service,
                b.has_root,
                &b.services
            )
        );
        let names = |s: &Store| {
            let mut n: Vec<String> = s
                .trace(&trace)
                .expect("read")
                .expect("trace")
                .spans
                .iter()
                .map(|sp| sp.name().to_string())
                .collect();
            n.sort();
            n
        };
        assert_eq!(names(&single), names(&batched));
    }
    let s1 = batched.summary(&[1; 16]).expect("read").expect("summary");
    assert_eq!(s1.span_count, 3);
    assert_eq!(s1.root_name, "run");
    assert!(s1.has_root);
    assert_eq!(s1.services, ["shoji-agent", "shoji-runtime"]);
    assert_eq!(
        batched.services().expect("services"),
        single.services().expect("services")
    );
}
