//! `--network netns:PATH`: the VM joins a network namespace someone else prepared (a CNI plugin,
//! `ip netns add` and a veth), the way Kata's default `tcfilter` model does. In the namespace, a
//! TAP device is made; tc ingress filters redirect everything between the namespace's interface
//! and the TAP, both ways; QEMU gets the TAP's file descriptor (`-netdev tap,fd=N`), and the
//! guest gets the interface's MAC address, MTU, addresses and gateway routes, so that to its
//! peers the VM *is* that interface. Needs root (CAP_NET_ADMIN in the namespace's owner).
//!
//! Everything happens on a short-lived thread that `setns`es into the namespace: a netlink
//! socket and a TAP device belong to the namespace of the thread that creates them.

use std::future::Future;
use std::net::IpAddr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use futures::TryStreamExt;
use rtnetlink::packet_route::address::{AddressAttribute, AddressMessage};
use rtnetlink::packet_route::link::{LinkAttribute, LinkFlags, LinkMessage};
use rtnetlink::packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteMessage};
use rtnetlink::packet_route::tc::TcHandle;
use rtnetlink::{Handle, LinkUnspec};
use shoji_protocols::agent;

/// The TAP's name inside the namespace (one sandbox per namespace).
pub const TAP_NAME: &str = "shoji-tap0";

#[derive(Debug, thiserror::Error)]
pub enum NetnsError {
    #[error("cannot enter network namespace {path}")]
    Enter {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("network namespace {path}: {step}")]
    Netlink {
        path: PathBuf,
        step: &'static str,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("network namespace {path} has no interface with an IPv4 address to give the VM; configure one (e.g. a veth with `ip addr add`) first")]
    NoInterface { path: PathBuf },
    #[error("cannot create TAP device {name} in network namespace {path} (is another sandbox using it? root needed)")]
    Tap {
        path: PathBuf,
        name: &'static str,
        #[source]
        source: std::io::Error,
    },
    #[error("the thread working in network namespace {path} failed")]
    Thread { path: PathBuf },
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = Result<T, NetnsError>> + Send>>;

/// Runs `f` with a netlink handle inside the namespace at `path`, on a thread of its own.
fn in_netns<T: Send + 'static>(
    path: &Path,
    f: impl FnOnce(Handle, PathBuf) -> BoxFuture<T> + Send + 'static,
) -> Result<T, NetnsError> {
    let p = path.to_path_buf();
    let thread = std::thread::spawn(move || {
        let enter = |source| NetnsError::Enter {
            path: p.clone(),
            source,
        };
        let ns = std::fs::File::open(&p).map_err(enter)?;
        nix::sched::setns(&ns, nix::sched::CloneFlags::CLONE_NEWNET)
            .map_err(|e| enter(std::io::Error::from(e)))?;
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(enter)?;
        rt.block_on(async {
            let (conn, handle, _) = rtnetlink::new_connection().map_err(enter)?;
            tokio::spawn(conn);
            f(handle, p.clone()).await
        })
    });
    thread.join().map_err(|_| NetnsError::Thread {
        path: path.to_path_buf(),
    })?
}

fn nl(path: &Path, step: &'static str) -> impl FnOnce(rtnetlink::Error) -> NetnsError {
    let path = path.to_path_buf();
    move |source| NetnsError::Netlink { path, step, source }
}

/// A namespace's interface mirrored into the VM: the TAP for QEMU, the description for the
/// agent. Dropping it removes the tc set-up from the namespace's interface (the TAP goes with
/// its last file descriptor, i.e. with QEMU).
#[derive(Debug)]
pub struct NetnsAttachment {
    pub tap: std::sync::Arc<OwnedFd>,
    pub guest: agent::ConfigureNetworkRequest,
    pub mac: String,
    pub address: Option<IpAddr>,
    path: PathBuf,
    link_index: u32,
}

impl Drop for NetnsAttachment {
    fn drop(&mut self) {
        let index = self.link_index;
        let r = in_netns(&self.path, move |handle, path| {
            Box::pin(async move { del_ingress(&handle, &path, index).await })
        });
        if let Err(e) = r {
            tracing::warn!(error = %e, "network namespace clean-up failed");
        }
    }
}

fn mac_text(m: &[u8]) -> String {
    m.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

/// Opens `/dev/net/tun` and makes the TAP device `name` in the calling thread's namespace.
fn open_tap(name: &str) -> Result<OwnedFd, std::io::Error> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::options()
        .read(true)
        .write(true)
        .open("/dev/net/tun")?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_TAP | libc::IFF_NO_PI) as libc::c_short;
    // SAFETY: TUNSETIFF reads (and updates) one ifreq through a valid pointer on an open tun fd.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), libc::TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(OwnedFd::from(file))
}

