//! Everything a boot needs from the host, resolved before anything is started: the hypervisor
//! the configuration names, the guest image and the vhost-user helpers.

use std::path::PathBuf;
use std::sync::Arc;

use super::BootError;
use crate::config::{Config, HypervisorKind};
use crate::helpers;
use crate::hypervisor::{qemu::Qemu, Hypervisor};

/// Everything a boot needs from the host, resolved before anything is started.
#[derive(Debug, Clone)]
pub struct Binaries {
    pub hypervisor: Arc<dyn Hypervisor>,
    pub kernel: PathBuf,
    /// Whether QEMU gives the guest ACPI tables ([`shoji_image::kernel_uses_acpi`]).
    pub kernel_uses_acpi: bool,
    pub initrd: PathBuf,
    pub vsock: PathBuf,
    pub virtiofsd: PathBuf,
}

impl Binaries {
    pub fn locate(config: &Config) -> Result<Self, BootError> {
        let hypervisor = locate_hypervisor(config)?;
        let (kernel, initrd) = guest_image(config)?;
        Ok(Self {
            hypervisor,
            kernel_uses_acpi: shoji_image::kernel_uses_acpi(&kernel),
            kernel,
            initrd,
            vsock: helpers::locate("vhost-device-vsock")?,
            virtiofsd: helpers::locate("virtiofsd")?,
        })
    }
}

/// The hypervisor `[hypervisor] kind` names, located on this host.
pub fn locate_hypervisor(config: &Config) -> Result<Arc<dyn Hypervisor>, BootError> {
    Ok(match config.hypervisor.kind {
        HypervisorKind::Qemu => Arc::new(Qemu::locate(config.hypervisor.qemu.path())?),
    })
}

/// Guest kernel and initrd: configured, else the image `shoji image build` made.
pub fn guest_image(config: &Config) -> Result<(PathBuf, PathBuf), BootError> {
    let q = &config.hypervisor.qemu;
    let dir = shoji_image::guest_dir();
    let kernel = q.kernel.clone().unwrap_or_else(|| dir.join("vmlinux"));
    let initrd = q.initrd.clone().unwrap_or_else(|| dir.join("initrd.img"));
    if !kernel.is_file() {
        return Err(BootError::GuestImage {
            what: "guest kernel",
            key: "kernel",
            path: kernel,
        });
    }
    if !initrd.is_file() {
        return Err(BootError::GuestImage {
            what: "guest initrd",
            key: "initrd",
            path: initrd,
        });
    }
    Ok((kernel, initrd))
}
