//! Issue 10, items 6 and the virtiofsd part: a sandbox's directory, its files (the spec with
//! `-e` secrets, the logs, the state), its sockets and the container's root filesystem are
//! closed to the host's other users; the rootfs is reached only through a `nosuid,nodev` mount,
//! while the guest still sees setuid bits as the image has them; virtiofsd runs in its own
//! sandbox. Tests that boot VMs are named `vm_*`.

use crate::common;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use common::{busybox_image, shoji_bin, text};

/// A run of `shoji` with no `sandbox_root` configured and `$XDG_RUNTIME_DIR` in a directory
/// every user can traverse, so that only Shoji's own modes keep other users out.
struct OpenHost {
    dir: tempfile::TempDir,
}

impl OpenHost {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("configuration.toml"), "").unwrap();
        Self { dir }
    }
    fn xdg(&self) -> PathBuf {
        self.dir.path().join("xdg")
    }
    fn root(&self) -> PathBuf {
        self.xdg().join("shoji")
    }
    fn cmd(&self) -> Command {
        std::fs::create_dir_all(self.xdg()).unwrap();
        std::fs::set_permissions(self.xdg(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let mut c = Command::new(shoji_bin());
        c.arg("--config")
            .arg(self.dir.path().join("configuration.toml"))
            .arg("--data-dir")
            .arg(self.dir.path().join("data"))
            .env("XDG_RUNTIME_DIR", self.xdg());
        c
    }
    fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(0),
            "shoji {args:?}: {}",
            text(&out.stderr)
        );
        out
    }
}

/// Runs `argv` as user and group 65534 (nobody), without supplementary groups. Through a shell:
/// setpriv keeps root's capabilities until its own execve, so it would find `argv[0]` through
/// directories nobody can search.
fn as_nobody(argv: &[&str]) -> Output {
    Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", "--"])
        .args(["/bin/sh", "-c", "exec \"$@\"", "sh"])
        .args(argv)
        .output()
        .expect("running setpriv")
}

/// Everything in `dir`, not below `rootfs` nor the container's overlay layer in `overlay/`
/// (the image's own modes apply there; `overlay/` itself is closed).
fn entries(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        out.push(p.clone());
        let mine = !["rootfs", "upper", "work"].contains(&&*e.file_name().to_string_lossy());
        if e.file_type().unwrap().is_dir() && mine {
            entries(&p, out);
        }
    }
}

fn mount_options(path: &Path) -> Option<String> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
    info.lines().find_map(|l| {
        let f: Vec<&str> = l.split(' ').collect();
        (Path::new(f[4]) == path).then(|| f[5].to_string())
    })
}

struct Cleanup<'a>(&'a OpenHost, &'a str);
impl Drop for Cleanup<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["delete", "--force", self.1]).output();
    }
}

