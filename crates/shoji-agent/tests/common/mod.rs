//! A small host-side harness that boots the real guest image (kernel + initramfs with the static
//! agent as `/init`) under QEMU TCG with `vhost-device-vsock` and `virtiofsd`, as
//! `docs/host-requirements.md` describes, and talks to the agent with the generated ttRPC
//! client. No mocks: a test that uses it boots a VM. Every process it starts is killed and every temp dir removed on drop, also
//! when the test fails.
//!
//! The image is looked up with `shoji_image::GuestImage::find(guest_dir())`; build it first with
//! `scripts/build-agent.sh && cargo run -p shoji-cli -- image build`.

#![allow(dead_code)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use shoji_protocols::agent;
use shoji_protocols::agent_ttrpc::AgentServiceClient;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{UnixListener, UnixStream};

pub const BOOT_DEADLINE: Duration = Duration::from_secs(60);
pub const ROOTFS_TAG: &str = "rootfs";

/// A child process killed and reaped on drop.
pub struct ProcGuard {
    name: &'static str,
    child: Child,
}

impl ProcGuard {
    fn spawn(name: &'static str, cmd: &mut Command) -> Self {
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {name} ({cmd:?}): {e}"));
        Self { name, child }
    }

    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }
}

impl Drop for ProcGuard {
    fn drop(&mut self) {
        if self.exited().is_none() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
        let _ = self.name;
    }
}

