//! User and group names resolved inside the container, never on the host.
//!
//! `process.user.username` in a spec from Shoji is a `docker run --user` string (`NAME`, `UID`,
//! `NAME:GROUP`, `UID:GID`, ...). The container's init resolves it once it stands in the
//! container's root, so the image's `/etc/passwd` and `/etc/group` are read only from inside
//! that root: with `openat2(RESOLVE_IN_ROOT | RESOLVE_NO_MAGICLINKS)` from `/`, as a regular file
//! of at most [`MAX_DB_BYTES`], opened non-blocking (a FIFO is refused, never waited on).

use std::io::Read;

use nix::fcntl::{OFlag, OpenHow, ResolveFlag};
use nix::sys::stat::SFlag;

/// The largest `/etc/passwd` or `/etc/group` read; real ones are a few KiB.
pub const MAX_DB_BYTES: u64 = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum UserError {
    #[error("cannot open {path} in the container")]
    Open {
        path: &'static str,
        #[source]
        source: nix::Error,
    },
    #[error("{path} in the container is a {kind}, not a regular file: user names cannot be resolved (give UID:GID instead)")]
    NotRegular {
        path: &'static str,
        kind: &'static str,
    },
    #[error("{path} in the container is larger than {max} bytes: user names cannot be resolved (give UID:GID instead)")]
    TooLarge { path: &'static str, max: u64 },
    #[error("cannot read {path} in the container")]
    Read {
        path: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("user {name:?} is not in the container's /etc/passwd")]
    NoUser { name: String },
    #[error("group {name:?} is not in the container's /etc/group")]
    NoGroup { name: String },
    #[error("invalid user {value:?}: expected NAME, UID, NAME:GROUP or UID:GID")]
    Syntax { value: String },
}

/// What a `--user` string resolved to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    pub uid: u32,
    pub gid: u32,
    /// Groups of `/etc/group` that list the user (only when no group was named, as runc does).
    pub supplementary: Vec<u32>,
    /// The passwd entry's home directory, if the user has an entry.
    pub home: Option<String>,
}

/// Reads `path` (absolute, inside the current root) as a bounded regular file; `Ok(None)` when
/// it does not exist.
pub fn read_db(path: &'static str) -> Result<Option<String>, UserError> {
    let root = nix::fcntl::open(
        "/",
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        nix::sys::stat::Mode::empty(),
    )
    .map_err(|source| UserError::Open { path, source })?;
    let how = OpenHow::new()
        .flags(OFlag::O_RDONLY | OFlag::O_NONBLOCK | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match nix::fcntl::openat2(&root, path, how) {
        Ok(fd) => fd,
        Err(nix::Error::ENOENT) => return Ok(None),
        Err(source) => return Err(UserError::Open { path, source }),
    };
    let st = nix::sys::stat::fstat(&fd).map_err(|source| UserError::Open { path, source })?;
    let kind = match SFlag::from_bits_truncate(st.st_mode) & SFlag::S_IFMT {
        SFlag::S_IFREG => None,
        SFlag::S_IFIFO => Some("FIFO"),
        SFlag::S_IFCHR => Some("character device"),
        SFlag::S_IFBLK => Some("block device"),
        SFlag::S_IFSOCK => Some("socket"),
        SFlag::S_IFDIR => Some("directory"),
        _ => Some("special file"),
    };
    if let Some(kind) = kind {
        return Err(UserError::NotRegular { path, kind });
    }
    let mut buf = Vec::new();
    std::fs::File::from(fd)
        .take(MAX_DB_BYTES + 1)
        .read_to_end(&mut buf)
        .map_err(|source| UserError::Read { path, source })?;
    if buf.len() as u64 > MAX_DB_BYTES {
        return Err(UserError::TooLarge {
            path,
            max: MAX_DB_BYTES,
        });
    }
    Ok(Some(String::from_utf8_lossy(&buf).into_owned()))
}

/// `name:x:uid:gid:gecos:home:shell` entries: (name, uid, gid, home).
fn passwd_entries(passwd: &str) -> impl Iterator<Item = (&str, u32, u32, &str)> {
    passwd.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 4 {
            return None;
        }
        let home = f.get(5).copied().unwrap_or("");
        Some((f[0], f[2].parse().ok()?, f[3].parse().ok()?, home))
    })
}

/// `name:x:gid:member,member` entries: (name, gid, members).
fn group_entries(group: &str) -> impl Iterator<Item = (&str, u32, Vec<&str>)> {
    group.lines().filter_map(|l| {
        let f: Vec<&str> = l.split(':').collect();
        if f.len() < 3 {
            return None;
        }
        let members = f
            .get(3)
            .map(|m| m.split(',').filter(|s| !s.is_empty()).collect())
            .unwrap_or_default();
        Some((f[0], f[2].parse().ok()?, members))
    })
}

