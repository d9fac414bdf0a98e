//! A pod's VM is plugged into the network namespace containerd's CRI plugin made with real CNI
//! plugins (bridge, host-local, portmap, loopback; pinned, `scripts/lib.sh`): the guest's `eth0`
//! has the pod IP CRI reports, a server in a pod container is reached from the host through the
//! test's own bridge, a CRI `hostPort` (portmap's DNAT) reaches it too, and a container reaches
//! a server the test runs on the host at the bridge's address. The network is dual-stack: the
//! guest has the pod's IPv6 address and IPv6 default route too, and the server answers the host
//! over IPv6. Everything stays on this machine.
//! The shim is then killed: the TAP goes with QEMU and containerd's `delete` of the dead shim
//! removes the qdiscs from the pod's veth. After `rmp`, nothing Shoji or the test's plugins made
//! is left: no veth on the bridge, no pod namespace, no portmap chain; the test removes its
//! bridge (CNI's DEL leaves bridges) and the top-level portmap chain if it made it.
//!
//! The bridge has no gateway role in CNI's sense (`isGateway` would switch the host's IPv4
//! forwarding on): the test makes it with its address, and host-local gives the pod a default
//! route through that address, which the guest takes over as a gateway route.

use crate::containerd;

use std::io::{Read, Write};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use containerd::{text, Containerd, HANDLER};

/// portmap's top-level chain in iptables' nat table (and its jumps from PREROUTING and OUTPUT).
const HOSTPORT_CHAIN: &str = "CNI-HOSTPORT-DNAT";

fn run(cmd: &str, args: &[&str]) -> std::process::Output {
    Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("{cmd} {args:?}: {e}"))
}

fn run_ok(cmd: &str, args: &[&str]) -> String {
    let out = run(cmd, args);
    assert!(
        out.status.success(),
        "{cmd} {args:?}: {}",
        text(&out.stderr)
    );
    text(&out.stdout)
}

fn nat_rules() -> String {
    run_ok("iptables-save", &["-t", "nat"])
}

/// The same for IPv6 (portmap maps the pod's IPv6 address with ip6tables).
fn nat6_rules() -> String {
    run_ok("ip6tables-save", &["-t", "nat"])
}

/// The test's bridge and what portmap adds to iptables, removed on drop (also after a failure).
struct TestNet {
    bridge: String,
    subnet: u8,
    /// Whether portmap's top-level chain is the test's to remove (it was not there before),
    /// in iptables and in ip6tables.
    owns_hostport_chain: bool,
    owns_hostport6_chain: bool,
}

impl TestNet {
    /// A bridge of the test's own at `10.88.N.1/24`, N a subnet no address or route of the
    /// host uses.
    fn new() -> Self {
        let used = format!(
            "{}{}",
            run_ok("ip", &["-4", "-o", "addr"]),
            run_ok("ip", &["-4", "route"])
        );
        let pid = std::process::id();
        let subnet = (0..150u32)
            .map(|i| (100 + (pid + i) % 150) as u8)
            .find(|n| !used.contains(&format!("10.88.{n}.")))
            .expect("a free 10.88.N.0/24 subnet");
        let net = Self {
            bridge: format!("shojibr{}", pid % 100_000),
            subnet,
            owns_hostport_chain: !nat_rules().contains(&format!(":{HOSTPORT_CHAIN} ")),
            owns_hostport6_chain: !nat6_rules().contains(&format!(":{HOSTPORT_CHAIN} ")),
        };
        run_ok(
            "ip",
            &["link", "add", "name", &net.bridge, "type", "bridge"],
        );
        run_ok(
            "ip",
            &[
                "addr",
                "add",
                &format!("{}/24", net.gateway()),
                "dev",
                &net.bridge,
            ],
        );
        // Dual stack: an IPv6 prefix of the test's own beside the IPv4 one (nodad: usable at
        // once).
        run_ok(
            "ip",
            &[
                "-6",
                "addr",
                "add",
                &format!("{}/64", net.gateway6()),
                "dev",
                &net.bridge,
                "nodad",
            ],
        );
        run_ok("ip", &["link", "set", &net.bridge, "up"]);
        net
    }

