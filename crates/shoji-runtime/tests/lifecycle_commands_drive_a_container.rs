//! `shoji create|start|state|kill|delete|exec` drive one container through its OCI lifecycle
//! in a real microVM, kept by a sandbox process between commands; `delete` leaves no process,
//! socket or directory behind, also when the sandbox process was killed. Tests that boot VMs
//! are named `vm_*` and run one at a time.

use crate::common;
use std::process::Output;
use std::time::{Duration, Instant};

use common::{busybox_image, text, PtyRun, TestEnv, FOLLOWS_RESIZE};

fn image() -> String {
    busybox_image().0.display().to_string()
}

fn shoji(env: &TestEnv, args: &[&str]) -> Output {
    env.cmd().args(args).output().expect("running shoji")
}

fn fails_with(env: &TestEnv, args: &[&str], needles: &[&str]) {
    let out = shoji(env, args);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0), "should fail: shoji {args:?}");
    for n in needles {
        assert!(err.contains(n), "shoji {args:?}: stderr lacks {n:?}: {err}");
    }
}

fn state(env: &TestEnv, id: &str) -> serde_json::Value {
    let out = env.ok(&["state", id]);
    serde_json::from_slice(&out.stdout).expect("state is JSON")
}

/// Polls `shoji state` until the status is `want`.
fn wait_for_status(env: &TestEnv, id: &str, want: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let st = state(env, id);
        if st["status"] == want {
            return st;
        }
        assert!(Instant::now() < deadline, "never {want}: {st}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Deletes `id` even if the test failed half-way, so that no VM outlives the test.
struct Cleanup<'a>(&'a TestEnv, &'a str);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["delete", "--force", self.1]).output();
    }
}

#[test]
fn vm_create_start_exec_kill_delete_drive_a_container() {
    let env = TestEnv::new();
    let id = "web-1";
    let _cleanup = Cleanup(&env, id);
    // The init reports it started, and exits 42 on SIGTERM (a PID 1 has no default handler).
    env.ok(&[
        "create",
        &image(),
        id,
        "--",
        "sh",
        "-c",
        "echo started; trap 'echo bye; exit 42' TERM; while :; do sleep 1; done",
    ]);
    let dir = env.sandbox_root().join(id);

    let st = state(&env, id);
    assert_eq!(st["ociVersion"], "1.2.0");
    assert_eq!(st["id"], id);
    assert_eq!(st["status"], "created");
    assert!(st["pid"].as_u64().is_some_and(|p| p > 1), "{st}");
    assert_eq!(st["bundle"], dir.display().to_string());
    assert!(
        st["created"].as_str().is_some_and(|c| c.ends_with('Z')),
        "{st}"
    );
    assert!(st.get("exitCode").is_none(), "{st}");
    assert!(dir.join("config.json").is_file());
    assert!(dir.join("control.sock").exists());
    // Not started yet: nothing can run in it.
    fails_with(
        &env,
        &["exec", id, "--", "true"],
        &[id, "created, not running"],
    );

    env.ok(&["start", id]);
    assert_eq!(state(&env, id)["status"], "running");
    fails_with(&env, &["start", id], &[id, "running, not created"]);

    let out = shoji(
        &env,
        &[
            "exec",
            id,
            "--",
            "sh",
            "-c",
            "echo out; echo err >&2; exit 3",
        ],
    );
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
    // The exec'd process shares the container: its PID namespace (the init is PID 1 there),
    // its environment and root filesystem.
    let out = env.ok(&[
        "exec",
        "-e",
        "X=y",
        id,
        "sh",
        "-c",
        "echo $X; tr '\\0' ' ' </proc/1/cmdline",
    ]);
    assert!(
        text(&out.stdout).starts_with("y\nsh -c echo started"),
        "{}",
        text(&out.stdout)
    );
    // With -t: a terminal of the caller's size, following it when it changes.
    let mut cmd = env.cmd();
    cmd.args(["exec", "-t", id, "sh", "-c", FOLLOWS_RESIZE]);
    let mut exec = PtyRun::start(cmd, (24, 80));
    exec.wait_for("ready");
    exec.resize(40, 132);
    let (tty_out, code) = exec.finish();
    assert!(tty_out.contains("is-a-tty"), "{tty_out:?}");
    assert!(tty_out.contains("resized-to-40x132"), "{tty_out:?}");
    assert_eq!(code, Some(4), "{tty_out:?}");
    // Each exec removed its stdio sockets.
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("vm.vsock_3"))
        .collect();
    assert!(left.is_empty(), "{left:?}");

    env.ok(&["kill", id]);
    let st = wait_for_status(&env, id, "stopped");
    assert_eq!(st["exitCode"], 42, "{st}");
    assert!(st.get("pid").is_none(), "{st}");
    let log = std::fs::read_to_string(dir.join("stdout.log")).unwrap();
    assert_eq!(log, "started\nbye\n");
    fails_with(&env, &["kill", id, "KILL"], &[id, "stopped"]);

    env.ok(&["delete", id]);
    env.assert_nothing_left();
    fails_with(&env, &["state", id], &[id, "no container"]);
}

