//! The agent's VM-test harness, built on the runtime's own sandbox code: a [`GuestVm`] is a
//! [`SandboxVm`] booted by `shoji_runtime::sandbox` exactly as `shoji run` boots one (the
//! configured accelerator, the runtime's QEMU arguments, kernel command line, helpers,
//! readiness handshake, clock sync), with a busybox root filesystem served through the
//! sandbox's share, and the runtime's [`AgentClient`] to drive the agent. A change to how the
//! runtime boots a guest reaches these tests too. No mocks: a test that uses it boots a VM.
//!
//! Everything is torn down on drop, also when a test panics: the sandbox's guards kill QEMU
//! and the helpers and remove the sandbox directory (its rootfs mount first), then the
//! scratch directories go.
//!
//! The guest image is found as the runtime finds it (`$SHOJI_GUEST_DIR`); build it first with
//! `scripts/build-agent.sh && cargo run -p shoji-cli -- image build`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoji_protocols::agent;
use shoji_runtime::agent::{AgentClient, AgentError};
use shoji_runtime::config::Config;
use shoji_runtime::sandbox::{
    new_sandbox_id, Binaries, BootOptions, NoHooks, SandboxDir, SandboxVm,
};
use shoji_runtime::spec::ProcessOptions;
use tokio::io::AsyncReadExt;
use tokio::net::UnixListener;

/// A busy 2-core host boots a TCG guest slowly: twice the runtime's default deadline.
pub const BOOT_DEADLINE_SECS: u64 = 60;

/// The directory of the share holding the test rootfs, used by every container of a VM.
const ROOTFS_ID: &str = "busybox";

/// A directory with busybox-static and its applet symlinks, enough to be a container root.
pub fn busybox_rootfs(dir: &Path) {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).expect("create rootfs/bin");
    for d in ["proc", "sys", "dev", "tmp", "etc"] {
        std::fs::create_dir_all(dir.join(d)).expect("create rootfs dir");
    }
    std::fs::copy("/usr/bin/busybox", bin.join("busybox"))
        .or_else(|_| std::fs::copy("/bin/busybox", bin.join("busybox")))
        .expect("busybox-static must be installed (apt-get install busybox-static)");
    for applet in [
        "sh", "cat", "echo", "true", "false", "sleep", "ls", "id", "env", "pwd", "tty", "hostname",
    ] {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).expect("symlink applet");
    }
}

/// One booted microVM with a connected agent client.
pub struct GuestVm {
    // Field order is drop order: the sandbox (agent connection, QEMU, helpers, the sandbox
    // directory and its mounts), then the scratch directories it used.
    pub vm: SandboxVm,
    /// The agent, as the runtime drives it.
    pub client: AgentClient,
    /// The guest's serial console, as the runtime captures it.
    pub console: PathBuf,
    /// The test rootfs as the share serves it: changes here are what the guest sees.
    pub rootfs: PathBuf,
    /// Its path in the share (`CreateContainerRequest.rootfs_path`).
    rootfs_path: String,
    /// QEMU's launch until the agent answered and the clock was measured.
    pub boot_time: Duration,
    _source: tempfile::TempDir,
    _root: tempfile::TempDir,
}

impl GuestVm {
    /// Boots a VM as the runtime does with its default configuration, sharing a fresh busybox
    /// rootfs.
    pub async fn boot() -> Self {
        Self::boot_with(|_| {}).await
    }

