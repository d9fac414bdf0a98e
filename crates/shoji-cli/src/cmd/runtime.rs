//! `shoji run`, `shoji env`, and the dispatch of the OCI-runtime-shaped lifecycle commands
//! (`cmd/lifecycle.rs`).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shoji_runtime::config::Config;
use shoji_runtime::run::RunRequest;
use shoji_runtime::sandbox::RootSource;
use shoji_runtime::spec::{parse_size, ProcessOptions};
use tracing::Instrument;

use super::telemetry::{self, TraceHooks};
use super::{lifecycle, GlobalArgs};

#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Run a command in a new container, in a new microVM
    Run(Box<RunArgs>),
    /// Show what Shoji found and chose: QEMU, accelerator and why, kernel, initrd, helpers
    Env(EnvArgs),
    /// Create a container in a new microVM, not started yet (OCI runtime lifecycle)
    Create(Box<lifecycle::CreateArgs>),
    /// Start a created container
    Start(lifecycle::IdArgs),
    /// Print a container's OCI state as JSON
    State(lifecycle::IdArgs),
    /// Send a signal to a container's process (default TERM)
    Kill(lifecycle::KillArgs),
    /// Stop a container's VM and remove everything it left
    Delete(lifecycle::DeleteArgs),
    /// Run a command in a running container, with its output and exit code
    Exec(lifecycle::ExecArgs),
    /// List the containers made with `shoji create`
    List(lifecycle::ListArgs),
    /// Remove what killed `shoji run`s left: sandbox directories, rootfs mounts, helper processes
    Gc,
    /// The sandbox process of one container (started by `shoji create`)
    #[command(name = "__sandbox", hide = true)]
    Sandbox(lifecycle::SandboxArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// Remove the sandbox when the container exits (always the case today; accepted for docker
    /// compatibility)
    #[arg(long)]
    pub rm: bool,
    /// Keep stdin open and pass it to the container
    #[arg(short, long)]
    pub interactive: bool,
    /// Give the container a terminal
    #[arg(short, long)]
    pub tty: bool,
    /// Trace this run: runtime, hypervisor and agent (overrides enable_tracing in the config)
    #[arg(long)]
    pub trace: bool,
    /// Set an environment variable (K=V), repeatable
    #[arg(short, long = "env", value_name = "K=V")]
    pub env: Vec<String>,
    /// Working directory inside the container
    #[arg(short, long = "workdir", value_name = "DIR")]
    pub workdir: Option<String>,
    /// User inside the container: UID[:GID] or NAME[:GROUP] from the image's /etc/passwd (resolved in the guest)
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// Add a Linux capability to Docker's default set (CAP_X, X or ALL), repeatable
    #[arg(long = "cap-add", value_name = "CAP")]
    pub cap_add: Vec<String>,
    /// Drop a Linux capability from Docker's default set (CAP_X, X or ALL), repeatable
    #[arg(long = "cap-drop", value_name = "CAP")]
    pub cap_drop: Vec<String>,
    /// vCPUs for the VM and CPU limit for the container
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory for the VM and limit for the container, e.g. 256M, 1G
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Container id (default: the sandbox id); also the hostname unless --hostname is given
    #[arg(long)]
    pub name: Option<String>,
    #[command(flatten)]
    pub net: super::network::NetworkArgs,
    #[command(flatten)]
    pub volumes: super::volumes::VolumeArgs,
    /// A runc-style bundle directory (config.json + rootfs)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rootfs", "image"])]
    pub bundle: Option<PathBuf>,
    /// A root filesystem directory
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// OCI image layout directory, OCI archive or `docker save` tarball (`PATH:TAG` picks a
    /// tagged entry), or a registry reference [REGISTRY/]NAME[:TAG|@DIGEST], pulled first
    #[arg(value_name = "IMAGE", required_unless_present_any = ["bundle", "rootfs"])]
    pub image: Option<PathBuf>,
    #[command(flatten)]
    pub registry: super::image::RegistryArgs,
    /// Command and arguments (default: the image's Entrypoint and Cmd)
    #[arg(last = true, value_name = "CMD")]
    pub command: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct EnvArgs {
    /// Print JSON
    #[arg(long)]
    pub json: bool,
}

impl RuntimeCommand {
    pub fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        match self {
            RuntimeCommand::Run(a) => a.run(global),
            RuntimeCommand::Env(a) => {
                let config = load_config(global)?;
                let report = shoji_runtime::env::report(&config);
                if a.json {
                    println!("{}", serde_json::to_string_pretty(&report)?);
                } else {
                    print!("{report}");
                }
                Ok(ExitCode::SUCCESS)
            }
            RuntimeCommand::Create(a) => a.run(global),
            RuntimeCommand::Start(a) => lifecycle::start(a, global),
            RuntimeCommand::State(a) => lifecycle::state(a, global),
            RuntimeCommand::Kill(a) => lifecycle::kill(a, global),
            RuntimeCommand::Delete(a) => lifecycle::delete(a, global),
            RuntimeCommand::Exec(a) => lifecycle::exec(a, global),
            RuntimeCommand::List(a) => lifecycle::list(a, global),
            RuntimeCommand::Gc => gc(global),
            RuntimeCommand::Sandbox(a) => lifecycle::sandbox(a, global),
        }
    }
}