/// Finds the namespace's interface, makes the TAP and the redirects, and describes the guest.
pub fn attach(path: &Path) -> Result<NetnsAttachment, NetnsError> {
    let (tap, guest, mac, address, link_index) = in_netns(path, |handle, path| {
        Box::pin(async move { mirror(handle, path).await })
    })?;
    Ok(NetnsAttachment {
        tap: std::sync::Arc::new(tap),
        guest,
        mac,
        address,
        path: path.to_path_buf(),
        link_index,
    })
}

/// `tc qdisc del dev X ingress` (its filters go with it).
async fn del_ingress(handle: &Handle, path: &Path, index: u32) -> Result<(), NetnsError> {
    let mut del = handle.qdisc().del(index as i32);
    del.message_mut().header.parent = TcHandle::INGRESS;
    del.message_mut().header.handle = TcHandle {
        major: 0xffff,
        minor: 0,
    };
    del.execute()
        .await
        .map_err(nl(path, "remove the ingress qdisc"))
}

/// The interface [`attach`] mirrors: the first one, loopback and the TAP aside, with an IPv4
/// address.
fn mirrored_link<'a>(
    links: &'a [LinkMessage],
    addrs: &[AddressMessage],
) -> Option<&'a LinkMessage> {
    let has_v4 = |index: u32| {
        addrs.iter().any(|a| {
            a.header.index == index
                && a.attributes
                    .iter()
                    .any(|at| matches!(at, AddressAttribute::Address(IpAddr::V4(_))))
        })
    };
    links.iter().find(|l| {
        !l.header.flags.contains(LinkFlags::Loopback)
            && link_name(l) != Some(TAP_NAME)
            && has_v4(l.header.index)
    })
}

fn link_name(l: &LinkMessage) -> Option<&str> {
    l.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    })
}

/// Undoes [`attach`] in the namespace at `path` for an owner that died before it could (a
/// killed shim): removes the TAP if it is still there (it normally goes with the last
/// descriptor) and the ingress qdisc, with its redirect, of the interface `attach` mirrors.
/// Pieces already gone are fine. Says whether anything was removed.
pub fn detach(path: &Path) -> Result<bool, NetnsError> {
    in_netns(path, |handle, path| {
        Box::pin(async move {
            let (links, addrs) = links_and_addresses(&handle, &path).await?;
            let mut removed = false;
            if let Some(tap) = links.iter().find(|l| link_name(l) == Some(TAP_NAME)) {
                handle
                    .link()
                    .del(tap.header.index)
                    .execute()
                    .await
                    .map_err(nl(&path, "remove the TAP device"))?;
                removed = true;
            }
            let Some(link) = mirrored_link(&links, &addrs) else {
                return Ok(removed);
            };
            let index = link.header.index;
            let qdiscs: Vec<_> = handle
                .qdisc()
                .get()
                .execute()
                .try_collect()
                .await
                .map_err(nl(&path, "list qdiscs"))?;
            let ingress = qdiscs
                .iter()
                .any(|q| q.header.index == index as i32 && q.header.parent == TcHandle::INGRESS);
            if ingress {
                del_ingress(&handle, &path, index).await?;
                removed = true;
            }
            Ok(removed)
        })
    })
}

type Mirrored = (
    OwnedFd,
    agent::ConfigureNetworkRequest,
    String,
    Option<IpAddr>,
    u32,
);

/// Every link of the namespace and every address.
async fn links_and_addresses(
    handle: &Handle,
    path: &Path,
) -> Result<(Vec<LinkMessage>, Vec<AddressMessage>), NetnsError> {
    let links = handle
        .link()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl(path, "list links"))?;
    let addrs = handle
        .address()
        .get()
        .execute()
        .try_collect()
        .await
        .map_err(nl(path, "list addresses"))?;
    Ok((links, addrs))
}

