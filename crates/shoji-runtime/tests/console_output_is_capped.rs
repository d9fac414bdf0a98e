//! Issue 10, item 7: a container that writes to the serial console in a loop cannot grow
//! `console.log` past `[runtime] log_max_size`, like the container's own logs. Tests that boot
//! VMs are named `vm_*`.

use crate::common;
use std::time::Duration;

use common::{busybox_image, TestEnv};

#[test]
fn vm_a_guest_flooding_its_serial_console_is_capped() {
    let cap = 64 << 10;
    let env = TestEnv::with_config("[runtime]\nlog_max_size = \"64K\"\n");
    let image = busybox_image().0.display().to_string();
    // Root in the container makes its own node for the serial port (major 4, minor 64) and
    // writes 512 KiB into it, eight times the cap.
    let mut child = env
        .cmd()
        .args([
            "create",
            &image,
            "flood",
            "--",
            "sh",
            "-c",
            "mknod /tmp/serial c 4 64 && head -c 524288 /dev/zero | tr '\\0' x > /tmp/serial; echo flooded",
        ])
        .spawn()
        .unwrap();
    assert!(child.wait().unwrap().success());
    let dir = env.sandbox_root().join("flood");
    env.ok(&["start", "flood"]);
    let deadline = std::time::Instant::now() + Duration::from_secs(120);
    loop {
        let out = std::fs::read_to_string(dir.join("stdout.log")).unwrap_or_default();
        if out.contains("flooded") {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the flood never ended"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let console = std::fs::read(dir.join("console.log")).unwrap();
    let xs = console.iter().filter(|b| **b == b'x').count();
    assert!(
        console.len() as u64 <= cap,
        "console.log has {} bytes",
        console.len()
    );
    // The flood did reach the console (it is not capped by not arriving).
    assert!(xs > 1000, "only {xs} bytes of the flood in console.log");
    // And the sandbox's log says so while it runs.
    let log = std::fs::read_to_string(dir.join("sandbox.log")).unwrap();
    assert!(
        log.lines()
            .any(|l| l.contains("log limit is reached") && l.contains("console")),
        "{log}"
    );
    env.ok(&["delete", "--force", "flood"]);
    env.assert_nothing_left();
}