fn wait_for_path(p: &Path, what: &str, guard: &mut ProcGuard) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !p.exists() {
        if let Some(st) = guard.exited() {
            panic!("{what} exited ({st}) before creating {}", p.display());
        }
        assert!(
            Instant::now() < deadline,
            "{what} did not create {}",
            p.display()
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

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
    // Exists but is not executable: exec must fail with 126.
    std::fs::write(bin.join("notexec"), "#!/bin/sh\necho no\n").expect("write notexec");
}

/// One booted microVM with a connected agent client.
pub struct GuestVm {
    // Field order is drop order: QEMU first, then the helpers, then the directory.
    qemu: ProcGuard,
    _virtiofsd: ProcGuard,
    _vsockd: ProcGuard,
    pub client: AgentServiceClient,
    pub console: PathBuf,
    pub uds: PathBuf,
    pub rootfs: PathBuf,
    pub boot_time: Duration,
    pub dir: tempfile::TempDir,
}

impl GuestVm {
    /// Boots a VM sharing a fresh busybox rootfs over virtio-fs and waits for the agent's Ping.
    pub async fn boot() -> Self {
        Self::boot_with("").await
    }

    /// [`Self::boot`] with more kernel command-line words (e.g. `shoji.trace=1`).
    pub async fn boot_with(extra_cmdline: &str) -> Self {
        let img = shoji_image::GuestImage::find(&shoji_image::guest_dir()).unwrap_or_else(|e| {
            panic!("{e}: build it with scripts/build-agent.sh && cargo run -p shoji-cli -- image build")
        });
        let dir = tempfile::Builder::new()
            .prefix("shoji-agent-vm-")
            .tempdir()
            .expect("tempdir");
        let rootfs = dir.path().join("rootfs");
        busybox_rootfs(&rootfs);
        let vh = dir.path().join("vh.sock");
        let uds = dir.path().join("vm.vsock");
        let vfs = dir.path().join("vfs.sock");
        let console = dir.path().join("console.log");

        let mut vsockd = ProcGuard::spawn(
            "vhost-device-vsock",
            Command::new("vhost-device-vsock")
                .args(["--guest-cid", "3", "--socket"])
                .arg(&vh)
                .arg("--uds-path")
                .arg(&uds)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut virtiofsd = ProcGuard::spawn(
            "virtiofsd",
            Command::new("virtiofsd")
                .arg("--socket-path")
                .arg(&vfs)
                .arg("--shared-dir")
                .arg(&rootfs)
                .args(["--sandbox", "none"])
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        wait_for_path(&vh, "vhost-device-vsock", &mut vsockd);
        wait_for_path(&vfs, "virtiofsd", &mut virtiofsd);

        let mut append =
            // no_timer_check as the runtime passes it (Shoji's kernel has no ACPI: ADR 014).
            String::from("console=ttyS0 quiet panic=-1 reboot=t no_timer_check shoji.sandbox_id=test");
        if !extra_cmdline.is_empty() {
            append.push(' ');
            append.push_str(extra_cmdline);
        }
        if let Some(khz) = host_tsc_khz() {
            append.push_str(&format!(
                " tsc_early_khz={khz} lpj={} tsc=reliable",
                4 * khz
            ));
        }
        // The contract: connect to the agent only after it announced itself on host port 1025
        // (early host-initiated connections can wedge the vsock device).
        let ready = UnixListener::bind(format!(
            "{}_{}",
            uds.display(),
            shoji_protocols::READY_VSOCK_PORT
        ))
        .expect("bind the readiness socket");
        let started = Instant::now();
        let qemu = ProcGuard::spawn(
            "QEMU",
            Command::new("qemu-system-x86_64")
                .arg("-M")
                // As the runtime does: no ACPI tables for Shoji's kernel, which then finds its
                // virtio-mmio devices on the command line QEMU extends (ADR 014).
                .arg(format!(
                    "microvm,accel=tcg,memory-backend=mem,isa-serial=on,rtc=on,acpi={}",
                    if shoji_image::kernel_uses_acpi(&img.kernel) {
                        "on"
                    } else {
                        "off"
                    }
                ))
                .args(["-cpu", "max", "-smp", "1", "-m", "512M"])
                .args(["-object", "memory-backend-memfd,id=mem,size=512M,share=on"])
                .args(["-nodefaults", "-no-user-config", "-display", "none"])
                .args(["-monitor", "none", "-no-reboot"])
                .arg("-serial")
                .arg(format!("file:{}", console.display()))
                .arg("-chardev")
                .arg(format!("socket,id=vh,path={}", vh.display()))
                .args(["-device", "vhost-user-vsock-device,chardev=vh"])
                .arg("-chardev")
                .arg(format!("socket,id=fs,path={}", vfs.display()))
                .arg("-device")
                .arg(format!("vhost-user-fs-device,chardev=fs,tag={ROOTFS_TAG}"))
                .arg("-kernel")
                .arg(&img.kernel)
                .arg("-initrd")
                .arg(&img.initrd)
                .arg("-append")
                .arg(append)
                .stdout(Stdio::null())
                .stderr(Stdio::null()),
        );
        let mut qemu = qemu;
        let client = connect(&mut qemu, &ready, &uds, &console, started).await;
        let boot_time = started.elapsed();
        eprintln!("agent answered Ping {boot_time:?} after QEMU start");
        Self {
            qemu,
            _virtiofsd: virtiofsd,
            _vsockd: vsockd,
            client,
            console,
            uds,
            rootfs,
            boot_time,
            dir,
        }
    }

    pub fn console_tail(&self) -> String {
        console_tail(&self.console)
    }

    /// Waits up to `limit` for QEMU to exit.
    pub async fn wait_exit(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if let Some(st) = self.qemu.exited() {
                return Some(st);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        None
    }

    /// Listens on the host side of guest->host vsock `port` and collects everything sent to it.
    pub fn collect_port(&self, port: u32) -> tokio::task::JoinHandle<Vec<u8>> {
        let path = PathBuf::from(format!("{}_{port}", self.uds.display()));
        let listener = UnixListener::bind(&path).expect("bind stdio socket");
        tokio::spawn(async move {
            let mut buf = Vec::new();
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.read_to_end(&mut buf).await;
            }
            buf
        })
    }

    /// Listens on the host side of guest->host vsock `port`, sends `data` to whoever connects,
    /// then shuts down the write side (the process sees EOF).
    pub fn feed_port(&self, port: u32, data: &'static [u8]) -> tokio::task::JoinHandle<()> {
        let path = PathBuf::from(format!("{}_{port}", self.uds.display()));
        let listener = UnixListener::bind(&path).expect("bind stdin socket");
        tokio::spawn(async move {
            if let Ok((mut s, _)) = listener.accept().await {
                let _ = s.write_all(data).await;
                let _ = s.shutdown().await;
                // Keep the socket open until the guest closes its end.
                let mut sink = Vec::new();
                let _ = s.read_to_end(&mut sink).await;
            }
        })
    }

    /// Creates and starts the container `req` describes.
    pub async fn create_and_start(
        &self,
        req: &agent::CreateContainerRequest,
    ) -> agent::CreateContainerResponse {
        let id = &req.container_id;
        let created = self.client.create_container(ctx(30), req).await;
        let created = created
            .unwrap_or_else(|e| panic!("CreateContainer {id}: {e}\n{}", self.console_tail()));
        let start = agent::StartContainerRequest {
            container_id: id.clone(),
            ..Default::default()
        };
        self.client
            .start_container(ctx(30), &start)
            .await
            .unwrap_or_else(|e| panic!("StartContainer {id}: {e}\n{}", self.console_tail()));
        created
    }

    /// Creates, starts and waits for a container running `args`; returns (stdout, stderr, exit).
    pub async fn run(&self, id: &str, args: &[&str], spec_extra: serde_json::Value) -> Outcome {
        let out = self.collect_port(20000 + port_base(id));
        let err = self.collect_port(20001 + port_base(id));
        let req = create_request(id, args, spec_extra);
        let created = self.create_and_start(&req).await;
        assert!(
            created.pid > 1,
            "agent reports the init pid in its own namespace"
        );
        let wait = agent::WaitProcessRequest {
            container_id: id.into(),
            ..Default::default()
        };
        let status = self
            .client
            .wait_process(ctx(60), &wait)
            .await
            .unwrap_or_else(|e| panic!("WaitProcess: {e}\n{}", self.console_tail()));
        let stdout = tokio::time::timeout(Duration::from_secs(5), out)
            .await
            .expect("stdout complete once WaitProcess returned")
            .unwrap_or_default();
        let stderr = tokio::time::timeout(Duration::from_secs(5), err)
            .await
            .expect("stderr complete once WaitProcess returned")
            .unwrap_or_default();
        let rm = agent::RemoveContainerRequest {
            container_id: id.into(),
            ..Default::default()
        };
        self.client
            .remove_container(ctx(30), &rm)
            .await
            .unwrap_or_else(|e| panic!("RemoveContainer: {e}\n{}", self.console_tail()));
        Outcome {
            stdout: String::from_utf8_lossy(&stdout).into_owned(),
            stderr: String::from_utf8_lossy(&stderr).into_owned(),
            exit_code: status.exit_code,
            signal: status.signal,
        }
    }
}

impl GuestVm {
    /// Creates container `id` expecting `CreateContainer` to fail; returns its error message
    /// and how long the call took.
    pub async fn create_fails(
        &self,
        id: &str,
        args: &[&str],
        spec_extra: serde_json::Value,
    ) -> (String, Duration) {
        let _out = self.collect_port(20000 + port_base(id));
        let _err = self.collect_port(20001 + port_base(id));
        let req = create_request(id, args, spec_extra);
        let started = Instant::now();
        match self.client.create_container(ctx(60), &req).await {
            Ok(r) => panic!("CreateContainer {id} should fail, made pid {}", r.pid),
            Err(ttrpc::Error::RpcStatus(s)) => (s.message().to_string(), started.elapsed()),
            Err(e) => (e.to_string(), started.elapsed()),
        }
    }
}

#[derive(Debug)]
pub struct Outcome {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
    pub signal: i32,
}

/// `CreateContainer` for `args` as root in the test rootfs, `spec_extra` merged into the spec,
/// stdout and stderr to the container's ports.
pub fn create_request(
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
        rootfs_tag: ROOTFS_TAG.into(),
        stdio: protobuf::MessageField::some(agent::StdioPorts {
            stdin_port: 0,
            stdout_port: 20000 + port_base(id),
            stderr_port: 20001 + port_base(id),
            ..Default::default()
        }),
        ..Default::default()
    }
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

pub fn ctx(secs: u64) -> ttrpc::context::Context {
    let mut c = ttrpc::context::with_timeout(Duration::from_secs(secs).as_nanos() as i64);
    let mut md: HashMap<String, Vec<String>> = HashMap::new();
    md.insert(
        shoji_protocols::TRACEPARENT_KEY.into(),
        vec!["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01".into()],
    );
    c.metadata = md;
    c
}

/// Hybrid vsock: connect to the device's Unix socket and ask for a guest port.
pub async fn hybrid_connect(uds: &Path, port: u32) -> std::io::Result<UnixStream> {
    let mut s = UnixStream::connect(uds).await?;
    s.write_all(format!("CONNECT {port}\n").as_bytes()).await?;
    let mut answer = Vec::new();
    loop {
        let mut b = [0u8; 1];
        if s.read(&mut b).await? == 0 || answer.len() > 64 {
            return Err(std::io::Error::other("no answer to CONNECT"));
        }
        if b[0] == b'\n' {
            break;
        }
        answer.push(b[0]);
    }
    if answer.starts_with(b"OK ") {
        Ok(s)
    } else {
        Err(std::io::Error::other(format!(
            "CONNECT refused: {}",
            String::from_utf8_lossy(&answer)
        )))
    }
}

pub fn console_tail(console: &Path) -> String {
    let text = std::fs::read_to_string(console).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(40);
    format!(
        "--- guest console (tail) ---\n{}",
        lines[start..].join("\n")
    )
}

/// Waits for the agent's `READY` on host port 1025, then connects to guest port 1024 and pings.
/// Fails at once if QEMU exits, and at [`BOOT_DEADLINE`] if the guest hangs, with the console
/// tail either way.
async fn connect(
    qemu: &mut ProcGuard,
    ready: &UnixListener,
    uds: &Path,
    console: &Path,
    started: Instant,
) -> AgentServiceClient {
    let check = |qemu: &mut ProcGuard| {
        if let Some(st) = qemu.exited() {
            panic!("QEMU exited during boot ({st})\n{}", console_tail(console));
        }
        if started.elapsed() > BOOT_DEADLINE {
            panic!(
                "agent did not answer within {BOOT_DEADLINE:?}\n{}",
                console_tail(console)
            );
        }
    };
    loop {
        check(qemu);
        if let Ok(Ok((mut s, _))) =
            tokio::time::timeout(Duration::from_millis(50), ready.accept()).await
        {
            let mut line = [0u8; 6];
            let got = tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut line)).await;
            assert!(
                matches!(got, Ok(Ok(_))) && &line == b"READY\n",
                "bad readiness announcement {line:?}"
            );
            break;
        }
    }
    loop {
        check(qemu);
        let attempt = tokio::time::timeout(
            Duration::from_secs(1),
            hybrid_connect(uds, shoji_protocols::AGENT_VSOCK_PORT),
        )
        .await;
        if let Ok(Ok(s)) = attempt {
            let c = AgentServiceClient::new(ttrpc::r#async::Client::new(
                ttrpc::r#async::transport::Socket::new(s),
            ));
            let req = agent::PingRequest::default();
            let ping = c.ping(ctx(2), &req);
            if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_secs(2), ping).await {
                return c;
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64).filter(|k| *k > 0)
}
