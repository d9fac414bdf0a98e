//! The guest image `shoji image build` made by default boots Shoji's own kernel (ADR 014):
//! the release its manifest records, built by the fixed build user and host, with no module
//! support, and the cgroup controllers the agent gives containers. Boots a VM (`vm_*`).

mod common;
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
         cat /sys/fs/cgroup/cgroup.controllers",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let stdout = text(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 4, "{stdout}");
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
    for controller in ["cpu", "memory", "pids"] {
        assert!(
            lines[3].split_whitespace().any(|c| c == controller),
            "no {controller} controller: {}",
            lines[3]
        );
    }
}
