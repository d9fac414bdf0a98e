//! Through CRI (`crictl` against a real containerd 2.4), a pod container's `mounts` as kubelet
//! gives them reach the guest: a host directory read-write (the guest's writes land on the
//! host), another read-only (writes refused in the guest, and the staged bind on the host is
//! read-only too, so virtiofsd cannot write through it either), a single file, and a
//! `/dev/termination-log` file the container writes its message to for the host to read. The
//! files containerd's CRI plugin adds itself (`/etc/hosts`, `/etc/hostname`,
//! `/etc/resolv.conf` from the pod's DNS config) are the container's. When one container of the
//! pod is removed, its staged mounts leave the shim's mount table at once, while the pod's
//! other container keeps its own binding of the same host directory. The staged mounts live in
//! the shim's mount namespace only: the host's mount table never names the sandbox. The pod's
//! `/dev/shm` is one 64 MiB tmpfs in the guest, shared by its containers, and never the host's.

use crate::containerd;

use std::path::Path;
use std::time::Duration;

use containerd::{mounts_naming, shim_mounts_naming, text, Containerd, HANDLER};

/// `crictl exec id cmd...`: its stdout and stderr, and exit status.
fn exec(c: &Containerd, id: &str, cmd: &[&str]) -> (String, Option<i32>) {
    let mut args = vec!["exec", id];
    args.extend_from_slice(cmd);
    let out = c.crictl(&args);
    (
        format!("{}{}", text(&out.stdout), text(&out.stderr)),
        out.status.code(),
    )
}

fn exec_ok(c: &Containerd, id: &str, cmd: &[&str]) -> String {
    let (out, code) = exec(c, id, cmd);
    assert_eq!(code, Some(0), "crictl exec {id} {cmd:?}: {out}");
    out.trim().to_string()
}

/// Adds `key: value` to the JSON object in the file `path` (a CRI config the harness wrote).
fn add_field(path: &str, key: &str, value: serde_json::Value) {
    let text = std::fs::read_to_string(path).expect("a CRI config");
    let mut json: serde_json::Value = serde_json::from_str(&text).expect("CRI config JSON");
    json[key] = value;
    std::fs::write(path, json.to_string()).expect("writing a CRI config");
}

/// The mountinfo lines of pod `pod`'s shim for container `id`'s staged mounts
/// (`shared/<id>/mounts/<n>`).
fn staged_mounts(c: &Containerd, pod: &str, id: &str) -> Vec<String> {
    let needle = format!("/{id}/mounts/");
    shim_mounts_naming(pod, &c.env.sandbox_root())
        .into_iter()
        .filter(|l| l.contains(&needle))
        .collect()
}

/// The same, as the pod's virtiofsd sees them in its own mount namespace (paths relative to
/// the share there).
fn served_mounts(c: &Containerd, id: &str) -> Vec<String> {
    let root = c.env.sandbox_root().display().to_string();
    let needle = format!("/{id}/mounts/");
    let mut lines = Vec::new();
    for entry in std::fs::read_dir("/proc").expect("/proc").flatten() {
        let proc_dir = entry.path();
        let cmdline = std::fs::read(proc_dir.join("cmdline")).unwrap_or_default();
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !(cmdline.contains("virtiofsd") && cmdline.contains(&root)) {
            continue;
        }
        let info = std::fs::read_to_string(proc_dir.join("mountinfo")).unwrap_or_default();
        lines.extend(
            info.lines()
                .filter(|l| l.contains(&needle))
                .map(String::from),
        );
    }
    lines
}

