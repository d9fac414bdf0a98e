//! The lifecycle commands' side: find a container's state directory, read its state, talk to
//! its sandbox process, and clean up when that process is gone.

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::net::unix::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::UnixStream;

use super::daemon::{CreateRequest, CreateResult};
use super::protocol::{self, ExecRequest, ProtocolError, Reply, Request};
use super::state::{self, OciState, ProcessRecord, StateFile, Status, TraceRoot};
use super::LifecycleError;
use crate::config::Config;
use crate::signals::{self, Signals};
use crate::stdio::{RawTerminal, StdioError, StdioListeners, StdioRelay};

/// First host port tried for an exec's stdio; `create` uses 20000 upwards for the init's.
pub const FIRST_EXEC_PORT: u32 = 30000;

/// The root span of a sandbox's trace that its sandbox process died without ending: what
/// `delete` (or a `create` whose sandbox process died) hands its caller to end in its place,
/// once, to where the sandbox's spans went (ADR 007).
#[derive(Debug, Clone)]
pub struct LostRoot {
    pub root: TraceRoot,
    /// The container's state as last recorded: its id, `shoji.accel`, the init's exit code.
    pub state: OciState,
    /// Why the sandbox process did not end it: the root's error message.
    pub why: String,
    /// When the death was noticed: the root's end.
    pub noticed: SystemTime,
}

/// Ends a [`LostRoot`]; the caller's telemetry, which this crate does not have.
pub type EndLostRoot<'a> = &'a mut dyn FnMut(&LostRoot);

/// The directory that holds one state directory per container: the sandbox root.
#[derive(Debug, Clone)]
pub struct StateRoot {
    root: PathBuf,
}

type Connection = (BufReader<OwnedReadHalf>, OwnedWriteHalf);

impl StateRoot {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn from_config(config: &Config) -> Self {
        Self::new(crate::sandbox::sandbox_root(config))
    }

    pub fn path(&self) -> &Path {
        &self.root
    }

    fn not_found(&self, id: &str) -> LifecycleError {
        LifecycleError::NotFound {
            id: id.to_string(),
            root: self.root.clone(),
        }
    }

    /// The state directory of `id` and what its `state.json` says.
    fn read(&self, id: &str) -> Result<(PathBuf, StateFile), LifecycleError> {
        state::validate_id(id)?;
        let dir = self.root.join(id);
        if !dir.join(state::STATE_FILE).is_file() {
            return Err(self.not_found(id));
        }
        let st = StateFile::read(&dir)?;
        Ok((dir, st))
    }

    /// Connects to the sandbox process of a container whose state says it lives.
    async fn connect(&self, id: &str) -> Result<Connection, LifecycleError> {
        let (dir, st) = self.read(id)?;
        if !st.sandbox_process.is_alive() {
            return Err(LifecycleError::Gone { id: id.into() });
        }
        if st.oci.status == Status::Creating {
            return Err(LifecycleError::Creating { id: id.into() });
        }
        let path = dir.join(state::CONTROL_SOCKET);
        let control = |source: ProtocolError| LifecycleError::Control {
            id: id.into(),
            path: path.clone(),
            source,
        };
        let stream = tokio::time::timeout(Duration::from_secs(5), UnixStream::connect(&path))
            .await
            .map_err(|_| LifecycleError::Timeout {
                id: id.into(),
                secs: 5,
            })?
            .map_err(|e| control(e.into()))?;
        let (rd, wr) = stream.into_split();
        Ok((BufReader::new(rd), wr))
    }

