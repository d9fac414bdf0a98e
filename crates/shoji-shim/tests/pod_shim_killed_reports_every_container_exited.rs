//! The shim of a pod SIGKILLed while a second container of the pod runs: containerd is told
//! that every container of the pod exited, its sandbox container included, CRI shows them
//! exited (none left `CONTAINER_RUNNING`), and removing the pod leaves no process, mount,
//! socket (the shim's own ttRPC socket included) or sandbox directory. The shim's mounts were never in the host's mount table (they
//! live in the shim's mount namespace and go with it).

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{Containerd, CRI_NAMESPACE, HANDLER};

#[test]
fn vm_a_pods_shim_killed_reports_every_container_exited() {
    let c = Containerd::start_cri(&[]);
    let events = c.events(CRI_NAMESPACE);
    let pod_json = c.pod_config("orphaned", "orphaned");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let mut ctrs = Vec::new();
    for name in ["first", "second"] {
        let json = c.container_config(name, &["sleep", "1000"]);
        let id = c.crictl_ok(&["create", "--no-pull", &pod, &json, &pod_json]);
        c.crictl_ok(&["start", &id]);
        ctrs.push(id);
    }
    let root = c.env.sandbox_root();
    let in_shim = containerd::shim_mounts_naming(&pod, &root);
    assert!(
        in_shim
            .iter()
            .any(|l| l.contains(&format!("/{}/rootfs", ctrs[1]))),
        "the shim's namespace holds the pod's shared root filesystems: {in_shim:#?}"
    );
    let on_host = containerd::mounts_naming(&root);
    assert!(
        on_host.is_empty(),
        "sandbox mounts on the host: {on_host:#?}"
    );
    let socket = containerd::pod_shim_socket(&pod);
    assert!(socket.exists(), "the shim's socket {}", socket.display());
    containerd::kill_pod_shim(&pod);

    // Every task of the pod (the pause container and both containers) is reported exited.
    let mut want: std::collections::BTreeSet<&str> = ctrs.iter().map(String::as_str).collect();
    want.insert(&pod);
    let deadline = Instant::now() + Duration::from_secs(30);
    while !want.is_empty() {
        assert!(
            Instant::now() < deadline,
            "no exit seen for {want:?}\ncontainerd log:\n{}",
            c.log()
        );
        if let Some(l) = events.next(Duration::from_millis(200)) {
            if containerd::topic(&l) == Some("/tasks/exit") {
                want.retain(|id| !l.contains(&format!("\"container_id\":\"{id}\"")));
            }
        }
    }
    drop(events);
    // Issue 12: nothing of the killed shim's is mounted on the host (its mounts went with its
    // namespace, whatever containerd's clean-up has done by now).
    let on_host = containerd::mounts_naming(&root);
    assert!(
        on_host.is_empty(),
        "sandbox mounts on the host: {on_host:#?}"
    );
    for id in &ctrs {
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.container_state(id) != "CONTAINER_EXITED" {
            assert!(
                Instant::now() < deadline,
                "container {id} of the killed shim is not shown exited\n{}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let ready = c.crictl_ok(&["pods", "--quiet", "--state", "ready"]);
    assert!(!ready.contains(pod.as_str()), "the pod is still ready");
    c.crictl_ok(&["rm", &ctrs[0], &ctrs[1]]);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    let tasks = containerd::text(&c.ctr_in_ok(CRI_NAMESPACE, &["tasks", "ls", "-q"]).stdout);
    assert!(tasks.trim().is_empty(), "tasks left in containerd: {tasks}");
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
    // The killed shim could not remove its socket; the clean-up containerd runs in its place
    // (`containerd-shim-shoji-v2 delete`) did.
    assert!(
        !socket.exists(),
        "the killed shim's socket {} is left",
        socket.display()
    );
}
