//! `shoji run`: one sandbox, one container, from nothing to exit status and back to nothing.
//!
//! Every resource is owned by a guard (sandbox directory, helper processes, QEMU, stdio relays)
//! declared in an order such that dropping them in reverse tears everything down on any exit
//! path: success, error, or a signal turned into an early return.

use std::path::PathBuf;
use std::time::Duration;

use shoji_protocols::agent;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::watch;
use tracing::{info_span, Instrument};

use crate::agent::{AgentClient, AgentError, ClockOffset};
use crate::config::Config;
use crate::hypervisor::{accel, qemu::Qemu, Hypervisor, VmSpec};
use crate::sandbox::{SandboxDir, SandboxError};
use crate::spec::{ProcessOptions, SpecError};
use crate::stdio::{RawTerminal, StdioRelay, FIRST_STDIO_PORT};
use crate::{helpers, image, process, sandbox};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone)]
pub enum RootSource {
    /// OCI image layout directory, OCI archive or docker-save tarball.
    Image(PathBuf),
    /// runc-style bundle: config.json + rootfs.
    Bundle(PathBuf),
    /// A bare root filesystem directory.
    Rootfs(PathBuf),
}

#[derive(Debug, Clone, Default)]
pub struct RunRequest {
    pub source: Option<RootSource>,
    pub process: ProcessOptions,
    pub interactive: bool,
    pub container_id: Option<String>,
    /// Turn the agent's tracing on (kernel command line `shoji.trace=1`).
    pub agent_tracing: bool,
    /// W3C traceparent for the agent's boot spans.
    pub traceparent: Option<String>,
}