    /// [`Self::boot`] with the boot options changed by `tune` (e.g. `agent_tracing = true`).
    pub async fn boot_with(tune: impl FnOnce(&mut BootOptions)) -> Self {
        let root = tempfile::Builder::new()
            .prefix("shoji-agent-vm-")
            .tempdir()
            .expect("tempdir for the sandbox root");
        let mut config = Config::default();
        config.hypervisor.qemu.boot_timeout = BOOT_DEADLINE_SECS;
        let bins = Binaries::locate(&config).unwrap_or_else(|e| {
            panic!(
                "{}: build the guest image with scripts/build-agent.sh && cargo run -p shoji-cli -- image build",
                shoji_runtime::error_chain(&e)
            )
        });
        let mut opts = BootOptions::for_process(&config, &ProcessOptions::default(), false)
            .expect("the default configuration's boot options");
        tune(&mut opts);

        let sb = SandboxDir::create(root.path(), &new_sandbox_id()).expect("sandbox directory");
        let source = tempfile::Builder::new()
            .prefix("shoji-agent-rootfs-")
            .tempdir()
            .expect("tempdir for the rootfs");
        busybox_rootfs(source.path());
        let shared = sb
            .share_rootfs(ROOTFS_ID, source.path())
            .expect("serve the rootfs through the sandbox's share");

        let started = Instant::now();
        let booted = SandboxVm::boot(&config, &bins, sb, &shared.share, &opts, &mut NoHooks).await;
        let mut vm = booted.unwrap_or_else(|e| panic!("{}", shoji_runtime::error_chain(&e)));
        // What QEMU and the helpers say goes to the test's output; an unread pipe would block them.
        vm.drain_stderr();
        let boot_time = started.elapsed();
        eprintln!(
            "agent answered {boot_time:?} after the boot started ({})",
            vm.accel.reason
        );
        let mut client = vm.client.clone();
        // As the runtime's telemetry does: every call carries a (sampled) trace context.
        client.set_context_injector(|| {
            vec![(
                shoji_protocols::TRACEPARENT_KEY.into(),
                "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into(),
            )]
        });
        Self {
            console: vm.sb.console_log(),
            client,
            rootfs: shared.host,
            rootfs_path: shared.in_share,
            boot_time,
            vm,
            _source: source,
            _root: root,
        }
    }

    pub fn console_tail(&self) -> String {
        format!(
            "--- guest console (tail) ---\n{}",
            self.vm.sb.console_tail(40)
        )
    }

    /// A Ping with the host's time, as the runtime's clock sync sends it.
    pub async fn ping(&self) -> agent::PingResponse {
        let (_, resp) = self
            .client
            .sync_clock(1)
            .await
            .unwrap_or_else(|e| panic!("Ping: {e}\n{}", self.console_tail()));
        resp
    }

    /// Waits up to `limit` for QEMU to exit; its exit status, or `None` if it still runs.
    pub async fn wait_exit(&self, limit: Duration) -> Option<String> {
        tokio::time::timeout(limit, self.vm.exited()).await.ok()
    }

    /// The host end of guest->host vsock `port`.
    fn port_socket(&self, port: u32) -> PathBuf {
        self.vm.sb.host_port_socket(port)
    }

