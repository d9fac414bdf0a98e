//! The sandbox process: one per container created with `shoji create`, started by it in a new
//! session (`shoji __sandbox`). It boots the VM, creates the container, reports on its stdout,
//! then owns QEMU, the helpers and the stdio relays until `delete`, serving `control.sock`.
//!
//! Its children get `PR_SET_PDEATHSIG(SIGKILL)` from the main thread, which lives as long as
//! the process (a current-thread runtime: see ADR 007), so a killed sandbox process takes the
//! VM down with it. SIGTERM, SIGINT or SIGHUP stop the VM and leave the state directory with
//! the container `stopped`, for `delete`.
//!
//! Tracing: [`serve`] runs inside the caller's root span (`sandbox`, one trace per sandbox) and
//! records its spans there: the boot and the network's set-up exactly as `shoji run` does,
//! `container.create`,
//! `container.wait` for the init, and one span per control request (`container.start`,
//! `container.exec`, `container.kill`, `container.delete`; not `state`, which is polled). Every
//! task it spawns is instrumented, so no agent call leaves without a parent, and every one of
//! them has ended before [`serve`] returns, so the root ends last.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};
use shoji_protocols::agent;
use tokio::io::BufReader;
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tracing::{field::Empty, info_span, Instrument};

use super::protocol::{self, ExecRequest, Reply, Request};
use super::state::{
    self, OciState, ProcessRecord, StateFile, Status, ROOT_SPAN_ID_ANNOTATION, TRACE_ID_ANNOTATION,
    TRACE_SAMPLED_ANNOTATION,
};
use super::status::Container;
use super::LifecycleError;
use crate::agent::AgentClient;
use crate::config::Config;
use crate::error_chain;
use crate::private_fs;
use crate::sandbox::{
    prepare_rootfs, Binaries, BootError, BootOptions, RootSource, RunHooks, SandboxDir, SandboxVm,
};
use crate::signals::{self, Signals};
use crate::spec::{ProcessOptions, SpecError};
use crate::stdio::{StdioRelay, FIRST_STDIO_PORT};

/// What `shoji create` hands the sandbox process on its stdin (one JSON document).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRequest {
    pub id: String,
    pub source: RootSource,
    pub process: ProcessOptions,
    /// `shoji create --trace`: runtime and agent tracing, whatever the configuration says.
    #[serde(default)]
    pub trace: bool,
    /// `--network`, `-p`, `--hostname`, `--add-host`, `--dns`, as for `shoji run`.
    #[serde(default)]
    pub network: crate::network::NetworkOptions,
}

impl CreateRequest {
    /// The runtime's own spans are exported (`--trace` or `[runtime] enable_tracing`).
    /// Not when `[tracing] runtime` is `off`.
    pub fn runtime_tracing(&self, config: &Config) -> bool {
        config
            .tracing
            .runtime_traced(self.trace || config.runtime.enable_tracing)
    }

    /// The agent traces and its spans are forwarded (`--trace` or
    /// `[agent.shoji] enable_tracing`).
    /// Not when `[tracing] agent` is `off`.
    pub fn agent_tracing(&self, config: &Config) -> bool {
        config
            .tracing
            .agent_traced(self.trace || config.agent.shoji.enable_tracing)
    }
}

/// How the sandbox process's work ended, for the caller to finish (its telemetry) before the
/// process exits.
#[derive(Debug)]
pub enum SandboxExit {
    /// `delete`: the VM, the helpers and the state directory are gone. The client still waits
    /// for [`DeleteReply::send`].
    Deleted(DeleteReply),
    /// Told to stop by a signal: the VM is stopped, the state directory kept for `delete`.
    Stopped,
}

/// The answer to an accepted `delete`, sent last: after the caller has flushed its spans, so
/// that once `shoji delete` returns the sandbox's trace is complete in the sink.
#[derive(Debug)]
pub struct DeleteReply(OwnedWriteHalf);

impl DeleteReply {
    pub async fn send(mut self) {
        let _ = protocol::write(&mut self.0, &Reply::Done).await;
    }
}

/// What the sandbox process writes on its stdout, once.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum CreateResult {
    Created(OciState),
    Failed { message: String },
}

