//! The runtime's side of the agent API: a ttRPC client over hybrid vsock, one client span per
//! call, the caller's trace context in the request metadata.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use shoji_protocols::agent;
use shoji_protocols::agent_ttrpc::AgentServiceClient;
use tracing::Instrument;

use crate::vsock;

#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    #[error("the agent did not get ready (vsock port {port}) within {secs} s")]
    BootTimeout {
        port: u32,
        secs: u64,
        /// Why the last attempt to reach the agent failed, if one was made.
        #[source]
        last_attempt: Option<ConnectAttempt>,
    },
    #[error("the VM exited ({status}) before the agent answered")]
    VmExited { status: String },
    #[error("agent call {method} failed: {message}")]
    Rpc {
        method: &'static str,
        message: String,
    },
}

/// Why one attempt to reach the agent failed (kept for the boot timeout's cause).
#[derive(Debug, thiserror::Error)]
pub enum ConnectAttempt {
    #[error("the vsock socket {path} does not exist yet")]
    NoSocket { path: String },
    #[error("vsock CONNECT failed")]
    Connect(#[source] crate::vsock::VsockError),
    #[error("vsock CONNECT got no answer within 1 s")]
    ConnectTimedOut,
    #[error("the agent did not answer Ping within 2 s")]
    PingTimedOut,
    #[error("Ping failed")]
    Ping(#[source] Box<AgentError>),
}

/// Produces the trace-context metadata for an outgoing call (W3C `traceparent`, `tracestate`).
/// Set by the telemetry set-up; the default injects nothing.
pub type ContextInjector = fn() -> Vec<(String, String)>;

fn no_context() -> Vec<(String, String)> {
    Vec::new()
}

/// Clock offset between guest and host, estimated NTP-style from [`AgentClient::sync_clock`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ClockOffset {
    /// guest - host, nanoseconds.
    pub offset_ns: i64,
    /// Half the round trip of the best sample: the offset is exact to within this.
    pub uncertainty_ns: i64,
}

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

#[derive(Clone)]
pub struct AgentClient {
    inner: AgentServiceClient,
    inject: ContextInjector,
}

impl std::fmt::Debug for AgentClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AgentClient")
    }
}

macro_rules! call {
    ($self:ident, $method:literal, $fn:ident, $req:expr, $timeout:expr) => {{
        let span = tracing::info_span!(
            concat!("shoji.agent.v1.AgentService/", $method),
            otel.kind = "client",
            rpc.system = "ttrpc",
            rpc.service = "shoji.agent.v1.AgentService",
            rpc.method = $method,
            source = "runtime",
            package = "shoji_runtime::agent",
            subsystem = "agent",
        );
        let inject = $self.inject;
        let client = &$self.inner;
        async move {
            let ctx = context(inject, $timeout);
            client.$fn(ctx, $req).await.map_err(|e| AgentError::Rpc {
                method: $method,
                message: rpc_message(e),
            })
        }
        .instrument(span)
        .await
    }};
}

fn rpc_message(e: ttrpc::Error) -> String {
    match e {
        ttrpc::Error::RpcStatus(s) => s.message().to_string(),
        other => other.to_string(),
    }
}

fn context(inject: ContextInjector, timeout: Option<Duration>) -> ttrpc::context::Context {
    let mut ctx = ttrpc::context::Context::default();
    if let Some(t) = timeout {
        ctx.timeout_nano = t.as_nanos() as i64;
    }
    let mut md: HashMap<String, Vec<String>> = HashMap::new();
    for (k, v) in inject() {
        md.entry(k).or_default().push(v);
    }
    ctx.metadata = md;
    ctx
}

const SHORT: Option<Duration> = Some(Duration::from_secs(30));