    /// Listens on the host side of guest->host vsock `port` and collects everything sent to it.
    pub fn collect_port(&self, port: u32) -> tokio::task::JoinHandle<Vec<u8>> {
        let listener = UnixListener::bind(self.port_socket(port)).expect("bind stdio socket");
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        })
    }

    /// `CreateContainer` for `args` as root in the test rootfs, `spec_extra` merged into the
    /// spec, stdout and stderr to the container's ports.
    pub fn create_request(
        &self,
        id: &str,
        args: &[&str],
        spec_extra: serde_json::Value,
    ) -> agent::CreateContainerRequest {
        let mut spec = serde_json::json!({
            "ociVersion": "1.0.2",
            "root": {"path": "rootfs"},
            "process": {
                "args": args,
                "env": ["PATH=/bin"],
                "cwd": "/",
                "user": {"uid": 0, "gid": 0}
            },
            "linux": {"namespaces": [{"type": "pid"}, {"type": "mount"}]}
        });
        merge(&mut spec, spec_extra);
        agent::CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: serde_json::to_vec(&spec).expect("spec serialises"),
            rootfs_tag: shoji_runtime::sandbox::SHARE_TAG.into(),
            rootfs_path: self.rootfs_path.clone(),
            stdio: protobuf::MessageField::some(agent::StdioPorts {
                stdin_port: 0,
                stdout_port: 20000 + port_base(id),
                stderr_port: 20001 + port_base(id),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// Creates and starts the container `req` describes.
    pub async fn create_and_start(
        &self,
        req: agent::CreateContainerRequest,
    ) -> agent::CreateContainerResponse {
        let id = req.container_id.clone();
        let created = self
            .client
            .create_container(req)
            .await
            .unwrap_or_else(|e| panic!("CreateContainer {id}: {e}\n{}", self.console_tail()));
        self.client
            .start_container(&id)
            .await
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", self.console_tail()));
        created
    }

    /// Waits for process `exec_id` (empty: the init) of container `id`.
    pub async fn wait(&self, id: &str, exec_id: &str) -> agent::WaitProcessResponse {
        self.client
            .wait_process(id, exec_id)
            .await
            .unwrap_or_else(|e| panic!("WaitProcess {id}/{exec_id}: {e}\n{}", self.console_tail()))
    }

    /// Creates, starts and waits for a container running `args`, then removes it; returns its
    /// stdout, stderr and status.
    pub async fn run(&self, id: &str, args: &[&str], spec_extra: serde_json::Value) -> Outcome {
        self.run_request(self.create_request(id, args, spec_extra))
            .await
    }

    /// [`GuestVm::run`] for a request made by [`GuestVm::create_request`] and then changed.
    pub async fn run_request(&self, req: agent::CreateContainerRequest) -> Outcome {
        let id = req.container_id.clone();
        let id = id.as_str();
        let out = self.collect_port(20000 + port_base(id));
        let err = self.collect_port(20001 + port_base(id));
        let created = self.create_and_start(req).await;
        assert!(
            created.pid > 1,
            "agent reports the init pid in its own namespace"
        );
        let status = self.wait(id, "").await;
        let stdout = tokio::time::timeout(Duration::from_secs(5), out)
            .await
            .expect("stdout complete once WaitProcess returned")
            .unwrap_or_default();
        let stderr = tokio::time::timeout(Duration::from_secs(5), err)
            .await
            .expect("stderr complete once WaitProcess returned")
            .unwrap_or_default();
        self.client
            .remove_container(id)
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer {id}: {e}\n{}", self.console_tail()));
        Outcome {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_code: status.exit_code,
            signal: status.signal,
        }
    }

    /// Creates container `id` expecting `CreateContainer` to fail; returns the agent's error
    /// message and how long the call took.
    pub async fn create_fails(
        &self,
        id: &str,
        args: &[&str],
        spec_extra: serde_json::Value,
    ) -> (String, Duration) {
        self.request_fails(self.create_request(id, args, spec_extra))
            .await
    }

    /// [`GuestVm::create_fails`] for a request made by [`GuestVm::create_request`] and then
    /// changed.
    pub async fn request_fails(&self, req: agent::CreateContainerRequest) -> (String, Duration) {
        let id = req.container_id.clone();
        let id = id.as_str();
        let _out = self.collect_port(20000 + port_base(id));
        let _err = self.collect_port(20001 + port_base(id));
        let started = Instant::now();
        match self.client.create_container(req).await {
            Ok(r) => panic!("CreateContainer {id} should fail, made pid {}", r.pid),
            Err(AgentError::Rpc { message, .. }) => (message, started.elapsed()),
            Err(e) => panic!("CreateContainer {id}: not an answer of the agent: {e}"),
        }
    }
}

/// What a container did. Tests assert on stdout and the exit code and print the whole outcome
/// (`{o:?}`) when an assertion fails: stderr and the signal are read there.
#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    #[allow(dead_code)]
    pub stderr: String,
    pub exit_code: i32,
    #[allow(dead_code)]
    pub signal: i32,
}

fn port_base(id: &str) -> u32 {
    // Distinct stdio ports per container id within one VM.
    (id.bytes().map(u32::from).sum::<u32>() % 500) * 2
}

fn merge(a: &mut serde_json::Value, b: serde_json::Value) {
    match (a, b) {
        (serde_json::Value::Object(a), serde_json::Value::Object(b)) => {
            for (k, v) in b {
                merge(a.entry(k).or_insert(serde_json::Value::Null), v);
            }
        }
        (a, b) if !b.is_null() => *a = b,
        _ => {}
    }
}
