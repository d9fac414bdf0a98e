//! Through CRI (`crictl`, containerd 2.4, runtime handler `shoji`), a container whose
//! `namespace_options.pid` is POD shares its pod's PID namespace: it runs in the pause
//! container's, in the pod's VM, and sees the pause process as PID 1 (as under runc, which joins
//! the namespace the spec's `linux.namespaces` names). A container of the same pod with
//! CONTAINER pid mode has a PID namespace of its own, where its command is PID 1 and no pause
//! process is to be seen. critest's `NamespaceOption runtime should support PodPID` checks the
//! first (issue 12).

use crate::containerd;

use containerd::{text, Containerd, HANDLER};

/// CRI's `NamespaceMode` numbers.
const POD: u32 = 0;
const CONTAINER: u32 = 1;

fn pid_mode(mode: u32) -> serde_json::Value {
    serde_json::json!({"security_context": {"namespace_options": {"pid": mode}}})
}

fn exec_ok(c: &Containerd, id: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", id];
    args.extend_from_slice(cmd);
    let out = c.crictl(&args);
    assert_eq!(
        out.status.code(),
        Some(0),
        "crictl exec {id} {cmd:?}: {out:?}"
    );
    text(&out.stdout).trim().to_string()
}

/// Every process the container sees, one per line: `PID: command line` (`/proc/N/cmdline`, its
/// arguments joined by spaces).
fn processes(c: &Containerd, id: &str) -> Vec<String> {
    let out = exec_ok(
        c,
        id,
        &[
            "sh",
            "-c",
            "for d in /proc/[0-9]*; do echo \"${d#/proc/}: $(tr '\\0' ' ' < $d/cmdline)\"; done",
        ],
    );
    out.lines().map(|l| l.trim_end().to_string()).collect()
}

fn pid_1(seen: &[String]) -> &str {
    seen.iter()
        .find_map(|l| l.strip_prefix("1: "))
        .unwrap_or_else(|| panic!("no PID 1 among {seen:?}"))
}

#[test]
fn vm_crictl_pod_pid_mode_shares_the_pause_pid_namespace_and_container_mode_does_not() {
    let c = Containerd::start_cri(&[]);
    let pod_json = c.pod_config("pids", "pids-pod");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);

    let shared_json = c.container_config_linux("shared", &["sleep", "1001"], pid_mode(POD));
    let own_json = c.container_config_linux("own", &["sleep", "1002"], pid_mode(CONTAINER));
    let shared = c.crictl_ok(&["create", "--no-pull", &pod, &shared_json, &pod_json]);
    c.crictl_ok(&["start", &shared]);
    let own = c.crictl_ok(&["create", "--no-pull", &pod, &own_json, &pod_json]);
    c.crictl_ok(&["start", &own]);
    assert_eq!(c.qemu_processes().len(), 1, "one VM for the pod");

    // POD: the pause process is PID 1 of the container's namespace, its own command beside it.
    let seen = processes(&c, &shared);
    assert_eq!(
        pid_1(&seen),
        "/pause",
        "PID 1 of a POD-mode container is the pause process"
    );
    assert!(
        seen.iter().any(|l| l.ends_with(": sleep 1001")),
        "the container's own command: {seen:?}"
    );
    assert!(
        !seen.iter().any(|l| l.contains("sleep 1002")),
        "the CONTAINER-mode container's processes are in another namespace: {seen:?}"
    );

    // CONTAINER: its own command is PID 1 and no pause process is there.
    let seen = processes(&c, &own);
    assert_eq!(
        pid_1(&seen),
        "sleep 1002",
        "PID 1 of a CONTAINER-mode container is its command"
    );
    assert!(
        !seen
            .iter()
            .any(|l| l.contains("/pause") || l.contains("sleep 1001")),
        "nothing of the pod's PID namespace is seen: {seen:?}"
    );
    let ns = |id: &str| exec_ok(&c, id, &["readlink", "/proc/1/ns/pid"]);
    assert_ne!(ns(&shared), ns(&own), "two PID namespaces");

    // Stopping the POD-mode container leaves the pause process (and the pod) running.
    c.crictl_ok(&["stop", "--timeout", "1", &shared]);
    c.crictl_ok(&["rm", &shared]);
    assert_eq!(
        c.inspect("inspectp", &pod)["status"]["state"],
        "SANDBOX_READY"
    );
    c.crictl_ok(&["stop", "--timeout", "1", &own]);
    c.crictl_ok(&["rm", &own]);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.wait_until_nothing_left(std::time::Duration::from_secs(20));
    c.assert_nothing_left();
}
