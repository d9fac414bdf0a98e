//! The hypervisor behind a trait, so another VMM can follow without touching the lifecycle.
//! [`qemu::Qemu`] is the one implementation: QEMU's `microvm` machine.

pub mod accel;
pub mod qemu;

use std::path::PathBuf;

use crate::process::ProcessError;

#[derive(Debug, thiserror::Error)]
pub enum HypervisorError {
    #[error(transparent)]
    Process(#[from] ProcessError),
    #[error("cannot run {path} --version")]
    Version {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a VM is launched with. Paths are inside the sandbox directory except kernel/initrd.
#[derive(Debug, Clone)]
pub struct VmSpec {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
    pub vcpus: u32,
    pub memory_mib: u32,
    pub kernel_cmdline: String,
    pub vhost_vsock_socket: PathBuf,
    pub virtiofs_socket: PathBuf,
    pub virtiofs_tag: String,
    /// The guest's serial console: a Unix socket the runtime listens on and QEMU connects to,
    /// so that the runtime caps what reaches `console.log`.
    pub console_socket: PathBuf,
    pub accel: accel::AccelChoice,
}

/// A VMM that can start a VM from a [`VmSpec`].
pub trait Hypervisor {
    /// Human name, e.g. "qemu".
    fn name(&self) -> &'static str;
    /// Starts the VM; the returned guard kills it on drop.
    fn launch(&self, spec: &VmSpec) -> Result<crate::process::ChildGuard, HypervisorError>;
}
