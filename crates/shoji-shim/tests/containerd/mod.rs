//! A real containerd 2.x for the shim's tests: its own root, state, sockets and configuration
//! under a temp dir, the shim under test on its `PATH`, Shoji's test configuration (sandbox root
//! in the same temp dir) in its environment. Stopped, and checked for leftovers, on drop.

#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

#[path = "../../../shoji-runtime/tests/common/mod.rs"]
pub mod common;

pub use common::{busybox_image, mounts_naming, processes_naming, text, TestEnv};

/// containerd's namespace the tests use.
pub const NAMESPACE: &str = "shoji-test";
/// The runtime type the shim answers to.
pub const RUNTIME: &str = "io.containerd.shoji.v2";

/// The pinned containerd build (`scripts/lib.sh`, `ensure_containerd`).
fn tool(var: &str, name: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
            });
        cache.join(format!("shoji/go-tools/{name}-v2.4.2"))
    });
    assert!(
        p.is_file(),
        "{} missing: `. scripts/lib.sh && ensure_containerd` builds it (scripts/test.sh does)",
        p.display()
    );
    p
}

/// A running containerd and the Shoji test environment its shims use.
pub struct Containerd {
    pub env: TestEnv,
    pub dir: PathBuf,
    child: Option<Child>,
}

impl Containerd {
    /// Starts containerd with `extra_env` added to its environment (and so to its shims').
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        let env = TestEnv::new();
        let dir = env.dir.path().join("containerd");
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let config = dir.join("config.toml");
        let d = dir.display();
        // CRI is off: these tests drive containerd through ctr only.
        std::fs::write(
            &config,
            format!(
                r#"version = 3
root = "{d}/root"
state = "{d}/state"
disabled_plugins = ["io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.nri.v1.nri"]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "info"
"#
            ),
        )
        .expect("containerd config");
        let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-shoji-v2"));
        let path = format!(
            "{}:{}",
            shim.parent().expect("the shim's directory").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::File::create(dir.join("containerd.log")).expect("containerd log");
        let mut cmd = Command::new(tool("SHOJI_CONTAINERD", "containerd"));
        cmd.arg("--config")
            .arg(&config)
            .env("PATH", path)
            .env("SHOJI_CONFIG", &env.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("starting containerd");
        let c = Self {
            env,
            dir: dir.clone(),
            child: Some(child),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while c.ctr(&["version"]).status.code() != Some(0) {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                c.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    pub fn ctr_cmd(&self) -> Command {
        let mut c = Command::new(tool("SHOJI_CTR", "ctr"));
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .arg("--namespace")
            .arg(NAMESPACE);
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// `ctr args...`, which must succeed.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        let out = self.ctr(args);
        assert_eq!(
            out.status.code(),
            Some(0),
            "ctr {args:?} failed: {}{}\ncontainerd log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        out
    }

    /// Imports the test busybox image (an OCI archive); returns its name.
    pub fn import_busybox(&self) -> String {
        let tar = busybox_image().1.display().to_string();
        self.ctr_ok(&["images", "import", &tar]);
        let ls = text(&self.ctr_ok(&["images", "ls", "-q"]).stdout);
        ls.lines()
            .find(|l| l.contains("busybox"))
            .unwrap_or_else(|| panic!("no busybox image after import: {ls}"))
            .to_string()
    }

    /// The task's status as `ctr task ls` shows it, if it is listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = text(&self.ctr_ok(&["tasks", "ls"]).stdout);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.last().unwrap_or(&"").to_string())
        })
    }

    /// Stops containerd (SIGTERM, then SIGKILL after 10 s).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(child.id() as i32),
                nix::sys::signal::Signal::SIGTERM,
            );
            let deadline = Instant::now() + Duration::from_secs(10);
            while child.try_wait().ok().flatten().is_none() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Waits (at most `max`) until no process or mount names the test dir and the sandbox
    /// root is empty: processes killed by their parent's death take a moment to go.
    pub fn wait_until_nothing_left(&self, max: Duration) {
        let deadline = Instant::now() + max;
        let root = self.env.sandbox_root();
        let empty = || {
            std::fs::read_dir(&root)
                .map(|rd| rd.flatten().all(|e| e.file_name() == "accel-probe"))
                .unwrap_or(true)
        };
        while Instant::now() < deadline
            && !(self.leftover_processes().is_empty()
                && mounts_naming(self.env.dir.path()).is_empty()
                && empty())
        {
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn leftover_processes(&self) -> Vec<String> {
        processes_naming(self.env.dir.path())
            .into_iter()
            .filter(|c| {
                c.contains("containerd-shim")
                    || c.contains("qemu")
                    || c.contains("virtiofsd")
                    || c.contains("vhost")
            })
            .collect()
    }

    /// Nothing of the tasks is left: no shim, QEMU or helper (they all name the test dir or
    /// the sandbox root), no mount under the test dir, no sandbox directory.
    pub fn assert_nothing_left(&self) {
        self.env.assert_nothing_left();
        let procs = self.leftover_processes();
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let mounts = mounts_naming(self.env.dir.path());
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A failed test may leave tasks: kill them through containerd first, so that no VM
        // outlives the test.
        if self.child.is_some() {
            let ls = text(&self.ctr(&["tasks", "ls", "-q"]).stdout);
            for id in ls.lines().filter(|l| !l.is_empty()) {
                let _ = self.ctr(&["tasks", "kill", "-s", "SIGKILL", id]);
                let _ = self.ctr(&["tasks", "delete", "--force", id]);
            }
        }
        self.stop();
        // Whatever containerd left mounted under the test dir would keep the temp dir from
        // being removed.
        let mine = self.env.dir.path().to_string_lossy().into_owned();
        for l in mounts_naming(self.env.dir.path()) {
            if let Some(mp) = l.split_whitespace().nth(4).filter(|m| m.starts_with(&mine)) {
                let _ = nix::mount::umount2(mp, nix::mount::MntFlags::MNT_DETACH);
            }
        }
    }
}
