//! Issue 10, item 8: a SIGKILLed `shoji run` leaves its sandbox directory (rootfs copy and
//! mount, sockets, console); `shoji gc`, and the next `shoji run`, reclaim it, and leave a live
//! sandbox alone. Tests that boot VMs are named `vm_*`.

use crate::common;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use common::{busybox_image, processes_naming, text, TestEnv};

/// Starts `shoji run IMAGE -- sleep 1000` and waits until its VM runs (the owner record lists
/// QEMU and the helpers), then SIGKILLs it. Returns its sandbox directory, left behind.
fn kill_a_run(env: &TestEnv) -> PathBuf {
    let before = sandboxes(env);
    let image = busybox_image().0.display().to_string();
    let mut child: Child = env
        .cmd()
        .args(["run", &image, "--", "sleep", "1000"])
        .spawn()
        .expect("running shoji run");
    let deadline = Instant::now() + Duration::from_secs(60);
    let dir = loop {
        let new: Vec<PathBuf> = sandboxes(env)
            .into_iter()
            .filter(|d| !before.contains(d))
            .collect();
        let started = new.iter().find(|d| {
            std::fs::read_to_string(d.join("owner.json"))
                .is_ok_and(|t| t.contains("qemu") && t.contains("virtiofsd"))
        });
        if let Some(d) = started {
            break d.clone();
        }
        assert!(Instant::now() < deadline, "the run never booted");
        std::thread::sleep(Duration::from_millis(50));
    };
    child.kill().expect("SIGKILL shoji run");
    child.wait().unwrap();
    // Its helpers and QEMU die with it (parent-death signal); the directory and mount stay.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !processes_naming(&dir).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let rootfs = rootfs_of(&dir);
    assert!(rootfs.join("bin/busybox").exists(), "{}", dir.display());
    assert!(is_mounted(&rootfs));
    dir
}

fn sandboxes(env: &TestEnv) -> Vec<PathBuf> {
    std::fs::read_dir(env.sandbox_root())
        .map(|rd| {
            rd.flatten()
                .map(|e| e.path())
                .filter(|p| p.is_dir())
                .collect()
        })
        .unwrap_or_default()
}

/// The rootfs of `shoji run`'s container in sandbox `dir` (its id is the sandbox's).
fn rootfs_of(dir: &Path) -> PathBuf {
    let id = dir.file_name().unwrap();
    dir.join("shared").join(id).join("rootfs")
}

fn is_mounted(path: &Path) -> bool {
    let needle = format!(" {} ", path.display());
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap()
        .lines()
        .any(|l| l.contains(&needle))
}

/// A sandbox directory whose owner is alive (this test process): nobody may touch it.
fn live_sandbox(env: &TestEnv) -> PathBuf {
    let dir = env.sandbox_root().join("live-one");
    std::fs::create_dir_all(&dir).unwrap();
    let me = shoji_runtime::lifecycle::state::ProcessRecord::capture("test", std::process::id())
        .unwrap();
    shoji_runtime::reclaim::OwnerRecord {
        owner: me,
        processes: Vec::new(),
    }
    .write(&dir)
    .unwrap();
    dir
}

#[test]
fn vm_shoji_gc_and_the_next_run_reclaim_a_killed_run() {
    let env = TestEnv::new();
    let live = live_sandbox(&env);

    let dead = kill_a_run(&env);
    let out = env.ok(&["gc"]);
    assert!(
        text(&out.stdout).contains(&dead.display().to_string()),
        "{}",
        text(&out.stdout)
    );
    assert!(!dead.exists(), "gc left {}", dead.display());
    assert!(!is_mounted(&rootfs_of(&dead)));
    let left = processes_naming(&dead);
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(
        live.join("owner.json").exists(),
        "gc removed a live sandbox"
    );

    let dead = kill_a_run(&env);
    let image = busybox_image().0.display().to_string();
    let out = env.ok(&["run", &image, "--", "true"]);
    assert!(out.status.success());
    assert!(!dead.exists(), "the next run left {}", dead.display());
    assert!(!is_mounted(&rootfs_of(&dead)));
    let left = processes_naming(&dead);
    assert!(left.is_empty(), "processes left: {left:?}");
    assert!(
        live.join("owner.json").exists(),
        "a run removed a live sandbox"
    );

    std::fs::remove_dir_all(&live).unwrap();
    env.assert_nothing_left();
}
