//! The task API (`containerd.task.v3.Task`) on the shim's [`Pod`].
//!
//! Each request runs in a server span `containerd.task.v3.Task/<Method>` continuing the trace
//! context containerd sends in the ttRPC metadata (without one it is a root). `Create` boots the
//! VM inside its span, so `vm.start`, `guest.boot` and the agent's spans join containerd's
//! trace; `container.wait` (from create to the init's exit) is a child of `Create` too, and
//! so are a pod's `network.prepare` and `network.setup` (with the agent's `network.configure`).
//! Each traced request also has a `sandbox.request` in the sandbox's lifetime trace, the two
//! linked both ways ([`crate::lifetime`]).

use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use containerd_shim::api::{
    CloseIORequest, ConnectRequest, ConnectResponse, CreateTaskRequest, CreateTaskResponse,
    DeleteRequest, Empty, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest, PidsResponse,
    ResizePtyRequest, ResumeRequest, ShutdownRequest, StartRequest, StartResponse, StateRequest,
    StateResponse, StatsRequest, StatsResponse, Status, UpdateTaskRequest, WaitRequest,
    WaitResponse,
};
use containerd_shim::asynchronous::io::Stdio;
use containerd_shim::asynchronous::ExitSignal;
use containerd_shim::protos::events::task::{
    TaskCreate, TaskDelete, TaskExecStarted, TaskExit, TaskIO, TaskStart,
};
use containerd_shim::protos::protobuf::{MessageDyn, MessageField};
use containerd_shim::protos::topics;
use containerd_shim::protos::ttrpc;
use containerd_shim::protos::types::task::ProcessInfo;
use containerd_shim::{Task, TtrpcContext, TtrpcResult};
use shoji_forwarder::hooks::TraceHooks;
use shoji_protocols::agent;
use shoji_runtime::config::Config;
use shoji_runtime::error_chain;
use shoji_runtime::lifecycle::status::{Container, TaskStatus};
use shoji_runtime::sandbox::{sandbox_root, Binaries, BootOptions, SandboxDir, SandboxVm};
use shoji_runtime::sandbox::{SharedRootfs, SHARE_TAG};
use shoji_runtime::spec::ProcessOptions;
use tokio::sync::Mutex;
use tracing::{info_span, Instrument};

use crate::network::PodNetwork;
use crate::pod::{Ctr, Pod};
use crate::process::{Exit, Proc, UNKNOWN_EXIT};
use crate::rootfs;

/// What the shim needs to serve: its configuration, containerd's event service, the sandbox.
pub struct Inner {
    pub id: String,
    pub namespace: String,
    pub config: Config,
    pub agent_tracing: bool,
    pub events: crate::events::EventForwarder,
    pub exit: Arc<ExitSignal>,
    pub hooks: Mutex<TraceHooks>,
    pub pod: Mutex<Pod>,
    /// The sandbox's own trace, linked with the request traces.
    pub lifetime: crate::lifetime::Lifetime,
}

/// The task service containerd talks to.
#[derive(Clone)]
pub struct TaskService(pub Arc<Inner>);