/// Reads the [`CreateRequest`] from stdin (bounded: it is a few hundred bytes).
pub fn read_request() -> Result<CreateRequest, LifecycleError> {
    let mut text = Vec::new();
    std::io::stdin()
        .take(protocol::MAX_LINE)
        .read_to_end(&mut text)
        .map_err(|source| LifecycleError::Io {
            what: "cannot read the create request from",
            path: "stdin".into(),
            source,
        })?;
    serde_json::from_slice(&text).map_err(|e| LifecycleError::BadState {
        path: "stdin".into(),
        message: e.to_string(),
    })
}

/// Writes the result line for `shoji create`, then points stdin and stdout at /dev/null so that
/// nothing holds the caller's pipe and a later write cannot fail on it.
fn report(result: &CreateResult) {
    let mut out = std::io::stdout();
    if let Ok(mut line) = serde_json::to_vec(result) {
        line.push(b'\n');
        let _ = out.write_all(&line);
        let _ = out.flush();
    }
    if let Ok(null) = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
    {
        let _ = nix::unistd::dup2_stdin(&null);
        let _ = nix::unistd::dup2_stdout(&null);
    }
}

/// Runs the sandbox process for `req` in `<root>/<id>` (which `shoji create` made) until the
/// container is deleted or the process is told to stop. `hooks` plug in the telemetry (the
/// trace forwarder, the clock offset, trace context on agent calls), as for `shoji run`.
pub async fn serve(
    config: &Config,
    root: &Path,
    req: CreateRequest,
    hooks: &mut dyn RunHooks,
) -> Result<SandboxExit, LifecycleError> {
    let created = create(config, root, &req, hooks).await;
    // The network plan outlives the VM: netns mode undoes its set-up when it is dropped.
    let (sandbox, vm, relay, listener, _network) = match created {
        Ok(c) => c,
        Err(e) => {
            report(&CreateResult::Failed {
                message: error_chain(&e),
            });
            return Err(e);
        }
    };
    report(&CreateResult::Created(sandbox.oci()));
    sandbox.run(vm, relay, listener).await
}

type Created = (
    Arc<Sandbox>,
    SandboxVm,
    StdioRelay,
    UnixListener,
    crate::network::NetworkPlan,
);

