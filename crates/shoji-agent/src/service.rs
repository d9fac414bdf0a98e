//! The ttRPC `AgentService` implementation. One server span per call, parented on the caller's
//! `traceparent` from the request metadata.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use shoji_protocols::agent::{self, Empty};
use shoji_protocols::agent_ttrpc::AgentService;
use tracing::Instrument;
use ttrpc::r#async::TtrpcContext;

use crate::boot::{now_unix_ns, BootParams};
use crate::container::Container;
use crate::podns::PodNamespaces;
use crate::reaper::Reaper;
use crate::telemetry;

pub struct Agent {
    pub params: BootParams,
    pub boot_phases: Mutex<Vec<(String, u64)>>,
    pub containers: Mutex<HashMap<String, Container>>,
    /// The pod's UTS and IPC namespaces, once a container asked for them.
    pub pod_namespaces: Arc<Mutex<PodNamespaces>>,
    pub reaper: Reaper,
    pub shutdown: tokio::sync::Notify,
}

fn status(code: ttrpc::Code, msg: impl Into<String>) -> ttrpc::Error {
    ttrpc::Error::RpcStatus(ttrpc::get_status(code, msg.into()))
}

fn no_exec(id: &str) -> ttrpc::Error {
    status(ttrpc::Code::NOT_FOUND, format!("no exec process {id:?}"))
}

/// How often `WaitOom` reads a container's `memory.events`: an OOM kill reaches containerd
/// within this (plus a round trip), for one small read per running container.
const OOM_POLL: std::time::Duration = std::time::Duration::from_millis(250);

fn not_found(id: &str) -> ttrpc::Error {
    status(ttrpc::Code::NOT_FOUND, format!("no container {id:?}"))
}

macro_rules! server_span {
    ($self:ident, $ctx:ident, $method:literal, $cid:expr) => {{
        let span = tracing::info_span!(
            concat!("shoji.agent.v1.AgentService/", $method),
            otel.kind = "server",
            rpc.system = "ttrpc",
            rpc.service = "shoji.agent.v1.AgentService",
            rpc.method = $method,
            source = "agent",
            package = "shoji_agent::service",
            subsystem = "rpc",
            sandbox_id = %$self.params.sandbox_id,
            container_id = %$cid,
        );
        telemetry::set_parent_from_metadata(&span, &$ctx.metadata);
        span
    }};
}

impl Agent {
    fn phase(&self, name: &str) {
        if let Ok(mut p) = self.boot_phases.lock() {
            if !p.iter().any(|(n, _)| n == name) {
                p.push((name.into(), now_unix_ns()));
            }
        }
    }
}

#[async_trait::async_trait]
impl AgentService for Agent {
    async fn ping(
        &self,
        ctx: &TtrpcContext,
        _req: agent::PingRequest,
    ) -> ttrpc::Result<agent::PingResponse> {
        let span = server_span!(self, ctx, "Ping", "");
        let _e = span.enter();
        let phases = self
            .boot_phases
            .lock()
            .map(|p| p.clone())
            .unwrap_or_default();
        Ok(agent::PingResponse {
            guest_time_unix_nano: now_unix_ns(),
            agent_version: env!("CARGO_PKG_VERSION").into(),
            boot_phases: phases
                .into_iter()
                .map(|(name, t)| agent::BootPhase {
                    name,
                    time_unix_nano: t,
                    ..Default::default()
                })
                .collect(),
            dropped_spans: telemetry::dropped_spans(),
            ..Default::default()
        })
    }

