//! One layer's tar stream applied onto a [`Root`], with the OCI image-spec's layer rules:
//! - `DIR/.wh.NAME` removes NAME (a whole tree if it is a directory) from the lower layers;
//! - `DIR/.wh..wh..opq` removes everything in DIR that this layer did not itself create;
//! - other `.wh..wh.*` names (aufs metadata) are ignored;
//! - an entry replaces what is at its path, except that a directory over a directory keeps the
//!   contents (and takes the new metadata), as Docker and containerd do; so a later layer may
//!   replace a symlink or a file with a directory.
//!
//! Every path, whiteouts and hard-link targets included, is resolved inside the root (see
//! [`crate::root`]); the entry's own name is never followed, so a symlink made by an earlier
//! entry or layer is replaced, not written through. Modes are kept whole (setuid, setgid,
//! sticky), ownership when running as root, and the `user.*` and `security.capability`
//! extended attributes; other attributes (`trusted.*`, `security.selinux`, ...) are dropped,
//! since they would mean something to the host (an overlayfs using the tree, its labels).

use std::collections::HashSet;
use std::ffi::OsStr;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use rustix::fs::{AtFlags, FileType, Mode, OFlags, Timespec, Timestamps, XattrFlags};

use crate::root::{self, RelPath, Root};

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("cannot read the layer's tar stream")]
    Read {
        #[source]
        source: io::Error,
    },
    #[error("cannot {op} {path:?} in {rootfs}")]
    Entry {
        op: &'static str,
        path: String,
        rootfs: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "no space left on device while writing {path:?} into {rootfs}: free space on that \
         filesystem and try again"
    )]
    NoSpace { path: String, rootfs: String },
    #[error("entry {path:?}: {reason}")]
    BadEntry { path: String, reason: String },
}

/// What applying one layer did.
#[derive(Debug, Default, Clone, Copy)]
pub struct LayerStats {
    pub entries: u64,
    pub bytes: u64,
    pub whiteouts: u64,
}

#[derive(Debug, Clone, Copy)]
pub struct ApplyOptions {
    /// Set owners from the layer (needs root); otherwise files belong to the caller.
    pub same_owner: bool,
    /// The layer is unpacked alone, into an empty directory that will be an overlayfs lower
    /// layer: a whiteout becomes an overlayfs whiteout (a character device 0/0, needs root)
    /// and an opaque marker the `trusted.overlay.opaque` attribute of its directory, instead
    /// of removing what lower layers hold.
    pub overlay_whiteouts: bool,
}

impl Default for ApplyOptions {
    fn default() -> Self {
        Self {
            same_owner: rustix::process::geteuid().is_root(),
            overlay_whiteouts: false,
        }
    }
}

/// What overlayfs reads as "this directory hides the lower layers' contents".
pub const OVERLAY_OPAQUE_XATTR: &str = "trusted.overlay.opaque";

const OPAQUE: &[u8] = b".wh..wh..opq";
const WHITEOUT: &[u8] = b".wh.";
const XATTR_PREFIX: &str = "SCHILY.xattr.";

fn keep_xattr(name: &str) -> bool {
    name.starts_with("user.") || name == "security.capability"
}

struct Applier<'a> {
    root: &'a Root,
    opts: ApplyOptions,
    /// (device, inode) of everything this layer created: an opaque whiteout keeps those.
    created: HashSet<(u64, u64)>,
    stats: LayerStats,
}

/// Applies the tar stream `layer` onto `root`. The stream is read up to the tar's end marker;
/// the caller drains the rest if it hashes it.
pub fn apply_layer(
    root: &Root,
    layer: impl Read,
    opts: ApplyOptions,
) -> Result<LayerStats, ApplyError> {
    let mut archive = tar::Archive::new(layer);
    let mut a = Applier {
        root,
        opts,
        created: HashSet::new(),
        stats: LayerStats::default(),
    };
    for entry in archive
        .entries()
        .map_err(|source| ApplyError::Read { source })?
    {
        let mut entry = entry.map_err(|source| ApplyError::Read { source })?;
        a.entry(&mut entry)?;
    }
    Ok(a.stats)
}

