//! Shared by the runtime's integration tests: the real `shoji` binary, a busybox image made
//! from Debian's busybox-static, and a per-test sandbox root that is checked for leftovers.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

pub mod registry;

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// `shoji`, built by the test command before the tests run (`cargo build -p shoji-cli`).
pub fn shoji_bin() -> PathBuf {
    if let Some(p) = std::env::var_os("SHOJI_BIN") {
        return p.into();
    }
    let p = repo_root().join("target/debug/shoji");
    assert!(
        p.is_file(),
        "{} missing: run `cargo build -p shoji-cli` first",
        p.display()
    );
    p
}

/// The build's own temporary directory (`target/tmp`) for this test process's images; those of
/// test processes that have ended are removed first, so runs do not pile images up.
fn images_dir() -> &'static PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = Path::new(env!("CARGO_TARGET_TMPDIR"));
        for entry in std::fs::read_dir(base).into_iter().flatten().flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let ended = name
                .strip_prefix("shoji-test-image-")
                .is_some_and(|pid| !Path::new("/proc").join(pid).exists());
            if ended {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
        base.join(format!("shoji-test-image-{}", std::process::id()))
    })
}

/// `scripts/make-busybox-image.sh` into `name` (layout) and `name.tar` (OCI archive).
fn make_image(name: &str, args: &[&str]) -> (PathBuf, PathBuf) {
    let layout = images_dir().join(name);
    let tar = images_dir().join(format!("{name}.tar"));
    let st = Command::new(repo_root().join("scripts/make-busybox-image.sh"))
        .arg(&layout)
        .arg("--tar")
        .arg(&tar)
        .args(args)
        .output()
        .expect("running scripts/make-busybox-image.sh");
    assert!(
        st.status.success(),
        "{}",
        String::from_utf8_lossy(&st.stderr)
    );
    (layout, tar)
}

/// The busybox OCI image layout (and its tarball), made once per test process.
pub fn busybox_image() -> &'static (PathBuf, PathBuf) {
    static IMG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMG.get_or_init(|| make_image("busybox", &[]))
}

/// The busybox image with a second layer of 4 small files under `/data` (`--data 1:4`): an
/// image that shares its first layer with [`busybox_image`]. Made once per test process.
pub fn busybox_data_image() -> &'static (PathBuf, PathBuf) {
    static IMG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMG.get_or_init(|| make_image("busybox-data", &["--data", "1:4"]))
}

/// The pod sandbox image `pause:3.10` (a static pause binary, `scripts/pause.c`), made once per
/// test process. Used by the shim's suite, which compiles this harness too.
#[allow(dead_code)]
pub fn pause_image() -> &'static (PathBuf, PathBuf) {
    static IMG: OnceLock<(PathBuf, PathBuf)> = OnceLock::new();
    IMG.get_or_init(|| make_image("pause", &["--pause"]))
}

/// A temp dir with a config that points the sandbox root into it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub config: PathBuf,
}

impl TestEnv {
    pub fn new() -> Self {
        Self::with_config("")
    }

