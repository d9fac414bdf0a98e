//! `shoji create|start|state|kill|delete|exec|list` and the hidden `shoji __sandbox`, the
//! per-container sandbox process that `create` starts. Wiring only: the lifecycle lives in
//! `shoji_runtime::lifecycle`.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use shoji_runtime::lifecycle::client::StateRoot;
use shoji_runtime::lifecycle::daemon::{self, CreateRequest, SandboxExit};
use shoji_runtime::lifecycle::parse_signal;
use shoji_runtime::lifecycle::state;
use shoji_runtime::sandbox::RootSource;
use shoji_runtime::spec::{parse_size, ProcessOptions};

use tracing::Instrument;

use super::telemetry::{self, TraceHooks};
use super::GlobalArgs;

/// Options of the container's process that `create` and `exec` share.
#[derive(Debug, clap::Args)]
pub struct ProcessArgs {
    /// Set an environment variable (K=V), repeatable
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User inside the container: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd (resolved in the guest)
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
}

#[derive(Debug, clap::Args)]
pub struct CreateArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
    /// vCPUs for the VM and CPU limit for the container
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory for the VM and limit for the container, e.g. 256M, 1G
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Add a Linux capability to Docker's default set (CAP_X, X or ALL), repeatable
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability from Docker's default set (CAP_X, X or ALL), repeatable
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// Trace the container's whole life, create to delete, as one trace: runtime, hypervisor
    /// and agent (overrides enable_tracing in the config); its id is the state's
    /// `shoji.trace_id` annotation
    #[arg(long)]
    pub trace: bool,
    #[command(flatten)]
    pub volumes: super::volumes::VolumeArgs,
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
    /// A runc-style bundle directory (config.json + rootfs)
    #[arg(long, value_name = "DIR", conflicts_with = "rootfs")]
    pub bundle: Option<PathBuf>,
    /// A root filesystem directory
    #[arg(long, value_name = "DIR")]
    pub rootfs: Option<PathBuf>,
    /// IMAGE (an OCI image layout directory, OCI archive or `docker save` tarball, `PATH:TAG`
    /// for a tagged entry, or a registry reference, pulled first; not with --bundle or
    /// --rootfs), then the container ID
    #[arg(value_name = "[IMAGE] ID", num_args = 1..=2, required = true)]
    pub positional: Vec<String>,
    #[command(flatten)]
    pub registry: super::image::RegistryArgs,
    /// Command and arguments (default: the image's Entrypoint and Cmd, or the bundle's)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct IdArgs {
    /// Container ID
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct KillArgs {
    /// Container ID
    pub id: String,
    /// Signal: a name (TERM, SIGKILL) or a number
    #[arg(default_value = "TERM")]
    pub signal: String,
}

#[derive(Debug, clap::Args)]
pub struct DeleteArgs {
    /// Delete a running container too (it is killed)
    #[arg(short, long)]
    pub force: bool,
    /// Container ID
    pub id: String,
}

#[derive(Debug, clap::Args)]
pub struct ExecArgs {
    #[command(flatten)]
    pub process: ProcessArgs,
    /// Keep stdin open and pass it to the process
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the process a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Container ID
    pub id: String,
    /// Command and arguments
    #[arg(
        value_name = "CMD",
        required = true,
        trailing_var_arg = true,
        allow_hyphen_values = true
    )]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Print the OCI states as a JSON array
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, clap::Args)]
pub struct SandboxArgs {
    /// The state directory `shoji create` made
    pub dir: PathBuf,
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<shoji_runtime::config::Config> {
    super::load_config(global)
}

/// A small runtime for a client command: a few socket round trips.
fn block_on<F: std::future::Future>(f: F) -> anyhow::Result<F::Output> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    Ok(rt.block_on(f))
}

fn state_root(global: &GlobalArgs) -> anyhow::Result<StateRoot> {
    Ok(StateRoot::from_config(&load_config(global)?))
}

