//! The `Shim` side of containerd's protocol: `start` (spawn the server that serves the task
//! API, one per sandbox), `delete` (clean up after a server that died), `-info`, and the
//! server's telemetry.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use async_trait::async_trait;
use containerd_shim::api::DeleteResponse;
use containerd_shim::asynchronous::publisher::RemotePublisher;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::protobuf::well_known_types::any::Any;
use containerd_shim::protos::protobuf::MessageField;
use containerd_shim::protos::types::introspection::RuntimeInfo;
use containerd_shim::{Flags, StartOpts};
use shoji_forwarder::hooks::TraceHooks;
use shoji_runtime::config::Config;
use shoji_runtime::sandbox::sandbox_root;
use shoji_telemetry::host::{TelemetryConfig, TelemetryGuard};
use tokio::sync::Mutex;

use crate::lifetime::Lifetime;
use crate::pod::Pod;
use crate::rootfs;
use crate::service::{Inner, TaskService};

/// The exit status containerd is told for a task whose shim died (as runc's shim: SIGKILL).
const KILLED: u32 = 128 + libc::SIGKILL as u32;

pub struct ShojiShim {
    id: String,
    namespace: String,
    bundle: PathBuf,
    /// The address the server serves containerd on (`-socket`; empty for the other actions).
    socket: String,
    /// The configuration, or why it could not be loaded (told on the first request).
    config: Result<Config, String>,
    tracing: Tracing,
    telemetry: Option<TelemetryGuard>,
    exit: Arc<ExitSignal>,
    inner: OnceLock<Arc<Inner>>,
}

/// What the shim traces: its own spans, and the agent's.
#[derive(Debug, Clone, Copy, Default)]
pub struct Tracing {
    pub runtime: bool,
    pub agent: bool,
}

impl Tracing {
    /// On with `[runtime] enable_tracing` / `[agent.shoji] enable_tracing`, and both on when
    /// containerd's own tracing is (an OTLP endpoint in the environment it passes on): then
    /// containerd's requests carry trace context the shim continues.
    pub fn from(config: &Config, env: impl Fn(&str) -> Option<String>) -> Self {
        let set = |k: &str| env(k).is_some_and(|v| !v.is_empty());
        let otlp = set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT");
        let disabled = env("OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let runtime = !disabled
            && config
                .tracing
                .shim_level()
                .gt(&shoji_protocols::TraceLevel::Off)
            && (config.runtime.enable_tracing || otlp);
        let agent = !disabled
            && config
                .tracing
                .agent_traced(config.agent.shoji.enable_tracing || otlp);
        Self { runtime, agent }
    }
}

/// The configuration the shim runs with: `$SHOJI_CONFIG` if set (it must exist), else
/// `/etc/shoji/configuration.toml` if it exists, else the defaults; containerd passes its own
/// environment on to the shim.
fn load_config() -> Result<Config, String> {
    let explicit = std::env::var_os("SHOJI_CONFIG").map(PathBuf::from);
    Config::load(explicit.as_deref()).map_err(|e| shoji_runtime::error_chain(&e))
}

/// Sends the server's log (its stderr: `SHOJI_LOG` lines, QEMU's and the helpers' stderr) to
/// containerd's log FIFO for this shim, `log` in the bundle directory, which containerd reads
/// into its own log.
pub(crate) fn log_to_containerd() {
    use std::os::unix::fs::OpenOptionsExt;
    if let Ok(f) = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open("log")
    {
        let _ = nix::unistd::dup2_stderr(&f);
    }
}

#[async_trait]
impl containerd_shim::Shim for ShojiShim {
    type T = TaskService;