    /// One request, one reply, within `secs`.
    async fn call(&self, id: &str, req: &Request, secs: u64) -> Result<Reply, LifecycleError> {
        let (mut rd, mut wr) = self.connect(id).await?;
        let path = self.root.join(id).join(state::CONTROL_SOCKET);
        let control = |source: ProtocolError| LifecycleError::Control {
            id: id.into(),
            path: path.clone(),
            source,
        };
        let exchange = async {
            protocol::write(&mut wr, req).await?;
            protocol::read::<Reply, _>(&mut rd).await
        };
        let reply = tokio::time::timeout(Duration::from_secs(secs), exchange)
            .await
            .map_err(|_| LifecycleError::Timeout {
                id: id.into(),
                secs,
            })?
            .map_err(control)?;
        match reply {
            Some(Reply::Error { message }) => Err(LifecycleError::Refused { message }),
            Some(r) => Ok(r),
            None => Err(control(ProtocolError::Io(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the sandbox process closed the connection without answering",
            )))),
        }
    }

    /// The container's OCI state. Asks the sandbox process when it lives; otherwise the state
    /// file, with the container `stopped`.
    pub async fn state(&self, id: &str) -> Result<OciState, LifecycleError> {
        let (_, st) = self.read(id)?;
        if st.sandbox_process.is_alive() && st.oci.status != Status::Creating {
            if let Ok(Reply::State(s)) = self.call(id, &Request::State, 10).await {
                return Ok(s);
            }
            // It may have exited meanwhile: read again.
            let (_, st) = self.read(id)?;
            return Ok(st.current());
        }
        Ok(st.current())
    }

    /// Every container in the state root, by id.
    pub async fn list(&self) -> Vec<OciState> {
        crate::reclaim::reclaim_abandoned(&self.root);
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .into_iter()
            .flatten()
            .flatten()
            .filter(|e| e.path().join(state::STATE_FILE).is_file())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        ids.sort();
        let mut out = Vec::new();
        for id in ids {
            if let Ok(s) = self.state(&id).await {
                out.push(s);
            }
        }
        out
    }

    pub async fn start(&self, id: &str) -> Result<(), LifecycleError> {
        self.call(id, &Request::Start, 60).await.map(|_| ())
    }

    pub async fn kill(&self, id: &str, signal: i32) -> Result<(), LifecycleError> {
        self.call(id, &Request::Kill { signal }, 60)
            .await
            .map(|_| ())
    }

    /// Stops the VM and removes every process, socket and file of the container. A running
    /// container needs `force`. Works whatever state the sandbox process is in, dead included;
    /// if it died without ending the root span of its trace, `end_root` ends it in its place.
    pub async fn delete(
        &self,
        id: &str,
        force: bool,
        end_root: EndLostRoot<'_>,
    ) -> Result<(), LifecycleError> {
        let (dir, st) = self.read(id)?;
        // Read now, while a dead sandbox process may still be a zombie that tells how it died.
        let dead = (!st.sandbox_process.is_alive())
            .then(|| (st.sandbox_process_died(), SystemTime::now()));
        if dead.is_none() {
            match self.call(id, &Request::Delete { force }, 60).await {
                Ok(_) => {}
                Err(e @ LifecycleError::Refused { .. }) => return Err(e),
                Err(e) if !force => return Err(e),
                Err(e) => tracing::warn!(error = %e, "killing the sandbox process"),
            }
            if !wait_gone(&st.sandbox_process, Duration::from_secs(10)).await {
                st.sandbox_process.kill();
            }
        }
        // The helpers and QEMU die with the sandbox process (parent-death signal); make sure,
        // by record and by session.
        for p in std::iter::once(&st.sandbox_process).chain(&st.processes) {
            p.kill();
            wait_gone(p, Duration::from_secs(5)).await;
        }
        end_session(&st.sandbox_process, Duration::from_secs(5)).await;
        // A sandbox process that handled `delete` ended its root and removed the directory; one
        // stopped by a signal ended its root too (and said so with the marker). Otherwise it
        // died, or was killed above, before it could.
        let (why, noticed) = dead.unwrap_or_else(|| {
            (
                "the sandbox process did not finish delete and was killed (SIGKILL)".into(),
                SystemTime::now(),
            )
        });
        end_lost_root(&dir, why, noticed, end_root);
        crate::sandbox::remove_sandbox_dir(&dir).map_err(|source| LifecycleError::Io {
            what: "cannot remove",
            path: dir,
            source,
        })
    }

    /// Starts the sandbox process `exe args...` for `req` and waits until it says the container
    /// is created or why not. Nothing is left behind on failure; if the sandbox process died
    /// (or was killed) without ending the root span of its trace, `end_root` ends it.
    pub async fn create(
        &self,
        req: &CreateRequest,
        exe: &Path,
        args: &[OsString],
        timeout: Duration,
        end_root: EndLostRoot<'_>,
    ) -> Result<OciState, LifecycleError> {
        let id = req.id.as_str();
        state::validate_id(id)?;
        let dir = self.root.join(id);
        if !crate::sandbox::dir::socket_paths_fit(&dir) {
            return Err(LifecycleError::PathTooLong {
                id: id.into(),
                root: self.root.clone(),
            });
        }
        let io = |what, path: &Path| {
            let path = path.to_path_buf();
            move |source| LifecycleError::Io { what, path, source }
        };
        // Bad volumes are refused before a directory is made or a VM boots (a bundle's own
        // mounts are checked by the sandbox process, before it boots).
        crate::volumes::check(&req.process.mounts, std::slice::from_ref(&self.root))?;
        crate::private_fs::private_dir(&self.root)?;
        crate::reclaim::reclaim_abandoned(&self.root);
        match crate::private_fs::create_private_dir(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                return Err(LifecycleError::Exists {
                    id: id.into(),
                    root: self.root.clone(),
                })
            }
            Err(e) => return Err(io("cannot create", &dir)(e)),
        }
        let result = spawn_and_wait(&dir, req, exe, args, timeout, end_root).await;
        if result.is_err() {
            let _ = crate::sandbox::remove_sandbox_dir(&dir);
        }
        result
    }

    /// Runs `process` in the running container `id`, relaying stdio like `shoji run`; returns
    /// its status. SIGINT, SIGTERM, SIGHUP and SIGQUIT are forwarded to it.
    pub async fn exec(
        &self,
        id: &str,
        process: crate::spec::ProcessOptions,
        interactive: bool,
    ) -> Result<i32, LifecycleError> {
        let (dir, st) = self.read(id)?;
        if !st.sandbox_process.is_alive() {
            return Err(LifecycleError::Gone { id: id.into() });
        }
        let terminal = process.terminal;
        let uds = dir.join("vm.vsock");
        let (listeners, _sockets) = bind_exec_ports(&uds, interactive, terminal)?;
        let (ports, relay) = StdioRelay::host(listeners);
        let (mut rd, mut wr) = self.connect(id).await?;
        let path = dir.join(state::CONTROL_SOCKET);
        let control = |source: ProtocolError| LifecycleError::Control {
            id: id.into(),
            path: path.clone(),
            source,
        };
        let req = Request::Exec(Box::new(ExecRequest {
            exec_id: format!("exec-{}", crate::sandbox::new_sandbox_id()),
            process,
            stdin_port: ports.stdin_port,
            stdout_port: ports.stdout_port,
            stderr_port: ports.stderr_port,
            terminal_size: terminal.then(crate::stdio::terminal_size).flatten(),
        }));
        protocol::write(&mut wr, &req).await.map_err(control)?;
        let started = tokio::time::timeout(Duration::from_secs(60), protocol::read(&mut rd))
            .await
            .map_err(|_| LifecycleError::Timeout {
                id: id.into(),
                secs: 60,
            })?
            .map_err(control)?;
        match started {
            Some(Reply::Started { .. }) => {}
            Some(Reply::Error { message }) => return Err(LifecycleError::Refused { message }),
            _ => return Err(control(unexpected_end())),
        }
        let raw = terminal.then(RawTerminal::enable);
        let code = relay_until_exit(&mut rd, &mut wr, terminal)
            .await
            .map_err(control);
        relay.finish(Duration::from_secs(5)).await;
        drop(raw);
        code?.ok_or_else(|| control(unexpected_end()))
    }
}