impl CreateArgs {
    pub fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        let config = load_config(global)?;
        let mut positional = self.positional;
        let id = positional.pop().unwrap_or_default();
        let image = positional.pop();
        let source = match (self.bundle, self.rootfs, image) {
            (Some(b), None, None) => RootSource::Bundle(b),
            (None, Some(r), None) => RootSource::Rootfs(r),
            (None, None, Some(i)) => {
                let (arg, store) = (PathBuf::from(i), config.image_store());
                let opts = self.registry.options();
                let image = block_on(super::image::resolve_image(&arg, &store, &opts))??;
                RootSource::Image(image)
            }
            (None, None, None) => {
                anyhow::bail!("give an IMAGE, --bundle DIR or --rootfs DIR before the ID {id:?}")
            }
            _ => anyhow::bail!("give one of IMAGE, --bundle DIR or --rootfs DIR, then the ID"),
        };
        let memory_bytes = self
            .memory
            .as_deref()
            .map(parse_size)
            .transpose()
            .context("while reading --memory")?;
        if let Some(c) = self.cpus {
            anyhow::ensure!(
                c > 0.0 && c <= 64.0,
                "--cpus must be between 0 and 64, got {c}"
            );
        }
        let req = CreateRequest {
            id: id.clone(),
            source,
            process: ProcessOptions {
                args: self.command,
                env: self.process.env,
                cwd: self.process.workdir,
                user: self.process.user,
                terminal: false,
                memory_bytes,
                cpus: self.cpus,
                cap_add: self.cap_add,
                cap_drop: self.cap_drop,
                mounts: self.volumes.mounts()?,
                read_only: self.volumes.read_only,
            },
            trace: self.trace,
            network: self.net.options(),
        };
        // Refused here, before the sandbox process starts (it checks again).
        req.network
            .validate()
            .context("while checking the network options")?;
        let root = StateRoot::from_config(&config);
        let exe = std::env::current_exe().context("while finding the shoji binary")?;
        let dir = root.path().join(&id);
        // The sandbox process reads the same configuration; the state directory comes first so
        // that its command line names it.
        let mut args: Vec<OsString> = vec!["__sandbox".into(), dir.into()];
        if let Some(c) = &global.config {
            args.push("--config".into());
            args.push(std::path::absolute(c).unwrap_or_else(|_| c.clone()).into());
        }
        if let Some(d) = &global.data_dir {
            args.push("--data-dir".into());
            args.push(d.into());
        }
        let timeout = Duration::from_secs(config.hypervisor.qemu.boot_timeout.max(1) + 120);
        let mut end_root = |lost: &_| telemetry::end_lost_root(lost, "shoji create");
        block_on(root.create(&req, &exe, &args, timeout, &mut end_root))?
            .with_context(|| format!("while creating container {id}"))?;
        Ok(ExitCode::SUCCESS)
    }
}

