//! vhost-net for the TAP of `netns:PATH` mode: the host kernel moves the virtio-net queues
//! instead of QEMU's userspace emulation, one copy and two context switches fewer per packet.
//! It is used only where it can work: with KVM (its queue notifications are KVM's ioeventfd and
//! irqfd; under TCG the emulation is not the bottleneck anyway) and where `/dev/vhost-net` opens
//! for reading and writing (the module may be absent, or the device kept from this user). Shoji
//! opens the device itself and hands QEMU the descriptor (`vhost=on,vhostfd=N`), so QEMU needs
//! no access to `/dev`; anything else falls back to QEMU's emulation, with the reason on the trace.
//! What opens is first asked for its features (`VHOST_GET_FEATURES`, which needs no owner): a
//! node at that path that is not vhost-net would make QEMU refuse to start the VM, since
//! `vhost=on` is a demand, not a wish.

use std::os::fd::{AsRawFd, OwnedFd};
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
        Ok(file) => match features(&file) {
            Ok(f) => VhostChoice {
                fd: Some(Arc::new(file.into())),
                reason: format!("{} opened (features {f:#x})", device.display()),
            },
            Err(e) => VhostChoice {
                fd: None,
                reason: format!(
                    "{} opened but is not vhost-net (VHOST_GET_FEATURES: {e}): QEMU emulates virtio-net",
                    device.display()
                ),
            },
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

// VHOST_GET_FEATURES, _IOR(VHOST_VIRTIO = 0xAF, 0x00, __u64), from <linux/vhost.h>.
nix::ioctl_read!(vhost_get_features, 0xAF, 0x00, u64);

/// The virtio features a vhost device offers; an error for anything that is not one.
fn features(device: &std::fs::File) -> nix::Result<u64> {
    let mut features = 0u64;
    // SAFETY: the descriptor is open for the call, and the kernel writes one u64 into
    // `features`, which lives across it.
    unsafe { vhost_get_features(device.as_raw_fd(), &mut features) }?;
    Ok(features)
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
    fn kvm_gets_the_device_only_when_it_opens_and_answers_as_vhost() {
        // /dev/null opens read-write but is no vhost device: the ioctl is refused (ENOTTY).
        let c = probe(Accel::Kvm, Path::new("/dev/null"));
        assert!(c.fd.is_none(), "{}", c.reason);
        assert!(
            c.reason.contains("/dev/null opened but is not vhost-net")
                && c.reason.contains("VHOST_GET_FEATURES"),
            "{}",
            c.reason
        );
        // A real device, where the host has one this test may open: features are reported.
        let real = probe(Accel::Kvm, Path::new(DEVICE));
        if real.fd.is_some() {
            assert!(real.reason.contains("features 0x"), "{}", real.reason);
        }
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