async fn create(
    config: &Config,
    root: &Path,
    req: &CreateRequest,
    hooks: &mut dyn RunHooks,
) -> Result<Created, LifecycleError> {
    state::validate_id(&req.id)?;
    // Bad network options are refused before anything starts.
    req.network.validate()?;
    let id = req.id.clone();
    let root_span = tracing::Span::current();
    root_span.record("sandbox_id", id.as_str());
    root_span.record("container_id", id.as_str());
    root_span.record("container.id", id.as_str());
    // Written from the first state on, so that a sandbox's trace can be found while it boots,
    // and its root ended by `delete` if this process dies before it can.
    let trace_root = hooks.trace_root();
    let mut trace_notes: Vec<(String, String)> = trace_root
        .iter()
        .flat_map(|r| {
            [
                (TRACE_ID_ANNOTATION.to_string(), r.trace_id.clone()),
                (ROOT_SPAN_ID_ANNOTATION.to_string(), r.span_id.clone()),
            ]
        })
        .collect();
    if hooks.trace_sampled_out() {
        trace_notes.push((TRACE_SAMPLED_ANNOTATION.to_string(), "false".into()));
    }
    let sb = SandboxDir::adopt(root, &id);
    let dir = sb.path().to_path_buf();
    let me = ProcessRecord::capture("shoji sandbox", std::process::id()).ok_or_else(|| {
        LifecycleError::Io {
            what: "cannot read",
            path: "/proc/self/stat".into(),
            source: std::io::Error::other("no such process"),
        }
    })?;
    let bundle = match &req.source {
        RootSource::Bundle(b) => std::path::absolute(b).unwrap_or_else(|_| b.clone()),
        _ => dir.clone(),
    };
    let mut st = StateFile {
        oci: OciState {
            oci_version: state::OCI_VERSION.into(),
            id: id.clone(),
            status: Status::Creating,
            pid: Some(me.pid),
            bundle,
            annotations: trace_notes.iter().cloned().collect(),
            created: state::now_rfc3339(),
            exit_code: None,
        },
        sandbox_process: me,
        processes: Vec::new(),
        trace_root,
    };
    st.write(&dir)?;

    let opts = BootOptions::for_process(config, &req.process, req.agent_tracing(config))?;
    let bins = Binaries::locate(config)?;
    let (spec, rootfs) =
        info_span!("image.unpack", source = "runtime", subsystem = "image", sandbox_id = %id, image.layers.unpacked = tracing::field::Empty)
            .in_scope(|| prepare_rootfs(&req.source, &sb, &id, &req.process, &config.image_store(), None))?;
    let mut spec = spec;
    let hostname = match (&req.network.hostname, &req.source, spec.hostname()) {
        // A bundle's own hostname stands unless --hostname is given.
        (None, RootSource::Bundle(_), Some(h)) if !h.is_empty() => h.clone(),
        _ => default_hostname(&req.network, &id)?,
    };
    crate::network::apply_hostname(&mut spec, &hostname, &req.process.env);
    let spec_json = serde_json::to_vec_pretty(&spec)
        .map_err(|e| BootError::Spec(SpecError::Build(e.to_string())))?;
    // The spec actually used: with an image or a rootfs, the state directory is the bundle.
    let config_json = dir.join("config.json");
    private_fs::write_private(&config_json, &spec_json).map_err(|source| LifecycleError::Io {
        what: "cannot write",
        path: config_json,
        source,
    })?;
    let base_process = spec
        .process()
        .clone()
        .ok_or(BootError::Spec(SpecError::NoCommand))?;

    // Dropped after the VM on every path (declared before it).
    let network = crate::network::prepare(&id, &req.network)?;
    let mut opts = opts;
    opts.network = network.vm.clone();
    let mut vm = SandboxVm::boot(config, &bins, sb, &rootfs.share, &opts, hooks).await?;
    root_span.record("shoji.clock_offset_ns", vm.clock.offset_ns);
    vm.drain_stderr();
    let created = async {
        let files = match crate::network::setup(&vm, &req.network, &network, &hostname).await {
            Ok(f) => f,
            Err(cause) => return Err(vm.explain(cause).await.into()),
        };
        create_container(&vm, &id, spec_json, &rootfs.in_share, &dir, files)
            .instrument(info_span!("container.create", source = "runtime", subsystem = "container", container_id = %id, container.id = %id))
            .await
    }
    .await;
    match created {
        Ok((guest_pid, relay, listener)) => {
            st.processes = vm
                .processes
                .iter()
                .filter_map(|p| ProcessRecord::capture(p.what, p.pid))
                .collect();
            if let Some(a) = spec.annotations() {
                st.oci.annotations.extend(a.clone());
            }
            let notes = &mut st.oci.annotations;
            notes.insert("shoji.guest_pid".into(), guest_pid.to_string());
            notes.insert("shoji.accel".into(), vm.accel.accel.as_str().into());
            notes.extend(trace_notes);
            if let Some(r) = &mut st.trace_root {
                r.clock_offset_ns = Some(vm.clock.offset_ns);
            }
            let container = Container::created(&id, guest_pid);
            st.oci.status = container.status();
            st.write(&dir)?;
            let sandbox = Arc::new(Sandbox {
                id,
                dir,
                client: vm.client.clone(),
                base_process,
                rootfs: rootfs.host,
                state: Mutex::new(Recorded {
                    file: st,
                    container,
                }),
            });
            Ok((sandbox, vm, relay, listener, network))
        }
        Err(e) => {
            vm.stop().await;
            Err(e)
        }
    }
}

/// `--hostname`, else the id, or its first 12 characters when the id is too long for a hostname
/// (as Docker names a container's host after its id's first 12: OCI callers pass 64-character
/// ids).
fn default_hostname(
    opts: &crate::network::NetworkOptions,
    id: &str,
) -> Result<String, crate::network::NetworkError> {
    opts.hostname_for(id)
        .or_else(|e| match (&opts.hostname, id.get(..12)) {
            (None, Some(short)) if id.len() > 63 => opts.hostname_for(short),
            _ => Err(e),
        })
}