    fn gateway(&self) -> Ipv4Addr {
        Ipv4Addr::new(10, 88, self.subnet, 1)
    }

    /// The bridge's IPv6 address, in a unique local prefix `fd88:0:N::/64`.
    fn gateway6(&self) -> Ipv6Addr {
        Ipv6Addr::new(0xfd88, 0, self.subnet.into(), 0, 0, 0, 0, 1)
    }

    /// bridge (an existing bridge, no gateway role, no masquerading), host-local (addresses
    /// .10-.99, its data in `dir`, a default route through the bridge), portmap (iptables,
    /// hostPort DNAT only), loopback.
    fn conflist(&self, dir: &std::path::Path) -> String {
        let n = self.subnet;
        serde_json::json!({
            "cniVersion": "1.0.0",
            "name": format!("shoji-test-{n}"),
            "plugins": [
                {
                    "type": "bridge",
                    "bridge": self.bridge,
                    "isGateway": false,
                    "ipMasq": false,
                    "ipam": {
                        "type": "host-local",
                        "dataDir": dir.join("cni-ipam"),
                        "ranges": [
                            [{
                                "subnet": format!("10.88.{n}.0/24"),
                                "rangeStart": format!("10.88.{n}.10"),
                                "rangeEnd": format!("10.88.{n}.99"),
                                "gateway": self.gateway().to_string(),
                            }],
                            [{
                                "subnet": format!("fd88:0:{n:x}::/64"),
                                "rangeStart": format!("fd88:0:{n:x}::10"),
                                "rangeEnd": format!("fd88:0:{n:x}::99"),
                                "gateway": self.gateway6().to_string(),
                            }]
                        ],
                        "routes": [
                            {"dst": "0.0.0.0/0", "gw": self.gateway().to_string()},
                            {"dst": "::/0", "gw": self.gateway6().to_string()}
                        ]
                    }
                },
                {
                    "type": "portmap",
                    "backend": "iptables",
                    "snat": false,
                    "capabilities": {"portMappings": true}
                },
                {"type": "loopback"}
            ]
        })
        .to_string()
    }

    /// Links enslaved to the bridge (the pods' host-side veths).
    fn ports(&self) -> String {
        run_ok("ip", &["-o", "link", "show", "master", &self.bridge])
    }
}

impl Drop for TestNet {
    fn drop(&mut self) {
        let _ = run("ip", &["link", "del", &self.bridge]);
        for (tool, owned) in [
            ("iptables", self.owns_hostport_chain),
            ("ip6tables", self.owns_hostport6_chain),
        ] {
            if !owned {
                continue;
            }
            for hook in ["PREROUTING", "OUTPUT"] {
                let _ = run(
                    tool,
                    &[
                        "-t",
                        "nat",
                        "-D",
                        hook,
                        "-m",
                        "addrtype",
                        "--dst-type",
                        "LOCAL",
                        "-j",
                        HOSTPORT_CHAIN,
                    ],
                );
            }
            let _ = run(tool, &["-t", "nat", "-F", HOSTPORT_CHAIN]);
            let _ = run(tool, &["-t", "nat", "-X", HOSTPORT_CHAIN]);
        }
    }
}

/// `GET /` over HTTP/1.0 to `addr`: the response body.
fn http_get(addr: SocketAddr) -> std::io::Result<String> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(3))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    Ok(out
        .split_once("\r\n\r\n")
        .map(|(_, body)| body.trim().to_string())
        .unwrap_or_default())
}

