//! `shoji run`, `shoji env` and the OCI-runtime-shaped lifecycle commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use shoji_runtime::config::Config;
use shoji_runtime::run::{RootSource, RunRequest};
use shoji_runtime::spec::{parse_size, ProcessOptions};
use tracing::Instrument;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Run a command in a new container, in a new microVM
    Run(Box<RunArgs>),
    /// Show what Shoji found and chose: QEMU, accelerator and why, kernel, initrd, helpers
    Env(EnvArgs),
    /// Create a container (OCI runtime lifecycle; not supported yet)
    Create(LifecycleArgs),
    /// Start a created container (not supported yet)
    Start(LifecycleArgs),
    /// Show a container's state (not supported yet)
    State(LifecycleArgs),
    /// Send a signal to a container (not supported yet)
    Kill(LifecycleArgs),
    /// Delete a container (not supported yet)
    Delete(LifecycleArgs),
    /// Run a command in a running sandbox (not supported yet)
    Exec(LifecycleArgs),
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
    /// User inside the container: UID[:GID] or a name from the image's /etc/passwd
    #[arg(short, long, value_name = "UID[:GID]")]
    pub user: Option<String>,
    /// vCPUs for the VM and CPU limit for the container
    #[arg(long, value_name = "N")]
    pub cpus: Option<f64>,
    /// Memory for the VM and limit for the container, e.g. 256M, 1G
    #[arg(short, long, value_name = "SIZE")]
    pub memory: Option<String>,
    /// Container id (default: the sandbox id)
    #[arg(long)]
    pub name: Option<String>,
    /// A runc-style bundle directory (config.json + rootfs)
    #[arg(long, value_name = "DIR", conflicts_with_all = ["rootfs", "image"])]
    pub bundle: Option<PathBuf>,
    /// A root filesystem directory
    #[arg(long, value_name = "DIR", conflicts_with = "image")]
    pub rootfs: Option<PathBuf>,
    /// OCI image layout directory, OCI archive or `docker save` tarball
    #[arg(value_name = "IMAGE", required_unless_present_any = ["bundle", "rootfs"])]
    pub image: Option<PathBuf>,
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

#[derive(Debug, clap::Args)]
pub struct LifecycleArgs {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub args: Vec<String>,
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
            _ => anyhow::bail!(
                "the OCI lifecycle commands (create, start, state, kill, delete, exec) are not supported yet; use `shoji run`"
            ),
        }
    }
}

fn load_config(global: &GlobalArgs) -> anyhow::Result<Config> {
    Ok(Config::load(global.config.as_deref())?)
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
            },
            interactive: self.interactive,
            container_id: self.name,
            agent_tracing: self.trace || config.agent.shoji.enable_tracing,
            traceparent: None,
        };
        let runtime_tracing = self.trace || config.runtime.enable_tracing;
        let agent_tracing = req.agent_tracing;
        let tcfg = shoji_telemetry::host::TelemetryConfig {
            tracing: runtime_tracing || agent_tracing,
            runtime_spans: runtime_tracing,
            data_dir: shoji_trace::data_dir::resolve(global.data_dir.as_deref()),
            otlp_endpoint: config.runtime.otlp_endpoint.clone(),
            otlp_protocol: config.runtime.otlp_protocol.clone(),
            service_name: config.runtime.service_name.clone(),
            sampler: config.runtime.sampler.clone(),
            span_event_level: config.agent.shoji.trace_log_level.clone(),
        };
        let mut telemetry =
            shoji_telemetry::host::init(&tcfg).context("while setting up tracing")?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("while starting the async runtime")?;
        let outcome = rt.block_on(async {
            let span = tracing::info_span!(
                "run",
                source = "runtime",
                package = "shoji_cli",
                subsystem = "runtime",
                sandbox_id = tracing::field::Empty,
                container_id = tracing::field::Empty,
                vm.accel = tracing::field::Empty,
                process.exit_code = tracing::field::Empty,
                shoji.clock_offset_ns = tracing::field::Empty,
                shoji.agent_dropped_spans = tracing::field::Empty,
                shoji.dropped_spans = tracing::field::Empty,
                otel.status_code = tracing::field::Empty,
                otel.status_message = tracing::field::Empty,
            );
            let mut hooks = TraceHooks {
                telemetry: &telemetry,
                agent_tracing,
                runtime_tracing,
                forwarder: None,
            };
            let result = shoji_runtime::run::run(&config, req, &mut hooks)
                .instrument(span.clone())
                .await;
            let forwarded = match hooks.forwarder.take() {
                Some(f) => {
                    let stats = f.stats.clone();
                    f.shutdown(std::time::Duration::from_secs(2)).await;
                    Some(stats)
                }
                None => None,
            };
            match &result {
                Ok(o) => {
                    span.record("process.exit_code", o.exit_code);
                    span.record("shoji.clock_offset_ns", o.clock.offset_ns);
                    span.record("shoji.agent_dropped_spans", o.agent_dropped_spans);
                }
                Err(e) => {
                    span.record("otel.status_code", "ERROR");
                    span.record("otel.status_message", e.to_string().as_str());
                }
            }
            let rejected = forwarded.map_or(0, |s| s.rejected());
            span.record("shoji.dropped_spans", telemetry.dropped() + rejected);
            drop(span);
            result
        });
        rt.shutdown_timeout(std::time::Duration::from_secs(1));
        telemetry.flush();
        let outcome = outcome?;
        Ok(ExitCode::from((outcome.exit_code & 0xff) as u8))
    }
}

/// Plugs the span pipeline into a run: the built-in forwarder for the agent's spans, the clock
/// offset, and trace context on every agent call.
struct TraceHooks<'a> {
    telemetry: &'a shoji_telemetry::host::TelemetryGuard,
    agent_tracing: bool,
    runtime_tracing: bool,
    forwarder: Option<shoji_forwarder::Forwarder>,
}

impl shoji_runtime::run::RunHooks for TraceHooks<'_> {
    fn sandbox_ready(&mut self, sb: &shoji_runtime::sandbox::SandboxDir) {
        self.telemetry.set_sandbox_id(&sb.id);
        let Some(pipeline) = self.telemetry.pipeline.clone() else {
            return;
        };
        if !self.agent_tracing {
            return;
        }
        let identity = shoji_forwarder::Identity {
            sandbox_id: sb.id.clone(),
            service_name: "shoji-agent".into(),
        };
        let path = sb.host_port_socket(shoji_protocols::TRACE_VSOCK_PORT);
        let deliver: shoji_forwarder::Deliver =
            std::sync::Arc::new(move |req| pipeline.submit(req));
        match shoji_forwarder::Forwarder::start(&path, identity, deliver) {
            Ok(f) => self.forwarder = Some(f),
            Err(e) => tracing::warn!(error = %e, "agent spans will be lost"),
        }
    }

    fn clock_measured(&mut self, _sandbox_id: &str, offset: shoji_runtime::agent::ClockOffset) {
        if let Some(f) = &self.forwarder {
            f.set_clock_offset(offset.offset_ns);
        }
    }

    fn agent_spans_received(&self) -> Option<u64> {
        self.forwarder.as_ref().map(|f| {
            f.stats
                .spans_forwarded
                .load(std::sync::atomic::Ordering::Relaxed)
        })
    }

    fn context_injector(&self) -> Option<shoji_runtime::agent::ContextInjector> {
        // Without runtime spans there is no parent to name: the agent roots its own trace.
        (self.runtime_tracing && self.telemetry.pipeline.is_some()).then_some(
            shoji_telemetry::current_trace_context as shoji_runtime::agent::ContextInjector,
        )
    }
}
