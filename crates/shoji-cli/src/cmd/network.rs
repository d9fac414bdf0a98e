//! The network flags `run` and `create` share: `--network`, `-p`, `--hostname`, `--add-host`,
//! `--dns`, parsed into `shoji_runtime::network::NetworkOptions` (checked there before any VM
//! boots).

use shoji_runtime::network::{parse_add_host, parse_dns, NetworkMode, NetworkOptions, PortMapping};

#[derive(Debug, clap::Args)]
pub struct NetworkArgs {
    /// Network: user (QEMU's user-mode stack, no root needed), none (loopback only), or
    /// netns:PATH (a TAP device in that network namespace; needs root)
    #[arg(long, value_name = "MODE", default_value = "user", value_parser = clap::value_parser!(NetworkMode))]
    pub network: NetworkMode,
    /// Publish a container port on the host: [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], on
    /// 127.0.0.1 unless IP is given; repeatable (user-mode network only)
    #[arg(short = 'p', long = "publish", value_name = "[IP:]HOST:CONTAINER[/PROTO]", value_parser = clap::value_parser!(PortMapping))]
    pub publish: Vec<PortMapping>,
    /// Hostname inside the container (default: the container's name)
    #[arg(long, value_name = "NAME")]
    pub hostname: Option<String>,
    /// Add a line to the container's /etc/hosts: NAME:IP, repeatable
    #[arg(long = "add-host", value_name = "NAME:IP", value_parser = parse_add_host)]
    pub add_host: Vec<(String, std::net::IpAddr)>,
    /// Nameserver for the container's /etc/resolv.conf (replaces the host's), repeatable
    #[arg(long, value_name = "IP", value_parser = parse_dns)]
    pub dns: Vec<std::net::IpAddr>,
}

impl NetworkArgs {
    pub fn options(self) -> NetworkOptions {
        NetworkOptions {
            mode: self.network,
            ports: self.publish,
            hostname: self.hostname,
            extra_hosts: self.add_host,
            dns: self.dns,
        }
    }
}
