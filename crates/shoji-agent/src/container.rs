//! Containers in the guest: root filesystem from the sandbox's virtio-fs share, a cgroup with the OCI limits, the
//! init process started through `__container-init`, stdio on vsock streams to the host.

use std::io::{Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};

use nix::mount::{umount2, MntFlags};
use oci_spec::runtime::Spec;
use shoji_protocols::agent::StdioPorts;
use tokio::sync::watch;

use crate::init::{InitConfig, CONFIG_FD, PID_FD, START_FD};
use crate::podns::PodNamespaces;
use crate::reaper::{Reaper, Status};

#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    #[error("invalid OCI spec: {0}")]
    Spec(String),
    #[error("cannot mount the container's root filesystem")]
    Rootfs(#[from] crate::share::ShareError),
    #[error("cannot connect stdio to host port {port}: {err}")]
    Stdio { port: u32, err: std::io::Error },
    #[error("cannot start the container init: {0}")]
    Spawn(String),
    #[error("container set-up failed: {0}")]
    Setup(String),
    #[error(transparent)]
    Security(#[from] crate::security::SecurityError),
    #[error("cgroup {path}: {err}")]
    Cgroup { path: PathBuf, err: std::io::Error },
    #[error("applying the container's linux.resources")]
    Resources(#[from] crate::cgroup::CgroupError),
    #[error(transparent)]
    Mounts(#[from] crate::mounts::MountError),
    #[error("container file {path:?}: {reason}")]
    File { path: String, reason: String },
    #[error(transparent)]
    PodNamespaces(#[from] crate::podns::PodNamespaceError),
}

/// At most this many files, each at most this big, per container (the host sends three small
/// ones today: `/etc/hosts`, `/etc/hostname`, `/etc/resolv.conf`).
const MAX_FILES: usize = 16;
const MAX_FILE_BYTES: usize = 1 << 20;

/// Writes each `(path in the container, content)` into the agent's tmpfs under `dir` and returns
/// `(where it was written, path in the container)` for the init to bind-mount.
fn stage_files(
    dir: &std::path::Path,
    files: &[(String, Vec<u8>)],
) -> Result<Vec<(PathBuf, String)>, ContainerError> {
    let bad = |path: &str, reason: &str| ContainerError::File {
        path: path.into(),
        reason: reason.into(),
    };
    if files.len() > MAX_FILES {
        return Err(bad("", &format!("more than {MAX_FILES} files")));
    }
    let mut out = Vec::new();
    for (i, (path, content)) in files.iter().enumerate() {
        let p = std::path::Path::new(path);
        let normal = p
            .components()
            .skip(1)
            .all(|c| matches!(c, std::path::Component::Normal(_)));
        // `components()` drops `.` and repeated slashes, so also insist that the path is
        // already in the form they give back (`/etc/./hosts` and `/etc//hosts` are refused).
        let canonical = p.components().collect::<std::path::PathBuf>();
        if !p.is_absolute()
            || !normal
            || p.components().count() < 2
            || canonical.as_os_str() != p.as_os_str()
        {
            return Err(bad(path, "not an absolute path of plain components"));
        }
        if content.len() > MAX_FILE_BYTES {
            return Err(bad(path, "larger than 1 MiB"));
        }
        std::fs::create_dir_all(dir).map_err(|e| bad(path, &e.to_string()))?;
        let staged = dir.join(i.to_string());
        std::fs::write(&staged, content).map_err(|e| bad(path, &e.to_string()))?;
        out.push((staged, path.clone()));
    }
    Ok(out)
}

/// One process of a container.
pub struct Process {
    pub pid: i32,
    pub exit: watch::Receiver<Option<Status>>,
    start: Option<OwnedFd>,
    /// Relay threads of a terminal; joined before the exit status is reported.
    io_done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Process {
    pub fn release(&mut self) -> Result<(), std::io::Error> {
        if let Some(fd) = self.start.take() {
            let mut f = std::fs::File::from(fd);
            f.write_all(b"s")?;
        }
        Ok(())
    }

    /// What a waiter needs, taken without holding any lock across the wait.
    pub fn waiter(&mut self) -> Waiter {
        Waiter {
            exit: self.exit.clone(),
            io_done: self.io_done.take(),
        }
    }
}

pub struct Waiter {
    exit: watch::Receiver<Option<Status>>,
    io_done: Option<std::sync::mpsc::Receiver<()>>,
}

impl Waiter {
    /// Waits for exit and for the terminal relay to drain.
    pub async fn wait(mut self) -> Status {
        let status = match self.exit.wait_for(|s| s.is_some()).await {
            Ok(s) => s.unwrap_or((255, 0)),
            Err(_) => (255, 0),
        };
        if let Some(done) = self.io_done.take() {
            let _ = tokio::task::spawn_blocking(move || {
                done.recv_timeout(std::time::Duration::from_secs(5))
            })
            .await;
        }
        status
    }
}

pub struct Container {
    pub init: Process,
    /// Processes started by ExecProcess, by exec id.
    pub execs: std::collections::HashMap<String, Process>,
    rootfs: PathBuf,
    cgroup: PathBuf,
    /// `linux.seccomp` as BPF ([`crate::security::seccomp_program`]), loaded by exec'd processes
    /// too.
    seccomp: Option<Vec<u8>>,
}

fn vsock_connect(port: u32) -> Result<OwnedFd, ContainerError> {
    let s = vsock::VsockStream::connect_with_cid_port(shoji_protocols::HOST_CID, port)
        .map_err(|err| ContainerError::Stdio { port, err })?;
    // SAFETY: into_raw_fd hands us sole ownership of the socket fd.
    Ok(unsafe { OwnedFd::from_raw_fd(s.into_raw_fd()) })
}

fn dev_null() -> Result<OwnedFd, ContainerError> {
    std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/null")
        .map(OwnedFd::from)
        .map_err(|err| ContainerError::Stdio { port: 0, err })
}

/// Copies until EOF in a thread (pty master <-> vsock), signalling `done` at the end.
fn relay(
    mut from: std::fs::File,
    mut to: std::fs::File,
    done: Option<std::sync::mpsc::Sender<()>>,
) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 8192];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        drop(to);
        if let Some(d) = done {
            let _ = d.send(());
        }
    });
}

/// Moves `fd` above the range 0..=5 that the child's dup2s write to.
fn high(fd: OwnedFd) -> Result<OwnedFd, ContainerError> {
    let n = nix::fcntl::fcntl(&fd, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(10))
        .map_err(|e| ContainerError::Spawn(format!("dup: {e}")))?;
    // SAFETY: fcntl returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(n) })
}

/// Spawns a process that will exec `cfg` once released.
pub fn spawn_init(
    cfg: &InitConfig,
    ports: &StdioPorts,
    reaper: &Reaper,
) -> Result<Process, ContainerError> {
    let spawn_err = |e: String| ContainerError::Spawn(e);
    let (stdin, stdout, stderr, io_done): (OwnedFd, OwnedFd, OwnedFd, _) = if cfg.terminal {
        let pty = nix::pty::openpty(None, None).map_err(|e| spawn_err(format!("openpty: {e}")))?;
        let (done_tx, done_rx) = std::sync::mpsc::channel();
        let master = std::fs::File::from(pty.master);
        if ports.stdin_port != 0 {
            let input = std::fs::File::from(vsock_connect(ports.stdin_port)?);
            let m = master.try_clone().map_err(|e| spawn_err(e.to_string()))?;
            relay(input, m, None);
        }
        if ports.stdout_port != 0 {
            let out = std::fs::File::from(vsock_connect(ports.stdout_port)?);
            relay(master, out, Some(done_tx));
        }
        let slave = pty.slave;
        let s2 = slave.try_clone().map_err(|e| spawn_err(e.to_string()))?;
        let s3 = slave.try_clone().map_err(|e| spawn_err(e.to_string()))?;
        (slave, s2, s3, Some(done_rx))
    } else {
        let port = |p: u32| if p == 0 { dev_null() } else { vsock_connect(p) };
        (
            port(ports.stdin_port)?,
            port(ports.stdout_port)?,
            port(ports.stderr_port)?,
            None,
        )
    };

    let (cfg_r, cfg_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(format!("pipe: {e}")))?;
    let (start_r, start_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(format!("pipe: {e}")))?;
    let (pid_r, pid_w) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(format!("pipe: {e}")))?;
    let (cfg_r, start_r, pid_w) = (high(cfg_r)?, high(start_r)?, high(pid_w)?);
    let fds: [(RawFd, i32); 3] = [
        (cfg_r.as_raw_fd(), CONFIG_FD),
        (start_r.as_raw_fd(), START_FD),
        (pid_w.as_raw_fd(), PID_FD),
    ];
    let mut cmd = Command::new("/proc/self/exe");
    let new_namespaces = cfg.enter_pid.is_none();
    // A pod's container joins the pod's UTS and IPC namespaces, and maybe its PID namespace, in
    // `__container-init`.
    let mut flags = libc::CLONE_NEWNS;
    if cfg.join_namespaces.is_empty() {
        flags |= libc::CLONE_NEWUTS | libc::CLONE_NEWIPC;
    }
    if cfg.join_pid_namespace.is_none() {
        flags |= libc::CLONE_NEWPID;
    }
    cmd.arg("__container-init")
        .stdin(Stdio::from(stdin))
        .stdout(Stdio::from(stdout))
        .stderr(Stdio::from(stderr));
    // SAFETY: runs in the forked child before exec: only dup2 and unshare, both
    // async-signal-safe syscalls, on fds this closure captured by value.
    unsafe {
        cmd.pre_exec(move || {
            for (from, to) in fds {
                if libc::dup2(from, to) < 0 {
                    return Err(std::io::Error::last_os_error());
                }
            }
            if new_namespaces && libc::unshare(flags) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let child = tracing::info_span!("init.exec", source = "agent", subsystem = "container")
        .in_scope(|| cmd.spawn())
        .map_err(|e| spawn_err(format!("spawn: {e}")))?;
    // The reaper owns all waiting; forget the handle without waiting.
    drop(child);
    drop((cfg_r, start_r, pid_w));

    let _setup =
        tracing::info_span!("init.setup", source = "agent", subsystem = "container").entered();
    let mut w = std::fs::File::from(cfg_w);
    w.write_all(&serde_json::to_vec(cfg).map_err(|e| spawn_err(e.to_string()))?)
        .map_err(|e| spawn_err(format!("writing init config: {e}")))?;
    drop(w);
    // The report: `pid N` and `ok`/`error MESSAGE` (see init.rs), bounded: the container init
    // writes it before any of the container's code runs.
    let mut text = String::new();
    std::fs::File::from(pid_r)
        .take(64 * 1024)
        .read_to_string(&mut text)
        .map_err(|e| spawn_err(format!("reading the init's report: {e}")))?;
    let mut pid = None;
    let mut ok = false;
    for line in text.lines() {
        if let Some(n) = line.strip_prefix("pid ") {
            pid = n.trim().parse::<i32>().ok();
        } else if let Some(msg) = line.strip_prefix("error ") {
            return Err(ContainerError::Setup(msg.to_string()));
        } else if line == "ok" {
            ok = true;
        }
    }
    drop(_setup);
    let (Some(pid), true) = (pid, ok) else {
        return Err(spawn_err(format!(
            "the container init failed before reporting its set-up (report {:?}; see stderr)",
            text.trim()
        )));
    };
    let (tx, rx) = watch::channel(None);
    let waiter = reaper.wait(pid);
    tokio::spawn(async move {
        if let Ok(s) = waiter.await {
            let _ = tx.send(Some(s));
        }
    });
    Ok(Process {
        pid,
        exit: rx,
        start: Some(start_w),
        io_done,
    })
}

/// Checking the spec's security fields; on create, checking the seccomp program the host
/// compiled, or compiling the profile when the request carries none (the parent span names the
/// container or exec).
fn security_span() -> tracing::Span {
    tracing::info_span!(
        "security.check",
        source = "agent",
        subsystem = "container",
        seccomp.instructions = tracing::field::Empty,
        seccomp.compiled_by = tracing::field::Empty
    )
}

impl Container {
    /// Mounts the rootfs, makes the cgroup, spawns the (held) init process; with `pod`, the
    /// init joins the pod's UTS and IPC namespaces (made with this spec's hostname if they are
    /// not yet); with `pid_namespace` (an nsfs file), the PID namespace it names. `seccomp` is
    /// the host's compile of the spec's `linux.seccomp` (empty: compiled here).
    // The request's parts, one argument each, as CreateContainer carries them.
    #[allow(clippy::too_many_arguments)]
    pub fn create(
        id: &str,
        spec: &Spec,
        seccomp: &[u8],
        rootfs_tag: &str,
        rootfs_path: &str,
        files: &[(String, Vec<u8>)],
        ports: &StdioPorts,
        reaper: &Reaper,
        pod: Option<&std::sync::Mutex<PodNamespaces>>,
        pid_namespace: Option<PathBuf>,
    ) -> Result<Self, ContainerError> {
        if id.is_empty() || id.contains('/') || id.starts_with('.') {
            return Err(ContainerError::Spec(format!("bad container id {id:?}")));
        }
        let rootfs = PathBuf::from(format!("/run/shoji/containers/{id}/rootfs"));
        let _ = std::fs::create_dir_all(&rootfs);
        let files = stage_files(
            std::path::Path::new(&format!("/run/shoji/containers/{id}/files")),
            files,
        )?;
        let process = spec
            .process()
            .as_ref()
            .ok_or_else(|| ContainerError::Spec("no process".into()))?;
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(ContainerError::Spec("process.args is empty".into()));
        }
        let (seccomp, security, root_security) = {
            let span = security_span();
            let _s = span.enter();
            let profile = spec.linux().as_ref().and_then(|l| l.seccomp().as_ref());
            let seccomp_from_host = !seccomp.is_empty();
            let seccomp = crate::security::seccomp_program(profile, seccomp)?;
            if let Some(bpf) = &seccomp {
                span.record(
                    "seccomp.instructions",
                    bpf.len() / shoji_seccomp::INSTRUCTION_BYTES,
                );
                let by = if seccomp_from_host { "host" } else { "agent" };
                span.record("seccomp.compiled_by", by);
            }
            let security = crate::security::process_plan(process, seccomp.as_deref())?;
            (seccomp, security, crate::security::root_plan(spec)?)
        };
        // Bind sources are relative to the container's directory of the share, the parent of
        // its rootfs there (`<id>/rootfs`; rootless, the share is the rootfs and has none).
        let share = crate::share::mount_share(rootfs_tag)?;
        let container_dir = std::path::Path::new(rootfs_path)
            .parent()
            .map(|p| share.join(p))
            .unwrap_or(share);
        let (mounts, shm_options) = tracing::info_span!(
            "mounts.plan",
            source = "agent",
            subsystem = "storage",
            container_id = id
        )
        .in_scope(|| crate::mounts::plan(spec, &container_dir))?;
        let hostname = spec.hostname().clone().unwrap_or_else(|| "shoji".into());
        let (join_namespaces, shm_bind) = match pod {
            Some(pod) => {
                let mut pod = pod.lock().unwrap_or_else(|p| p.into_inner());
                let namespaces = pod.ensure(&hostname)?;
                (namespaces, Some(pod.ensure_shm(shm_options.as_deref())?))
            }
            None => (Vec::new(), None),
        };
        let cfg = InitConfig {
            user: process.user().username().clone(),
            security,
            root_security,
            rootfs: rootfs.clone(),
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().display().to_string(),
            uid: process.user().uid(),
            gid: process.user().gid(),
            additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
            hostname,
            terminal: process.terminal().unwrap_or(false),
            rlimits: crate::init::rlimits_of(process),
            enter_pid: None,
            join_namespaces,
            join_pid_namespace: pid_namespace,
            files,
            mounts,
            shm_options,
            shm_bind,
        };
        {
            let _s = tracing::info_span!(
                "rootfs.mount",
                source = "agent",
                subsystem = "storage",
                container_id = id
            )
            .entered();
            crate::share::mount_rootfs(rootfs_tag, rootfs_path, &rootfs)?;
        }
        let cgroup = PathBuf::from(format!("/sys/fs/cgroup/{id}"));
        {
            let _s = tracing::info_span!(
                "cgroup.create",
                source = "agent",
                subsystem = "container",
                container_id = id
            )
            .entered();
            std::fs::create_dir_all(&cgroup).map_err(|err| ContainerError::Cgroup {
                path: cgroup.clone(),
                err,
            })?;
            if let Some(res) = spec.linux().as_ref().and_then(|l| l.resources().as_ref()) {
                if let Err(e) = crate::cgroup::apply(&cgroup, res) {
                    let _ = std::fs::remove_dir(&cgroup);
                    return Err(e.into());
                }
            }
        }
        let init = {
            let _s = tracing::info_span!(
                "process.spawn",
                source = "agent",
                subsystem = "container",
                container_id = id
            )
            .entered();
            spawn_init(&cfg, ports, reaper)
        };
        let init = match init {
            Ok(p) => p,
            Err(e) => {
                // Nothing of this container may stay: its init has exited.
                let _ = umount2(&rootfs, MntFlags::MNT_DETACH);
                let _ = std::fs::remove_dir(&cgroup);
                return Err(e);
            }
        };
        write_cgroup(&cgroup, "cgroup.procs", &init.pid.to_string())?;
        Ok(Self {
            init,
            execs: std::collections::HashMap::new(),
            rootfs,
            cgroup,
            seccomp,
        })
    }

    /// The container's cgroup directory (every process of it is in there).
    pub fn cgroup(&self) -> &std::path::Path {
        &self.cgroup
    }

    /// The init process (`exec_id` empty) or an exec'd one.
    pub fn process_mut(&mut self, exec_id: &str) -> Option<&mut Process> {
        if exec_id.is_empty() {
            Some(&mut self.init)
        } else {
            self.execs.get_mut(exec_id)
        }
    }

    /// Starts `process` inside this container's namespaces, root and cgroup; returns its PID.
    pub fn exec(
        &mut self,
        exec_id: &str,
        process: &oci_spec::runtime::Process,
        ports: &StdioPorts,
        reaper: &Reaper,
    ) -> Result<i32, ContainerError> {
        if exec_id.is_empty() || self.execs.contains_key(exec_id) {
            return Err(ContainerError::Spec(format!(
                "bad or duplicate exec id {exec_id:?}"
            )));
        }
        let args = process.args().clone().unwrap_or_default();
        if args.is_empty() {
            return Err(ContainerError::Spec("process.args is empty".into()));
        }
        let security = {
            let _s = security_span().entered();
            crate::security::process_plan(process, self.seccomp.as_deref())?
        };
        let cfg = InitConfig {
            rootfs: self.rootfs.clone(),
            args,
            env: process.env().clone().unwrap_or_default(),
            cwd: process.cwd().display().to_string(),
            uid: process.user().uid(),
            gid: process.user().gid(),
            additional_gids: process.user().additional_gids().clone().unwrap_or_default(),
            hostname: String::new(),
            terminal: process.terminal().unwrap_or(false),
            rlimits: crate::init::rlimits_of(process),
            enter_pid: Some(self.init.pid),
            join_namespaces: Vec::new(),
            join_pid_namespace: None,
            user: process.user().username().clone(),
            security,
            root_security: Default::default(),
            files: Vec::new(),
            mounts: Vec::new(),
            shm_options: None,
            shm_bind: None,
        };
        let mut p = spawn_init(&cfg, ports, reaper)?;
        write_cgroup(&self.cgroup, "cgroup.procs", &p.pid.to_string())?;
        p.release()
            .map_err(|e| ContainerError::Spawn(format!("starting the exec process: {e}")))?;
        let pid = p.pid;
        self.execs.insert(exec_id.into(), p);
        Ok(pid)
    }

    /// Kills what is left and undoes the mounts and the cgroup.
    pub fn remove(&mut self) {
        if self.init.exit.borrow().is_none() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.init.pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = umount2(&self.rootfs, MntFlags::MNT_DETACH);
        for _ in 0..50 {
            if std::fs::remove_dir(&self.cgroup).is_ok() {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
    }
}

fn write_cgroup(dir: &std::path::Path, file: &str, value: &str) -> Result<(), ContainerError> {
    std::fs::write(dir.join(file), value).map_err(|err| ContainerError::Cgroup {
        path: dir.join(file),
        err,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn container_files_must_be_plain_absolute_paths() {
        let dir = tempfile::tempdir().unwrap();
        let ok = stage_files(dir.path(), &[("/etc/hosts".into(), b"x".to_vec())]).unwrap();
        assert_eq!(std::fs::read(&ok[0].0).unwrap(), b"x");
        assert_eq!(ok[0].1, "/etc/hosts");
        for bad in ["etc/hosts", "/etc/../hosts", "/", "/etc/./hosts", ""] {
            let r = stage_files(dir.path(), &[(bad.into(), Vec::new())]);
            assert!(r.is_err(), "{bad:?} accepted");
        }
        let big = vec![0u8; MAX_FILE_BYTES + 1];
        assert!(stage_files(dir.path(), &[("/etc/hosts".into(), big)]).is_err());
    }
}
