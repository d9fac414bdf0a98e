//! Issue 12 ("OOM and exits reach containerd as events in order"): a process of a container
//! killed by the guest's OOM killer while the container's init keeps running reaches containerd
//! as `/tasks/oom` when it happens, not only with an exit: the agent watches the container's
//! cgroup `memory.events` and the shim long-polls it (`WaitOom`).

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::Containerd;

#[test]
fn vm_an_oom_kill_of_a_child_reaches_containerd_while_the_task_runs() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let events = c.events(containerd::NAMESPACE);
    // The init (a shell, the cgroup's smallest process) starts a child that grows past the
    // limit (`tail` keeps the line it reads, and /dev/zero has no end of line) and then sleeps.
    let script = "tail /dev/zero; echo child gone; sleep 1000";
    let out = c.ctr_run_limited(&["-d"], &image, "oom-child", 32 << 20, script);
    assert_eq!(out.status.code(), Some(0), "ctr run -d: {}", c.log());
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut seen = Vec::new();
    loop {
        assert!(
            Instant::now() < deadline,
            "no /tasks/oom for the running task; its events: {seen:?}\ncontainerd log:\n{}",
            c.log()
        );
        let Some(l) = events.next(Duration::from_millis(200)) else {
            continue;
        };
        if !l.contains("\"container_id\":\"oom-child\"") {
            continue;
        }
        let topic = containerd::topic(&l).unwrap_or_default().to_string();
        assert_ne!(topic, "/tasks/exit", "the task exited: {seen:?}");
        seen.push(topic.clone());
        if topic == "/tasks/oom" {
            break;
        }
    }
    assert_eq!(
        c.task_status("oom-child").as_deref(),
        Some("RUNNING"),
        "the task runs on after the OOM kill of its child"
    );
    // One kill, one event: nothing more comes while the shell sleeps.
    let more: Vec<String> = std::iter::from_fn(|| events.next(Duration::from_secs(2)))
        .filter(|l| l.contains("\"container_id\":\"oom-child\""))
        .collect();
    assert!(more.is_empty(), "events after the OOM: {more:?}");
    assert_eq!(c.task_status("oom-child").as_deref(), Some("RUNNING"));
    drop(events);
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "oom-child"]);
    c.wait_task("oom-child", |s| s == Some("STOPPED"));
    c.ctr_ok(&["tasks", "delete", "oom-child"]);
    c.ctr_ok(&["containers", "delete", "oom-child"]);
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}
