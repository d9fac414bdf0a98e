//! Issue 10: the agent applies the OCI spec's security fields to the container's processes,
//! checked from inside the container: capabilities, noNewPrivileges, seccomp, masked and
//! read-only paths, a read-only root, rlimits, oomScoreAdj, additionalGids and sysctls; and a
//! container from an image gets Docker's defaults (capability set, seccomp policy). Each test
//! boots one VM and runs its checks in one container. `vm_*`: serial.

use crate::common;
use common::{busybox_image, text, DeleteOnDrop, TestEnv};

/// Docker's default capability set as a /proc mask (bits 0,1,3-8,10,13,18,27,29,31).
const DOCKER_CAPS: u64 = 0xa80425fb;
const CAP_NET_RAW: u64 = 1 << 13;

#[test]
fn vm_image_containers_get_dockers_capabilities_and_seccomp_policy() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let script = "grep -E '^(CapInh|CapEff|CapBnd|CapAmb|NoNewPrivs|Seccomp):' /proc/self/status; \
        touch /new && echo root=rw; \
        mknod /dev/shm/null c 1 3 && echo mknod=ok; \
        mount -t tmpfs none /tmp 2>/dev/null && echo mount=ok || echo mount=refused; \
        unshare -U true 2>&1 | grep -q 'Operation not permitted' && echo unshare=EPERM; \
        echo timer_list=$(wc -c </proc/timer_list); \
        (echo x >/proc/sys/kernel/domainname) 2>/dev/null && echo procsys=rw || echo procsys=ro";
    let out = env.run(&[
        "run",
        "--rm",
        "--cap-drop",
        "NET_RAW",
        &image,
        "--",
        "sh",
        "-c",
        script,
    ]);
    let caps = format!("{:016x}", DOCKER_CAPS & !CAP_NET_RAW);
    let none = format!("{:016x}", 0);
    assert_eq!(
        text(&out.stdout),
        format!(
            "CapInh:\t{none}\nCapEff:\t{caps}\nCapBnd:\t{caps}\nCapAmb:\t{none}\n\
             NoNewPrivs:\t0\nSeccomp:\t2\nroot=rw\nmknod=ok\nmount=refused\nunshare=EPERM\ntimer_list=0\nprocsys=ro\n"
        ),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0));
}

#[test]
fn vm_exec_processes_get_the_containers_capabilities_and_seccomp_filter() {
    let env = TestEnv::new();
    let image = busybox_image().0.display().to_string();
    let id = "sec-exec";
    let _cleanup = DeleteOnDrop(&env, id);
    env.ok(&[
        "create",
        "--cap-drop",
        "CHOWN",
        &image,
        id,
        "--",
        "sleep",
        "1000",
    ]);
    env.ok(&["start", id]);
    let status = "grep -E '^(CapEff|CapBnd|Seccomp):' /proc/self/status; \
        unshare -U true 2>&1 | grep -q 'Operation not permitted' && echo unshare=EPERM";
    let caps = format!("{:016x}", DOCKER_CAPS & !1);
    // Root in the container: Docker's set less CAP_CHOWN, the filter loaded from the agent's BPF.
    let out = env.ok(&["exec", id, "sh", "-c", status]);
    assert_eq!(
        text(&out.stdout),
        format!("CapEff:\t{caps}\nCapBnd:\t{caps}\nSeccomp:\t2\nunshare=EPERM\n")
    );
    // Another user: the same bounding set and filter, no effective capabilities.
    let out = env.ok(&["exec", "-u", "1000:1000", id, "sh", "-c", status]);
    assert_eq!(
        text(&out.stdout),
        format!(
            "CapEff:\t{:016x}\nCapBnd:\t{caps}\nSeccomp:\t2\nunshare=EPERM\n",
            0
        )
    );
    env.ok(&["delete", "--force", id]);
    env.assert_nothing_left();
}

