//! The pod's network in its VM. containerd's CRI plugin makes the pod's network namespace (CNI
//! plugins put a veth with the pod's address in it) and names it in the sandbox ("pause")
//! container's spec, `linux.namespaces` of type `network` with a `path`. The shim plugs the VM
//! into that namespace with `shoji run --network netns:PATH`'s mechanism
//! ([`shoji_runtime::network::netns`]: a TAP beside the veth, tc redirects between them, the
//! guest's `eth0` taking the veth's MAC, MTU, addresses and gateway routes), so every container
//! of the pod sees the pod IP. A spec without such a path (`ctr run`, a host-network pod) gives
//! the guest loopback only. The namespace and the veth are containerd's; the TAP and the
//! qdiscs are the shim's, removed when the VM stops or, after a killed shim, by
//! `containerd-shim-shoji-v2 delete` ([`clean_after_kill`]).

use std::path::{Path, PathBuf};

use shoji_runtime::network::{NetworkError, NetworkMode, NetworkOptions, NetworkPlan};
use shoji_runtime::sandbox::SandboxVm;

#[derive(Debug, thiserror::Error)]
pub enum PodNetworkError {
    #[error("the container's spec is not an OCI runtime spec")]
    Spec(#[source] serde_json::Error),
    #[error("the pod's network namespace {path} cannot be plugged into the VM")]
    Prepare {
        path: PathBuf,
        #[source]
        source: Box<NetworkError>,
    },
    #[error("the guest did not take the pod's network from {path}")]
    Configure {
        path: PathBuf,
        #[source]
        source: Box<shoji_runtime::agent::AgentError>,
    },
}

/// The network namespace a container's spec joins (`linux.namespaces`, type `network`, with a
/// path), if any, and the spec's hostname.
pub fn netns_path(spec_json: &[u8]) -> Result<(Option<PathBuf>, String), PodNetworkError> {
    let spec: oci_spec::runtime::Spec =
        serde_json::from_slice(spec_json).map_err(PodNetworkError::Spec)?;
    let path = spec
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_ref())
        .and_then(|ns| {
            ns.iter()
                .find(|n| n.typ() == oci_spec::runtime::LinuxNamespaceType::Network)
                .and_then(|n| n.path().clone())
        })
        .filter(|p| !p.as_os_str().is_empty());
    Ok((path, spec.hostname().clone().unwrap_or_default()))
}

/// The pod's network, from the namespace at `netns` to the guest. Kept in the [`crate::pod::Pod`]
/// until its VM is gone: dropping it removes the qdiscs (the TAP goes with QEMU).
#[derive(Debug)]
pub struct PodNetwork {
    opts: NetworkOptions,
    plan: NetworkPlan,
    netns: PathBuf,
    hostname: String,
}

impl PodNetwork {
    /// For sandbox `sandbox_id` whose first container's spec is `spec_json`: when the spec
    /// joins a network namespace, makes the TAP and the redirects there (span
    /// `network.prepare`); the VM's device is [`PodNetwork::vm`]. `None`: loopback only.
    pub fn prepare(sandbox_id: &str, spec_json: &[u8]) -> Result<Option<Self>, PodNetworkError> {
        let (Some(netns), hostname) = netns_path(spec_json)? else {
            return Ok(None);
        };
        let opts = NetworkOptions {
            mode: NetworkMode::Netns(netns.clone()),
            ..Default::default()
        };
        let plan = opts
            .validate()
            .and_then(|()| shoji_runtime::network::prepare(sandbox_id, &opts))
            .map_err(|source| PodNetworkError::Prepare {
                path: netns.clone(),
                source: Box::new(source),
            })?;
        Ok(Some(Self {
            opts,
            plan,
            netns,
            hostname,
        }))
    }

    pub fn vm(&self) -> shoji_runtime::network::VmNetwork {
        self.plan.vm.clone()
    }

    /// Tells the booted guest its side (span `network.setup`, the agent's `network.configure`
    /// below it). The containers' `/etc` files come from CRI's own mounts, not from here.
    pub async fn configure(&self, vm: &SandboxVm) -> Result<(), PodNetworkError> {
        shoji_runtime::network::setup(vm, &self.opts, &self.plan, &self.hostname)
            .await
            .map(|_files| ())
            .map_err(|source| PodNetworkError::Configure {
                path: self.netns.clone(),
                source: Box::new(source),
            })
    }
}

/// After a killed shim: removes what the shim made in the pod's network namespace that is still
/// there (normally the ingress qdisc on the veth; the TAP went with QEMU). The namespace named in
/// `bundle`'s spec may be gone already (containerd removes it when the pod stops).
pub fn clean_after_kill(bundle: &Path) {
    let Ok(spec) = std::fs::read(bundle.join("config.json")) else {
        return;
    };
    let Ok((Some(path), _)) = netns_path(&spec) else {
        return;
    };
    // A `/proc/PID/ns/net` path names the dead shim's PID, maybe reused by now: not ours.
    if path.starts_with("/proc") || !path.exists() {
        return;
    }
    if let Err(e) = shoji_runtime::network::netns::detach(&path) {
        log_line!(
            "shoji-shim: cannot clean up network namespace {}: {}",
            path.display(),
            shoji_runtime::error_chain(&e)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pod_netns_is_the_network_namespace_with_a_path() {
        let spec = |ns: &str| {
            format!(r#"{{"ociVersion":"1.2.0","linux":{{"namespaces":[{{"type":"pid"}}{ns}]}}}}"#)
        };
        let (p, _) =
            netns_path(spec(r#",{"type":"network","path":"/var/run/netns/cni-1"}"#).as_bytes())
                .expect("a spec");
        assert_eq!(p, Some(PathBuf::from("/var/run/netns/cni-1")));
        // A namespace of its own (ctr run), or none (host network): loopback only.
        for ns in [r#",{"type":"network"}"#, ""] {
            assert_eq!(netns_path(spec(ns).as_bytes()).expect("a spec").0, None);
        }
        assert!(netns_path(b"{").is_err());
    }
}
