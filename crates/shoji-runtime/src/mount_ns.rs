//! Mount namespaces for a long-lived runtime process (the containerd shim, ADR 023): it serves
//! from a mount namespace of its own, whose mounts never show in the host's, and keeps the
//! host's by descriptor to look host paths (volumes) up there, where they are mounted now, not
//! as they were when it left.

use std::os::fd::{AsFd, OwnedFd};

use nix::mount::{mount, MsFlags};
use nix::sched::{setns, unshare, CloneFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountNsError {
    #[error("cannot open the mount namespace at {path}")]
    Open {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "a mount namespace of its own needs a process of one thread, and this one has {threads}"
    )]
    Threads { threads: usize },
    #[error("cannot make a mount namespace of its own")]
    Unshare(#[source] nix::Error),
    #[error("cannot make / a slave of the host's mounts in the new mount namespace")]
    Slave(#[source] nix::Error),
    #[error("cannot start a thread to work in the host's mount namespace")]
    Thread(#[source] std::io::Error),
    #[error("cannot give the helper thread a file-system context of its own")]
    UnshareFs(#[source] nix::Error),
    #[error("cannot enter the host's mount namespace")]
    Enter(#[source] nix::Error),
}

/// A mount namespace, held open by its descriptor.
#[derive(Debug)]
pub struct MountNs(OwnedFd);

impl MountNs {
    /// The calling thread's mount namespace.
    pub fn current() -> Result<Self, MountNsError> {
        let path = "/proc/thread-self/ns/mnt";
        std::fs::File::open(path)
            .map(|f| Self(f.into()))
            .map_err(|source| MountNsError::Open { path, source })
    }

    /// Runs `f` on a thread of its own that has entered this namespace (its root and working
    /// directory are the namespace's root then), and returns what `f` returns. The caller's
    /// threads stay where they are; the helper thread ends with `f`.
    pub fn run<T: Send>(&self, f: impl FnOnce() -> T + Send) -> Result<T, MountNsError> {
        std::thread::scope(|s| {
            let thread = std::thread::Builder::new()
                .name("host-mount-ns".into())
                .spawn_scoped(s, || {
                    // setns(CLONE_NEWNS) refuses a thread that shares its root and working
                    // directory with others, as every thread does from the start.
                    unshare(CloneFlags::CLONE_FS).map_err(MountNsError::UnshareFs)?;
                    setns(self.0.as_fd(), CloneFlags::CLONE_NEWNS).map_err(MountNsError::Enter)?;
                    Ok(f())
                })
                .map_err(MountNsError::Thread)?;
            thread
                .join()
                .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
        })
    }
}

/// Moves the calling process into a new mount namespace whose root is a recursive slave of the
/// one it leaves: mounts the host makes or removes later (where its own are shared) reach it,
/// and nothing mounted in it reaches the host. Returns the namespace left, for [`MountNs::run`].
/// The process must have one thread: `unshare` moves only the calling thread, and a thread
/// started before would stay behind (with a tokio runtime, call this before building it).
pub fn enter_own() -> Result<MountNs, MountNsError> {
    let threads = std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .map_err(|source| MountNsError::Open {
            path: "/proc/self/task",
            source,
        })?;
    if threads != 1 {
        return Err(MountNsError::Threads { threads });
    }
    let host = MountNs::current()?;
    unshare(CloneFlags::CLONE_NEWNS).map_err(MountNsError::Unshare)?;
    root_propagation(MsFlags::MS_SLAVE).map_err(MountNsError::Slave)?;
    Ok(host)
}

/// Gives every mount of the calling thread's namespace `propagation`.
fn root_propagation(propagation: MsFlags) -> nix::Result<()> {
    let flags = MsFlags::MS_REC | propagation;
    mount(None::<&str>, "/", None::<&str>, flags, None::<&str>)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Puts the calling thread in a private mount namespace of its own: what it mounts vanishes
    /// with it and never shows in the host's mount table.
    pub(crate) fn private_ns() {
        unshare(CloneFlags::CLONE_FS | CloneFlags::CLONE_NEWNS).unwrap();
        root_propagation(MsFlags::MS_PRIVATE).unwrap();
    }

    fn mounted_at(target: &std::path::Path) -> bool {
        let t = target.display().to_string();
        std::fs::read_to_string("/proc/thread-self/mountinfo")
            .unwrap()
            .lines()
            .any(|l| l.split(' ').nth(4) == Some(t.as_str()))
    }

    /// What `run` mounts lands in the namespace it holds, not in the caller's.
    #[test]
    fn run_works_in_the_namespace_it_holds() {
        assert!(
            nix::unistd::geteuid().is_root(),
            "mount namespaces need root (CI runs as root)"
        );
        let dir = tempfile::tempdir().expect("a temporary directory");
        let target = dir.path().to_path_buf();
        std::thread::spawn(move || {
            // The "host": a namespace this test owns.
            private_ns();
            let host = MountNs::current().expect("this thread's namespace");
            let t = target.clone();
            std::thread::scope(|s| {
                s.spawn(|| {
                    // The "shim": a namespace of its own, mounting through `host`.
                    private_ns();
                    host.run(|| {
                        mount(
                            Some("tmpfs"),
                            &t,
                            Some("tmpfs"),
                            MsFlags::empty(),
                            None::<&str>,
                        )
                    })
                    .expect("a thread in the host's namespace")
                    .expect("a tmpfs mounted there");
                    assert!(
                        !mounted_at(&t),
                        "not in the namespace of the thread that asked"
                    );
                });
            });
            assert!(mounted_at(&target), "in the namespace `run` entered");
        })
        .join()
        .unwrap();
    }
}
