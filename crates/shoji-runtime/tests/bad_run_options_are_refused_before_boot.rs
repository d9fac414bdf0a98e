//! Issue 10, the smaller ones: `--memory` the container or VM cannot have, a `--name` that
//! cannot name a container and a bundle mount Shoji cannot honour are refused with
//! a clear message before any VM boots; when QEMU itself refuses, its reason is shown.

use crate::common;
use common::{busybox_image, text, TestEnv};

fn fails_with(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let out = env.cmd().args(args).output().expect("running shoji");
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "should fail: shoji {args:?}");
    for n in needles {
        assert!(err.contains(n), "shoji {args:?}: stderr lacks {n:?}: {err}");
    }
    // Refused before a sandbox directory was made, let alone a VM booted.
    env.assert_nothing_left();
    assert!(!err.contains("guest console"), "{err}");
}

#[test]
fn impossible_memory_sizes_are_refused() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    for m in ["0", "1", "5M"] {
        fails_with(
            &env,
            &["run", "--memory", m, &image, "--", "true"],
            &["invalid --memory", "at least 6 MiB"],
        );
    }
    fails_with(
        &env,
        &["run", "--memory", "100000G", &image, "--", "true"],
        &["invalid --memory 102400000 MiB", "this host has"],
    );
    fails_with(
        &env,
        &["create", "--memory", "0", &image, "mem0", "--", "true"],
        &["invalid --memory", "at least 6 MiB"],
    );
}

#[test]
fn container_names_are_checked_on_the_host() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let long = "a".repeat(65);
    for (name, why) in [
        ("a/b", "only letters, digits"),
        ("../x", "must start with a letter or a digit"),
        (long.as_str(), "longer than 64"),
        ("", "empty"),
    ] {
        fails_with(
            &env,
            &["run", "--name", name, &image, "--", "true"],
            &["invalid --name", why],
        );
    }
}

#[test]
fn a_bundle_mount_shoji_cannot_honour_is_refused_by_name() {
    let env = TestEnv::new();
    let b = common::bundle_with_mounts(
        env.dir.path(),
        serde_json::json!([
            {"destination": "/proc", "type": "proc", "source": "proc"},
            {"destination": "/dev/shm", "type": "tmpfs", "source": "shm"},
            {"destination": "/data", "type": "nfs", "source": "server:/srv/data"}
        ]),
    );
    fails_with(
        &env,
        &["run", "--bundle", &b, "--", "true"],
        &["mount on /data", "\"nfs\" is not supported", "bind, tmpfs"],
    );
}

#[test]
fn qemus_own_reason_is_shown_when_it_refuses_to_start() {
    let env0 = tempfile::tempdir().unwrap();
    let kernel = env0.path().join("not-a-kernel");
    std::fs::write(&kernel, b"this is not a kernel").unwrap();
    let env = TestEnv::with_config(&format!("[hypervisor.qemu]\nkernel = {kernel:?}\n"));
    let image = busybox_image().0.display().to_string();
    let out = env
        .cmd()
        .args(["run", &image, "--", "true"])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    // QEMU's own words follow their heading, before the (empty) console tail.
    let said = err
        .split_once("--- qemu's error output ---")
        .and_then(|(_, rest)| rest.split_once("--- last lines of the guest console ---"))
        .map(|(said, _)| said.trim())
        .unwrap_or_default();
    assert!(said.contains("kernel"), "{err}");
    env.assert_nothing_left();
}