#[derive(Debug, Clone, Default)]
pub struct RunOutcome {
    /// Shell-style status: exit code, or 128 + signal.
    pub exit_code: i32,
    pub sandbox_id: String,
    pub container_id: String,
    pub accel: String,
    pub clock: ClockOffset,
    pub boot_phases: Vec<(String, u64)>,
    pub agent_dropped_spans: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no image, --bundle or --rootfs given")]
    NoSource,
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error(transparent)]
    Sandbox(#[from] SandboxError),
    #[error(transparent)]
    Image(#[from] image::ImageError),
    #[error(transparent)]
    Spec(#[from] SpecError),
    #[error(transparent)]
    Process(#[from] process::ProcessError),
    #[error(transparent)]
    Helper(#[from] helpers::HelperError),
    #[error(transparent)]
    Hypervisor(#[from] crate::hypervisor::HypervisorError),
    #[error(transparent)]
    Stdio(#[from] crate::stdio::StdioError),
    #[error(
        "{what} {path} does not exist; run `shoji image build`, or set [hypervisor.qemu] {key}"
    )]
    GuestImage {
        what: &'static str,
        key: &'static str,
        path: PathBuf,
    },
    #[error("sandbox {sandbox}: {cause}\n--- last lines of the guest console ---\n{console}")]
    Boot {
        sandbox: String,
        cause: AgentError,
        console: String,
    },
    #[error("sandbox {sandbox}: the VM exited unexpectedly ({status}) while the container was running\n--- last lines of the guest console ---\n{console}")]
    VmDied {
        sandbox: String,
        status: String,
        console: String,
    },
    #[error("sandbox {sandbox}: {cause}")]
    Agent { sandbox: String, cause: AgentError },
}

/// Points where the telemetry pipeline plugs in. Every method has a no-op default.
pub trait RunHooks: Send {
    /// The sandbox directory exists; the VM is not started yet. The built-in trace forwarder
    /// listens on `sb.host_port_socket(10240)` from here.
    fn sandbox_ready(&mut self, _sb: &SandboxDir) {}
    /// The guest-host clock offset was measured.
    fn clock_measured(&mut self, _sandbox_id: &str, _offset: ClockOffset) {}
    /// Makes outgoing agent calls carry the trace context.
    fn context_injector(&self) -> Option<crate::agent::ContextInjector> {
        None
    }
    /// Agent spans received so far by the built-in forwarder; `None` without one. The VM is
    /// stopped only once the spans the agent reports as sent have arrived.
    fn agent_spans_received(&self) -> Option<u64> {
        None
    }
}

/// No telemetry.
#[derive(Debug, Default)]
pub struct NoHooks;
impl RunHooks for NoHooks {}

/// Guest kernel and initrd: configured, else the image `shoji image build` made.
pub fn guest_image(config: &Config) -> Result<(PathBuf, PathBuf), RunError> {
    let q = &config.hypervisor.qemu;
    let dir = shoji_image::guest_dir();
    let kernel = q.kernel.clone().unwrap_or_else(|| dir.join("vmlinux"));
    let initrd = q.initrd.clone().unwrap_or_else(|| dir.join("initrd.img"));
    if !kernel.is_file() {
        return Err(RunError::GuestImage {
            what: "guest kernel",
            key: "kernel",
            path: kernel,
        });
    }
    if !initrd.is_file() {
        return Err(RunError::GuestImage {
            what: "guest initrd",
            key: "initrd",
            path: initrd,
        });
    }
    Ok((kernel, initrd))
}

fn sandbox_root(config: &Config) -> PathBuf {
    config
        .runtime
        .sandbox_root
        .clone()
        .unwrap_or_else(sandbox::default_root)
}

/// Runs one container in a fresh VM and returns its status.
pub async fn run(
    config: &Config,
    req: RunRequest,
    hooks: &mut dyn RunHooks,
) -> Result<RunOutcome, RunError> {
    let source = req.source.clone().ok_or(RunError::NoSource)?;
    let q = &config.hypervisor.qemu;

    // Resolve everything that can be missing before anything is started.
    let qemu = Qemu::locate(&q.path)?;
    let (kernel, initrd) = guest_image(config)?;
    let vsock_bin = helpers::locate("vhost-device-vsock")?;
    let virtiofsd_bin = helpers::locate("virtiofsd")?;

    let root = sandbox_root(config);
    let sb = SandboxDir::create(&root, &sandbox::new_sandbox_id())?;
    let container_id = req.container_id.clone().unwrap_or_else(|| sb.id.clone());
    tracing::Span::current().record("sandbox_id", sb.id.as_str());
    tracing::Span::current().record("container_id", container_id.as_str());

    let (spec, rootfs) =
        info_span!("image.unpack", source = "runtime", subsystem = "image", sandbox_id = %sb.id)
            .in_scope(|| prepare_rootfs(&source, &sb, &req.process))?;
    let spec_json = serde_json::to_vec(&spec).map_err(|e| SpecError::Build(e.to_string()))?;

    let choice = accel::choose(q.accel, &root);
    tracing::Span::current().record("vm.accel", choice.accel.as_str());
    tracing::info!(accel = choice.accel.as_str(), reason = %choice.reason, "accelerator chosen");
    hooks.sandbox_ready(&sb);

    let vcpus = req
        .process
        .cpus
        .map(|c| c.ceil().max(1.0) as u32)
        .unwrap_or(q.default_vcpus.max(1));
    let memory_mib = req
        .process
        .memory_bytes
        .map(|b| ((b >> 20) as u32).max(128))
        .unwrap_or(q.default_memory.max(128));

    let vm_span = info_span!("vm.start", source = "hypervisor", subsystem = "hypervisor", sandbox_id = %sb.id, vm.accel = choice.accel.as_str(), vm.vcpus = vcpus, vm.memory_mib = memory_mib);
    let (mut vsock_helper, mut fs_helper) = async {
        let v = helpers::start_vsock(&vsock_bin, &sb.vhost_socket(), &sb.vsock_uds())
            .instrument(info_span!(
                "helper.start",
                source = "hypervisor",
                subsystem = "hypervisor",
                helper = "vhost-device-vsock"
            ))
            .await?;
        let f = helpers::start_virtiofsd(&virtiofsd_bin, &sb.virtiofs_socket(), &rootfs)
            .instrument(info_span!(
                "helper.start",
                source = "hypervisor",
                subsystem = "hypervisor",
                helper = "virtiofsd"
            ))
            .await?;
        Ok::<_, RunError>((v, f))
    }
    .instrument(vm_span.clone())
    .await?;

    // `guest.boot` runs from QEMU's launch until the agent answers. The agent's boot spans are
    // its children: its context rides the kernel command line.
    let boot_span = info_span!(parent: &vm_span, "guest.boot", source = "hypervisor", subsystem = "boot", sandbox_id = %sb.id);
    let mut req = req;
    if req.agent_tracing {
        if let Some(inject) = hooks.context_injector() {
            if let Some((_, tp)) = boot_span
                .in_scope(inject)
                .into_iter()
                .find(|(k, _)| k == "traceparent")
            {
                req.traceparent = Some(tp);
            }
        }
    }
    let cmdline = kernel_cmdline(config, &req, &sb.id);
    let vm = VmSpec {
        kernel,
        initrd,
        vcpus,
        memory_mib,
        kernel_cmdline: cmdline,
        vhost_vsock_socket: sb.vhost_socket(),
        virtiofs_socket: sb.virtiofs_socket(),
        virtiofs_tag: "rootfs".into(),
        console_log: sb.console_log(),
        accel: choice.clone(),
    };
    let ready_path = sb.host_port_socket(shoji_protocols::READY_VSOCK_PORT);
    let ready = tokio::net::UnixListener::bind(&ready_path).map_err(|source| {
        crate::stdio::StdioError::Listen {
            path: ready_path.display().to_string(),
            source,
        }
    })?;
    let qemu_guard = vm_span.in_scope(|| {
        info_span!("qemu.launch", source = "hypervisor", subsystem = "hypervisor", qemu.path = %qemu.path.display())
            .in_scope(|| qemu.launch(&vm))
    })?;
    let (vm_exit_tx, vm_exit) = watch::channel::<Option<String>>(None);
    let vm_task = tokio::spawn(async move {
        let mut guard = qemu_guard;
        let status = guard.wait().await;
        let text = match status {
            Ok(s) => s.to_string(),
            Err(e) => e.to_string(),
        };
        let _ = vm_exit_tx.send(Some(text));
        // Keep the guard (and so the reaped child) until the task is dropped.
        std::future::pending::<()>().await;
    });
    let vm_task = AbortOnDrop(Some(vm_task));

    let boot_timeout = Duration::from_secs(q.boot_timeout.max(1));
    let uds = sb.vsock_uds();
    let exit_probe = vm_exit.clone();
    let client = AgentClient::connect(
        &uds,
        boot_timeout,
        Some(&ready),
        hooks.context_injector(),
        move || exit_probe.borrow().clone(),
    )
    .instrument(boot_span.clone())
    .await;
    drop(boot_span);
    let client = match client {
        Ok(c) => c,
        Err(source) => {
            // Give QEMU a moment to flush the console before reading its tail.
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(RunError::Boot {
                sandbox: sb.id.clone(),
                cause: source,
                console: sb.console_tail(20),
            });
        }
    };
    drop(vm_span);
    let agent_err = |cause| RunError::Agent {
        sandbox: sb.id.clone(),
        cause,
    };

    let (clock, ping) = client
        .sync_clock(5)
        .instrument(info_span!(
            "clock.sync",
            source = "runtime",
            subsystem = "agent"
        ))
        .await
        .map_err(agent_err)?;
    tracing::info!(
        offset_ns = clock.offset_ns,
        uncertainty_ns = clock.uncertainty_ns,
        "guest clock measured"
    );
    hooks.clock_measured(&sb.id, clock);

    let mut outcome = RunOutcome {
        sandbox_id: sb.id.clone(),
        container_id: container_id.clone(),
        accel: choice.accel.as_str().into(),
        clock,
        boot_phases: ping
            .boot_phases
            .iter()
            .map(|p| (p.name.clone(), p.time_unix_nano))
            .collect(),
        ..Default::default()
    };

    let terminal = req.process.terminal;
    let (ports, relay) = StdioRelay::start(&sb, FIRST_STDIO_PORT, req.interactive, terminal)?;
    let _raw = terminal.then(RawTerminal::enable);

    let container = async {
        client
            .create_container(agent::CreateContainerRequest {
                container_id: container_id.clone(),
                oci_spec_json: spec_json,
                rootfs_tag: "rootfs".into(),
                stdio: Some(ports).into(),
                ..Default::default()
            })
            .instrument(info_span!("container.create", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id))
            .await?;
        client
            .start_container(&container_id)
            .instrument(info_span!("container.start", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id))
            .await?;
        if terminal {
            if let Some((rows, cols)) = crate::stdio::terminal_size() {
                let _ = client.resize_terminal(&container_id, rows, cols).await;
            }
        }
        wait_with_signals(&client, &container_id)
            .instrument(info_span!("container.wait", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id, process.exit_code = tracing::field::Empty))
            .await
    };
    let mut exit = vm_exit.clone();
    let status = tokio::select! {
        r = container => r,
        st = exit.wait_for(|s| s.is_some()) => {
            let status = st.map(|s| s.clone().unwrap_or_default()).unwrap_or_default();
            tokio::time::sleep(Duration::from_millis(100)).await;
            return Err(RunError::VmDied { sandbox: sb.id.clone(), status, console: sb.console_tail(20) });
        }
    };
    let status = match status {
        Ok(s) => s,
        Err(cause) => {
            // A dead VM shows up first as a broken agent connection: say which it was.
            let mut exit = vm_exit.clone();
            let died =
                tokio::time::timeout(Duration::from_secs(2), exit.wait_for(|s| s.is_some())).await;
            if let Ok(Ok(st)) = died {
                let status = st.clone().unwrap_or_default();
                return Err(RunError::VmDied {
                    sandbox: sb.id.clone(),
                    status,
                    console: sb.console_tail(20),
                });
            }
            return Err(agent_err(cause));
        }
    };
    outcome.exit_code = status;
    relay
        .finish(Duration::from_secs(5))
        .instrument(info_span!(
            "stdio.copy",
            source = "runtime",
            subsystem = "stdio"
        ))
        .await;
    drop(_raw);

    let mut vm_task = vm_task;
    async {
        match client.shutdown().await {
            Ok(r) => {
                outcome.agent_dropped_spans = r.dropped_spans;
                // The agent answers once its spans are written and its filesystems synced:
                // nothing in the guest needs the kernel's own power-off, which takes ~50 ms
                // under TCG (issue #2). Once the spans it sent are here, QEMU is stopped, as
                // Kata stops the VM after the agent's last call.
                let deadline = tokio::time::Instant::now() + Duration::from_secs(1);
                while hooks
                    .agent_spans_received()
                    .is_some_and(|n| n < r.exported_spans)
                    && tokio::time::Instant::now() < deadline
                {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
                vm_task.stop().await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "agent shutdown failed; stopping the VM");
                let mut exit = vm_exit.clone();
                let _ =
                    tokio::time::timeout(Duration::from_secs(5), exit.wait_for(|s| s.is_some()))
                        .await;
            }
        }
    }
    .instrument(info_span!(
        "vm.stop",
        source = "hypervisor",
        subsystem = "hypervisor"
    ))
    .await;

    info_span!("sandbox.cleanup", source = "runtime", subsystem = "sandbox").in_scope(|| {
        drop(vm_task);
        drop(client);
    });
    vsock_helper.stop().await;
    fs_helper.stop().await;
    drop(sb);
    Ok(outcome)
}

/// Aborts (and so drops, killing QEMU) the wrapped task when dropped.
struct AbortOnDrop(Option<tokio::task::JoinHandle<()>>);
impl AbortOnDrop {
    /// Aborts the task and waits until it is gone (QEMU killed and reaped).
    async fn stop(&mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}
impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

/// Waits for the container's init; SIGINT/SIGTERM/SIGHUP/SIGQUIT received meanwhile are
/// forwarded to it. If it is still running 3 s after a forwarded signal (a PID 1 without a
/// handler ignores most signals) it is killed, and the status reports the signal received.
async fn wait_with_signals(client: &AgentClient, cid: &str) -> Result<i32, AgentError> {
    let mk = |k| signal(k).ok();
    let (mut int, mut term, mut hup, mut quit) = (
        mk(SignalKind::interrupt()),
        mk(SignalKind::terminate()),
        mk(SignalKind::hangup()),
        mk(SignalKind::quit()),
    );
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    let wait = client.wait_process(cid, "");
    tokio::pin!(wait);
    let mut received: Option<i32> = None;
    let mut kill_at: Option<tokio::time::Instant> = None;
    loop {
        let sig = tokio::select! {
            r = &mut wait => {
                let r = r?;
                tracing::Span::current().record("process.exit_code", r.exit_code);
                // Like a shell job ended by the signal: 128 + the signal `shoji run` received.
                return Ok(match received {
                    Some(s) => 128 + s,
                    None => r.exit_code,
                });
            }
            _ = recv(&mut int) => libc::SIGINT,
            _ = recv(&mut term) => libc::SIGTERM,
            _ = recv(&mut hup) => libc::SIGHUP,
            _ = recv(&mut quit) => libc::SIGQUIT,
            _ = async { match kill_at { Some(t) => tokio::time::sleep_until(t).await, None => std::future::pending().await } } => libc::SIGKILL,
        };
        if sig == libc::SIGKILL {
            kill_at = None;
        } else {
            received = Some(sig);
            kill_at = Some(tokio::time::Instant::now() + Duration::from_secs(3));
        }
        tracing::info!(signal = sig, "forwarding signal to the container");
        let _ = client.signal_process(cid, "", sig as u32).await;
    }
}

fn prepare_rootfs(
    source: &RootSource,
    sb: &SandboxDir,
    opts: &ProcessOptions,
) -> Result<(oci_spec::runtime::Spec, PathBuf), RunError> {
    Ok(match source {
        RootSource::Image(path) => {
            let rootfs = sb.rootfs();
            let cfg = image::unpack(path, &sb.path().join("image"), &rootfs)?;
            let _ = std::fs::remove_dir_all(sb.path().join("image"));
            (crate::spec::from_image(&cfg, &rootfs, opts)?, rootfs)
        }
        RootSource::Bundle(dir) => crate::spec::from_bundle(dir, opts)?,
        RootSource::Rootfs(dir) => {
            if !dir.is_dir() {
                return Err(RunError::Image(image::ImageError::NotFound {
                    path: dir.clone(),
                }));
            }
            (crate::spec::for_rootfs(dir, opts)?, dir.clone())
        }
    })
}

fn kernel_cmdline(config: &Config, req: &RunRequest, sandbox_id: &str) -> String {
    let mut c = String::from("console=ttyS0 quiet panic=-1 reboot=t");
    if let Some(khz) = crate::hypervisor::qemu::host_tsc_khz() {
        c.push_str(&format!(" tsc_early_khz={khz} lpj={}", khz * 4));
    }
    c.push_str(&format!(
        " shoji.sandbox_id={sandbox_id} shoji.launch_ns={}",
        crate::agent::now_unix_ns()
    ));
    if req.agent_tracing {
        c.push_str(" shoji.trace=1");
        c.push_str(&format!(
            " shoji.log={}",
            config.agent.shoji.trace_log_level
        ));
    }
    if let Some(tp) = &req.traceparent {
        c.push_str(&format!(" shoji.traceparent={tp}"));
    }
    let extra = config.hypervisor.qemu.kernel_params.trim();
    if !extra.is_empty() {
        c.push(' ');
        c.push_str(extra);
    }
    c
}