fn unexpected_end() -> ProtocolError {
    ProtocolError::Io(std::io::Error::new(
        std::io::ErrorKind::UnexpectedEof,
        "the sandbox process closed the connection before the process exited",
    ))
}

/// Reads the exec's replies until `exited`, forwarding the signals this process receives and,
/// with a terminal, its size whenever it changes (SIGWINCH).
async fn relay_until_exit(
    rd: &mut BufReader<OwnedReadHalf>,
    wr: &mut OwnedWriteHalf,
    terminal: bool,
) -> Result<Option<i32>, ProtocolError> {
    let mut signals = Signals::new(signals::FORWARDED);
    let mut resized = Signals::new(if terminal { signals::RESIZED } else { &[] });
    loop {
        let signal = tokio::select! {
            msg = protocol::read::<Reply, _>(rd) => match msg? {
                Some(Reply::Exited { exit_code }) => return Ok(Some(exit_code)),
                Some(Reply::Error { message }) => {
                    return Err(ProtocolError::Io(std::io::Error::other(message)))
                }
                Some(_) => continue,
                None => return Ok(None),
            },
            signal = signals.recv() => signal,
            _ = resized.recv() => {
                if let Some((rows, cols)) = crate::stdio::terminal_size() {
                    protocol::write(wr, &Request::Resize { rows, cols }).await?;
                }
                continue;
            }
        };
        protocol::write(wr, &Request::Kill { signal }).await?;
    }
}