#[test]
fn vm_a_live_sandbox_is_closed_to_other_users_and_its_rootfs_is_nosuid() {
    let host = OpenHost::new();
    let id = "closed";
    let _cleanup = Cleanup(&host, id);
    let image = busybox_image().0.display().to_string();
    host.ok(&[
        "create",
        "-e",
        "API_TOKEN=hunter2",
        &image,
        id,
        "--",
        "sleep",
        "1000",
    ]);
    host.ok(&["start", id]);
    // The guest makes a setuid-root binary through virtio-fs: the guest must see it as made.
    let out = host.ok(&[
        "exec",
        id,
        "--",
        "sh",
        "-c",
        "cp /bin/busybox /bin/rootshell && chmod 4755 /bin/rootshell && stat -c %a /bin/rootshell",
    ]);
    assert_eq!(text(&out.stdout).trim(), "4755");

    let root = host.root();
    let dir = root.join(id);
    let mode = |p: &Path| std::fs::symlink_metadata(p).unwrap().mode();
    assert_eq!(mode(&root) & 0o7777, 0o700, "{}", root.display());
    assert_eq!(mode(&dir) & 0o7777, 0o700, "{}", dir.display());
    let mut all = Vec::new();
    entries(&dir, &mut all);
    let names: Vec<String> = all
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for f in [
        "config.json",
        "state.json",
        "stdout.log",
        "stderr.log",
        "sandbox.log",
        "console.log",
        "control.sock",
    ] {
        assert!(names.iter().any(|n| n == f), "no {f} in {names:?}");
    }
    for p in &all {
        let m = std::fs::symlink_metadata(p).unwrap();
        let t = m.file_type();
        if t.is_file() {
            assert_eq!(m.mode() & 0o7777, 0o600, "{}", p.display());
        } else if t.is_dir()
            && p.file_name()
                .is_some_and(|n| !["rootfs", "upper", "work"].contains(&&*n.to_string_lossy()))
        {
            assert_eq!(m.mode() & 0o7777, 0o700, "{}", p.display());
        }
    }
    let config = dir.join("config.json");
    assert!(std::fs::read_to_string(&config)
        .unwrap()
        .contains("hunter2"));

    // Another user can neither list nor traverse the root or the sandbox, nor read the spec,
    // nor connect to a socket, nor reach the setuid binary.
    let rootfs = dir.join("shared").join(id).join("rootfs");
    let shell = rootfs.join("bin/rootshell");
    for argv in [
        vec!["ls", root.to_str().unwrap()],
        vec!["ls", dir.to_str().unwrap()],
        vec!["cat", config.to_str().unwrap()],
        vec!["cat", dir.join("stdout.log").to_str().unwrap()],
        vec!["stat", dir.join("control.sock").to_str().unwrap()],
        vec!["stat", shell.to_str().unwrap()],
        vec![shell.to_str().unwrap(), "id"],
    ] {
        let out = as_nobody(&argv);
        assert_ne!(out.status.code(), Some(0), "nobody could run {argv:?}");
        assert!(
            text(&out.stderr).contains("Permission denied"),
            "{argv:?}: {}",
            text(&out.stderr)
        );
    }
    // Control: nobody can run things at all, so the refusals above are the modes' doing.
    assert_eq!(as_nobody(&["ls", "/"]).status.code(), Some(0));

    // The host reaches the rootfs only through a nosuid,nodev mount, inside the share, itself
    // such a mount; the bits are kept.
    let share = mount_options(&dir.join("shared")).expect("the share is a mount point");
    assert!(
        share.split(',').any(|o| o == "nosuid") && share.split(',').any(|o| o == "nodev"),
        "{share}"
    );
    let opts = mount_options(&rootfs).expect("rootfs is a mount point");
    assert!(
        opts.split(',').any(|o| o == "nosuid") && opts.split(',').any(|o| o == "nodev"),
        "{opts}"
    );
    assert_eq!(mode(&shell) & 0o7777, 0o4755);

    // virtiofsd confines itself (its own mount namespace), rather than `--sandbox none`.
    let vfs = common::processes_naming(&dir)
        .into_iter()
        .find(|c| c.contains("virtiofsd"))
        .expect("virtiofsd runs");
    assert!(vfs.contains("--sandbox namespace"), "{vfs}");

    host.ok(&["delete", "--force", id]);
    assert!(!dir.exists());
    assert!(mount_options(&rootfs).is_none(), "the rootfs mount is left");
}

/// The default root (`$XDG_RUNTIME_DIR/shoji`) is made 0700, also when an earlier Shoji left it
/// open: the run fails (no such image) after it made its sandbox directory.
#[test]
fn the_default_sandbox_roots_are_made_private() {
    let host = OpenHost::new();
    std::fs::create_dir_all(host.root()).unwrap();
    std::fs::set_permissions(host.root(), std::fs::Permissions::from_mode(0o755)).unwrap();
    let out = host
        .cmd()
        .args(["run", "/nonexistent/image", "--", "true"])
        .output()
        .unwrap();
    assert_ne!(out.status.code(), Some(0));
    let mode = std::fs::metadata(host.root()).unwrap().mode() & 0o7777;
    assert_eq!(mode, 0o700, "{}", host.root().display());
}
