//! A real containerd for the shim's tests: its own root, state, sockets and configuration under
//! a temp dir, the shim under test on its `PATH`, Shoji's test configuration (sandbox root in the
//! same temp dir) in its environment. Stopped, and checked for leftovers, on drop. containerd
//! 2.4.2 by default; Debian's 1.6 ([`Release::V1_6`], its configuration format `version = 2`)
//! with the `*_release` constructors.
//!
//! With CRI ([`Containerd::start_cri`]) its CRI plugin serves `crictl` with the runtime handler
//! `shoji` (pod sandboxes through the pause container, `sandboxer = "podsandbox"`), the pause and
//! busybox images imported into CRI's namespace (nothing is pulled), and by default CNI reduced
//! to what containerd insists on: a pod network namespace on the host with `lo` and a TAP `eth0`
//! at [`POD_IP`] (the pod IP CRI reports), touching nothing of the host's own network; the shim
//! mirrors that `eth0` into the VM, whose guest then has [`POD_IP`] on a link that leads nowhere.
//! [`Containerd::start_cri_with_cni`] gives containerd a network configuration of the test's
//! own instead (`pod_network_on_a_cni_bridge.rs`: bridge, host-local, portmap).

use std::collections::BTreeSet;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

// The runtime's harness (its suite uses all of it; this one, the part containerd tests need).
#[allow(dead_code)]
#[path = "../../../shoji-runtime/tests/common/mod.rs"]
pub mod common;
pub mod traces;

pub use common::{busybox_image, mounts_naming, pause_image, processes_naming, text, TestEnv};

/// containerd's namespace the tests use.
pub const NAMESPACE: &str = "shoji-test";
/// The runtime type the shim answers to.
pub const RUNTIME: &str = "io.containerd.shoji.v2";

/// containerd's namespace its CRI plugin uses.
pub const CRI_NAMESPACE: &str = "k8s.io";
/// The CRI runtime handler (`RuntimeClass` handler) for Shoji.
pub const HANDLER: &str = "shoji";
/// The pod sandbox image the CRI plugin is configured with (`pause_image`, imported).
pub const PAUSE_IMAGE: &str = "docker.io/library/pause:3.10";
/// The test image for a pod's containers (`busybox_image`, imported).
pub const BUSYBOX_IMAGE: &str = "docker.io/library/busybox:latest";
/// The address of the pod network namespace's TAP `eth0` (a documentation range: nothing is
/// ever sent to it).
pub const POD_IP: &str = "192.0.2.2";

/// A pinned Go tool (`scripts/lib.sh`: `ensure_containerd`, `ensure_crictl`): `$var`, else
/// its place in the build cache.
fn tool(var: &str, name: &str, version: &str) -> PathBuf {
    cached(var, &format!("go-tools/{name}-{version}"))
}

/// `$var`, else `path` in Shoji's build cache (`~/.cache/shoji`), which must exist.
fn cached(var: &str, path: &str) -> PathBuf {
    let p = std::env::var_os(var).map(PathBuf::from).unwrap_or_else(|| {
        let cache = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .unwrap_or_else(|| {
                PathBuf::from(std::env::var("HOME").unwrap_or_default()).join(".cache")
            });
        cache.join("shoji").join(path)
    });
    assert!(
        p.exists(),
        "{} missing: `. scripts/lib.sh && ensure_test_deps` builds it (scripts/test.sh does)",
        p.display()
    );
    p
}

/// Which containerd a test runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Release {
    /// containerd 2.4.2, built with Go (`scripts/lib.sh`: `ensure_containerd`).
    V2,
    /// Debian's containerd 1.6 (`ensure_containerd16`): the legacy start protocol, task API 2,
    /// configuration `version = 2`, no trace context for shims.
    V1_6,
}

