//! `shoji run`: one sandbox, one container, from nothing to exit status and back to nothing.
//!
//! Every resource is owned by a guard (sandbox directory, helper processes, QEMU, stdio relays)
//! declared in an order such that dropping them in reverse tears everything down on any exit
//! path: success, error, or a signal turned into an early return.

use std::path::PathBuf;
use std::time::Duration;

use shoji_protocols::agent;
use tokio::signal::unix::{signal, SignalKind};
use tracing::{info_span, Instrument};

use crate::agent::{AgentClient, AgentError, ClockOffset};
use crate::config::Config;
use crate::lifecycle::state::ProcessRecord;
use crate::private_fs;
use crate::reclaim::OwnerRecord;
use crate::sandbox::{SandboxDir, SandboxError};
use crate::spec::{ProcessOptions, SpecError};
use crate::stdio::{RawTerminal, StdioRelay, FIRST_STDIO_PORT};
use crate::vm::{Binaries, BootOptions, SandboxVm};
use crate::{helpers, image, process, sandbox};

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
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
    #[error(
        "sandbox {sandbox}: {cause}{qemu_said}\n--- last lines of the guest console ---\n{console}"
    )]
    Boot {
        sandbox: String,
        cause: AgentError,
        /// What QEMU wrote on stderr if it exited, with a heading; else empty.
        qemu_said: String,
        console: String,
    },
    #[error("invalid --memory {given}: {reason}")]
    Memory { given: String, reason: String },
    #[error("invalid --name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
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
    /// The current span as the root of its trace, when the runtime's spans are exported: the
    /// lifecycle records it in the state (annotations `shoji.trace_id`, `shoji.root_span_id`,
    /// and what `delete` needs to end the root if the sandbox process cannot).
    fn trace_root(&self) -> Option<crate::lifecycle::state::TraceRoot> {
        None
    }
    /// The count of agent spans the built-in forwarder has received; `None` without one. The VM
    /// is stopped only once the spans the agent reports as sent have arrived.
    fn agent_spans_received(&self) -> Option<SpanCount> {
        None
    }
}

/// Reads a running count (of spans received, for [`RunHooks::agent_spans_received`]).
#[derive(Clone)]
pub struct SpanCount(pub std::sync::Arc<dyn Fn() -> u64 + Send + Sync>);
impl std::fmt::Debug for SpanCount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SpanCount({})", (self.0)())
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

