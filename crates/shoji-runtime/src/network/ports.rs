//! `-p [IP:]HOST:CONTAINER[/tcp|udp]`: published ports, as Docker spells them, bound to the
//! host's loopback unless an address is given.

use std::net::{IpAddr, Ipv4Addr};

#[derive(Debug, thiserror::Error)]
pub enum PortError {
    #[error("invalid -p {value:?}: {reason}; expected [IP:]HOST_PORT:CONTAINER_PORT[/tcp|udp], e.g. 8080:80 or 127.0.0.1:5353:53/udp")]
    Syntax { value: String, reason: String },
    #[error("-p {first} and -p {second} both publish {protocol} port {port} on {ip}")]
    Duplicate {
        first: String,
        second: String,
        protocol: Protocol,
        ip: IpAddr,
        port: u16,
    },
    #[error("-p {mapping}: host {protocol} port {ip}:{port} is not free; pick another host port")]
    Taken {
        mapping: String,
        protocol: Protocol,
        ip: IpAddr,
        port: u16,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Tcp,
    Udp,
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Tcp => "tcp",
            Self::Udp => "udp",
        })
    }
}

#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PortMapping {
    pub host_ip: IpAddr,
    pub host_port: u16,
    pub container_port: u16,
    pub protocol: Protocol,
}

impl std::fmt::Display for PortMapping {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}/{}",
            self.host_ip, self.host_port, self.container_port, self.protocol
        )
    }
}

fn port(value: &str, what: &str, text: &str) -> Result<u16, PortError> {
    let syntax = |reason: String| PortError::Syntax {
        value: value.into(),
        reason,
    };
    let n: u16 = text
        .parse()
        .map_err(|_| syntax(format!("{what} {text:?} is not a port number (1-65535)")))?;
    if n == 0 {
        return Err(syntax(format!("{what} 0 is not a port (1-65535)")));
    }
    Ok(n)
}

impl std::str::FromStr for PortMapping {
    type Err = PortError;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let syntax = |reason: &str| PortError::Syntax {
            value: value.into(),
            reason: reason.into(),
        };
        let (rest, protocol) = match value.rsplit_once('/') {
            Some((r, "tcp")) => (r, Protocol::Tcp),
            Some((r, "udp")) => (r, Protocol::Udp),
            Some(_) => return Err(syntax("the protocol must be tcp or udp")),
            None => (value, Protocol::Tcp),
        };
        let parts: Vec<&str> = rest.rsplitn(3, ':').collect();
        let (ip, host, container) = match parts.as_slice() {
            [c, h] => (None, *h, *c),
            [c, h, ip] => (Some(*ip), *h, *c),
            _ => return Err(syntax("both a host port and a container port are needed")),
        };
        let host_ip = match ip {
            None | Some("") => IpAddr::V4(Ipv4Addr::LOCALHOST),
            Some(ip) => {
                let ip: IpAddr = ip
                    .trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse()
                    .map_err(|_| syntax(&format!("{ip:?} is not an IP address")))?;
                if ip.is_ipv6() {
                    return Err(syntax(
                        "user-mode networking publishes on IPv4 host addresses only",
                    ));
                }
                ip
            }
        };
        if host.contains('-') || container.contains('-') {
            return Err(syntax("port ranges are not supported"));
        }
        Ok(Self {
            host_ip,
            host_port: port(value, "host port", host)?,
            container_port: port(value, "container port", container)?,
            protocol,
        })
    }
}

/// No host (address, port, protocol) twice (an unspecified address overlaps every other), and
/// each one free on this host now, so that a taken port is a clear error before the VM boots
/// rather than QEMU failing to start. (The port can still be taken between this check and
/// QEMU's bind; QEMU then refuses to start and the boot error says so.)
pub fn check(ports: &[PortMapping]) -> Result<(), PortError> {
    for (i, a) in ports.iter().enumerate() {
        for b in &ports[..i] {
            let overlap =
                a.host_ip == b.host_ip || a.host_ip.is_unspecified() || b.host_ip.is_unspecified();
            if overlap && a.host_port == b.host_port && a.protocol == b.protocol {
                return Err(PortError::Duplicate {
                    first: b.to_string(),
                    second: a.to_string(),
                    protocol: a.protocol,
                    ip: a.host_ip,
                    port: a.host_port,
                });
            }
        }
    }
    for p in ports {
        let addr = std::net::SocketAddr::new(p.host_ip, p.host_port);
        let bound = match p.protocol {
            Protocol::Tcp => std::net::TcpListener::bind(addr).map(drop),
            Protocol::Udp => std::net::UdpSocket::bind(addr).map(drop),
        };
        bound.map_err(|source| PortError::Taken {
            mapping: p.to_string(),
            protocol: p.protocol,
            ip: p.host_ip,
            port: p.host_port,
            source,
        })?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_spellings_parse() {
        let p: PortMapping = "8080:80".parse().unwrap();
        assert_eq!(p.to_string(), "127.0.0.1:8080:80/tcp");
        let p: PortMapping = "0.0.0.0:5353:53/udp".parse().unwrap();
        assert_eq!(p.to_string(), "0.0.0.0:5353:53/udp");
        let p: PortMapping = ":9000:90/tcp".parse().unwrap();
        assert_eq!(p.host_ip.to_string(), "127.0.0.1");
    }

    #[test]
    fn malformed_ports_say_what_is_wrong() {
        for (bad, says) in [
            ("80", "both a host port"),
            ("0:80", "host port 0"),
            ("8080:0", "container port 0"),
            ("8080:80/sctp", "tcp or udp"),
            ("x:80", "not a port number"),
            ("70000:80", "not a port number"),
            ("1.2.3:8080:80", "not an IP address"),
            ("[::1]:8080:80", "IPv4"),
            ("8000-8001:80", "ranges"),
        ] {
            let e = bad.parse::<PortMapping>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad}: {e}");
            assert!(e.contains("expected [IP:]HOST_PORT"), "{bad}: {e}");
        }
    }

    #[test]
    fn duplicate_and_taken_host_ports_are_refused() {
        let a: PortMapping = "18080:80".parse().unwrap();
        let b: PortMapping = "0.0.0.0:18080:81".parse().unwrap();
        let e = check(&[a.clone(), b]).unwrap_err();
        assert!(matches!(e, PortError::Duplicate { port: 18080, .. }), "{e}");
        // Same port, other protocol: fine as far as duplicates go.
        let u: PortMapping = "18080:80/udp".parse().unwrap();
        assert!(!matches!(check(&[a, u]), Err(PortError::Duplicate { .. })));
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        let p: PortMapping = format!("{port}:80").parse().unwrap();
        assert!(matches!(check(&[p]), Err(PortError::Taken { .. })));
    }
}
