//! `shoji run`: one sandbox, one container, from nothing to exit status and back to nothing.
//!
//! Every resource is owned by a guard (sandbox directory, helper processes, QEMU, stdio relays)
//! declared in an order such that dropping them in reverse tears everything down on any exit
//! path: success, error, or a signal turned into an early return.

use std::time::Duration;

use shoji_protocols::agent;
use tracing::{info_span, Instrument};

use crate::agent::{AgentClient, AgentError, ClockOffset};
use crate::config::Config;
use crate::image;
use crate::lifecycle::state::ProcessRecord;
use crate::reclaim::{OwnerRecord, OWNER_FILE};
use crate::sandbox::rootfs::{image_rootfs, unpack_image};
use crate::sandbox::{
    self, prepare_rootfs, remove_sandbox_dir, Binaries, BootError, BootOptions, RootSource,
    RunHooks, SandboxDir, SandboxError, SandboxVm,
};
use crate::signals::{self, Signals};
use crate::spec::{ProcessOptions, SpecError};
use crate::stdio::{RawTerminal, StdioError, StdioRelay, FIRST_STDIO_PORT};

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
    /// `--network`, `-p`, `--hostname`, `--add-host`, `--dns`.
    pub network: crate::network::NetworkOptions,
    /// Told about each layer unpacked into the image store (as root; a rootless run unpacks
    /// into its sandbox while the guest boots and reports nothing).
    pub unpack_progress: Option<crate::sandbox::UnpackProgress>,
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
    /// What the agent said of its spans at `Shutdown`.
    pub agent_spans: crate::sandbox::AgentSpanCounts,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no image, --bundle or --rootfs given")]
    NoSource,
    #[error(transparent)]
    Sandbox(#[from] BootError),
    #[error(transparent)]
    Network(#[from] crate::network::NetworkError),
    #[error(transparent)]
    Volume(#[from] crate::volumes::VolumeError),
    #[error("invalid --name {name:?}: {reason}")]
    InvalidName { name: String, reason: &'static str },
}

impl From<SandboxError> for RunError {
    fn from(e: SandboxError) -> Self {
        Self::Sandbox(e.into())
    }
}
impl From<StdioError> for RunError {
    fn from(e: StdioError) -> Self {
        Self::Sandbox(e.into())
    }
}
impl From<SpecError> for RunError {
    fn from(e: SpecError) -> Self {
        Self::Sandbox(e.into())
    }
}

/// Runs one container in a fresh VM and returns its status.
pub async fn run(
    config: &Config,
    req: RunRequest,
    hooks: &mut dyn RunHooks,
) -> Result<RunOutcome, RunError> {
    let source = req.source.clone().ok_or(RunError::NoSource)?;
    // Bad options are refused before anything starts.
    if let Some(name) = &req.container_id {
        crate::lifecycle::state::id_problem(name).map_err(|reason| RunError::InvalidName {
            name: name.clone(),
            reason,
        })?;
    }
    req.network.validate()?;
    crate::volumes::check(&req.process.mounts, &[sandbox::sandbox_root(config)])?;
    if let Some(name) = &req.container_id {
        req.network.hostname_for(name)?;
    }
    let mut opts = BootOptions::for_process(config, &req.process, req.agent_tracing)?;
    opts.traceparent = req.traceparent.clone();
    // Dropped after the VM (declared before it): netns mode undoes its set-up then.
    // The id is chosen here so that every span, network.prepare included, can carry it.
    let sandbox_id = sandbox::new_sandbox_id();
    let net_plan = crate::network::prepare(&sandbox_id, &req.network)?;

    // Resolve everything that can be missing before anything is started.
    let bins = Binaries::locate(config)?;

    let root = sandbox::sandbox_root(config);
    crate::reclaim::reclaim_abandoned(&root);
    let sb = SandboxDir::create(&root, &sandbox_id)?;
    // Written first, so that a reclaimer can tell this directory's owner from the start.
    let mut owner = OwnerRecord::this_process();
    if let Some(o) = &owner {
        o.write(sb.path()).map_err(|source| SandboxError::Create {
            path: sb.path().join(OWNER_FILE),
            source,
        })?;
    }
    let container_id = req.container_id.clone().unwrap_or_else(|| sb.id.clone());
    tracing::Span::current().record("sandbox_id", sb.id.as_str());
    tracing::Span::current().record("container_id", container_id.as_str());
    tracing::Span::current().record("container.id", container_id.as_str());

    let unpack_span = info_span!("image.unpack", source = "runtime", subsystem = "image", sandbox_id = %sb.id, image.layers.unpacked = tracing::field::Empty);
    opts.network = net_plan.vm.clone();

    // Without root (no overlay, no image store) an image is unpacked while the guest boots:
    // the rootfs is only looked at when the agent mounts it in CreateContainer, and on a
    // 2-core host the unpack and QEMU's start overlap (issue #2). virtiofsd serves the
    // directory as it fills. As root the store's layers are put under the container's
    // overlay first (a first run unpacks them into the store; ADR 018).
    let (vm, spec, rootfs) = if let (RootSource::Image(path), false) =
        (&source, sandbox::mounts::can_mount())
    {
        let rootfs = image_rootfs(&sb, &container_id)?;
        // The volumes are staged in the share before virtiofsd serves it; the spec built
        // from the image then names the staged copies.
        let mut process = req.process.clone();
        crate::volumes::prepare(
            &mut process.mounts,
            &sb.shared().join(&container_id),
            std::slice::from_ref(&root),
            None,
        )
        .map_err(BootError::from)?;
        let (path, work, dest) = (path.clone(), sb.path().join("image"), rootfs.host.clone());
        let mut unpack = tokio::task::spawn_blocking(move || {
            unpack_span.in_scope(|| unpack_image(&path, &work, &dest, &process))
        });
        let joined = |r: Result<Result<_, BootError>, tokio::task::JoinError>| {
            r.unwrap_or_else(|e| {
                Err(BootError::Image(image::ImageError::Io {
                    path: source.path().to_path_buf(),
                    source: std::io::Error::other(format!("the unpacking task failed: {e}")),
                }))
            })
        };
        let sb_path = sb.path().to_path_buf();
        let share = rootfs.share.clone();
        let mut boot = Box::pin(SandboxVm::boot(config, &bins, sb, &share, &opts, hooks));
        // A bad image is reported as soon as the unpack fails: dropping the boot future stops
        // whatever it started (its guards) without waiting for the guest.
        let (booted, unpacked) = tokio::select! {
            u = &mut unpack => match joined(u) {
                Ok(spec) => ((&mut boot).await, Ok(spec)),
                Err(e) => {
                    drop(boot);
                    let _ = remove_sandbox_dir(&sb_path);
                    return Err(e.into());
                }
            },
            b = &mut boot => (b, joined(unpack.await)),
        };
        match (booted, unpacked) {
            (Ok(vm), Ok(spec)) => (vm, spec, rootfs),
            (Ok(vm), Err(e)) => {
                vm.stop().await;
                return Err(e.into());
            }
            (Err(e), _) => {
                // The sandbox directory went with the failed boot, possibly while the unpack
                // was still writing into it.
                let _ = remove_sandbox_dir(&sb_path);
                return Err(e.into());
            }
        }
    } else {
        // On a blocking thread: a first run unpacks the image's layers into the store.
        let (src, cid, process, store, progress) = (
            source.clone(),
            container_id.clone(),
            req.process.clone(),
            config.image_store(),
            req.unpack_progress.clone(),
        );
        let (sb, prepared) = tokio::task::spawn_blocking(move || {
            let r = unpack_span
                .in_scope(|| prepare_rootfs(&src, &sb, &cid, &process, &store, progress.as_ref()));
            (sb, r)
        })
        .await
        .map_err(|e| {
            BootError::Image(image::ImageError::Io {
                path: source.path().to_path_buf(),
                source: std::io::Error::other(format!("the unpacking task failed: {e}")),
            })
        })?;
        let (spec, rootfs) = prepared?;
        let vm = SandboxVm::boot(config, &bins, sb, &rootfs.share, &opts, hooks).await?;
        (vm, spec, rootfs)
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
    let mut spec = spec;
    let hostname = match (&req.network.hostname, &source, spec.hostname()) {
        // A bundle's own hostname stands unless --hostname is given.
        (None, RootSource::Bundle(_), Some(h)) if !h.is_empty() => h.clone(),
        _ => req.network.hostname_for(&container_id)?,
    };
    crate::network::apply_hostname(&mut spec, &hostname, &req.process.env);
    let spec_json = serde_json::to_vec(&spec).map_err(|e| SpecError::Build(e.to_string()))?;
    let client = &vm.client;
    let files = match crate::network::setup(&vm, &req.network, &net_plan, &hostname).await {
        Ok(f) => f,
        Err(cause) => return Err(vm.explain(cause).await.into()),
    };

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

    let create_span = info_span!("container.create", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id);
    let seccomp_program = create_span
        .in_scope(|| crate::seccomp::program_for_guest(&spec_json))
        .map_err(SpecError::from)?;
    let container = async {
        client
            .create_container(agent::CreateContainerRequest {
                container_id: container_id.clone(),
                oci_spec_json: spec_json,
                rootfs_tag: crate::sandbox::SHARE_TAG.into(),
                rootfs_path: rootfs.in_share.clone(),
                stdio: Some(ports).into(),
                files,
                seccomp_program,
                ..Default::default()
            })
            .instrument(create_span)
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
        wait_with_signals(client, &container_id, terminal)
            .instrument(info_span!("container.wait", source = "runtime", subsystem = "container", container_id = %container_id, container.id = %container_id, process.exit_code = tracing::field::Empty))
            .await
    };
    let status = tokio::select! {
        r = container => r,
        status = vm.exited() => return Err(vm.died(status).await.into()),
    };
    let status = match status {
        Ok(s) => s,
        Err(cause) => return Err(vm.explain(cause).await.into()),
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

    outcome.agent_spans = vm.stop().await;
    Ok(outcome)
}

/// Waits for the container's init; SIGINT/SIGTERM/SIGHUP/SIGQUIT received meanwhile are
/// forwarded to it. If it is still running 3 s after a forwarded signal (a PID 1 without a
/// handler ignores most signals) it is killed, and the status reports the signal received.
/// With a terminal, every SIGWINCH passes the host terminal's new size to the guest's.
async fn wait_with_signals(
    client: &AgentClient,
    cid: &str,
    terminal: bool,
) -> Result<i32, AgentError> {
    let mut signals = Signals::new(signals::FORWARDED);
    let mut resized = Signals::new(if terminal { signals::RESIZED } else { &[] });
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
            sig = signals.recv() => sig,
            _ = resized.recv() => {
                if let Some((rows, cols)) = crate::stdio::terminal_size() {
                    let _ = client.resize_terminal(cid, rows, cols).await;
                }
                continue;
            }
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
