//! ADR 028: the host compiles a container's `linux.seccomp` into BPF and sends it with
//! `CreateContainer`; the agent checks the program's shape and loads it instead of compiling
//! the profile again, and still compiles the profile itself when a request carries no program.
//! Both paths deny what the profile denies (EPERM, as the profile's `errnoRet` says); a damaged
//! program, or one sent with a spec that has no seccomp, fails `CreateContainer` with the
//! reason. One VM. `vm_*`: serial.

use crate::common;

use common::GuestVm;
use shoji_runtime::seccomp::program_for_guest;

/// Tries `mkdir`, then shows the process's seccomp mode (2: a filter).
const PROBE: &[&str] = &[
    "sh",
    "-c",
    "busybox mkdir /tmp/d 2>&1; echo rc=$?; busybox grep Seccomp: /proc/self/status",
];
const DENIED: &str =
    "mkdir: can't create directory '/tmp/d': Operation not permitted\nrc=1\nSeccomp:\t2\n";

fn deny(names: &[&str]) -> serde_json::Value {
    serde_json::json!({"linux": {"seccomp": {
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": names, "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
    }}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn vm_seccomp_programs_from_the_host_are_checked_and_applied() {
    let vm = GuestVm::boot().await;

    // The host's compile, as `shoji run` and the shim send it: mkdir is denied.
    let mut req = vm.create_request("host", PROBE, deny(&["mkdir", "mkdirat"]));
    req.seccomp_program = program_for_guest(&req.oci_spec_json).unwrap();
    assert!(!req.seccomp_program.is_empty());
    let o = vm.run_request(req).await;
    assert_eq!(o.stdout, DENIED, "{o:?}");

    // No program in the request: the agent compiles the profile itself, to the same effect.
    let o = vm.run("guest", PROBE, deny(&["mkdir", "mkdirat"])).await;
    assert_eq!(o.stdout, DENIED, "{o:?}");

    // The agent loads the host's program as it is, without compiling the spec's profile again:
    // a program that denies mkdir, sent with a profile that denies only swapon, denies mkdir.
    let mut req = vm.create_request("trusted", PROBE, deny(&["swapon"]));
    req.seccomp_program = program_for_guest(
        &vm.create_request("x", PROBE, deny(&["mkdir", "mkdirat"]))
            .oci_spec_json,
    )
    .unwrap();
    let o = vm.run_request(req).await;
    assert_eq!(o.stdout, DENIED, "{o:?}");
    let o = vm.run("profile", PROBE, deny(&["swapon"])).await;
    assert_eq!(o.stdout, "rc=0\nSeccomp:\t2\n", "{o:?}");

    // A program cut short, or one for a spec without seccomp: refused before any process.
    let mut req = vm.create_request("cut", PROBE, deny(&["mkdir"]));
    let program = program_for_guest(&req.oci_spec_json).unwrap();
    req.seccomp_program = program[..program.len() - 3].to_vec();
    let (err, _) = vm.request_fails(req).await;
    assert!(
        err.contains("linux.seccomp: the BPF program of")
            && err.contains("not a whole number of 8-byte instructions"),
        "{err}"
    );
    let mut req = vm.create_request("none", PROBE, serde_json::Value::Null);
    req.seccomp_program = program;
    let (err, _) = vm.request_fails(req).await;
    assert!(err.contains("that has no linux.seccomp"), "{err}");

    // The sandbox still serves containers.
    let o = vm
        .run("after", &["echo", "ok"], serde_json::Value::Null)
        .await;
    assert_eq!(o.stdout, "ok\n", "{o:?}");
}
