//! Host side of a bind volume: the host path is opened once (`O_PATH`), checked through that
//! descriptor, and its mount tree cloned from it (`open_tree`), made `nosuid,nodev` (and
//! read-only when asked) recursively while still detached (`mount_setattr`), then attached at
//! `<container dir>/mounts/<n>` in the shared directory (`move_mount`) with the asked
//! propagation. No step looks the path up again, so swapping a directory for a symlink between
//! the check and the bind gains nothing, and a read-only volume is never writable on the host,
//! not even for a moment, not even for virtiofsd (root).
//!
//! `ro` makes the volume's own mount read-only, not the mounts below it (as runc's `rbind,ro`:
//! CRI's non-recursive read-only mount); `rro` makes them all read-only. The guest sees the whole tree through virtio-fs as one
//! file system, so it cannot tell where such a writable mount starts: for a read-only volume
//! with mounts below it, the guest's mount is left read-write and the host's read-only mount
//! refuses the writes (`EROFS`, "Read-only file system" in the container) everywhere but below.

use std::ffi::CString;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use oci_spec::runtime::Mount;

use crate::mount_ns::{MountNs, MountNsError};

use super::{inside_forbidden, is_bind, is_readonly, is_recursively_readonly, is_standard};

#[derive(Debug, thiserror::Error)]
pub enum StageError {
    #[error("volume {destination}: cannot open host path {path}")]
    Open {
        destination: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("volume {destination}: {reason}")]
    Refused { destination: String, reason: String },
    #[error("volume {destination}: {step} for {path}")]
    Mount {
        destination: String,
        step: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the volumes' host paths in the host's mount namespace")]
    HostNamespace(#[source] MountNsError),
}

/// Where the guest finds bind `n` of a container, relative to the container's directory in the
/// share (the agent joins it to that directory; it never sees a host path).
pub fn guest_source(n: usize) -> PathBuf {
    PathBuf::from(format!("mounts/{n}"))
}

/// Binds every bind volume of `mounts` under `container_dir/mounts/` and rewrites its source to
/// [`guest_source`]. Other mounts are left as they are. `forbidden` as for [`super::check`],
/// checked again on the path the descriptor really names. Host paths are opened, and their
/// mount trees cloned, in `host` (the host's mount namespace, for a process serving from one
/// of its own), else in the calling thread's; the clones are attached in the calling thread's.
/// On error the binds made so far stay: they are below the sandbox directory, whose removal
/// detaches them.
pub fn stage(
    mounts: &mut [Mount],
    container_dir: &Path,
    forbidden: &[PathBuf],
    host: Option<&MountNs>,
) -> Result<(), StageError> {
    let binds: Vec<usize> = (0..mounts.len())
        .filter(|&i| is_bind(&mounts[i]) && !is_standard(&mounts[i]))
        .collect();
    let sources: Vec<(String, PathBuf)> = binds
        .iter()
        .map(|&i| {
            let m = &mounts[i];
            let destination = m.destination().display().to_string();
            (destination, m.source().clone().unwrap_or_default())
        })
        .collect();
    let open_all = || -> Result<Vec<Source>, StageError> {
        sources
            .iter()
            .map(|(destination, src)| open_source(src, forbidden).map_err(|e| e.named(destination)))
            .collect()
    };
    let opened = match host {
        Some(ns) => ns.run(open_all).map_err(StageError::HostNamespace)??,
        None => open_all()?,
    };
    for (n, ((&i, source), (destination, src))) in
        binds.iter().zip(opened).zip(&sources).enumerate()
    {
        let m = &mut mounts[i];
        let dst = container_dir.join(guest_source(n));
        let submounts = attach(m, source, src, &dst).map_err(|e| e.named(destination))?;
        m.set_source(Some(guest_source(n)));
        if submounts && is_readonly(m) && !is_recursively_readonly(m) {
            // The host enforces `ro` where it applies; in the guest it would cover the whole tree.
            let options = m.options().iter().flatten();
            let options = options.map(|o| if o == "ro" { "rw".into() } else { o.clone() });
            m.set_options(Some(options.collect()));
        }
    }
    Ok(())
}

/// A failure of one step, named by [`Failure::named`].
enum Failure {
    Open(PathBuf, std::io::Error),
    Forbidden(String),
    Step(&'static str, PathBuf, std::io::Error),
}

impl Failure {
    fn named(self, destination: &str) -> StageError {
        let destination = destination.to_string();
        match self {
            Failure::Open(path, source) => StageError::Open {
                destination,
                path,
                source,
            },
            Failure::Forbidden(reason) => StageError::Refused {
                destination,
                reason,
            },
            Failure::Step(step, path, source) => StageError::Mount {
                destination,
                step,
                path,
                source,
            },
        }
    }
}

fn last_error(step: &'static str, path: &Path) -> Failure {
    Failure::Step(step, path.to_path_buf(), std::io::Error::last_os_error())
}

/// A host path opened and checked: a detached copy of its mount tree, and whether it is a
/// directory.
struct Source {
    tree: OwnedFd,
    is_dir: bool,
}

/// Opens `src` once, checks what the descriptor names against `forbidden`, and clones its
/// mount tree (`open_tree` clones only from the caller's mount namespace).
fn open_source(src: &Path, forbidden: &[PathBuf]) -> Result<Source, Failure> {
    let src_c = CString::new(src.as_os_str().as_bytes())
        .map_err(|e| Failure::Open(src.into(), e.into()))?;
    // SAFETY: src_c is a valid NUL-terminated string; open returns a new fd or -1.
    let fd = unsafe { libc::open(src_c.as_ptr(), libc::O_PATH | libc::O_CLOEXEC) };
    if fd < 0 {
        return Err(Failure::Open(src.into(), std::io::Error::last_os_error()));
    }
    // SAFETY: fd was just returned by open and is owned by nothing else.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    // What the descriptor names, whatever the path names by now.
    let real = std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Failure::Open(src.into(), e))?;
    inside_forbidden(&real, forbidden).map_err(Failure::Forbidden)?;
    let is_dir = std::fs::metadata(format!("/proc/self/fd/{}", fd.as_raw_fd()))
        .map_err(|e| Failure::Open(src.into(), e))?
        .is_dir();

    let empty = c"";
    // SAFETY: open_tree with AT_EMPTY_PATH on a valid fd and an empty C string; it returns a
    // new fd (a detached copy of the mount tree at fd) or -1.
    let tree = unsafe {
        libc::syscall(
            libc::SYS_open_tree,
            fd.as_raw_fd(),
            empty.as_ptr(),
            libc::OPEN_TREE_CLONE
                | libc::OPEN_TREE_CLOEXEC
                | libc::AT_EMPTY_PATH as u32
                | libc::AT_RECURSIVE as u32,
        )
    };
    if tree < 0 {
        return Err(last_error("open_tree", src));
    }
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as i32) };
    Ok(Source { tree, is_dir })
}