    pub fn with_config(extra: &str) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let config = dir.path().join("configuration.toml");
        let sb = dir.path().join("sandboxes");
        let text = if extra.contains("[runtime]") {
            extra.replace("[runtime]", &format!("[runtime]\nsandbox_root = {:?}", sb))
        } else {
            format!("{extra}\n[runtime]\nsandbox_root = {:?}\n", sb)
        };
        std::fs::write(&config, text).expect("write config");
        Self { dir, config }
    }

    pub fn sandbox_root(&self) -> PathBuf {
        self.dir.path().join("sandboxes")
    }

    pub fn cmd(&self) -> Command {
        let mut c = Command::new(shoji_bin());
        c.arg("--config").arg(&self.config);
        c.arg("--data-dir").arg(self.dir.path().join("data"));
        c
    }

    /// Runs `shoji args...` and asserts that it succeeded.
    pub fn ok(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("running shoji");
        assert_eq!(
            out.status.code(),
            Some(0),
            "shoji {args:?} failed: {}",
            text(&out.stderr)
        );
        out
    }

    pub fn run(&self, args: &[&str]) -> Output {
        let out = self.cmd().args(args).output().expect("running shoji");
        self.assert_nothing_left();
        out
    }

    /// `shoji run --rm --trace` of the busybox image, exported to the OTLP receiver at
    /// `endpoint` over `protocol` (`grpc`, `http/protobuf`, `http/json`); it must succeed and
    /// leave nothing behind.
    #[allow(dead_code)]
    pub fn traced_run_to(&self, endpoint: &str, protocol: &str) {
        let image = busybox_image().0.display().to_string();
        let out = self
            .cmd()
            .args(["run", "--rm", "--trace", &image, "--", "true"])
            .env("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint)
            .env("OTEL_EXPORTER_OTLP_PROTOCOL", protocol)
            .output()
            .expect("running shoji run");
        self.assert_nothing_left();
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    }

    /// No sandbox directory and no process started for one (QEMU and helpers carry the sandbox
    /// root in their arguments) may be left.
    pub fn assert_nothing_left(&self) {
        let root = self.sandbox_root();
        let left: Vec<String> = std::fs::read_dir(&root)
            .map(|rd| {
                rd.flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|n| n != "accel-probe")
                    .collect()
            })
            .unwrap_or_default();
        assert!(
            left.is_empty(),
            "left behind in {}: {left:?}",
            root.display()
        );
        let procs = processes_naming(&root);
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let mounts = mounts_naming(&root);
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
    }
}

/// A runc-style bundle in `dir/bundle` (empty rootfs, process `true` as root) whose spec lists
/// `mounts` (a JSON array of OCI mounts); returns its path as an argument for `--bundle`.
#[allow(dead_code)]
pub fn bundle_with_mounts(dir: &Path, mounts: serde_json::Value) -> String {
    let bundle = dir.join("bundle");
    std::fs::create_dir_all(bundle.join("rootfs")).unwrap();
    let config = serde_json::json!({
        "ociVersion": "1.0.2",
        "process": {"args": ["true"], "cwd": "/", "user": {"uid": 0, "gid": 0}},
        "root": {"path": "rootfs"},
        "mounts": mounts
    });
    std::fs::write(bundle.join("config.json"), config.to_string()).unwrap();
    bundle.display().to_string()
}

/// The lines of this mount namespace's mountinfo that name `path`.
pub fn mounts_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_to_string("/proc/self/mountinfo")
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

/// The command lines of live processes that name `path` in their arguments (QEMU and the
/// helpers carry their sockets' paths), other than `shoji --config` commands. A zombie has no
/// command line: only processes that still run are found.
pub fn processes_naming(path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    let mut procs = Vec::new();
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        if let Ok(cmd) = std::fs::read(e.path().join("cmdline")) {
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            if cmd.contains(&needle) && !cmd.contains("shoji --config") {
                procs.push(cmd);
            }
        }
    }
    procs
}

pub fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `cmd` with a pseudo-terminal as its stdin, stdout and stderr, as an interactive shell
/// would; returns everything written to the terminal and the exit code.
pub fn run_in_pty(cmd: Command) -> (String, Option<i32>) {
    PtyRun::start(cmd, (24, 80)).finish()
}

/// A shell script that shows it has a terminal of the host terminal's size (24x80), says
/// `ready`, then waits (30 s at most) for the size to become 40x132.
pub const FOLLOWS_RESIZE: &str = "test -t 0 && test -t 1 && echo is-a-tty; \
     until [ \"$(stty size)\" = '24 80' ]; do sleep 0.1; done; echo ready; i=0; \
     until [ \"$(stty size)\" = '40 132' ]; do i=$((i+1)); \
     [ $i -gt 300 ] && { echo \"size still $(stty size)\"; exit 9; }; sleep 0.1; done; \
     echo resized-to-40x132; exit 4";

/// A command running on a pseudo-terminal of a given size, whose output can be awaited and
/// whose terminal can be resized while it runs.
pub struct PtyRun {
    child: std::process::Child,
    master: std::fs::File,
    output: std::sync::mpsc::Receiver<Vec<u8>>,
    seen: Vec<u8>,
}