async fn create_container(
    vm: &SandboxVm,
    id: &str,
    spec_json: Vec<u8>,
    rootfs_path: &str,
    dir: &Path,
    files: Vec<agent::ContainerFile>,
) -> Result<(u32, StdioRelay, UnixListener), LifecycleError> {
    let log = |name: &str| {
        let path = dir.join(name);
        private_fs::private_file(&path).map_err(|source| LifecycleError::Io {
            what: "cannot create",
            path,
            source,
        })
    };
    let (ports, relay) = StdioRelay::to_files(
        &vm.sb,
        FIRST_STDIO_PORT,
        log(state::STDOUT_LOG)?,
        log(state::STDERR_LOG)?,
        vm.log_max_bytes,
    )
    .map_err(BootError::from)?;
    let seccomp_program = crate::seccomp::program_for_guest(&spec_json)
        .map_err(crate::spec::SpecError::from)
        .map_err(BootError::from)?;
    let created = vm
        .client
        .create_container(agent::CreateContainerRequest {
            container_id: id.into(),
            oci_spec_json: spec_json,
            rootfs_tag: crate::sandbox::SHARE_TAG.into(),
            rootfs_path: rootfs_path.into(),
            stdio: Some(ports).into(),
            files,
            seccomp_program,
            ..Default::default()
        })
        .await;
    let pid = match created {
        Ok(r) => r.pid,
        Err(cause) => return Err(vm.explain(cause).await.into()),
    };
    let path = dir.join(state::CONTROL_SOCKET);
    let listener = UnixListener::bind(&path).map_err(|source| LifecycleError::Io {
        what: "cannot listen on",
        path,
        source,
    })?;
    Ok((pid, relay, listener))
}

/// What the connection handlers share.
#[derive(Debug)]
struct Sandbox {
    id: String,
    dir: PathBuf,
    client: AgentClient,
    /// The container's process: what `exec` starts from.
    base_process: oci_spec::runtime::Process,
    rootfs: PathBuf,
    state: Mutex<Recorded>,
}

/// The container's processes and their states (the rules are in [`super::status`]), and the
/// `state.json` record written from them after every change.
#[derive(Debug)]
struct Recorded {
    file: StateFile,
    container: Container,
}

/// A `delete` accepted by a handler, carried out by the main loop that owns the VM, inside the
/// request's span.
#[derive(Debug)]
struct DeleteOrder {
    reply_to: OwnedWriteHalf,
    force: bool,
    span: tracing::Span,
}

/// How long the control requests still in progress when the VM has stopped (an `exec` whose
/// process went with the VM) get to answer before they are cancelled.
const HANDLER_GRACE: std::time::Duration = std::time::Duration::from_secs(2);

/// Lets the control requests still in progress finish, for [`HANDLER_GRACE`] at most, then
/// cancels the rest (their spans end as they are dropped).
async fn finish(handlers: &mut JoinSet<()>) {
    let _ = tokio::time::timeout(HANDLER_GRACE, async {
        while handlers.join_next().await.is_some() {}
    })
    .await;
    handlers.shutdown().await;
}

/// Marks the current span failed, with `message`.
fn record_error(message: &str) {
    let span = tracing::Span::current();
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message);
}

