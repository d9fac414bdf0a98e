//! Issue 13, volumes: host directories and files bound into a container through the sandbox's
//! shared directory, tmpfs mounts, `--read-only` and `--shm-size`, seen from inside a real guest
//! and from the host while it runs.

use crate::common;
use std::io::{BufRead, Write};

use common::{busybox_image, mounts_naming, text, TestEnv};

/// The mount table line of the staging mount whose mount point ends with `suffix`.
fn staging_mount(env: &TestEnv, suffix: &str) -> String {
    mounts_naming(&env.sandbox_root())
        .into_iter()
        .find(|l| l.split(' ').nth(4).is_some_and(|p| p.ends_with(suffix)))
        .unwrap_or_else(|| panic!("no staging mount ending with {suffix}"))
}

#[test]
fn vm_volumes_tmpfs_and_read_only_root_work_in_the_guest() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "bind volumes need root, and CI runs as root"
    );
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let host = env.dir.path().join("host");
    let (rw, ro, file) = (host.join("rw"), host.join("ro"), host.join("greeting"));
    std::fs::create_dir_all(&rw).unwrap();
    std::fs::create_dir_all(&ro).unwrap();
    std::fs::write(ro.join("existing"), "ro-content\n").unwrap();
    std::fs::write(&file, "hello-file\n").unwrap();
    // A host file the guest must never read: a symlink in a volume names it by its host path.
    let secret = host.join("shadow");
    std::fs::write(&secret, "HOST-SECRET\n").unwrap();
    std::os::unix::fs::symlink(&secret, rw.join("link")).unwrap();
    std::os::unix::fs::symlink("../../../../../../etc/passwd", rw.join("up")).unwrap();

    let script = "\
        echo from-guest > /rw/written && echo rw-ok; \
        touch /ro/x 2>/dev/null && echo ro-WRITABLE || echo ro-refused; \
        cat /ro/existing /etc/greeting; \
        echo more >> /etc/greeting 2>/dev/null && echo file-WRITABLE || echo file-refused; \
        touch /rootfile 2>/dev/null && echo root-WRITABLE || echo root-read-only; \
        echo t > /scratch/t && echo tmpfs-ok; \
        grep -c root: /rw/up; \
        cat /rw/link 2>/dev/null || echo link-stays-in-guest; \
        grep -E ' /(scratch|t2|dev/shm) ' /proc/mounts | cut -d' ' -f2,4; \
        echo ready; read x; echo bye";
    let mut child = env
        .cmd()
        .args([
            "run",
            "--rm",
            "-i",
            "--name",
            "vol",
            "--read-only",
            "-v",
            &format!("{}:/rw", rw.display()),
            "-v",
            &format!("{}:/ro:ro", ro.display()),
            "--mount",
            &format!(
                "type=bind,source={},target=/etc/greeting,readonly",
                file.display()
            ),
            "--tmpfs",
            "/scratch:size=1m",
            "--mount",
            "type=tmpfs,target=/t2,tmpfs-size=2m,tmpfs-mode=700",
            "--shm-size",
            "3m",
            &image,
            "--",
            "sh",
            "-c",
            script,
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = String::new();
    let mut lines = std::io::BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        if lines.read_line(&mut line).unwrap() == 0 || line == "ready\n" {
            break;
        }
        out.push_str(&line);
    }
    // While the container runs: the read-only volumes are read-only on the host too, so
    // virtiofsd (root) cannot write through them whatever the guest asks; the writable one
    // is not; none is a peer of the host's mounts.
    let (ro_line, file_line, rw_line) = (
        staging_mount(&env, "/shared/vol/mounts/1"),
        staging_mount(&env, "/shared/vol/mounts/2"),
        staging_mount(&env, "/shared/vol/mounts/0"),
    );
    let mut stdin = child.stdin.take().unwrap();
    stdin.write_all(b"\n").unwrap();
    drop(stdin);
    let mut after = String::new();
    std::io::Read::read_to_string(&mut lines, &mut after).unwrap();
    let rest = child.wait_with_output().unwrap();
    let stderr = text(&rest.stderr);
    assert!(ro_line.contains(" ro,nosuid,nodev"), "{ro_line}");
    assert!(file_line.contains(" ro,nosuid,nodev"), "{file_line}");
    assert!(rw_line.contains(" rw,nosuid,nodev"), "{rw_line}");
    assert!(!rw_line.contains("shared:"), "{rw_line}");

    assert_eq!(rest.status.code(), Some(0), "{out}{stderr}");
    assert_eq!(
        out,
        "rw-ok\nro-refused\nro-content\nhello-file\nfile-refused\nroot-read-only\ntmpfs-ok\n\
         1\nlink-stays-in-guest\n/dev/shm rw,nosuid,nodev,relatime,size=3072k\n\
         /t2 rw,nosuid,nodev,relatime,size=2048k,mode=700\n\
         /scratch rw,nosuid,nodev,noexec,relatime,size=1024k\n",
        "{stderr}"
    );
    assert_eq!(after, "bye\n");
    // Written in the guest, seen on the host; nothing written where it was refused.
    assert_eq!(
        std::fs::read_to_string(rw.join("written")).unwrap(),
        "from-guest\n"
    );
    assert!(!ro.join("x").exists());
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "hello-file\n");
    env.assert_nothing_left();
}
