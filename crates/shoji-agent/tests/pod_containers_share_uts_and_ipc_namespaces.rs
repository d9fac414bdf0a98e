//! A pod's containers (`pod_namespaces` in `CreateContainer`) share the pod's UTS namespace (its
//! hostname, from the first such container's spec) and IPC namespace, made once by the agent,
//! and keep a PID namespace each; a container that is not a pod's keeps namespaces of its own.
//! One real microVM, booted and driven over ttRPC by the runtime's own code.

use crate::common;

use std::time::Duration;

use common::GuestVm;
use shoji_protocols::agent;

/// Creates and starts container `id` (running `sleep`), a pod's if `pod`.
async fn start(vm: &GuestVm, id: &str, pod: bool, spec_extra: serde_json::Value) {
    let mut req = vm.create_request(id, &["sleep", "600"], spec_extra);
    req.pod_namespaces = pod;
    // No stdio: the processes' output is not looked at.
    req.stdio = protobuf::MessageField::none();
    vm.create_and_start(req).await;
}

/// The hostname and the UTS, IPC and PID namespaces an exec in container `id` sees.
async fn seen(vm: &GuestVm, id: &str, port: u32) -> Vec<String> {
    let out = vm.collect_port(port);
    let process = serde_json::json!({
        "args": ["sh", "-c", "hostname; for n in uts ipc pid; do readlink /proc/self/ns/$n; done"],
        "env": ["PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}
    });
    let ports = agent::StdioPorts {
        stdout_port: port,
        ..Default::default()
    };
    let process_json = serde_json::to_vec(&process).expect("process");
    vm.client
        .exec_process(id, "look", process_json, ports)
        .await
        .unwrap_or_else(|e| panic!("ExecProcess {id}: {e}\n{}", vm.console_tail()));
    let st = vm.wait(id, "look").await;
    let stdout = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("stdout closed")
        .unwrap_or_default();
    let text = String::from_utf8_lossy(&stdout).into_owned();
    assert_eq!(st.exit_code, 0, "{id}: {text}");
    text.lines().map(str::to_string).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_pod_containers_share_uts_and_ipc_but_not_pid() {
    let vm = GuestVm::boot().await;
    start(
        &vm,
        "pause",
        true,
        serde_json::json!({"hostname": "podhost"}),
    )
    .await;
    // A later container of the pod: its own hostname is not applied (CRI gives none).
    start(&vm, "app", true, serde_json::json!({"hostname": "ignored"})).await;
    start(&vm, "solo", false, serde_json::json!({"hostname": "solo"})).await;
    let pause = seen(&vm, "pause", 23000).await;
    let app = seen(&vm, "app", 23001).await;
    let solo = seen(&vm, "solo", 23002).await;
    assert_eq!(pause.len(), 4, "{pause:?}");
    assert_eq!((pause[0].as_str(), app[0].as_str()), ("podhost", "podhost"));
    assert_eq!(pause[1..3], app[1..3], "UTS and IPC namespaces shared");
    assert_ne!(pause[3], app[3], "a PID namespace each");
    assert_eq!(solo[0], "solo");
    for i in 1..4 {
        assert_ne!(solo[i], pause[i], "not a pod's: namespaces of its own");
    }
}
