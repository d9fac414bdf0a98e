//! The guest image `shoji image build` made by default boots Shoji's own kernel (ADR 014):
//! the release its manifest records, built by the fixed build user and host, with no module
//! support, and what the fragments promise containers, seen from inside one: the cgroup v2
//! controllers, the namespaces, seccomp, the filesystems. Boots a VM (`vm_*`).

use crate::common;
use common::{busybox_image, text, TestEnv};

#[test]
fn vm_guest_kernel_is_shojis_own_with_everything_built_in() {
    let manifest_path = shoji_image::guest_dir().join("manifest.json");
    let manifest: shoji_image::Manifest =
        serde_json::from_slice(&std::fs::read(&manifest_path).unwrap_or_else(|e| {
            panic!("{}: {e}; run `shoji image build`", manifest_path.display())
        }))
        .expect("the guest image manifest parses");
    assert_eq!(
        manifest.kernel, "shoji",
        "the test suite runs on Shoji's kernel; rebuild the image with `shoji image build --kernel shoji`"
    );
    assert!(manifest.modules.is_empty(), "{:?}", manifest.modules);
    assert!(
        manifest.kernel_release.ends_with("-shoji"),
        "{}",
        manifest.kernel_release
    );

    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let out = env.run(&[
        "run",
        "--rm",
        &image,
        "--",
        "sh",
        "-c",
        "uname -r; cat /proc/version; \
         if [ -e /proc/modules ]; then echo modules; else echo no-modules; fi; \
         cat /sys/fs/cgroup/cgroup.controllers; \
         echo $(ls /proc/self/ns); \
         grep ^Seccomp: /proc/self/status; \
         echo $(grep -v ^nodev /proc/filesystems; grep ^nodev /proc/filesystems | cut -f2)",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 7, "{stdout}");
    assert_eq!(lines[0], manifest.kernel_release, "uname -r");
    // The reproducible build's fixed user and host, and no `+` from a git tree.
    assert!(
        lines[1].starts_with(&format!(
            "Linux version {} (shoji@shoji)",
            manifest.kernel_release
        )),
        "{}",
        lines[1]
    );
    assert_eq!(lines[2], "no-modules", "a kernel without module support");
    let has = |line: &str, word: &str| line.split_whitespace().any(|w| w == word);
    // containerd's `metrics` reads cpu, memory, pids and io statistics from these.
    for controller in ["cpu", "cpuset", "io", "memory", "pids"] {
        assert!(
            has(lines[3], controller),
            "no {controller} controller: {}",
            lines[3]
        );
    }
    for ns in ["cgroup", "ipc", "mnt", "net", "pid", "user", "uts"] {
        assert!(has(lines[4], ns), "no {ns} namespace: {}", lines[4]);
    }
    // The field exists only in a kernel with CONFIG_SECCOMP (0: this process has no filter).
    assert!(lines[5].starts_with("Seccomp:"), "{}", lines[5]);
    for fs in [
        "virtiofs", "fuse", "overlay", "tmpfs", "devtmpfs", "cgroup2", "mqueue", "devpts",
    ] {
        assert!(has(lines[6], fs), "no {fs} filesystem: {}", lines[6]);
    }
}
