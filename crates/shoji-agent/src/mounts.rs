//! The spec's `mounts` as the container init applies them: planned here from the OCI spec
//! (checked, options turned into flags and data), applied by the init inside the container's
//! mount namespace once it is chrooted into the root, in spec order ([`apply`]).
//!
//! The host's contract (`agent.proto`): a bind's `source` is a path relative to the container's
//! directory in the shared virtio-fs share (`mounts/<n>`, staged by the host); the agent never
//! binds a guest path the host did not stage. The standard mounts (`/proc`, `/dev`, ...) are
//! made by the init itself; of those only `/dev/shm`'s size and mode are taken from the spec.

use std::os::fd::AsRawFd;
use std::path::{Component, Path, PathBuf};

use nix::mount::{mount, MsFlags};
use oci_spec::runtime::Spec;
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum MountError {
    #[error("mount {destination}: {reason}")]
    Refused { destination: String, reason: String },
    #[error("mount {destination}: opening its source {path}")]
    OpenSource {
        destination: String,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {destination}: {step}")]
    Apply {
        destination: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("mount {destination}: refused: it resolves to {real} (inside /proc or /sys)")]
    InsideProcOrSys { destination: String, real: PathBuf },
}

/// Destinations and types the init mounts itself.
use shoji_protocols::STANDARD_MOUNTS as STANDARD;

/// One mount for the init to make.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GuestMount {
    /// Absolute, plain components; resolved inside the container's root when applied.
    pub destination: String,
    /// Bind source in the agent's namespace (in the share); `None` for a tmpfs.
    pub bind: Option<PathBuf>,
    /// `MS_*` bits besides `MS_BIND`/`MS_REC`.
    pub flags: u64,
    pub recursive: bool,
    /// tmpfs data (`size=...,mode=...`).
    pub data: String,
}

/// The mounts to make and the `/dev/shm` options, from `spec`; `share` is the container's
/// directory in the shared virtio-fs share.
pub fn plan(spec: &Spec, share: &Path) -> Result<(Vec<GuestMount>, Option<String>), MountError> {
    let mut out = Vec::new();
    let mut shm = None;
    for m in spec.mounts().iter().flatten() {
        let destination = m.destination().display().to_string();
        let refused = |reason: &str| MountError::Refused {
            destination: destination.clone(),
            reason: reason.into(),
        };
        let typ = m.typ().as_deref().unwrap_or("none");
        let options = m.options().clone().unwrap_or_default();
        if STANDARD
            .iter()
            .any(|(d, t)| m.destination() == Path::new(d) && typ == *t)
        {
            // Made by the init as always (their options, e.g. devpts's, are its own); only
            // /dev/shm's size and mode are taken.
            if destination == "/dev/shm" {
                let data: Vec<&str> = options
                    .iter()
                    .map(String::as_str)
                    .filter(|o| o.starts_with("size=") || o.starts_with("mode="))
                    .collect();
                options_of(&data.iter().map(|o| o.to_string()).collect::<Vec<_>>())
                    .map_err(|r| refused(&r))?;
                if !data.is_empty() {
                    shm = Some(data.join(","));
                }
            }
            continue;
        }
        let (flags, recursive, bind_opt, data) = options_of(&options).map_err(|r| refused(&r))?;
        if !plain_absolute(m.destination()) {
            return Err(refused("not an absolute path of plain components"));
        }
        if m.destination().starts_with("/proc") || m.destination().starts_with("/sys") {
            return Err(refused("mounts over /proc or /sys are refused"));
        }
        let bind = typ == "bind" || (matches!(typ, "none" | "") && bind_opt);
        let bind = if bind {
            let src = m.source().clone().unwrap_or_default();
            let relative_plain = !src.as_os_str().is_empty()
                && src.components().all(|c| matches!(c, Component::Normal(_)));
            if !relative_plain {
                return Err(refused(&format!(
                    "bind source {} is not a path the host staged in the shared directory",
                    src.display()
                )));
            }
            if !data.is_empty() {
                return Err(refused("a bind mount takes no data options"));
            }
            Some(share.join(src))
        } else if typ == "tmpfs" {
            None
        } else {
            return Err(refused(&format!("mount type {typ:?} is not supported")));
        };
        out.push(GuestMount {
            destination,
            bind,
            flags: flags.bits(),
            recursive,
            data,
        });
    }
    Ok((out, shm))
}