    async fn create_container(
        &self,
        ctx: &TtrpcContext,
        mut req: agent::CreateContainerRequest,
    ) -> ttrpc::Result<agent::CreateContainerResponse> {
        let span = server_span!(self, ctx, "CreateContainer", req.container_id);
        async {
            let spec: oci_spec::runtime::Spec = tracing::info_span!("spec.parse", source = "agent", subsystem = "container", spec.bytes = req.oci_spec_json.len() as u64)
                .in_scope(|| serde_path_to_error::deserialize(&mut serde_json::Deserializer::from_slice(&req.oci_spec_json)))
                .map_err(|e| status(ttrpc::Code::INVALID_ARGUMENT, format!("invalid OCI spec at {}: {}", e.path(), e.inner())))?;
            let ports = req.stdio.clone().unwrap_or_default();
            let id = req.container_id.clone();
            if self.containers.lock().map(|c| c.contains_key(&id)).unwrap_or(true) {
                return Err(status(ttrpc::Code::ALREADY_EXISTS, format!("container {id:?} exists")));
            }
            let reaper = self.reaper.clone();
            let (tag, rootfs_path) = (req.rootfs_tag.clone(), req.rootfs_path.clone());
            let files: Vec<(String, Vec<u8>)> = req.files.iter().map(|f| (f.path.clone(), f.content.clone())).collect();
            let pod = req.pod_namespaces.then(|| self.pod_namespaces.clone());
            let pid_namespace = self.pid_namespace_of(&id, &req.pid_namespace_of)?;
            let seccomp = std::mem::take(&mut req.seccomp_program);
            let span = tracing::info_span!("container.create", source = "agent", subsystem = "container", container_id = %id, container.id = %id, pod_namespaces = req.pod_namespaces, pid_namespace_of = req.pid_namespace_of);
            let c = tokio::task::spawn_blocking(move || span.in_scope(|| Container::create(&id, &spec, &seccomp, &tag, &rootfs_path, &files, &ports, &reaper, pod.as_deref(), pid_namespace)))
                .await
                .map_err(|e| status(ttrpc::Code::INTERNAL, e.to_string()))?
                .map_err(|e| status(ttrpc::Code::INTERNAL, crate::error_chain(&e)))?;
            self.phase("rootfs.mounted");
            let pid = c.init.pid;
            tracing::info!(process.pid = pid, "container created");
            if let Ok(mut m) = self.containers.lock() {
                m.insert(req.container_id.clone(), c);
            }
            Ok(agent::CreateContainerResponse { pid: pid as u32, ..Default::default() })
        }
        .instrument(span)
        .await
    }

