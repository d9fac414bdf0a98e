//! A container's root filesystem on the host: containerd's snapshot mounts (an overlay from the
//! overlayfs snapshotter, a bind for a single layer) mounted at `<bundle>/rootfs`, then bound
//! into the sandbox's share at `shared/<container id>/rootfs`
//! ([`SandboxDir::share_rootfs`]), which virtiofsd serves to the guest. Both undone on delete,
//! and by `delete` after a shim that died.

use std::path::{Path, PathBuf};

use containerd_shim::protos::api::Mount;
use shoji_runtime::sandbox::SandboxDir;

#[derive(Debug, thiserror::Error)]
pub enum RootfsError {
    #[error("cannot create the rootfs directory {path}")]
    Mkdir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount {kind} {source_path:?} on {target}: {message}")]
    Mount {
        kind: String,
        source_path: String,
        target: PathBuf,
        message: String,
    },
    #[error("cannot unmount {target}: {message}")]
    Unmount { target: PathBuf, message: String },
}

/// `<bundle>/rootfs`, where containerd's mounts go.
pub fn rootfs_of(bundle: &Path) -> PathBuf {
    bundle.join("rootfs")
}

/// Mounts `mounts` in order on `<bundle>/rootfs`; returns whether anything was mounted (with no
/// mounts, the bundle's rootfs is used as it is). A failure unmounts what was mounted.
pub async fn mount(bundle: &Path, mounts: &[Mount]) -> Result<bool, RootfsError> {
    let target = rootfs_of(bundle);
    if let Err(source) = std::fs::create_dir_all(&target) {
        return Err(RootfsError::Mkdir {
            path: target,
            source,
        });
    }
    for m in mounts {
        if let Err(e) = containerd_shim::asynchronous::util::mount_rootfs(m, &target).await {
            let _ = unmount(bundle);
            return Err(RootfsError::Mount {
                kind: m.type_.clone(),
                source_path: m.source.clone(),
                target,
                message: e.to_string(),
            });
        }
    }
    Ok(!mounts.is_empty())
}

/// Unmounts everything at or below `<bundle>/rootfs` (nothing there is not an error).
pub fn unmount(bundle: &Path) -> Result<(), RootfsError> {
    let target = rootfs_of(bundle);
    let Some(t) = target.to_str() else {
        return Err(RootfsError::Unmount {
            target,
            message: "the path is not UTF-8".into(),
        });
    };
    containerd_shim::mount::umount_recursive(Some(t), libc::MNT_DETACH).map_err(|e| {
        RootfsError::Unmount {
            target: target.clone(),
            message: e.to_string(),
        }
    })
}

/// Takes container `id`'s root filesystem out of the sandbox's share: `shared/<id>` with its
/// mount, detached first (the removal never descends into the container's files).
pub fn unshare(sb: &SandboxDir, id: &str) {
    if let Some(dir) = sb.container_rootfs(id).parent() {
        if let Err(e) = shoji_runtime::sandbox::remove_sandbox_dir(dir) {
            tracing::warn!(error = %e, dir = %dir.display(), "the container's share was not removed");
        }
    }
}
