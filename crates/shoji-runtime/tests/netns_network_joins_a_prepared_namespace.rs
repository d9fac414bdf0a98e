//! `--network netns:PATH`: the VM takes over the address of a veth in a namespace the test
//! prepares with iproute2 (as a CNI plugin would), and is reached from the veth's other end, in a
//! second namespace. Both namespaces are the test's own and are deleted when it ends; traffic
//! stays inside them. Needs root (namespaces, veth, TAP): CI runs as root.

use crate::common;
use std::process::Command;
use std::time::{Duration, Instant};

use common::{busybox_image, stored_spans, text, TestEnv};

/// Two network namespaces joined by a veth pair: `<ns>` holds 10.201.0.2/24 (the container's
/// side), `<peer>` 10.201.0.1/24. Deleted on drop.
struct Namespaces {
    ns: String,
    peer: String,
    veth: String,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().expect("running ip");
    assert!(out.status.success(), "ip {args:?}: {}", text(&out.stderr));
}

impl Namespaces {
    fn new() -> Self {
        let id = std::process::id();
        let n = Self {
            ns: format!("shoji-ct-{id}"),
            peer: format!("shoji-cl-{id}"),
            veth: format!("shv{}", id % 100_000),
        };
        let (a, b) = (format!("{}a", n.veth), format!("{}b", n.veth));
        ip(&["netns", "add", &n.ns]);
        ip(&["netns", "add", &n.peer]);
        ip(&["link", "add", &a, "type", "veth", "peer", "name", &b]);
        ip(&["link", "set", &a, "netns", &n.ns]);
        ip(&["link", "set", &b, "netns", &n.peer]);
        ip(&["-n", &n.ns, "addr", "add", "10.201.0.2/24", "dev", &a]);
        ip(&["-n", &n.ns, "link", "set", &a, "up"]);
        ip(&["-n", &n.ns, "route", "add", "default", "via", "10.201.0.1"]);
        ip(&["-n", &n.peer, "addr", "add", "10.201.0.1/24", "dev", &b]);
        ip(&["-n", &n.peer, "link", "set", &b, "up"]);
        n
    }
}

impl Drop for Namespaces {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end in it, and so the pair.
        let _ = Command::new("ip").args(["netns", "del", &self.ns]).status();
        let _ = Command::new("ip")
            .args(["netns", "del", &self.peer])
            .status();
    }
}

#[test]
fn vm_netns_mode_gives_the_vm_the_namespaces_address() {
    assert!(
        nix::unistd::geteuid().is_root(),
        "this test makes network namespaces and must run as root (CI does)"
    );
    let env = TestEnv::new();
    let nets = Namespaces::new();
    let image = busybox_image().0.display().to_string();
    let child = env
        .cmd()
        .args([
            "run",
            "--rm",
            "--trace",
            "--network",
            &format!("netns:/run/netns/{}", nets.ns),
            &image,
            "--",
            "sh",
            "-c",
            "ip -4 addr show eth0 | grep -o 'inet [0-9./]*'; ip route | grep default; \
             echo hello-through-the-veth | nc -l -p 7000",
        ])
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // From the peer namespace, until the container listens (before that: no answer to ARP, or
    // a reset), within a deadline.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got = String::new();
    while Instant::now() < deadline && got.is_empty() {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &nets.peer,
                "busybox",
                "nc",
                "-w",
                "2",
                "10.201.0.2",
                "7000",
            ])
            .output()
            .unwrap();
        got = text(&out.stdout);
        if got.is_empty() {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    let out = child.wait_with_output().unwrap();
    let stdout = text(&out.stdout);
    assert_eq!(
        got,
        "hello-through-the-veth\n",
        "{stdout}{}",
        text(&out.stderr)
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().map(str::trim_end).collect();
    assert_eq!(
        lines,
        ["inet 10.201.0.2/24", "default via 10.201.0.1 dev eth0"]
    );
    // vhost-net was decided and recorded: used only with KVM where the device opens.
    let spans = stored_spans(&env);
    let vm = spans
        .iter()
        .find(|s| s.name == "vm.start")
        .expect("a vm.start span");
    let usable = vm.attrs.get("vm.accel").map(String::as_str) == Some("kvm")
        && std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open("/dev/vhost-net")
            .is_ok();
    assert_eq!(
        vm.attrs.get("vm.vhost_net").map(String::as_str),
        Some(if usable { "true" } else { "false" }),
        "{:?}",
        vm.attrs
    );
    env.assert_nothing_left();
    // The TAP went with QEMU, the redirect with the run.
    let tap = Command::new("ip")
        .args(["-n", &nets.ns, "link", "show", "shoji-tap0"])
        .output()
        .unwrap();
    assert!(!tap.status.success(), "the TAP device is left");
    let qdisc = Command::new("tc")
        .args([
            "-n",
            &nets.ns,
            "qdisc",
            "show",
            "dev",
            &format!("{}a", nets.veth),
        ])
        .output()
        .unwrap();
    assert!(
        !text(&qdisc.stdout).contains("ingress"),
        "{}",
        text(&qdisc.stdout)
    );
}
