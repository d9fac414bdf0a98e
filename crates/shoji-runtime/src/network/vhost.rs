//! vhost-net for the TAP of `netns:PATH` mode: the host kernel moves the virtio-net queues
//! instead of QEMU's userspace emulation, one copy and two context switches fewer per packet.
//! It is used only where it can work: with KVM (its queue notifications are KVM's ioeventfd and
//! irqfd; under TCG the emulation is not the bottleneck anyway) and where `/dev/vhost-net` opens
//! for reading and writing (the module may be absent, or the device kept from this user). Shoji
//! opens the device itself and hands QEMU the descriptor (`vhost=on,vhostfd=N`), so QEMU needs
//! no access to `/dev`; anything else falls back to QEMU's emulation, with the reason on the trace.

use std::os::fd::OwnedFd;
use std::path::Path;
use std::sync::Arc;

use crate::hypervisor::accel::Accel;

/// The host's vhost-net device.
pub const DEVICE: &str = "/dev/vhost-net";

/// Whether the TAP gets vhost-net, and why.
#[derive(Debug, Clone)]
pub struct VhostChoice {
    /// The open device, for QEMU to inherit; `None`: QEMU's own virtio-net emulation.
    pub fd: Option<Arc<OwnedFd>>,
    pub reason: String,
}

/// Decides for a VM run with `accel`, opening `device` (normally [`DEVICE`]) when KVM is in use.
pub fn probe(accel: Accel, device: &Path) -> VhostChoice {
    if accel != Accel::Kvm {
        return VhostChoice {
            fd: None,
            reason: format!(
                "not used under {}: vhost-net needs KVM's ioeventfd and irqfd",
                accel.as_str()
            ),
        };
    }
    match std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(device)
    {
        Ok(file) => VhostChoice {
            fd: Some(Arc::new(file.into())),
            reason: format!("{} opened", device.display()),
        },
        Err(e) => VhostChoice {
            fd: None,
            reason: format!(
                "cannot open {} ({e}): QEMU emulates virtio-net (load the vhost_net module and give this user access to the device to use it)",
                device.display()
            ),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcg_never_gets_vhost_even_where_the_device_opens() {
        let c = probe(Accel::Tcg, Path::new("/dev/null"));
        assert!(c.fd.is_none());
        assert!(c.reason.contains("tcg"), "{}", c.reason);
    }

    #[test]
    fn kvm_gets_the_device_when_it_opens_and_the_reason_otherwise() {
        // /dev/null stands in for a device that opens read-write.
        let c = probe(Accel::Kvm, Path::new("/dev/null"));
        assert!(c.fd.is_some(), "{}", c.reason);
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("vhost-net");
        let c = probe(Accel::Kvm, &missing);
        assert!(c.fd.is_none());
        assert!(
            c.reason.contains(&missing.display().to_string()),
            "{}",
            c.reason
        );
        assert!(c.reason.contains("No such file"), "{}", c.reason);
    }
}
