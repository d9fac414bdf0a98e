//! The agent as PID 1 of a real microVM (QEMU TCG, vhost-user vsock, virtio-fs), driven over
//! ttRPC the way the runtime drives it. Each `vm_` test boots its own VM; run them serially
//! (`--test-threads=1`): two TCG guests on two cores each run at half speed.

mod common;

use std::time::Duration;

use common::{ctx, GuestVm};
use shoji_protocols::agent;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_ping_reports_version_clock_and_boot_phases() {
    let vm = GuestVm::boot().await;
    let host_ns = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let resp = vm
        .client
        .ping(ctx(5), &agent::PingRequest::default())
        .await
        .expect("Ping");
    assert_eq!(resp.agent_version, env!("CARGO_PKG_VERSION"));
    // TCG seeds the guest clock from the RTC to whole seconds: allow a little.
    let skew = resp.guest_time_unix_nano.abs_diff(host_ns);
    assert!(skew < 5_000_000_000, "guest clock off by {skew} ns");
    let names: Vec<&str> = resp.boot_phases.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "kernel.entered",
        "init.reached",
        "modules.loaded",
        "agent.ready",
    ] {
        assert!(names.contains(&want), "missing phase {want} in {names:?}");
    }
    let console = std::fs::read_to_string(&vm.console).unwrap_or_default();
    assert!(
        console.lines().any(|l| l.starts_with("shoji-agent: ")),
        "no prefixed agent line on the console\n{}",
        vm.console_tail()
    );
    let t: Vec<u64> = resp.boot_phases.iter().map(|p| p.time_unix_nano).collect();
    assert!(
        t.windows(2).all(|w| w[0] <= w[1]),
        "phases out of order: {t:?}"
    );
    eprintln!(
        "boot: QEMU start -> Ping {:?}; guest phases {:?}",
        vm.boot_time,
        resp.boot_phases
            .iter()
            .map(|p| (p.name.clone(), (p.time_unix_nano - t[0]) / 1_000_000))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_container_stdout_stderr_and_exit_code_reach_the_host() {
    let vm = GuestVm::boot().await;
    let o = vm
        .run(
            "c1",
            &["sh", "-c", "echo out; echo err >&2; exit 3"],
            serde_json::Value::Null,
        )
        .await;
    assert_eq!((o.stdout.as_str(), o.stderr.as_str()), ("out\n", "err\n"));
    assert_eq!((o.exit_code, o.signal), (3, 0));
    // The rootfs mount is recorded as a boot phase once a container exists.
    let resp = vm
        .client
        .ping(ctx(5), &agent::PingRequest::default())
        .await
        .expect("Ping");
    assert!(resp.boot_phases.iter().any(|p| p.name == "rootfs.mounted"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_missing_executable_exits_127_and_non_executable_126() {
    let vm = GuestVm::boot().await;
    let o = vm
        .run("missing", &["/bin/no-such-thing"], serde_json::Value::Null)
        .await;
    assert_eq!(o.exit_code, 127, "{o:?}");
    let o = vm
        .run("notexec", &["/bin/notexec"], serde_json::Value::Null)
        .await;
    assert_eq!(o.exit_code, 126, "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_container_is_pid1_of_its_own_pid_namespace() {
    let vm = GuestVm::boot().await;
    let o = vm
        .run(
            "pidns",
            &["sh", "-c", "cat /proc/1/cmdline; echo; echo $$"],
            serde_json::Value::Null,
        )
        .await;
    assert_eq!(o.exit_code, 0, "{o:?}");
    assert_eq!(
        o.stdout, "sh\0-c\0cat /proc/1/cmdline; echo; echo $$\0\n1\n",
        "{o:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_memory_and_cpu_limits_are_in_the_container_cgroup() {
    let vm = GuestVm::boot().await;
    let limits = serde_json::json!({"linux": {"resources": {
        "memory": {"limit": 67108864},
        "cpu": {"quota": 50000, "period": 100000}
    }}});
    let o = vm
        .run(
            "limits",
            &[
                "sh",
                "-c",
                "cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max",
            ],
            limits,
        )
        .await;
    assert_eq!(o.exit_code, 0, "{o:?}");
    assert_eq!(o.stdout, "67108864\n50000 100000\n", "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_signal_process_kills_with_128_plus_signal() {
    let vm = GuestVm::boot().await;
    let client = vm.client.clone();
    let killer = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let req = agent::SignalProcessRequest {
            container_id: "sig".into(),
            signal: 9,
            ..Default::default()
        };
        client.signal_process(ctx(5), &req).await
    });
    let o = vm
        .run("sig", &["sleep", "600"], serde_json::Value::Null)
        .await;
    killer.await.expect("join").expect("SignalProcess");
    assert_eq!((o.exit_code, o.signal), (137, 9), "{o:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_shutdown_answers_then_powers_off() {
    let mut vm = GuestVm::boot().await;
    let resp = vm
        .client
        .shutdown(ctx(10), &agent::ShutdownRequest::default())
        .await;
    assert!(resp.is_ok(), "Shutdown: {resp:?}\n{}", vm.console_tail());
    let st = vm.wait_exit(Duration::from_secs(20)).await;
    assert!(
        st.is_some(),
        "QEMU still running after Shutdown\n{}",
        vm.console_tail()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_exec_process_runs_inside_the_running_container() {
    let vm = GuestVm::boot().await;
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs"},
        "hostname": "box",
        "process": {"args": ["sleep", "600"], "env": ["PATH=/bin"], "cwd": "/",
                    "user": {"uid": 0, "gid": 0}},
        "linux": {"resources": {"memory": {"limit": 33554432}}}
    });
    let create = agent::CreateContainerRequest {
        container_id: "ex".into(),
        oci_spec_json: serde_json::to_vec(&spec).expect("spec"),
        rootfs_tag: common::ROOTFS_TAG.into(),
        ..Default::default()
    };
    vm.client
        .create_container(ctx(30), &create)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", vm.console_tail()));
    let start = agent::StartContainerRequest {
        container_id: "ex".into(),
        ..Default::default()
    };
    vm.client
        .start_container(ctx(30), &start)
        .await
        .expect("StartContainer");

    let out = vm.collect_port(21000);
    let process = serde_json::json!({
        "args": ["sh", "-c", "cat /proc/1/cmdline; echo; hostname; cat /sys/fs/cgroup/memory.max; id -u"],
        "env": ["PATH=/bin"], "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000}
    });
    let exec = agent::ExecProcessRequest {
        container_id: "ex".into(),
        exec_id: "e1".into(),
        process_json: serde_json::to_vec(&process).expect("process"),
        stdio: protobuf::MessageField::some(agent::StdioPorts {
            stdout_port: 21000,
            ..Default::default()
        }),
        ..Default::default()
    };
    let resp = vm.client.exec_process(ctx(30), &exec).await;
    let resp = resp.unwrap_or_else(|e| panic!("ExecProcess: {e}\n{}", vm.console_tail()));
    assert!(resp.pid > 1);
    let wait = |exec_id: &str| agent::WaitProcessRequest {
        container_id: "ex".into(),
        exec_id: exec_id.into(),
        ..Default::default()
    };
    let st = vm
        .client
        .wait_process(ctx(30), &wait("e1"))
        .await
        .expect("WaitProcess e1");
    let stdout = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("stdout closed")
        .unwrap_or_default();
    assert_eq!(st.exit_code, 0, "{}", String::from_utf8_lossy(&stdout));
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "sleep\u{0}600\u{0}\nbox\n33554432\n1000\n"
    );

    let kill = agent::SignalProcessRequest {
        container_id: "ex".into(),
        signal: 9,
        ..Default::default()
    };
    vm.client
        .signal_process(ctx(5), &kill)
        .await
        .expect("SignalProcess");
    let st = vm
        .client
        .wait_process(ctx(30), &wait(""))
        .await
        .expect("WaitProcess init");
    assert_eq!((st.exit_code, st.signal), (137, 9));
}

/// Creates and starts container `id` with `process`, waits for it and returns its stdout.
async fn run_with_ports(
    vm: &GuestVm,
    id: &str,
    process: serde_json::Value,
    ports: agent::StdioPorts,
) -> (i32, String) {
    let spec =
        serde_json::json!({"ociVersion": "1.0.2", "root": {"path": "rootfs"}, "process": process});
    let create = agent::CreateContainerRequest {
        container_id: id.into(),
        oci_spec_json: serde_json::to_vec(&spec).expect("spec"),
        rootfs_tag: common::ROOTFS_TAG.into(),
        stdio: protobuf::MessageField::some(ports.clone()),
        ..Default::default()
    };
    let out = vm.collect_port(ports.stdout_port);
    vm.client
        .create_container(ctx(30), &create)
        .await
        .unwrap_or_else(|e| panic!("CreateContainer: {e}\n{}", vm.console_tail()));
    let start = agent::StartContainerRequest {
        container_id: id.into(),
        ..Default::default()
    };
    vm.client
        .start_container(ctx(30), &start)
        .await
        .expect("StartContainer");
    let wait = agent::WaitProcessRequest {
        container_id: id.into(),
        ..Default::default()
    };
    let st = vm
        .client
        .wait_process(ctx(60), &wait)
        .await
        .expect("WaitProcess");
    let stdout = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("stdout closed")
        .unwrap_or_default();
    (st.exit_code, String::from_utf8_lossy(&stdout).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_stdin_env_cwd_user_rlimits_and_terminal_apply() {
    let vm = GuestVm::boot().await;
    let feed = vm.feed_port(22000, b"hello from the host\n");
    let process = serde_json::json!({
        "args": ["sh", "-c", "cat; echo $GREETING; pwd; id -u; id -g; id -G; ulimit -n; ulimit -Hn"],
        "env": ["PATH=/bin", "GREETING=hi"], "cwd": "/tmp",
        "user": {"uid": 1000, "gid": 1001, "additionalGids": [1002]},
        "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 123, "hard": 456}]
    });
    let ports = agent::StdioPorts {
        stdin_port: 22000,
        stdout_port: 22001,
        ..Default::default()
    };
    let (code, out) = run_with_ports(&vm, "io", process, ports).await;
    feed.abort();
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "hello from the host\nhi\n/tmp\n1000\n1001\n1001 1002\n123\n456\n"
    );

    let process = serde_json::json!({
        "args": ["sh", "-c", "tty; echo done"], "env": ["PATH=/bin"], "cwd": "/",
        "terminal": true, "user": {"uid": 0, "gid": 0}
    });
    let ports = agent::StdioPorts {
        stdout_port: 22003,
        ..Default::default()
    };
    let (code, out) = run_with_ports(&vm, "tty", process, ports).await;
    assert_eq!(code, 0, "{out}");
    // A terminal turns \n into \r\n.
    assert_eq!(out, "/dev/pts/0\r\ndone\r\n");
}

/// Tracing on in the guest but no forwarder on the host: the workload runs as usual, the agent
/// never blocks on it, and every lost span is counted (Ping and Shutdown report it).
#[tokio::test]
async fn vm_unreachable_forwarder_drops_and_counts_spans_without_hurting_the_workload() {
    let vm = GuestVm::boot_with("shoji.trace=1").await;
    let o = vm
        .run(
            "c1",
            &["sh", "-c", "echo out; exit 3"],
            serde_json::Value::Null,
        )
        .await;
    assert_eq!((o.stdout.as_str(), o.exit_code), ("out\n", 3));
    // The agent still answers at once: its span writer, not the RPC path, waits on the host.
    let start = std::time::Instant::now();
    vm.client
        .ping(ctx(5), &agent::PingRequest::default())
        .await
        .expect("Ping");
    assert!(
        start.elapsed() < std::time::Duration::from_secs(1),
        "Ping took {:?}",
        start.elapsed()
    );
    // Shutdown flushes: by then every span is accounted for, all of them dropped.
    let bye = vm
        .client
        .shutdown(ctx(10), &agent::ShutdownRequest::default())
        .await
        .expect("Shutdown");
    assert!(
        bye.dropped_spans > 0,
        "spans with no forwarder must be counted as dropped"
    );
    assert_eq!(bye.exported_spans, 0);
}