impl PtyRun {
    pub fn start(mut cmd: Command, (rows, cols): (u16, u16)) -> Self {
        use std::io::Read;
        use std::process::Stdio;
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let pty = nix::pty::openpty(Some(&size), None).expect("openpty");
        let slave = pty.slave;
        cmd.stdin(Stdio::from(slave.try_clone().expect("dup")))
            .stdout(Stdio::from(slave.try_clone().expect("dup")))
            .stderr(Stdio::from(slave));
        let child = cmd.spawn().expect("spawning shoji");
        // The command keeps copies of the slave: drop them, or the master never sees the end.
        drop(cmd);
        let master = std::fs::File::from(pty.master);
        let mut reader = master.try_clone().expect("dup the pty master");
        let (tx, output) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            // EIO once the last slave fd closes: that is the end of the output.
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        Self {
            child,
            master,
            output,
            seen: Vec::new(),
        }
    }

    /// Waits until the terminal has shown `text`; panics with what it showed after 60 s.
    pub fn wait_for(&mut self, text: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while !String::from_utf8_lossy(&self.seen).contains(text) {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match self.output.recv_timeout(left) {
                Ok(chunk) => self.seen.extend(chunk),
                Err(_) => panic!(
                    "the terminal never showed {text:?}; it showed {:?}",
                    String::from_utf8_lossy(&self.seen)
                ),
            }
        }
    }

    /// Resizes the terminal and tells the command, as a terminal emulator does (the kernel
    /// signals only a terminal's foreground process group; the command is not in one here).
    pub fn resize(&self, rows: u16, cols: u16) {
        let size = nix::pty::Winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: TIOCSWINSZ reads one winsize from a valid pointer; the master fd is open.
        let rc = unsafe {
            libc::ioctl(
                std::os::fd::AsRawFd::as_raw_fd(&self.master),
                libc::TIOCSWINSZ,
                &size,
            )
        };
        assert_eq!(rc, 0, "TIOCSWINSZ");
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(self.child.id() as i32),
            nix::sys::signal::Signal::SIGWINCH,
        )
        .expect("SIGWINCH to the command");
    }

    /// Waits for the command to exit; everything the terminal showed, and the exit code.
    pub fn finish(mut self) -> (String, Option<i32>) {
        let status = self.child.wait().expect("waiting for shoji");
        drop(self.master);
        while let Ok(chunk) = self.output.recv() {
            self.seen.extend(chunk);
        }
        (text(&self.seen), status.code())
    }
}

/// An initramfs whose /init prints `no-agent-in-this-image` and sleeps: the VM boots, the agent
/// never answers.
pub fn initrd_without_agent(dir: &Path) -> PathBuf {
    let root = dir.join("root");
    std::fs::create_dir_all(root.join("bin")).unwrap();
    std::fs::copy("/bin/busybox", root.join("bin/busybox")).unwrap();
    std::fs::write(
        root.join("init"),
        "#!/bin/busybox sh\n/bin/busybox echo no-agent-in-this-image\nexec /bin/busybox sleep 1000\n",
    )
    .unwrap();
    let st = Command::new("chmod")
        .arg("755")
        .arg(root.join("init"))
        .status()
        .unwrap();
    assert!(st.success());
    let initrd = dir.join("hang.img");
    let st = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio --quiet -o -H newc | gzip -1 > {}",
            root.display(),
            initrd.display()
        ))
        .status()
        .unwrap();
    assert!(st.success());
    initrd
}

/// A `TestEnv` whose guest never starts its agent, so a `create` stays in its boot.
pub fn env_that_never_boots() -> (tempfile::TempDir, TestEnv) {
    let t = tempfile::tempdir().expect("tempdir");
    let initrd = initrd_without_agent(t.path());
    let env = TestEnv::with_config(&format!(
        "[hypervisor.qemu]\ninitrd = {initrd:?}\nboot_timeout = 60\n"
    ));
    (t, env)
}

