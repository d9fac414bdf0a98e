//! A root directory inside which every path is resolved by the kernel: `openat2` with
//! `RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS` from the root's file descriptor, so a symlink (even
//! an absolute one, or `..` past the top) can never lead out of it, whatever the image put there.
//! The last component of a path is never followed: it is handled with `*at` calls on its parent's
//! descriptor (`AT_SYMLINK_NOFOLLOW`, `O_NOFOLLOW`, `unlinkat`).

use std::ffi::{CString, OsStr, OsString};
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use rustix::fs::{AtFlags, Mode, OFlags, ResolveFlags};

/// How deep a directory tree is removed before giving up (a hostile image could nest
/// directories through symlinks far deeper than any real one).
pub const MAX_REMOVE_DEPTH: usize = 512;

/// A path inside the root: normal components only (no `.`, `..` or empty ones).
#[derive(Debug, Clone, PartialEq, Eq, Hash, Default)]
pub struct RelPath(Vec<OsString>);

impl RelPath {
    /// Cleans a path from an image: `./`, `/` and empty components dropped, `..` taken
    /// lexically (at the top it stays at the top, as the kernel does at `/`).
    pub fn clean(raw: &[u8]) -> Self {
        let mut parts: Vec<OsString> = Vec::new();
        for c in raw.split(|&b| b == b'/') {
            match c {
                b"" | b"." => {}
                b".." => {
                    parts.pop();
                }
                c => parts.push(OsStr::from_bytes(c).to_os_string()),
            }
        }
        Self(parts)
    }

    pub fn is_root(&self) -> bool {
        self.0.is_empty()
    }

    /// The parent and the last component; `None` for the root itself.
    pub fn split_last(&self) -> Option<(RelPath, &OsStr)> {
        let (last, parent) = self.0.split_last()?;
        Some((RelPath(parent.to_vec()), last.as_os_str()))
    }

    fn to_cstring(&self) -> CString {
        if self.0.is_empty() {
            return c".".to_owned();
        }
        let mut v = Vec::new();
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                v.push(b'/');
            }
            v.extend_from_slice(c.as_bytes());
        }
        // Components come from splitting tar names, which end at their first NUL.
        CString::new(v).unwrap_or_else(|_| c".".to_owned())
    }
}

impl std::fmt::Display for RelPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "/")?;
        for (i, c) in self.0.iter().enumerate() {
            if i > 0 {
                write!(f, "/")?;
            }
            write!(f, "{}", c.to_string_lossy())?;
        }
        Ok(())
    }
}

/// The root directory everything is confined to.
pub struct Root {
    fd: OwnedFd,
    path: PathBuf,
}

fn resolve() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

