//! A pod's shim SIGKILLed cannot end the root of the sandbox's lifetime trace; containerd's
//! `delete` of the sandbox's container after the dead shim ends it in its place, from what the
//! shim recorded in the bundle: the lifetime trace is one tree again (its `sandbox.request`
//! spans under that root), the root has the recorded ids, status Error and
//! `shoji.root_ended_by`. Real containerd with tracing on, real receiver (`shoji trace serve`).

use crate::containerd;

use std::time::Duration;

use containerd::traces::{attr, containerd_tracing_env, lifetime_root, lifetime_trace, serve};
use containerd::{Containerd, CRI_NAMESPACE, HANDLER};

#[test]
fn vm_a_killed_shims_lifetime_root_is_ended_by_delete() {
    let data = tempfile::tempdir().expect("tempdir");
    let (server, http) = serve(data.path());
    let mut c = Containerd::start_cri(&containerd_tracing_env(&http));
    let events = c.events(CRI_NAMESPACE);
    let pod_json = c.pod_config("killed", "killed-pod");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    containerd::kill_pod_shim(&pod);
    // containerd runs the shim's `delete` for the dead task, then reports its exit.
    containerd::wait_exit_event(&c, &events, &pod, &pod);
    drop(events);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.stop();
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();

    let life = lifetime_trace(data.path(), &pod, &["Create", "Start"]);
    // One tree: the requests the shim served before it died hang from the root that stands
    // for the one it could not end.
    let root = lifetime_root(&life);
    assert_eq!(
        attr(root, "shoji.root_ended_by"),
        "containerd-shim-shoji-v2 delete"
    );
    assert_eq!(attr(root, "source"), "runtime");
    let status = root.span.status.as_ref().expect("a status");
    assert_eq!(status.code, 2, "status Error: {status:?}");
    assert!(
        status.message.contains("exited unexpectedly"),
        "{}",
        status.message
    );
    drop(server);
}
