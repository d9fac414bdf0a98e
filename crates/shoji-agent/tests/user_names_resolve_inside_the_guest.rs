//! Issue 10, item 5: user names are resolved by the agent inside the container's root, from
//! bounded reads of regular files; a hostile `/etc/passwd` (a device, a FIFO) fails the
//! `CreateContainer` call at once with a clear error and leaves the sandbox working; so does a
//! security field the guest cannot honour, named by its place in the spec. One VM; each
//! passwd case changes the shared rootfs from the host before its container is made. `vm_*`:
//! serial.

use crate::common;

use std::time::Duration;

use common::GuestVm;

fn user(name: &str) -> serde_json::Value {
    serde_json::json!({"process": {"user": {"uid": 0, "gid": 0, "username": name}}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_user_names_resolve_in_the_guest_and_hostile_passwd_or_bad_security_fields_fail_fast() {
    let vm = GuestVm::boot().await;
    // Security fields the guest cannot honour, refused by the agent whatever the host sent;
    // before the passwd cases, as none of them needs one.
    let cases = [
        (
            "badcap",
            serde_json::json!({"process": {"capabilities": {"bounding": ["CAP_FLY"]}}}),
            "process.capabilities.bounding",
        ),
        (
            "badsys",
            // (An unknown syscall name is skipped, as runc skips it: not a case here.)
            serde_json::json!({"linux": {"seccomp": {"defaultAction": "SCMP_ACT_ERRNO",
                "syscalls": [{"names": ["read"], "action": "SCMP_ACT_ALLOW",
                    "args": [{"index": 6, "value": 0, "op": "SCMP_CMP_EQ"}]}]}}}),
            "linux.seccomp.syscalls[0].args[0]: index 6 is not a syscall argument (0-5)",
        ),
        (
            "badctl",
            serde_json::json!({"linux": {"sysctl": {"kernel.no_such_knob": "1"}}}),
            "linux.sysctl[\"kernel.no_such_knob\"]: no such kernel parameter in the guest",
        ),
    ];
    for (id, extra, want) in cases {
        let (err, _) = vm.create_fails(id, &["true"], extra).await;
        assert!(err.contains(want), "{id}: {err}");
    }

    let etc = vm.rootfs.join("etc");
    std::fs::write(
        etc.join("passwd"),
        "root:x:0:0:root:/root:/bin/sh\nsomeone:x:1234:1235::/home/someone:/bin/sh\n",
    )
    .unwrap();
    std::fs::write(etc.join("group"), "root:x:0:\nstaff:x:50:someone\n").unwrap();

    // A named user: uid, primary group, the groups listing it, and HOME from its entry.
    let o = vm
        .run(
            "named",
            &["sh", "-c", "echo $(id -u) $(id -g) $(id -G) $HOME"],
            user("someone"),
        )
        .await;
    assert_eq!(o.stdout, "1234 1235 1235 50 /home/someone\n", "{o:?}");
    // No HOME in the spec and a UID: HOME from the UID's entry, as runc does.
    let o = vm
        .run("uid0", &["sh", "-c", "echo $HOME"], serde_json::Value::Null)
        .await;
    assert_eq!(o.stdout, "/root\n", "{o:?}");

    // /etc/passwd -> /dev/zero: refused as a device before anything is read.
    std::fs::remove_file(etc.join("passwd")).unwrap();
    std::os::unix::fs::symlink("/dev/zero", etc.join("passwd")).unwrap();
    let (err, took) = vm.create_fails("zero", &["true"], user("someone")).await;
    assert!(
        err.contains("resolving user \"someone\"")
            && err.contains("/etc/passwd in the container is a character device"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // A FIFO: opened without blocking, refused, and the sandbox still serves containers.
    std::fs::remove_file(etc.join("passwd")).unwrap();
    nix::unistd::mkfifo(
        &etc.join("passwd"),
        nix::sys::stat::Mode::from_bits_truncate(0o644),
    )
    .unwrap();
    let (err, took) = vm.create_fails("fifo", &["true"], user("someone")).await;
    assert!(
        err.contains("/etc/passwd in the container is a FIFO"),
        "{err}"
    );
    assert!(took < Duration::from_secs(20), "took {took:?}");

    // Larger than the bound: refused, not read whole.
    std::fs::remove_file(etc.join("passwd")).unwrap();
    let big = "x".repeat(2 << 20);
    std::fs::write(etc.join("passwd"), big).unwrap();
    // The share stays mounted across containers, and virtiofsd's `--cache auto` lets the guest
    // keep a name's entry and attributes for one second: wait that out, or the FIFO is seen.
    std::thread::sleep(Duration::from_millis(1500));
    let (err, _) = vm.create_fails("big", &["true"], user("someone")).await;
    assert!(err.contains("larger than 1048576 bytes"), "{err}");

    // A spec with a UID needs no passwd: the broken file does not stop it (HOME falls back to
    // /), and the sandbox still serves containers.
    let o = vm
        .run(
            "after",
            &["sh", "-c", "echo $(id -u) $HOME"],
            serde_json::json!({"process": {"user": {"uid": 77, "gid": 0}}}),
        )
        .await;
    assert_eq!(o.stdout, "77 /\n", "{o:?}");
}
