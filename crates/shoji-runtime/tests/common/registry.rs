//! A real container registry on loopback for the pull tests: Debian's `docker-registry`
//! (distribution 2.8), plain HTTP, images pushed into it with `skopeo`.

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{busybox_image, text};

/// A `docker-registry serve` on a free loopback port, storage in `dir`; killed when dropped
/// (a failed assertion included).
pub struct Registry {
    child: Child,
    pub port: u16,
    storage: PathBuf,
}

impl Registry {
    pub fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// With `extra` appended to its configuration (an `auth:` section).
    pub fn start_with(dir: &Path, extra: &str) -> Self {
        // A port the kernel just handed out and took back: free unless someone races for it.
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("a free loopback port")
            .port();
        let storage = dir.join("registry-data");
        let config = dir.join("registry.yml");
        std::fs::write(
            &config,
            format!(
                "version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    \
                 rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n{extra}",
                storage.display()
            ),
        )
        .expect("writing the registry's configuration");
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(&config)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting docker-registry (scripts/lib.sh installs it)");
        let reg = Self {
            child,
            port,
            storage,
        };
        let deadline = Instant::now() + Duration::from_secs(15);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "the registry did not listen");
            std::thread::sleep(Duration::from_millis(50));
        }
        reg
    }

    /// `127.0.0.1:PORT/NAME:TAG`, after pushing the busybox layout there with skopeo.
    pub fn push_busybox(&self, name_tag: &str) -> String {
        self.push_busybox_as(name_tag, &[])
    }

    /// The same, with `creds` (`--dest-creds USER:PASSWORD`) for skopeo.
    pub fn push_busybox_as(&self, name_tag: &str, creds: &[&str]) -> String {
        self.push(&busybox_image().0, name_tag, creds)
    }

    /// Pushes `layout`'s `busybox:latest` entry as `127.0.0.1:PORT/NAME:TAG`, returned.
    pub fn push(&self, layout: &Path, name_tag: &str, creds: &[&str]) -> String {
        let layout = layout.display().to_string();
        let dest = format!("127.0.0.1:{}/{name_tag}", self.port);
        let out = Command::new("skopeo")
            .args(["copy", "--quiet", "--dest-tls-verify=false"])
            .args(creds)
            .arg(format!("oci:{layout}:busybox:latest"))
            .arg(format!("docker://{dest}"))
            .output()
            .expect("running skopeo (scripts/lib.sh installs it)");
        assert!(out.status.success(), "skopeo: {}", text(&out.stderr));
        dest
    }

    /// The largest blob the registry stores: the busybox layer.
    pub fn layer_blob(&self) -> PathBuf {
        let mut files = Vec::new();
        let mut dirs = vec![self.storage.join("docker/registry/v2/blobs")];
        while let Some(d) = dirs.pop() {
            for e in std::fs::read_dir(&d).expect("registry storage").flatten() {
                let m = e.metadata().expect("metadata");
                if m.is_dir() {
                    dirs.push(e.path());
                } else {
                    files.push((m.len(), e.path()));
                }
            }
        }
        files.sort();
        files.pop().expect("a blob in the registry").1
    }
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