impl AgentClient {
    /// Connects to the agent, retrying until `deadline`; `vm_exited` is polled between tries so
    /// a dead VM is reported at once rather than at the deadline.
    pub async fn connect(
        uds: &Path,
        boot_timeout: Duration,
        ready: Option<&tokio::net::UnixListener>,
        inject: Option<ContextInjector>,
        mut vm_exited: impl FnMut() -> Option<String>,
    ) -> Result<Self, AgentError> {
        let deadline = Instant::now() + boot_timeout;
        // First the agent's own "ready" connection, so that no host-initiated connection reaches
        // the vsock device before the guest's transport is up.
        if let Some(listener) = ready {
            loop {
                if let Some(status) = vm_exited() {
                    return Err(AgentError::VmExited { status });
                }
                if Instant::now() >= deadline {
                    return Err(AgentError::BootTimeout {
                        port: shoji_protocols::READY_VSOCK_PORT,
                        secs: boot_timeout.as_secs(),
                        last_attempt: None,
                    });
                }
                if let Ok(Ok(_)) =
                    tokio::time::timeout(Duration::from_millis(50), listener.accept()).await
                {
                    break;
                }
            }
        }
        let mut last_attempt;
        loop {
            if let Some(status) = vm_exited() {
                return Err(AgentError::VmExited { status });
            }
            match Self::try_connect(uds, inject).await {
                Ok(client) => return Ok(client),
                Err(e) => last_attempt = e,
            }
            if Instant::now() >= deadline {
                return Err(AgentError::BootTimeout {
                    port: shoji_protocols::AGENT_VSOCK_PORT,
                    secs: boot_timeout.as_secs(),
                    last_attempt: Some(last_attempt),
                });
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// One attempt: CONNECT through the vsock device, then a Ping.
    async fn try_connect(
        uds: &Path,
        inject: Option<ContextInjector>,
    ) -> Result<Self, ConnectAttempt> {
        if !uds.exists() {
            return Err(ConnectAttempt::NoSocket {
                path: uds.display().to_string(),
            });
        }
        // Bounded: before the guest's vsock driver is up, the device may hold a CONNECT without
        // ever answering it.
        let stream = tokio::time::timeout(
            Duration::from_secs(1),
            vsock::connect(uds, shoji_protocols::AGENT_VSOCK_PORT),
        )
        .await
        .map_err(|_| ConnectAttempt::ConnectTimedOut)?
        .map_err(ConnectAttempt::Connect)?;
        let socket = ttrpc::r#async::transport::Socket::new(stream);
        let client = Self {
            inner: AgentServiceClient::new(ttrpc::r#async::Client::new(socket)),
            inject: inject.unwrap_or(no_context),
        };
        // The CONNECT answer comes from the vsock device; only a Ping proves the agent is
        // serving.
        tokio::time::timeout(Duration::from_secs(2), client.ping_once())
            .await
            .map_err(|_| ConnectAttempt::PingTimedOut)?
            .map_err(|e| ConnectAttempt::Ping(Box::new(e)))?;
        Ok(client)
    }

    pub fn set_context_injector(&mut self, inject: ContextInjector) {
        self.inject = inject;
    }

    async fn ping_once(&self) -> Result<(u64, agent::PingResponse, u64), AgentError> {
        let t0 = now_unix_ns();
        let req = agent::PingRequest {
            host_time_unix_nano: t0,
            ..Default::default()
        };
        let resp = call!(self, "Ping", ping, &req, Some(Duration::from_secs(2)))?;
        Ok((t0, resp, now_unix_ns()))
    }

    /// Pings `samples` times and keeps the sample with the smallest round trip.
    pub async fn sync_clock(
        &self,
        samples: usize,
    ) -> Result<(ClockOffset, agent::PingResponse), AgentError> {
        let mut best: Option<(u64, ClockOffset, agent::PingResponse)> = None;
        for _ in 0..samples.max(1) {
            let (t0, resp, t1) = self.ping_once().await?;
            let rtt = t1.saturating_sub(t0);
            let mid = (t0 / 2 + t1 / 2) as i64;
            let off = ClockOffset {
                offset_ns: resp.guest_time_unix_nano as i64 - mid,
                uncertainty_ns: (rtt / 2) as i64,
            };
            if best.as_ref().is_none_or(|(r, _, _)| rtt < *r) {
                best = Some((rtt, off, resp));
            }
        }
        let (_, off, resp) = best.ok_or(AgentError::Rpc {
            method: "Ping",
            message: "no sample".into(),
        })?;
        Ok((off, resp))
    }

    pub async fn create_container(
        &self,
        req: agent::CreateContainerRequest,
    ) -> Result<agent::CreateContainerResponse, AgentError> {
        call!(self, "CreateContainer", create_container, &req, SHORT)
    }

    pub async fn start_container(&self, container_id: &str) -> Result<(), AgentError> {
        let req = agent::StartContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        call!(self, "StartContainer", start_container, &req, SHORT).map(|_| ())
    }

    /// Kills what is left of a container in the guest and undoes its mounts there (a pod's
    /// container deleted while its VM goes on).
    pub async fn remove_container(&self, container_id: &str) -> Result<(), AgentError> {
        let req = agent::RemoveContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        call!(self, "RemoveContainer", remove_container, &req, SHORT).map(|_| ())
    }

    pub async fn wait_process(
        &self,
        container_id: &str,
        exec_id: &str,
    ) -> Result<agent::WaitProcessResponse, AgentError> {
        let req = agent::WaitProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            ..Default::default()
        };
        call!(self, "WaitProcess", wait_process, &req, None)
    }

    /// Waits until container `container_id`'s OOM kills in the guest are more than `seen`, or
    /// until it has ended (`WaitOom`, a long poll).
    pub async fn wait_oom(
        &self,
        container_id: &str,
        seen: u64,
    ) -> Result<agent::WaitOomResponse, AgentError> {
        let req = agent::WaitOomRequest {
            container_id: container_id.into(),
            seen,
            ..Default::default()
        };
        call!(self, "WaitOom", wait_oom, &req, None)
    }

    pub async fn signal_process(
        &self,
        container_id: &str,
        exec_id: &str,
        signal: u32,
    ) -> Result<(), AgentError> {
        let req = agent::SignalProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            signal,
            ..Default::default()
        };
        call!(self, "SignalProcess", signal_process, &req, SHORT).map(|_| ())
    }

    pub async fn resize_terminal(
        &self,
        container_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), AgentError> {
        self.resize_process(container_id, "", rows, cols).await
    }

    /// Resizes the terminal of the init (`exec_id` empty) or of an exec'd process.
    pub async fn resize_process(
        &self,
        container_id: &str,
        exec_id: &str,
        rows: u32,
        cols: u32,
    ) -> Result<(), AgentError> {
        let req = agent::ResizeTerminalRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            rows,
            cols,
            ..Default::default()
        };
        call!(self, "ResizeTerminal", resize_terminal, &req, SHORT).map(|_| ())
    }

    /// Starts an extra process in a running container; returns its guest PID.
    pub async fn exec_process(
        &self,
        container_id: &str,
        exec_id: &str,
        process_json: Vec<u8>,
        stdio: agent::StdioPorts,
    ) -> Result<u32, AgentError> {
        let req = agent::ExecProcessRequest {
            container_id: container_id.into(),
            exec_id: exec_id.into(),
            process_json,
            stdio: Some(stdio).into(),
            ..Default::default()
        };
        call!(self, "ExecProcess", exec_process, &req, SHORT).map(|r| r.pid)
    }

    /// Gives the agent the guest's network description (see `network::NetworkPlan`). The answer
    /// carries nothing: the host reads nothing back about the guest's network.
    pub async fn configure_network(
        &self,
        req: &agent::ConfigureNetworkRequest,
    ) -> Result<(), AgentError> {
        call!(self, "ConfigureNetwork", configure_network, req, SHORT).map(|_| ())
    }

    /// The container's cgroup v2 statistics in the guest.
    pub async fn stats_container(
        &self,
        container_id: &str,
    ) -> Result<agent::StatsContainerResponse, AgentError> {
        let req = agent::StatsContainerRequest {
            container_id: container_id.into(),
            ..Default::default()
        };
        call!(self, "StatsContainer", stats_container, &req, SHORT)
    }

    /// Freezes (`true`) or thaws every process of the container (the guest's cgroup freezer).
    pub async fn freeze_container(
        &self,
        container_id: &str,
        frozen: bool,
    ) -> Result<(), AgentError> {
        if frozen {
            let req = agent::PauseContainerRequest {
                container_id: container_id.into(),
                ..Default::default()
            };
            call!(self, "PauseContainer", pause_container, &req, SHORT).map(|_| ())
        } else {
            let req = agent::ResumeContainerRequest {
                container_id: container_id.into(),
                ..Default::default()
            };
            call!(self, "ResumeContainer", resume_container, &req, SHORT).map(|_| ())
        }
    }

    /// Applies OCI `linux.resources` (JSON) to the container's cgroup in the guest.
    pub async fn update_container(
        &self,
        container_id: &str,
        resources_json: Vec<u8>,
    ) -> Result<(), AgentError> {
        let req = agent::UpdateContainerRequest {
            container_id: container_id.into(),
            resources_json,
            ..Default::default()
        };
        call!(self, "UpdateContainer", update_container, &req, SHORT).map(|_| ())
    }

    pub async fn shutdown(&self) -> Result<agent::ShutdownResponse, AgentError> {
        let req = agent::ShutdownRequest::default();
        call!(
            self,
            "Shutdown",
            shutdown,
            &req,
            Some(Duration::from_secs(10))
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::error_chain as chain;

    /// The boot timeout keeps why the last attempt failed: here, the vsock device never made
    /// its socket.
    #[tokio::test]
    async fn a_boot_timeout_names_the_last_attempts_failure() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.vsock");
        let Err(e) =
            AgentClient::connect(&uds, Duration::from_millis(100), None, None, || None).await
        else {
            panic!("connected with no agent");
        };
        let text = chain(&e);
        assert!(
            matches!(
                e,
                AgentError::BootTimeout {
                    last_attempt: Some(ConnectAttempt::NoSocket { .. }),
                    ..
                }
            ),
            "{text}"
        );
        assert!(text.contains("vm.vsock does not exist yet"), "{text}");
    }

    /// A device that accepts the connection but never answers CONNECT: the attempt is bounded
    /// and the timeout says so.
    #[tokio::test]
    async fn a_connect_that_gets_no_answer_is_the_cause_shown() {
        let dir = tempfile::tempdir().unwrap();
        let uds = dir.path().join("vm.vsock");
        let listener = tokio::net::UnixListener::bind(&uds).unwrap();
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((s, _)) = listener.accept().await {
                open.push(s);
            }
        });
        let Err(e) =
            AgentClient::connect(&uds, Duration::from_millis(500), None, None, || None).await
        else {
            panic!("connected with no agent");
        };
        let text = chain(&e);
        assert!(text.contains("CONNECT got no answer"), "{text}");
        held.abort();
    }
}
