//! Two `shoji` processes loading one image at once unpack each layer once (a lock, not a
//! race); a `shoji` killed with SIGKILL in the middle of an unpack leaves nothing that a later
//! run trusts, and that later run unpacks the layer whole (ADR 018). No VM is booted.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{repo_root, text, TestEnv};

/// busybox plus a layer of `mib` MiB in `files` files: slow enough to unpack that two loads
/// overlap, and that a kill lands in the middle.
fn data_image(dir: &Path, mib: u32, files: u32) -> PathBuf {
    let out = dir.join("img");
    let st = Command::new(repo_root().join("scripts/make-busybox-image.sh"))
        .arg(&out)
        .arg("--data")
        .arg(format!("{mib}:{files}"))
        .output()
        .expect("running scripts/make-busybox-image.sh");
    assert!(st.status.success(), "{}", text(&st.stderr));
    out
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The number of layers `shoji image load` says it unpacked.
fn unpacked(stdout: &[u8]) -> usize {
    let s = text(stdout);
    // "<image>: N layers, M unpacked in S s"
    let n = s
        .split(", ")
        .nth(1)
        .and_then(|p| p.split(' ').next())
        .and_then(|n| n.parse().ok());
    n.unwrap_or_else(|| panic!("no unpacked count in {s:?}"))
}

#[test]
fn two_loads_of_one_image_at_once_unpack_each_layer_once() {
    let env = TestEnv::new();
    let img = data_image(env.dir.path(), 24, 2000);
    let img = img.to_str().unwrap();
    let spawn = || {
        env.cmd()
            .args(["image", "load", img])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    assert_eq!(
        unpacked(&a.stdout) + unpacked(&b.stdout),
        2,
        "two layers, each unpacked by one of the two: {} / {}",
        text(&a.stdout),
        text(&b.stdout)
    );
    let store = env.dir.path().join("data/images");
    assert_eq!(names(&store.join("layers")).len(), 2);
    assert!(names(&store.join("tmp")).is_empty());
    let ls = env.ok(&["image", "ls"]);
    assert!(text(&ls.stdout).contains(img), "{}", text(&ls.stdout));
}

#[test]
fn a_load_killed_mid_unpack_leaves_nothing_trusted() {
    let env = TestEnv::new();
    let img = data_image(env.dir.path(), 40, 4000);
    let img = img.to_str().unwrap();
    let store = env.dir.path().join("data/images");
    let mut child = env
        .cmd()
        .args(["image", "load", img])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until the data layer is being unpacked (busybox's is done first), then SIGKILL.
    let deadline = Instant::now() + Duration::from_secs(60);
    let started = loop {
        let layers = names(&store.join("layers")).len();
        let partial = names(&store.join("tmp"));
        if layers == 1 && !partial.is_empty() {
            break partial;
        }
        assert!(Instant::now() < deadline, "the unpack never started");
        assert!(
            child.try_wait().unwrap().is_none(),
            "the load ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    std::thread::sleep(Duration::from_millis(300));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&status),
        Some(9),
        "killed, not finished"
    );

    // Only the complete busybox layer is in the store; the partial one is in tmp/ only.
    assert_eq!(names(&store.join("layers")).len(), 1);
    assert_eq!(names(&store.join("tmp")), started);
    let ls = env.ok(&["image", "ls", "--layers"]);
    assert_eq!(text(&ls.stdout).lines().count(), 2, "{}", text(&ls.stdout));

    // The next load unpacks the data layer whole and clears the leftover.
    let out = env.ok(&["image", "load", img]);
    assert_eq!(unpacked(&out.stdout), 1, "{}", text(&out.stdout));
    assert!(names(&store.join("tmp")).is_empty());
    let layers = names(&store.join("layers"));
    let data = layers
        .iter()
        .map(|l| store.join("layers").join(l).join("fs/data"))
        .find(|p| p.is_dir())
        .expect("the data layer is stored");
    assert_eq!(names(&data).len(), 4000);
}
