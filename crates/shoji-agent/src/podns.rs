//! The pod's shared namespaces. The containers of a Kubernetes pod share one UTS namespace (the
//! pod's hostname) and one IPC namespace; the network namespace is the guest's, which every
//! container of the sandbox shares anyway. PID and mount namespaces stay per container. With
//! the IPC namespace they share `/dev/shm`: one tmpfs in the guest ([`SHM`]), sized by the
//! first container's spec (64 MiB when it names no size, Kubernetes' default), bound into each,
//! as Kata does; nothing of it is on the host.
//!
//! The agent makes them once, for the first container that asks (`pod_namespaces` in
//! `CreateContainerRequest`), with that container's hostname, and keeps them without a process:
//! their nsfs files are bind-mounted under [`DIR`], as `ip netns` does. Every container of the
//! pod, the first included, then joins them instead of making its own. `unshare` changes only
//! the calling thread's namespaces, so they are made on a thread of their own, never on one the
//! agent goes on using.

use std::path::{Path, PathBuf};

use nix::mount::{mount, MsFlags};
use nix::sched::CloneFlags;

/// Where the pod's namespaces are held.
pub const DIR: &str = "/run/shoji/pod";

/// The pod's `/dev/shm`.
pub const SHM: &str = "/run/shoji/pod/shm";

/// The pod's `/dev/shm` size when the spec names none: Kubernetes' (and Docker's) 64 MiB.
const SHM_DEFAULT: &str = "mode=1777,size=67108864";

/// The shared namespaces, in the order a container joins them.
const KINDS: [&str; 2] = ["uts", "ipc"];

#[derive(Debug, thiserror::Error)]
pub enum PodNamespaceError {
    #[error("cannot make the pod's UTS and IPC namespaces")]
    Unshare(#[source] nix::Error),
    #[error("cannot set the pod's hostname to {hostname:?}")]
    Hostname {
        hostname: String,
        #[source]
        source: nix::Error,
    },
    #[error("cannot create {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot hold the pod's {kind} namespace at {path}")]
    Hold {
        kind: &'static str,
        path: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("the thread making the pod's namespaces panicked")]
    Thread,
    #[error("cannot mount the pod's /dev/shm at {SHM} with {options:?}")]
    Shm {
        options: String,
        #[source]
        source: nix::Error,
    },
}

/// The pod's namespaces once made: their nsfs files under [`DIR`]; and its `/dev/shm`.
#[derive(Debug, Default)]
pub struct PodNamespaces(Option<Vec<PathBuf>>, Option<PathBuf>);

impl PodNamespaces {
    /// The namespaces for a container to join, made first (with `hostname`) if they are not yet.
    pub fn ensure(&mut self, hostname: &str) -> Result<Vec<PathBuf>, PodNamespaceError> {
        if let Some(paths) = &self.0 {
            return Ok(paths.clone());
        }
        let paths: Vec<PathBuf> = KINDS.iter().map(|k| Path::new(DIR).join(k)).collect();
        let (hostname, held) = (hostname.to_string(), paths.clone());
        std::thread::spawn(move || make(&hostname, &held))
            .join()
            .map_err(|_| PodNamespaceError::Thread)??;
        self.0 = Some(paths.clone());
        Ok(paths)
    }

    /// The pod's `/dev/shm`, a tmpfs mounted first (with `options`, the spec's `size=` and
    /// `mode=`; [`SHM_DEFAULT`] without) if it is not yet. Later containers' options are not
    /// applied: the first container (the pod's sandbox container) sizes it for the pod.
    pub fn ensure_shm(&mut self, options: Option<&str>) -> Result<PathBuf, PodNamespaceError> {
        if let Some(path) = &self.1 {
            return Ok(path.clone());
        }
        std::fs::create_dir_all(SHM).map_err(|source| PodNamespaceError::Create {
            path: SHM.into(),
            source,
        })?;
        let options = options.unwrap_or(SHM_DEFAULT);
        mount(
            Some("shm"),
            SHM,
            Some("tmpfs"),
            MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
            Some(options),
        )
        .map_err(|source| PodNamespaceError::Shm {
            options: options.into(),
            source,
        })?;
        self.1 = Some(SHM.into());
        Ok(SHM.into())
    }
}

/// Runs on a thread that ends right after: its new namespaces live on through the bind mounts.
fn make(hostname: &str, held: &[PathBuf]) -> Result<(), PodNamespaceError> {
    nix::sched::unshare(CloneFlags::CLONE_NEWUTS | CloneFlags::CLONE_NEWIPC)
        .map_err(PodNamespaceError::Unshare)?;
    nix::unistd::sethostname(hostname).map_err(|source| PodNamespaceError::Hostname {
        hostname: hostname.into(),
        source,
    })?;
    std::fs::create_dir_all(DIR).map_err(|source| PodNamespaceError::Create {
        path: DIR.into(),
        source,
    })?;
    for (kind, path) in KINDS.iter().zip(held) {
        std::fs::File::create(path).map_err(|source| PodNamespaceError::Create {
            path: path.clone(),
            source,
        })?;
        let ns = format!("/proc/thread-self/ns/{kind}");
        mount(
            Some(ns.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|source| PodNamespaceError::Hold {
            kind,
            path: path.clone(),
            source,
        })?;
    }
    Ok(())
}
