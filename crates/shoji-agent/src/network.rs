//! The guest's network, set up over rtnetlink (ADR 015). Containers share the guest's one network
//! namespace: the VM is the sandbox boundary, as in Kata. Loopback is brought up at boot, so every
//! container has it whatever the host asks for; `ConfigureNetwork` then adds the devices the host
//! describes, each found by the MAC address the host gave the hypervisor's device.

use std::net::IpAddr;
use std::time::Duration;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressFlags};
use rtnetlink::packet_route::link::{LinkAttribute, LinkMessage};
use rtnetlink::{Handle, LinkUnspec, RouteMessageBuilder};
use shoji_protocols::agent::{ConfigureNetworkRequest, NetworkInterface};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error("cannot open a netlink socket")]
    Socket(#[source] std::io::Error),
    #[error("invalid {what} {value:?} in the network description")]
    Invalid { what: &'static str, value: String },
    #[error("no network device with MAC address {mac} appeared within {waited_ms} ms")]
    NoDevice { mac: String, waited_ms: u64 },
    #[error("route via device {device:?}, which the description does not name")]
    UnknownDevice { device: String },
    #[error("cannot write {value} to {path}")]
    Sysctl {
        path: String,
        value: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("{step} on {device}")]
    Netlink {
        step: &'static str,
        device: String,
        #[source]
        source: rtnetlink::Error,
    },
}

/// How long a described device may take to show up (the driver probes it while loading).
const DEVICE_WAIT: Duration = Duration::from_secs(2);

fn connect() -> Result<Handle, NetworkError> {
    let (conn, handle, _) = rtnetlink::new_connection().map_err(NetworkError::Socket)?;
    tokio::spawn(conn);
    Ok(handle)
}

fn nl(step: &'static str, device: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let device = device.to_string();
    move |source| NetworkError::Netlink {
        step,
        device,
        source,
    }
}

/// Brings `lo` up. Done at boot: every container gets a working 127.0.0.1 and ::1.
pub async fn loopback_up() -> Result<(), NetworkError> {
    let handle = connect()?;
    let index = link_by_name(&handle, "lo").await?;
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring up", "lo"))
}

async fn link_by_name(handle: &Handle, name: &str) -> Result<u32, NetworkError> {
    let mut links = handle.link().get().match_name(name).execute();
    match links.try_next().await.map_err(nl("find", name))? {
        Some(l) => Ok(l.header.index),
        None => Err(NetworkError::UnknownDevice {
            device: name.into(),
        }),
    }
}

fn mac_of(link: &LinkMessage) -> Option<&[u8]> {
    link.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(m) => Some(m.as_slice()),
        _ => None,
    })
}

