//! A sandbox's network: what `--network`, `-p`, `--hostname`, `--add-host` and `--dns` ask for,
//! checked before any VM boots ([`NetworkOptions::validate`]), then turned into the hypervisor's
//! device ([`VmNetwork`]), the agent's description of the guest side
//! ([`NetworkPlan::guest`]) and the files the container sees ([`files`]). See
//! `docs/networking.md` and ADR 015.
//!
//! The guest's side is the host's decision alone: addresses, routes and the MAC address are
//! chosen here and sent to the agent; nothing the guest reports about its network is read back.

pub mod files;
pub mod netns;
pub mod ports;
pub mod vhost;

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::PathBuf;

use shoji_protocols::agent;
use tracing::{info_span, Instrument};

use crate::agent::AgentError;
use crate::sandbox::SandboxVm;

pub use ports::{PortMapping, Protocol};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("unknown network mode {value:?}: use user (the default), none, or netns:PATH")]
    UnknownMode { value: String },
    #[error(
        "--network netns:PATH needs a path to a network namespace file, e.g. netns:/run/netns/NAME"
    )]
    EmptyNetnsPath,
    #[error("network namespace {path} cannot be opened (create it with `ip netns add`)")]
    NetnsFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Port(#[from] ports::PortError),
    #[error(transparent)]
    Netns(#[from] netns::NetnsError),
    #[error("publishing ports (-p) needs user-mode networking, not --network {mode}")]
    PortsNeedUserMode { mode: String },
    #[error("invalid --add-host {value:?}: expected NAME:IP, e.g. db:192.168.1.5")]
    AddHost { value: String },
    #[error("invalid --dns {value:?}: expected an IP address")]
    Dns { value: String },
    #[error("invalid hostname {value:?}: 1 to 63 letters, digits, '-', '_' or '.'{hint}")]
    Hostname { value: String, hint: &'static str },
}

/// How the VM reaches the world.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum NetworkMode {
    /// QEMU's user-mode network stack (libslirp): no root, outbound connections through the
    /// host's sockets, `-p` through host forwards.
    #[default]
    User,
    /// Loopback only.
    None,
    /// A TAP device made in this network namespace (a file such as `/run/netns/NAME`).
    Netns(PathBuf),
}

impl std::str::FromStr for NetworkMode {
    type Err = NetworkError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "user" | "slirp" => Ok(Self::User),
            "none" => Ok(Self::None),
            _ => match s.strip_prefix("netns:") {
                Some("") => Err(NetworkError::EmptyNetnsPath),
                Some(p) => Ok(Self::Netns(PathBuf::from(p))),
                None => Err(NetworkError::UnknownMode { value: s.into() }),
            },
        }
    }
}

impl std::fmt::Display for NetworkMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::User => f.write_str("user"),
            Self::None => f.write_str("none"),
            Self::Netns(p) => write!(f, "netns:{}", p.display()),
        }
    }
}

/// What the user asked for, as parsed from the command line.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct NetworkOptions {
    pub mode: NetworkMode,
    pub ports: Vec<PortMapping>,
    /// Default: the container's name.
    pub hostname: Option<String>,
    /// `--add-host NAME:IP`, in order.
    pub extra_hosts: Vec<(String, IpAddr)>,
    /// `--dns IP`: replaces the host's nameservers.
    pub dns: Vec<IpAddr>,
}

/// `NAME:IP` (the IP may be IPv6: the name ends at the first colon).
pub fn parse_add_host(value: &str) -> Result<(String, IpAddr), NetworkError> {
    let bad = || NetworkError::AddHost {
        value: value.into(),
    };
    let (name, ip) = value.split_once(':').ok_or_else(bad)?;
    let ip = ip.trim_start_matches('[').trim_end_matches(']');
    if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c == '#') {
        return Err(bad());
    }
    Ok((name.into(), ip.parse().map_err(|_| bad())?))
}

pub fn parse_dns(value: &str) -> Result<IpAddr, NetworkError> {
    value.parse().map_err(|_| NetworkError::Dns {
        value: value.into(),
    })
}

fn check_hostname(value: &str, hint: &'static str) -> Result<(), NetworkError> {
    let ok = !value.is_empty()
        && value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if ok {
        Ok(())
    } else {
        Err(NetworkError::Hostname {
            value: value.into(),
            hint,
        })
    }
}

