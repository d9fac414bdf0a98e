//! `shoji pull` and `shoji run REF` against a real registry on loopback (Debian's
//! `docker-registry`, distribution 2.8, plain HTTP as loopback registries are), the busybox
//! image pushed into it with `skopeo`: blobs verified and stored once, a second pull downloads
//! nothing, pulls by digest, a tampered blob refused with nothing stored, an unknown tag named,
//! two pulls at once download each blob once, credentials from the Docker configuration file
//! reach a registry with htpasswd auth,
//! and a pulled image runs in a VM with `image.pull` in the run's trace (ADR 021).

mod common;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{busybox_image, stored_spans, text, TestEnv};

/// A `docker-registry serve` on a free loopback port, storage in `dir`; killed when dropped
/// (a failed assertion included).
struct Registry {
    child: Child,
    port: u16,
    storage: PathBuf,
}

impl Registry {
    fn start(dir: &Path) -> Self {
        Self::start_with(dir, "")
    }

    /// With `extra` appended to its configuration (an `auth:` section).
    fn start_with(dir: &Path, extra: &str) -> Self {
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
    fn push_busybox(&self, name_tag: &str) -> String {
        self.push_busybox_as(name_tag, &[])
    }

    fn push_busybox_as(&self, name_tag: &str, creds: &[&str]) -> String {
        let layout = busybox_image().0.display().to_string();
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
    fn layer_blob(&self) -> PathBuf {
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

/// `blob.cached` as `common::otlp_span_attrs` shows an OTLP JSON boolean.
const CACHED: &str = r#"{"boolValue":true}"#;
const FETCHED: &str = r#"{"boolValue":false}"#;

fn store(env: &TestEnv) -> PathBuf {
    env.dir.path().join("data/images")
}

fn entries(dir: &Path) -> usize {
    std::fs::read_dir(dir).map(|d| d.count()).unwrap_or(0)
}

/// `(downloaded, already stored)` from `shoji pull`'s line.
fn counts(stdout: &[u8]) -> (usize, usize) {
    let s = text(stdout);
    let num = |after: &str| {
        s.split(after)
            .next()
            .and_then(|p| p.rsplit(['(', ';', ' ']).find(|w| !w.is_empty()))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count before {after:?} in {s:?}"))
    };
    (num(" blobs downloaded"), num(" already stored"))
}

#[test]
fn pulls_verify_and_store_each_blob_once_by_tag_or_digest() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");

    let first = env.ok(&["pull", &image]);
    assert_eq!(counts(&first.stdout), (2, 0), "{}", text(&first.stdout));
    // As root the layer is unpacked into the store too (verified against its diff_id).
    if nix::unistd::geteuid().is_root() {
        assert_eq!(entries(&store(&env).join("layers")), 1);
    }
    let ls = env.ok(&["image", "ls"]);
    assert!(text(&ls.stdout).contains(&image), "{}", text(&ls.stdout));

    // Again, traced: nothing downloaded, each blob span says it was in the store.
    let second = env.ok(&["pull", "--trace", &image]);
    assert_eq!(counts(&second.stdout), (0, 2), "{}", text(&second.stdout));
    let spans = stored_spans(&env);
    let pull = spans
        .iter()
        .find(|s| s.name == "image.pull")
        .expect("an image.pull span");
    assert_eq!(pull.attrs["image.reference"], image);
    let blobs: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "image.pull.blob" && s.parent == pull.id)
        .collect();
    assert_eq!(blobs.len(), 2, "a span per blob under image.pull");
    for b in blobs {
        assert_eq!(b.attrs["blob.cached"], CACHED, "{:?}", b.attrs);
        assert!(
            b.attrs["blob.digest"].starts_with("sha256:"),
            "{:?}",
            b.attrs
        );
    }

    // By digest: the manifest digest the first pull printed.
    let digest = text(&first.stdout)
        .split_whitespace()
        .find(|w| w.starts_with("sha256:"))
        .expect("a manifest digest")
        .to_string();
    let repo = image.rsplit_once(':').expect("NAME:TAG").0;
    let by_digest = env.ok(&["pull", &format!("{repo}@{digest}")]);
    assert_eq!(counts(&by_digest.stdout), (0, 2));

    // An unknown tag: refused, naming the registry, the reference, the step and what to do.
    let out = env
        .cmd()
        .args(["pull", &format!("{repo}:nope")])
        .output()
        .expect("running shoji");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    for part in [
        format!("registry 127.0.0.1:{}", reg.port),
        format!("{repo}:nope"),
        "resolve (manifest)".into(),
        "does not have it".into(),
    ] {
        assert!(err.contains(&part), "{part:?} not in: {err}");
    }
}

#[test]
fn a_tampered_blob_is_refused_and_nothing_is_stored() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");
    // One byte changed in the registry's copy of the layer, its size kept.
    let blob = reg.layer_blob();
    let mut bytes = std::fs::read(&blob).expect("reading the layer blob");
    bytes[100] ^= 0xff;
    std::fs::write(&blob, &bytes).expect("tampering with the layer blob");

    let out = env
        .cmd()
        .args(["pull", &image])
        .output()
        .expect("running shoji");
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not matching its digest") && err.contains("(layer 1)"),
        "{err}"
    );
    let store = store(&env);
    let layer_digest = blob
        .parent()
        .and_then(|p| p.file_name())
        .expect("blobs/sha256/XX/<hex>/data")
        .to_string_lossy()
        .into_owned();
    assert!(
        !store.join("oci/blobs/sha256").join(&layer_digest).exists(),
        "the tampered layer was stored"
    );
    assert_eq!(entries(&store.join("layers")), 0, "a layer was unpacked");
    assert!(
        !store.join("oci/index.json").exists(),
        "the image was tagged in the store"
    );
    assert_eq!(
        entries(&store.join("oci/blobs/sha256")),
        2,
        "manifest, config"
    );
}