fn plain_absolute(p: &Path) -> bool {
    let canonical = p.components().collect::<PathBuf>();
    p.is_absolute()
        && p.components().count() >= 2
        && p.components()
            .skip(1)
            .all(|c| matches!(c, Component::Normal(_)))
        && canonical.as_os_str() == p.as_os_str()
}

/// Flags, recursive, whether `bind`/`rbind` was given, and tmpfs data.
fn options_of(options: &[String]) -> Result<(MsFlags, bool, bool, String), String> {
    let mut flags = MsFlags::empty();
    let (mut recursive, mut bind) = (false, false);
    let mut data = Vec::new();
    for o in options {
        match o.as_str() {
            // The guest sees a volume as one file system (virtio-fs): `rro` is `ro` here; the
            // host made the mounts below it read-only (or, for `ro`, left them writable).
            "ro" | "rro" => flags |= MsFlags::MS_RDONLY,
            "rw" => flags &= !MsFlags::MS_RDONLY,
            "nosuid" => flags |= MsFlags::MS_NOSUID,
            "suid" => flags &= !MsFlags::MS_NOSUID,
            "nodev" => flags |= MsFlags::MS_NODEV,
            "dev" => flags &= !MsFlags::MS_NODEV,
            "noexec" => flags |= MsFlags::MS_NOEXEC,
            "exec" => flags &= !MsFlags::MS_NOEXEC,
            "noatime" => flags |= MsFlags::MS_NOATIME,
            "strictatime" => flags |= MsFlags::MS_STRICTATIME,
            "relatime" | "norelatime" => {}
            "bind" => bind = true,
            "rbind" => (bind, recursive) = (true, true),
            // The container's mount namespace is private; the host staged the propagation.
            "private" | "rprivate" | "slave" | "rslave" => {}
            _ => match o.split_once('=') {
                Some(("size" | "mode" | "uid" | "gid" | "nr_inodes", v))
                    if !v.is_empty() && v.chars().all(|c| c.is_ascii_alphanumeric()) =>
                {
                    data.push(o.clone())
                }
                _ => return Err(format!("mount option {o:?} is not supported")),
            },
        }
    }
    Ok((flags, recursive, bind, data.join(",")))
}

/// A bind source opened before the chroot (the share is outside the container's root).
pub struct Opened {
    mount: GuestMount,
    source: Option<std::fs::File>,
}

/// Opens every bind source (`O_PATH`), before the init leaves the agent's root.
pub fn open_sources(mounts: &[GuestMount]) -> Result<Vec<Opened>, MountError> {
    use std::os::unix::fs::OpenOptionsExt;
    mounts
        .iter()
        .map(|m| {
            let source = m
                .bind
                .as_ref()
                .map(|src| {
                    std::fs::File::options()
                        .read(true)
                        .custom_flags(libc::O_PATH)
                        .open(src)
                        .map_err(|source| MountError::OpenSource {
                            destination: m.destination.clone(),
                            path: src.clone(),
                            source,
                        })
                })
                .transpose()?;
            Ok(Opened {
                mount: m.clone(),
                source,
            })
        })
        .collect()
}

/// Makes each mount, in order, inside the current root (the container's: the init is chrooted
/// there, so every destination, symlinks included, resolves inside it). A missing mount point
/// is made (a directory, or an empty file for a file bind). The destination is opened once and
/// mounted on through `/proc/self/fd`, after checking what it really is.
pub fn apply(mounts: &[Opened]) -> Result<(), MountError> {
    for o in mounts {
        let m = &o.mount;
        let fail = |step: &'static str, source: std::io::Error| MountError::Apply {
            destination: m.destination.clone(),
            step,
            source,
        };
        let dst = Path::new(&m.destination);
        let source_is_dir = match &o.source {
            None => true,
            Some(f) => f
                .metadata()
                .map_err(|e| fail("stat the source", e))?
                .is_dir(),
        };
        make_mount_point(dst, source_is_dir).map_err(|e| fail("make the mount point", e))?;
        let target = open_path(dst).map_err(|e| fail("open the mount point", e))?;
        let target_path = format!("/proc/self/fd/{}", target.as_raw_fd());
        let real =
            std::fs::read_link(&target_path).map_err(|e| fail("resolve the mount point", e))?;
        if real.starts_with("/proc") || real.starts_with("/sys") {
            return Err(MountError::InsideProcOrSys {
                destination: m.destination.clone(),
                real,
            });
        }
        let flags = MsFlags::from_bits_truncate(m.flags);
        match &o.source {
            Some(src) => {
                let src_path = format!("/proc/self/fd/{}", src.as_raw_fd());
                let mut bind = MsFlags::MS_BIND;
                if m.recursive {
                    bind |= MsFlags::MS_REC;
                }
                mount(
                    Some(src_path.as_str()),
                    target_path.as_str(),
                    None::<&str>,
                    bind,
                    None::<&str>,
                )
                .map_err(|e| fail("bind", e.into()))?;
                if !flags.is_empty() {
                    // A bind mount takes its flags from a remount of itself: through its path
                    // (inside the root), now the new mount's root; the descriptor still names
                    // the directory below it.
                    mount(
                        None::<&str>,
                        dst,
                        None::<&str>,
                        MsFlags::MS_BIND | MsFlags::MS_REMOUNT | flags,
                        None::<&str>,
                    )
                    .map_err(|e| fail("remount with its options", e.into()))?;
                }
            }
            None => mount(
                Some("tmpfs"),
                target_path.as_str(),
                Some("tmpfs"),
                flags,
                Some(m.data.as_str()),
            )
            .map_err(|e| fail("tmpfs", e.into()))?,
        }
    }
    Ok(())
}

