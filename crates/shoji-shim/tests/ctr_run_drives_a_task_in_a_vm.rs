//! containerd 2.x drives a Shoji microVM through the shim: `ctr run --runtime
//! io.containerd.shoji.v2` runs the command in a VM with its output on ctr's stdout and its exit
//! status as ctr's; containerd's default seccomp profile applies in the guest; a detached task
//! is listed, runs an exec, is killed and deleted; afterwards no shim, QEMU, helper, mount or
//! sandbox directory is left.

use crate::containerd;
use std::time::{Duration, Instant};

use containerd::{text, Containerd, RUNTIME};

#[test]
fn vm_ctr_run_prints_the_output_and_exits_with_the_status() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let started = Instant::now();
    let out = c.ctr_run_rm(&[], &image, "run-1", "echo hi; echo oops >&2; exit 3");
    let took = started.elapsed();
    c.assert_output(&out, "hi\n", 3);
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

/// containerd's default seccomp profile (`ctr run --seccomp`), compiled by the shim on the host
/// (ADR 028), is the container's filter in the guest: `unshare` without `CAP_SYS_ADMIN` gets
/// EPERM.
#[test]
fn vm_ctr_run_seccomp_applies_containerds_default_profile_in_the_guest() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let script = "grep Seccomp: /proc/self/status; \
        unshare -U true 2>&1 | grep -q 'Operation not permitted' && echo unshare=EPERM";
    let out = c.ctr_run_rm(&["--seccomp"], &image, "sec-1", script);
    c.assert_output(&out, "Seccomp:\t2\nunshare=EPERM\n", 0);
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

#[test]
fn vm_ctr_run_detached_then_exec_kill_and_delete() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    c.run_sleeper(&image, "det-1");
    assert_eq!(c.task_status("det-1").as_deref(), Some("RUNNING"));
    let ps = text(&c.ctr_ok(&["tasks", "ps", "det-1"]).stdout);
    assert_eq!(
        ps.lines().count(),
        2,
        "one process (the init) in the VM: {ps}"
    );
    // `sleep` is PID 1 of its namespace: only SIGKILL ends it.
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "det-1"]);
    c.wait_task("det-1", |s| s == Some("STOPPED"));
    // ctr warns with the deleted task's exit status, which the shim's Delete answered.
    let deleted = text(&c.ctr_ok(&["tasks", "delete", "det-1"]).stderr);
    assert!(deleted.contains("exit code 137"), "{deleted}");
    c.ctr_ok(&["containers", "delete", "det-1"]);
    assert_eq!(c.task_status("det-1"), None);
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

/// A shim SIGKILLed under a running task: its VM and helpers die with it (parent-death signal),
/// containerd runs the shim's `delete` action, which unmounts the rootfs and removes the
/// sandbox directory, and the task is gone from containerd.
#[test]
fn vm_a_killed_shim_leaves_nothing_behind() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    c.run_sleeper(&image, "dead-1");
    let ls = text(&c.ctr_ok(&["tasks", "ls"]).stdout);
    // containerd is told the shim's pid.
    let pid: i32 = ls
        .lines()
        .find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&"dead-1")).then(|| f.get(1).and_then(|p| p.parse().ok()))?
        })
        .unwrap_or_else(|| panic!("no pid for dead-1 in {ls}"));
    let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    assert!(
        cmdline.contains("containerd-shim-shoji-v2"),
        "pid {pid} is {cmdline:?}"
    );
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the shim");
    c.wait_task("dead-1", |s| s.is_none_or(|s| s == "STOPPED"));
    let _ = c.ctr(&["tasks", "delete", "dead-1"]);
    c.ctr_ok(&["containers", "delete", "dead-1"]);
    // QEMU and the helpers go with the shim; give the kernel a moment to reap them.
    c.wait_until_nothing_left(Duration::from_secs(10));
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

/// `ctr run -t` (ctr on a terminal): the process gets a terminal in the guest, its output comes
/// back through ctr's, and its exit status is ctr's.
#[test]
fn vm_ctr_run_t_gives_the_process_a_terminal() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    let mut cmd = c.ctr_cmd();
    cmd.args(["run", "-t", "--runtime", RUNTIME, "--rm", &image, "tty-1"]);
    cmd.args(["sh", "-c", "[ -t 0 ] && [ -t 1 ] && echo tty-yes; exit 5"]);
    let (out, code) = containerd::common::run_in_pty(cmd);
    assert!(
        out.contains("tty-yes"),
        "{out}\ncontainerd log:\n{}",
        c.log()
    );
    assert_eq!(code, Some(5), "{out}");
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}