#[test]
fn vm_a_pulled_image_runs_with_the_pull_in_the_runs_trace() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");
    let out = env.run(&[
        "run",
        "--rm",
        "--trace",
        &image,
        "--",
        "echo",
        "pulled-and-ran",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("pulled-and-ran"));
    let spans = stored_spans(&env);
    let root = spans.iter().find(|s| s.name == "run").expect("a run span");
    let pull = spans
        .iter()
        .find(|s| s.name == "image.pull")
        .expect("an image.pull span");
    assert_eq!(pull.parent, root.id, "image.pull hangs from the run");
    let fetched: Vec<_> = spans
        .iter()
        .filter(|s| s.name == "image.pull.blob" && s.parent == pull.id)
        .map(|s| s.attrs["blob.cached"].as_str())
        .collect();
    assert_eq!(
        fetched,
        [FETCHED, FETCHED],
        "configuration and layer fetched"
    );
}

#[test]
fn credentials_from_the_docker_config_reach_a_registry_that_wants_them() {
    let env = TestEnv::new();
    let htpasswd = env.dir.path().join("htpasswd");
    let out = Command::new("htpasswd")
        .args(["-Bbn", "alice", "s3cret"])
        .output()
        .expect("running htpasswd (apache2-utils; scripts/lib.sh installs it)");
    assert!(out.status.success(), "{}", text(&out.stderr));
    std::fs::write(&htpasswd, &out.stdout).expect("writing htpasswd");
    let reg = Registry::start_with(
        env.dir.path(),
        &format!(
            "auth:\n  htpasswd:\n    realm: shoji-test\n    path: {}\n",
            htpasswd.display()
        ),
    );
    let image = reg.push_busybox_as("shoji/busybox:v1", &["--dest-creds", "alice:s3cret"]);

    // No credentials: refused, saying where they go.
    let docker = env.dir.path().join("docker");
    std::fs::create_dir(&docker).expect("mkdir");
    let pull = || {
        env.cmd()
            .env("DOCKER_CONFIG", &docker)
            .args(["pull", &image])
            .output()
            .expect("running shoji")
    };
    let out = pull();
    assert!(!out.status.success());
    let err = text(&out.stderr);
    assert!(
        err.contains("not authorized") && err.contains("config.json"),
        "{err}"
    );

    // `auth` is base64 of user:password, as `docker login` writes it.
    std::fs::write(
        docker.join("config.json"),
        format!(
            r#"{{"auths": {{"127.0.0.1:{}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#,
            reg.port
        ),
    )
    .expect("writing config.json");
    let out = pull();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(counts(&out.stdout), (2, 0));
}

#[test]
fn two_pulls_of_one_image_at_once_download_each_blob_once() {
    let env = TestEnv::new();
    let reg = Registry::start(env.dir.path());
    let image = reg.push_busybox("shoji/busybox:v1");
    let spawn = || {
        env.cmd()
            .args(["pull", &image])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running shoji")
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (
        a.wait_with_output().expect("waiting"),
        b.wait_with_output().expect("waiting"),
    );
    for o in [&a, &b] {
        assert!(o.status.success(), "{}", text(&o.stderr));
    }
    let (da, ca) = counts(&a.stdout);
    let (db, cb) = counts(&b.stdout);
    // A lock per blob: whoever comes second waits, then finds it stored.
    assert_eq!((da + db, ca + cb), (2, 2), "{:?} {:?}", (da, ca), (db, cb));
    let ls = env.ok(&["image", "ls"]);
    assert_eq!(text(&ls.stdout).matches(&image).count(), 1);
}