/// Resolves a `--user` string against the container's `/etc/passwd` and `/etc/group` contents
/// (`None`: the file does not exist).
pub fn resolve(
    user: &str,
    passwd: Option<&str>,
    group: Option<&str>,
) -> Result<Resolved, UserError> {
    let syntax = || UserError::Syntax {
        value: user.to_string(),
    };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    if u.is_empty() || g.is_some_and(str::is_empty) {
        return Err(syntax());
    }
    let passwd = passwd.unwrap_or("");
    let entry = match u.parse::<u32>() {
        Ok(uid) => passwd_entries(passwd).find(|e| e.1 == uid),
        Err(_) => Some(
            passwd_entries(passwd)
                .find(|e| e.0 == u)
                .ok_or_else(|| UserError::NoUser { name: u.into() })?,
        ),
    };
    // A UID with no entry runs with group 0 and no home, as Docker does.
    let (uid, mut gid) = match (u.parse::<u32>(), entry) {
        (Ok(uid), Some(e)) => (uid, e.2),
        (Ok(uid), None) => (uid, 0),
        (Err(_), Some(e)) => (e.1, e.2),
        (Err(_), None) => return Err(syntax()),
    };
    let group = group.unwrap_or("");
    let mut supplementary = Vec::new();
    match g {
        Some(g) => {
            gid = match g.parse::<u32>() {
                Ok(n) => n,
                Err(_) => group_entries(group)
                    .find(|e| e.0 == g)
                    .map(|e| e.1)
                    .ok_or_else(|| UserError::NoGroup { name: g.into() })?,
            }
        }
        None => {
            if let Some(name) = entry.map(|e| e.0) {
                for (_, gid, members) in group_entries(group) {
                    if members.contains(&name) && !supplementary.contains(&gid) {
                        supplementary.push(gid);
                    }
                }
            }
        }
    }
    Ok(Resolved {
        uid,
        gid,
        supplementary,
        home: entry.map(|e| e.3.to_string()).filter(|h| !h.is_empty()),
    })
}

/// The home directory of `uid` in `passwd`, for `HOME` when the spec has none.
pub fn home_of(uid: u32, passwd: &str) -> Option<String> {
    passwd_entries(passwd)
        .find(|e| e.1 == uid)
        .map(|e| e.3.to_string())
        .filter(|h| !h.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    const PASSWD: &str =
        "root:x:0:0:root:/root:/bin/sh\nuser:x:1000:1001::/home/user:/bin/sh\nbroken line\n";
    const GROUP: &str = "root:x:0:\nstaff:x:50:user,other\nwheel:x:10:user\n";

    #[test]
    fn names_and_numbers_resolve_like_docker() {
        let r = |u| resolve(u, Some(PASSWD), Some(GROUP));
        let user = r("user").unwrap();
        assert_eq!((user.uid, user.gid), (1000, 1001));
        assert_eq!(user.supplementary, vec![50, 10]);
        assert_eq!(user.home.as_deref(), Some("/home/user"));
        // A UID takes its primary group and home from its entry...
        assert_eq!(r("1000").unwrap().gid, 1001);
        // ...or runs with group 0 and no home without one.
        let stranger = r("4242").unwrap();
        assert_eq!((stranger.uid, stranger.gid, stranger.home), (4242, 0, None));
        // A named group replaces the primary group and the supplementary ones.
        let g = r("user:staff").unwrap();
        assert_eq!((g.uid, g.gid, g.supplementary), (1000, 50, vec![]));
        assert_eq!(r("5:6").unwrap().gid, 6);
    }

    #[test]
    fn unknown_names_and_bad_syntax_are_errors() {
        let r = |u| {
            resolve(u, Some(PASSWD), Some(GROUP))
                .unwrap_err()
                .to_string()
        };
        assert!(r("nobody").contains("\"nobody\" is not in the container's /etc/passwd"));
        assert!(r("user:nogroup").contains("group \"nogroup\""));
        assert!(r(":5").contains("invalid user"));
        assert!(r("user:").contains("invalid user"));
        // No passwd file at all: names cannot resolve, numbers still do.
        assert!(resolve("user", None, None).is_err());
        assert_eq!(resolve("7", None, None).unwrap().uid, 7);
    }

    #[test]
    fn home_comes_from_the_uid_entry() {
        assert_eq!(home_of(0, PASSWD).as_deref(), Some("/root"));
        assert_eq!(home_of(9, PASSWD), None);
    }
}