/// Runs `shoji create ARGS... ID -- true` in an [`env_that_never_boots`], calls `at_boot` once
/// QEMU runs (it writes the console log: the helpers and QEMU run, the sandbox process has
/// recorded itself, the container is `creating`), then interrupts `create` with SIGINT and
/// returns what it said.
pub fn interrupt_create_while_booting(
    env: &TestEnv,
    args: &[&str],
    id: &str,
    at_boot: impl FnOnce(),
) -> Output {
    let child = env
        .cmd()
        .arg("create")
        .args(args)
        .args([id, "--", "true"])
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running shoji create");
    let console = env.sandbox_root().join(id).join("console.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !console.exists() {
        assert!(std::time::Instant::now() < deadline, "QEMU never started");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    at_boot();
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGINT,
    )
    .expect("SIGINT to shoji create");
    let out = child.wait_with_output().expect("waiting for shoji create");
    assert_ne!(out.status.code(), Some(0));
    assert!(
        text(&out.stderr).contains("interrupted"),
        "{}",
        text(&out.stderr)
    );
    out
}

/// An OTLP JSON span's attributes as text: strings as they are, integers as their digits
/// (OTLP JSON writes them as strings or numbers), booleans as `true`/`false`, anything else as
/// JSON.
#[allow(dead_code)]
pub fn otlp_span_attrs(sp: &serde_json::Value) -> std::collections::HashMap<String, String> {
    sp["attributes"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let v = &a["value"];
            let s = v["stringValue"]
                .as_str()
                .or_else(|| v["intValue"].as_str())
                .map(str::to_string)
                .or_else(|| v["intValue"].as_i64().map(|i| i.to_string()))
                .or_else(|| v["boolValue"].as_bool().map(|b| b.to_string()))
                .unwrap_or_else(|| v.to_string());
            (a["key"].as_str().unwrap_or("").to_string(), s)
        })
        .collect()
}

/// Every span of an OTLP JSON-lines export (`shoji trace export --format otlp-json`), with the
/// `service.name` of its resource.
pub fn otlp_json_spans(export: &str) -> Vec<(String, serde_json::Value)> {
    let mut out = Vec::new();
    for line in export.lines().filter(|l| !l.trim().is_empty()) {
        let v: serde_json::Value = serde_json::from_str(line).expect("OTLP JSON line");
        for rs in v["resourceSpans"].as_array().into_iter().flatten() {
            let service = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for sp in ss["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), sp.clone()));
                }
            }
        }
    }
    out
}

/// A span read back from a test's trace store.
#[derive(Debug, Clone)]
pub struct StoredSpan {
    pub id: String,
    pub parent: String,
    pub trace: String,
    pub name: String,
    pub service: String,
    pub attrs: std::collections::HashMap<String, String>,
}

/// Every span in the store of `env`.
pub fn stored_spans(env: &TestEnv) -> Vec<StoredSpan> {
    let ls = env.ok(&["trace", "ls", "--json"]);
    let ids: Vec<String> = text(&ls.stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("trace ls --json line");
            v["trace_id"].as_str().expect("a trace id").to_string()
        })
        .collect();
    let mut out = Vec::new();
    for id in ids {
        let export = env.ok(&["trace", "export", &id, "--format", "otlp-json"]);
        for (service, sp) in otlp_json_spans(&text(&export.stdout)) {
            let attrs = otlp_span_attrs(&sp);
            out.push(StoredSpan {
                id: sp["spanId"].as_str().unwrap_or("").into(),
                parent: sp["parentSpanId"].as_str().unwrap_or("").into(),
                trace: sp["traceId"].as_str().unwrap_or("").into(),
                name: sp["name"].as_str().unwrap_or("").into(),
                service,
                attrs,
            });
        }
    }
    out
}

/// Deletes the container `id` (`shoji delete --force`) when dropped, so that no VM outlives a test
/// that failed half-way.
pub struct DeleteOnDrop<'a>(pub &'a TestEnv, pub &'a str);
impl Drop for DeleteOnDrop<'_> {
    fn drop(&mut self) {
        let _ = self.0.cmd().args(["delete", "--force", self.1]).output();
    }
}
