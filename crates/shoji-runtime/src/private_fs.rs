//! What the host keeps from its other users: sandbox and state directories made 0700 and the
//! files in them 0600 (a spec holds `-e` secrets, logs hold the container's output), the
//! container's root filesystem reached only through a `nosuid,nodev` bind mount (a setuid-root
//! binary from an image, or one the guest made through virtio-fs, must not be a way to root for
//! a local user), and removal that never descends into a mount (a bundle's rootfs is the
//! user's, bind-mounted, not ours to delete). Decisions in `docs/adr/009-host-side-sandbox.md`.

use std::fs::File;
use std::io;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum PrivateFsError {
    #[error("cannot create private directory {path}")]
    Create {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("{path} is not a private directory of this user (uid {uid}): {why}; remove it or set [runtime] sandbox_root")]
    NotOurs {
        path: PathBuf,
        uid: u32,
        why: String,
    },
    #[error("cannot bind-mount {src} onto {dst} nosuid,nodev")]
    Mount {
        src: PathBuf,
        dst: PathBuf,
        #[source]
        source: nix::Error,
    },
}

/// Makes `path` (and missing parents, with the system's usual modes) and gives `path` itself
/// mode 0700. An existing `path` must be a real directory (not a symlink) owned by this user:
/// in a shared parent like `/tmp`, someone else could have made it first.
pub fn private_dir(path: &Path) -> Result<(), PrivateFsError> {
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(|source| PrivateFsError::Create {
            path: parent.to_path_buf(),
            source,
        })?;
    }
    match std::fs::DirBuilder::new().mode(0o700).create(path) {
        Ok(()) => return Ok(()),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(source) => {
            return Err(PrivateFsError::Create {
                path: path.to_path_buf(),
                source,
            })
        }
    }
    let uid = nix::unistd::geteuid().as_raw();
    let not_ours = |why: String| PrivateFsError::NotOurs {
        path: path.to_path_buf(),
        uid,
        why,
    };
    let meta = std::fs::symlink_metadata(path).map_err(|e| not_ours(e.to_string()))?;
    if !meta.file_type().is_dir() {
        return Err(not_ours("it is not a directory".into()));
    }
    if meta.uid() != uid {
        return Err(not_ours(format!("it belongs to uid {}", meta.uid())));
    }
    // A root made by an earlier Shoji (0755) is closed now.
    if meta.mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| not_ours(format!("cannot make it 0700: {e}")))?;
    }
    Ok(())
}

/// Creates `path` with mode 0700; fails if it exists (an id is taken once).
pub fn create_private_dir(path: &Path) -> io::Result<()> {
    std::fs::DirBuilder::new().mode(0o700).create(path)
}

/// Creates (or truncates) `path` for writing, mode 0600.
pub fn private_file(path: &Path) -> io::Result<File> {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // `mode` applies only to a file created now.
    f.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(f)
}

/// Writes `data` to `path`, mode 0600.
pub fn write_private(path: &Path, data: &[u8]) -> io::Result<()> {
    use std::io::Write;
    private_file(path)?.write_all(data)
}

/// Whether bind mounts can be made: only root (in the initial user namespace) can.
pub fn can_mount() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Bind-mounts `src` onto `dst` (an existing directory; the same path is fine) and makes that
/// mount `nosuid,nodev`. Modes, owners and xattrs are untouched, so the guest sees the image as
/// it is; only the host's exec of a setuid file and open of a device node through this path
/// are refused. Not recursive: mounts below `src` are not reachable through `dst`.
pub fn bind_nosuid(src: &Path, dst: &Path) -> Result<(), PrivateFsError> {
    use nix::mount::{mount, MsFlags};
    let err = |source| PrivateFsError::Mount {
        src: src.to_path_buf(),
        dst: dst.to_path_buf(),
        source,
    };
    mount(Some(src), dst, None::<&str>, MsFlags::MS_BIND, None::<&str>).map_err(err)?;
    // A bind mount takes its flags from a remount; MS_BIND keeps the other flags as they are.
    let flags = MsFlags::MS_REMOUNT | MsFlags::MS_BIND | MsFlags::MS_NOSUID | MsFlags::MS_NODEV;
    if let Err(e) = mount(None::<&str>, dst, None::<&str>, flags, None::<&str>) {
        let _ = nix::mount::umount2(dst, nix::mount::MntFlags::MNT_DETACH);
        return Err(err(e));
    }
    Ok(())
}

/// Mount points at or below `dir`, deepest first, from `/proc/self/mountinfo`.
pub fn mounts_under(dir: &Path) -> Vec<PathBuf> {
    let Ok(text) = std::fs::read("/proc/self/mountinfo") else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = text
        .split(|c| *c == b'\n')
        .filter_map(|l| l.split(|c| *c == b' ').nth(4))
        .map(unescape_mountinfo)
        .filter(|p| p.starts_with(dir))
        .collect();
    found.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    found.dedup();
    found
}

/// mountinfo writes space, tab, newline and backslash as `\ooo` octal escapes.
fn unescape_mountinfo(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let n = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
            if let Ok(n) = u8::try_from(n) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// Detaches every mount at or below `dir`; true if none is left.
pub fn unmount_all_under(dir: &Path) -> bool {
    for m in mounts_under(dir) {
        if let Err(e) = nix::mount::umount2(&m, nix::mount::MntFlags::MNT_DETACH) {
            tracing::warn!(mount = %m.display(), error = %e, "cannot unmount");
        }
    }
    mounts_under(dir).is_empty()
}

/// Removes `dir` and everything in it, after detaching the mounts below it. If a mount cannot
/// be detached nothing is removed: deleting through it would delete what it shows (a bundle's
/// rootfs is the user's own directory).
pub fn remove_sandbox_dir(dir: &Path) -> io::Result<()> {
    if !unmount_all_under(dir) {
        return Err(io::Error::other(format!(
            "mounts are left below {}; not removing it",
            dir.display()
        )));
    }
    match std::fs::remove_dir_all(dir) {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        r => r,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_private_dir_is_0700_and_an_open_one_is_closed() {
        let t = tempfile::tempdir().unwrap();
        let d = t.path().join("a/b");
        private_dir(&d).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().mode() & 0o7777;
        assert_eq!(mode(&d), 0o700);
        std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o755)).unwrap();
        private_dir(&d).unwrap();
        assert_eq!(mode(&d), 0o700);
        let f = d.join("secret");
        write_private(&f, b"x").unwrap();
        assert_eq!(mode(&f), 0o600);
    }

    #[test]
    fn a_symlink_is_not_a_private_dir() {
        let t = tempfile::tempdir().unwrap();
        let target = t.path().join("elsewhere");
        std::fs::create_dir(&target).unwrap();
        let link = t.path().join("root");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let e = private_dir(&link).unwrap_err();
        assert!(e.to_string().contains("not a directory"), "{e}");
    }

    #[test]
    fn mountinfo_escapes() {
        let p = |s: &str| unescape_mountinfo(s.as_bytes());
        assert_eq!(p(r"/a\040b\134c"), Path::new(r"/a b\c"));
        assert_eq!(p("/plain"), Path::new("/plain"));
        assert_eq!(p(r"/end\04"), Path::new(r"/end\04"));
    }
}