/// Attaches `source` (opened from `src`) at `dst` with `m`'s options; returns whether its tree
/// has mounts below its top one.
fn attach(m: &Mount, source: Source, src: &Path, dst: &Path) -> Result<bool, Failure> {
    let Source { tree, is_dir } = source;
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent).map_err(|e| Failure::Step("mkdir", parent.into(), e))?;
    }
    if is_dir {
        std::fs::create_dir(dst).map_err(|e| Failure::Step("mkdir", dst.into(), e))?;
    } else {
        crate::private_fs::write_private(dst, b"")
            .map_err(|e| Failure::Step("create the mount point", dst.into(), e))?;
    }

    let empty = c"";
    let attr_set = libc::MOUNT_ATTR_NOSUID | libc::MOUNT_ATTR_NODEV;
    set_attr(&tree, attr_set, 0, true)
        .map_err(|e| Failure::Step("mount_setattr", src.into(), e))?;
    if is_readonly(m) {
        set_attr(
            &tree,
            libc::MOUNT_ATTR_RDONLY,
            0,
            is_recursively_readonly(m),
        )
        .map_err(|e| Failure::Step("mount_setattr ro", src.into(), e))?;
    }
    let dst_c = CString::new(dst.as_os_str().as_bytes())
        .map_err(|e| Failure::Open(dst.into(), e.into()))?;
    // SAFETY: move_mount of the detached tree (fd, empty path) onto dst, a valid C string.
    let r = unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            empty.as_ptr(),
            libc::AT_FDCWD,
            dst_c.as_ptr(),
            libc::MOVE_MOUNT_F_EMPTY_PATH,
        )
    };
    if r < 0 {
        return Err(last_error("move_mount", dst));
    }
    let slave = m
        .options()
        .iter()
        .flatten()
        .any(|o| o == "slave" || o == "rslave");
    let propagation = if slave {
        libc::MS_SLAVE
    } else {
        libc::MS_PRIVATE
    };
    set_attr(&tree, 0, propagation, true)
        .map_err(|e| Failure::Step("set propagation", dst.into(), e))?;
    // `dst` itself is one of them.
    Ok(crate::sandbox::mounts::mounts_under(dst).len() > 1)
}