#[test]
fn vm_bundle_security_fields_apply_to_the_container() {
    let env = TestEnv::new();
    let bundle = env.dir.path().join("bundle");
    let rootfs = bundle.join("rootfs");
    for d in ["bin", "etc", "srv", "tmp", "mnt", "proc", "sys", "dev"] {
        std::fs::create_dir_all(rootfs.join(d)).unwrap();
    }
    std::fs::copy("/bin/busybox", rootfs.join("bin/busybox")).unwrap();
    let applets = std::process::Command::new("/bin/busybox")
        .arg("--list")
        .output()
        .unwrap();
    for a in text(&applets.stdout).lines().filter(|a| *a != "busybox") {
        std::os::unix::fs::symlink("busybox", rootfs.join("bin").join(a)).unwrap();
    }
    std::fs::write(rootfs.join("etc/secret"), "s3cret\n").unwrap();
    let script = "grep -E '^(CapBnd|CapEff|NoNewPrivs|Seccomp):' /proc/self/status; \
        mount -t tmpfs none /tmp 2>/dev/null && echo mount=ok || echo mount=refused; \
        mkdir /dev/shm/d 2>&1 | grep -q 'Operation not permitted' && echo mkdir=EPERM; \
        echo secret=$(cat /etc/secret) timer_list=$(wc -c </proc/timer_list); \
        touch /srv/f 2>/dev/null && echo srv=rw || echo srv=ro; \
        touch /new 2>/dev/null && echo root=rw || echo root=ro; \
        touch /dev/shm/f && echo shm=rw; \
        echo nofile=$(ulimit -n) oom=$(cat /proc/self/oom_score_adj) groups=$(id -G); \
        echo domain=$(cat /proc/sys/kernel/domainname)";
    let spec = serde_json::json!({
        "ociVersion": "1.0.2",
        "root": {"path": "rootfs", "readonly": true},
        "process": {
            "args": ["/bin/sh", "-c", script],
            "env": ["PATH=/bin"],
            "cwd": "/",
            "user": {"uid": 0, "gid": 0, "additionalGids": [11, 22]},
            "capabilities": {
                "bounding": ["CAP_CHOWN", "CAP_KILL"],
                "effective": ["CAP_CHOWN", "CAP_KILL"],
                "permitted": ["CAP_CHOWN", "CAP_KILL"]
            },
            "noNewPrivileges": true,
            "rlimits": [{"type": "RLIMIT_NOFILE", "soft": 321, "hard": 321}],
            "oomScoreAdj": 123,
            "apparmorProfile": "docker-default"
        },
        "linux": {
            "maskedPaths": ["/proc/timer_list", "/etc/secret"],
            "readonlyPaths": ["/proc/sys", "/srv"],
            "sysctl": {"kernel.domainname": "shoji.test"},
            "seccomp": {
                "defaultAction": "SCMP_ACT_ALLOW",
                "architectures": ["SCMP_ARCH_X86_64"],
                "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
            }
        }
    });
    std::fs::write(bundle.join("config.json"), spec.to_string()).unwrap();
    let out = env.run(&["run", "--rm", "--bundle", &bundle.display().to_string()]);
    assert_eq!(
        text(&out.stdout),
        "CapEff:\t0000000000000021\nCapBnd:\t0000000000000021\nNoNewPrivs:\t1\nSeccomp:\t2\n\
         mount=refused\nmkdir=EPERM\nsecret= timer_list=0\nsrv=ro\nroot=ro\nshm=rw\n\
         nofile=321 oom=123 groups=0 11 22\ndomain=shoji.test\n",
        "{}",
        text(&out.stderr)
    );

    // A capability name nobody knows is refused before any VM boots, naming the field.
    let mut bad = spec.clone();
    bad["process"]["capabilities"]["bounding"] = serde_json::json!(["CAP_FLY"]);
    std::fs::write(bundle.join("config.json"), bad.to_string()).unwrap();
    let out = env.run(&["run", "--rm", "--bundle", &bundle.display().to_string()]);
    let err = text(&out.stderr);
    assert_ne!(out.status.code(), Some(0));
    assert!(err.contains("process.capabilities.bounding"), "{err}");
}