/// Retries `http_get` until it answers (bounded): the server starts in the guest meanwhile.
fn http_get_eventually(addr: SocketAddr) -> String {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match http_get(addr) {
            Ok(body) if !body.is_empty() => return body,
            r => assert!(Instant::now() < deadline, "GET http://{addr}/: {r:?}"),
        }
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn exec_ok(c: &Containerd, id: &str, cmd: &[&str]) -> String {
    let mut args = vec!["exec", id];
    args.extend_from_slice(cmd);
    c.crictl_ok(&args)
}

#[test]
fn vm_a_pod_on_a_cni_bridge_serves_publishes_and_reaches_the_host() {
    let net = TestNet::new();
    let scratch = tempfile::tempdir().expect("tempdir");
    let c = Containerd::start_cri_with_cni(&[], &net.conflist(scratch.path()));
    let host_port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port();
    // The pod's CRI configuration with a hostPort (portmap).
    let pod_json = c.pod_config("net", "net-pod");
    let mut pod_cfg: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&pod_json).expect("pod config"))
            .expect("pod config JSON");
    pod_cfg["port_mappings"] =
        serde_json::json!([{"protocol": 0, "container_port": 8080, "host_port": host_port}]);
    std::fs::write(&pod_json, pod_cfg.to_string()).expect("pod config");

    let started = Instant::now();
    let pod = c.crictl_ok(&["runp", "--runtime", HANDLER, &pod_json]);
    // docs/networking.md's figure: runp with CNI's bridge and the VM plugged into it.
    eprintln!(
        "runp on the CNI bridge: {:.2} s",
        started.elapsed().as_secs_f64()
    );
    let pod_ip: Ipv4Addr = c.inspect("inspectp", &pod)["status"]["network"]["ip"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .expect("CRI reports the pod's IPv4 address");
    assert_eq!(
        pod_ip.octets()[..3],
        [10, 88, net.subnet],
        "host-local's range"
    );
    assert_eq!(net.ports().lines().count(), 1, "one veth on the bridge");
    let pod_ip6: Ipv6Addr = c.inspect("inspectp", &pod)["status"]["network"]["additionalIps"][0]
        ["ip"]
        .as_str()
        .unwrap_or_default()
        .parse()
        .expect("CRI reports the pod's IPv6 address");
    assert_eq!(
        pod_ip6.segments()[..4],
        [0xfd88, 0, net.subnet.into(), 0],
        "host-local's IPv6 range"
    );

    let server_json = c.container_config(
        "server",
        &[
            "sh",
            "-c",
            "mkdir -p /tmp/www && echo hello from the pod > /tmp/www/index.html && \
             exec httpd -f -p 8080 -h /tmp/www",
        ],
    );
    let server = c.crictl_ok(&["create", "--no-pull", &pod, &server_json, &pod_json]);
    c.crictl_ok(&["start", &server]);

    // The guest's eth0 is the pod's interface, dual stack: the pod's IPv4 and IPv6 addresses,
    // and the default routes via the bridge.
    for (family, inet, address, gateway) in [
        (
            "-4",
            "inet",
            format!("{pod_ip}/24"),
            net.gateway().to_string(),
        ),
        (
            "-6",
            "inet6",
            format!("{pod_ip6}/64"),
            net.gateway6().to_string(),
        ),
    ] {
        let addr = exec_ok(
            &c,
            &server,
            &["ip", family, "-o", "addr", "show", "dev", "eth0"],
        );
        assert!(addr.contains(&format!("{inet} {address}")), "{addr}");
        let routes = exec_ok(&c, &server, &["ip", family, "route"]);
        assert!(
            routes.contains(&format!("default via {gateway}")),
            "{routes}"
        );
    }

    // (a) The pod's server, from the host through the bridge, over IPv4 and IPv6.
    assert_eq!(
        http_get_eventually(SocketAddr::from((pod_ip, 8080))),
        "hello from the pod"
    );
    assert_eq!(
        http_get_eventually(SocketAddr::from((pod_ip6, 8080))),
        "hello from the pod"
    );
    // (b) The hostPort: portmap's DNAT of a host address's port to the pod.
    assert_eq!(
        http_get_eventually(SocketAddr::from((net.gateway(), host_port))),
        "hello from the pod"
    );
    // (c) A container reaches a server on the host at the bridge's address.
    let listener = TcpListener::bind((net.gateway(), 0)).expect("a host server on the bridge");
    let host_server = listener.local_addr().expect("its address");
    let answer = std::thread::spawn(move || {
        let (mut s, peer) = listener.accept().expect("the container's connection");
        let mut buf = [0u8; 1024];
        let _ = s.read(&mut buf);
        let _ = s.write_all(b"HTTP/1.0 200 OK\r\nContent-Length: 20\r\n\r\nhello from the host\n");
        peer
    });
    let got = exec_ok(
        &c,
        &server,
        &["wget", "-qO-", &format!("http://{host_server}/")],
    );
    assert_eq!(got.trim(), "hello from the host");
    let peer = answer.join().expect("the host server");
    assert_eq!(peer.ip(), pod_ip, "the connection comes from the pod IP");

    let dnat = nat_rules();
    assert!(
        dnat.contains(&format!("--dport {host_port}")),
        "portmap's DNAT rule: {dnat}"
    );
    c.crictl_ok(&["stop", "--timeout", "1", &server]);
    c.crictl_ok(&["rm", &server]);
    // The shim's tc set-up is on the pod's veth; killed, the shim takes QEMU (and the TAP) with
    // it, and `delete`, which containerd runs for the dead shim, removes the qdiscs. (With a
    // container of the pod still running, CRI then refuses `rmp`: containerd hears of the
    // pause container's end only.)
    let info = &c.inspect("inspectp", &pod)["info"];
    let netns = info["runtimeSpec"]["linux"]["namespaces"]
        .as_array()
        .and_then(|ns| ns.iter().find(|n| n["type"] == "network"))
        .and_then(|n| n["path"].as_str())
        .expect("the pod's network namespace")
        .to_string();
    let qdiscs = || {
        run_ok(
            "nsenter",
            &[&format!("--net={netns}"), "tc", "qdisc", "show"],
        )
    };
    let links = || run_ok("nsenter", &[&format!("--net={netns}"), "ip", "-o", "link"]);
    assert!(qdiscs().contains("ingress"), "{}", qdiscs());
    assert!(links().contains("shoji-tap0"), "{}", links());
    let shim = info["pid"].as_i64().expect("the sandbox's pid") as i32;
    let cmdline = std::fs::read_to_string(format!("/proc/{shim}/cmdline")).unwrap_or_default();
    assert!(cmdline.contains("containerd-shim-shoji-v2"), "{cmdline:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim),
        nix::sys::signal::Signal::SIGKILL,
    )
    .expect("killing the shim");
    let deadline = Instant::now() + Duration::from_secs(30);
    while qdiscs().contains("ingress") || links().contains("shoji-tap0") {
        assert!(
            Instant::now() < deadline,
            "left in the pod's namespace after the shim's death: {}{}\ncontainerd's clean-up:\n{}",
            qdiscs(),
            links(),
            c.log()
                .lines()
                .filter(|l| l.contains("shim") && !l.contains("level=debug"))
                .collect::<Vec<_>>()
                .join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    c.crictl_ok(&["stopp", &pod]);
    c.crictl_ok(&["rmp", &pod]);
    c.wait_until_nothing_left(Duration::from_secs(20));
    c.assert_nothing_left();
    // CNI's DEL took the veth and the pod's DNAT chain; the namespace went with the pod (a
    // mount under the test dir, checked above).
    assert_eq!(net.ports(), "", "veths left on the bridge");
    let left = nat_rules();
    assert!(
        !left.contains(&format!("--dport {host_port}")) && !left.contains(&pod_ip.to_string()),
        "portmap rules left: {left}"
    );
    let left6 = nat6_rules();
    assert!(
        !left6.contains(&pod_ip6.to_string()),
        "portmap's IPv6 rules left: {left6}"
    );
    drop(c);
    let bridge = net.bridge.clone();
    let owned = net.owns_hostport_chain;
    let owned6 = net.owns_hostport6_chain;
    drop(net);
    assert!(
        !run("ip", &["link", "show", &bridge]).status.success(),
        "bridge {bridge} left"
    );
    if owned {
        assert!(
            !nat_rules().contains(HOSTPORT_CHAIN),
            "portmap's top-level chain left"
        );
    }
    if owned6 {
        assert!(
            !nat6_rules().contains(HOSTPORT_CHAIN),
            "portmap's top-level ip6tables chain left"
        );
    }
}
