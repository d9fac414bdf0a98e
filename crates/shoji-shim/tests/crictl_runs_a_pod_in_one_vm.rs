//! Through CRI (`crictl` against a real containerd 2.4 and its CRI plugin, runtime handler
//! `shoji`), a pod sandbox is ONE VM and every container of the pod runs in it: `runp` boots it
//! for the pause container, `create`/`start` run the pod's containers in the same guest (one QEMU
//! for the pod), each with its own root filesystem, sharing the pod's network (localhost), UTS
//! (hostname), IPC and (CRI's default pid mode, POD) PID namespaces; `exec`, `logs` (the CRI log file),
//! `inspect`/`inspectp`, `stop`, `rm`, `stopp` and `rmp` work, and after `rmp` nothing is left.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{text, Containerd, HANDLER};

fn state(c: &Containerd, what: &str, id: &str) -> String {
    c.inspect(what, id)["status"]["state"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

/// `crictl exec id cmd...`: its stdout and exit status.
fn exec(c: &Containerd, id: &str, cmd: &[&str]) -> (String, Option<i32>) {
    let mut args = vec!["exec", id];
    args.extend_from_slice(cmd);
    let out = c.crictl(&args);
    (text(&out.stdout), out.status.code())
}

fn exec_ok(c: &Containerd, id: &str, cmd: &[&str]) -> String {
    let (out, code) = exec(c, id, cmd);
    assert_eq!(code, Some(0), "crictl exec {id} {cmd:?}: {out}");
    out.trim().to_string()
}

/// Waits (bounded) until `f` holds.
fn eventually(what: &str, max: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + max;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn vm_crictl_runs_a_pod_of_two_containers_in_one_vm() {
    let c = Containerd::start_cri(&[]);
    let pod_json = c.pod_config("web", "web-pod");
    let started = Instant::now();
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let runp = started.elapsed();
    assert_eq!(state(&c, "inspectp", &pod), "SANDBOX_READY");
    assert_eq!(c.qemu_processes().len(), 1, "runp boots the pod's VM");

    let server_json = c.container_config(
        "server",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello from the server > /tmp/www/index.html && \
             echo server up && echo server errors >&2 && exec httpd -f -p 127.0.0.1:8080 -h /tmp/www",
        ],
    );
    let client_json = c.container_config("client", &["sleep", "1000"]);
    let server = c.crictl_ok(&["create", "--no-pull", &pod, &server_json, &pod_json]);
    c.crictl_ok(&["start", &server]);
    // ADR 020's figure: runp, then create and start of the first container (and the checks
    // between them).
    eprintln!(
        "pod start to first container running: {:.2} s (runp {:.2} s)",
        started.elapsed().as_secs_f64(),
        runp.as_secs_f64()
    );
    let client = c.crictl_ok(&["create", "--no-pull", &pod, &client_json, &pod_json]);
    assert_eq!(state(&c, "inspect", &client), "CONTAINER_CREATED");
    c.crictl_ok(&["start", &client]);
    for id in [&server, &client] {
        assert_eq!(state(&c, "inspect", id), "CONTAINER_RUNNING");
    }
    let qemu = c.qemu_processes();
    assert_eq!(qemu.len(), 1, "one VM for the whole pod: {qemu:?}");
    let listed = c.crictl_ok(&["ps", "--quiet", "--pod", &pod]);
    assert_eq!(listed.lines().count(), 2, "crictl ps: {listed}");

    // Logs: the container's stdout and stderr reach containerd's CRI log file and `crictl logs`.
    let log_path = c.inspect("inspect", &server)["status"]["logPath"]
        .as_str()
        .expect("a log path")
        .to_string();
    eventually("the server's log", Duration::from_secs(30), || {
        std::fs::read_to_string(&log_path).is_ok_and(|l| l.contains("server errors"))
    });
    let log = std::fs::read_to_string(&log_path).expect("the CRI log");
    assert!(
        log.lines().any(|l| l.contains(" stdout F server up")),
        "CRI log format, stdout: {log}"
    );
    assert!(
        log.lines().any(|l| l.contains(" stderr F server errors")),
        "CRI log format, stderr: {log}"
    );
    let logs = text(
        &c.crictl_cmd()
            .args(["logs", &server])
            .output()
            .expect("logs")
            .stdout,
    );
    assert!(logs.contains("server up"), "crictl logs: {logs}");

    // The pod's network: the client reaches the server on localhost.
    eventually("the server to listen", Duration::from_secs(30), || {
        exec(&c, &client, &["wget", "-qO-", "http://127.0.0.1:8080/"]).1 == Some(0)
    });
    assert_eq!(
        exec_ok(&c, &client, &["wget", "-qO-", "http://127.0.0.1:8080/"]),
        "hello from the server"
    );
    // The pod's hostname and UTS, IPC and PID namespaces (crictl_pod_pid_namespace_is_the_pause_
    // containers.rs tells POD and CONTAINER pid modes apart).
    for id in [&server, &client] {
        assert_eq!(exec_ok(&c, id, &["hostname"]), "web-pod");
    }
    let ns =
        |id: &str, kind: &str| exec_ok(&c, id, &["readlink", &format!("/proc/self/ns/{kind}")]);
    for kind in ["uts", "ipc", "net", "pid"] {
        assert_eq!(
            ns(&server, kind),
            ns(&client, kind),
            "{kind} namespace shared"
        );
    }
    // Each container has its own root filesystem.
    exec_ok(&c, &client, &["sh", "-c", "echo mine > /tmp/client-only"]);
    assert_eq!(exec(&c, &server, &["cat", "/tmp/client-only"]).1, Some(1));
    // An exec's exit status comes back (ExecSync; crictl itself exits 1 and names the status).
    let out = c.crictl(&["exec", "--sync", &client, "sh", "-c", "exit 3"]);
    let err = text(&out.stderr);
    assert!(err.contains("exited with 3"), "{err}");

    // Stop and remove the containers, then the pod.
    c.crictl_ok(&["stop", "--timeout", "1", &server]);
    assert_eq!(state(&c, "inspect", &server), "CONTAINER_EXITED");
    c.crictl_ok(&["rm", &server]);
    assert_eq!(
        c.qemu_processes().len(),
        1,
        "the pod's VM outlives one of its containers"
    );
    assert_eq!(exec_ok(&c, &client, &["echo", "still here"]), "still here");
    c.crictl_ok(&["stop", "--timeout", "1", &client]);
    c.crictl_ok(&["rm", &client]);
    c.crictl_ok(&["stopp", &pod]);
    assert_eq!(state(&c, "inspectp", &pod), "SANDBOX_NOTREADY");
    c.crictl_ok(&["rmp", &pod]);
    assert_eq!(c.crictl_ok(&["pods", "--quiet"]), "", "no pod is listed");
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
}