/// `mount_setattr(fd, "", AT_EMPTY_PATH [| AT_RECURSIVE])` setting `attr_set` and `propagation`
/// on the tree's top mount or (`recursive`) on every mount of it.
fn set_attr(
    fd: &OwnedFd,
    attr_set: u64,
    propagation: libc::c_ulong,
    recursive: bool,
) -> std::io::Result<()> {
    let mut flags = libc::AT_EMPTY_PATH;
    if recursive {
        flags |= libc::AT_RECURSIVE;
    }
    let attr = libc::mount_attr {
        attr_set,
        attr_clr: 0,
        propagation,
        userns_fd: 0,
    };
    // SAFETY: a valid fd, an empty C string, and a mount_attr that lives across the call with
    // its size passed alongside.
    let r = unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd.as_raw_fd(),
            c"".as_ptr(),
            flags,
            &attr as *const libc::mount_attr,
            std::mem::size_of::<libc::mount_attr>(),
        )
    };
    if r < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::volumes::parse_volume;

    /// Runs `f` on a thread of its own in a private mount namespace: the binds it makes vanish
    /// with the thread and never show in the host's mount table.
    fn in_private_mount_ns(f: impl FnOnce() + Send + 'static) {
        assert!(
            nix::unistd::geteuid().is_root(),
            "staging volumes makes bind mounts and must run as root (CI does)"
        );
        std::thread::spawn(move || {
            crate::mount_ns::tests::private_ns();
            f()
        })
        .join()
        .unwrap();
    }

    fn mount_tmpfs(at: &Path) {
        let flags = nix::mount::MsFlags::empty();
        nix::mount::mount(Some("none"), at, Some("tmpfs"), flags, None::<&str>).unwrap();
    }

    #[test]
    fn read_only_volumes_are_read_only_on_the_host_and_sources_resolve_once() {
        in_private_mount_ns(|| {
            let host = tempfile::tempdir().unwrap();
            let state = tempfile::tempdir().unwrap();
            let (rw, ro, file) = (
                host.path().join("rw"),
                host.path().join("ro"),
                host.path().join("file"),
            );
            std::fs::create_dir(&rw).unwrap();
            std::fs::create_dir(&ro).unwrap();
            std::fs::write(&file, "one file").unwrap();
            // The host directory is a shared mount, as much of a systemd host is: the staged
            // binds must not stay its peers (rprivate) or only receive from it (rslave).
            let shared = |flags| {
                nix::mount::mount(
                    Some(host.path()),
                    host.path(),
                    None::<&str>,
                    flags,
                    None::<&str>,
                )
                .unwrap()
            };
            shared(nix::mount::MsFlags::MS_BIND);
            shared(nix::mount::MsFlags::MS_SHARED);
            let container = state.path().join("sb/shared/c1");
            let mut mounts = vec![
                parse_volume(&format!("{}:/rw", rw.display())).unwrap(),
                crate::volumes::parse_tmpfs("/tmp").unwrap(),
                parse_volume(&format!("{}:/ro:ro", ro.display())).unwrap(),
                parse_volume(&format!("{}:/etc/one:ro,rslave", file.display())).unwrap(),
            ];
            let forbidden = [state.path().join("sb-root")];
            stage(&mut mounts, &container, &forbidden, None).unwrap();
            let sources: Vec<_> = mounts.iter().map(|m| m.source().clone().unwrap()).collect();
            assert_eq!(
                sources,
                ["mounts/0", "tmpfs", "mounts/1", "mounts/2"].map(PathBuf::from)
            );
            // rw: written through the staging bind, seen in the host directory.
            std::fs::write(container.join("mounts/0/x"), "hi").unwrap();
            assert_eq!(std::fs::read_to_string(rw.join("x")).unwrap(), "hi");
            // ro: even root (what virtiofsd runs as) cannot write through it.
            let e = std::fs::write(container.join("mounts/1/x"), "no").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
            assert_eq!(
                std::fs::read_to_string(container.join("mounts/2")).unwrap(),
                "one file"
            );
            let e = std::fs::write(container.join("mounts/2"), "no").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
            let info = std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let line = |n: &str| {
                let p = container.join(n).display().to_string();
                info.lines()
                    .find(|l| l.split(' ').nth(4) == Some(p.as_str()))
                    .unwrap_or_else(|| panic!("{p} not mounted: {info}"))
                    .to_string()
            };
            assert!(
                line("mounts/1").contains(" ro,nosuid,nodev"),
                "{}",
                line("mounts/1")
            );
            assert!(
                line("mounts/0").contains(" rw,nosuid,nodev"),
                "{}",
                line("mounts/0")
            );
            assert!(
                line("mounts/2").contains("master:"),
                "slave: {}",
                line("mounts/2")
            );
            assert!(
                !line("mounts/0").contains("shared:"),
                "{}",
                line("mounts/0")
            );
            // Detached before the temporary directories are removed (rmdir of a mount point
            // in this namespace would fail and leave them behind).
            for n in ["mounts/0", "mounts/1", "mounts/2"] {
                nix::mount::umount2(&container.join(n), nix::mount::MntFlags::MNT_DETACH).unwrap();
            }
            nix::mount::umount2(host.path(), nix::mount::MntFlags::MNT_DETACH).unwrap();
        });
    }

    /// Issue 12 (critest's `should support non-recursive readonly mounts`): `ro` (CRI's
    /// read-only volume) is the volume's own mount, a tmpfs mounted below it on the host stays
    /// writable; `rro` (`-v ...:ro`, CRI's recursive read-only) covers the tmpfs too.
    #[test]
    fn a_read_only_volume_leaves_the_mounts_below_it_writable_unless_recursive() {
        in_private_mount_ns(|| {
            let host = tempfile::tempdir().unwrap();
            let state = tempfile::tempdir().unwrap();
            let (plain, below) = (host.path().join("plain"), host.path().join("vol"));
            std::fs::create_dir(&plain).unwrap();
            std::fs::create_dir_all(below.join("tmpfs")).unwrap();
            let tmpfs = below.join("tmpfs");
            mount_tmpfs(&tmpfs);
            let container = state.path().join("sb/shared/c1");
            // As containerd's CRI plugin writes a read-only volume.
            let cri = |host: &Path, dst: &str| {
                let mut m = parse_volume(&format!("{}:{dst}", host.display())).unwrap();
                m.set_options(Some(["rbind", "rprivate", "ro"].map(String::from).to_vec()));
                m
            };
            let mut mounts = vec![
                cri(&below, "/mnt"),
                cri(&plain, "/plain"),
                parse_volume(&format!("{}:/rro:ro", below.display())).unwrap(),
            ];
            let forbidden = [state.path().join("sb-root")];
            stage(&mut mounts, &container, &forbidden, None).unwrap();
            let e = std::fs::write(container.join("mounts/0/x"), "no").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
            std::fs::write(container.join("mounts/0/tmpfs/file"), "yes").unwrap();
            assert_eq!(std::fs::read_to_string(tmpfs.join("file")).unwrap(), "yes");
            // The guest cannot see where the tmpfs starts: the host alone enforces `ro` there;
            // a volume with nothing below it stays `ro` for the guest too.
            assert!(!is_readonly(&mounts[0]), "{:?}", mounts[0].options());
            assert!(is_readonly(&mounts[1]), "{:?}", mounts[1].options());
            let e = std::fs::write(container.join("mounts/2/tmpfs/other"), "no").unwrap_err();
            assert_eq!(e.raw_os_error(), Some(libc::EROFS), "rro: {e}");
            assert!(
                is_recursively_readonly(&mounts[2]),
                "{:?}",
                mounts[2].options()
            );
            for p in [
                container.join("mounts/0"),
                container.join("mounts/1"),
                container.join("mounts/2"),
                tmpfs,
            ] {
                nix::mount::umount2(&p, nix::mount::MntFlags::MNT_DETACH).unwrap();
            }
        });
    }

    #[test]
    fn a_volume_inside_the_state_directories_is_refused_through_a_symlink_too() {
        in_private_mount_ns(|| {
            let dir = tempfile::tempdir().unwrap();
            let state = dir.path().join("state");
            std::fs::create_dir_all(state.join("other-sandbox")).unwrap();
            // A path that looked harmless when it was checked and names the state directory
            // by the time it is staged: the descriptor's real path is what is checked.
            let link = dir.path().join("innocent");
            std::os::unix::fs::symlink(state.join("other-sandbox"), &link).unwrap();
            let mut mounts = vec![parse_volume(&format!("{}:/x", link.display())).unwrap()];
            let e = stage(&mut mounts, &dir.path().join("c"), &[state], None).unwrap_err();
            assert!(e.to_string().contains("inside Shoji's sandbox"), "{e}");
            assert!(!dir.path().join("c/mounts/0").exists());
        });
    }

    /// Issue 12 (critest's read-only volume specs, in their clean-up): a process staging in a
    /// mount namespace of its own (the shim, ADR 023) opens the host path in the host's, so it
    /// sees a tmpfs the host mounted there after it left; the staged copy is in its namespace
    /// only, so the host can unmount that tmpfs and remove its directory while the copy lives.
    #[test]
    fn a_volume_is_opened_in_the_hosts_namespace_and_staged_in_the_callers() {
        in_private_mount_ns(|| {
            let host = tempfile::tempdir().unwrap();
            let state = tempfile::tempdir().unwrap();
            let tmpfs = host.path().join("vol/tmpfs");
            std::fs::create_dir_all(&tmpfs).unwrap();
            let container = state.path().join("sb/shared/c1");
            let host_ns = MountNs::current().unwrap();
            let step = std::sync::Barrier::new(2);
            let mountinfo = || std::fs::read_to_string("/proc/thread-self/mountinfo").unwrap();
            let staged = container.join("mounts/0").display().to_string();
            std::thread::scope(|s| {
                s.spawn(|| {
                    nix::sched::unshare(
                        nix::sched::CloneFlags::CLONE_FS | nix::sched::CloneFlags::CLONE_NEWNS,
                    )
                    .unwrap();
                    step.wait(); // left
                    step.wait(); // the host mounted its tmpfs
                    let mut mounts =
                        vec![
                            parse_volume(&format!("{}:/mnt", host.path().join("vol").display()))
                                .unwrap(),
                        ];
                    stage(&mut mounts, &container, &[], Some(&host_ns)).unwrap();
                    std::fs::write(container.join("mounts/0/tmpfs/file"), "yes").unwrap();
                    assert!(mountinfo().contains(&staged), "{}", mountinfo());
                    step.wait(); // staged
                    step.wait(); // the host removed its tmpfs and its directory
                });
                step.wait();
                mount_tmpfs(&tmpfs);
                step.wait();
                step.wait();
                assert_eq!(std::fs::read_to_string(tmpfs.join("file")).unwrap(), "yes");
                assert!(
                    !mountinfo().contains(&staged),
                    "the staged copy shows in the host's namespace"
                );
                nix::mount::umount2(&tmpfs, nix::mount::MntFlags::MNT_DETACH).unwrap();
                std::fs::remove_dir(&tmpfs).expect("the host removes its mount point (no EBUSY)");
                step.wait();
            });
        });
    }
}