impl NetworkOptions {
    /// Everything that can be checked before a VM boots: modes that exclude each other, ports
    /// (zero, duplicates, already taken on the host), the hostname, the netns file.
    pub fn validate(&self) -> Result<(), NetworkError> {
        if !self.ports.is_empty() && self.mode != NetworkMode::User {
            return Err(NetworkError::PortsNeedUserMode {
                mode: self.mode.to_string(),
            });
        }
        ports::check(&self.ports)?;
        if let Some(h) = &self.hostname {
            check_hostname(h, "")?;
        }
        if let NetworkMode::Netns(path) = &self.mode {
            std::fs::File::open(path).map_err(|source| NetworkError::NetnsFile {
                path: path.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The hostname: `--hostname`, else the container's name.
    pub fn hostname_for(&self, container_id: &str) -> Result<String, NetworkError> {
        match &self.hostname {
            Some(h) => Ok(h.clone()),
            None => {
                check_hostname(container_id, "; give --hostname")?;
                Ok(container_id.into())
            }
        }
    }
}

/// Sets the spec's hostname and, unless the user set `HOSTNAME` with `-e`, the process's
/// `HOSTNAME` variable (Docker sets both).
pub fn apply_hostname(spec: &mut oci_spec::runtime::Spec, hostname: &str, user_env: &[String]) {
    spec.set_hostname(Some(hostname.into()));
    if user_env.iter().any(|e| e.starts_with("HOSTNAME=")) {
        return;
    }
    if let Some(process) = spec.process_mut() {
        let mut env = process.env().clone().unwrap_or_default();
        env.retain(|e| !e.starts_with("HOSTNAME="));
        env.push(format!("HOSTNAME={hostname}"));
        process.set_env(Some(env));
    }
}

/// User-mode addresses: QEMU's defaults, which Docker's rootless mode (slirp4netns) uses too.
pub const USER_NET: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 0);
pub const USER_PREFIX: u8 = 24;
pub const USER_GUEST: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 15);
pub const USER_GATEWAY: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 2);
pub const USER_DNS: Ipv4Addr = Ipv4Addr::new(10, 0, 2, 3);
/// User mode's IPv6 prefix: a unique local one of Shoji's own (QEMU's default, `fec0::/64`, is
/// a deprecated site-local prefix), the same host parts as IPv4 (`::2` the host, `::15` the
/// guest).
pub const USER_NET6: Ipv6Addr = Ipv6Addr::new(0xfd53, 0x686f, 0x6a69, 0, 0, 0, 0, 0);
pub const USER_PREFIX6: u8 = 64;
pub const USER_GUEST6: Ipv6Addr = Ipv6Addr::new(0xfd53, 0x686f, 0x6a69, 0, 0, 0, 0, 0x15);
pub const USER_GATEWAY6: Ipv6Addr = Ipv6Addr::new(0xfd53, 0x686f, 0x6a69, 0, 0, 0, 0, 2);
pub const USER_DNS6: Ipv6Addr = Ipv6Addr::new(0xfd53, 0x686f, 0x6a69, 0, 0, 0, 0, 3);
/// The guest's device, locally administered (0x02 bit) so it collides with no vendor's.
pub const GUEST_MAC: &str = "02:53:48:4f:4a:49";
pub const GUEST_DEVICE: &str = "eth0";

/// The network device the hypervisor gives the VM.
#[derive(Debug, Clone, Default)]
pub enum VmNetwork {
    /// No device: the guest has loopback only.
    #[default]
    None,
    /// User-mode stack with these host forwards.
    User {
        mac: String,
        forwards: Vec<PortMapping>,
    },
    /// An open TAP device, passed to the hypervisor as a file descriptor, with vhost-net's
    /// device when [`vhost::probe`] found it usable.
    Tap {
        fd: std::sync::Arc<std::os::fd::OwnedFd>,
        mac: String,
        vhost: Option<std::sync::Arc<std::os::fd::OwnedFd>>,
    },
}

impl VmNetwork {
    /// The descriptors the hypervisor inherits under their own numbers (the TAP, vhost-net).
    pub fn inherited_fds(&self) -> Vec<std::os::fd::RawFd> {
        use std::os::fd::AsRawFd;
        match self {
            VmNetwork::Tap { fd, vhost, .. } => std::iter::once(fd)
                .chain(vhost)
                .map(|f| f.as_raw_fd())
                .collect(),
            _ => Vec::new(),
        }
    }

