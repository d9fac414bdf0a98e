//! The sandbox directory: sockets, console log, root filesystem, spec. Mode 0700 under a 0700
//! root ([`crate::private_fs`]); removed whole when the [`SandboxDir`] drops, on every exit
//! path, its rootfs mount ([`super::mounts`]) first.

use std::path::{Path, PathBuf};

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
        private_fs::private_dir(root)?;
        let path = root.join(id);
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

    /// The path the guest's root filesystem is served from: as root, `<sandbox>/rootfs` bind-
    /// mounted `nosuid,nodev` from `src` (which may be that same directory), so the host never
    /// reaches a setuid file or device node of the container but through a 0700 directory and
    /// a mount that disarms them. Without root no mount can be made: `src` is served as it is
    /// (the files are the user's own, so no other user gains from them; see ADR 009).
    pub fn share_rootfs(&self, src: &Path) -> Result<PathBuf, SandboxError> {
        if !mounts::can_mount() {
            return Ok(src.to_path_buf());
        }
        let dst = self.rootfs();
        match std::fs::create_dir(&dst) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(SandboxError::MountPoint {
                    path: dst,
                    source: e,
                })
            }
            _ => {}
        }
        mounts::bind_nosuid(src, &dst)?;
        Ok(dst)
    }

    /// The container's root filesystem as an overlay of image-store `layers` (lowest first)
    /// with a writable layer of its own (`overlay/upper`, `overlay/work`, outside what the
    /// guest is served), mounted `nosuid,nodev` where [`Self::share_rootfs`] would bind one.
    /// `lease` keeps the layers from being removed while this directory lives. Root only.
    pub fn mount_image_layers(
        &self,
        layers: &[PathBuf],
        lease: shoji_images::store::LayerLease,
    ) -> Result<PathBuf, SandboxError> {
        let dst = self.rootfs();
        let overlay = self.path.join("overlay");
        let (upper, work) = (overlay.join("upper"), overlay.join("work"));
        private_fs::create_private_dir(&overlay).map_err(|source| SandboxError::MountPoint {
            path: overlay.clone(),
            source,
        })?;
        for d in [&upper, &work, &dst] {
            match std::fs::create_dir(d) {
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
        let _ =
            std::fs::set_permissions(&upper, std::os::unix::fs::PermissionsExt::from_mode(0o755));
        mounts::mount_overlay(layers, &upper, &work, &dst)?;
        if let Ok(mut l) = self.leases.lock() {
            l.push(lease);
        }
        Ok(dst)
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
    pub fn rootfs(&self) -> PathBuf {
        self.path.join("rootfs")
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