    async fn new(_runtime_id: &str, args: &Flags, _config: &mut containerd_shim::Config) -> Self {
        let config = load_config();
        let tracing = config
            .as_ref()
            .map(|c| Tracing::from(c, |k| std::env::var(k).ok()))
            .unwrap_or_default();
        let bundle = if args.bundle.is_empty() {
            std::env::current_dir().unwrap_or_default()
        } else {
            PathBuf::from(&args.bundle)
        };
        // Only the server traces: `start` and `delete` are short-lived helpers.
        let telemetry = if args.action.is_empty() {
            log_to_containerd();
            config.as_ref().ok().and_then(|c| {
                let tcfg = TelemetryConfig {
                    tracing: tracing.runtime || tracing.agent,
                    runtime_spans: tracing.runtime,
                    data_dir: shoji_trace::data_dir::resolve(None),
                    otlp_endpoint: c.runtime.otlp_endpoint.clone(),
                    otlp_protocol: c.runtime.otlp_protocol.clone(),
                    service_name: Some(
                        c.runtime
                            .service_name
                            .clone()
                            .unwrap_or_else(|| "shoji-shim".into()),
                    ),
                    sampler: c.runtime.sampler.clone(),
                    sample_ratio: c.tracing.sample_ratio,
                    levels: shoji_telemetry::levels::Levels {
                        runtime: c.tracing.shim_level(),
                        hypervisor: c.tracing.hypervisor,
                        agent: c.tracing.agent,
                    },
                    span_event_level: c.agent.shoji.trace_log_level.clone(),
                };
                match shoji_telemetry::host::init(&tcfg) {
                    Ok(t) => Some(t),
                    Err(e) => {
                        log_line!("shoji-shim: tracing is off: {e}");
                        None
                    }
                }
            })
        } else {
            None
        };
        Self {
            id: args.id.clone(),
            namespace: args.namespace.clone(),
            bundle,
            socket: args.socket.clone(),
            config,
            tracing,
            telemetry,
            exit: Arc::new(ExitSignal::default()),
            inner: OnceLock::new(),
        }
    }

    async fn start_shim(&mut self, opts: StartOpts) -> containerd_shim::Result<String> {
        // One server per sandbox: a pod's containers go to their pod's. A server for a group
        // that already has one finds its socket taken and hands back the running one's address
        // (the crate's `spawn` and server start do that), as runc's shim does; containerd 2.x
        // connects a pod's later containers to the pod's shim without asking (task API 3).
        let grouping = crate::pod::grouping(&self.bundle, &opts.id)
            .map_err(|e| containerd_shim::Error::InvalidArgument(shoji_runtime::error_chain(&e)))?;
        let address = containerd_shim::spawn(opts, &grouping, Vec::new()).await?;
        containerd_shim::asynchronous::util::write_str_to_file("address", &address).await?;
        Ok(address)
    }

    async fn delete_shim(&mut self) -> containerd_shim::Result<DeleteResponse> {
        // The server is gone (killed, or it crashed): its QEMU and helpers died with it
        // (PR_SET_PDEATHSIG), the pod network's TAP with QEMU; what is left is the rootfs
        // mounts, the sandbox directory and the qdiscs in the pod's network namespace.
        // containerd gives this command 5 s (io.containerd.timeout.shim.cleanup): the pod
        // network's qdiscs (made for the sandbox's own container, whose spec names the pod's
        // network namespace) are cheap and affect the pod's traffic, so they go first, before
        // unmounting and removing files.
        let sandbox = crate::pod::grouping(&self.bundle, &self.id).unwrap_or(self.id.clone());
        if sandbox == self.id {
            crate::network::clean_after_kill(&self.bundle);
        }
        if let Err(e) = rootfs::unmount(&self.bundle) {
            log_line!("shoji-shim: {}", shoji_runtime::error_chain(&e));
        }
        // The sandbox directory goes with its sandbox's (the pod's first) container; a pod's
        // other container takes only its own root filesystem out of the share. Mounts are
        // detached before anything is removed.
        if let Ok(config) = &self.config {
            if shoji_runtime::lifecycle::state::validate_id(&self.id).is_ok() {
                let dir = sandbox_root(config).join(&sandbox);
                let dir = if sandbox == self.id {
                    dir
                } else {
                    dir.join("shared").join(&self.id)
                };
                if let Err(e) = shoji_runtime::sandbox::remove_sandbox_dir(&dir) {
                    log_line!("shoji-shim: cannot remove {}: {e}", dir.display());
                }
            }
        }
        if sandbox == self.id {
            // The dead server's ttRPC socket, which only a clean exit removes.
            remove_stale_socket(&self.bundle);
            // The sandbox's lifetime trace, last: its root, which the dead server did not end.
            let bundle = self.bundle.clone();
            let ended = tokio::task::spawn_blocking(move || {
                crate::lifetime::end_in_place(&bundle, &sandbox)
            })
            .await;
            if let Ok(Err(e)) = ended {
                log_line!("shoji-shim: {e}");
            }
        }
        Ok(DeleteResponse {
            exit_status: KILLED,
            exited_at: MessageField::some(containerd_shim::util::timestamp()?),
            ..Default::default()
        })
    }