async fn mirror(handle: Handle, path: PathBuf) -> Result<Mirrored, NetnsError> {
    let (links, addrs) = links_and_addresses(&handle, &path).await?;
    let link = mirrored_link(&links, &addrs)
        .ok_or_else(|| NetnsError::NoInterface { path: path.clone() })?;
    let index = link.header.index;
    let mut mac = String::new();
    let mut mtu = 0;
    for a in &link.attributes {
        match a {
            LinkAttribute::Address(m) => mac = mac_text(m),
            LinkAttribute::Mtu(m) => mtu = *m,
            _ => {}
        }
    }
    let mut addresses = Vec::new();
    let mut first_v4 = None;
    for a in addrs.iter().filter(|a| a.header.index == index) {
        for at in &a.attributes {
            if let AddressAttribute::Address(ip) = at {
                let link_local =
                    matches!(ip, IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80);
                if link_local {
                    continue;
                }
                if ip.is_ipv4() && first_v4.is_none() {
                    first_v4 = Some(*ip);
                }
                addresses.push(agent::IpAddress {
                    address: ip.to_string(),
                    prefix_len: a.header.prefix_len.into(),
                    ..Default::default()
                });
            }
        }
    }
    let mut routes = Vec::new();
    for family in [true, false] {
        let query = if family {
            rtnetlink::RouteMessageBuilder::<std::net::Ipv4Addr>::new().build()
        } else {
            rtnetlink::RouteMessageBuilder::<std::net::Ipv6Addr>::new().build()
        };
        let found: Vec<RouteMessage> = handle
            .route()
            .get(query)
            .execute()
            .try_collect()
            .await
            .map_err(nl(&path, "list routes"))?;
        for r in found {
            if r.header.table != RouteHeader::RT_TABLE_MAIN {
                continue;
            }
            let (mut dest, mut gw, mut oif) = (None, None, None);
            for at in &r.attributes {
                match at {
                    RouteAttribute::Destination(RouteAddress::Inet(a)) => {
                        dest = Some(IpAddr::V4(*a))
                    }
                    RouteAttribute::Destination(RouteAddress::Inet6(a)) => {
                        dest = Some(IpAddr::V6(*a))
                    }
                    RouteAttribute::Gateway(RouteAddress::Inet(a)) => gw = Some(IpAddr::V4(*a)),
                    RouteAttribute::Gateway(RouteAddress::Inet6(a)) => gw = Some(IpAddr::V6(*a)),
                    RouteAttribute::Oif(i) => oif = Some(*i),
                    _ => {}
                }
            }
            // Connected routes come with the addresses in the guest; only gateway routes are
            // copied.
            if oif != Some(index) {
                continue;
            }
            let Some(gw) = gw else { continue };
            routes.push(agent::Route {
                destination: dest.map(|d| d.to_string()).unwrap_or_default(),
                prefix_len: r.header.destination_prefix_length.into(),
                gateway: gw.to_string(),
                device: super::GUEST_DEVICE.into(),
                ..Default::default()
            });
        }
    }

    let tap = open_tap(TAP_NAME).map_err(|source| NetnsError::Tap {
        path: path.clone(),
        name: TAP_NAME,
        source,
    })?;
    let mut tap_links = handle.link().get().match_name(TAP_NAME).execute();
    let tap_index = tap_links
        .try_next()
        .await
        .map_err(nl(&path, "find the TAP device"))?
        .map(|l| l.header.index)
        .ok_or_else(|| NetnsError::NoInterface { path: path.clone() })?;
    let mut set = LinkUnspec::new_with_index(tap_index).up();
    if mtu != 0 {
        set = set.mtu(mtu);
    }
    handle
        .link()
        .set(set.build())
        .execute()
        .await
        .map_err(nl(&path, "bring the TAP device up"))?;
    // `tc qdisc add dev X ingress; tc filter add dev X parent ffff: protocol all u32 match u8 0 0
    // action mirred egress redirect dev Y`, for (veth, tap) and (tap, veth).
    let all = (libc::ETH_P_ALL as u16).to_be();
    for (from, to) in [(index, tap_index), (tap_index, index)] {
        handle
            .qdisc()
            .add(from as i32)
            .ingress()
            .execute()
            .await
            .map_err(nl(&path, "add an ingress qdisc"))?;
        handle
            .traffic_filter(from as i32)
            .add()
            .parent(0xffff_0000)
            .protocol(all)
            .redirect(to)
            .map_err(nl(&path, "build the redirect filter"))?
            .execute()
            .await
            .map_err(nl(&path, "add the redirect filter"))?;
    }
    let guest = agent::ConfigureNetworkRequest {
        interfaces: vec![agent::NetworkInterface {
            name: super::GUEST_DEVICE.into(),
            mac: mac.clone(),
            mtu,
            addresses,
            ..Default::default()
        }],
        routes,
        ..Default::default()
    };
    Ok((tap, guest, mac, first_v4, index))
}
