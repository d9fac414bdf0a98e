//! `shoji run` boots a real microVM (QEMU, the guest image's kernel, shoji-agent as /init) and runs the
//! container's process inside it. Every test here boots VMs: named `vm_*`, run one at a time.

use crate::common;
use common::{busybox_image, text, TestEnv};

fn image() -> String {
    busybox_image().0.display().to_string()
}

#[test]
fn vm_exit_code_and_stdout_stderr_are_the_containers() {
    let env = TestEnv::new();
    let out = env.run(&[
        "run",
        "--rm",
        &image(),
        "--",
        "sh",
        "-c",
        "echo out; echo err >&2; exit 3",
    ]);
    assert_eq!(text(&out.stdout), "out\n");
    assert!(text(&out.stderr).contains("err\n"), "{}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3));
}

#[test]
fn vm_stdin_reaches_the_container_with_interactive() {
    let env = TestEnv::new();
    let mut child = env
        .cmd()
        .args(["run", "--rm", "-i", &image(), "--", "cat"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    child.stdin.take().unwrap().write_all(b"hi\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(text(&out.stdout), "hi\n");
    assert_eq!(out.status.code(), Some(0));
    env.assert_nothing_left();
}

#[test]
fn vm_image_command_env_workdir_and_user_apply() {
    let env = TestEnv::new();
    // No command: the image's Cmd (sh) runs, reads the empty stdin and exits 0.
    let out = env.run(&["run", "--rm", &image()]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = env.run(&[
        "run",
        "--rm",
        "-e",
        "FOO=bar",
        "-w",
        "/tmp",
        "-u",
        "1000:1000",
        &image(),
        "--",
        "sh",
        "-c",
        "echo $FOO $(pwd) $(id -u):$(id -g) ${PATH%%:*}",
    ]);
    assert_eq!(
        text(&out.stdout),
        "bar /tmp 1000:1000 /usr/local/sbin\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn vm_container_is_pid1_of_its_namespace_in_a_limited_cgroup() {
    let env = TestEnv::new();
    let out = env.run(&[
        "run", "--rm", "--memory", "200M", "--cpus", "1.5", &image(), "--",
        "sh", "-c", "tr '\\0' ' ' </proc/1/cmdline; echo; cat /sys/fs/cgroup/memory.max /sys/fs/cgroup/cpu.max; ls /proc | grep -c '^[0-9]'",
    ]);
    let s = text(&out.stdout);
    let lines: Vec<&str> = s.lines().collect();
    assert!(
        lines[0].starts_with("sh -c "),
        "PID 1 is not the container's command: {s}"
    );
    assert_eq!(lines[1], (200u64 << 20).to_string());
    assert_eq!(lines[2], "150000 100000");
    // Only the container's own processes are visible (sh, ls, grep and the like), not the agent.
    let n: u32 = lines[3].trim().parse().unwrap();
    assert!(n < 6, "{n} processes visible: not an own PID namespace");
}

#[test]
fn vm_cpus_and_memory_size_the_vm() {
    let env = TestEnv::new();
    let out = env.run(&[
        "run",
        "--rm",
        "--cpus",
        "2",
        "--memory",
        "384M",
        &image(),
        "--",
        "sh",
        "-c",
        "nproc; sed -n 's/MemTotal: *\\([0-9]*\\) kB/\\1/p' /proc/meminfo",
    ]);
    let s = text(&out.stdout);
    let mut l = s.lines();
    assert_eq!(l.next(), Some("2"), "{s}");
    let kib: u64 = l.next().unwrap().trim().parse().unwrap();
    assert!(
        (300_000..=393_216).contains(&kib),
        "MemTotal {kib} kB for a 384 MiB VM"
    );
}

#[test]
fn vm_missing_executable_exits_127_and_non_executable_126() {
    let env = TestEnv::new();
    let out = env.run(&["run", "--rm", &image(), "--", "/no/such/thing"]);
    assert_eq!(out.status.code(), Some(127));
    assert!(
        text(&out.stderr).contains("/no/such/thing"),
        "{}",
        text(&out.stderr)
    );
    let out = env.run(&["run", "--rm", &image(), "--", "/etc/passwd"]);
    assert_eq!(out.status.code(), Some(126));
}

#[test]
fn vm_tarball_bundle_and_rootfs_sources_work() {
    let env = TestEnv::new();
    let tar = busybox_image().1.display().to_string();
    let out = env.run(&["run", "--rm", &tar, "--", "echo", "from-tarball"]);
    assert_eq!(text(&out.stdout), "from-tarball\n", "{}", text(&out.stderr));

    // A rootfs directory and a runc-style bundle made from it.
    let bundle = env.dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    std::fs::create_dir_all(rootfs.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/sh")).unwrap();
    std::os::unix::fs::symlink("busybox", rootfs.join("bin/echo")).unwrap();
    let out = env.run(&[
        "run",
        "--rm",
        "--rootfs",
        &rootfs.display().to_string(),
        "--",
        "/bin/echo",
        "from-rootfs",
    ]);
    assert_eq!(text(&out.stdout), "from-rootfs\n", "{}", text(&out.stderr));
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["/bin/sh", "-c", "echo from-bundle $X"], "env": ["X=1", "PATH=/bin"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"}
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let out = env.run(&["run", "--rm", "--bundle", &bundle.display().to_string()]);
    assert_eq!(
        text(&out.stdout),
        "from-bundle 1\n",
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn vm_sigterm_to_shoji_run_reaches_the_container() {
    use std::io::BufRead;
    let env = TestEnv::new();
    let mut child = env
        .cmd()
        .args([
            "run",
            "--rm",
            &image(),
            "--",
            "sh",
            "-c",
            "trap 'echo got-term; exit 7' TERM; echo ready; while :; do sleep 0.1; done",
        ])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Signal once the container's trap is set (a fixed sleep was too short on a loaded host);
    // a boot that never gets there ends the read with EOF.
    let mut stdout = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut stdout, &mut rest).unwrap();
    let status = child.wait().unwrap();
    assert_eq!(rest, "got-term\n");
    assert_eq!(status.code(), Some(143), "shoji run must exit 128+SIGTERM");
    env.assert_nothing_left();
}