impl Applier<'_> {
    fn err(&self, op: &'static str, path: &RelPath, source: io::Error) -> ApplyError {
        let rootfs = self.root.path().display().to_string();
        if matches!(
            source.raw_os_error(),
            Some(e) if e == rustix::io::Errno::NOSPC.raw_os_error()
                || e == rustix::io::Errno::DQUOT.raw_os_error()
        ) {
            return ApplyError::NoSpace {
                path: path.to_string(),
                rootfs,
            };
        }
        ApplyError::Entry {
            op,
            path: path.to_string(),
            rootfs,
            source,
        }
    }

    fn entry<R: Read>(&mut self, entry: &mut tar::Entry<'_, R>) -> Result<(), ApplyError> {
        let rel = RelPath::clean(&entry.path_bytes());
        let Some((parent, name)) = rel.split_last() else {
            return Ok(()); // the root itself: its metadata is the runtime's
        };
        let name = name.to_os_string();
        self.stats.entries += 1;
        let bytes = name.as_bytes();
        if bytes == OPAQUE {
            self.stats.whiteouts += 1;
            if self.opts.overlay_whiteouts {
                return self.overlay_opaque(&parent, &rel);
            }
            return self.opaque(&parent, &rel);
        }
        if bytes.starts_with(b".wh..wh.") {
            return Ok(());
        }
        if let Some(hidden) = bytes.strip_prefix(WHITEOUT) {
            self.stats.whiteouts += 1;
            if self.opts.overlay_whiteouts {
                return self.overlay_whiteout(&parent, OsStr::from_bytes(hidden), &rel);
            }
            return self.whiteout(&parent, OsStr::from_bytes(hidden), &rel);
        }
        let kind = entry.header().entry_type();
        let is_dir = kind == tar::EntryType::Directory;
        match kind {
            tar::EntryType::Regular
            | tar::EntryType::Continuous
            | tar::EntryType::GNUSparse
            | tar::EntryType::Directory
            | tar::EntryType::Symlink
            | tar::EntryType::Link
            | tar::EntryType::Char
            | tar::EntryType::Block
            | tar::EntryType::Fifo => {}
            tar::EntryType::XGlobalHeader => return Ok(()),
            other => {
                return Err(ApplyError::BadEntry {
                    path: rel.to_string(),
                    reason: format!("unsupported tar entry type {:?}", other.as_byte() as char),
                })
            }
        }
        // Directories made on the way belong to this layer too (an opaque whiteout keeps them).
        let mut made = Vec::new();
        let dir = self
            .root
            .ensure_dir(&parent, &mut |fd| {
                if let Ok(st) = rustix::fs::fstat(fd) {
                    made.push((st.st_dev, st.st_ino));
                }
            })
            .map_err(|e| self.err("create the parent directory of", &rel, e))?;
        self.created.extend(made);
        // Replace what is there, unless directory over directory.
        match rustix::fs::statat(&dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(st) => {
                let existing_dir = FileType::from_raw_mode(st.st_mode) == FileType::Directory;
                if !(existing_dir && is_dir) {
                    root::remove_at(dir.as_fd(), &name)
                        .map_err(|e| self.err("replace", &rel, e))?;
                }
            }
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(self.err("inspect", &rel, e.into())),
        }
        let (uid, gid) = owner(entry).map_err(|reason| ApplyError::BadEntry {
            path: rel.to_string(),
            reason,
        })?;
        let header = entry.header();
        let mode = header.mode().unwrap_or(0o644) & 0o7777;
        let mtime = header.mtime().unwrap_or(0).min(i64::MAX as u64) as i64;
        match kind {
            tar::EntryType::Directory => {
                match rustix::fs::mkdirat(&dir, &name, Mode::from_raw_mode(0o700)) {
                    Ok(()) | Err(rustix::io::Errno::EXIST) => {}
                    Err(e) => return Err(self.err("create directory", &rel, e.into())),
                }
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| self.err("open directory", &rel, e.into()))?;
                self.finish_fd(&fd, entry, uid, gid, mode, mtime, &rel)?;
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .ok_or_else(|| ApplyError::BadEntry {
                        path: rel.to_string(),
                        reason: "symlink without a target".into(),
                    })?
                    .into_owned();
                rustix::fs::symlinkat(OsStr::from_bytes(&target), &dir, &name)
                    .map_err(|e| self.err("create symlink", &rel, e.into()))?;
                if self.opts.same_owner {
                    rustix::fs::chownat(&dir, &name, uid, gid, AtFlags::SYMLINK_NOFOLLOW)
                        .map_err(|e| self.err("set the owner of", &rel, e.into()))?;
                }
                let _ =
                    rustix::fs::utimensat(&dir, &name, &times(mtime), AtFlags::SYMLINK_NOFOLLOW);
                self.remember(&dir, &name);
            }
            tar::EntryType::Link => {
                let target = entry
                    .link_name_bytes()
                    .map(|t| RelPath::clean(&t))
                    .unwrap_or_default();
                let Some((tparent, tname)) = target.split_last() else {
                    return Err(ApplyError::BadEntry {
                        path: rel.to_string(),
                        reason: "hard link without a target".into(),
                    });
                };
                let tdir = self
                    .root
                    .open_dir(&tparent)
                    .map_err(|e| self.err("find the hard-link target of", &rel, e))?;
                // No AT_SYMLINK_FOLLOW: a link to a symlink links the symlink itself.
                rustix::fs::linkat(&tdir, tname, &dir, &name, AtFlags::empty()).map_err(|e| {
                    self.err(
                        "create hard link (to a file inside the image)",
                        &rel,
                        e.into(),
                    )
                })?;
                self.remember(&dir, &name);
            }
            tar::EntryType::Char | tar::EntryType::Block | tar::EntryType::Fifo => {
                let ft = match kind {
                    tar::EntryType::Char => FileType::CharacterDevice,
                    tar::EntryType::Block => FileType::BlockDevice,
                    _ => FileType::Fifo,
                };
                let dev = rustix::fs::makedev(
                    header.device_major().ok().flatten().unwrap_or(0),
                    header.device_minor().ok().flatten().unwrap_or(0),
                );
                match rustix::fs::mknodat(&dir, &name, ft, Mode::from_raw_mode(0o600), dev) {
                    Ok(()) => {}
                    // Unprivileged: device nodes cannot be made; the guest has its own /dev.
                    Err(rustix::io::Errno::PERM) if !self.opts.same_owner => {
                        tracing::warn!(path = %rel, "device node skipped: not running as root");
                        return Ok(());
                    }
                    Err(e) => return Err(self.err("create device node", &rel, e.into())),
                }
                // O_PATH opens the node itself, never its device; chmod/chown go through it.
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::PATH | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )
                .map_err(|e| self.err("open", &rel, e.into()))?;
                if self.opts.same_owner {
                    rustix::fs::chownat(&fd, c"", uid, gid, AtFlags::EMPTY_PATH)
                        .map_err(|e| self.err("set the owner of", &rel, e.into()))?;
                }
                rustix::fs::chmodat(&dir, &name, Mode::from_raw_mode(mode), AtFlags::empty())
                    .map_err(|e| self.err("set the mode of", &rel, e.into()))?;
                self.remember(&dir, &name);
            }
            _ => {
                let fd = rustix::fs::openat(
                    &dir,
                    &name,
                    OFlags::WRONLY
                        | OFlags::CREATE
                        | OFlags::EXCL
                        | OFlags::NOFOLLOW
                        | OFlags::CLOEXEC,
                    Mode::from_raw_mode(0o600),
                )
                .map_err(|e| self.err("create", &rel, e.into()))?;
                let mut file = File::from(fd);
                let n = self.copy_data(entry, &mut file, &rel)?;
                self.stats.bytes += n;
                let fd = OwnedFd::from(file);
                self.finish_fd(&fd, entry, uid, gid, mode, mtime, &rel)?;
            }
        }
        Ok(())
    }

    /// Copies the entry's data; read errors are the layer's, write errors the destination's.
    fn copy_data(
        &self,
        from: &mut impl Read,
        to: &mut File,
        rel: &RelPath,
    ) -> Result<u64, ApplyError> {
        let mut buf = vec![0u8; 128 * 1024];
        let mut total = 0u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => return Ok(total),
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(source) => return Err(ApplyError::Read { source }),
            };
            to.write_all(&buf[..n])
                .map_err(|e| self.err("write", rel, e))?;
            total += n as u64;
        }
    }

    fn remember(&mut self, dir: &OwnedFd, name: &OsStr) {
        if let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW) {
            self.created.insert((st.st_dev, st.st_ino));
        }
    }

    /// Owner, mode (after the owner: chown clears setuid), attributes and time of a file or
    /// directory this layer made.
    #[allow(clippy::too_many_arguments)]
    fn finish_fd<R: Read>(
        &mut self,
        fd: &OwnedFd,
        entry: &mut tar::Entry<'_, R>,
        uid: Option<rustix::fs::Uid>,
        gid: Option<rustix::fs::Gid>,
        mode: u32,
        mtime: i64,
        rel: &RelPath,
    ) -> Result<(), ApplyError> {
        if self.opts.same_owner {
            rustix::fs::fchown(fd, uid, gid)
                .map_err(|e| self.err("set the owner of", rel, e.into()))?;
        }
        rustix::fs::fchmod(fd, Mode::from_raw_mode(mode))
            .map_err(|e| self.err("set the mode of", rel, e.into()))?;
        if let Ok(Some(exts)) = entry.pax_extensions() {
            for ext in exts.flatten() {
                let Ok(key) = ext.key() else { continue };
                let Some(name) = key.strip_prefix(XATTR_PREFIX) else {
                    continue;
                };
                if !keep_xattr(name) {
                    continue;
                }
                match rustix::fs::fsetxattr(fd, name, ext.value_bytes(), XattrFlags::empty()) {
                    Ok(()) => {}
                    Err(e @ (rustix::io::Errno::NOTSUP | rustix::io::Errno::PERM)) => {
                        tracing::warn!(path = %rel, xattr = name, error = %e, "extended attribute not kept");
                    }
                    Err(e) => return Err(self.err("set an extended attribute of", rel, e.into())),
                }
            }
        }
        let _ = rustix::fs::futimens(fd, &times(mtime));
        if let Ok(st) = rustix::fs::fstat(fd) {
            self.created.insert((st.st_dev, st.st_ino));
        }
        Ok(())
    }

    fn whiteout(
        &mut self,
        parent: &RelPath,
        hidden: &OsStr,
        rel: &RelPath,
    ) -> Result<(), ApplyError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." {
            return Err(ApplyError::BadEntry {
                path: rel.to_string(),
                reason: "whiteout of no name".into(),
            });
        }
        let Some(dir) = self.lower_dir(parent, rel)? else {
            return Ok(());
        };
        root::remove_at(dir.as_fd(), hidden).map_err(|e| self.err("apply whiteout", rel, e))
    }

    fn opaque(&mut self, parent: &RelPath, rel: &RelPath) -> Result<(), ApplyError> {
        let Some(dir) = self.lower_dir(parent, rel)? else {
            return Ok(());
        };
        self.clear_lower(dir.as_fd(), 0)
            .map_err(|e| self.err("apply opaque whiteout", rel, e))
    }

    /// The parent of an overlayfs whiteout or opaque marker, made if missing (it belongs to
    /// this layer then).
    fn marker_dir(&mut self, parent: &RelPath, rel: &RelPath) -> Result<OwnedFd, ApplyError> {
        let mut made = Vec::new();
        let dir = self
            .root
            .ensure_dir(parent, &mut |fd| {
                if let Ok(st) = rustix::fs::fstat(fd) {
                    made.push((st.st_dev, st.st_ino));
                }
            })
            .map_err(|e| self.err("create the directory of whiteout", rel, e))?;
        self.created.extend(made);
        Ok(dir)
    }

    /// `.wh.NAME` as overlayfs writes it: a character device 0/0 named NAME. The OCI rules say
    /// a whiteout hides only lower layers, so a NAME this layer made itself stays.
    fn overlay_whiteout(
        &mut self,
        parent: &RelPath,
        hidden: &OsStr,
        rel: &RelPath,
    ) -> Result<(), ApplyError> {
        if hidden.is_empty() || hidden == "." || hidden == ".." || hidden.as_bytes().contains(&b'/')
        {
            return Err(ApplyError::BadEntry {
                path: rel.to_string(),
                reason: "whiteout of no name".into(),
            });
        }
        let dir = self.marker_dir(parent, rel)?;
        match rustix::fs::statat(&dir, hidden, AtFlags::SYMLINK_NOFOLLOW) {
            Ok(_) => return Ok(()),
            Err(rustix::io::Errno::NOENT) => {}
            Err(e) => return Err(self.err("inspect", rel, e.into())),
        }
        rustix::fs::mknodat(
            &dir,
            hidden,
            FileType::CharacterDevice,
            Mode::from_raw_mode(0o600),
            rustix::fs::makedev(0, 0),
        )
        .map_err(|e| self.err("create overlay whiteout", rel, e.into()))?;
        self.remember(&dir, hidden);
        Ok(())
    }

    /// `.wh..wh..opq` as overlayfs writes it: the directory marked opaque.
    fn overlay_opaque(&mut self, parent: &RelPath, rel: &RelPath) -> Result<(), ApplyError> {
        let dir = self.marker_dir(parent, rel)?;
        rustix::fs::fsetxattr(&dir, OVERLAY_OPAQUE_XATTR, b"y", XattrFlags::empty())
            .map_err(|e| self.err("mark opaque", rel, e.into()))
    }

    /// The directory a whiteout applies to; `None` if it does not exist (nothing to hide).
    fn lower_dir(&self, parent: &RelPath, rel: &RelPath) -> Result<Option<OwnedFd>, ApplyError> {
        match self.root.open_dir(parent) {
            Ok(fd) => Ok(Some(fd)),
            Err(e)
                if matches!(
                    e.raw_os_error(),
                    Some(c) if c == rustix::io::Errno::NOENT.raw_os_error()
                        || c == rustix::io::Errno::NOTDIR.raw_os_error()
                ) =>
            {
                Ok(None)
            }
            Err(e) => Err(self.err("open the directory of whiteout", rel, e)),
        }
    }

    /// Removes from `dir` everything this layer did not create, descending into what it did.
    fn clear_lower(&self, dir: BorrowedFd<'_>, depth: usize) -> io::Result<()> {
        if depth >= root::MAX_REMOVE_DEPTH {
            return Err(io::Error::other("directory tree too deep"));
        }
        for name in root::children(dir)? {
            let st = match rustix::fs::statat(dir, &name, AtFlags::SYMLINK_NOFOLLOW) {
                Ok(st) => st,
                Err(rustix::io::Errno::NOENT) => continue,
                Err(e) => return Err(e.into()),
            };
            if !self.created.contains(&(st.st_dev, st.st_ino)) {
                root::remove_at(dir, &name)?;
            } else if FileType::from_raw_mode(st.st_mode) == FileType::Directory {
                let sub = rustix::fs::openat(
                    dir,
                    &name,
                    OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NOFOLLOW,
                    Mode::empty(),
                )?;
                self.clear_lower(sub.as_fd(), depth + 1)?;
            }
        }
        Ok(())
    }
}