pub fn start(a: IdArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let root = state_root(global)?;
    block_on(root.start(&a.id))?.with_context(|| format!("while starting container {}", a.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn state(a: IdArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let root = state_root(global)?;
    let st = block_on(root.state(&a.id))?
        .with_context(|| format!("while reading the state of container {}", a.id))?;
    println!("{}", serde_json::to_string_pretty(&st)?);
    Ok(ExitCode::SUCCESS)
}

pub fn kill(a: KillArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let signal = parse_signal(&a.signal)?;
    let root = state_root(global)?;
    block_on(root.kill(&a.id, signal))?
        .with_context(|| format!("while signalling container {}", a.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn delete(a: DeleteArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let root = state_root(global)?;
    let mut end_root = |lost: &_| telemetry::end_lost_root(lost, "shoji delete");
    block_on(root.delete(&a.id, a.force, &mut end_root))?
        .with_context(|| format!("while deleting container {}", a.id))?;
    Ok(ExitCode::SUCCESS)
}

pub fn exec(a: ExecArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let root = state_root(global)?;
    let process = ProcessOptions {
        args: a.command,
        env: a.process.env,
        cwd: a.process.workdir,
        user: a.process.user,
        terminal: a.tty,
        ..Default::default()
    };
    let code = block_on(root.exec(&a.id, process, a.interactive))?
        .with_context(|| format!("while running a process in container {}", a.id))?;
    Ok(ExitCode::from((code & 0xff) as u8))
}

pub fn list(a: ListArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let root = state_root(global)?;
    let states = block_on(root.list())?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&states)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!(
        "{:<24} {:<9} {:<8} {:<31} BUNDLE",
        "ID", "STATUS", "PID", "CREATED"
    );
    for s in states {
        let pid = s.pid.map(|p| p.to_string()).unwrap_or_else(|| "-".into());
        println!(
            "{:<24} {:<9} {:<8} {:<31} {}",
            s.id,
            s.status,
            pid,
            s.created,
            s.bundle.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// The sandbox process. Its stderr is `<state dir>/sandbox.log`.
pub fn sandbox(a: SandboxArgs, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global)?;
    let req = daemon::read_request().context("while reading the create request")?;
    let root = a
        .dir
        .parent()
        .map(PathBuf::from)
        .context("the state directory has no parent")?;
    anyhow::ensure!(
        a.dir.file_name() == Some(std::ffi::OsStr::new(&req.id)),
        "state directory {} does not match container id {:?}",
        a.dir.display(),
        req.id
    );
    let runtime_tracing = req.runtime_tracing(&config);
    let agent_tracing = req.agent_tracing(&config);
    let tcfg = telemetry::config(&config, global, runtime_tracing, agent_tracing);
    let mut telemetry = shoji_telemetry::host::init(&tcfg).context("while setting up tracing")?;
    // One thread: the helpers and QEMU are started from it, and their parent-death signal
    // fires when the thread that started them ends (ADR 007).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("while starting the async runtime")?;
    let result = rt.block_on(async {
        // The root of the sandbox's one trace: from create to delete (or until this process is
        // told to stop). Its children are exported as they end, so the trace can be read while
        // the sandbox lives; this span itself arrives last. Its ids and start go into the state,
        // so that `delete` can end it in its place if this process is killed.
        let started = std::time::SystemTime::now();
        let span = telemetry::root_span!("sandbox");
        let mut hooks =
            TraceHooks::new(&telemetry, runtime_tracing, agent_tracing).rooted_at(started);
        let result = daemon::serve(&config, &root, req, &mut hooks)
            .instrument(span.clone())
            .await;
        // The agent flushed its spans before the VM stopped; what is still in transit gets a
        // moment to arrive.
        let rejected = hooks.finish(Duration::from_secs(2)).await;
        drop(hooks);
        if let Err(e) = &result {
            span.record("otel.status_code", "ERROR");
            span.record(
                "otel.status_message",
                shoji_runtime::error_chain(e).as_str(),
            );
        }
        span.record("shoji.dropped_spans", telemetry.dropped() + rejected);
        span.record("shoji.level_dropped_spans", telemetry.dropped_by_level());
        if runtime_tracing && matches!(result, Ok(SandboxExit::Stopped)) {
            // This process ends the root: the `delete` to come must not end it again. Only
            // here is the state directory left behind; on the other paths it is gone already
            // (and the id may name a new container's directory by now).
            state::claim_root_end(&a.dir);
        }
        drop(span);
        // Before `delete` is answered: once `shoji delete` returns, the trace is whole.
        telemetry.flush();
        match result {
            Ok(SandboxExit::Deleted(reply)) => {
                reply.send().await;
                Ok(())
            }
            Ok(SandboxExit::Stopped) => Ok(()),
            Err(e) => Err(e),
        }
    });
    drop(rt);
    telemetry.flush();
    result.with_context(|| format!("sandbox process for {}", a.dir.display()))?;
    Ok(ExitCode::SUCCESS)
}