impl Release {
    fn containerd(self) -> PathBuf {
        match self {
            Release::V2 => {
                let (var, name, version) = CONTAINERD;
                tool(var, name, version)
            }
            Release::V1_6 => cached("SHOJI_CONTAINERD16", "containerd-1.6/usr/bin/containerd"),
        }
    }

    fn ctr(self) -> PathBuf {
        match self {
            Release::V2 => {
                let (var, name, version) = CTR;
                tool(var, name, version)
            }
            Release::V1_6 => cached("SHOJI_CTR16", "containerd-1.6/usr/bin/ctr"),
        }
    }
}

/// A running containerd and the Shoji test environment its shims use.
pub struct Containerd {
    pub env: TestEnv,
    pub dir: PathBuf,
    pub release: Release,
    child: Option<Child>,
    cri: bool,
    /// What [`Self::launch`] added to containerd's environment, for a restart.
    extra_env: Vec<(String, String)>,
    /// What was in the shims' socket directory before this containerd started.
    sockets_before: BTreeSet<OsString>,
}

/// Where shims make their ttRPC sockets (the containerd-shim crate's `SOCKET_ROOT/s`).
const SHIM_SOCKETS: &str = "/run/containerd/s";

/// The entries of [`SHIM_SOCKETS`].
fn shim_sockets() -> BTreeSet<OsString> {
    std::fs::read_dir(SHIM_SOCKETS)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.file_name())
        .collect()
}

/// Sockets in [`SHIM_SOCKETS`] that were not in `before` and that nobody listens on any more:
/// left by a shim of this test that ended without removing its socket. (A socket another test
/// still serves answers, and a shim of this test still running is a leftover process.)
fn stale_shim_sockets(before: &BTreeSet<OsString>) -> Vec<OsString> {
    shim_sockets()
        .into_iter()
        .filter(|name| !before.contains(name))
        .filter(|name| {
            let path = Path::new(SHIM_SOCKETS).join(name);
            std::os::unix::net::UnixStream::connect(path)
                .is_err_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
        })
        .collect()
}

const CONTAINERD: (&str, &str, &str) = ("SHOJI_CONTAINERD", "containerd", "v2.4.2");
const CTR: (&str, &str, &str) = ("SHOJI_CTR", "ctr", "v2.4.2");
const CRICTL: (&str, &str, &str) = ("SHOJI_CRICTL", "crictl", "v1.37.0");
/// The directory of CNI plugins (`scripts/lib.sh`, `ensure_cni_plugins`).
const CNI_PLUGINS: (&str, &str, &str) = ("SHOJI_CNI_DIR", "cni-plugins", "v1.10.0");

