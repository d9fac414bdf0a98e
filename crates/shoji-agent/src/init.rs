//! The container's init, run as `shoji-agent __container-init` in fresh mount, UTS, IPC (a pod's
//! container: the pod's, `crate::podns`) and (for its children) PID namespaces (or, sharing the
//! pod's, the sandbox container's PID namespace, joined for its children). It is a freshly exec'd, single-threaded process, so it may
//! fork and then use ordinary Rust in the child; the agent itself is multi-threaded and never
//! forks anything but an immediate exec.
//!
//! File descriptors on entry: 0-2 the process's stdio, 3 the [`InitConfig`] as JSON, 4 the start
//! pipe (one byte = go), 5 the report pipe: the line `pid N` (the container init's PID, from
//! this process) and then `ok` or `error MESSAGE` (from the container init, once its root is set
//! up and its user resolved), in either order, so that set-up errors fail the RPC.

use std::io::{Read, Write};
use std::os::fd::FromRawFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::unistd::{fork, ForkResult, Gid, Uid};
use serde::{Deserialize, Serialize};

use crate::security::{ProcessSecurity, RootSecurity};

/// A step of the container init that failed. The init reports it to the agent over the report
/// pipe as one line of text: its chain ([`crate::error_chain`]), formatted where it is reported.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error("reading the init config")]
    ReadConfig(#[source] std::io::Error),
    #[error("parsing the init config")]
    ParseConfig(#[source] serde_json::Error),
    #[error("opening the pod namespace {path}")]
    OpenPodNamespace {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("joining the pod namespace {path}")]
    JoinPodNamespace {
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("opening the root of pid {pid}")]
    OpenRoot {
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("opening the {ns} namespace of pid {pid}")]
    OpenNamespace {
        ns: &'static str,
        pid: i32,
        #[source]
        source: std::io::Error,
    },
    #[error("joining the {ns} namespace")]
    JoinNamespace {
        ns: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("unknown rlimit {0}")]
    UnknownRlimit(String),
    #[error("setrlimit {name}")]
    Rlimit {
        name: String,
        #[source]
        source: nix::Error,
    },
    /// A mount or directory change of the root's set-up.
    #[error("{step}")]
    Root {
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("opening {path}")]
    OpenFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("creating {dst}")]
    CreateFile {
        dst: String,
        #[source]
        source: std::io::Error,
    },
    #[error("bind-mounting over {dst}")]
    BindFile {
        dst: String,
        #[source]
        source: nix::Error,
    },
    // The mount error names the mount's destination and step already.
    #[error(transparent)]
    Mount(#[from] crate::mounts::MountError),
    #[error("resolving user {user:?}")]
    User {
        user: String,
        #[source]
        source: crate::user::UserError,
    },
    // The security error names the field already.
    #[error(transparent)]
    SysctlName(#[from] crate::security::SecurityError),
    #[error("linux.sysctl[{name:?}]: writing {value:?}")]
    Sysctl {
        name: String,
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("linux.readonlyPaths {path:?}")]
    ReadonlyPath {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("linux.maskedPaths {path:?}")]
    MaskedPath {
        path: String,
        #[source]
        source: nix::Error,
    },
    #[error("root.readonly: remounting / read-only")]
    ReadonlyRoot(#[source] nix::Error),
}

pub const CONFIG_FD: i32 = 3;
pub const START_FD: i32 = 4;
pub const PID_FD: i32 = 5;

#[derive(Debug, Serialize, Deserialize)]
pub struct InitConfig {
    pub rootfs: PathBuf,
    pub args: Vec<String>,
    pub env: Vec<String>,
    pub cwd: String,
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
    pub hostname: String,
    pub terminal: bool,
    /// For ExecProcess: join the namespaces and root of this (agent-namespace) PID instead of
    /// making new ones.
    #[serde(default)]
    pub enter_pid: Option<i32>,
    /// For a pod's container: the pod's namespaces to join (nsfs files, `crate::podns`) instead
    /// of making its own UTS and IPC namespaces; its hostname is the pod's, not set again.
    #[serde(default)]
    pub join_namespaces: Vec<PathBuf>,
    /// For a container sharing its pod's PID namespace: that namespace's nsfs file (the sandbox
    /// container's init's), joined for the container init (a child) instead of a new one.
    #[serde(default)]
    pub join_pid_namespace: Option<PathBuf>,
    /// OCI `process.rlimits`: (type name such as `RLIMIT_NOFILE`, soft, hard).
    #[serde(default)]
    pub rlimits: Vec<(String, u64, u64)>,
    /// A `--user` string (`process.user.username`) to resolve inside the container's root; it
    /// replaces `uid`, `gid` and adds the user's groups to `additional_gids`.
    #[serde(default)]
    pub user: Option<String>,
    #[serde(default)]
    pub security: ProcessSecurity,
    /// Applied when the root is set up (the init only; an exec finds it done).
    #[serde(default)]
    pub root_security: RootSecurity,
    /// Files staged in the agent's tmpfs, bind-mounted over these paths inside the container's
    /// root once the process is chrooted into it (so the paths, symlinks included, resolve in
    /// that root).
    #[serde(default)]
    pub files: Vec<(PathBuf, String)>,
    /// The spec's mounts ([`crate::mounts::plan`]), made in order after `files`.
    #[serde(default)]
    pub mounts: Vec<crate::mounts::GuestMount>,
    /// `/dev/shm`'s tmpfs options from the spec (`size=...,mode=...`), else `mode=1777`.
    #[serde(default)]
    pub shm_options: Option<String>,
    /// A pod's container: `/dev/shm` is a bind of the pod's one tmpfs (at this path in the
    /// agent's namespace) instead of a tmpfs of its own.
    #[serde(default)]
    pub shm_bind: Option<PathBuf>,
}

/// Converts OCI rlimits into the names and values [`InitConfig`] carries.
pub fn rlimits_of(process: &oci_spec::runtime::Process) -> Vec<(String, u64, u64)> {
    process
        .rlimits()
        .as_ref()
        .map(|v| {
            v.iter()
                .filter_map(|r| {
                    let name = serde_json::to_value(r.typ()).ok()?.as_str()?.to_string();
                    Some((name, r.soft(), r.hard()))
                })
                .collect()
        })
        .unwrap_or_default()
}

fn set_rlimits(limits: &[(String, u64, u64)]) -> Result<(), InitError> {
    use nix::sys::resource::{setrlimit, Resource};
    for (name, soft, hard) in limits {
        let res = match name.as_str() {
            "RLIMIT_CPU" => Resource::RLIMIT_CPU,
            "RLIMIT_FSIZE" => Resource::RLIMIT_FSIZE,
            "RLIMIT_DATA" => Resource::RLIMIT_DATA,
            "RLIMIT_STACK" => Resource::RLIMIT_STACK,
            "RLIMIT_CORE" => Resource::RLIMIT_CORE,
            "RLIMIT_RSS" => Resource::RLIMIT_RSS,
            "RLIMIT_NPROC" => Resource::RLIMIT_NPROC,
            "RLIMIT_NOFILE" => Resource::RLIMIT_NOFILE,
            "RLIMIT_MEMLOCK" => Resource::RLIMIT_MEMLOCK,
            "RLIMIT_AS" => Resource::RLIMIT_AS,
            "RLIMIT_LOCKS" => Resource::RLIMIT_LOCKS,
            "RLIMIT_SIGPENDING" => Resource::RLIMIT_SIGPENDING,
            "RLIMIT_MSGQUEUE" => Resource::RLIMIT_MSGQUEUE,
            "RLIMIT_NICE" => Resource::RLIMIT_NICE,
            "RLIMIT_RTPRIO" => Resource::RLIMIT_RTPRIO,
            "RLIMIT_RTTIME" => Resource::RLIMIT_RTTIME,
            other => return Err(InitError::UnknownRlimit(other.into())),
        };
        setrlimit(res, *soft, *hard).map_err(|source| InitError::Rlimit {
            name: name.clone(),
            source,
        })?;
    }
    Ok(())
}

/// Entry point of `__container-init`. Never returns.
pub fn stage1() -> ! {
    // SAFETY: fds 3, 4 and 5 were set up by the agent for this process and are owned by nobody
    // else in it.
    let (mut cfg_file, mut pid_file) = unsafe {
        (
            std::fs::File::from_raw_fd(CONFIG_FD),
            std::fs::File::from_raw_fd(PID_FD),
        )
    };
    let mut text = String::new();
    let cfg: InitConfig = match cfg_file
        .read_to_string(&mut text)
        .map_err(InitError::ReadConfig)
        .and_then(|_| serde_json::from_str(&text).map_err(InitError::ParseConfig))
    {
        Ok(c) => c,
        Err(e) => report_failure(&mut pid_file, &crate::error_chain(&e)),
    };
    drop(cfg_file);
    // setns on a PID namespace applies to the children only: the container init forked below.
    for ns in cfg.join_namespaces.iter().chain(&cfg.join_pid_namespace) {
        if let Err(e) = join(ns) {
            report_failure(&mut pid_file, &crate::error_chain(&e));
        }
    }
    let entered_root = match cfg.enter_pid.map(enter) {
        Some(Ok(root)) => Some(root),
        Some(Err(e)) => report_failure(
            &mut pid_file,
            &format!("entering the container: {}", crate::error_chain(&e)),
        ),
        None => None,
    };
    // SAFETY: this process is single-threaded (freshly exec'd), so the child may run any code.
    match unsafe { fork() } {
        Ok(ForkResult::Parent { child }) => {
            report_line(&mut pid_file, &format!("pid {}", child.as_raw()));
            std::process::exit(0);
        }
        Ok(ForkResult::Child) => container_init(cfg, entered_root, pid_file),
        Err(e) => report_failure(&mut pid_file, &format!("fork: {e}")),
    }
}

fn fail(code: i32, msg: &str) -> ! {
    eprintln!("shoji: {msg}");
    std::process::exit(code)
}

/// Writes one line of the report in a single `write` of at most `PIPE_BUF` bytes, so that it
/// stays whole: this process and its parent (`pid N`) write to the same pipe at the same time,
/// and `writeln!` would issue one `write` per piece, interleaving them (`error pid 97`).
fn report_line(report: &mut std::fs::File, line: &str) {
    let mut end = line.len().min(libc::PIPE_BUF - 1);
    while !line.is_char_boundary(end) {
        end -= 1;
    }
    let mut bytes = line.as_bytes()[..end].to_vec();
    bytes.push(b'\n');
    let _ = report.write_all(&bytes);
}

/// Reports a set-up failure to the agent (which fails the RPC with it) and exits.
fn report_failure(report: &mut std::fs::File, msg: &str) -> ! {
    report_line(report, &format!("error {}", msg.replace('\n', " ")));
    std::process::exit(1)
}

/// Joins the namespace whose nsfs file is `path` (one of the pod's).
fn join(path: &Path) -> Result<(), InitError> {
    let f = std::fs::File::open(path).map_err(|source| InitError::OpenPodNamespace {
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&f, nix::sched::CloneFlags::empty()).map_err(|source| {
        InitError::JoinPodNamespace {
            path: path.to_path_buf(),
            source,
        }
    })
}

/// Joins the IPC, UTS, cgroup, PID (for children) and mount namespaces of `pid`; returns its
/// root directory, opened before the mount namespace changed (as nsenter does).
fn enter(pid: i32) -> Result<std::fs::File, InitError> {
    let root = std::fs::File::open(format!("/proc/{pid}/root"))
        .map_err(|source| InitError::OpenRoot { pid, source })?;
    let mut fds = Vec::new();
    for ns in ["ipc", "uts", "cgroup", "pid", "mnt"] {
        let f = std::fs::File::open(format!("/proc/{pid}/ns/{ns}"))
            .map_err(|source| InitError::OpenNamespace { ns, pid, source })?;
        fds.push((ns, f));
    }
    for (ns, f) in &fds {
        nix::sched::setns(f, nix::sched::CloneFlags::empty())
            .map_err(|source| InitError::JoinNamespace { ns, source })?;
    }
    Ok(root)
}

fn container_init(
    mut cfg: InitConfig,
    entered_root: Option<std::fs::File>,
    mut report: std::fs::File,
) -> ! {
    let exec = entered_root.is_some();
    if let Some(root) = entered_root {
        if let Err(e) = nix::unistd::fchdir(&root)
            .and_then(|_| nix::unistd::chroot("."))
            .and_then(|_| nix::unistd::chdir("/"))
        {
            report_failure(&mut report, &format!("entering the container root: {e}"));
        }
    } else if let Err(e) = setup_root(&cfg).and_then(|_| apply_root_security(&cfg.root_security)) {
        report_failure(
            &mut report,
            &format!("setting up the container root: {}", crate::error_chain(&e)),
        );
    }
    if let Err(e) = resolve_user(&mut cfg) {
        report_failure(&mut report, &crate::error_chain(&e));
    }
    report_line(&mut report, "ok");
    drop(report);
    // Wait for StartContainer.
    // SAFETY: fd 4 is the start pipe's read end, owned by this process.
    let mut start = unsafe { std::fs::File::from_raw_fd(START_FD) };
    let mut b = [0u8; 1];
    if !matches!(start.read(&mut b), Ok(1)) {
        std::process::exit(1);
    }
    drop(start);
    // The agent has put us in our cgroup by now; make it our cgroup root.
    if !exec && nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWCGROUP).is_ok() {
        let _ = mount(
            Some("cgroup2"),
            "/sys/fs/cgroup",
            Some("cgroup2"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
            None::<&str>,
        );
    }
    if !exec && cfg.join_namespaces.is_empty() {
        let _ = nix::unistd::sethostname(&cfg.hostname);
    }
    if cfg.terminal {
        let _ = nix::unistd::setsid();
        // SAFETY: TIOCSCTTY on fd 0 (the pty slave) with arg 0 has no memory effects.
        unsafe { libc::ioctl(0, libc::TIOCSCTTY, 0) };
    }
    let sec = &cfg.security;
    if let Some(adj) = sec.oom_score_adj {
        if let Err(e) = std::fs::write("/proc/self/oom_score_adj", adj.to_string()) {
            fail(1, &format!("process.oomScoreAdj {adj}: {e}"));
        }
    }
    // Before dropping privileges: raising a hard limit needs root.
    if let Err(e) = set_rlimits(&cfg.rlimits) {
        fail(1, &crate::error_chain(&e));
    }
    if let Err(e) = crate::privileges::drop_bounding(sec) {
        fail(1, &crate::error_chain(&e));
    }
    // Without no_new_privs, loading a filter needs CAP_SYS_ADMIN: load it while we have it.
    if !sec.no_new_privileges {
        if let Err(e) = crate::privileges::load_seccomp(sec) {
            fail(1, &crate::error_chain(&e));
        }
    }
    crate::privileges::keep_caps(sec.caps.is_some());
    let gids: Vec<Gid> = cfg
        .additional_gids
        .iter()
        .map(|g| Gid::from_raw(*g))
        .collect();
    if let Err(e) = nix::unistd::setgroups(&gids)
        .and_then(|_| nix::unistd::setgid(Gid::from_raw(cfg.gid)))
        .and_then(|_| nix::unistd::setuid(Uid::from_raw(cfg.uid)))
    {
        fail(1, &format!("setting user {}:{}: {e}", cfg.uid, cfg.gid));
    }
    if let Err(e) = crate::privileges::set_sets(sec) {
        fail(1, &crate::error_chain(&e));
    }
    if sec.no_new_privileges {
        // SAFETY: PR_SET_NO_NEW_PRIVS takes integer arguments only.
        if unsafe { libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) } != 0 {
            fail(
                1,
                &format!(
                    "process.noNewPrivileges: {}",
                    std::io::Error::last_os_error()
                ),
            );
        }
        if let Err(e) = crate::privileges::load_seccomp(sec) {
            fail(1, &crate::error_chain(&e));
        }
    }
    if let Err(e) = std::env::set_current_dir(&cfg.cwd) {
        fail(
            1,
            &format!("cannot change to working directory {:?}: {e}", cfg.cwd),
        );
    }
    let Some(program) = cfg.args.first() else {
        fail(1, "no command")
    };
    let mut cmd = std::process::Command::new(program);
    cmd.args(&cfg.args[1..]).env_clear();
    for kv in &cfg.env {
        if let Some((k, v)) = kv.split_once('=') {
            cmd.env(k, v);
        }
    }
    let err = cmd.exec();
    // Docker's convention: 127 when the command cannot be found, 126 when it cannot be run.
    let code = match err.raw_os_error() {
        Some(libc::ENOENT) | Some(libc::ENOTDIR) => 127,
        _ => 126,
    };
    fail(code, &format!("cannot run {program:?}: {err}"))
}

fn setup_root(cfg: &InitConfig) -> Result<(), InitError> {
    let (rootfs, terminal, files) = (cfg.rootfs.as_path(), cfg.terminal, &cfg.files);
    fn e(step: &'static str) -> impl Fn(nix::Error) -> InitError {
        move |err| InitError::Root {
            step,
            source: err.into(),
        }
    }
    fn io(step: &'static str) -> impl Fn(std::io::Error) -> InitError {
        move |source| InitError::Root { step, source }
    }
    mount(
        None::<&str>,
        "/",
        None::<&str>,
        MsFlags::MS_REC | MsFlags::MS_PRIVATE,
        None::<&str>,
    )
    .map_err(e("make / private"))?;
    mount(
        Some(rootfs),
        rootfs,
        None::<&str>,
        MsFlags::MS_BIND | MsFlags::MS_REC,
        None::<&str>,
    )
    .map_err(e("bind rootfs"))?;
    let at = |p: &str| rootfs.join(p);
    let mk = |p: &Path| {
        let _ = std::fs::create_dir_all(p);
    };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    mk(&at("proc"));
    mount(
        Some("proc"),
        &at("proc"),
        Some("proc"),
        nosuid,
        None::<&str>,
    )
    .map_err(e("mount /proc"))?;
    mk(&at("sys"));
    mount(
        Some("sysfs"),
        &at("sys"),
        Some("sysfs"),
        nosuid | MsFlags::MS_RDONLY,
        None::<&str>,
    )
    .map_err(e("mount /sys"))?;
    mk(&at("dev"));
    mount(
        Some("tmpfs"),
        &at("dev"),
        Some("tmpfs"),
        MsFlags::MS_NOSUID,
        Some("mode=755"),
    )
    .map_err(e("mount /dev"))?;
    for node in ["null", "zero", "full", "random", "urandom", "tty"] {
        let dst = at("dev").join(node);
        let _ = std::fs::File::create(&dst);
        let src = format!("/dev/{node}");
        mount(
            Some(src.as_str()),
            &dst,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(e("bind a /dev node"))?;
    }
    mk(&at("dev/pts"));
    if terminal {
        // The process's terminal is a pty the agent opened in the guest's devpts; a new devpts
        // instance would not contain it, and ttyname(0) (`tty`) would fail. The guest serves
        // one sandbox, so sharing its devpts with the container costs little. (runc instead
        // opens the pty inside the container and passes the master back.)
        mount(
            Some("/dev/pts"),
            &at("dev/pts"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(e("bind /dev/pts"))?;
    } else {
        mount(
            Some("devpts"),
            &at("dev/pts"),
            Some("devpts"),
            MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
            Some("newinstance,ptmxmode=0666,mode=0620"),
        )
        .map_err(e("mount /dev/pts"))?;
    }
    mk(&at("dev/shm"));
    match &cfg.shm_bind {
        Some(pod_shm) => mount(
            Some(pod_shm),
            &at("dev/shm"),
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(e("bind the pod's /dev/shm"))?,
        None => mount(
            Some("shm"),
            &at("dev/shm"),
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(cfg.shm_options.as_deref().unwrap_or("mode=1777")),
        )
        .map_err(e("mount /dev/shm"))?,
    }
    for (link, target) in [
        ("dev/ptmx", "pts/ptmx"),
        ("dev/fd", "/proc/self/fd"),
        ("dev/stdin", "/proc/self/fd/0"),
        ("dev/stdout", "/proc/self/fd/1"),
        ("dev/stderr", "/proc/self/fd/2"),
    ] {
        let _ = std::os::unix::fs::symlink(target, at(link));
    }
    // Opened before the chroot, mounted after it through /proc/self/fd, so that the target path
    // resolves inside the container's root.
    let staged = files
        .iter()
        .map(|(src, dst)| {
            std::fs::File::open(src)
                .map(|f| (f, dst.as_str()))
                .map_err(|source| InitError::OpenFile {
                    path: src.clone(),
                    source,
                })
        })
        .collect::<Result<Vec<_>, _>>()?;
    let volumes = crate::mounts::open_sources(&cfg.mounts)?;
    // The VM's root is the initramfs, which pivot_root cannot leave; move the container root
    // over `/` in this private mount namespace and chroot into it, as runc's no-pivot mode does.
    std::env::set_current_dir(rootfs).map_err(io("chdir rootfs"))?;
    mount(Some("."), "/", None::<&str>, MsFlags::MS_MOVE, None::<&str>)
        .map_err(e("move the root"))?;
    nix::unistd::chroot(".").map_err(e("chroot"))?;
    std::env::set_current_dir("/").map_err(io("chdir /"))?;
    for (file, dst) in &staged {
        mount_file_over(file, dst)?;
    }
    // After the generated files, so that a volume over /etc/hosts wins, as in Docker.
    Ok(crate::mounts::apply(&volumes)?)
}

/// Resolves `cfg.user` inside the current root (the container's) into uid, gid and groups, and
/// sets `HOME` when the spec has none.
fn resolve_user(cfg: &mut InitConfig) -> Result<(), InitError> {
    let has_home = |cfg: &InitConfig| cfg.env.iter().any(|kv| kv.starts_with("HOME="));
    let Some(user) = cfg.user.clone().filter(|u| !u.is_empty()) else {
        if !has_home(cfg) {
            // runc and Docker: HOME from the UID's passwd entry, else `/`. A passwd that cannot
            // be read (not a regular file, too large) gives `/`: a UID needs no passwd entry.
            let home = crate::user::read_db("/etc/passwd")
                .ok()
                .flatten()
                .and_then(|p| crate::user::home_of(cfg.uid, &p))
                .unwrap_or_else(|| "/".into());
            cfg.env.push(format!("HOME={home}"));
        }
        return Ok(());
    };
    let err = |source| InitError::User {
        user: user.clone(),
        source,
    };
    let passwd = crate::user::read_db("/etc/passwd").map_err(err)?;
    let group = crate::user::read_db("/etc/group").map_err(err)?;
    let r = crate::user::resolve(&user, passwd.as_deref(), group.as_deref()).map_err(err)?;
    cfg.uid = r.uid;
    cfg.gid = r.gid;
    for g in r.supplementary {
        if !cfg.additional_gids.contains(&g) {
            cfg.additional_gids.push(g);
        }
    }
    if !has_home(cfg) {
        cfg.env
            .push(format!("HOME={}", r.home.as_deref().unwrap_or("/")));
    }
    Ok(())
}

/// `linux.sysctl`, `readonlyPaths`, `maskedPaths` and `root.readonly`, inside the container's
/// root (we are chrooted there, in its mount, IPC and UTS namespaces), in runc's order.
fn apply_root_security(sec: &RootSecurity) -> Result<(), InitError> {
    for (name, value) in &sec.sysctl {
        let path = crate::security::sysctl_path(name)?;
        std::fs::write(&path, value).map_err(|source| InitError::Sysctl {
            name: name.clone(),
            value: value.clone(),
            source,
        })?;
    }
    for p in &sec.readonly_paths {
        let r = mount(
            Some(p.as_str()),
            p.as_str(),
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REC,
            None::<&str>,
        )
        .and_then(|_| {
            mount(
                None::<&str>,
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND
                    | MsFlags::MS_REMOUNT
                    | MsFlags::MS_RDONLY
                    | MsFlags::MS_NOSUID
                    | MsFlags::MS_NODEV
                    | MsFlags::MS_NOEXEC,
                None::<&str>,
            )
        });
        match r {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(InitError::ReadonlyPath {
                    path: p.clone(),
                    source,
                })
            }
        }
    }
    for p in &sec.masked_paths {
        let r = match std::fs::metadata(p) {
            Err(_) => Ok(()),
            Ok(m) if m.is_dir() => mount(
                Some("tmpfs"),
                p.as_str(),
                Some("tmpfs"),
                MsFlags::MS_RDONLY | MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC,
                None::<&str>,
            ),
            Ok(_) => mount(
                Some("/dev/null"),
                p.as_str(),
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            ),
        };
        match r {
            Ok(()) | Err(nix::Error::ENOENT) => {}
            Err(source) => {
                return Err(InitError::MaskedPath {
                    path: p.clone(),
                    source,
                })
            }
        }
    }
    if sec.readonly_rootfs {
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY,
            None::<&str>,
        )
        .map_err(InitError::ReadonlyRoot)?;
    }
    Ok(())
}

/// Bind-mounts `file` over `dst` (in the current root), creating an empty `dst` first when the
/// image has none. A `dst` that is a symlink is followed within the root, as runc does.
fn mount_file_over(file: &std::fs::File, dst: &str) -> Result<(), InitError> {
    use std::os::fd::AsRawFd;
    let target = Path::new(dst);
    if std::fs::metadata(target).is_err() {
        // Dangling symlinks (`/etc/resolv.conf -> ../run/...`) get their target created.
        let real = std::fs::read_link(target)
            .map(|l| target.parent().unwrap_or(Path::new("/")).join(l))
            .unwrap_or_else(|_| target.to_path_buf());
        if let Some(parent) = real.parent() {
            let _ = std::fs::create_dir_all(parent);
        }
        std::fs::File::options()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&real)
            .map_err(|source| InitError::CreateFile {
                dst: dst.into(),
                source,
            })?;
    }
    let src = format!("/proc/self/fd/{}", file.as_raw_fd());
    mount(
        Some(src.as_str()),
        target,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| InitError::BindFile {
        dst: dst.into(),
        source,
    })
}