fn times(mtime: i64) -> Timestamps {
    let t = Timespec {
        tv_sec: mtime,
        tv_nsec: 0,
    };
    Timestamps {
        last_access: t,
        last_modification: t,
    }
}

/// The entry's owner: PAX `uid`/`gid` records override the header's numbers.
fn owner<R: Read>(
    entry: &mut tar::Entry<'_, R>,
) -> Result<(Option<rustix::fs::Uid>, Option<rustix::fs::Gid>), String> {
    let mut uid = entry.header().uid().map_err(|e| e.to_string())?;
    let mut gid = entry.header().gid().map_err(|e| e.to_string())?;
    if let Ok(Some(exts)) = entry.pax_extensions() {
        for ext in exts.flatten() {
            let parse = |v: &[u8]| std::str::from_utf8(v).ok()?.parse::<u64>().ok();
            match ext.key() {
                Ok("uid") => uid = parse(ext.value_bytes()).ok_or("bad PAX uid")?,
                Ok("gid") => gid = parse(ext.value_bytes()).ok_or("bad PAX gid")?,
                _ => {}
            }
        }
    }
    // u32::MAX is chown's "leave unchanged", not an id.
    let uid = u32::try_from(uid)
        .ok()
        .filter(|&u| u != u32::MAX)
        .ok_or_else(|| format!("uid {uid} out of range"))?;
    let gid = u32::try_from(gid)
        .ok()
        .filter(|&g| g != u32::MAX)
        .ok_or_else(|| format!("gid {gid} out of range"))?;
    Ok((
        Some(rustix::fs::Uid::from_raw(uid)),
        Some(rustix::fs::Gid::from_raw(gid)),
    ))
}
