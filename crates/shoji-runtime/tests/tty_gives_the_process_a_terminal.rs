//! `shoji run -t` from a terminal gives the container's process a terminal of its own: its
//! stdin is a tty in the guest, and its output reaches the host's terminal. The test opens a
//! pseudo-terminal for `shoji`, as an interactive shell would.

mod common;
use common::{busybox_image, run_in_pty, TestEnv};

#[test]
fn vm_run_with_tty_gives_the_process_a_terminal() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let mut cmd = env.cmd();
    cmd.args([
        "run",
        "--rm",
        "-t",
        &image,
        "--",
        "sh",
        "-c",
        "test -t 0 && test -t 1 && echo is-a-tty; exit 4",
    ]);
    let (out, code) = run_in_pty(cmd);
    assert!(out.contains("is-a-tty"), "terminal output: {out:?}");
    assert_eq!(code, Some(4), "terminal output: {out:?}");
    env.assert_nothing_left();
}

#[test]
fn vm_run_without_tty_gives_no_terminal() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let mut cmd = env.cmd();
    cmd.args([
        "run",
        "--rm",
        &image,
        "--",
        "sh",
        "-c",
        "test -t 0 || test -t 1 || echo no-tty",
    ]);
    // Even from a terminal: without -t the process's stdio are the vsock streams.
    let (out, code) = run_in_pty(cmd);
    assert!(out.contains("no-tty"), "terminal output: {out:?}");
    assert_eq!(code, Some(0), "terminal output: {out:?}");
    env.assert_nothing_left();
}