#[test]
fn vm_crictl_volumes_reach_the_guest_and_leave_with_their_container() {
    let c = Containerd::start_cri(&[]);
    let vols = c.dir.join("volumes");
    let (rw, ro) = (vols.join("rw"), vols.join("ro"));
    for d in [&rw, &ro] {
        std::fs::create_dir_all(d).expect("volume dir");
    }
    std::fs::write(rw.join("hello"), "from the host\n").expect("rw file");
    std::fs::write(ro.join("settings"), "mode=strict\n").expect("ro file");
    let single = vols.join("single.conf");
    std::fs::write(&single, "one file\n").expect("single file");
    // kubelet's termination-message file: empty, written by the container, read by the host.
    let termination = vols.join("termination-log");
    std::fs::write(&termination, "").expect("termination file");

    let pod_json = c.pod_config("vols", "vols-pod");
    add_field(
        &pod_json,
        "dns_config",
        serde_json::json!({"servers": ["192.0.2.53"], "searches": ["shoji.test"]}),
    );
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);

    let path = |p: &Path| p.display().to_string();
    let writer_json = c.container_config("writer", &["sleep", "1000"]);
    add_field(
        &writer_json,
        "mounts",
        serde_json::json!([
            {"container_path": "/data", "host_path": path(&rw)},
            {"container_path": "/config", "host_path": path(&ro), "readonly": true},
            {"container_path": "/etc/single.conf", "host_path": path(&single), "readonly": true},
            {"container_path": "/dev/termination-log", "host_path": path(&termination)},
        ]),
    );
    let reader_json = c.container_config("reader", &["sleep", "1000"]);
    add_field(
        &reader_json,
        "mounts",
        serde_json::json!([{"container_path": "/shared", "host_path": path(&rw)}]),
    );
    let writer = c.crictl_ok(&["create", "--no-pull", &pod, &writer_json, &pod_json]);
    c.crictl_ok(&["start", &writer]);
    let reader = c.crictl_ok(&["create", "--no-pull", &pod, &reader_json, &pod_json]);
    c.crictl_ok(&["start", &reader]);

    // Read-write: the host's file is there, the guest's write reaches the host.
    assert_eq!(
        exec_ok(&c, &writer, &["cat", "/data/hello"]),
        "from the host"
    );
    exec_ok(
        &c,
        &writer,
        &["sh", "-c", "echo from the guest > /data/written"],
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("written")).expect("the guest's file on the host"),
        "from the guest\n"
    );
    // Read-only: readable, a write refused in the guest; the staged bind is read-only on the
    // host as well.
    assert_eq!(
        exec_ok(&c, &writer, &["cat", "/config/settings"]),
        "mode=strict"
    );
    let (out, code) = exec(&c, &writer, &["sh", "-c", "echo no > /config/new"]);
    assert_ne!(code, Some(0), "a write to the read-only volume: {out}");
    assert!(out.contains("Read-only file system"), "{out}");
    assert!(!ro.join("new").exists());
    let staged = staged_mounts(&c, &pod, &writer);
    // CRI binds the pod's `/dev/shm` (a tmpfs of containerd's) into each container too; the
    // shim makes it the pod's tmpfs in the guest instead, so it is not staged.
    assert_eq!(
        staged.len(),
        4 + 3,
        "the writer's 4 volumes and CRI's 3 files: {staged:#?}"
    );
    for line in &staged {
        let opts = own_options(line);
        assert!(
            opts.contains(&"nosuid") && opts.contains(&"nodev"),
            "{line}"
        );
    }
    let ro_lines = staged
        .iter()
        .filter(|l| own_options(l).contains(&"ro"))
        .count();
    assert_eq!(
        ro_lines, 2,
        "the two read-only volumes are read-only binds: {staged:#?}"
    );
    // A single file.
    assert_eq!(
        exec_ok(&c, &writer, &["cat", "/etc/single.conf"]),
        "one file"
    );
    let (out, code) = exec(&c, &writer, &["sh", "-c", "echo no > /etc/single.conf"]);
    assert_ne!(code, Some(0), "a write to the read-only file: {out}");
    // The termination message reaches the host's file.
    exec_ok(
        &c,
        &writer,
        &["sh", "-c", "echo finished cleanly > /dev/termination-log"],
    );
    assert_eq!(
        std::fs::read_to_string(&termination).expect("termination file"),
        "finished cleanly\n"
    );
    // CRI's own files.
    assert_eq!(exec_ok(&c, &writer, &["cat", "/etc/hostname"]), "vols-pod");
    let hosts = exec_ok(&c, &writer, &["cat", "/etc/hosts"]);
    assert!(hosts.contains("localhost"), "/etc/hosts: {hosts}");
    let resolv = exec_ok(&c, &writer, &["cat", "/etc/resolv.conf"]);
    assert!(
        resolv.contains("nameserver 192.0.2.53") && resolv.contains("search shoji.test"),
        "/etc/resolv.conf: {resolv}"
    );
    // The same host directory in the other container.
    assert_eq!(
        exec_ok(&c, &reader, &["cat", "/shared/written"]),
        "from the guest"
    );
    // The pod's /dev/shm: one tmpfs in the guest of containerd's size (64 MiB), shared by the
    // two containers; the host's tmpfs containerd made for the pod sees none of it.
    let host_shm = c
        .dir
        .join("state/io.containerd.grpc.v1.cri/sandboxes")
        .join(&pod)
        .join("shm");
    assert!(host_shm.is_dir(), "{} is not there", host_shm.display());
    exec_ok(
        &c,
        &writer,
        &["sh", "-c", "echo shared memory > /dev/shm/x"],
    );
    assert_eq!(
        exec_ok(&c, &reader, &["cat", "/dev/shm/x"]),
        "shared memory"
    );
    let shm_df = exec_ok(&c, &reader, &["sh", "-c", "df -k /dev/shm | tail -1"]);
    assert_eq!(
        shm_df.split_whitespace().nth(1),
        Some("65536"),
        "df -k /dev/shm: {shm_df}"
    );
    let on_host: Vec<_> = std::fs::read_dir(&host_shm)
        .expect("the host's pod shm")
        .collect();
    assert!(on_host.is_empty(), "on the host: {on_host:?}");

    // Issue 12: none of it is in the host's mount table (containerd's snapshot mounts for the
    // containers' root filesystems neither: the shim mounts them in its namespace too).
    let rootfs = format!("/{writer}/rootfs");
    assert!(
        shim_mounts_naming(&pod, &c.dir)
            .iter()
            .any(|l| l.contains(&rootfs)),
        "the writer's root filesystem is mounted in the shim's namespace"
    );
    assert_none_on_host(&c);

    // Removing the writer takes its staged mounts off the shim's table at once; the reader
    // keeps its own.
    let reader_staged = staged_mounts(&c, &pod, &reader);
    assert_eq!(reader_staged.len(), 1 + 3, "{reader_staged:#?}");
    let served = served_mounts(&c, &writer);
    assert!(!served.is_empty(), "virtiofsd serves the writer's volumes");
    c.crictl_ok(&["stop", "--timeout", "1", &writer]);
    c.crictl_ok(&["rm", &writer]);
    let left = staged_mounts(&c, &pod, &writer);
    assert!(left.is_empty(), "the removed container's mounts: {left:#?}");
    assert_none_on_host(&c);
    let left = served_mounts(&c, &writer);
    assert!(left.is_empty(), "left in virtiofsd's namespace: {left:#?}");
    let share = c.env.sandbox_root().join(&pod).join("shared").join(&writer);
    assert!(!share.exists(), "{} is left", share.display());
    assert_eq!(staged_mounts(&c, &pod, &reader), reader_staged);
    // Removing the staging directory removed nothing of the volumes.
    for f in [rw.join("hello"), ro.join("settings"), single.clone()] {
        assert!(f.exists(), "{} was removed with the container", f.display());
    }
    exec_ok(
        &c,
        &reader,
        &["sh", "-c", "echo after the rm > /shared/later"],
    );
    assert_eq!(
        std::fs::read_to_string(rw.join("later")).expect("the reader's file"),
        "after the rm\n"
    );

    c.crictl_ok(&["stop", "--timeout", "1", &reader]);
    c.crictl_ok(&["rm", &reader]);
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
}

/// The host's mount table names neither the sandbox nor a container's root filesystem (the
/// shim mounts both in its own namespace). containerd's own mounts (the pod's network
/// namespace and `/dev/shm`) are the host's.
fn assert_none_on_host(c: &Containerd) {
    let on_host = mounts_naming(&c.env.sandbox_root());
    assert!(
        on_host.is_empty(),
        "sandbox mounts on the host: {on_host:#?}"
    );
    let rootfs: Vec<String> = mounts_naming(&c.dir)
        .into_iter()
        .filter(|l| l.split(' ').nth(4).is_some_and(|m| m.ends_with("/rootfs")))
        .collect();
    assert!(
        rootfs.is_empty(),
        "root filesystems on the host: {rootfs:#?}"
    );
}

/// A mountinfo line's own mount options (its sixth field).
fn own_options(line: &str) -> Vec<&str> {
    line.split_whitespace()
        .nth(5)
        .unwrap_or_default()
        .split(',')
        .collect()
}
