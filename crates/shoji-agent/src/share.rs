//! The sandbox's one virtio-fs share: mounted once, at `/run/shoji/shares/<tag>`, the first time
//! a container needs it; each container's root filesystem is a directory in it, bind-mounted as
//! that container's root (`CreateContainerRequest.rootfs_path`).

use std::collections::HashSet;
use std::path::{Component, Path, PathBuf};
use std::sync::Mutex;

use nix::mount::{mount, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum ShareError {
    #[error("virtio-fs tag {tag:?} is not a plain name")]
    BadTag { tag: String },
    #[error("rootfs path {path:?} in the share is not a relative path of plain names")]
    BadPath { path: String },
    #[error("cannot mount virtio-fs tag {tag:?} on {at}")]
    Mount {
        tag: String,
        at: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot bind-mount {src} onto {dst}")]
    Bind {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("{path} in the share is not a directory")]
    NotDir { path: PathBuf },
}

/// Tags mounted so far (under the lock: two containers created at once mount it once).
static MOUNTED: Mutex<Option<HashSet<String>>> = Mutex::new(None);

fn plain(s: &str) -> bool {
    !s.is_empty()
        && Path::new(s)
            .components()
            .all(|c| matches!(c, Component::Normal(_)))
}

/// Mounts share `tag` if not yet mounted; returns where it is.
pub fn mount_share(tag: &str) -> Result<PathBuf, ShareError> {
    if !plain(tag) || tag.contains('/') {
        return Err(ShareError::BadTag { tag: tag.into() });
    }
    let at = PathBuf::from("/run/shoji/shares").join(tag);
    let mut mounted = MOUNTED.lock().unwrap_or_else(|e| e.into_inner());
    let set = mounted.get_or_insert_with(HashSet::new);
    if set.contains(tag) {
        return Ok(at);
    }
    let _s = tracing::info_span!(
        "share.mount",
        source = "agent",
        subsystem = "storage",
        share.tag = tag
    )
    .entered();
    let _ = std::fs::create_dir_all(&at);
    mount(
        Some(tag),
        &at,
        Some("virtiofs"),
        // No nosuid/nodev: a bind mount from it keeps its flags, and a container's root is
        // the image's own, setuid files included (the guest's kernel is the boundary).
        MsFlags::empty(),
        None::<&str>,
    )
    .map_err(|source| ShareError::Mount {
        tag: tag.into(),
        at: at.clone(),
        source,
    })?;
    set.insert(tag.into());
    Ok(at)
}

/// Bind-mounts directory `rootfs_path` of share `tag` (the share itself when empty) onto
/// `dst`, an existing directory.
pub fn mount_rootfs(tag: &str, rootfs_path: &str, dst: &Path) -> Result<(), ShareError> {
    if !rootfs_path.is_empty() && !plain(rootfs_path) {
        return Err(ShareError::BadPath {
            path: rootfs_path.into(),
        });
    }
    let share = mount_share(tag)?;
    let src = share.join(rootfs_path);
    // The host made this directory; a symlink in its place is not followed out of the share.
    match std::fs::symlink_metadata(&src) {
        Ok(m) if m.is_dir() => {}
        _ => return Err(ShareError::NotDir { path: src }),
    }
    mount(
        Some(&src),
        dst,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .map_err(|source| ShareError::Bind {
        src: src.clone(),
        dst: dst.to_path_buf(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_plain_relative_paths_are_taken() {
        assert!(plain("abc/rootfs"));
        assert!(!plain("../x"));
        assert!(!plain("/abs"));
        assert!(!plain("a/../b"));
        assert!(!plain(""));
        let dst = Path::new("/nonexistent");
        assert!(matches!(
            mount_rootfs("shared", "a/../../etc", dst),
            Err(ShareError::BadPath { .. })
        ));
        assert!(matches!(mount_share("a/b"), Err(ShareError::BadTag { .. })));
    }
}
