//! The agent as PID 1 of a real microVM, booted by the runtime's own sandbox code and driven
//! over ttRPC by the runtime's agent client. What `shoji run` already proves end to end
//! (stdio and exit codes, 126/127, the PID namespace, cgroup limits, stdin, env, user, rlimits,
//! terminals) is tested in `shoji-runtime/tests`; here is what only the agent API shows. Each
//! `vm_` test boots one VM; they run one at a time (`.config/nextest.toml`).

use crate::common;

use std::time::Duration;

use common::GuestVm;
use shoji_protocols::agent;

/// One guest: Ping on a fresh agent, then an exec'd process inside a running container, then
/// the container's init killed over SignalProcess.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_ping_reports_boot_phases_and_an_exec_joins_the_running_container() {
    let vm = GuestVm::boot().await;
    let host_ns = shoji_runtime::agent::now_unix_ns();
    let resp = vm.ping().await;
    assert_eq!(resp.agent_version, env!("CARGO_PKG_VERSION"));
    // TCG seeds the guest clock from the RTC to whole seconds: allow a little.
    let skew = resp.guest_time_unix_nano.abs_diff(host_ns);
    assert!(skew < 5_000_000_000, "guest clock off by {skew} ns");
    let names: Vec<&str> = resp.boot_phases.iter().map(|p| p.name.as_str()).collect();
    for want in [
        "kernel.entered",
        "init.reached",
        "basics.ready",
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
        "boot: {:?} to a connected agent; guest phases {:?}",
        vm.boot_time,
        resp.boot_phases
            .iter()
            .map(|p| (p.name.clone(), (p.time_unix_nano - t[0]) / 1_000_000))
            .collect::<Vec<_>>()
    );

    // An exec'd process joins the running container: its PID namespace (the init is PID 1),
    // hostname and cgroup, with its own user and working directory.
    let mut req = vm.create_request(
        "ex",
        &["sleep", "600"],
        serde_json::json!({"hostname": "box",
            "linux": {"resources": {"memory": {"limit": 33554432}}}}),
    );
    req.stdio = protobuf::MessageField::none();
    vm.create_and_start(req).await;
    // The rootfs mount is recorded as a boot phase once a container exists.
    let resp = vm.ping().await;
    assert!(resp.boot_phases.iter().any(|p| p.name == "rootfs.mounted"));

    let out = vm.collect_port(21000);
    let process = serde_json::json!({
        "args": ["sh", "-c", "cat /proc/1/cmdline; echo; hostname; cat /sys/fs/cgroup/memory.max; id -u"],
        "env": ["PATH=/bin"], "cwd": "/tmp", "user": {"uid": 1000, "gid": 1000}
    });
    let ports = agent::StdioPorts {
        stdout_port: 21000,
        ..Default::default()
    };
    let process_json = serde_json::to_vec(&process).expect("process");
    let pid = vm
        .client
        .exec_process("ex", "e1", process_json, ports)
        .await
        .unwrap_or_else(|e| panic!("ExecProcess: {e}\n{}", vm.console_tail()));
    assert!(pid > 1);
    let st = vm.wait("ex", "e1").await;
    let stdout = tokio::time::timeout(Duration::from_secs(5), out)
        .await
        .expect("stdout closed")
        .unwrap_or_default();
    assert_eq!(st.exit_code, 0, "{}", String::from_utf8_lossy(&stdout));
    assert_eq!(
        String::from_utf8_lossy(&stdout),
        "sleep\u{0}600\u{0}\nbox\n33554432\n1000\n"
    );

    // SIGKILL to the init: WaitProcess reports the signal and the shell's 128 + signal.
    vm.client
        .signal_process("ex", "", 9)
        .await
        .expect("SignalProcess");
    let st = vm.wait("ex", "").await;
    assert_eq!((st.exit_code, st.signal), (137, 9));
}

/// A VM of its own: Shutdown ends it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_shutdown_answers_then_powers_off() {
    let vm = GuestVm::boot().await;
    let resp = vm.client.shutdown().await;
    assert!(resp.is_ok(), "Shutdown: {resp:?}\n{}", vm.console_tail());
    let st = vm.wait_exit(Duration::from_secs(20)).await;
    assert!(
        st.is_some(),
        "QEMU still running after Shutdown\n{}",
        vm.console_tail()
    );
}

/// Tracing on in the guest but no forwarder on the host: the workload runs as usual, the agent
/// never blocks on it, and every lost span is counted (Ping and Shutdown report it).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_unreachable_forwarder_drops_and_counts_spans_without_hurting_the_workload() {
    let vm = GuestVm::boot_with(|o| o.agent_tracing = true).await;
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
    vm.ping().await;
    assert!(
        start.elapsed() < Duration::from_secs(1),
        "Ping took {:?}",
        start.elapsed()
    );
    // Shutdown flushes: by then every span is accounted for, all of them dropped.
    let bye = vm.client.shutdown().await.expect("Shutdown");
    assert!(
        bye.dropped_spans > 0,
        "spans with no forwarder must be counted as dropped"
    );
    assert_eq!(bye.exported_spans, 0);
}