    async fn start_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::StartContainerRequest,
    ) -> ttrpc::Result<agent::StartContainerResponse> {
        let span = server_span!(self, ctx, "StartContainer", req.container_id);
        let _e = span.enter();
        let mut m = self
            .containers
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
        let c = m
            .get_mut(&req.container_id)
            .ok_or_else(|| not_found(&req.container_id))?;
        c.init
            .release()
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("starting the process: {e}")))?;
        Ok(agent::StartContainerResponse::default())
    }

    async fn wait_process(
        &self,
        ctx: &TtrpcContext,
        req: agent::WaitProcessRequest,
    ) -> ttrpc::Result<agent::WaitProcessResponse> {
        let span = server_span!(self, ctx, "WaitProcess", req.container_id);
        async {
            let (waiter, pid, cgroup) = self.with_process(&req.container_id, &req.exec_id, |c, p| {
                (p.waiter(), p.pid, c.to_path_buf())
            })?;
            let (code, signal) = waiter
                .wait()
                .instrument(tracing::info_span!(
                    "process.wait",
                    source = "agent",
                    subsystem = "container",
                    process.pid = pid,
                    process.exit_code = tracing::field::Empty
                ))
                .await;
            // The kernel counts an OOM kill before it sends the SIGKILL: by the reaping, the count
            // includes it.
            let oom_kills = crate::cgroup::oom_kills(&cgroup).unwrap_or_else(|e| {
                tracing::warn!(error = %crate::error_chain(&e), "cannot read the container's OOM kills");
                0
            });
            tracing::info!(
                process.exit_code = code,
                signal,
                oom_kills,
                "process exited"
            );
            Ok(agent::WaitProcessResponse {
                exit_code: code,
                signal,
                oom_kills,
                ..Default::default()
            })
        }
        .instrument(span)
        .await
    }

    async fn wait_oom(
        &self,
        ctx: &TtrpcContext,
        req: agent::WaitOomRequest,
    ) -> ttrpc::Result<agent::WaitOomResponse> {
        let span = server_span!(self, ctx, "WaitOom", req.container_id);
        async {
            let (cgroup, mut exit) = self.with_process(&req.container_id, "", |c, init| {
                (c.to_path_buf(), init.exit.clone())
            })?;
            let answer = |oom_kills, ended| {
                Ok(agent::WaitOomResponse {
                    oom_kills,
                    ended,
                    ..Default::default()
                })
            };
            loop {
                // A cgroup that cannot be read any more is a container that is gone.
                let Ok(n) = crate::cgroup::oom_kills(&cgroup) else {
                    return answer(req.seen, true);
                };
                if n > req.seen {
                    tracing::info!(oom_kills = n, "the container's OOM kills grew");
                    return answer(n, false);
                }
                if exit.borrow().is_some() {
                    return answer(n, true);
                }
                // The init's exit ends the poll at once; a dropped sender is a removed container.
                if let Ok(Err(_)) = tokio::time::timeout(OOM_POLL, exit.changed()).await {
                    return answer(n, true);
                }
            }
        }
        .instrument(span)
        .await
    }

    async fn signal_process(
        &self,
        ctx: &TtrpcContext,
        req: agent::SignalProcessRequest,
    ) -> ttrpc::Result<Empty> {
        let span = server_span!(self, ctx, "SignalProcess", req.container_id);
        let _e = span.enter();
        let pid = {
            let mut m = self
                .containers
                .lock()
                .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
            m.get_mut(&req.container_id)
                .ok_or_else(|| not_found(&req.container_id))?
                .process_mut(&req.exec_id)
                .ok_or_else(|| no_exec(&req.exec_id))?
                .pid
        };
        let sig = nix::sys::signal::Signal::try_from(req.signal as i32).map_err(|_| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("bad signal {}", req.signal),
            )
        })?;
        // A PID-namespace init ignores signals it has no handler for; only SIGKILL always lands.
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
        if req.exec_id.is_empty() {
            crate::signals::redeliver_once_caught(pid, sig);
        }
        Ok(Empty::default())
    }

    async fn resize_terminal(
        &self,
        ctx: &TtrpcContext,
        req: agent::ResizeTerminalRequest,
    ) -> ttrpc::Result<Empty> {
        let _span = server_span!(self, ctx, "ResizeTerminal", req.container_id);
        // The pty master lives in the relay threads; the slave is the process's fd 0.
        let pid = {
            let mut m = self
                .containers
                .lock()
                .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
            m.get_mut(&req.container_id)
                .ok_or_else(|| not_found(&req.container_id))?
                .process_mut(&req.exec_id)
                .ok_or_else(|| no_exec(&req.exec_id))?
                .pid
        };
        if let Ok(f) = std::fs::File::open(format!("/proc/{pid}/fd/0")) {
            let ws = libc::winsize {
                ws_row: req.rows as u16,
                ws_col: req.cols as u16,
                ws_xpixel: 0,
                ws_ypixel: 0,
            };
            // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the fd is open.
            unsafe { libc::ioctl(std::os::fd::AsRawFd::as_raw_fd(&f), libc::TIOCSWINSZ, &ws) };
        }
        Ok(Empty::default())
    }

    async fn remove_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::RemoveContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let span = server_span!(self, ctx, "RemoveContainer", req.container_id);
        let _e = span.enter();
        let c = self
            .containers
            .lock()
            .ok()
            .and_then(|mut m| m.remove(&req.container_id));
        let mut c = c.ok_or_else(|| not_found(&req.container_id))?;
        c.remove();
        Ok(Empty::default())
    }

    async fn shutdown(
        &self,
        ctx: &TtrpcContext,
        _req: agent::ShutdownRequest,
    ) -> ttrpc::Result<agent::ShutdownResponse> {
        let span = server_span!(self, ctx, "Shutdown", "");
        async {
            if let Ok(mut m) = self.containers.lock() {
                for (_, c) in m.iter_mut() {
                    c.remove();
                }
                m.clear();
            }
            // The host may stop the VM as soon as this call is answered: nothing may be left
            // in the guest's page cache.
            nix::unistd::sync();
        }
        .instrument(span)
        .await;
        // After the span has ended, so that it is among the spans flushed.
        let (exported, dropped) = telemetry::flush();
        // Power off after this answer has left.
        self.shutdown.notify_one();
        Ok(agent::ShutdownResponse {
            dropped_spans: dropped,
            exported_spans: exported,
            level_dropped_spans: shoji_telemetry::levels::dropped_by_level(),
            ..Default::default()
        })
    }

    async fn configure_network(
        &self,
        ctx: &TtrpcContext,
        req: agent::ConfigureNetworkRequest,
    ) -> ttrpc::Result<agent::ConfigureNetworkResponse> {
        let span = server_span!(self, ctx, "ConfigureNetwork", "");
        let inner = tracing::info_span!(
            parent: &span,
            "network.configure",
            source = "agent",
            subsystem = "network",
            network.interfaces = tracing::field::Empty,
            network.addresses = tracing::field::Empty,
            network.routes = req.routes.len(),
        );
        crate::network::configure(&req)
            .instrument(inner)
            .instrument(span)
            .await
            .map_err(|e| {
                tracing::error!(error = %e, "network configuration failed");
                status(
                    ttrpc::Code::INVALID_ARGUMENT,
                    format!("configuring the network: {e}"),
                )
            })?;
        Ok(agent::ConfigureNetworkResponse::default())
    }

    async fn stats_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::StatsContainerRequest,
    ) -> ttrpc::Result<agent::StatsContainerResponse> {
        let span = server_span!(self, ctx, "StatsContainer", req.container_id);
        let _e = span.enter();
        let dir = self.cgroup_of(&req.container_id)?;
        crate::cgroup::stats(&dir)
            .map_err(|e| status(ttrpc::Code::INTERNAL, crate::error_chain(&e)))
    }

    async fn pause_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::PauseContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let span = server_span!(self, ctx, "PauseContainer", req.container_id);
        self.freeze(&req.container_id, true).instrument(span).await
    }

    async fn resume_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::ResumeContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let span = server_span!(self, ctx, "ResumeContainer", req.container_id);
        self.freeze(&req.container_id, false).instrument(span).await
    }

    async fn update_container(
        &self,
        ctx: &TtrpcContext,
        req: agent::UpdateContainerRequest,
    ) -> ttrpc::Result<Empty> {
        let span = server_span!(self, ctx, "UpdateContainer", req.container_id);
        let _e = span.enter();
        let res: oci_spec::runtime::LinuxResources = serde_path_to_error::deserialize(
            &mut serde_json::Deserializer::from_slice(&req.resources_json),
        )
        .map_err(|e| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("invalid linux.resources at {}: {}", e.path(), e.inner()),
            )
        })?;
        let dir = self.cgroup_of(&req.container_id)?;
        let _s = tracing::info_span!(
            "cgroup.update",
            source = "agent",
            subsystem = "container",
            container_id = %req.container_id
        )
        .entered();
        crate::cgroup::apply(&dir, &res)
            .map_err(|e| status(ttrpc::Code::INTERNAL, crate::error_chain(&e)))?;
        Ok(Empty::default())
    }

    async fn exec_process(
        &self,
        ctx: &TtrpcContext,
        req: agent::ExecProcessRequest,
    ) -> ttrpc::Result<agent::ExecProcessResponse> {
        let span = server_span!(self, ctx, "ExecProcess", req.container_id);
        let _e = span.enter();
        let process: oci_spec::runtime::Process = serde_path_to_error::deserialize(
            &mut serde_json::Deserializer::from_slice(&req.process_json),
        )
        .map_err(|e| {
            status(
                ttrpc::Code::INVALID_ARGUMENT,
                format!("invalid process at process.{}: {}", e.path(), e.inner()),
            )
        })?;
        let ports = req.stdio.clone().unwrap_or_default();
        let mut m = self
            .containers
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
        let c = m
            .get_mut(&req.container_id)
            .ok_or_else(|| not_found(&req.container_id))?;
        let _s = tracing::info_span!(
            "process.spawn",
            source = "agent",
            subsystem = "container",
            container_id = %req.container_id,
            exec_id = %req.exec_id
        )
        .entered();
        let pid = c
            .exec(&req.exec_id, &process, &ports, &self.reaper)
            .map_err(|e| status(ttrpc::Code::INTERNAL, format!("exec: {e}")))?;
        Ok(agent::ExecProcessResponse {
            pid: pid as u32,
            ..Default::default()
        })
    }
}

