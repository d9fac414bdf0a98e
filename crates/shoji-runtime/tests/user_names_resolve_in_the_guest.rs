//! Issue 10, item 5: the host never opens the container's /etc/passwd or /etc/group. `-u NAME`
//! for `create`/`run` and `exec -u NAME` are resolved by the guest agent inside the container's
//! root, with bounded reads of regular files: a container that turns its /etc/passwd into a
//! FIFO or a device makes `exec -u NAME` fail at once with a clear error, not wedge the sandbox
//! or eat memory; a symlink to the host's /etc/shadow reads nothing of the host's. `vm_*`: serial.

use crate::common;
use std::time::{Duration, Instant};

use common::{busybox_image, text, DeleteOnDrop, TestEnv};

fn image() -> String {
    busybox_image().0.display().to_string()
}

/// `shoji exec ARGS` fails within a bound, saying `needle`.
fn exec_fails_fast(env: &TestEnv, args: &[&str], needle: &str) {
    let started = Instant::now();
    let out = env
        .cmd()
        .arg("exec")
        .args(args)
        .output()
        .expect("running shoji");
    let took = started.elapsed();
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "exec {args:?} should fail");
    assert!(
        err.contains(needle),
        "exec {args:?}: stderr lacks {needle:?}: {err}"
    );
    assert!(
        took < Duration::from_secs(30),
        "exec {args:?} took {took:?}"
    );
}

#[test]
fn vm_named_users_work_for_create_and_exec_and_a_hostile_passwd_fails_exec_fast() {
    let env = TestEnv::new();
    let id = "users-1";
    let _cleanup = DeleteOnDrop(&env, id);
    env.ok(&["create", "-u", "user", &image(), id, "--", "sleep", "1000"]);
    env.ok(&["start", id]);
    // exec inherits the init's user (a name, resolved again in the guest) and gets its HOME.
    let out = env.ok(&[
        "exec",
        id,
        "sh",
        "-c",
        "echo $(id -u):$(id -g) $HOME; cat /proc/1/status | grep ^Uid",
    ]);
    let stdout = text(&out.stdout);
    assert!(
        stdout.starts_with("1000:1000 /home/user\nUid:\t1000\t1000"),
        "{stdout}"
    );
    let out = env.ok(&["exec", "-u", "root", id, "sh", "-c", "echo $(id -u) $HOME"]);
    assert_eq!(text(&out.stdout), "0 /root\n");

    // The container turns its /etc/passwd into a FIFO, then into a symlink to an endless
    // device: exec -u NAME is refused at once, not wedged or reading forever, and the sandbox
    // still runs processes.
    for (replace, refusal) in [
        (
            "mkfifo /etc/passwd",
            "/etc/passwd in the container is a FIFO",
        ),
        (
            "ln -s /dev/zero /etc/passwd",
            "/etc/passwd in the container is a character device",
        ),
    ] {
        let script = format!("rm /etc/passwd && {replace}");
        env.ok(&["exec", "-u", "0:0", id, "sh", "-c", &script]);
        exec_fails_fast(&env, &["-u", "user", id, "true"], refusal);
        let out = env.ok(&["exec", "-u", "0:0", id, "echo", "alive"]);
        assert_eq!(text(&out.stdout), "alive\n");
    }
    env.ok(&["delete", "--force", id]);
    env.assert_nothing_left();
}

#[test]
fn vm_passwd_linked_to_the_hosts_shadow_reads_nothing_of_the_host() {
    let env = TestEnv::new();
    // A root filesystem whose /etc/passwd points at /etc/shadow. Read on the host (as Shoji did),
    // `-u root` took its UID from the host shadow's "last changed" field; read in the guest, the
    // link resolves inside the container's root, where there is no shadow file.
    let rootfs = env.dir.path().join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::create_dir_all(rootfs.join("etc")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/id")).unwrap();
    std::os::unix::fs::symlink("/etc/shadow", rootfs.join("etc/passwd")).unwrap();
    let out = env.run(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs.display().to_string(),
        "-u",
        "root",
        "--",
        "/bin/id",
        "-u",
    ]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "{err}");
    assert!(text(&out.stdout).is_empty(), "{}", text(&out.stdout));
    assert!(
        err.contains("user \"root\" is not in the container's /etc/passwd"),
        "{err}"
    );
}
