//! Directories and files only this user can read: sandbox and state directories 0700, the
//! files in them 0600 (a spec holds `-e` secrets, logs hold the container's output). The
//! rootfs mount that keeps setuid files from local users is [`crate::sandbox::mounts`].
//! Decisions in `docs/adr/009-host-side-sandbox.md`.

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
}