    /// Gives a TAP vhost-net's device when `choice` has one; other devices are left alone.
    pub fn use_vhost(&mut self, choice: &vhost::VhostChoice) {
        if let VmNetwork::Tap { vhost, .. } = self {
            vhost.clone_from(&choice.fd);
        }
    }
}

/// Everything a sandbox's network needs, derived from [`NetworkOptions`]. Keep it until the VM
/// is gone: in netns mode it undoes the namespace's set-up when dropped.
#[derive(Debug)]
pub struct NetworkPlan {
    pub vm: VmNetwork,
    /// The agent's description of the guest side; `None` = nothing beyond loopback.
    pub guest: Option<agent::ConfigureNetworkRequest>,
    /// The container's own (IPv4) address.
    pub address: Option<IpAddr>,
    /// Which of the host's nameservers the container gets, and what stands for loopback ones.
    pub dns: files::DnsReach,
    _netns: Option<netns::NetnsAttachment>,
}

impl NetworkPlan {
    /// In netns mode this makes the TAP device and the tc redirects in the namespace.
    pub fn new(opts: &NetworkOptions) -> Result<Self, NetworkError> {
        Ok(match &opts.mode {
            NetworkMode::None => Self {
                vm: VmNetwork::None,
                guest: None,
                address: None,
                dns: files::DnsReach::default(),
                _netns: None,
            },
            NetworkMode::User => Self {
                vm: VmNetwork::User {
                    mac: GUEST_MAC.into(),
                    forwards: opts.ports.clone(),
                },
                guest: Some(agent::ConfigureNetworkRequest {
                    interfaces: vec![agent::NetworkInterface {
                        name: GUEST_DEVICE.into(),
                        mac: GUEST_MAC.into(),
                        mtu: 1500,
                        addresses: vec![
                            agent::IpAddress {
                                address: USER_GUEST.to_string(),
                                prefix_len: USER_PREFIX.into(),
                                ..Default::default()
                            },
                            agent::IpAddress {
                                address: USER_GUEST6.to_string(),
                                prefix_len: USER_PREFIX6.into(),
                                ..Default::default()
                            },
                        ],
                        ..Default::default()
                    }],
                    routes: [USER_GATEWAY.to_string(), USER_GATEWAY6.to_string()]
                        .map(|gateway| agent::Route {
                            gateway,
                            device: GUEST_DEVICE.into(),
                            ..Default::default()
                        })
                        .into(),
                    ..Default::default()
                }),
                address: Some(IpAddr::V4(USER_GUEST)),
                dns: files::DnsReach {
                    ipv6: true,
                    forwarder4: Some(USER_DNS),
                    forwarder6: Some(USER_DNS6),
                },
                _netns: None,
            },
            NetworkMode::Netns(path) => {
                let a = netns::attach(path)?;
                Self {
                    vm: VmNetwork::Tap {
                        fd: a.tap.clone(),
                        mac: a.mac.clone(),
                        vhost: None,
                    },
                    dns: files::DnsReach {
                        ipv6: global_ipv6(&a.guest).is_some(),
                        ..Default::default()
                    },
                    guest: Some(a.guest.clone()),
                    address: a.address,
                    _netns: Some(a),
                }
            }
        })
    }

