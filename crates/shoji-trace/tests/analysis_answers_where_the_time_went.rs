//! `summary`, `critical-path` and `diff` on a known trace: self time excludes children
//! (overlapping children counted once), the critical path follows the last-finishing chain,
//! diff finds slower operations and spans present in only one trace.

use crate::common;

use shoji_trace::analysis::{critical_path::critical_path, diff::diff, summary::summarize};
use shoji_trace::model::Trace;
use shoji_trace::store::Store;

const MS: u64 = 1_000_000;
const T0: u64 = 1_700_000_000_000_000_000;

/// run [0,100]: boot [10,60] (source hypervisor), pull [20,40] (runtime, overlaps boot),
/// exec [60,95] (agent) whose child wait [70,90].
fn sample(store: &Store, trace: u8, exec_end: u64, extra: bool) -> Trace {
    let at = |ms: u64| T0 + ms * MS;
    let mut spans = vec![
        common::span(trace, 1, None, "run", at(0), at(100)),
        common::span(trace, 2, Some(1), "boot", at(10), at(60)),
        common::span(trace, 3, Some(1), "pull", at(20), at(40)),
        common::span(trace, 4, Some(1), "exec", at(60), at(exec_end)),
        common::span(trace, 5, Some(4), "wait", at(70), at(90)),
    ];
    for (s, src) in spans
        .iter_mut()
        .zip(["runtime", "hypervisor", "runtime", "agent", "agent"])
    {
        s.attributes.push(common::kv("source", src));
    }
    if extra {
        spans.push(common::span(trace, 6, Some(1), "only.here", at(1), at(2)));
    }
    store
        .ingest(&common::request("svc", spans))
        .expect("ingest");
    store.trace(&[trace; 16]).expect("read").expect("trace")
}

#[test]
fn self_time_by_operation_and_source() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let t = sample(&store, 1, 95, false);
    let s = summarize(&t);
    let get = |k: &str| s.by_operation.iter().find(|g| g.key == k).expect(k).clone();
    // run: 100 minus the union of [10,60], [20,40], [60,95] = 100 - 85.
    assert_eq!(get("svc: run").self_ns, 15 * MS);
    assert_eq!(get("svc: exec").self_ns, 15 * MS);
    assert_eq!(get("svc: boot").self_ns, 50 * MS);
    assert_eq!(s.by_operation[0].key, "svc: boot", "hot spot first");
    let agent = s
        .by_source
        .iter()
        .find(|g| g.key == "agent")
        .expect("agent");
    assert_eq!(
        (agent.count, agent.self_ns, agent.total_ns),
        (2, 35 * MS, 55 * MS)
    );
}

/// A child that returns before the work it started ends (vm.start returns once QEMU runs; the
/// guest boot under it goes on): that work is not the grandparent's own time.
#[test]
fn work_that_outlives_its_parent_is_not_the_grandparents_self_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let at = |ms: u64| T0 + ms * MS;
    let spans = vec![
        common::span(9, 1, None, "run", at(0), at(100)),
        common::span(9, 2, Some(1), "vm.start", at(0), at(10)),
        common::span(9, 3, Some(2), "guest.boot", at(5), at(80)),
    ];
    store
        .ingest(&common::request("svc", spans))
        .expect("ingest");
    let t = store.trace(&[9; 16]).expect("read").expect("trace");
    let s = summarize(&t);
    let get = |k: &str| s.by_operation.iter().find(|g| g.key == k).expect(k).clone();
    // run: 100 minus [0,80] (vm.start's subtree), not minus [0,10] only.
    assert_eq!(get("svc: run").self_ns, 20 * MS);
    assert_eq!(get("svc: vm.start").self_ns, 5 * MS);
    assert_eq!(get("svc: guest.boot").self_ns, 75 * MS);
    // And the boot is on the critical path, through vm.start.
    let names: Vec<String> = critical_path(&t).into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["vm.start", "guest.boot", "run"]);
}

#[test]
fn critical_path_follows_the_last_finishing_chain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let t = sample(&store, 1, 95, false);
    let path: Vec<(String, u64, u64)> = critical_path(&t)
        .into_iter()
        .map(|s| (s.name, (s.start_ns - T0) / MS, (s.end_ns - T0) / MS))
        .collect();
    assert_eq!(
        path,
        vec![
            ("run".into(), 0, 10),
            ("boot".into(), 10, 60),
            ("exec".into(), 60, 70),
            ("wait".into(), 70, 90),
            ("exec".into(), 90, 95),
            ("run".into(), 95, 100),
        ]
    );
}

#[test]
fn diff_finds_slower_operations_and_spans_in_only_one_trace() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Store::open(dir.path()).expect("open");
    let a = sample(&store, 1, 95, false);
    let b = sample(&store, 2, 99, true);
    let d = diff(&a, &b);
    assert_eq!(d.changed[0].operation, "svc: exec");
    assert_eq!(d.changed[0].delta_ns(), 4 * MS as i128);
    assert!(d.only_in_a.is_empty());
    assert_eq!(d.only_in_b.len(), 1);
    assert_eq!(d.only_in_b[0].operation, "svc: only.here");
}