#[test]
fn vm_duplicate_id_and_deleting_a_running_container_are_refused() {
    let env = TestEnv::new();
    let id = "dup";
    let _cleanup = Cleanup(&env, id);
    env.ok(&["create", &image(), id, "--", "sleep", "1000"]);
    fails_with(
        &env,
        &["create", &image(), id, "--", "true"],
        &[
            id,
            "already exists",
            &env.sandbox_root().display().to_string(),
        ],
    );
    // The refused create left the first container alone.
    env.ok(&["start", id]);
    assert_eq!(state(&env, id)["status"], "running");
    fails_with(&env, &["delete", id], &[id, "running", "--force"]);
    env.ok(&["kill", id, "SIGKILL"]);
    let st = wait_for_status(&env, id, "stopped");
    assert_eq!(st["exitCode"], 137, "{st}");
    env.ok(&["delete", id]);
    env.assert_nothing_left();

    // A created container needs no --force; a running one is killed with it.
    env.ok(&["create", &image(), id, "--", "sleep", "1000"]);
    env.ok(&["delete", id]);
    env.assert_nothing_left();
}

#[test]
fn vm_a_killed_sandbox_process_shows_stopped_and_delete_cleans_up() {
    let env = TestEnv::new();
    let id = "orphan";
    let _cleanup = Cleanup(&env, id);
    env.ok(&["create", &image(), id, "--", "sleep", "1000"]);
    env.ok(&["start", id]);
    let pid = state(&env, id)["pid"].as_i64().expect("pid") as i32;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let st = wait_for_status(&env, id, "stopped");
    assert!(st["annotations"]["shoji.error"]
        .as_str()
        .is_some_and(|e| e.contains("sandbox process")));
    fails_with(
        &env,
        &["exec", id, "true"],
        &[id, "stopped", "shoji delete"],
    );
    env.ok(&["delete", id]);
    env.assert_nothing_left();
}

#[test]
fn unknown_and_invalid_ids_are_named_with_the_state_root() {
    let env = TestEnv::new();
    let root = env.sandbox_root().display().to_string();
    for cmd in [
        &["state", "ghost"][..],
        &["start", "ghost"],
        &["kill", "ghost"],
        &["delete", "ghost"],
        &["delete", "--force", "ghost"],
        &["exec", "ghost", "true"],
    ] {
        fails_with(&env, cmd, &["\"ghost\"", &root]);
    }
    fails_with(
        &env,
        &["state", "../etc"],
        &["invalid container id", "../etc"],
    );
    fails_with(
        &env,
        &["create", &image(), "a/b", "--", "true"],
        &["invalid container id"],
    );
    fails_with(
        &env,
        &["kill", "ghost", "NOPE"],
        &["invalid signal", "NOPE"],
    );
    env.assert_nothing_left();
}

#[test]
fn vm_a_create_that_cannot_boot_fails_with_the_console_and_leaves_nothing() {
    let t = tempfile::tempdir().unwrap();
    let initrd = common::initrd_without_agent(t.path());
    let env = TestEnv::with_config(&format!(
        "[hypervisor.qemu]\ninitrd = {initrd:?}\nboot_timeout = 6\n"
    ));
    fails_with(
        &env,
        &["create", &image(), "noboot", "--", "true"],
        &["noboot", "did not get ready", "no-agent-in-this-image"],
    );
    env.assert_nothing_left();
    fails_with(&env, &["state", "noboot"], &["no container"]);
}

#[test]
fn vm_an_interrupted_create_leaves_nothing() {
    let (_t, env) = common::env_that_never_boots();
    let id = "halfway";
    common::interrupt_create_while_booting(&env, &[&image()], id, || {
        assert_eq!(state(&env, id)["status"], "creating");
    });
    env.assert_nothing_left();
}