impl Agent {
    /// The PID namespace container `id` is to join (`CreateContainerRequest.pid_namespace_of`):
    /// that of container `of`'s init, which must be running (its PID names it until it is
    /// reaped, and a namespace whose PID 1 has exited takes no new process).
    fn pid_namespace_of(&self, id: &str, of: &str) -> ttrpc::Result<Option<std::path::PathBuf>> {
        if of.is_empty() {
            return Ok(None);
        }
        let m = self
            .containers
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
        let unusable = |why: &str| {
            status(
                ttrpc::Code::FAILED_PRECONDITION,
                format!("container {id:?} is to share the PID namespace of container {of:?}, which {why}"),
            )
        };
        let c = m.get(of).ok_or_else(|| unusable("does not exist"))?;
        if c.init.exit.borrow().is_some() {
            return Err(unusable("has exited"));
        }
        Ok(Some(format!("/proc/{}/ns/pid", c.init.pid).into()))
    }

    /// `f` on process `exec_id` (empty: the init) of container `id` and the container's cgroup
    /// directory, under the containers' lock.
    fn with_process<T>(
        &self,
        id: &str,
        exec_id: &str,
        f: impl FnOnce(&std::path::Path, &mut crate::container::Process) -> T,
    ) -> ttrpc::Result<T> {
        let mut m = self
            .containers
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
        let c = m.get_mut(id).ok_or_else(|| not_found(id))?;
        let cgroup = c.cgroup().to_path_buf();
        let p = c.process_mut(exec_id).ok_or_else(|| no_exec(exec_id))?;
        Ok(f(&cgroup, p))
    }

