//! `shoji image rm` and `prune` on images pulled from a real loopback registry (ADR 021): two
//! images sharing their first layer; removing one by reference drops its tag and the blobs
//! only it reached, the shared layer stays and the other image runs; an image a created
//! container uses is refused, naming the image and the container; once both are removed,
//! `prune` leaves the store empty, as `shoji image ls` shows.

use crate::common;

use common::registry::Registry;
use common::{busybox_data_image, busybox_image, text, DeleteOnDrop, TestEnv};

/// `shoji image ls`'s summary line: (images, tags, layers, pulled blobs), and the line.
fn usage(env: &TestEnv) -> ((usize, usize, usize, usize), String) {
    let out = env.ok(&["image", "ls"]);
    let stderr = text(&out.stderr);
    let line = stderr
        .lines()
        .rfind(|l| l.contains(" pulled blobs"))
        .unwrap_or_else(|| panic!("no summary line in {stderr:?}"));
    let num = |after: &str| -> usize {
        line.split(after)
            .next()
            .and_then(|p| p.rsplit([' ', ';', ',']).find(|w| !w.is_empty()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {after:?} in {line:?}"))
    };
    (
        (
            num(" images"),
            num(" tags"),
            num(" layers"),
            num(" pulled blobs"),
        ),
        line.to_string(),
    )
}

fn layer_dirs(env: &TestEnv) -> usize {
    std::fs::read_dir(env.dir.path().join("data/images/layers"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn vm_removing_a_pulled_image_keeps_what_another_uses_and_prune_empties_the_store() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let plain = reg.push_busybox("shoji/busybox:v1");
    let data = reg.push(&busybox_data_image().0, "shoji/data:v1", &[]);
    // The same busybox layer under both: pushed once, stored once.
    assert_ne!(busybox_image().0, busybox_data_image().0);
    env.ok(&["pull", &plain]);
    env.ok(&["pull", &data]);
    let (before, line) = usage(&env);
    eprintln!("before: {line}");
    // Manifest, configuration and layer of each, the busybox layer blob once: 3 + 3.
    assert_eq!(before, (2, 2, 2, 6), "{line}");

    // By reference: its tag, manifest and configuration go; the shared layer stays.
    let out = env.ok(&["image", "rm", &plain]);
    assert!(
        text(&out.stdout).contains("1 tags, 0 layers") && text(&out.stdout).contains("2 pulled"),
        "{}",
        text(&out.stdout)
    );
    let (after_rm, line) = usage(&env);
    eprintln!("after rm of one: {line}");
    assert_eq!(after_rm, (1, 1, 2, 4), "{line}");
    assert_eq!(layer_dirs(&env), 2);
    let ls = text(&env.ok(&["image", "ls"]).stdout);
    assert!(!ls.contains(&plain) && ls.contains(&data), "{ls}");

    // The other image runs on the layer it shared; while its container exists, neither rm nor
    // prune --all removes it, and rm names the image and the container.
    let id = "uses-data";
    let _cleanup = DeleteOnDrop(&env, id);
    env.ok(&["create", &data, id, "--", "sleep", "1000"]);
    env.ok(&["start", id]);
    let out = env.ok(&[
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "ls /data | wc -l; busybox true",
    ]);
    assert_eq!(text(&out.stdout).trim(), "4", "{}", text(&out.stderr));
    let out = env
        .cmd()
        .args(["image", "rm", &data])
        .output()
        .expect("running shoji");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for part in [
        data.as_str(),
        "in use",
        &format!("container {id}"),
        "nothing was removed",
    ] {
        assert!(err.contains(part), "{part:?} not in: {err}");
    }
    let out = env.ok(&["image", "prune", "--all"]);
    assert!(
        text(&out.stdout).contains("kept 1 images"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(usage(&env).0, after_rm);
    env.ok(&["delete", "--force", id]);

    // By short id (the configuration digest's first hex digits, as ls shows them).
    let short = text(&env.ok(&["image", "ls"]).stdout)
        .lines()
        .find(|l| l.contains(&data))
        .and_then(|l| l.split_whitespace().next())
        .expect("a row for the image")
        .to_string();
    env.ok(&["image", "rm", &short]);
    env.ok(&["image", "prune"]);
    let (after, line) = usage(&env);
    eprintln!("after rm of both and prune: {line}");
    assert_eq!(after, (0, 0, 0, 0), "{line}");
    assert_eq!(layer_dirs(&env), 0);
    env.assert_nothing_left();
}

#[test]
fn prune_collects_what_a_failed_pull_left_and_rm_takes_a_manifest_digest() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");
    // A failed pull (the layer tampered with) leaves its manifest and configuration, no tag.
    let blob = reg.layer_blob();
    let good = std::fs::read(&blob).expect("reading the layer blob");
    let mut bad = good.clone();
    bad[100] ^= 0xff;
    std::fs::write(&blob, &bad).expect("tampering with the layer blob");
    assert!(!env
        .cmd()
        .args(["pull", &image])
        .status()
        .expect("shoji")
        .success());
    assert_eq!(usage(&env).0, (0, 0, 0, 2));
    let out = env.ok(&["image", "prune"]);
    assert!(
        text(&out.stdout).contains("2 pulled blobs"),
        "{}",
        text(&out.stdout)
    );
    assert_eq!(usage(&env).0, (0, 0, 0, 0));

    // Pulled again, removed by the manifest digest it was pulled as.
    std::fs::write(&blob, &good).expect("restoring the layer blob");
    let out = env.ok(&["pull", &image]);
    let digest = text(&out.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("a manifest digest")
        .to_string();
    env.ok(&["image", "rm", &digest]);
    assert_eq!(usage(&env).0, (0, 0, 0, 0));
}

/// A rootless run unpacking a pulled image into its sandbox holds `locks/oci-gc` shared from
/// before it reads the image until its unpack ends (as a pull does until its tag is written):
/// an `rm` meanwhile drops the tag, keeps the blobs the unpack reads and says so; `prune` then
/// collects them. Before, the unpack could fail on a blob `rm` had just removed (ADR 021).
/// The test holds the lock itself, as such a run does (`sandbox::rootfs`; the runtime's test
/// suite runs as root, where images come from the store's layers instead).
#[test]
fn blobs_an_unpack_holds_survive_rm_until_prune() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");
    env.ok(&["pull", &image]);
    assert_eq!(usage(&env).0 .3, 3, "manifest, configuration and layer");
    let lock = std::fs::File::open(env.dir.path().join("data/images/locks/oci-gc"))
        .expect("the store's blob collection lock");
    let held = nix::fcntl::Flock::lock(lock, nix::fcntl::FlockArg::LockShared)
        .map_err(|(_, e)| e)
        .expect("taking the lock shared");

    let out = env.ok(&["image", "rm", &image]);
    assert!(
        text(&out.stdout).contains("pulled blobs not collected"),
        "{}",
        text(&out.stdout)
    );
    let ((images, tags, _, blobs), line) = usage(&env);
    assert_eq!((images, tags, blobs), (0, 0, 3), "{line}");

    drop(held);
    env.ok(&["image", "prune"]);
    assert_eq!(usage(&env).0, (0, 0, 0, 0));
}