fn open_path(p: &Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::File::options()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(p)
}

fn make_mount_point(dst: &Path, dir: bool) -> std::io::Result<()> {
    match std::fs::metadata(dst) {
        Ok(m) if m.is_dir() == dir => return Ok(()),
        Ok(_) => {
            return Err(std::io::Error::other(if dir {
                "a directory volume over a file"
            } else {
                "a file volume over a directory"
            }))
        }
        Err(_) => {}
    }
    if dir {
        return std::fs::create_dir_all(dst);
    }
    if let Some(parent) = dst.parent() {
        std::fs::create_dir_all(parent)?;
    }
    std::fs::File::options()
        .write(true)
        .create(true)
        .truncate(false)
        .open(dst)
        .map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(mounts: serde_json::Value) -> Spec {
        serde_json::from_value(serde_json::json!({"ociVersion": "1.0.2", "mounts": mounts}))
            .unwrap()
    }

    #[test]
    fn spec_mounts_become_the_inits_plan() {
        let s = spec(serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/pts", "type": "devpts", "source": "devpts",
             "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
             "options": ["nosuid", "size=1048576", "mode=1777"]},
            {"destination": "/data", "type": "bind", "source": "mounts/0",
             "options": ["rbind", "ro", "rprivate"]},
            {"destination": "/etc/one", "type": "none", "source": "mounts/1", "options": ["bind"]},
            {"destination": "/scratch", "type": "tmpfs", "source": "tmpfs",
             "options": ["nosuid", "nodev", "noexec", "size=65536"]}
        ]));
        let (mounts, shm) = plan(&s, Path::new("/run/shoji/shared/c1")).unwrap();
        assert_eq!(shm.as_deref(), Some("size=1048576,mode=1777"));
        assert_eq!(mounts.len(), 3);
        assert_eq!(
            mounts[0].bind.as_deref(),
            Some(Path::new("/run/shoji/shared/c1/mounts/0"))
        );
        assert!(mounts[0].recursive);
        assert_eq!(mounts[0].flags, MsFlags::MS_RDONLY.bits());
        assert!(!mounts[1].recursive && mounts[1].flags == 0);
        assert_eq!(mounts[2].bind, None);
        assert_eq!(mounts[2].data, "size=65536");

        for (bad, says) in [
            (
                serde_json::json!({"destination": "/x", "type": "bind", "source": "/etc"}),
                "not a path the host staged",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "bind", "source": "../rootfs"}),
                "not a path the host staged",
            ),
            (
                serde_json::json!({"destination": "/proc/sys", "type": "tmpfs", "source": "t"}),
                "/proc or /sys",
            ),
            (
                serde_json::json!({"destination": "/a/../b", "type": "tmpfs", "source": "t"}),
                "plain components",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "nfs", "source": "s"}),
                "not supported",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "tmpfs", "source": "t", "options": ["size=1,nr_inodes=2"]}),
                "not supported",
            ),
            (
                serde_json::json!({"destination": "/x", "type": "tmpfs", "source": "t", "options": ["rshared"]}),
                "not supported",
            ),
        ] {
            let e = plan(&spec(serde_json::json!([bad])), Path::new("/s")).unwrap_err();
            assert!(e.to_string().contains(says), "{e}");
        }
    }
}