    /// Container `id`'s cgroup directory.
    fn cgroup_of(&self, id: &str) -> ttrpc::Result<std::path::PathBuf> {
        let m = self
            .containers
            .lock()
            .map_err(|_| status(ttrpc::Code::INTERNAL, "lock"))?;
        Ok(m.get(id)
            .ok_or_else(|| not_found(id))?
            .cgroup()
            .to_path_buf())
    }

    /// Freezes or thaws container `id` in a blocking task, within a `cgroup.freeze` span.
    async fn freeze(&self, id: &str, frozen: bool) -> ttrpc::Result<Empty> {
        let dir = self.cgroup_of(id)?;
        let span = tracing::info_span!(
            "cgroup.freeze",
            source = "agent",
            subsystem = "container",
            container_id = %id,
            frozen
        );
        tokio::task::spawn_blocking(move || span.in_scope(|| crate::cgroup::freeze(&dir, frozen)))
            .await
            .map_err(|e| status(ttrpc::Code::INTERNAL, e.to_string()))?
            .map_err(|e| status(ttrpc::Code::INTERNAL, crate::error_chain(&e)))?;
        Ok(Empty::default())
    }
}

pub fn new(params: BootParams, phases: Vec<(String, u64)>, reaper: Reaper) -> Arc<Agent> {
    Arc::new(Agent {
        params,
        boot_phases: Mutex::new(phases),
        containers: Mutex::new(HashMap::new()),
        pod_namespaces: Arc::default(),
        reaper,
        shutdown: tokio::sync::Notify::new(),
    })
}