/// `"52:54:00:12:34:56"` as bytes.
pub fn parse_mac(text: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || NetworkError::Invalid {
        what: "MAC address",
        value: text.into(),
    };
    let mut out = [0u8; 6];
    let mut parts = text.split(':');
    for b in out.iter_mut() {
        let p = parts.next().ok_or_else(bad)?;
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if parts.next().is_some() {
        return Err(bad());
    }
    Ok(out)
}

fn parse_ip(what: &'static str, text: &str) -> Result<IpAddr, NetworkError> {
    text.parse().map_err(|_| NetworkError::Invalid {
        what,
        value: text.into(),
    })
}

fn prefix(what: &'static str, ip: IpAddr, len: u32) -> Result<u8, NetworkError> {
    let max = if ip.is_ipv4() { 32 } else { 128 };
    if len > max {
        return Err(NetworkError::Invalid {
            what,
            value: format!("{ip}/{len}"),
        });
    }
    Ok(len as u8)
}

/// The device with `mac`, waiting for it to appear.
async fn link_by_mac(handle: &Handle, mac: &[u8; 6]) -> Result<u32, NetworkError> {
    let start = tokio::time::Instant::now();
    loop {
        let mut links = handle.link().get().execute();
        while let Some(l) = links.try_next().await.map_err(nl("list", "links"))? {
            if mac_of(&l) == Some(&mac[..]) {
                return Ok(l.header.index);
            }
        }
        if start.elapsed() >= DEVICE_WAIT {
            return Err(NetworkError::NoDevice {
                mac: mac
                    .iter()
                    .map(|b| format!("{b:02x}"))
                    .collect::<Vec<_>>()
                    .join(":"),
                waited_ms: DEVICE_WAIT.as_millis() as u64,
            });
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn configure_interface(
    handle: &Handle,
    iface: &NetworkInterface,
) -> Result<(String, u32), NetworkError> {
    if iface.name.is_empty() || iface.name.len() > 15 || iface.name.contains('/') {
        return Err(NetworkError::Invalid {
            what: "interface name",
            value: iface.name.clone(),
        });
    }
    let mac = parse_mac(&iface.mac)?;
    let index = link_by_mac(handle, &mac).await?;
    let name = iface.name.as_str();
    // Renaming needs the device down, which a fresh one is.
    let mut msg = LinkUnspec::new_with_index(index).name(name);
    if iface.mtu != 0 {
        msg = msg.mtu(iface.mtu);
    }
    handle
        .link()
        .set(msg.build())
        .execute()
        .await
        .map_err(nl("rename and size", name))?;
    ignore_router_advertisements(name)?;
    for a in &iface.addresses {
        let ip = parse_ip("interface address", &a.address)?;
        let len = prefix("interface address", ip, a.prefix_len)?;
        let mut add = handle.address().add(index, ip, len).replace();
        if ip.is_ipv6() {
            // No duplicate address detection (as Docker and Kata): the host made the address
            // unique, and while it is tentative (up to ~2 s) the kernel sends connections to
            // global addresses from lo's ::1, which slirp can never answer (ADR 015).
            add.message_mut()
                .attributes
                .push(AddressAttribute::Flags(AddressFlags::Nodad));
        }
        add.execute().await.map_err(nl("add address", name))?;
    }
    handle
        .link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring up", name))?;
    Ok((name.to_string(), index))
}

/// The host describes the whole network: the guest takes no address or default route of its own
/// from router advertisements (slirp sends them, and a SLAAC address and a second default route
/// via `fe80::2` would follow). Without IPv6 in the kernel there is nothing to turn off.
fn ignore_router_advertisements(device: &str) -> Result<(), NetworkError> {
    for knob in ["accept_ra", "autoconf"] {
        let path = format!("/proc/sys/net/ipv6/conf/{device}/{knob}");
        match std::fs::write(&path, "0") {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(NetworkError::Sysctl {
                    path,
                    value: "0",
                    source: e,
                });
            }
            _ => {}
        }
    }
    Ok(())
}

/// Applies the host's description; records the devices configured and their addresses on the
/// current span (`network.interfaces`, `network.addresses`).
pub async fn configure(req: &ConfigureNetworkRequest) -> Result<(), NetworkError> {
    let span = tracing::Span::current();
    let handle = connect()?;
    let mut devices = Vec::new();
    for iface in &req.interfaces {
        devices.push(configure_interface(&handle, iface).await?);
    }
    let index_of = |device: &str| {
        devices
            .iter()
            .find(|(n, _)| n == device)
            .map(|(_, i)| *i)
            .ok_or_else(|| NetworkError::UnknownDevice {
                device: device.into(),
            })
    };
    for r in &req.routes {
        let index = index_of(&r.device)?;
        let gateway = (!r.gateway.is_empty())
            .then(|| parse_ip("route gateway", &r.gateway))
            .transpose()?;
        let dest = if r.destination.is_empty() {
            match gateway {
                Some(IpAddr::V6(_)) => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
                _ => IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED),
            }
        } else {
            parse_ip("route destination", &r.destination)?
        };
        let len = if r.destination.is_empty() {
            0
        } else {
            prefix("route destination", dest, r.prefix_len)?
        };
        let invalid = |e: String| NetworkError::Invalid {
            what: "route",
            value: format!("{dest}/{len} via {:?}: {e}", r.gateway),
        };
        let mut b = RouteMessageBuilder::<IpAddr>::new()
            .destination_prefix(dest, len)
            .map_err(|e| invalid(e.to_string()))?
            .output_interface(index);
        if let Some(gw) = gateway {
            b = b.gateway(gw).map_err(|e| invalid(e.to_string()))?;
        }
        handle
            .route()
            .add(b.build())
            .replace()
            .execute()
            .await
            .map_err(nl("add route", &r.device))?;
    }
    for n in &req.neighbors {
        let index = index_of(&n.device)?;
        let ip = parse_ip("neighbour address", &n.address)?;
        let mac = parse_mac(&n.mac)?;
        handle
            .neighbours()
            .add(index, ip)
            .link_layer_address(&mac)
            .replace()
            .execute()
            .await
            .map_err(nl("add neighbour", &n.device))?;
    }
    span.record(
        "network.interfaces",
        devices
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join(",")
            .as_str(),
    );
    span.record(
        "network.addresses",
        req.interfaces
            .iter()
            .flat_map(|i| i.addresses.iter())
            .map(|a| format!("{}/{}", a.address, a.prefix_len))
            .collect::<Vec<_>>()
            .join(",")
            .as_str(),
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs_parse_strictly() {
        assert_eq!(
            parse_mac("52:54:00:12:34:5a").ok(),
            Some([0x52, 0x54, 0, 0x12, 0x34, 0x5a])
        );
        for bad in [
            "",
            "52:54:00:12:34",
            "52:54:00:12:34:56:78",
            "5:54:00:12:34:56",
            "zz:54:00:12:34:56",
        ] {
            assert!(parse_mac(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn prefixes_are_bounded_by_family() {
        let v4: IpAddr = "10.0.2.15".parse().unwrap();
        let v6: IpAddr = "fd00::1".parse().unwrap();
        assert!(prefix("x", v4, 24).is_ok());
        assert!(prefix("x", v4, 33).is_err());
        assert!(prefix("x", v6, 128).is_ok());
        assert!(prefix("x", v6, 129).is_err());
    }
}