    /// QEMU's arguments for the device.
    pub fn qemu_args(vm: &VmNetwork) -> Vec<String> {
        match vm {
            VmNetwork::None => Vec::new(),
            VmNetwork::User { mac, forwards } => {
                // `ipv4=on` must be explicit: QEMU takes `ipv6=on` alone to mean IPv6 only.
                let mut netdev = format!(
                    "user,id=net0,net={USER_NET}/{USER_PREFIX},host={USER_GATEWAY},dns={USER_DNS},dhcpstart={USER_GUEST},ipv4=on,ipv6=on,ipv6-net={USER_NET6}/{USER_PREFIX6},ipv6-host={USER_GATEWAY6},ipv6-dns={USER_DNS6}"
                );
                for f in forwards {
                    netdev.push_str(&format!(
                        ",hostfwd={}:{}:{}-{USER_GUEST}:{}",
                        f.protocol, f.host_ip, f.host_port, f.container_port
                    ));
                }
                vec![
                    "-netdev".into(),
                    netdev,
                    "-device".into(),
                    format!("virtio-net-device,netdev=net0,mac={mac}"),
                ]
            }
            // The hypervisor inherits the descriptor under the same number.
            VmNetwork::Tap { fd, mac, vhost } => {
                use std::os::fd::AsRawFd;
                let mut netdev = format!("tap,id=net0,fd={}", fd.as_raw_fd());
                if let Some(v) = vhost {
                    netdev.push_str(&format!(",vhost=on,vhostfd={}", v.as_raw_fd()));
                }
                vec![
                    "-netdev".into(),
                    netdev,
                    "-device".into(),
                    format!("virtio-net-device,netdev=net0,mac={mac}"),
                ]
            }
        }
    }
}

/// Makes the plan for sandbox `sandbox_id` (in netns mode: the TAP and the redirects in the
/// namespace), in the `network.prepare` span. Keep the plan until the VM is gone.
pub fn prepare(sandbox_id: &str, opts: &NetworkOptions) -> Result<NetworkPlan, NetworkError> {
    info_span!("network.prepare", source = "runtime", subsystem = "network", sandbox_id = %sandbox_id, network.mode = %opts.mode)
        .in_scope(|| NetworkPlan::new(opts))
}

/// The guest's first IPv6 address beyond link-local in a description.
fn global_ipv6(guest: &agent::ConfigureNetworkRequest) -> Option<Ipv6Addr> {
    guest
        .interfaces
        .iter()
        .flat_map(|i| &i.addresses)
        .filter_map(|a| a.address.parse::<Ipv6Addr>().ok())
        .find(|ip| !ip.is_unicast_link_local() && !ip.is_loopback())
}

impl NetworkPlan {
    /// The container's own addresses for `/etc/hosts`: its IPv4 address, then its IPv6 one.
    pub fn own_addresses(&self) -> Vec<IpAddr> {
        let v6 = self.guest.as_ref().and_then(global_ipv6).map(IpAddr::V6);
        self.address.into_iter().chain(v6).collect()
    }
}

/// Configures the guest's network (when there is more than loopback) and returns the container's
/// `/etc` files, in the `network.setup` span (the agent's `network.configure` is its child).
pub async fn setup(
    vm: &SandboxVm,
    opts: &NetworkOptions,
    plan: &NetworkPlan,
    hostname: &str,
) -> Result<Vec<agent::ContainerFile>, AgentError> {
    let span = info_span!(
        "network.setup",
        source = "runtime",
        subsystem = "network",
        sandbox_id = %vm.sb.id,
        network.mode = %opts.mode,
        network.ports = opts.ports.len(),
        network.address = plan.address.map(|a| a.to_string()).unwrap_or_default(),
        host.name = hostname,
    );
    async {
        if let Some(guest) = &plan.guest {
            vm.client.configure_network(guest).await?;
        }
        Ok(files::container_files(
            hostname,
            &opts.extra_hosts,
            &plan.own_addresses(),
            &opts.dns,
            &plan.dns,
        ))
    }
    .instrument(span)
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_parse_and_unknown_ones_are_named() {
        assert_eq!("user".parse::<NetworkMode>().ok(), Some(NetworkMode::User));
        assert_eq!("none".parse::<NetworkMode>().ok(), Some(NetworkMode::None));
        assert_eq!(
            "netns:/run/netns/a".parse::<NetworkMode>().ok(),
            Some(NetworkMode::Netns("/run/netns/a".into()))
        );
        let e = "bridge".parse::<NetworkMode>().unwrap_err().to_string();
        assert!(e.contains("\"bridge\"") && e.contains("netns:PATH"), "{e}");
        assert!(matches!(
            "netns:".parse::<NetworkMode>(),
            Err(NetworkError::EmptyNetnsPath)
        ));
    }

    #[test]
    fn add_host_and_dns_parse() {
        let (n, ip) = parse_add_host("db:192.168.1.5").unwrap();
        assert_eq!((n.as_str(), ip.to_string().as_str()), ("db", "192.168.1.5"));
        let (n, ip) = parse_add_host("v6:fd00::1").unwrap();
        assert_eq!((n.as_str(), ip.to_string().as_str()), ("v6", "fd00::1"));
        for bad in ["db", "db:", ":1.2.3.4", "db:notanip", "a b:1.2.3.4"] {
            assert!(parse_add_host(bad).is_err(), "{bad}");
        }
        assert!(parse_dns("1.1.1.1").is_ok());
        assert!(parse_dns("dns.example").is_err());
    }

    #[test]
    fn ports_need_user_mode_and_hostnames_are_checked() {
        let p: PortMapping = "8080:80".parse().unwrap();
        let opts = NetworkOptions {
            mode: NetworkMode::None,
            ports: vec![p],
            ..Default::default()
        };
        assert!(matches!(
            opts.validate(),
            Err(NetworkError::PortsNeedUserMode { .. })
        ));
        let opts = NetworkOptions {
            hostname: Some("bad host".into()),
            ..Default::default()
        };
        assert!(opts.validate().is_err());
        let opts = NetworkOptions::default();
        assert_eq!(opts.hostname_for("web-1").unwrap(), "web-1");
        assert!(opts.hostname_for("has/slash").is_err());
    }

    fn ip(s: &str) -> IpAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_namespace_gives_ipv6_only_with_an_address_beyond_link_local() {
        let described = |addresses: &[&str]| agent::ConfigureNetworkRequest {
            interfaces: vec![agent::NetworkInterface {
                addresses: addresses
                    .iter()
                    .map(|a| agent::IpAddress {
                        address: a.to_string(),
                        prefix_len: 64,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(global_ipv6(&described(&["10.88.0.2"])), None);
        assert_eq!(global_ipv6(&described(&["10.88.0.2", "fe80::1"])), None);
        assert_eq!(
            global_ipv6(&described(&["10.88.0.2", "fe80::1", "fd88:0:1::2"])),
            Some("fd88:0:1::2".parse().unwrap())
        );
    }

    #[test]
    fn a_tap_is_inherited_with_vhost_net_only_when_the_probe_gave_the_device() {
        use std::os::fd::AsRawFd;
        let open = || std::sync::Arc::new(std::fs::File::open("/dev/null").unwrap().into());
        let mut vm = VmNetwork::Tap {
            fd: open(),
            mac: GUEST_MAC.into(),
            vhost: None,
        };
        let VmNetwork::Tap { fd, .. } = &vm else {
            unreachable!()
        };
        let tap = fd.as_raw_fd();
        assert_eq!(
            NetworkPlan::qemu_args(&vm)[1],
            format!("tap,id=net0,fd={tap}")
        );
        assert_eq!(vm.inherited_fds(), [tap]);
        // Under TCG the probe gives no device, and the TAP stays without vhost.
        vm.use_vhost(&vhost::probe(
            crate::hypervisor::accel::Accel::Tcg,
            std::path::Path::new("/dev/null"),
        ));
        assert_eq!(vm.inherited_fds(), [tap]);
        let choice = vhost::VhostChoice {
            fd: Some(open()),
            reason: String::new(),
        };
        let v = choice.fd.as_ref().unwrap().as_raw_fd();
        vm.use_vhost(&choice);
        assert_eq!(
            NetworkPlan::qemu_args(&vm)[1],
            format!("tap,id=net0,fd={tap},vhost=on,vhostfd={v}")
        );
        assert_eq!(vm.inherited_fds(), [tap, v]);
        // Other devices have nothing to inherit and ignore vhost.
        let mut user = NetworkPlan::new(&NetworkOptions::default()).unwrap().vm;
        user.use_vhost(&choice);
        assert!(user.inherited_fds().is_empty());
        assert!(!NetworkPlan::qemu_args(&user)[1].contains("vhost"));
    }

    #[test]
    fn user_mode_gives_qemu_a_virtio_mmio_device_with_forwards() {
        let opts = NetworkOptions {
            ports: vec![
                "8080:80".parse().unwrap(),
                "0.0.0.0:5353:53/udp".parse().unwrap(),
            ],
            ..Default::default()
        };
        let plan = NetworkPlan::new(&opts).unwrap();
        let args = NetworkPlan::qemu_args(&plan.vm);
        assert_eq!(args[0], "-netdev");
        assert!(args[1].starts_with("user,id=net0,net=10.0.2.0/24,host=10.0.2.2,dns=10.0.2.3"));
        assert!(args[1].contains(",hostfwd=tcp:127.0.0.1:8080-10.0.2.15:80"));
        assert!(args[1].contains(",hostfwd=udp:0.0.0.0:5353-10.0.2.15:53"));
        assert_eq!(
            args[3],
            format!("virtio-net-device,netdev=net0,mac={GUEST_MAC}")
        );
        // Both families in /etc/hosts, and the host's IPv6 nameservers with slirp's forwarders.
        assert_eq!(
            plan.own_addresses(),
            [ip("10.0.2.15"), ip("fd53:686f:6a69::15")]
        );
        assert!(plan.dns.ipv6);
        assert_eq!(plan.dns.forwarder6, Some(USER_DNS6));
        let guest = plan.guest.unwrap();
        assert_eq!(guest.interfaces[0].addresses[0].address, "10.0.2.15");
        assert_eq!(guest.routes[0].gateway, "10.0.2.2");
        assert!(args[1].contains(
            ",ipv4=on,ipv6=on,ipv6-net=fd53:686f:6a69::/64,ipv6-host=fd53:686f:6a69::2,"
        ));
        assert_eq!(
            guest.interfaces[0].addresses[1].address,
            "fd53:686f:6a69::15"
        );
        assert_eq!(guest.routes[1].gateway, "fd53:686f:6a69::2");
        let none = NetworkPlan::new(&NetworkOptions {
            mode: NetworkMode::None,
            ..Default::default()
        })
        .unwrap();
        assert!(NetworkPlan::qemu_args(&none.vm).is_empty());
        assert!(none.guest.is_none());
        assert!(none.own_addresses().is_empty());
        assert_eq!(none.dns, files::DnsReach::default());
    }
}
