//! `shoji run -t` from a terminal gives the container's process a terminal of its own: its
//! stdin is a tty in the guest, its output reaches the host's terminal, and it follows the
//! host terminal's size as it changes. The test opens a pseudo-terminal for `shoji`, as an
//! interactive shell would.

use crate::common;
use common::{busybox_image, run_in_pty, PtyRun, TestEnv, FOLLOWS_RESIZE};

#[test]
fn vm_run_with_tty_gives_the_process_a_terminal_that_follows_resizes() {
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
        FOLLOWS_RESIZE,
    ]);
    let mut run = PtyRun::start(cmd, (24, 80));
    run.wait_for("ready");
    run.resize(40, 132);
    let (out, code) = run.finish();
    assert!(out.contains("is-a-tty"), "terminal output: {out:?}");
    assert!(
        out.contains("resized-to-40x132"),
        "terminal output: {out:?}"
    );
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