/// Where sandbox directories go: `[runtime] sandbox_root`, else [`sandbox::default_root`].
pub fn sandbox_root(config: &Config) -> PathBuf {
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

    // Refuse what is wrong before anything is started, and resolve everything that can be
    // missing.
    if let Some(name) = &req.container_id {
        crate::lifecycle::state::id_problem(name).map_err(|reason| RunError::InvalidName {
            name: name.clone(),
            reason,
        })?;
    }
    let mut opts = BootOptions::for_process(config, &req.process, req.agent_tracing)?;
    opts.traceparent = req.traceparent.clone();
    let bins = Binaries::locate(config)?;

    let root = sandbox_root(config);
    crate::reclaim::reclaim_abandoned(&root);
    let sb = SandboxDir::create(&root, &sandbox::new_sandbox_id())?;
    let mut owner = OwnerRecord::this_process();
    if let Some(o) = &owner {
        o.write(sb.path()).map_err(|source| SandboxError::Create {
            path: sb.path().join(crate::reclaim::OWNER_FILE),
            source,
        })?;
    }
    let container_id = req.container_id.clone().unwrap_or_else(|| sb.id.clone());
    tracing::Span::current().record("sandbox_id", sb.id.as_str());
    tracing::Span::current().record("container_id", container_id.as_str());
    tracing::Span::current().record("container.id", container_id.as_str());

    let unpack_span =
        info_span!("image.unpack", source = "runtime", subsystem = "image", sandbox_id = %sb.id);

    // An image is unpacked while the guest boots: the rootfs is only looked at when the agent
    // mounts it in CreateContainer, and on a 2-core host the unpack (25-150 ms) and QEMU's
    // start overlap (issue #2). virtiofsd serves the directory as it fills.
    let (vm, spec) = if let RootSource::Image(path) = &source {
        let rootfs = sb.rootfs();
        std::fs::create_dir_all(&rootfs).map_err(|source| {
            RunError::Image(image::ImageError::Io {
                path: rootfs.clone(),
                source,
            })
        })?;
        // Mounted before anything is unpacked into it: no moment where a setuid file from the
        // image is reachable without `nosuid`.
        let rootfs = sb.share_rootfs(&rootfs)?;
        let (path, work, dest, process) = (
            path.clone(),
            sb.path().join("image"),
            rootfs.clone(),
            req.process.clone(),
        );
        let mut unpack = tokio::task::spawn_blocking(move || {
            unpack_span.in_scope(|| unpack_image(&path, &work, &dest, &process))
        });
        let joined = |r: Result<Result<_, RunError>, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| {
                Err(RunError::Image(image::ImageError::Io {
                    path: source_path(&source),
                    source: std::io::Error::other(format!("the unpacking task failed: {e}")),
                }))
            })
        };
        let sb_path = sb.path().to_path_buf();
        let mut boot = Box::pin(SandboxVm::boot(config, &bins, sb, &rootfs, &opts, hooks));
        // A bad image is reported as soon as the unpack fails: dropping the boot future stops
        // whatever it started (its guards) without waiting for the guest.
        let (booted, unpacked) = tokio::select! {
            u = &mut unpack => match joined(u) {
                Ok(spec) => ((&mut boot).await, Ok(spec)),
                Err(e) => {
                    drop(boot);
                    let _ = private_fs::remove_sandbox_dir(&sb_path);
                    return Err(e);
                }
            },
            b = &mut boot => (b, joined(unpack.await)),
        };
        match (booted, unpacked) {
            (Ok(vm), Ok(spec)) => (vm, spec),
            (Ok(vm), Err(e)) => {
                vm.stop().await;
                return Err(e);
            }
            (Err(e), _) => {
                // The sandbox directory went with the failed boot, possibly while the unpack
                // was still writing into it.
                let _ = private_fs::remove_sandbox_dir(&sb_path);
                return Err(e);
            }
        }
    } else {
        let (spec, rootfs) = unpack_span.in_scope(|| prepare_rootfs(&source, &sb, &req.process))?;
        let rootfs = sb.share_rootfs(&rootfs)?;
        let vm = SandboxVm::boot(config, &bins, sb, &rootfs, &opts, hooks).await?;
        (vm, spec)
    };
    // What a reclaimer must kill if this process is SIGKILLed (they should die with it).
    if let Some(o) = &mut owner {
        o.processes = vm
            .processes
            .iter()
            .filter_map(|p| ProcessRecord::capture(p.what, p.pid))
            .collect();
        if let Err(e) = o.write(vm.sb.path()) {
            tracing::warn!(error = %e, "cannot update the sandbox's owner record");
        }
    }
    let spec_json = serde_json::to_vec(&spec).map_err(|e| SpecError::Build(e.to_string()))?;
    let client = &vm.client;

    let mut outcome = RunOutcome {
        sandbox_id: vm.sb.id.clone(),
        container_id: container_id.clone(),
        accel: vm.accel.accel.as_str().into(),
        clock: vm.clock,
        boot_phases: vm.boot_phases.clone(),
        ..Default::default()
    };

    let terminal = req.process.terminal;
    let (ports, relay) = StdioRelay::start(&vm.sb, FIRST_STDIO_PORT, req.interactive, terminal)?;
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
        wait_with_signals(client, &container_id)
            .instrument(info_span!("container.wait", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id, process.exit_code = tracing::field::Empty))
            .await
    };
    let status = tokio::select! {
        r = container => r,
        status = vm.exited() => return Err(vm.died(status).await),
    };
    let status = match status {
        Ok(s) => s,
        Err(cause) => return Err(vm.explain(cause).await),
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

    outcome.agent_dropped_spans = vm.stop().await;
    Ok(outcome)
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

fn source_path(source: &RootSource) -> PathBuf {
    match source {
        RootSource::Image(p) | RootSource::Bundle(p) | RootSource::Rootfs(p) => p.clone(),
    }
}

/// Unpacks an image into `rootfs` (scratch space in `work`) and builds the runtime spec.
fn unpack_image(
    path: &std::path::Path,
    work: &std::path::Path,
    rootfs: &std::path::Path,
    opts: &ProcessOptions,
) -> Result<oci_spec::runtime::Spec, RunError> {
    let cfg = image::unpack(path, work, rootfs)?;
    let _ = std::fs::remove_dir_all(work);
    Ok(crate::spec::from_image(&cfg, rootfs, opts)?)
}

pub(crate) fn prepare_rootfs(
    source: &RootSource,
    sb: &SandboxDir,
    opts: &ProcessOptions,
) -> Result<(oci_spec::runtime::Spec, PathBuf), RunError> {
    Ok(match source {
        RootSource::Image(path) => {
            let rootfs = sb.rootfs();
            let spec = unpack_image(path, &sb.path().join("image"), &rootfs, opts)?;
            (spec, rootfs)
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
