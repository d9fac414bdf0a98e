//! `shoji pull` and `shoji run REF` against a real registry on loopback (Debian's
//! `docker-registry`, distribution 2.8, plain HTTP as loopback registries are), the busybox
//! image pushed into it with `skopeo`: blobs verified and stored once, a second pull downloads
//! nothing, pulls by digest, a tampered blob refused with nothing stored, an unknown tag named,
//! two pulls at once download each blob once, credentials from the Docker configuration file
//! (`auths`, `credHelpers`, `credsStore`) reach a registry with htpasswd auth,
//! and a pulled image runs in a VM with `image.pull` in the run's trace and, on a terminal, a
//! spinner while its layer is unpacked (ADR 021).

use crate::common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::registry::Registry;
use common::{run_in_pty, stored_spans, text, TestEnv};

/// `blob.cached` as `common::otlp_span_attrs` shows an OTLP JSON boolean.
const CACHED: &str = "true";
const FETCHED: &str = "false";

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
    // On a terminal, as a user would see it: download bars, then (as root, where the layer
    // goes into the store) a spinner while the layer is unpacked.
    let mut cmd = env.cmd();
    cmd.args([
        "run",
        "--rm",
        "--trace",
        &image,
        "--",
        "echo",
        "pulled-and-ran",
    ]);
    let (out, code) = run_in_pty(cmd);
    env.assert_nothing_left();
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pulled-and-ran"), "{out}");
    if nix::unistd::geteuid().is_root() {
        assert!(out.contains("unpacking layer 1/1"), "{out}");
    }
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

/// A registry that wants user `alice`, password `s3cret` (htpasswd auth), busybox pushed into
/// it; returns it and the image's reference.
fn registry_with_auth(env: &TestEnv) -> (Registry, String) {
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
    (reg, image)
}

#[test]
fn credentials_from_the_docker_config_reach_a_registry_that_wants_them() {
    let env = TestEnv::new();
    let (reg, image) = registry_with_auth(&env);

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

/// Writes `docker-credential-NAME` into `bin`: it answers for `registry` only (what it was
/// asked for goes to `asked`), with `answer` on standard output and `status`.
fn write_helper(bin: &Path, name: &str, registry: &str, answer: &str, status: i32) {
    use std::os::unix::fs::PermissionsExt;
    let asked = bin.join(format!("{name}.asked"));
    let script = format!(
        "#!/bin/sh\n[ \"$1\" = get ] || exit 2\nserver=$(cat)\nprintf %s \"$server\" >{asked}\n\
         [ \"$server\" = {registry} ] || {{ echo \"credentials not found in native keychain\"; \
         exit 1; }}\necho '{answer}'\nexit {status}\n",
        asked = asked.display()
    );
    let path = bin.join(format!("docker-credential-{name}"));
    std::fs::write(&path, script).expect("writing the helper");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).expect("chmod");
}

#[test]
fn credential_helpers_in_the_docker_config_reach_a_registry_that_wants_them() {
    let env = TestEnv::new();
    let (reg, image) = registry_with_auth(&env);
    let registry = format!("127.0.0.1:{}", reg.port);
    let docker = env.dir.path().join("docker");
    let bin = env.dir.path().join("bin");
    for d in [&docker, &bin] {
        std::fs::create_dir(d).expect("mkdir");
    }
    let good = format!(r#"{{"ServerURL":"{registry}","Username":"alice","Secret":"s3cret"}}"#);
    write_helper(&bin, "shoji-good", &registry, &good, 0);
    write_helper(&bin, "shoji-broken", &registry, "the keychain is locked", 3);
    let path = format!(
        "{}:{}",
        bin.display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let pull_with = |config: String| {
        std::fs::write(docker.join("config.json"), config).expect("writing config.json");
        env.cmd()
            .env("DOCKER_CONFIG", &docker)
            .env("PATH", &path)
            .args(["pull", &image])
            .output()
            .expect("running shoji")
    };

    // credHelpers for this registry, beside a wrong `auths` entry: the helper wins, and was
    // asked for the registry.
    let out = pull_with(format!(
        r#"{{"credHelpers": {{"{registry}": "shoji-good"}},
            "auths": {{"{registry}": {{"username": "alice", "password": "wrong"}}}}}}"#
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(bin.join("shoji-good.asked")).expect("the helper was asked"),
        registry
    );

    // credsStore, the default helper.
    let out = pull_with(r#"{"credsStore": "shoji-good"}"#.into());
    assert!(out.status.success(), "{}", text(&out.stderr));

    // A helper that fails, one that is missing: named, with the registry.
    for (helper, needle) in [
        ("shoji-broken", "the keychain is locked"),
        ("shoji-missing", "install it on PATH"),
    ] {
        let out = pull_with(format!(
            r#"{{"credHelpers": {{"{registry}": "{helper}"}}}}"#
        ));
        assert!(!out.status.success());
        let err = text(&out.stderr);
        for part in [
            format!("docker-credential-{helper}"),
            registry.clone(),
            needle.to_string(),
        ] {
            assert!(err.contains(&part), "{part:?} not in: {err}");
        }
    }

    // A helper with nothing for this registry ("credentials not found"): `auths` is used.
    write_helper(&bin, "shoji-other", "127.0.0.1:1", &good, 0);
    let out = pull_with(format!(
        r#"{{"credsStore": "shoji-other",
            "auths": {{"{registry}": {{"auth": "YWxpY2U6czNjcmV0"}}}}}}"#
    ));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read_to_string(bin.join("shoji-other.asked")).expect("the helper was asked"),
        registry
    );
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
