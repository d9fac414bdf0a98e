//! containerd SIGKILLed and started again while Shoji tasks run: the shims serve on, and the
//! restarted containerd finds them (the `address` file in its state directory) and drives them
//! as before. A task that ended while containerd was down is shown stopped with its exit
//! status; the running ones are listed running, take `exec`, `kill` and `delete`, and their
//! exits reach containerd as events. Through `ctr` and through CRI (`crictl`); nothing is left
//! afterwards.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{text, Containerd, CRI_NAMESPACE, HANDLER, RUNTIME};

/// How long containerd stays down: longer than the brief task below lives, so that it ends
/// while nobody listens to the shim.
const DOWN: Duration = Duration::from_secs(6);

#[test]
fn vm_ctr_tasks_survive_a_containerd_restart() {
    let mut c = Containerd::start(&[]);
    let image = c.import_busybox();
    c.run_sleeper(&image, "live-1");
    let brief = ["sh", "-c", "sleep 3; exit 7"];
    let mut run = vec!["run", "-d", "--runtime", RUNTIME, &image, "brief-1"];
    run.extend(brief);
    c.ctr_ok(&run);

    c.kill_and_restart_after(DOWN);

    // The shims are found again: the running task runs, the one that ended while containerd
    // was down is stopped, with its status.
    let deadline = Instant::now() + Duration::from_secs(20);
    while c.task_status("brief-1").as_deref() != Some("STOPPED") {
        assert!(
            Instant::now() < deadline,
            "the task that ended while containerd was down is {:?}\ncontainerd log:\n{}",
            c.task_status("brief-1"),
            c.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    assert_eq!(c.task_status("live-1").as_deref(), Some("RUNNING"));
    // ctr 2.x says the exit status as a warning.
    let deleted = text(&c.ctr_ok(&["tasks", "delete", "brief-1"]).stderr);
    assert!(
        deleted.contains("exit code 7"),
        "ctr tasks delete gives the exit status: {deleted}"
    );
    c.ctr_ok(&["containers", "delete", "brief-1"]);

    let events = c.events(containerd::NAMESPACE);
    let out = c.ctr(&[
        "tasks",
        "exec",
        "--exec-id",
        "e1",
        "live-1",
        "sh",
        "-c",
        "echo after; exit 4",
    ]);
    assert_eq!(text(&out.stdout).trim(), "after");
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    containerd::wait_exit_event(&c, &events, "live-1", "e1");

    c.ctr_ok(&["tasks", "kill", "-s", "SIGKILL", "live-1"]);
    containerd::wait_exit_event(&c, &events, "live-1", "live-1");
    drop(events);
    c.wait_task("live-1", |s| s == Some("STOPPED"));
    c.ctr_ok(&["tasks", "delete", "live-1"]);
    c.ctr_ok(&["containers", "delete", "live-1"]);
    c.wait_until_nothing_left(Duration::from_secs(10));
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}

fn state(c: &Containerd, id: &str) -> (String, i64) {
    let v = c.inspect("inspect", id);
    (
        v["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string(),
        v["status"]["exitCode"].as_i64().unwrap_or(-1),
    )
}

#[test]
fn vm_crictl_pod_survives_a_containerd_restart() {
    let mut c = Containerd::start_cri(&[]);
    let pod_json = c.pod_config("lasting", "lasting");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let mut ids = Vec::new();
    for (name, cmd) in [
        ("app", &["sleep", "1000"][..]),
        ("brief", &["sh", "-c", "sleep 3; exit 7"][..]),
    ] {
        let json = c.container_config(name, cmd);
        let id = c.crictl_ok(&["create", "--no-pull", &pod, &json, &pod_json]);
        c.crictl_ok(&["start", &id]);
        ids.push(id);
    }
    let [app, brief] = &ids[..] else {
        unreachable!("two containers");
    };

    c.kill_and_restart_after(DOWN);

    let deadline = Instant::now() + Duration::from_secs(30);
    while state(&c, brief).0 != "CONTAINER_EXITED" {
        assert!(
            Instant::now() < deadline,
            "the container that ended while containerd was down is not shown exited\n{}",
            c.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert_eq!(state(&c, brief).1, 7, "its exit code");
    assert_eq!(state(&c, app).0, "CONTAINER_RUNNING");
    let ps = c.crictl_ok(&["ps", "--quiet", "--state", "running"]);
    assert!(ps.contains(app.as_str()), "crictl ps: {ps}");
    let pods = c.crictl_ok(&["pods", "--quiet", "--state", "ready"]);
    assert!(pods.contains(pod.as_str()), "crictl pods: {pods}");
    assert_eq!(c.crictl_ok(&["exec", app, "hostname"]), "lasting");

    let events = c.events(CRI_NAMESPACE);
    c.crictl_ok(&["stop", "--timeout", "0", app]);
    containerd::wait_exit_event(&c, &events, app, app);
    drop(events);
    assert_eq!(state(&c, app).0, "CONTAINER_EXITED");
    c.crictl_ok(&["rm", app, brief]);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
    c.stop();
    c.assert_nothing_left();
}
