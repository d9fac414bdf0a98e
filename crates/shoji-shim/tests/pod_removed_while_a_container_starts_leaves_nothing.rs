//! A pod removed (`crictl rmp --force`) while one of its containers is being created or
//! started: whichever wins the race, containerd ends with no pod, container or task of it, and
//! nothing is left on the host: no shim, QEMU or helper, mount, network namespace or sandbox
//! directory.

use crate::containerd;

use std::time::Duration;

use containerd::{text, Containerd, CRI_NAMESPACE, HANDLER};

/// Runs `crictl rmp --force` of a fresh pod `delay` after `race` began in a thread with the
/// pod's id and its config file, then checks that nothing of the pod is left.
fn remove_pod_during(
    c: &Containerd,
    name: &str,
    delay: Duration,
    race: fn(&Containerd, &str, &str),
) {
    let pod_json = c.pod_config(name, name);
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    std::thread::scope(|s| {
        let racer = s.spawn(|| race(c, &pod, &pod_json));
        std::thread::sleep(delay);
        remove_pod(c, &pod);
        racer.join().expect("the racing crictl");
    });
    // A container whose create won the race can outlive the pod record briefly; the kubelet
    // removes such a container, and so does this.
    for id in c.crictl_ok(&["ps", "--all", "--quiet"]).lines() {
        let _ = c.crictl(&["rm", "--force", id]);
    }
    let pods = c.crictl_ok(&["pods", "--quiet"]);
    assert!(pods.is_empty(), "pods left: {pods}");
    let ctrs = c.crictl_ok(&["ps", "--all", "--quiet"]);
    assert!(ctrs.is_empty(), "containers left: {ctrs}");
    for what in ["tasks", "containers"] {
        let ls = text(&c.ctr_in_ok(CRI_NAMESPACE, &[what, "ls", "-q"]).stdout);
        assert!(ls.trim().is_empty(), "{what} left in containerd: {ls}");
    }
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
    let netns = c.dir.join("state/io.containerd.grpc.v1.cri/netns");
    let left: Vec<_> = std::fs::read_dir(&netns)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(left.is_empty(), "network namespaces left: {left:?}");
}

/// `crictl rmp --force`, again while containerd answers that a container is still running: a
/// container whose start returned after StopPodSandbox had stopped the pod's running ones is
/// seen running until containerd handles its exit event (the VM went with the pod), and the
/// kubelet's removal retries the same way. Anything else fails the test.
fn remove_pod(c: &Containerd, pod: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let out = c.crictl(&["rmp", "--force", pod]);
        if out.status.success() {
            return;
        }
        let err = text(&out.stderr);
        assert!(
            err.contains("is still running") && std::time::Instant::now() < deadline,
            "crictl rmp --force {pod} failed: {err}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// `crictl create` then `start`: either may fail once the pod is gone.
fn create_and_start(c: &Containerd, pod: &str, pod_json: &str) {
    let json = c.container_config(&format!("{pod}-app"), &["sleep", "1000"]);
    let out = c.crictl(&["create", "--no-pull", pod, &json, pod_json]);
    if out.status.success() {
        let id = text(&out.stdout).trim().to_string();
        let _ = c.crictl(&["start", &id]);
    }
}

#[test]
fn vm_a_pod_removed_while_a_container_starts_leaves_nothing() {
    let c = Containerd::start_cri(&[]);
    // At once: the removal meets the create in containerd (or precedes it).
    remove_pod_during(&c, "early", Duration::ZERO, create_and_start);
    // Soon after: the removal meets the start as containerd connects it to the pod's shim, and
    // the sandbox's task (and bundle) can go before the container's. The shim's socket was
    // left behind here, when the server found it through the sandbox's bundle.
    remove_pod_during(&c, "soon", Duration::from_millis(150), create_and_start);
    // Later: the removal meets the start, while the shim adds the container to the VM.
    remove_pod_during(&c, "late", Duration::from_millis(700), create_and_start);
}