/// containerd's CRI configuration for the tests: the `shoji` handler, the pause image, CNI with
/// `conflist` (default: a TAP device alone) in `dir/cni`, network namespaces under containerd's
/// state directory (so that the test's leftover check sees them).
fn cri_config(release: Release, dir: &Path, conflist: Option<&str>) -> String {
    let d = dir.display();
    let conf = dir.join("cni");
    let (var, name, version) = CNI_PLUGINS;
    let bin = tool(var, name, version);
    let bin = bin.display();
    std::fs::create_dir_all(&conf).expect("CNI conf dir");
    let tap = format!(
        r#"{{"cniVersion":"1.0.0","name":"shoji-tap","plugins":[{{"type":"tap","ipam":{{"type":"static","addresses":[{{"address":"{POD_IP}/24"}}]}}}}]}}"#
    );
    std::fs::write(conf.join("10-shoji.conflist"), conflist.unwrap_or(&tap)).expect("CNI conflist");
    if release == Release::V1_6 {
        // containerd 1.6: one CRI plugin, configuration format 2; no sandboxer (pods always go
        // through the pause container); a default runtime must be configured (runc, unused).
        let cri = r#"plugins."io.containerd.grpc.v1.cri""#;
        return format!(
            r#"[{cri}]
  sandbox_image = "{PAUSE_IMAGE}"
  netns_mounts_under_state_dir = true
  [{cri}.cni]
    bin_dir = "{bin}"
    conf_dir = "{d}/cni"
  [{cri}.containerd]
    snapshotter = "overlayfs"
    [{cri}.containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
    [{cri}.containerd.runtimes.{HANDLER}]
      runtime_type = "{RUNTIME}"
"#
        );
    }
    format!(
        r#"[plugins."io.containerd.cri.v1.images"]
  snapshotter = "overlayfs"
  [plugins."io.containerd.cri.v1.images".pinned_images]
    sandbox = "{PAUSE_IMAGE}"
[plugins."io.containerd.cri.v1.runtime"]
  netns_mounts_under_state_dir = true
  [plugins."io.containerd.cri.v1.runtime".cni]
    bin_dirs = ["{bin}"]
    conf_dir = "{d}/cni"
  [plugins."io.containerd.cri.v1.runtime".containerd.runtimes.{HANDLER}]
    runtime_type = "{RUNTIME}"
    sandboxer = "podsandbox"
"#
    )
}

impl Containerd {
    /// Starts containerd, CRI off, with `extra_env` added to its environment (and so to its
    /// shims').
    pub fn start(extra_env: &[(&str, &str)]) -> Self {
        Self::launch(Release::V2, extra_env, None)
    }

    /// As [`Self::start`], for containerd `release`.
    pub fn start_release(release: Release, extra_env: &[(&str, &str)]) -> Self {
        Self::launch(release, extra_env, None)
    }

    /// Starts containerd with its CRI plugin (see the module's doc) and imports the pause and
    /// busybox images into CRI's namespace.
    pub fn start_cri(extra_env: &[(&str, &str)]) -> Self {
        Self::start_cri_cni(Release::V2, extra_env, None)
    }

    /// As [`Self::start_cri`], for containerd `release`.
    pub fn start_cri_release(release: Release, extra_env: &[(&str, &str)]) -> Self {
        Self::start_cri_cni(release, extra_env, None)
    }

    /// As [`Self::start_cri`], with the CNI network configuration `conflist` (JSON) for pods.
    pub fn start_cri_with_cni(extra_env: &[(&str, &str)], conflist: &str) -> Self {
        Self::start_cri_cni(Release::V2, extra_env, Some(conflist))
    }

    fn start_cri_cni(release: Release, extra_env: &[(&str, &str)], conflist: Option<&str>) -> Self {
        let c = Self::launch(release, extra_env, Some(conflist));
        // `ctr images import` names an image as its layout does (`pause:3.10`); CRI looks
        // images up by their full names.
        for ((_, tar), short, full) in [
            (pause_image(), "pause:3.10", PAUSE_IMAGE),
            (busybox_image(), "busybox:latest", BUSYBOX_IMAGE),
        ] {
            let tar = tar.display().to_string();
            c.ctr_in_ok(CRI_NAMESPACE, &["images", "import", &tar]);
            c.ctr_in_ok(CRI_NAMESPACE, &["images", "tag", "--force", short, full]);
        }
        // The CRI plugin learns of imported images from containerd's events: until it has,
        // `runp` would try to pull the pause image.
        let deadline = Instant::now() + Duration::from_secs(30);
        for image in [PAUSE_IMAGE, BUSYBOX_IMAGE] {
            while c.crictl(&["inspecti", image]).status.code() != Some(0) {
                assert!(Instant::now() < deadline, "CRI does not see {image}");
                std::thread::sleep(Duration::from_millis(100));
            }
        }
        c
    }

    /// `cri`: CRI on, with this CNI configuration (`None`: the default one).
    fn launch(release: Release, extra_env: &[(&str, &str)], cri: Option<Option<&str>>) -> Self {
        let env = TestEnv::new();
        let dir = env.dir.path().join("containerd");
        std::fs::create_dir_all(&dir).expect("containerd dir");
        let config = dir.join("config.toml");
        let d = dir.display();
        let (disabled, plugins) = match (release, cri) {
            (_, Some(conflist)) => (
                r#""io.containerd.nri.v1.nri""#,
                cri_config(release, &dir, conflist),
            ),
            (Release::V2, None) => (
                r#""io.containerd.grpc.v1.cri", "io.containerd.cri.v1.runtime", "io.containerd.cri.v1.images", "io.containerd.nri.v1.nri""#,
                String::new(),
            ),
            (Release::V1_6, None) => (r#""io.containerd.grpc.v1.cri""#, String::new()),
        };
        let version = match release {
            Release::V2 => 3,
            Release::V1_6 => 2,
        };
        std::fs::write(
            &config,
            format!(
                r#"version = {version}
root = "{d}/root"
state = "{d}/state"
disabled_plugins = [{disabled}]
[grpc]
  address = "{d}/containerd.sock"
[ttrpc]
  address = "{d}/containerd.sock.ttrpc"
[debug]
  level = "info"
{plugins}"#
            ),
        )
        .expect("containerd config");
        let mut c = Self {
            env,
            dir,
            release,
            child: None,
            cri: cri.is_some(),
            sockets_before: shim_sockets(),
            extra_env: extra_env
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        c.spawn_daemon();
        c
    }

    /// Starts containerd on the configuration in `dir` (appending to its log) and waits until
    /// it answers.
    fn spawn_daemon(&mut self) {
        let shim = Path::new(env!("CARGO_BIN_EXE_containerd-shim-shoji-v2"));
        let path = format!(
            "{}:{}",
            shim.parent().expect("the shim's directory").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("containerd.log"))
            .expect("containerd log");
        let mut cmd = Command::new(self.release.containerd());
        cmd.arg("--config")
            .arg(self.dir.join("config.toml"))
            .env("PATH", path)
            .env("SHOJI_CONFIG", &self.env.config)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log);
        for (k, v) in &self.extra_env {
            cmd.env(k, v);
        }
        self.child = Some(cmd.spawn().expect("starting containerd"));
        let deadline = Instant::now() + Duration::from_secs(30);
        // With CRI on, containerd answers `ctr` before its CRI server is initialised (after a
        // restart it first reloads its sandboxes): wait for that too.
        let up = |c: &Self| {
            c.ctr(&["version"]).status.code() == Some(0)
                && (!c.cri || c.crictl(&["version"]).status.code() == Some(0))
        };
        while !up(self) {
            assert!(
                Instant::now() < deadline,
                "containerd did not come up: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// SIGKILLs containerd (its shims live on), then starts it again on the same configuration,
    /// root and state: it reconnects to the shims it finds in its state directory.
    /// containerd stays down for `down`.
    pub fn kill_and_restart_after(&mut self, down: Duration) {
        let mut child = self.child.take().expect("containerd is running");
        let _ = child.kill();
        let _ = child.wait();
        std::thread::sleep(down);
        self.spawn_daemon();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("containerd.log")).unwrap_or_default()
    }

    /// `ctr` in the tests' namespace.
    pub fn ctr_cmd(&self) -> Command {
        self.ctr_cmd_in(NAMESPACE)
    }

    pub fn ctr_cmd_in(&self, namespace: &str) -> Command {
        let mut c = Command::new(self.release.ctr());
        c.arg("--address")
            .arg(self.dir.join("containerd.sock"))
            .arg("--namespace")
            .arg(namespace);
        c
    }

    pub fn ctr(&self, args: &[&str]) -> Output {
        self.ctr_in(NAMESPACE, args)
    }

    pub fn ctr_in(&self, namespace: &str, args: &[&str]) -> Output {
        self.ctr_cmd_in(namespace)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running ctr")
    }

    /// `ctr args...`, which must succeed.
    pub fn ctr_ok(&self, args: &[&str]) -> Output {
        self.ctr_in_ok(NAMESPACE, args)
    }

    pub fn ctr_in_ok(&self, namespace: &str, args: &[&str]) -> Output {
        let out = self.ctr_in(namespace, args);
        self.succeeded("ctr", args, out)
    }

    fn succeeded(&self, tool: &str, args: &[&str], out: Output) -> Output {
        assert_eq!(
            out.status.code(),
            Some(0),
            "{tool} {args:?} failed: {}{}\ncontainerd log:\n{}",
            text(&out.stdout),
            text(&out.stderr),
            self.log()
        );
        out
    }

    /// `crictl` against this containerd's CRI plugin, with its own configuration file (none of
    /// the host's).
    pub fn crictl_cmd(&self) -> Command {
        let (var, name, version) = CRICTL;
        let config = self.dir.join("crictl.yaml");
        if !config.exists() {
            let endpoint = format!("unix://{}", self.dir.join("containerd.sock").display());
            std::fs::write(
                &config,
                format!("runtime-endpoint: {endpoint}\nimage-endpoint: {endpoint}\ntimeout: 60\n"),
            )
            .expect("crictl config");
        }
        let mut c = Command::new(tool(var, name, version));
        c.arg("--config").arg(config);
        c
    }

    pub fn crictl(&self, args: &[&str]) -> Output {
        self.crictl_cmd()
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("running crictl")
    }

    /// `crictl args...`, which must succeed; its stdout, trimmed.
    pub fn crictl_ok(&self, args: &[&str]) -> String {
        let out = self.crictl(args);
        text(&self.succeeded("crictl", args, out).stdout)
            .trim()
            .to_string()
    }

    /// A pod's CRI configuration (`crictl runp`): `hostname`, a log directory in the test dir.
    pub fn pod_config(&self, name: &str, hostname: &str) -> String {
        let logs = self.dir.join(format!("{name}-logs"));
        std::fs::create_dir_all(&logs).expect("pod log dir");
        self.write_json(
            &format!("{name}-pod.json"),
            serde_json::json!({
                "metadata": {"name": name, "namespace": "default", "uid": format!("{name}-uid"), "attempt": 0},
                "hostname": hostname,
                "log_directory": logs,
                "linux": {}
            }),
        )
    }

    /// A busybox container's CRI configuration (`crictl create`): `command`, logging to
    /// `<name>.log` in its pod's log directory.
    pub fn container_config(&self, name: &str, command: &[&str]) -> String {
        self.container_config_linux(name, command, serde_json::json!({}))
    }

    /// [`Self::container_config`] with this `linux` section (a security context, ...).
    pub fn container_config_linux(
        &self,
        name: &str,
        command: &[&str],
        linux: serde_json::Value,
    ) -> String {
        self.write_json(
            &format!("{name}-container.json"),
            serde_json::json!({
                "metadata": {"name": name},
                "image": {"image": BUSYBOX_IMAGE},
                "command": command,
                "log_path": format!("{name}.log"),
                "linux": linux
            }),
        )
    }

    fn write_json(&self, name: &str, value: serde_json::Value) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, value.to_string()).expect("writing a CRI config");
        path.display().to_string()
    }

    /// `crictl inspect`/`inspectp`'s JSON for `id`.
    pub fn inspect(&self, what: &str, id: &str) -> serde_json::Value {
        let out = self.crictl_ok(&[what, "--output", "json", id]);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("crictl {what} {id}: {e}: {out}"))
    }

    /// A CRI container's state as `crictl inspect` gives it (`CONTAINER_RUNNING`, ...).
    pub fn container_state(&self, id: &str) -> String {
        self.inspect("inspect", id)["status"]["state"]
            .as_str()
            .unwrap_or_default()
            .to_string()
    }

    /// containerd's event stream in `namespace` (`ctr events`), from now on.
    pub fn events(&self, namespace: &str) -> Events {
        let mut child = self
            .ctr_cmd_in(namespace)
            .arg("events")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("ctr events");
        let lines = std::io::BufRead::lines(std::io::BufReader::new(
            child.stdout.take().expect("ctr events' stdout"),
        ));
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for l in lines.map_while(Result::ok) {
                if tx.send(l).is_err() {
                    break;
                }
            }
        });
        Events { child, lines: rx }
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

    /// `ctr run FLAGS --runtime shoji --memory-limit LIMIT IMAGE ID sh -c SCRIPT` (its output,
    /// whatever its status).
    pub fn ctr_run_limited(
        &self,
        flags: &[&str],
        image: &str,
        id: &str,
        limit: u64,
        script: &str,
    ) -> Output {
        let limit = limit.to_string();
        let mut args = vec!["run"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&["--runtime", RUNTIME, "--memory-limit", &limit]);
        args.extend_from_slice(&[image, id, "sh", "-c", script]);
        self.ctr(&args)
    }

    /// `ctr run --runtime shoji --rm FLAGS... IMAGE ID sh -c SCRIPT`, attached (its output,
    /// whatever its status).
    pub fn ctr_run_rm(&self, flags: &[&str], image: &str, id: &str, script: &str) -> Output {
        let mut args = vec!["run", "--runtime", RUNTIME, "--rm"];
        args.extend_from_slice(flags);
        args.extend_from_slice(&[image, id, "sh", "-c", script]);
        self.ctr(&args)
    }

    /// Asserts that `out` printed `stdout` and exited with `code` (else shows its stderr and
    /// containerd's log).
    pub fn assert_output(&self, out: &Output, stdout: &str, code: i32) {
        assert_eq!(
            (text(&out.stdout).as_str(), out.status.code()),
            (stdout, Some(code)),
            "stderr: {}\ncontainerd log:\n{}",
            text(&out.stderr),
            self.log()
        );
    }

    /// `ctr run -d` of `image` as task `id` in a Shoji VM, running `sleep 1000`.
    #[allow(dead_code)]
    pub fn run_sleeper(&self, image: &str, id: &str) {
        self.ctr_ok(&[
            "run",
            "-d",
            "--runtime",
            RUNTIME,
            image,
            id,
            "sleep",
            "1000",
        ]);
    }

    /// Waits (at most 20 s) until task `id`'s status, as [`Self::task_status`] gives it,
    /// satisfies `done`.
    #[allow(dead_code)]
    pub fn wait_task(&self, id: &str, done: impl Fn(Option<&str>) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = self.task_status(id);
            if done(status.as_deref()) {
                return;
            }
            assert!(Instant::now() < deadline, "task {id} is still {status:?}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The task's status as `ctr task ls` shows it, if it is listed.
    pub fn task_status(&self, id: &str) -> Option<String> {
        let out = text(&self.ctr_ok(&["tasks", "ls"]).stdout);
        out.lines().skip(1).find_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (f.first() == Some(&id)).then(|| f.last().unwrap_or(&"").to_string())
        })
    }

    /// The QEMU processes of this test's sandboxes.
    pub fn qemu_processes(&self) -> Vec<String> {
        processes_naming(self.env.dir.path())
            .into_iter()
            .filter(|c| c.contains("qemu-system"))
            .collect()
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

    /// The socket the shim serving `group` (a task id, or a pod's sandbox id) in `namespace`
    /// listens on when containerd names no socket directory (containerd before 2.3):
    /// `/run/containerd/s/<hash>`, shared by every containerd on the host.
    pub fn shim_socket(&self, namespace: &str, group: &str) -> PathBuf {
        let sock = self.dir.join("containerd.sock").display().to_string();
        let address = containerd_shim::socket_address(&sock, namespace, group);
        PathBuf::from(address.trim_start_matches("unix://"))
    }

    /// Nothing of the tasks is left: no shim, QEMU or helper (they all name the test dir or
    /// the sandbox root), no mount under the test dir, no sandbox directory, no shim socket
    /// nobody serves.
    pub fn assert_nothing_left(&self) {
        self.env.assert_nothing_left();
        let procs = self.leftover_processes();
        assert!(procs.is_empty(), "processes left behind: {procs:?}");
        let mounts = mounts_naming(self.env.dir.path());
        assert!(mounts.is_empty(), "mounts left behind: {mounts:?}");
        let sockets = stale_shim_sockets(&self.sockets_before);
        assert!(
            sockets.is_empty(),
            "shim sockets nobody serves left in {SHIM_SOCKETS}: {sockets:?}"
        );
    }
}

/// A running `ctr events`: one line per event, `TIME NAMESPACE TOPIC {EVENT JSON}` (the time
/// has spaces in it). Stopped on drop.
pub struct Events {
    child: Child,
    pub lines: std::sync::mpsc::Receiver<String>,
}

impl Events {
    /// The next event line, if one comes within `max`.
    pub fn next(&self, max: Duration) -> Option<String> {
        self.lines.recv_timeout(max).ok()
    }
}

/// The topic of an event line (`/tasks/exit`...).
pub fn topic(line: &str) -> Option<&str> {
    line.split_whitespace().find(|w| w.starts_with("/tasks/"))
}

impl Drop for Events {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Containerd {
    fn drop(&mut self) {
        // A failed test may leave tasks: kill them through containerd first, so that no VM
        // outlives the test.
        if self.child.is_some() && self.cri {
            let _ = self.crictl(&["rmp", "--force", "--all"]);
        }
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

/// The lines of the mount table of pod `pod`'s shim (its mount namespace, ADR 023) that name
/// `path`.
pub fn shim_mounts_naming(pod: &str, path: &Path) -> Vec<String> {
    let needle = path.to_string_lossy().into_owned();
    std::fs::read_to_string(format!("/proc/{}/mountinfo", pod_shim(pod)))
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(&needle))
        .map(String::from)
        .collect()
}

/// Waits (at most 30 s) for a `/tasks/exit` event of process `id` of container `container`.
pub fn wait_exit_event(c: &Containerd, events: &Events, container: &str, id: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        assert!(
            Instant::now() < deadline,
            "no exit event for {container}/{id}\ncontainerd log:\n{}",
            c.log()
        );
        let Some(l) = events.next(Duration::from_millis(200)) else {
            continue;
        };
        if topic(&l) == Some("/tasks/exit")
            && l.contains(&format!("\"container_id\":\"{container}\""))
            && l.contains(&format!("\"id\":\"{id}\""))
        {
            return;
        }
    }
}

/// The pid of the one shim that serves pod `pod`.
pub fn pod_shim(pod: &str) -> i32 {
    let shims = pids_of("containerd-shim-shoji-v2", pod);
    assert_eq!(shims.len(), 1, "one shim serves pod {pod}: {shims:?}");
    shims[0]
}

/// The socket the shim of pod `pod` serves containerd on (its `-socket unix://PATH` argument).
pub fn pod_shim_socket(pod: &str) -> PathBuf {
    let cmd = std::fs::read(format!("/proc/{}/cmdline", pod_shim(pod))).expect("shim cmdline");
    let args: Vec<String> = cmd
        .split(|b| *b == 0)
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect();
    let at = args
        .iter()
        .position(|a| a == "-socket")
        .expect("the shim has a -socket argument");
    PathBuf::from(args[at + 1].trim_start_matches("unix://"))
}

/// SIGKILLs the one shim that serves pod `pod`.
pub fn kill_pod_shim(pod: &str) {
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pod_shim(pod)),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the shim");
}

/// The pids of the processes whose command line contains both `program` and `needle`.
pub fn pids_of(program: &str, needle: &str) -> Vec<i32> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let pid: i32 = e.file_name().to_str()?.parse().ok()?;
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            (cmd.contains(program) && cmd.contains(needle)).then_some(pid)
        })
        .collect()
}