impl Root {
    pub fn open(path: &Path) -> io::Result<Self> {
        let fd = rustix::fs::open(
            path,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
        )?;
        Ok(Self {
            fd,
            path: path.to_path_buf(),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }

    /// Opens the directory `rel`, following symlinks on the way, inside the root.
    pub fn open_dir(&self, rel: &RelPath) -> io::Result<OwnedFd> {
        Ok(rustix::fs::openat2(
            &self.fd,
            rel.to_cstring(),
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
            Mode::empty(),
            resolve(),
        )?)
    }

    /// Opens the directory `rel`, creating missing components (mode 0755) inside the root;
    /// `created` is called with each directory made.
    pub fn ensure_dir(
        &self,
        rel: &RelPath,
        created: &mut dyn FnMut(BorrowedFd<'_>),
    ) -> io::Result<OwnedFd> {
        match self.open_dir(rel) {
            Err(e) if e.raw_os_error() == Some(libc_enoent()) => {}
            other => return other,
        }
        let mut cur = rustix::io::dup(&self.fd)?;
        for i in 0..rel.0.len() {
            let prefix = RelPath(rel.0[..=i].to_vec());
            cur = match self.open_dir(&prefix) {
                Ok(fd) => fd,
                Err(e) if e.raw_os_error() == Some(libc_enoent()) => {
                    let name = rel.0[i].as_os_str();
                    match rustix::fs::mkdirat(&cur, name, Mode::from_raw_mode(0o755)) {
                        Ok(()) => {}
                        Err(rustix::io::Errno::EXIST) => {}
                        Err(e) => return Err(e.into()),
                    }
                    // A dangling symlink in the way makes this fail (ELOOP/ENOTDIR): refused.
                    let fd = rustix::fs::openat(
                        &cur,
                        name,
                        OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                        Mode::empty(),
                    )?;
                    created(fd.as_fd());
                    fd
                }
                Err(e) => return Err(e),
            };
        }
        Ok(cur)
    }
}

fn libc_enoent() -> i32 {
    rustix::io::Errno::NOENT.raw_os_error()
}

/// Removes `name` in `dir` (a whole tree if it is a directory), never following a symlink.
/// Missing is not an error.
pub fn remove_at(dir: BorrowedFd<'_>, name: &OsStr) -> io::Result<()> {
    remove_at_depth(dir, name, 0)
}

fn remove_at_depth(dir: BorrowedFd<'_>, name: &OsStr, depth: usize) -> io::Result<()> {
    let st = match rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => st,
        Err(rustix::io::Errno::NOENT) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    if rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Directory {
        if depth >= MAX_REMOVE_DEPTH {
            return Err(io::Error::other(format!(
                "directory tree deeper than {MAX_REMOVE_DEPTH} levels"
            )));
        }
        let sub = rustix::fs::openat(
            dir,
            name,
            OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
            Mode::empty(),
        )?;
        for child in children(sub.as_fd())? {
            remove_at_depth(sub.as_fd(), &child, depth + 1)?;
        }
        rustix::fs::unlinkat(dir, name, AtFlags::REMOVEDIR)?;
    } else {
        rustix::fs::unlinkat(dir, name, AtFlags::empty())?;
    }
    Ok(())
}

/// The names in directory `dir` (without `.` and `..`).
pub fn children(dir: BorrowedFd<'_>) -> io::Result<Vec<OsString>> {
    let mut d = rustix::fs::Dir::read_from(dir)?;
    let mut out = Vec::new();
    while let Some(e) = d.read() {
        let e = e?;
        let n = e.file_name().to_bytes();
        if n != b"." && n != b".." {
            out.push(OsStr::from_bytes(n).to_os_string());
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_drops_dot_slash_and_keeps_dotdot_at_the_top() {
        assert_eq!(
            RelPath::clean(b"./etc/.wh.motd").to_string(),
            "/etc/.wh.motd"
        );
        assert_eq!(
            RelPath::clean(b"../../etc/passwd").to_string(),
            "/etc/passwd"
        );
        assert_eq!(RelPath::clean(b"a/../../b//c/.").to_string(), "/b/c");
        assert!(RelPath::clean(b"./").is_root());
    }

    #[test]
    fn absolute_symlinks_resolve_inside_the_root() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        let outside = t.path().join("outside");
        std::fs::create_dir_all(root.join("inside")).unwrap();
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("esc")).unwrap();
        std::os::unix::fs::symlink("..", root.join("up")).unwrap();
        let r = Root::open(&root).unwrap();
        // `esc` names a host path: resolved inside the root it dangles, and a directory is
        // never made through a dangling symlink.
        assert!(r
            .ensure_dir(&RelPath::clean(b"esc/x"), &mut |_| {})
            .is_err());
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        std::fs::create_dir_all(root.join(outside.strip_prefix("/").unwrap())).unwrap();
        r.ensure_dir(&RelPath::clean(b"esc/x"), &mut |_| {})
            .unwrap();
        assert!(std::fs::read_dir(&outside).unwrap().next().is_none());
        assert!(root
            .join(outside.strip_prefix("/").unwrap())
            .join("x")
            .is_dir());
        r.ensure_dir(&RelPath::clean(b"up/y"), &mut |_| {}).unwrap();
        assert!(root.join("y").is_dir());
        assert!(!t.path().join("y").exists());
    }
}