/// Removes an exec's stdio sockets when dropped.
#[derive(Debug)]
struct ExecSockets(Vec<PathBuf>);
impl Drop for ExecSockets {
    fn drop(&mut self) {
        for p in &self.0 {
            let _ = std::fs::remove_file(p);
        }
    }
}

/// Binds the first free triple of ports from [`FIRST_EXEC_PORT`]: concurrent execs (and
/// sockets a killed exec left) each keep theirs.
fn bind_exec_ports(
    uds: &Path,
    interactive: bool,
    terminal: bool,
) -> Result<(StdioListeners, ExecSockets), LifecycleError> {
    let mut port = FIRST_EXEC_PORT;
    loop {
        match StdioListeners::bind(uds, port, interactive, terminal) {
            Ok(l) => {
                let p = l.ports();
                let sockets = [p.stdin_port, p.stdout_port, p.stderr_port]
                    .into_iter()
                    .filter(|p| *p != 0)
                    .map(|p| PathBuf::from(format!("{}_{p}", uds.display())))
                    .collect();
                return Ok((l, ExecSockets(sockets)));
            }
            Err(StdioError::Listen { source, .. })
                if source.kind() == std::io::ErrorKind::AddrInUse && port < 60000 =>
            {
                port += 3;
            }
            Err(e) => return Err(crate::sandbox::BootError::from(e).into()),
        }
    }
}

