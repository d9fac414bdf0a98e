//! Reclaiming the sandbox directories of `shoji run`s that were killed (SIGKILL leaves no
//! chance to clean up): their rootfs copy, mount and sockets would stay forever. Each run
//! records its owner in `owner.json` (its own pid and start time, then the helpers and QEMU it
//! started); `shoji gc`, and every `shoji run`, `create` and `list` before it looks further,
//! removes the directories whose owner is gone. Never a live one: a process is the owner only
//! if pid *and* start time match; never another user's: only directories this user owns; never
//! a `shoji create` container's: its state directory has `state.json` and is `shoji delete`'s.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::lifecycle::state::{ProcessRecord, STATE_FILE};
use crate::private_fs;
use crate::sandbox::remove_sandbox_dir;

/// The owner record in a `shoji run` sandbox directory.
pub const OWNER_FILE: &str = "owner.json";

/// Who made a sandbox directory and what it started there.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRecord {
    pub owner: ProcessRecord,
    /// QEMU and the helpers: they die with the owner (parent-death signal); reclaiming makes sure.
    #[serde(default)]
    pub processes: Vec<ProcessRecord>,
}

impl OwnerRecord {
    /// This process, with nothing started yet.
    pub fn this_process() -> Option<Self> {
        Some(Self {
            owner: ProcessRecord::capture("shoji run", std::process::id())?,
            processes: Vec::new(),
        })
    }

    /// Writes `dir/owner.json` (0600) atomically: a reader never sees half a record.
    pub fn write(&self, dir: &Path) -> std::io::Result<()> {
        let tmp = dir.join(".owner.json.tmp");
        let text = serde_json::to_vec(self).map_err(std::io::Error::other)?;
        private_fs::write_private(&tmp, &text)?;
        std::fs::rename(&tmp, dir.join(OWNER_FILE))
    }

    pub fn read(dir: &Path) -> Option<Self> {
        let text = std::fs::read(dir.join(OWNER_FILE)).ok()?;
        serde_json::from_slice(&text).ok()
    }
}

/// A directory that was reclaimed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reclaimed {
    pub dir: PathBuf,
    /// Recorded processes that were still running and were killed.
    pub killed: Vec<ProcessRecord>,
    /// Why it could not be removed, if it could not.
    pub error: Option<String>,
}

/// Removes every sandbox directory under `root` whose `shoji run` is gone: kills what it
/// started, detaches its rootfs mount, removes the directory. Best effort and quiet: a
/// directory it cannot judge (no owner record yet, someone else's) is left alone.
pub fn reclaim_abandoned(root: &Path) -> Vec<Reclaimed> {
    let Ok(entries) = std::fs::read_dir(root) else {
        return Vec::new();
    };
    let uid = nix::unistd::geteuid().as_raw();
    let mut done = Vec::new();
    for entry in entries.flatten() {
        let dir = entry.path();
        if !is_abandoned(&dir, uid) {
            continue;
        }
        // An owner record read above; gone since means another reclaimer was faster.
        let Some(rec) = OwnerRecord::read(&dir) else {
            continue;
        };
        let killed: Vec<ProcessRecord> = rec
            .processes
            .iter()
            .filter(|p| p.is_alive())
            .cloned()
            .collect();
        for p in &killed {
            p.kill();
        }
        wait_gone(&killed, Duration::from_secs(5));
        let error = remove_sandbox_dir(&dir).err().map(|e| e.to_string());
        tracing::info!(dir = %dir.display(), killed = killed.len(), error = ?error, "reclaimed the sandbox directory of a run that is gone");
        done.push(Reclaimed { dir, killed, error });
    }
    done
}

/// A directory of this user, not a lifecycle container's, with an owner record whose process
/// is gone.
fn is_abandoned(dir: &Path, uid: u32) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(meta) = std::fs::symlink_metadata(dir) else {
        return false;
    };
    if !meta.is_dir() || meta.uid() != uid || dir.join(STATE_FILE).exists() {
        return false;
    }
    OwnerRecord::read(dir).is_some_and(|r| !r.owner.is_alive())
}

fn wait_gone(ps: &[ProcessRecord], limit: Duration) {
    let deadline = std::time::Instant::now() + limit;
    while ps.iter().any(ProcessRecord::is_alive) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead_process() -> ProcessRecord {
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let rec = ProcessRecord::capture("gone", child.id()).unwrap();
        child.wait().unwrap();
        rec
    }

    fn sandbox(root: &Path, name: &str, owner: ProcessRecord) -> PathBuf {
        let dir = root.join(name);
        std::fs::create_dir(&dir).unwrap();
        std::fs::write(dir.join("console.log"), "x").unwrap();
        OwnerRecord {
            owner,
            processes: Vec::new(),
        }
        .write(&dir)
        .unwrap();
        dir
    }

    #[test]
    fn only_directories_whose_owner_is_gone_are_reclaimed() {
        let t = tempfile::tempdir().unwrap();
        let dead = sandbox(t.path(), "dead", dead_process());
        let me = ProcessRecord::capture("me", std::process::id()).unwrap();
        let live = sandbox(t.path(), "live", me.clone());
        // The same pid with another start time is another process: its owner is gone.
        let reused = sandbox(
            t.path(),
            "reused",
            ProcessRecord {
                start_time: me.start_time + 1,
                ..me.clone()
            },
        );
        let unrecorded = t.path().join("starting");
        std::fs::create_dir(&unrecorded).unwrap();
        let lifecycle = sandbox(t.path(), "created", dead_process());
        std::fs::write(lifecycle.join(STATE_FILE), "{}").unwrap();

        let got: Vec<PathBuf> = reclaim_abandoned(t.path())
            .into_iter()
            .map(|r| r.dir)
            .collect();
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(!dead.exists() && !reused.exists());
        assert!(live.exists() && unrecorded.exists() && lifecycle.exists());
    }
}
