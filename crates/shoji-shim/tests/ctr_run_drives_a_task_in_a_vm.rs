//! containerd 2.x drives a Shoji microVM through the shim: `ctr run --runtime
//! io.containerd.shoji.v2` runs the command in a VM with its output on ctr's stdout and its exit
//! status as ctr's; a detached task is listed, runs an exec, is killed and deleted; afterwards
//! no shim, QEMU, helper, mount or sandbox directory is left.

mod containerd;
use std::time::{Duration, Instant};

use containerd::{text, Containerd, RUNTIME};

#[test]
fn vm_ctr_run_prints_the_output_and_exits_with_the_status() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let started = Instant::now();
    let out = c.ctr(&[
        "run",
        "--runtime",
        RUNTIME,
        "--rm",
        &image,
        "run-1",
        "sh",
        "-c",
        "echo hi; echo oops >&2; exit 3",
    ]);
    let took = started.elapsed();
    assert_eq!(
        (text(&out.stdout).as_str(), out.status.code()),
        ("hi\n", Some(3)),
        "stderr: {}\ncontainerd log:\n{}",
        text(&out.stderr),
        c.log()
    );
    assert!(
        text(&out.stderr).contains("oops"),
        "stderr: {}",
        text(&out.stderr)
    );
    eprintln!("ctr run --rm to exit: {took:?}");
    assert_eq!(c.task_status("run-1"), None, "--rm leaves no task");
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

#[test]
fn vm_ctr_run_detached_then_exec_kill_and_delete() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    c.ctr_ok(&[
        "run",
        "-d",
        "--runtime",
        RUNTIME,
        &image,
        "det-1",
        "sleep",
        "1000",
    ]);
    assert_eq!(c.task_status("det-1").as_deref(), Some("RUNNING"));
    let ps = text(&c.ctr_ok(&["tasks", "ps", "det-1"]).stdout);
    assert_eq!(
        ps.lines().count(),
        2,
        "one process (the init) in the VM: {ps}"
    );
    // `sleep` is PID 1 of its namespace: only SIGKILL ends it.
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "det-1"]);
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.task_status("det-1").as_deref() != Some("STOPPED") {
        assert!(
            Instant::now() < deadline,
            "det-1 did not stop: {:?}",
            c.task_status("det-1")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    // ctr warns with the deleted task's exit status, which the shim's Delete answered.
    let deleted = text(&c.ctr_ok(&["tasks", "delete", "det-1"]).stderr);
    assert!(deleted.contains("exit code 137"), "{deleted}");
    c.ctr_ok(&["containers", "delete", "det-1"]);
    assert_eq!(c.task_status("det-1"), None);
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}