impl Sandbox {
    fn lock(&self) -> std::sync::MutexGuard<'_, Recorded> {
        match self.state.lock() {
            Ok(st) => st,
            Err(p) => p.into_inner(),
        }
    }

    fn oci(&self) -> OciState {
        self.lock().file.current()
    }

    /// Changes the container's state (through its rules) and records it in `state.json`.
    fn update<T>(&self, f: impl FnOnce(&mut Container, &mut StateFile) -> T) -> T {
        let mut st = self.lock();
        let Recorded { file, container } = &mut *st;
        let before = file.oci.clone();
        let out = f(container, file);
        file.oci.status = container.status();
        file.oci.exit_code = container.init.exit_code;
        if file.oci.status == Status::Stopped {
            file.oci.pid = None;
        }
        if file.oci == before {
            return out;
        }
        if let Err(e) = file.write(&self.dir) {
            tracing::warn!(error = %error_chain(&e), "cannot record the container state");
        }
        out
    }

    /// The init ended (`exit_code`), or the container stopped without one because of `why`.
    fn stopped(&self, exit_code: Option<i32>, why: Option<String>) {
        self.update(|c, file| {
            if c.status() == Status::Stopped {
                return;
            }
            c.exited("", exit_code);
            if let Some(why) = why {
                file.oci.annotations.insert("shoji.error".into(), why);
            }
        });
    }

    async fn run(
        self: Arc<Self>,
        vm: SandboxVm,
        relay: StdioRelay,
        listener: UnixListener,
    ) -> Result<SandboxExit, LifecycleError> {
        let root_span = tracing::Span::current();
        let (delete_tx, mut delete_rx) = mpsc::channel::<DeleteOrder>(1);
        let waiter = {
            let sb = self.clone();
            // The init is waited for from create on: it cannot exit before `start`, but a `kill`
            // of a created container ends it too.
            let span = info_span!("container.wait", source = "runtime", subsystem = "container", container_id = %self.id, container.id = %self.id, process.exit_code = Empty);
            tokio::spawn(
                async move {
                    // Also ends when the VM dies (the connection breaks): the VM watch says so.
                    if let Ok(r) = sb.client.wait_process(&sb.id, "").await {
                        tracing::Span::current().record("process.exit_code", r.exit_code);
                        sb.stopped(Some(r.exit_code), None);
                    }
                }
                .instrument(span),
            )
        };
        // Every control connection's task, so that all of them (and their spans) have ended
        // before the sandbox's root span does.
        let mut handlers = JoinSet::new();
        let mut stop_signals = Signals::new(signals::STOPPING);
        let mut vm_exit = vm.exit_watch();
        let mut vm_gone = false;
        let mut vm = vm;
        loop {
            tokio::select! {
                conn = listener.accept() => {
                    if let Ok((stream, _)) = conn {
                        handlers.spawn(self.clone().handle(stream, delete_tx.clone()).in_current_span());
                    }
                }
                Some(_) = handlers.join_next(), if !handlers.is_empty() => {}
                order = delete_rx.recv() => {
                    let Some(order) = order else { continue };
                    let force = order.force;
                    let dropped = async {
                        tracing::info!(force, "deleting the container");
                        // The agent's Shutdown kills what is left in the guest.
                        self.teardown(vm, waiter, listener, relay, &mut handlers).await
                    }
                    .instrument(order.span)
                    .await;
                    if let Some(code) = self.oci().exit_code {
                        root_span.record("process.exit_code", code);
                    }
                    dropped.record_on(&root_span);
                    return Ok(SandboxExit::Deleted(DeleteReply(order.reply_to)));
                }
                st = vm_exit.wait_for(|s| s.is_some()), if !vm_gone => {
                    vm_gone = true;
                    let status = st.map(|s| s.clone().unwrap_or_default()).unwrap_or_default();
                    let why = format!("the VM exited unexpectedly ({status})");
                    tracing::warn!("{why}");
                    self.stopped(None, Some(why));
                }
                signal = stop_signals.recv() => {
                    tracing::info!(signal, "told to stop: stopping the VM, keeping the state for delete");
                    self.stopped(None, Some("the sandbox process was told to stop".into()));
                    vm.sb.keep();
                    let dropped = self.teardown(vm, waiter, listener, relay, &mut handlers).await;
                    dropped.record_on(&root_span);
                    return Ok(SandboxExit::Stopped);
                }
            }
        }
    }

    /// Stops everything the sandbox process runs, in order: the init's waiter, the control
    /// socket, the stdio relays, the VM (and with it every process in the guest), then the
    /// control requests still in progress. Returns what the agent says of its spans.
    async fn teardown(
        &self,
        vm: SandboxVm,
        mut waiter: tokio::task::JoinHandle<()>,
        listener: UnixListener,
        relay: StdioRelay,
        handlers: &mut JoinSet<()>,
    ) -> crate::sandbox::AgentSpanCounts {
        waiter.abort();
        let _ = (&mut waiter).await;
        drop(listener);
        let _ = std::fs::remove_file(self.dir.join(state::CONTROL_SOCKET));
        drop(relay);
        let dropped = vm.stop().await;
        finish(handlers).await;
        dropped
    }

    /// The span of one control request; none for `state`, which scripts and `shoji list`
    /// poll and which touches neither the VM nor the agent.
    fn request_span(&self, req: &Request) -> tracing::Span {
        let id = self.id.as_str();
        match req {
            Request::State => tracing::Span::none(),
            Request::Start => {
                info_span!("container.start", source = "runtime", subsystem = "container", container_id = %id, container.id = %id, otel.status_code = Empty, otel.status_message = Empty)
            }
            Request::Kill { signal } => {
                info_span!("container.kill", source = "runtime", subsystem = "container", container_id = %id, container.id = %id, signal = *signal, otel.status_code = Empty, otel.status_message = Empty)
            }
            Request::Delete { force } => {
                info_span!("container.delete", source = "runtime", subsystem = "container", container_id = %id, container.id = %id, force = *force, otel.status_code = Empty, otel.status_message = Empty)
            }
            Request::Resize { .. } => tracing::Span::none(),
            Request::Exec(x) => {
                let command = x.process.args.first().map(String::as_str).unwrap_or("");
                info_span!("container.exec", source = "runtime", subsystem = "container", container_id = %id, container.id = %id, exec_id = %x.exec_id, process.command = command, process.pid = Empty, process.exit_code = Empty, otel.status_code = Empty, otel.status_message = Empty)
            }
        }
    }

    async fn handle(self: Arc<Self>, stream: UnixStream, delete: mpsc::Sender<DeleteOrder>) {
        let (rd, mut wr) = stream.into_split();
        let mut rd = BufReader::new(rd);
        let req = match protocol::read::<Request, _>(&mut rd).await {
            Ok(Some(r)) => r,
            Ok(None) => return,
            Err(e) => {
                let message = error_chain(&e);
                let _ = protocol::write(&mut wr, &Reply::Error { message }).await;
                return;
            }
        };
        let span = self.request_span(&req);
        self.dispatch(req, rd, wr, delete).instrument(span).await
    }

    async fn dispatch(
        &self,
        req: Request,
        rd: BufReader<OwnedReadHalf>,
        mut wr: OwnedWriteHalf,
        delete: mpsc::Sender<DeleteOrder>,
    ) {
        let reply = match req {
            Request::State => Reply::State(self.oci()),
            Request::Start => self.start().await,
            Request::Kill { signal } => self.kill(signal).await,
            Request::Delete { force } => {
                let status = self.oci().status;
                if !status.can_delete(force) {
                    Reply::Error {
                        message: format!(
                            "container {} is {status}: stop it first (shoji kill {} KILL) or use delete --force",
                            self.id, self.id
                        ),
                    }
                } else {
                    // Answered once everything is gone; the span goes with the order.
                    let order = DeleteOrder {
                        reply_to: wr,
                        force,
                        span: tracing::Span::current(),
                    };
                    let _ = delete.send(order).await;
                    return;
                }
            }
            Request::Exec(x) => {
                self.exec(*x, rd, wr).await;
                return;
            }
            Request::Resize { .. } => Reply::Error {
                message: "resize is only meaningful on an exec with a terminal".into(),
            },
        };
        if let Reply::Error { message } = &reply {
            record_error(message);
        }
        let _ = protocol::write(&mut wr, &reply).await;
    }

    async fn start(&self) -> Reply {
        // Claimed under the lock, so two starts cannot both proceed.
        if let Err(refused) = self.update(|c, _| c.start()) {
            return Reply::Error {
                message: refused.to_string(),
            };
        }
        match self.client.start_container(&self.id).await {
            Ok(()) => Reply::Done,
            Err(e) => {
                self.update(|c, _| c.start_failed());
                Reply::Error {
                    message: format!("container {}: {}", self.id, error_chain(&e)),
                }
            }
        }
    }

    async fn kill(&self, signal: i32) -> Reply {
        if let Err(refused) = self.lock().container.check_kill() {
            return Reply::Error {
                message: refused.to_string(),
            };
        }
        match self
            .client
            .signal_process(&self.id, "", signal as u32)
            .await
        {
            Ok(()) => Reply::Done,
            Err(e) => Reply::Error {
                message: format!("container {}: {}", self.id, error_chain(&e)),
            },
        }
    }

    async fn exec(&self, x: ExecRequest, mut rd: BufReader<OwnedReadHalf>, mut wr: OwnedWriteHalf) {
        if let Err(refused) = self.update(|c, _| c.exec(&x.exec_id)) {
            let message = refused.to_string();
            record_error(&message);
            let _ = protocol::write(&mut wr, &Reply::Error { message }).await;
            return;
        }
        // However this ends, the exec is stopped in the container's record.
        let _stopped = ExecEnded {
            sandbox: self,
            exec_id: &x.exec_id,
        };
        let fail = |message: String| {
            let message = format!("container {}: {message}", self.id);
            record_error(&message);
            Reply::Error { message }
        };
        let process = match crate::spec::exec_process(&self.base_process, &x.process, &self.rootfs)
            .and_then(|p| serde_json::to_vec(&p).map_err(|e| SpecError::Build(e.to_string())))
        {
            Ok(p) => p,
            Err(e) => {
                let _ = protocol::write(&mut wr, &fail(error_chain(&e))).await;
                return;
            }
        };
        let ports = agent::StdioPorts {
            stdin_port: x.stdin_port,
            stdout_port: x.stdout_port,
            stderr_port: x.stderr_port,
            ..Default::default()
        };
        let (id, exec_id) = (&self.id, &x.exec_id);
        let pid = match self.client.exec_process(id, exec_id, process, ports).await {
            Ok(pid) => pid,
            Err(e) => {
                let _ = protocol::write(&mut wr, &fail(error_chain(&e))).await;
                return;
            }
        };
        tracing::Span::current().record("process.pid", pid);
        self.update(|c, _| c.exec_started(exec_id, pid));
        if protocol::write(&mut wr, &Reply::Started { pid })
            .await
            .is_err()
        {
            let _ = self
                .client
                .signal_process(id, exec_id, libc::SIGKILL as u32)
                .await;
            return;
        }
        if x.process.terminal {
            if let Some((rows, cols)) = x.terminal_size {
                let _ = self.client.resize_process(id, exec_id, rows, cols).await;
            }
        }
        let wait = self.client.wait_process(id, exec_id);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                r = &mut wait => {
                    let reply = match r {
                        Ok(w) => {
                            tracing::Span::current().record("process.exit_code", w.exit_code);
                            self.update(|c, _| c.exited(exec_id, Some(w.exit_code)));
                            Reply::Exited { exit_code: w.exit_code }
                        }
                        Err(e) => fail(error_chain(&e)),
                    };
                    let _ = protocol::write(&mut wr, &reply).await;
                    return;
                }
                msg = protocol::read::<Request, _>(&mut rd) => match msg {
                    Ok(Some(Request::Kill { signal })) => {
                        let _ = self.client.signal_process(id, exec_id, signal as u32).await;
                    }
                    Ok(Some(Request::Resize { rows, cols })) if x.process.terminal => {
                        let _ = self.client.resize_process(id, exec_id, rows, cols).await;
                    }
                    Ok(Some(_)) => {}
                    Ok(None) | Err(_) => {
                        // The caller is gone: so is its process.
                        record_error("the exec's caller went away; its process was killed");
                        let _ = self.client.signal_process(id, exec_id, libc::SIGKILL as u32).await;
                        return;
                    }
                },
            }
        }
    }
}

/// Marks an exec stopped when its handler ends, whichever way (answered, failed, cancelled).
struct ExecEnded<'a> {
    sandbox: &'a Sandbox,
    exec_id: &'a str,
}

impl Drop for ExecEnded<'_> {
    fn drop(&mut self) {
        self.sandbox.update(|c, _| c.exited(self.exec_id, None));
    }
}
