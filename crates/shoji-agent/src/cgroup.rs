//! A container's cgroup v2 in the guest, read and frozen for the host: its statistics
//! (`StatsContainer`), its OOM kills (`memory.events`), the freezer (`PauseContainer`,
//! `ResumeContainer`).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use shoji_protocols::agent::StatsContainerResponse;

#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    #[error("reading {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("writing {value:?} to {path}")]
    Write {
        path: PathBuf,
        value: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a number: {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("the cgroup {path} did not report frozen={want} within {secs} s")]
    FreezeTimeout { path: PathBuf, want: u8, secs: u64 },
}

/// How long a freeze or thaw may take to settle (every process of the cgroup stopped or going).
const FREEZE_TIMEOUT: Duration = Duration::from_secs(10);

/// A missing file (its controller is not enabled) reads as empty.
fn read(dir: &Path, file: &str) -> Result<String, CgroupError> {
    let path = dir.join(file);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(s),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(String::new()),
        Err(source) => Err(CgroupError::Read { path, source }),
    }
}

/// `KEY VALUE` lines; lines that are not are skipped (nested keyed files have none here).
pub fn flat_keyed(text: &str) -> HashMap<String, u64> {
    text.lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (k, v) = (f.next()?, f.next()?);
            Some((k.to_string(), v.parse().ok()?))
        })
        .collect()
}

/// One number, `max` as 2^64-1, empty (no such file) as 0.
fn single(dir: &Path, file: &str) -> Result<u64, CgroupError> {
    let text = read(dir, file)?;
    match text.trim() {
        "" => Ok(0),
        "max" => Ok(u64::MAX),
        t => t.parse().map_err(|_| CgroupError::Parse {
            path: dir.join(file),
            text: t.to_string(),
        }),
    }
}

/// The cgroup's statistics, as `StatsContainer` answers them.
pub fn stats(dir: &Path) -> Result<StatsContainerResponse, CgroupError> {
    Ok(StatsContainerResponse {
        cpu_stat: flat_keyed(&read(dir, "cpu.stat")?),
        memory_stat: flat_keyed(&read(dir, "memory.stat")?),
        memory_events: flat_keyed(&read(dir, "memory.events")?),
        memory_current: single(dir, "memory.current")?,
        memory_max: single(dir, "memory.max")?,
        memory_peak: single(dir, "memory.peak")?,
        swap_current: single(dir, "memory.swap.current")?,
        swap_max: single(dir, "memory.swap.max")?,
        pids_current: single(dir, "pids.current")?,
        pids_max: single(dir, "pids.max")?,
        ..Default::default()
    })
}

/// Processes of the cgroup the OOM killer has killed (`memory.events`' `oom_kill`).
pub fn oom_kills(dir: &Path) -> Result<u64, CgroupError> {
    Ok(flat_keyed(&read(dir, "memory.events")?)
        .get("oom_kill")
        .copied()
        .unwrap_or(0))
}

/// Freezes (`true`) or thaws the cgroup and waits until `cgroup.events` says it is done.
pub fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    let path = dir.join("cgroup.freeze");
    let value = if frozen { "1" } else { "0" };
    std::fs::write(&path, value).map_err(|source| CgroupError::Write {
        path: path.clone(),
        value,
        source,
    })?;
    let want = u64::from(frozen);
    let deadline = Instant::now() + FREEZE_TIMEOUT;
    loop {
        if flat_keyed(&read(dir, "cgroup.events")?).get("frozen") == Some(&want) {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(CgroupError::FreezeTimeout {
                path: dir.to_path_buf(),
                want: want as u8,
                secs: FREEZE_TIMEOUT.as_secs(),
            });
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cgroup_files_are_read_as_the_kernel_writes_them() {
        let dir = tempfile::tempdir().expect("tempdir");
        let w = |f: &str, s: &str| std::fs::write(dir.path().join(f), s).expect("write");
        w(
            "cpu.stat",
            "usage_usec 1200\nuser_usec 1000\nsystem_usec 200\n",
        );
        w("memory.current", "4096\n");
        w("memory.max", "max\n");
        w("memory.events", "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n");
        w("pids.current", "2\n");
        let s = stats(dir.path()).expect("stats");
        assert_eq!(s.cpu_stat.get("usage_usec"), Some(&1200));
        assert_eq!(s.memory_current, 4096);
        assert_eq!(s.memory_max, u64::MAX);
        assert_eq!(s.pids_current, 2);
        assert_eq!(s.swap_max, 0, "a missing file reads as 0");
        assert_eq!(oom_kills(dir.path()).expect("oom_kills"), 1);
        w("pids.current", "lots\n");
        assert!(matches!(stats(dir.path()), Err(CgroupError::Parse { .. })));
    }
}
