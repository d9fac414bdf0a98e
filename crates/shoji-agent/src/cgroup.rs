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
        value: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a number: {text:?}")]
    Parse { path: PathBuf, text: String },
    #[error("{field}: {value} is out of range")]
    Range { field: &'static str, value: i64 },
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

fn write(dir: &Path, file: &str, value: &str) -> Result<(), CgroupError> {
    let path = dir.join(file);
    std::fs::write(&path, value).map_err(|source| CgroupError::Write {
        path,
        value: value.to_string(),
        source,
    })
}

/// cgroup v1 CPU shares (2..=262144) as a cgroup v2 `cpu.weight` (1..=10000), as runc and crun
/// convert them.
pub fn weight_of_shares(shares: u64) -> u64 {
    let shares = shares.clamp(2, 262_144);
    1 + ((shares - 2) * 9999) / 262_142
}

/// Applies the OCI `linux.resources` limits Shoji honours to the cgroup `dir`: `memory.limit`
/// (`memory.max`, swap off; -1: no limit, 0: unset), `cpu.quota`/`cpu.period` (`cpu.max`; quota -1: no
/// limit), `cpu.shares` (`cpu.weight`) and `pids.limit` (`pids.max`; -1 or 0: no limit). An
/// absent field leaves its file as it is.
pub fn apply(dir: &Path, res: &oci_spec::runtime::LinuxResources) -> Result<(), CgroupError> {
    if let Some(limit) = res.memory().as_ref().and_then(|m| m.limit()) {
        match limit {
            -1 => write(dir, "memory.max", "max")?,
            // Unset, as containerd's CRI plugin and runc read it.
            0 => {}
            l if l > 0 => {
                write(dir, "memory.max", &l.to_string())?;
                // Best effort: a kernel without swap accounting has no such file.
                let _ = std::fs::write(dir.join("memory.swap.max"), "0");
            }
            value => {
                return Err(CgroupError::Range {
                    field: "memory.limit",
                    value,
                })
            }
        }
    }
    if let Some(cpu) = res.cpu() {
        let period = cpu.period().unwrap_or(100_000);
        match cpu.quota() {
            Some(q) if q > 0 => write(dir, "cpu.max", &format!("{q} {period}"))?,
            Some(-1) => write(dir, "cpu.max", &format!("max {period}"))?,
            _ => {}
        }
        if let Some(shares) = cpu.shares().filter(|s| *s > 0) {
            write(dir, "cpu.weight", &weight_of_shares(shares).to_string())?;
        }
    }
    if let Some(pids) = res.pids() {
        match pids.limit() {
            l if l > 0 => write(dir, "pids.max", &l.to_string())?,
            _ => write(dir, "pids.max", "max")?,
        }
    }
    Ok(())
}

/// Freezes (`true`) or thaws the cgroup and waits until `cgroup.events` says it is done.
pub fn freeze(dir: &Path, frozen: bool) -> Result<(), CgroupError> {
    write(dir, "cgroup.freeze", if frozen { "1" } else { "0" })?;
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