fn status(code: ttrpc::Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn not_found(what: &str) -> ttrpc::Error {
    status(ttrpc::Code::NOT_FOUND, what)
}

/// Marks the current span failed and turns `message` into the ttRPC error containerd sees.
pub(crate) fn failed(code: ttrpc::Code, message: String) -> ttrpc::Error {
    let span = tracing::Span::current();
    span.record("otel.status_code", "ERROR");
    span.record("otel.status_message", message.as_str());
    status(code, message)
}

/// The request's server span, and its `sandbox.request` in the lifetime trace (keep both until
/// the request is answered; [`crate::lifetime`]).
macro_rules! server_span {
    ($inner:expr, $ctx:ident, $method:literal, $id:expr, $exec:expr) => {{
        let span = info_span!(
            concat!("containerd.task.v3.Task/", $method),
            otel.kind = "server",
            rpc.system = "ttrpc",
            rpc.service = "containerd.task.v3.Task",
            rpc.method = $method,
            source = "runtime",
            package = "shoji_shim::service",
            subsystem = "shim",
            container_id = %$id,
            exec_id = %$exec,
            otel.status_code = tracing::field::Empty,
            otel.status_message = tracing::field::Empty,
        );
        shoji_telemetry::set_parent_from_w3c(&span, |k| {
            $ctx.metadata.get(k).and_then(|v| v.first().cloned())
        });
        let in_lifetime = $inner.lifetime.request(&span, $method, &$id, &$exec);
        (span, in_lifetime)
    }};
}

/// The process `exec_id` names in `ctr` (`""`: its init).
fn process(ctr: &Ctr, exec_id: &str) -> TtrpcResult<Arc<Proc>> {
    ctr.proc(exec_id)
        .ok_or_else(|| not_found(&format!("no exec {exec_id:?} in container {}", ctr.id)))
}

fn task_status(s: TaskStatus) -> Status {
    match s {
        TaskStatus::Created => Status::CREATED,
        TaskStatus::Running => Status::RUNNING,
        TaskStatus::Paused => Status::PAUSED,
        TaskStatus::Stopped => Status::STOPPED,
    }
}

/// The pid containerd is told for every process: the shim's own. The container's processes
/// run in the guest; their guest PIDs are in `Pids`.
fn host_pid() -> u32 {
    std::process::id()
}

impl Inner {
    pub(crate) async fn publish(&self, topic: &str, event: Box<dyn MessageDyn>) {
        if let Err(e) = self.events.publish(topic, &self.namespace, event) {
            tracing::warn!(topic, error = %error_chain(&e), "cannot publish the event to containerd");
        }
    }

    pub(crate) async fn container(&self, id: &str) -> TtrpcResult<Arc<Ctr>> {
        self.pod
            .lock()
            .await
            .get(id)
            .ok_or_else(|| not_found(&format!("no container {id:?} in sandbox {}", self.id)))
    }

    /// Boots the sandbox's VM with container `id`'s root filesystem (`src`) in its share, plugged
    /// into the network namespace its spec (`spec_json`) joins, if any.
    async fn boot(
        &self,
        id: &str,
        src: &Path,
        spec_json: &[u8],
    ) -> Result<(SandboxVm, SharedRootfs, Option<PodNetwork>), String> {
        let config = &self.config;
        let bins = Binaries::locate(config).map_err(|e| error_chain(&e))?;
        let mut opts =
            BootOptions::for_process(config, &ProcessOptions::default(), self.agent_tracing)
                .map_err(|e| error_chain(&e))?;
        // Dropped after the VM on every path below: it undoes the namespace's set-up.
        let network = PodNetwork::prepare(&self.id, spec_json).map_err(|e| error_chain(&e))?;
        if let Some(n) = &network {
            opts.network = n.vm();
        }
        let root = sandbox_root(config);
        let sb = SandboxDir::create(&root, &self.id).map_err(|e| error_chain(&e))?;
        // `sb` removes the directory, mounts first, if anything below fails.
        let shared = sb.share_rootfs(id, src).map_err(|e| error_chain(&e))?;
        let mut hooks = self.hooks.lock().await;
        let mut vm = SandboxVm::boot(config, &bins, sb, &shared.share, &opts, &mut *hooks)
            .await
            .map_err(|e| error_chain(&e))?;
        drop(hooks);
        vm.drain_stderr();
        if let Some(n) = &network {
            if let Err(e) = n.configure(&vm).await {
                let message = error_chain(&e);
                vm.stop().await;
                return Err(message);
            }
        }
        Ok((vm, shared, network))
    }

    async fn create(&self, req: CreateTaskRequest) -> TtrpcResult<CreateTaskResponse> {
        shoji_runtime::lifecycle::state::validate_id(&req.id)
            .map_err(|e| failed(ttrpc::Code::INVALID_ARGUMENT, e.to_string()))?;
        let bundle = PathBuf::from(&req.bundle);
        let spec_json = std::fs::read(bundle.join("config.json")).map_err(|e| {
            failed(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("cannot read {}/config.json: {e}", bundle.display()),
            )
        })?;
        let sandbox = crate::pod::sandbox_id(&spec_json, &bundle.join("config.json"))
            .map_err(|e| failed(ttrpc::Code::INVALID_ARGUMENT, error_chain(&e)))?;
        // A pod's container that shares the pod's PID namespace joins its sandbox container's
        // (the pause process is its PID 1), as runc joins the path the spec names.
        let pid_namespace_of = match &sandbox {
            Some(s)
                if *s != req.id
                    && crate::pod::joins_pid_namespace(&spec_json, &bundle.join("config.json"))
                        .map_err(|e| failed(ttrpc::Code::INVALID_ARGUMENT, error_chain(&e)))? =>
            {
                s.clone()
            }
            _ => String::new(),
        };
        if sandbox.as_ref().is_some_and(|s| *s != self.id) {
            return Err(failed(
                ttrpc::Code::INVALID_ARGUMENT,
                format!(
                    "container {} belongs to pod sandbox {}, not to this shim's sandbox {}",
                    req.id,
                    sandbox.as_deref().unwrap_or_default(),
                    self.id
                ),
            ));
        }
        let mut pod = self.pod.lock().await;
        if pod.containers.contains_key(&req.id) {
            return Err(failed(
                ttrpc::Code::ALREADY_EXISTS,
                format!("container {} exists", req.id),
            ));
        }
        let mounted = rootfs::mount(&bundle, &req.rootfs)
            .instrument(info_span!("rootfs.mount", source = "runtime", subsystem = "storage", container_id = %req.id, mounts = req.rootfs.len()))
            .await
            .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
        let unmount = |bundle: &Path| {
            if mounted {
                let _ = rootfs::unmount(bundle);
            }
        };
        // The first container boots the sandbox's VM; every later one (a pod's) joins it, its
        // root filesystem added to the VM's share.
        let src = rootfs::rootfs_of(&bundle);
        let (vm, shared, booted) = match pod.vm.take() {
            Some(vm) => match vm.sb.share_rootfs(&req.id, &src) {
                Ok(shared) => (vm, shared, false),
                Err(e) => {
                    pod.vm = Some(vm);
                    unmount(&bundle);
                    return Err(failed(ttrpc::Code::INTERNAL, error_chain(&e)));
                }
            },
            None => match self.boot(&req.id, &src, &spec_json).await {
                Ok((vm, shared, network)) => {
                    self.lifetime.booted(vm.accel.accel.as_str());
                    pod.network = network;
                    (vm, shared, true)
                }
                Err(message) => {
                    unmount(&bundle);
                    return Err(failed(ttrpc::Code::INTERNAL, message));
                }
            },
        };
        let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
        let port = pod.stdio_ports();
        let created = async {
            // The task's bind mounts (CRI's /etc/hosts, ... too) staged in the share: it
            // propagates into virtiofsd's namespace, so staging after the boot is fine.
            let spec_json = crate::mounts::stage_task_mounts(
                &spec_json,
                &vm.sb.shared().join(&req.id),
                &sandbox_root(&self.config),
                sandbox.is_some(),
            )
            .map_err(|e| error_chain(&e))?;
            let init = Proc::new("", stdio, Vec::new(), &vm.sb.vsock_uds(), port)
                .map_err(|e| error_chain(&e))?;
            let seccomp_program = shoji_runtime::seccomp::program_for_guest(&spec_json)
                .map_err(|e| error_chain(&e))?;
            let r = vm
                .client
                .create_container(agent::CreateContainerRequest {
                    container_id: req.id.clone(),
                    oci_spec_json: spec_json,
                    rootfs_tag: SHARE_TAG.into(),
                    rootfs_path: shared.in_share.clone(),
                    stdio: Some(init.ports()).into(),
                    // A pod's containers share its UTS and IPC namespaces in the guest.
                    pod_namespaces: sandbox.is_some(),
                    pid_namespace_of,
                    seccomp_program,
                    ..Default::default()
                })
                .await;
            match r {
                Ok(r) => Ok((init, r.pid)),
                Err(cause) => Err(error_chain(&vm.explain(cause).await)),
            }
        }
        .instrument(info_span!("container.create", source = "runtime", subsystem = "container", container_id = %req.id, container.id = %req.id))
        .await;
        let (init, guest_pid) = match created {
            Ok(c) => c,
            Err(message) => {
                if booted {
                    vm.stop().await;
                    pod.network = None;
                } else {
                    rootfs::unshare(&vm.sb, &req.id);
                    pod.vm = Some(vm);
                }
                unmount(&bundle);
                return Err(failed(ttrpc::Code::INTERNAL, message));
            }
        };
        init.relay();
        let ctr = Arc::new(Ctr {
            id: req.id.clone(),
            bundle: bundle.clone(),
            mounts: req.rootfs.clone(),
            mounted,
            client: vm.client.clone(),
            init: Arc::new(init),
            execs: Default::default(),
            record: std::sync::Mutex::new(Container::created(&req.id, guest_pid)),
            oom_kills: Default::default(),
        });
        pod.vm = Some(vm);
        pod.containers.insert(req.id.clone(), ctr.clone());
        drop(pod);
        self.publish(
            topics::TASK_CREATE_EVENT_TOPIC,
            Box::new(TaskCreate {
                container_id: req.id.clone(),
                bundle: req.bundle.clone(),
                rootfs: req.rootfs.clone(),
                io: MessageField::some(TaskIO {
                    stdin: req.stdin.clone(),
                    stdout: req.stdout.clone(),
                    stderr: req.stderr.clone(),
                    terminal: req.terminal,
                    ..Default::default()
                }),
                pid: host_pid(),
                ..Default::default()
            }),
        )
        .await;
        Ok(CreateTaskResponse {
            pid: host_pid(),
            ..Default::default()
        })
    }
}

/// Waits in the guest for process `p` of `ctr`, then records its exit and tells containerd.
/// The init is waited for from create on: a `kill` of a created container ends it too.
fn watch_exit(inner: Arc<Inner>, ctr: Arc<Ctr>, p: Arc<Proc>) {
    let span = info_span!("container.wait", source = "runtime", subsystem = "container", container_id = %ctr.id, container.id = %ctr.id, exec_id = %p.exec_id, process.exit_code = tracing::field::Empty);
    tokio::spawn(
        async move {
            // Also ends when the VM dies (QEMU killed): QEMU's exit is watched beside the
            // agent's connection, whatever the vsock device does with that connection.
            let code = match inner.wait_in_guest(&ctr, &p.exec_id).await {
                Ok(r) => {
                    // An OOM kill reaches containerd before the exit it caused.
                    inner.oom_killed(&ctr, r.oom_kills).await;
                    r.exit_code as u32
                }
                Err(e) => {
                    tracing::warn!(error = %e, "the process's end was not seen");
                    UNKNOWN_EXIT
                }
            };
            tracing::Span::current().record("process.exit_code", code);
            let Exit { status, at } = p.exited(code).await;
            ctr.record().exited(&p.exec_id, Some(status as i32));
            inner
                .publish(
                    topics::TASK_EXIT_EVENT_TOPIC,
                    Box::new(TaskExit {
                        container_id: ctr.id.clone(),
                        id: if p.exec_id.is_empty() {
                            ctr.id.clone()
                        } else {
                            p.exec_id.clone()
                        },
                        pid: host_pid(),
                        exit_status: status,
                        exited_at: MessageField::some(at),
                        ..Default::default()
                    }),
                )
                .await;
        }
        .instrument(span),
    );
}

#[async_trait]
impl Task for TaskService {
    async fn create(
        &self,
        ctx: &TtrpcContext,
        req: CreateTaskRequest,
    ) -> TtrpcResult<CreateTaskResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Create", req.id, "");
        let id = req.id.clone();
        async {
            let resp = self.0.create(req).await?;
            let ctr = self.0.container(&id).await?;
            watch_exit(self.0.clone(), ctr.clone(), ctr.init.clone());
            Ok(resp)
        }
        .instrument(span)
        .await
    }

    async fn start(&self, ctx: &TtrpcContext, req: StartRequest) -> TtrpcResult<StartResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Start", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            if req.exec_id.is_empty() {
                ctr.record()
                    .start()
                    .map_err(|r| failed(ttrpc::Code::FAILED_PRECONDITION, r.to_string()))?;
                if let Err(e) = ctr.client.start_container(&ctr.id).await {
                    ctr.record().start_failed();
                    return Err(failed(ttrpc::Code::INTERNAL, error_chain(&e)));
                }
                self.0
                    .publish(
                        topics::TASK_START_EVENT_TOPIC,
                        Box::new(TaskStart {
                            container_id: ctr.id.clone(),
                            pid: host_pid(),
                            ..Default::default()
                        }),
                    )
                    .await;
                // After TaskStart: an OOM kill while it runs comes as a TaskOOM of its own.
                self.0.watch_oom(ctr.clone());
            } else {
                let p = process(&ctr, &req.exec_id)?;
                let pid = ctr
                    .client
                    .exec_process(&ctr.id, &p.exec_id, p.spec_json.clone(), p.ports())
                    .await
                    .map_err(|e| {
                        ctr.record().exited(&p.exec_id, None);
                        failed(ttrpc::Code::INTERNAL, error_chain(&e))
                    })?;
                p.relay();
                ctr.record().exec_started(&p.exec_id, pid);
                watch_exit(self.0.clone(), ctr.clone(), p.clone());
                self.0
                    .publish(
                        topics::TASK_EXEC_STARTED_EVENT_TOPIC,
                        Box::new(TaskExecStarted {
                            container_id: ctr.id.clone(),
                            exec_id: p.exec_id.clone(),
                            pid: host_pid(),
                            ..Default::default()
                        }),
                    )
                    .await;
            }
            Ok(StartResponse {
                pid: host_pid(),
                ..Default::default()
            })
        }
        .instrument(span)
        .await
    }

    async fn state(&self, _ctx: &TtrpcContext, req: StateRequest) -> TtrpcResult<StateResponse> {
        // Not traced: containerd polls it, and it touches neither the VM nor the agent.
        let ctr = self.0.container(&req.id).await?;
        let p = process(&ctr, &req.exec_id)?;
        let record = ctr.record();
        let task = if req.exec_id.is_empty() {
            Some(record.init)
        } else {
            record.execs.get(&req.exec_id).copied()
        };
        let exit = p.exit();
        Ok(StateResponse {
            id: req.id.clone(),
            bundle: ctr.bundle.display().to_string(),
            pid: host_pid(),
            status: task
                .map_or(Status::UNKNOWN, |t| task_status(t.status))
                .into(),
            stdin: p.stdio.stdin.clone(),
            stdout: p.stdio.stdout.clone(),
            stderr: p.stdio.stderr.clone(),
            terminal: p.stdio.terminal,
            exit_status: exit.as_ref().map_or(0, |e| e.status),
            exited_at: exit.map(|e| e.at).into(),
            exec_id: req.exec_id.clone(),
            ..Default::default()
        })
    }

    async fn wait(&self, ctx: &TtrpcContext, req: WaitRequest) -> TtrpcResult<WaitResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Wait", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            let p = process(&ctr, &req.exec_id)?;
            let exit = p.wait().await;
            Ok(WaitResponse {
                exit_status: exit.status,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            })
        }
        .instrument(span)
        .await
    }

    async fn kill(&self, ctx: &TtrpcContext, req: KillRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Kill", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            let live = {
                let record = ctr.record();
                if req.exec_id.is_empty() {
                    record.check_kill().is_ok()
                } else {
                    record
                        .execs
                        .get(&req.exec_id)
                        .is_some_and(|t| t.status != TaskStatus::Stopped)
                }
            };
            if !live {
                return Err(failed(
                    ttrpc::Code::NOT_FOUND,
                    format!("process {:?} of {} already finished", req.exec_id, req.id),
                ));
            }
            ctr.client
                .signal_process(&ctr.id, &req.exec_id, req.signal)
                .await
                .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
            Ok(Empty::new())
        }
        .instrument(span)
        .await
    }

    async fn delete(
        &self,
        ctx: &TtrpcContext,
        req: DeleteRequest,
    ) -> TtrpcResult<containerd_shim::api::DeleteResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Delete", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            if !req.exec_id.is_empty() {
                let p = process(&ctr, &req.exec_id)?;
                let Some(exit) = p.exit() else {
                    return Err(failed(
                        ttrpc::Code::FAILED_PRECONDITION,
                        format!("exec {} of {} is running", req.exec_id, req.id),
                    ));
                };
                ctr.execs().remove(&req.exec_id);
                ctr.record().execs.remove(&req.exec_id);
                return Ok(containerd_shim::api::DeleteResponse {
                    pid: host_pid(),
                    exit_status: exit.status,
                    exited_at: MessageField::some(exit.at),
                    ..Default::default()
                });
            }
            let state = ctr.record().status();
            if !state.can_delete(false) {
                return Err(failed(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("container {} is {state}: kill it first", req.id),
                ));
            }
            let exit = match ctr.init.exit() {
                Some(e) => e,
                // Created and never started: the held init is killed.
                None => {
                    let _ = ctr
                        .client
                        .signal_process(&ctr.id, "", libc::SIGKILL as u32)
                        .await;
                    match tokio::time::timeout(std::time::Duration::from_secs(5), ctr.init.wait())
                        .await
                    {
                        Ok(e) => e,
                        Err(_) => ctr.init.exited(UNKNOWN_EXIT).await,
                    }
                }
            };
            {
                let mut pod = self.0.pod.lock().await;
                pod.containers.remove(&req.id);
                ctr.init.abort().await;
                let execs: Vec<_> = ctr.execs().drain().map(|(_, p)| p).collect();
                for p in execs {
                    p.abort().await;
                }
                // The VM goes with its last container. Before that, a container leaves it:
                // its mounts in the guest first, then its root filesystem in the share.
                if pod.containers.is_empty() {
                    pod.stop_vm().await;
                } else if let Some(vm) = &pod.vm {
                    // A dead VM has nothing left to remove (and would not answer).
                    let alive = vm.exit_watch().borrow().is_none();
                    if alive {
                        if let Err(e) = ctr.client.remove_container(&ctr.id).await {
                            tracing::warn!(error = %error_chain(&e), "the guest did not remove the container");
                        }
                    }
                    rootfs::unshare(&vm.sb, &ctr.id);
                }
            }
            if ctr.mounted {
                if let Err(e) = rootfs::unmount(&ctr.bundle) {
                    return Err(failed(ttrpc::Code::INTERNAL, error_chain(&e)));
                }
            }
            self.0
                .publish(
                    topics::TASK_DELETE_EVENT_TOPIC,
                    Box::new(TaskDelete {
                        container_id: req.id.clone(),
                        pid: host_pid(),
                        exit_status: exit.status,
                        exited_at: MessageField::some(exit.at.clone()),
                        id: req.id.clone(),
                        ..Default::default()
                    }),
                )
                .await;
            Ok(containerd_shim::api::DeleteResponse {
                pid: host_pid(),
                exit_status: exit.status,
                exited_at: MessageField::some(exit.at),
                ..Default::default()
            })
        }
        .instrument(span)
        .await
    }

    async fn pids(&self, ctx: &TtrpcContext, req: PidsRequest) -> TtrpcResult<PidsResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Pids", req.id, "");
        async {
            let ctr = self.0.container(&req.id).await?;
            let record = ctr.record();
            // A restarted containerd asks every shim it finds for its task's pids, and takes an
            // empty answer for a shim whose task was never made, which it kills: a container
            // whose processes ended while containerd was down would be lost with its exit
            // status. Like runc's shim (`runc ps` of a stopped container fails), say so instead.
            if record.init.status == TaskStatus::Stopped {
                return Err(failed(
                    ttrpc::Code::FAILED_PRECONDITION,
                    format!("container {} is stopped: it has no processes", req.id),
                ));
            }
            let live = |t: &shoji_runtime::lifecycle::status::Task| t.status != TaskStatus::Stopped;
            let processes = std::iter::once(&record.init)
                .chain(record.execs.values())
                .filter(|t| live(t))
                .filter_map(|t| t.pid)
                .map(|pid| ProcessInfo {
                    pid,
                    ..Default::default()
                })
                .collect();
            Ok(PidsResponse {
                processes,
                ..Default::default()
            })
        }
        .instrument(span)
        .await
    }

    async fn exec(&self, ctx: &TtrpcContext, req: ExecProcessRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Exec", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            ctr.record()
                .exec(&req.exec_id)
                .map_err(|r| failed(ttrpc::Code::FAILED_PRECONDITION, r.to_string()))?;
            // containerd sends the exec's OCI `process` as JSON in the Any; the agent takes
            // exactly that.
            let spec_json = req
                .spec
                .as_ref()
                .map(|a| a.value.clone())
                .unwrap_or_default();
            if serde_json::from_slice::<oci_spec::runtime::Process>(&spec_json).is_err() {
                ctr.record().exited(&req.exec_id, None);
                return Err(failed(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!(
                        "exec {}: the process spec is not an OCI process",
                        req.exec_id
                    ),
                ));
            }
            let stdio = Stdio::new(&req.stdin, &req.stdout, &req.stderr, req.terminal);
            let made = {
                let mut pod = self.0.pod.lock().await;
                let port = pod.stdio_ports();
                let uds = pod.vm.as_ref().map(|vm| vm.sb.vsock_uds());
                uds.ok_or_else(|| "the sandbox has no VM".to_string())
                    .and_then(|uds| {
                        Proc::new(&req.exec_id, stdio, spec_json, &uds, port)
                            .map_err(|e| error_chain(&e))
                    })
            };
            match made {
                Ok(p) => {
                    ctr.execs().insert(req.exec_id.clone(), Arc::new(p));
                    Ok(Empty::new())
                }
                Err(message) => {
                    ctr.record().exited(&req.exec_id, None);
                    Err(failed(ttrpc::Code::INTERNAL, message))
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn resize_pty(&self, ctx: &TtrpcContext, req: ResizePtyRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "ResizePty", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            ctr.client
                .resize_process(&ctr.id, &req.exec_id, req.height, req.width)
                .await
                .map_err(|e| failed(ttrpc::Code::INTERNAL, error_chain(&e)))?;
            Ok(Empty::new())
        }
        .instrument(span)
        .await
    }

    async fn close_io(&self, ctx: &TtrpcContext, req: CloseIORequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "CloseIO", req.id, req.exec_id);
        async {
            let ctr = self.0.container(&req.id).await?;
            let p = process(&ctr, &req.exec_id)?;
            if req.stdin {
                p.close_stdin();
            }
            Ok(Empty::new())
        }
        .instrument(span)
        .await
    }

    async fn stats(&self, ctx: &TtrpcContext, req: StatsRequest) -> TtrpcResult<StatsResponse> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Stats", req.id, "");
        self.0.stats(&req.id).instrument(span).await
    }

    async fn pause(&self, ctx: &TtrpcContext, req: PauseRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Pause", req.id, "");
        self.0.freeze(&req.id, true).instrument(span).await
    }

    async fn resume(&self, ctx: &TtrpcContext, req: ResumeRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Resume", req.id, "");
        self.0.freeze(&req.id, false).instrument(span).await
    }

    async fn update(&self, ctx: &TtrpcContext, req: UpdateTaskRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Update", req.id, "");
        self.0
            .update(&req.id, req.resources.as_ref())
            .instrument(span)
            .await
    }

    async fn connect(
        &self,
        _ctx: &TtrpcContext,
        _req: ConnectRequest,
    ) -> TtrpcResult<ConnectResponse> {
        Ok(ConnectResponse {
            shim_pid: host_pid(),
            task_pid: host_pid(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        })
    }

    async fn shutdown(&self, ctx: &TtrpcContext, req: ShutdownRequest) -> TtrpcResult<Empty> {
        let (span, _in_lifetime) = server_span!(self.0, ctx, "Shutdown", req.id, "");
        async {
            {
                let mut pod = self.0.pod.lock().await;
                if !pod.containers.is_empty() && !req.now {
                    return Ok(Empty::new());
                }
                pod.stop_vm().await;
            }
            self.0.exit.signal();
            Ok(Empty::new())
        }
        .instrument(span)
        .await
    }
}
