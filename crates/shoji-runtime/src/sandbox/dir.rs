//! The sandbox directory: sockets, console log, the share with each container's root
//! filesystem, spec. Mode 0700 under a 0700
//! root ([`crate::private_fs`]); removed whole when the [`SandboxDir`] drops, on every exit
//! path, its rootfs mount ([`super::mounts`]) first.

use std::path::{Path, PathBuf};

use std::os::unix::fs::DirBuilderExt;

use rand::Rng;

use super::mounts::{self, MountError};
use crate::private_fs::{self, PrivateFsError};

#[derive(Debug, thiserror::Error)]
pub enum SandboxError {
    #[error("cannot create sandbox directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "sandbox directory {path} would hold Unix sockets longer than the {MAX_SOCKET_PATH} bytes a socket path may have; use a shorter sandbox_root (docs/configuration.md) or container id"
    )]
    PathTooLong { path: PathBuf },
    #[error(transparent)]
    Private(#[from] PrivateFsError),
    #[error(transparent)]
    Mount(#[from] MountError),
    #[error("cannot create the rootfs mount point {path}")]
    MountPoint {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// The virtio-fs tag of the sandbox's one share (the host-guest contract: the agent mounts it
/// once and finds each container's root filesystem in it at the request's `rootfs_path`).
pub const SHARE_TAG: &str = "shared";

/// A container's root filesystem as served to the guest.
#[derive(Debug, Clone)]
pub struct SharedRootfs {
    /// The directory virtiofsd serves (the whole share).
    pub share: PathBuf,
    /// The container's root filesystem on the host, inside `share`.
    pub host: PathBuf,
    /// Its path relative to the share, as the agent is told (`rootfs_path`; empty: the share).
    pub in_share: String,
}

/// A fresh sandbox id: 16 hex digits.
pub fn new_sandbox_id() -> String {
    let n: u64 = rand::rng().random();
    format!("{n:016x}")
}

/// Default parent of sandbox directories (made 0700 when first used).
pub fn default_root() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_RUNTIME_DIR") {
        return PathBuf::from(d).join("shoji");
    }
    if nix::unistd::geteuid().is_root() {
        PathBuf::from("/run/shoji")
    } else {
        std::env::temp_dir().join(format!("shoji-{}", nix::unistd::geteuid()))
    }
}

/// The most bytes a Unix socket's path may have (`sun_path` without its terminating NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// Whether every socket a sandbox directory at `dir` holds has a path a Unix socket may have.
/// The longest is a hybrid-vsock port socket, `vm.vsock_<port>` (ports up to 65535).
pub fn socket_paths_fit(dir: &Path) -> bool {
    dir.join("vm.vsock_65535").as_os_str().len() <= MAX_SOCKET_PATH
}

#[derive(Debug)]
pub struct SandboxDir {
    pub id: String,
    path: PathBuf,
    keep: bool,
    /// The image-store layers its containers use, leased until the directory (and with it
    /// every overlay on them) is gone.
    leases: std::sync::Mutex<Vec<shoji_images::store::LayerLease>>,
}

impl SandboxDir {
    /// Makes `root` (0700) and `root/id` (0700, new). The caller records who owns it
    /// ([`crate::reclaim::OwnerRecord`]) so that a killed owner's directory can be reclaimed.
    pub fn create(root: &Path, id: &str) -> Result<Self, SandboxError> {
        let path = root.join(id);
        if !socket_paths_fit(&path) {
            return Err(SandboxError::PathTooLong { path });
        }
        private_fs::private_dir(root)?;
        private_fs::create_private_dir(&path).map_err(|source| SandboxError::Create {
            path: path.clone(),
            source,
        })?;
        Ok(Self {
            id: id.to_string(),
            path,
            keep: std::env::var_os("SHOJI_KEEP_SANDBOX").is_some(),
            leases: Default::default(),
        })
    }

    /// The directory virtiofsd serves to the guest as the share [`SHARE_TAG`]: as root,
    /// `<sandbox>/shared/`, holding each container's root filesystem at `<id>/rootfs` (see
    /// [`SandboxDir::share_rootfs`]).
    pub fn shared(&self) -> PathBuf {
        self.path.join("shared")
    }

    /// Where container `container_id`'s root filesystem is mounted in the share, on the host.
    pub fn container_rootfs(&self, container_id: &str) -> PathBuf {
        self.shared().join(container_id).join("rootfs")
    }

    /// Serves `src` as container `container_id`'s root filesystem. As root, `src` is
    /// bind-mounted `nosuid,nodev` at [`SandboxDir::container_rootfs`] (`src` may be that same
    /// directory), so the host never reaches a setuid file or device node of the container but
    /// through a 0700 directory and a mount that disarms them; the share itself is a mount of
    /// its own, in a peer group of its own, so that a mount added below it after virtiofsd
    /// started (a later container of the sandbox) reaches virtiofsd's namespace. Without root
    /// no mount can be made: `src` itself is the share, for this one container (the files are
    /// the user's own, so no other user gains from them; see ADR 009).
    pub fn share_rootfs(
        &self,
        container_id: &str,
        src: &Path,
    ) -> Result<SharedRootfs, SandboxError> {
        if !mounts::can_mount() {
            return Ok(SharedRootfs {
                share: src.to_path_buf(),
                host: src.to_path_buf(),
                in_share: String::new(),
            });
        }
        self.make_share()?;
        let dst = self.container_rootfs(container_id);
        // `<id>/` is private; `rootfs/` has the mode a root directory has (an image unpacked
        // into it keeps it: the container's `/` must be searchable by its users).
        let parent = dst.parent().unwrap_or(&dst);
        let made = [
            (parent, private_fs::create_private_dir(parent)),
            (&*dst, std::fs::DirBuilder::new().mode(0o755).create(&dst)),
        ];
        for (dir, made) in made {
            match made {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(SandboxError::MountPoint {
                        path: dir.to_path_buf(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        mounts::bind_nosuid(src, &dst)?;
        Ok(SharedRootfs {
            share: self.shared(),
            host: dst,
            in_share: format!("{container_id}/rootfs"),
        })
    }

    /// Makes `shared/` (0700) and its own mount, once.
    fn make_share(&self) -> Result<(), SandboxError> {
        let share = self.shared();
        match private_fs::create_private_dir(&share) {
            Ok(()) => mounts::make_share(&share)?,
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) => {
                return Err(SandboxError::MountPoint {
                    path: share,
                    source: e,
                })
            }
        }
        Ok(())
    }

    /// Container `container_id`'s root filesystem as an overlay of image-store `layers`
    /// (lowest first) with a writable layer of its own (`overlay/<id>/upper` and `work`,
    /// outside the share, so the guest never reaches them behind the overlay's back), mounted
    /// `nosuid,nodev` at [`SandboxDir::container_rootfs`], where [`Self::share_rootfs`] would
    /// bind one. `lease` keeps the layers from being removed while this directory lives.
    /// Root only.
    pub fn mount_image_layers(
        &self,
        container_id: &str,
        layers: &[PathBuf],
        lease: shoji_images::store::LayerLease,
    ) -> Result<SharedRootfs, SandboxError> {
        self.make_share()?;
        let dst = self.container_rootfs(container_id);
        let overlay = self.path.join("overlay").join(container_id);
        let (upper, work) = (overlay.join("upper"), overlay.join("work"));
        let private = [
            self.path.join("overlay"),
            overlay.clone(),
            dst.parent().unwrap_or(&dst).to_path_buf(),
        ];
        for d in &private {
            match private_fs::create_private_dir(d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(SandboxError::MountPoint {
                        path: d.clone(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        // The upper directory is the container's `/`: its mode is what the guest sees there.
        for (d, mode) in [(&upper, 0o755), (&work, 0o700), (&dst, 0o755)] {
            match std::fs::DirBuilder::new().mode(mode).create(d) {
                Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                    return Err(SandboxError::MountPoint {
                        path: d.clone(),
                        source: e,
                    })
                }
                _ => {}
            }
        }
        mounts::mount_overlay(layers, &upper, &work, &dst)?;
        if let Ok(mut l) = self.leases.lock() {
            l.push(lease);
        }
        Ok(SharedRootfs {
            share: self.shared(),
            host: dst,
            in_share: format!("{container_id}/rootfs"),
        })
    }

    /// Takes over `root/id`, made by someone else (`shoji create` makes it, so that a second
    /// create of the same id fails); removed on drop like one this process made.
    pub fn adopt(root: &Path, id: &str) -> Self {
        Self {
            id: id.to_string(),
            path: root.join(id),
            keep: std::env::var_os("SHOJI_KEEP_SANDBOX").is_some(),
            leases: Default::default(),
        }
    }

    /// Leaves the directory in place on drop.
    pub fn keep(&mut self) {
        self.keep = true;
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
    pub fn vsock_uds(&self) -> PathBuf {
        self.path.join("vm.vsock")
    }
    pub fn vhost_socket(&self) -> PathBuf {
        self.path.join("vh.sock")
    }
    pub fn virtiofs_socket(&self) -> PathBuf {
        self.path.join("vfs.sock")
    }
    pub fn console_log(&self) -> PathBuf {
        self.path.join("console.log")
    }
    pub fn console_socket(&self) -> PathBuf {
        self.path.join("console.sock")
    }
    /// The host end of guest port `port` (guest `connect(2, port)` arrives here).
    pub fn host_port_socket(&self, port: u32) -> PathBuf {
        PathBuf::from(format!("{}_{port}", self.vsock_uds().display()))
    }

    /// The last `n` lines of the guest console, for error messages.
    pub fn console_tail(&self, n: usize) -> String {
        console_tail(&self.console_log(), n)
    }
}

pub fn console_tail(path: &Path, n: usize) -> String {
    let text = std::fs::read(path).unwrap_or_default();
    let text = String::from_utf8_lossy(&text);
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(n);
    lines[start..].join("\n")
}

/// Removes `dir` and everything in it, after detaching the mounts below it. If a mount cannot
/// be detached nothing is removed: deleting through it would delete what it shows (a bundle's
/// rootfs is the user's own directory).
pub fn remove_sandbox_dir(dir: &Path) -> std::io::Result<()> {
    if !mounts::unmount_all_under(dir) {
        return Err(std::io::Error::other(format!(
            "mounts are left below {}; not removing it",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

impl Drop for SandboxDir {
    // The leases are fields: they are released after this body has detached the overlays.
    fn drop(&mut self) {
        if self.keep {
            // Kept for a look: not reclaimed, but no mount outlives its owner.
            let _ = std::fs::remove_file(self.path.join(crate::reclaim::OWNER_FILE));
            mounts::unmount_all_under(&self.path);
            return;
        }
        if let Err(e) = remove_sandbox_dir(&self.path) {
            tracing::warn!(path = %self.path.display(), error = %e, "cannot remove the sandbox directory");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sandbox_whose_sockets_would_not_fit_is_refused_before_anything_is_made() {
        let t = tempfile::tempdir().expect("a temporary directory");
        let root = t.path().join("r".repeat(MAX_SOCKET_PATH));
        let err = SandboxDir::create(&root, "a").expect_err("too long");
        assert!(matches!(err, SandboxError::PathTooLong { .. }), "{err:?}");
        assert!(err.to_string().contains("sandbox_root"), "{err}");
        assert!(!root.exists(), "nothing made");
        // The limit is exact: a directory whose longest socket has 107 bytes is fine.
        let base = t.path().join("x");
        let fill = MAX_SOCKET_PATH - base.join("a/vm.vsock_65535").as_os_str().len();
        let root = t.path().join(format!("x{}", "y".repeat(fill)));
        assert!(socket_paths_fit(&root.join("a")));
        assert!(!socket_paths_fit(&root.join("ab")));
    }
}
