//! A task's resources as containerd sees them come from the container's cgroup in the guest:
//! `ctr task metrics` shows its memory (with the `--memory-limit` applied in the guest), CPU and
//! pids; `ctr task pause` freezes every process of it (its CPU time stands still, status
//! PAUSED) and `resume` thaws it; a task that outgrows its memory limit is OOM-killed in the
//! guest, exits 137, and containerd's event stream has `/tasks/oom` before `/tasks/exit`.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{text, Containerd, RUNTIME};

/// 64 MiB.
const LIMIT: u64 = 64 << 20;

/// `ctr task metrics --format json id`.
fn metrics(c: &Containerd, id: &str) -> serde_json::Value {
    let out = text(
        &c.ctr_ok(&["tasks", "metrics", "--format", "json", id])
            .stdout,
    );
    serde_json::from_str(&out).unwrap_or_else(|e| panic!("ctr task metrics: {e}: {out}"))
}

fn n(v: &serde_json::Value, section: &str, field: &str) -> u64 {
    v[section][field].as_u64().unwrap_or(0)
}

#[test]
fn vm_ctr_task_metrics_and_pause_come_from_the_guest_cgroup() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let limit = LIMIT.to_string();
    // A process that uses a little CPU all the time: its CPU time grows unless frozen.
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        "--memory-limit",
        &limit,
        &image,
        "met-1",
        "sh",
        "-c",
        "while :; do sleep 0.2; done",
    ]);
    let m = metrics(&c, "met-1");
    assert!(n(&m, "memory", "usage") > 0, "memory usage: {m}");
    assert_eq!(n(&m, "memory", "usage_limit"), LIMIT, "the limit: {m}");
    assert!(n(&m, "cpu", "usage_usec") > 0, "cpu usage: {m}");
    assert!(n(&m, "pids", "current") >= 1, "pids: {m}");

    c.ctr_ok(&["tasks", "pause", "met-1"]);
    assert_eq!(c.task_status("met-1").as_deref(), Some("PAUSED"));
    let before = n(&metrics(&c, "met-1"), "cpu", "usage_usec");
    std::thread::sleep(Duration::from_secs(1));
    let frozen = n(&metrics(&c, "met-1"), "cpu", "usage_usec");
    assert_eq!(before, frozen, "a paused task uses no CPU");
    c.ctr_ok(&["tasks", "resume", "met-1"]);
    assert_eq!(c.task_status("met-1").as_deref(), Some("RUNNING"));
    let deadline = Instant::now() + Duration::from_secs(20);
    while n(&metrics(&c, "met-1"), "cpu", "usage_usec") == frozen {
        assert!(Instant::now() < deadline, "the resumed task does not run");
        std::thread::sleep(Duration::from_millis(200));
    }
    // Only a running task pauses.
    c.ctr_ok(&["tasks", "pause", "met-1"]);
    let again = c.ctr(&["tasks", "pause", "met-1"]);
    assert_ne!(again.status.code(), Some(0), "paused twice");
    // A paused task is killed as it is.
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "met-1"]);
    c.wait_task("met-1", |s| s == Some("STOPPED"));
    c.ctr_ok(&["tasks", "delete", "met-1"]);
    c.ctr_ok(&["containers", "delete", "met-1"]);
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

#[test]
fn vm_an_oom_kill_in_the_guest_reaches_containerd_before_the_exit() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let events = c.events(containerd::NAMESPACE);
    // `tail` keeps the line it reads, and /dev/zero has no end of line: it grows until the
    // kernel's OOM killer ends it.
    let out = c.ctr_run_limited(&["--rm"], &image, "oom-1", 32 << 20, "exec tail /dev/zero");
    assert_eq!(
        out.status.code(),
        Some(137),
        "stderr: {}\ncontainerd log:\n{}",
        text(&out.stderr),
        c.log()
    );
    let mut topics = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !topics.iter().any(|t| t == "/tasks/delete") && Instant::now() < deadline {
        if let Some(l) = events.next(Duration::from_millis(200)) {
            if l.contains("oom-1") {
                topics.extend(containerd::topic(&l).map(String::from));
            }
        }
    }
    drop(events);
    let at = |t: &str| topics.iter().position(|x| x == t);
    let (oom, exit) = (at("/tasks/oom"), at("/tasks/exit"));
    assert!(
        oom.is_some() && exit.is_some() && oom < exit,
        "an OOM event, then the exit: {topics:?}"
    );
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}
