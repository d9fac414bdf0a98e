//! The host's mounts in a sandbox directory: the container's root filesystem is reached on the
//! host only through a `nosuid,nodev` bind mount (a setuid-root binary from an image, or one the
//! guest made through virtio-fs, must not be a way to root for a local user), and these mounts
//! are found and detached before anything is removed (a bundle's rootfs is the user's own
//! directory, bind-mounted, not ours to delete). Decisions in `docs/adr/009-host-side-sandbox.md`.

use shoji_images::store::unescape_mountinfo;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount2, MntFlags, MsFlags};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("cannot bind-mount {src} onto {dst} nosuid,nodev")]
    Bind {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error("cannot mount an overlay of {layers} image layers onto {dst} nosuid,nodev")]
    Overlay {
        layers: usize,
        dst: PathBuf,
        #[source]
        source: nix::Error,
    },
    #[error(
        "the overlay of {layers} image layers onto {dst} needs {len} bytes of mount options, \
         more than the kernel takes ({max}); move the image store to a shorter path"
    )]
    OverlayOptions {
        layers: usize,
        dst: PathBuf,
        len: usize,
        max: usize,
    },
    #[error("cannot make {dir} a shared mount of its own")]
    Propagation {
        dir: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Whether bind mounts can be made: only root (in the initial user namespace) can.
pub fn can_mount() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Bind-mounts `src` onto `dst` (an existing directory; the same path is fine) and makes that
/// mount `nosuid,nodev`. Modes, owners and xattrs are untouched, so the guest sees the image as
/// it is; only the host's exec of a setuid file and open of a device node through this path
/// are refused. Not recursive: mounts below `src` are not reachable through `dst`.
pub fn bind_nosuid(src: &Path, dst: &Path) -> Result<(), MountError> {
    let err = |source| MountError::Bind {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        source,
    };
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err)?;
    // A bind mount takes its flags from a remount; MS_BIND keeps the other flags as they are.
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Err(e) = mount(None::<&str>, dst, None::<&str>, flags, None::<&str>) {
        let _ = umount2(dst, MntFlags::MNT_DETACH);
        return Err(err(e));
    }
    Ok(())
}

/// The kernel copies at most one page of legacy mount options.
const MAX_MOUNT_OPTIONS: usize = 4095;

/// Mounts an overlayfs on `dst`, `nosuid,nodev` from the start: `lower` (lowest first: the
/// image's layers in the store, never written), `upper` and `work` (empty directories on one
/// filesystem, the container's own). Layer paths must not contain `,` `:` or `\` (the image
/// store refuses such a root).
pub fn mount_overlay(
    lower: &[PathBuf],
    upper: &Path,
    work: &Path,
    dst: &Path,
) -> Result<(), MountError> {
    let lowerdir: Vec<String> = lower
        .iter()
        .rev()
        .map(|p| p.display().to_string())
        .collect();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        lowerdir.join(":"),
        upper.display(),
        work.display()
    );
    if data.len() > MAX_MOUNT_OPTIONS {
        return Err(MountError::OverlayOptions {
            layers: lower.len(),
            dst: dst.to_path_buf(),
            len: data.len(),
            max: MAX_MOUNT_OPTIONS,
        });
    }
    mount(
        Some("overlay"),
        dst,
        Some("overlay"),
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some(data.as_str()),
    )
    .map_err(|source| MountError::Overlay {
        layers: lower.len(),
        dst: dst.to_path_buf(),
        source,
    })
}

/// Makes `dir` a mount of its own (bound onto itself, `nosuid,nodev`), in a new shared peer
/// group: a mount made below it later propagates into the copies of it in other mount
/// namespaces that are its slaves (virtiofsd's sandbox makes its whole tree a slave), and,
/// private first, it never propagates back to the parent mount.
pub fn make_share(dir: &Path) -> Result<(), MountError> {
    bind_nosuid(dir, dir)?;
    for flag in [MsFlags::MS_PRIVATE, MsFlags::MS_SHARED] {
        if let Err(source) = mount(None::<&str>, dir, None::<&str>, flag, None::<&str>) {
            let _ = umount2(dir, MntFlags::MNT_DETACH);
            return Err(MountError::Propagation {
                dir: dir.to_path_buf(),
                source,
            });
        }
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first, from the calling thread's mountinfo (a thread
/// may have a mount namespace of its own).
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read("/proc/thread-self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .split(|c| *c == b'\n')
        // The fifth field is the mount point.
        .filter_map(|l| l.split(|c| *c == b' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// Detaches every mount at or below `dir`; true if none is left.
pub fn unmount_all_under(dir: &Path) -> bool {
    for m in mounts_under(dir) {
        if let Err(e) = umount2(&m, MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m.display(), error = %e, "cannot unmount");
        }
    }
    mounts_under(dir).is_empty()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mountinfo_escapes() {
        let p = |s: &str| unescape_mountinfo(s.as_bytes());
        assert_eq!(p(r"/a\040b\134c"), Path::new(r"/a b\c"));
        assert_eq!(p("/plain"), Path::new("/plain"));
        assert_eq!(p(r"/end\04"), Path::new(r"/end\04"));
    }
}
