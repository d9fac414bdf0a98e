//! Two pods run at once, each in its own VM; the VM of one is killed under it (QEMU SIGKILLed):
//! containerd is told that every container of that pod, its sandbox container included, exited
//! (`/tasks/exit` events), while the other pod runs on untouched; removing both pods leaves no
//! shim, QEMU, helper, mount, socket or sandbox directory.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{Containerd, CRI_NAMESPACE, HANDLER};

#[test]
fn vm_a_pods_vm_killed_under_it_and_a_second_pod_beside_it() {
    let c = Containerd::start_cri(&[]);
    let events = c.events(CRI_NAMESPACE);

    let mut pods = Vec::new();
    for name in ["doomed", "survivor"] {
        let pod_json = c.pod_config(name, name);
        let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
        let ctr_json = c.container_config(&format!("{name}-app"), &["sleep", "1000"]);
        let ctr = c.crictl_ok(&["create", "--no-pull", &pod, &ctr_json, &pod_json]);
        c.crictl_ok(&["start", &ctr]);
        pods.push((pod, ctr));
    }
    let [(doomed, doomed_ctr), (survivor, survivor_ctr)] = &pods[..] else {
        unreachable!("two pods");
    };
    assert_eq!(c.qemu_processes().len(), 2, "a VM per pod");

    let sandbox = c.env.sandbox_root().join(doomed).display().to_string();
    let qemu = containerd::pids_of("qemu-system", &sandbox);
    assert_eq!(qemu.len(), 1, "the doomed pod's QEMU: {qemu:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(qemu[0]),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing QEMU");

    // Both of the pod's tasks (the sandbox's pause container and the app) are reported exited.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut exited = std::collections::BTreeSet::new();
    while exited.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "exits seen: {exited:?}\ncontainerd log:\n{}",
            c.log()
        );
        if let Some(l) = events.next(Duration::from_millis(200)) {
            if containerd::topic(&l) == Some("/tasks/exit") {
                for id in [doomed, doomed_ctr] {
                    if l.contains(&format!("\"container_id\":\"{id}\"")) {
                        exited.insert(id.clone());
                    }
                }
            }
        }
    }
    drop(events);
    let deadline = Instant::now() + Duration::from_secs(30);
    while c.container_state(doomed_ctr) != "CONTAINER_EXITED" {
        assert!(
            Instant::now() < deadline,
            "the app of the killed VM is not shown exited"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    // The other pod is untouched.
    assert_eq!(c.container_state(survivor_ctr), "CONTAINER_RUNNING");
    let out = c.crictl_ok(&["exec", survivor_ctr, "echo", "alive"]);
    assert_eq!(out, "alive");
    assert_eq!(c.qemu_processes().len(), 1, "the survivor's VM");

    for pod in [doomed, survivor] {
        c.crictl_ok(&["stopp", pod]);
        c.crictl_ok(&["rmp", pod]);
    }
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
}