    async fn wait(&mut self) {
        self.exit.wait().await;
        if let Some(inner) = self.inner.get() {
            // The agent flushed its spans before its VM stopped; what is in transit gets a
            // moment to arrive.
            let rejected = inner
                .hooks
                .lock()
                .await
                .finish(Duration::from_secs(2))
                .await;
            let (dropped, left_out) = self
                .telemetry
                .as_ref()
                .map_or((0, 0), |t| (t.dropped(), t.dropped_by_level()));
            inner.lifetime.end(dropped + rejected, left_out);
        }
        if let Some(t) = &mut self.telemetry {
            t.flush();
        }
        // The socket goes with the server. The crate would remove it after this returns, but
        // finds it through `address` in the server's working directory, the sandbox's bundle,
        // which containerd removes once the sandbox's task is deleted: when a pod's other
        // containers outlived its sandbox container, the socket was left behind. Unlinking the
        // path leaves the listener serving until the server shuts down.
        if let Some(path) = socket_path(&self.socket) {
            if let Err(e) = std::fs::remove_file(path) {
                if e.kind() != std::io::ErrorKind::NotFound {
                    log_line!("shoji-shim: cannot remove the socket {path}: {e}");
                }
            }
        }
    }

    async fn create_task_service(&self, publisher: RemotePublisher) -> TaskService {
        let config = match &self.config {
            Ok(c) => c.clone(),
            Err(e) => {
                // containerd shows the shim's log; the first Create fails on the defaults'
                // missing pieces if they matter.
                log_line!("shoji-shim: cannot load the configuration ({e}); using the defaults");
                Config::default()
            }
        };
        // The sandbox's lifetime trace starts with the server, just before the sandbox's first
        // `Create`; it is recorded in the bundle for `delete` to end if the shim is killed.
        let started = std::time::SystemTime::now();
        let lifetime = Lifetime::start(&self.id, self.tracing.runtime && self.telemetry.is_some());
        let hooks = match &self.telemetry {
            Some(t) => lifetime.keep_record(
                TraceHooks::new(t, self.tracing.runtime, self.tracing.agent).per_request_traces(),
                started,
                &self.bundle,
            ),
            None => TraceHooks::off(),
        };
        let inner = Arc::new(Inner {
            id: self.id.clone(),
            namespace: self.namespace.clone(),
            config,
            agent_tracing: self.tracing.agent,
            // containerd-shim's publisher loses events across a containerd restart (see
            // `events`): its address is all that is kept.
            events: crate::events::EventForwarder::start(&publisher.address),
            exit: self.exit.clone(),
            hooks: Mutex::new(hooks),
            pod: Mutex::new(Pod::default()),
            lifetime,
        });
        let _ = self.inner.set(inner.clone());
        TaskService(inner)
    }

    fn runtime_info(
        runtime_id: &str,
        _options: Option<&Any>,
    ) -> containerd_shim::Result<RuntimeInfo> {
        Ok(crate::info::runtime_info(runtime_id))
    }
}

/// Removes the socket a killed server of this bundle served on (named by the bundle's `address`
/// file, which `start` wrote; the containerd-shim crate removes it only on a clean exit), when
/// nothing listens on it any more: a pod's other containers are deleted while their shim may
/// still serve, and a live socket is never removed.
fn remove_stale_socket(bundle: &std::path::Path) {
    use std::os::unix::fs::FileTypeExt;
    let Ok(address) = std::fs::read_to_string(bundle.join("address")) else {
        return;
    };
    let Some(path) = socket_path(&address) else {
        return;
    };
    let is_socket = std::fs::symlink_metadata(path).is_ok_and(|m| m.file_type().is_socket());
    if !is_socket {
        return;
    }
    match std::os::unix::net::UnixStream::connect(path) {
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => {
            if let Err(e) = std::fs::remove_file(path) {
                log_line!("shoji-shim: cannot remove the dead shim's socket {path}: {e}");
            }
        }
        _ => {}
    }
}

/// The file system path of a shim's `unix://` socket address.
pub(crate) fn socket_path(address: &str) -> Option<&str> {
    address
        .trim()
        .strip_prefix("unix://")
        .filter(|p| !p.is_empty())
}
