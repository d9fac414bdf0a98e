//! Through CRI, a pod's containers' resources are their cgroups' in the guest: `crictl stats`
//! shows a running container's CPU time and memory, and a container that outgrows its memory
//! limit (CRI `memory_limit_in_bytes`, applied in the guest) is OOM-killed there and shown
//! exited with code 137 and reason `OOMKilled`, while the pod's other container runs on;
//! `crictl update` changes a running container's memory and CPU limits in the guest. One VM.

use crate::containerd;

use std::time::{Duration, Instant};

use containerd::{Containerd, BUSYBOX_IMAGE, HANDLER};

/// A busybox container's CRI configuration with a memory limit.
fn limited(c: &Containerd, name: &str, limit: u64, command: &[&str]) -> String {
    let path = c.dir.join(format!("{name}-container.json"));
    let config = serde_json::json!({
        "metadata": {"name": name},
        "image": {"image": BUSYBOX_IMAGE},
        "command": command,
        "log_path": format!("{name}.log"),
        "linux": {"resources": {"memory_limit_in_bytes": limit}}
    });
    std::fs::write(&path, config.to_string()).expect("container config");
    path.display().to_string()
}

/// A CRI uint64 (`{"value": "N"}` in crictl's JSON, a string or a number).
fn value(v: &serde_json::Value) -> u64 {
    match &v["value"] {
        serde_json::Value::String(s) => s.parse().unwrap_or(0),
        other => other.as_u64().unwrap_or(0),
    }
}

#[test]
fn vm_crictl_stats_and_an_oom_killed_container() {
    let c = Containerd::start_cri(&[]);
    let pod_json = c.pod_config("res", "res-pod");
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    let worker_json = limited(
        &c,
        "worker",
        64 << 20,
        &["sh", "-c", "while :; do sleep 0.2; done"],
    );
    let worker = c.crictl_ok(&["create", "--no-pull", &pod, &worker_json, &pod_json]);
    c.crictl_ok(&["start", &worker]);

    let stats = c.crictl_ok(&["stats", "--output", "json", "--id", &worker]);
    let stats: serde_json::Value = serde_json::from_str(&stats).expect("crictl stats JSON");
    let s = &stats["stats"][0];
    assert!(
        value(&s["cpu"]["usageCoreNanoSeconds"]) > 0,
        "CPU time: {stats}"
    );
    assert!(
        value(&s["memory"]["workingSetBytes"]) > 0,
        "memory: {stats}"
    );

    // UpdateContainerResources: the new limit in the container's cgroup in the guest.
    let memory = (96u64 << 20).to_string();
    c.crictl_ok(&[
        "update",
        "--memory",
        &memory,
        "--cpu-quota",
        "50000",
        "--cpu-period",
        "100000",
        &worker,
    ]);
    let cat =
        |file: &str| c.crictl_ok(&["exec", &worker, "cat", &format!("/sys/fs/cgroup/{file}")]);
    assert_eq!(cat("memory.max"), memory);
    assert_eq!(cat("cpu.max"), "50000 100000");

    // `tail` keeps the line it reads; /dev/zero has no end of line.
    let hog_json = limited(&c, "hog", 32 << 20, &["sh", "-c", "exec tail /dev/zero"]);
    let hog = c.crictl_ok(&["create", "--no-pull", &pod, &hog_json, &pod_json]);
    c.crictl_ok(&["start", &hog]);
    let deadline = Instant::now() + Duration::from_secs(60);
    let status = loop {
        let status = c.inspect("inspect", &hog)["status"].clone();
        if status["state"] == "CONTAINER_EXITED" {
            break status;
        }
        assert!(Instant::now() < deadline, "the hog still runs: {status}");
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(status["exitCode"], 137, "{status}");
    assert_eq!(status["reason"], "OOMKilled", "{status}");
    let worker_state = c.inspect("inspect", &worker)["status"]["state"].clone();
    assert_eq!(
        worker_state, "CONTAINER_RUNNING",
        "the pod's other container"
    );

    c.crictl_ok(&["rmp", "--force", &pod]);
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
}
