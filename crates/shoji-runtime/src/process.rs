//! Child processes that cannot outlive the runtime: started with `PR_SET_PDEATHSIG`, killed and
//! reaped when their guard drops, and found on `PATH` or in `~/.cargo/bin`.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use tokio::process::{Child, Command};

#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    #[error("{what} not found (looked for {name:?} on PATH and in ~/.cargo/bin); {hint}")]
    NotFound {
        what: &'static str,
        name: String,
        hint: &'static str,
    },
    #[error("{what} {path} does not exist; {hint}")]
    Missing {
        what: &'static str,
        path: PathBuf,
        hint: &'static str,
    },
    #[error("cannot start {what} ({path})")]
    Spawn {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// Finds an executable: an absolute or relative path is taken as is, a bare name is looked up on
/// `PATH`, then in `~/.cargo/bin` (where `cargo install` puts the rust-vmm helpers).
pub fn find_binary(name: &str) -> Option<PathBuf> {
    let p = Path::new(name);
    if p.components().count() > 1 {
        return p.is_file().then(|| p.to_path_buf());
    }
    let mut dirs: Vec<PathBuf> = std::env::var_os("PATH")
        .map(|v| std::env::split_paths(&v).collect())
        .unwrap_or_default();
    if let Some(home) = std::env::var_os("CARGO_HOME") {
        dirs.push(PathBuf::from(home).join("bin"));
    }
    if let Some(home) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(home).join(".cargo/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|c| c.is_file())
}

/// How long a stopped process group is given to be gone: SIGKILL is quick, but its forked
/// members are reaped by whoever inherits them.
const GROUP_EXIT_WAIT: std::time::Duration = std::time::Duration::from_secs(1);

/// A running child that is killed (SIGKILL) and reaped when dropped.
#[derive(Debug)]
pub struct ChildGuard {
    pub what: &'static str,
    child: Option<Child>,
    spawned_at: std::time::SystemTime,
    /// The child leads its own process group, whose every member is killed with it.
    group: bool,
}

impl ChildGuard {
    /// Spawns `cmd` with stdin closed and the parent-death signal set, so that even a SIGKILLed
    /// runtime does not leave it behind.
    pub fn spawn(what: &'static str, mut cmd: Command) -> Result<Self, ProcessError> {
        let path = PathBuf::from(cmd.as_std().get_program());
        cmd.stdin(Stdio::null()).kill_on_drop(true);
        let parent = std::process::id() as libc::pid_t;
        // SAFETY: the closure runs in the forked child before exec and only calls prctl and
        // getppid, which are async-signal-safe; it touches no memory of the parent but the
        // copied pid.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // `shoji` turns transparent huge pages off for itself (its allocator's heaps);
                // the flag is inherited, and QEMU's guest RAM should keep the system's choice.
                if libc::prctl(libc::PR_SET_THP_DISABLE, 0, 0, 0, 0) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                // A parent that died between the fork and the prctl sent no signal: the child
                // has been reparented already, and must not go on without it.
                if libc::getppid() != parent {
                    return Err(std::io::Error::other("the parent exited during spawn"));
                }
                Ok(())
            });
        }
        let spawned_at = std::time::SystemTime::now();
        let child = cmd
            .spawn()
            .map_err(|source| ProcessError::Spawn { what, path, source })?;
        Ok(Self {
            what,
            child: Some(child),
            spawned_at,
            group: false,
        })
    }

    /// [`ChildGuard::spawn`] in a process group of its own, for a child that forks helpers of
    /// its own (virtiofsd's `--sandbox namespace` serves from a forked child in a new PID
    /// namespace): stopping it kills the whole group and waits until it is gone, so nothing it
    /// forked outlives the guard.
    pub fn spawn_group(what: &'static str, mut cmd: Command) -> Result<Self, ProcessError> {
        cmd.process_group(0);
        let mut g = Self::spawn(what, cmd)?;
        g.group = true;
        Ok(g)
    }

    /// With [`ChildGuard::spawn_group`]: SIGKILL to every process of the group led by `pid`.
    fn kill_group(pid: u32) {
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
    }

    /// Whether no live process of the group led by `pid` is left. The forked ones are reaped by
    /// whoever inherits them (the host's init), which may be late, or never where init is not
    /// a reaper (some containers' PID 1): a killed member not yet reaped (a zombie) holds
    /// nothing any more and counts as gone. Without that, every stop waited its whole second.
    fn group_gone(pid: u32) -> bool {
        if nix::sys::signal::killpg(nix::unistd::Pid::from_raw(pid as i32), None).is_err() {
            return true;
        }
        let Ok(procs) = std::fs::read_dir("/proc") else {
            return false;
        };
        !procs.flatten().any(|e| {
            e.file_name()
                .to_str()
                .and_then(|n| n.parse::<u32>().ok())
                .and_then(crate::lifecycle::state::proc_stat)
                .is_some_and(|s| s.pgrp == pid && !matches!(s.state, 'Z' | 'X'))
        })
    }

    /// When the process was started (just before the fork), in host time.
    pub fn spawned_at(&self) -> std::time::SystemTime {
        self.spawned_at
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().and_then(Child::id)
    }

    /// Takes the child's stderr pipe (if it was piped), for a caller that drains it.
    pub fn take_stderr(&mut self) -> Option<tokio::process::ChildStderr> {
        self.child.as_mut().and_then(|c| c.stderr.take())
    }

    /// Waits for the child to exit on its own.
    pub async fn wait(&mut self) -> std::io::Result<std::process::ExitStatus> {
        match self.child.as_mut() {
            Some(c) => c.wait().await,
            None => Err(std::io::Error::other("child already reaped")),
        }
    }

    /// Non-blocking: has it exited?
    pub fn try_wait(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    /// Kills and reaps now.
    pub async fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            let pid = c.id();
            let _ = c.wait().await;
            if let (true, Some(pid)) = (self.group, pid) {
                Self::kill_group(pid);
                let deadline = tokio::time::Instant::now() + GROUP_EXIT_WAIT;
                while !Self::group_gone(pid) && tokio::time::Instant::now() < deadline {
                    tokio::time::sleep(std::time::Duration::from_millis(2)).await;
                }
            }
        }
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.start_kill();
            // Reap synchronously so no zombie or live helper survives the guard.
            if let Some(pid) = c.id() {
                let _ = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid as i32), None);
                if self.group {
                    Self::kill_group(pid);
                    let deadline = std::time::Instant::now() + GROUP_EXIT_WAIT;
                    while !Self::group_gone(pid) && std::time::Instant::now() < deadline {
                        std::thread::sleep(std::time::Duration::from_millis(2));
                    }
                }
            }
        }
    }
}
