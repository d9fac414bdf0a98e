//! Bad input and faults: each exits non-zero with a message naming what failed and what to do,
//! and leaves no process, socket or directory behind ([`common::TestEnv::run`] checks).

use crate::common;
use common::{busybox_image, text, TestEnv};

fn image() -> String {
    busybox_image().0.display().to_string()
}

fn fails_with(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let out = env.run(args);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "should fail: {args:?}");
    for n in needles {
        assert!(err.contains(n), "stderr lacks {n:?}: {err}");
    }
}

#[test]
fn missing_qemu_is_named() {
    let env =
        TestEnv::with_config("[hypervisor.qemu]\npath = \"/nonexistent/qemu-system-x86_64\"\n");
    fails_with(
        &env,
        &["run", "--rm", &image(), "--", "true"],
        &["/nonexistent/qemu-system-x86_64", "qemu-system-x86"],
    );
}

#[test]
fn missing_kernel_and_initrd_are_named() {
    let env = TestEnv::with_config("[hypervisor.qemu]\nkernel = \"/nonexistent/vmlinux\"\n");
    fails_with(
        &env,
        &["run", "--rm", &image(), "--", "true"],
        &["/nonexistent/vmlinux", "shoji image build"],
    );
    let env = TestEnv::with_config("[hypervisor.qemu]\ninitrd = \"/nonexistent/initrd.img\"\n");
    fails_with(
        &env,
        &["run", "--rm", &image(), "--", "true"],
        &["/nonexistent/initrd.img"],
    );
}

#[test]
fn missing_helper_is_named() {
    let env = TestEnv::new();
    let out = env
        .cmd()
        .args(["run", "--rm", &image(), "--", "true"])
        .env("PATH", "/usr/bin:/bin")
        .env("SHOJI_GUEST_DIR", shoji_image::guest_dir())
        .env("HOME", env.dir.path())
        .env_remove("CARGO_HOME")
        .output()
        .unwrap();
    env.assert_nothing_left();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(
        err.contains("vhost-device-vsock") && err.contains("cargo install"),
        "{err}"
    );
}

#[test]
fn unknown_config_key_is_named_with_its_file() {
    let env = TestEnv::with_config("[hypervisor.qemu]\nmemroy = 3\n");
    let cfg = env.config.display().to_string();
    fails_with(
        &env,
        &["run", "--rm", &image(), "--", "true"],
        &["memroy", &cfg],
    );
}

#[test]
fn malformed_tarball_and_bundle_config_are_named() {
    let env = TestEnv::new();
    let bad = env.dir.path().join("broken.tar");
    std::fs::write(
        &bad,
        b"definitely not a tar archive, just some bytes that go on for a while",
    )
    .unwrap();
    fails_with(
        &env,
        &["run", "--rm", &bad.display().to_string(), "--", "true"],
        &["broken.tar"],
    );

    let bundle = env.dir.path().join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    std::fs::write(bundle.join("config.json"), b"{\"process\": [").unwrap();
    fails_with(
        &env,
        &["run", "--rm", "--bundle", &bundle.display().to_string()],
        &["config.json"],
    );
}

/// A kernel whose /init never starts an agent: the boot deadline ends it, and the message
/// carries the last lines of the guest console.
#[test]
fn vm_kernel_that_never_starts_the_agent_times_out_with_console_tail() {
    let t = tempfile::tempdir().unwrap();
    let initrd = common::initrd_without_agent(t.path());
    let env = TestEnv::with_config(&format!(
        "[hypervisor.qemu]\ninitrd = {:?}\nboot_timeout = 6\n",
        initrd
    ));
    let start = std::time::Instant::now();
    fails_with(
        &env,
        &["run", "--rm", &image(), "--", "true"],
        &["did not get ready", "no-agent-in-this-image"],
    );
    assert!(start.elapsed().as_secs() < 30, "took {:?}", start.elapsed());
}

/// QEMU killed under a running container is noticed within seconds, not at a timeout.
#[test]
fn vm_qemu_killed_mid_run_is_noticed_fast() {
    let env = TestEnv::new();
    let child = env
        .cmd()
        .args(["run", "--rm", &image(), "--", "sleep", "60"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let needle = env.sandbox_root().to_string_lossy().into_owned();
    // Wait until the container runs (the VM has been up a few seconds), then SIGKILL QEMU.
    std::thread::sleep(std::time::Duration::from_secs(6));
    let mut killed = false;
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd);
            if cmd.starts_with("/usr/bin/qemu-system") && cmd.contains(&needle) {
                let pid: i32 = e.file_name().to_string_lossy().parse().unwrap();
                nix::sys::signal::kill(
                    nix::unistd::Pid::from_raw(pid),
                    nix::sys::signal::Signal::SIGKILL,
                )
                .unwrap();
                killed = true;
            }
        }
    }
    assert!(killed, "no QEMU found to kill");
    let start = std::time::Instant::now();
    let out = child.wait_with_output().unwrap();
    assert!(
        start.elapsed().as_secs() < 10,
        "noticed only after {:?}",
        start.elapsed()
    );
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("VM exited unexpectedly"), "{err}");
    env.assert_nothing_left();
}
