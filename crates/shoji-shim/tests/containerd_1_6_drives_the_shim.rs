//! containerd 1.6 (Debian's, as a Debian host has it) drives the shim with no configuration of
//! Shoji's: its legacy `start` protocol gets a bare socket address and its task API 2 calls are
//! served (ADR 020). Through `ctr`: `run` with the command's output and exit status, a detached
//! task's `exec` (output and status), `kill` and `delete`; through 1.6's CRI (v1): a pod of two
//! containers in one VM, one shim serving it (the second container's `start` finds the pod's
//! socket taken and hands back its address), `exec`, `stop`/`rm`, `stopp`/`rmp`. Afterwards no
//! shim, QEMU, helper, mount, sandbox directory or shim socket in `/run/containerd/s` is left.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{text, Containerd, Release, CRI_NAMESPACE, HANDLER, NAMESPACE};

/// The shim's socket for `group` is gone (every containerd before 2.3 puts it in the host's
/// `/run/containerd/s`, which a dead server or an unclean exit would litter).
fn assert_socket_gone(c: &Containerd, namespace: &str, group: &str) {
    let socket = c.shim_socket(namespace, group);
    assert!(!socket.exists(), "shim socket left: {}", socket.display());
}

#[test]
fn vm_containerd_1_6_ctr_runs_execs_kills_and_deletes_a_task() {
    let mut c = Containerd::start_release(Release::V1_6, &[]);
    let version = text(&c.ctr_ok(&["version"]).stdout);
    assert!(version.contains("Version:  1.6."), "{version}");
    let image = c.import_busybox();

    // Attached: ctr's stdout, stderr and exit status are the command's.
    let out = c.ctr_run_rm(&[], &image, "run-16", "echo hi; echo oops >&2; exit 3");
    c.assert_output(&out, "hi\n", 3);
    assert!(text(&out.stderr).contains("oops"), "{}", text(&out.stderr));
    assert_eq!(c.task_status("run-16"), None, "--rm leaves no task");
    assert_socket_gone(&c, NAMESPACE, "run-16");

    // Detached: an exec's output and status, then kill and delete.
    c.run_sleeper(&image, "det-16");
    assert_eq!(c.task_status("det-16").as_deref(), Some("RUNNING"));
    assert!(c.shim_socket(NAMESPACE, "det-16").exists());
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "det-16",
        "sh",
        "-c",
        "echo from-exec; exit 4",
    ]);
    c.assert_output(&out, "from-exec\n", 4);
    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "det-16"]);
    c.wait_task("det-16", |s| s == Some("STOPPED"));
    let deleted = text(&c.ctr_ok(&["tasks", "delete", "det-16"]).stderr);
    assert!(deleted.contains("exit code 137"), "{deleted}");
    c.ctr_ok(&["containers", "delete", "det-16"]);
    assert_eq!(c.task_status("det-16"), None);

    c.wait_until_nothing_left(Duration::from_secs(10));
    c.assert_nothing_left();
    assert_socket_gone(&c, NAMESPACE, "det-16");
    c.stop();
    c.assert_nothing_left();
}

#[test]
fn vm_containerd_1_6_crictl_runs_a_pod_in_one_vm() {
    let mut c = Containerd::start_cri_release(Release::V1_6, &[]);
    let version = c.crictl_ok(&["version"]);
    assert!(
        version.contains("RuntimeVersion:  1.6.") && version.contains("RuntimeApiVersion:  v1"),
        "{version}"
    );
    let pod_json = c.pod_config("p16", "pod-16");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let one = c.container_config("one", &["sh", "-c", "echo one up; sleep 1000"]);
    let two = c.container_config("two", &["sleep", "1000"]);
    let one = c.crictl_ok(&["create", "--no-pull", &pod, &one, &pod_json]);
    c.crictl_ok(&["start", &one]);
    let two = c.crictl_ok(&["create", "--no-pull", &pod, &two, &pod_json]);
    c.crictl_ok(&["start", &two]);
    for id in [&one, &two] {
        assert_eq!(c.container_state(id), "CONTAINER_RUNNING");
    }
    let qemu = c.qemu_processes();
    assert_eq!(qemu.len(), 1, "one VM for the pod: {qemu:?}");
    // One shim serves the pod (containerd/pod_shim asserts there is exactly one).
    containerd::pod_shim(&pod);
    assert_eq!(
        containerd::pod_shim_socket(&pod),
        c.shim_socket(CRI_NAMESPACE, &pod)
    );
    // Both containers are in the pod's VM: the same hostname and network namespace.
    for id in [&one, &two] {
        assert_eq!(c.crictl_ok(&["exec", id, "hostname"]), "pod-16");
    }
    let net = |id: &str| c.crictl_ok(&["exec", id, "readlink", "/proc/self/ns/net"]);
    assert_eq!(net(&one), net(&two));
    let out = c.crictl(&["exec", "--sync", &two, "sh", "-c", "exit 3"]);
    assert!(
        text(&out.stderr).contains("exited with 3"),
        "{}",
        text(&out.stderr)
    );
    let log = c.inspect("inspect", &one)["status"]["logPath"]
        .as_str()
        .expect("a log path")
        .to_string();
    // The log reaches the CRI log file (shortly after the start).
    let deadline = Instant::now() + Duration::from_secs(30);
    let logged = loop {
        let l = std::fs::read_to_string(&log).unwrap_or_default();
        if l.contains(" stdout F one up") || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(logged.contains(" stdout F one up"), "CRI log: {logged}");

    c.crictl_ok(&["stop", &two]);
    c.crictl_ok(&["rm", &two]);
    assert_eq!(
        c.qemu_processes().len(),
        1,
        "the pod's VM outlives a container"
    );
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.wait_until_nothing_left(Duration::from_secs(10));
    c.assert_nothing_left();
    assert_socket_gone(&c, CRI_NAMESPACE, &pod);
    c.stop();
    c.assert_nothing_left();
}