/// SIGKILLs what is left of the session a sandbox process led until nothing is, bounded by
/// `limit`. Never touches a session whose id now belongs to another process.
async fn end_session(leader: &ProcessRecord, limit: Duration) {
    let deadline = Instant::now() + limit;
    loop {
        if leader.pid_reused() {
            return;
        }
        let left = state::session_members(leader.pid);
        if left.is_empty() || Instant::now() >= deadline {
            return;
        }
        for pid in left {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Hands the root span of the sandbox's trace in `dir` to `end_root` if it has one that nobody
/// has ended: a recorded root in `state.json`, and the end claimed ([`state::claim_root_end`]),
/// so that it is ended once even if `delete` runs twice or races a failing `create`.
fn end_lost_root(dir: &Path, why: String, noticed: SystemTime, end_root: EndLostRoot<'_>) {
    let Ok(st) = StateFile::read(dir) else {
        return;
    };
    let Some(root) = st.trace_root else {
        return;
    };
    if !state::claim_root_end(dir) {
        return;
    }
    end_root(&LostRoot {
        root,
        state: st.oci,
        why,
        noticed,
    });
}

/// Polls until `p` is gone; false if it is still there after `limit`.
async fn wait_gone(p: &ProcessRecord, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    while p.is_alive() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    true
}

async fn spawn_and_wait(
    dir: &Path,
    req: &CreateRequest,
    exe: &Path,
    args: &[OsString],
    timeout: Duration,
    end_root: EndLostRoot<'_>,
) -> Result<OciState, LifecycleError> {
    let id = req.id.as_str();
    let log_path = dir.join(state::SANDBOX_LOG);
    let log = crate::private_fs::private_file(&log_path).map_err(|source| LifecycleError::Io {
        what: "cannot create",
        path: log_path.clone(),
        source,
    })?;
    let mut cmd = tokio::process::Command::new(exe);
    cmd.args(args)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(log);
    // SAFETY: runs in the forked child before exec and only calls setsid, which is
    // async-signal-safe: the sandbox process gets its own session, so the caller's terminal
    // (its hangup, its Ctrl-C) does not reach it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().map_err(|source| LifecycleError::Spawn {
        exe: exe.to_path_buf(),
        source,
    })?;
    let failed = |message: String| LifecycleError::CreateFailed {
        id: id.into(),
        message,
    };
    let text = serde_json::to_vec(req).map_err(|e| failed(e.to_string()))?;
    let answer = async {
        use tokio::io::AsyncWriteExt;
        if let Some(mut stdin) = child.stdin.take() {
            stdin.write_all(&text).await?;
        }
        let mut line = String::new();
        if let Some(stdout) = child.stdout.take() {
            BufReader::new(stdout).read_line(&mut line).await?;
        }
        Ok::<_, std::io::Error>(line)
    };
    // The sandbox process is in its own session: a Ctrl-C reaches only this process, which
    // then stops the half-made container rather than leave it behind.
    let mut stop_signals = Signals::new(signals::STOPPING);
    let answer = tokio::select! {
        r = tokio::time::timeout(timeout, answer) => match r {
            Ok(Ok(line)) => Ok(line),
            Ok(Err(e)) => Err(e.to_string()),
            Err(_) => Err(format!("no answer within {} s", timeout.as_secs())),
        },
        signal = stop_signals.recv() => Err(format!("interrupted ({})", signal_name(signal))),
    };
    let result = match &answer {
        Ok(line) => serde_json::from_str::<CreateResult>(line.trim()).ok(),
        Err(_) => None,
    };
    match result {
        Some(CreateResult::Created(state)) => Ok(state),
        Some(CreateResult::Failed { message }) => {
            // It tears down and removes the directory itself; wait for that, bounded.
            if tokio::time::timeout(Duration::from_secs(20), child.wait())
                .await
                .is_err()
            {
                let _ = child.kill().await;
            }
            Err(failed(message))
        }
        None => {
            // Its children follow it (parent-death signal); wait until they have.
            let leader = child
                .id()
                .and_then(|pid| ProcessRecord::capture("sandbox", pid));
            // It closed its stdout without answering: it is exiting, or dead. It is our child,
            // so how it ended is ours to read.
            let status = match &answer {
                Ok(_) => tokio::time::timeout(Duration::from_secs(2), child.wait())
                    .await
                    .ok()
                    .and_then(Result::ok),
                Err(_) => None,
            };
            let noticed = SystemTime::now();
            let _ = child.kill().await;
            if let Some(leader) = leader {
                end_session(&leader, Duration::from_secs(5)).await;
            }
            let why = match answer {
                Err(why) => why,
                Ok(_) => match status {
                    Some(st) => {
                        use std::os::unix::process::ExitStatusExt;
                        format!(
                            "the sandbox process exited without answering ({})",
                            state::describe_wait_status(st.into_raw())
                        )
                    }
                    None => "the sandbox process exited without answering".into(),
                },
            };
            let root_why = match status {
                Some(_) => why.clone(),
                None => format!("{why}: shoji create killed the sandbox process"),
            };
            end_lost_root(dir, root_why, noticed, end_root);
            let log = crate::sandbox::console_tail(&log_path, 20);
            Err(failed(format!(
                "{why}\n--- last lines of {} ---\n{log}",
                log_path.display()
            )))
        }
    }
}

/// `SIGINT` for 2: how a signal is named in messages.
fn signal_name(signal: i32) -> String {
    nix::sys::signal::Signal::try_from(signal)
        .map(|s| s.as_str().to_string())
        .unwrap_or_else(|_| format!("signal {signal}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lost_root_is_handed_over_once_and_only_if_recorded() {
        let dir = tempfile::tempdir().unwrap();
        let mut ended = Vec::new();
        let mut end = |l: &LostRoot| ended.push((l.root.span_id.clone(), l.why.clone()));
        // No root recorded (tracing off): nothing to end.
        StateFile::example().write(dir.path()).unwrap();
        end_lost_root(dir.path(), "x".into(), SystemTime::now(), &mut end);
        let st = StateFile {
            trace_root: Some(TraceRoot::example()),
            ..StateFile::example()
        };
        st.write(dir.path()).unwrap();
        // `delete` run twice (or racing a failing `create`) ends it once.
        for _ in 0..2 {
            end_lost_root(dir.path(), "died".into(), SystemTime::now(), &mut end);
        }
        assert_eq!(
            ended,
            [("b7ad6b7169203331".to_string(), "died".to_string())]
        );
    }
}