/// `shoji gc`: one line per reclaimed sandbox directory.
fn gc(global: &GlobalArgs) -> anyhow::Result<ExitCode> {
    let config = load_config(global)?;
    let root = shoji_runtime::sandbox::sandbox_root(&config);
    let mut failed = false;
    for r in shoji_runtime::reclaim::reclaim_abandoned(&root) {
        match r.error {
            None => println!(
                "removed {} (killed {} leftover processes)",
                r.dir.display(),
                r.killed.len()
            ),
            Some(e) => {
                failed = true;
                eprintln!("cannot remove {}: {e}", r.dir.display());
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    super::load_config(global)
}

impl RunArgs {
    fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        let config = load_config(global)?;
        let source = if let Some(b) = self.bundle {
            RootSource::Bundle(b)
        } else if let Some(r) = self.rootfs {
            RootSource::Rootfs(r)
        } else if let Some(i) = self.image {
            RootSource::Image(i)
        } else {
            anyhow::bail!("give an IMAGE, --bundle DIR or --rootfs DIR");
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
        let req = RunRequest {
            source: Some(source),
            process: ProcessOptions {
                args: self.command,
                env: self.env,
                cwd: self.workdir,
                user: self.user,
                terminal: self.tty,
                memory_bytes,
                cpus: self.cpus,
                cap_add: self.cap_add,
                cap_drop: self.cap_drop,
                mounts: self.volumes.mounts()?,
                read_only: self.volumes.read_only,
            },
            interactive: self.interactive,
            container_id: self.name,
            agent_tracing: config
                .tracing
                .agent_traced(self.trace || config.agent.shoji.enable_tracing),
            traceparent: None,
            network: self.net.options(),
            // As `shoji pull` shows it: a spinner per layer, on a terminal only.
            unpack_progress: self
                .registry
                .options()
                .progress
                .then(super::image::unpack_spinner),
        };
        let runtime_tracing = config
            .tracing
            .runtime_traced(self.trace || config.runtime.enable_tracing);
        let agent_tracing = req.agent_tracing;
        let tcfg = telemetry::config(&config, global, runtime_tracing, agent_tracing);
        let mut telemetry =
            shoji_telemetry::host::init(&tcfg).context("while setting up tracing")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("while starting the async runtime")?;
        let pull_opts = self.registry.options();
        let outcome = rt.block_on(async {
            let span = telemetry::root_span!("run");
            let mut hooks = TraceHooks::new(&telemetry, runtime_tracing, agent_tracing);
            let mut req = req;
            let result = async {
                // A registry reference is pulled first, in the run's trace.
                if let Some(RootSource::Image(arg)) = &req.source {
                    let image =
                        super::image::resolve_image(arg, &config.image_store(), &pull_opts).await?;
                    req.source = Some(RootSource::Image(image));
                }
                shoji_runtime::run::run(&config, req, &mut hooks)
                    .await
                    .map_err(anyhow::Error::from)
            }
            .instrument(span.clone())
            .await;
            let rejected = hooks.finish(std::time::Duration::from_secs(2)).await;
            match &result {
                Ok(o) => {
                    span.record("process.exit_code", o.exit_code);
                    span.record("shoji.clock_offset_ns", o.clock.offset_ns);
                    o.agent_spans.record_on(&span);
                }
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_message", format!("{e:#}").as_str());
                }
            }
            span.record("shoji.dropped_spans", telemetry.dropped() + rejected);
            span.record("shoji.level_dropped_spans", telemetry.dropped_by_level());
            drop(span);
            result
        });
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        telemetry.flush();
        let outcome = outcome?;
        Ok(ExitCode::from((outcome.exit_code & 0xff) as u8))
    }
}
