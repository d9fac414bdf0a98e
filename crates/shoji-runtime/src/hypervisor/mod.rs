//! The hypervisor behind a trait, so another VMM can follow without touching the lifecycle: the
//! sandbox holds a `dyn` [`Hypervisor`] chosen by `[hypervisor] kind`
//! ([`crate::sandbox::binaries::locate_hypervisor`]). [`qemu::Qemu`] is the one implementation:
//! QEMU's `microvm` machine.

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
    pub network: crate::network::VmNetwork,
}

/// A VMM that can start a VM from a [`VmSpec`].
pub trait Hypervisor: std::fmt::Debug + Send + Sync {
    /// Human name, e.g. "qemu".
    fn name(&self) -> &'static str;
    /// Starts the VM; the returned guard kills it on drop. Records its own span (e.g.
    /// `qemu.launch`) under the current one.
    fn launch(&self, spec: &VmSpec) -> Result<crate::process::ChildGuard, HypervisorError>;
}

/// Host TSC frequency in kHz, for `tsc_early_khz=` (see ADR 005: without it about one TCG boot
/// in six hung calibrating the TSC against the PIT on a busy 2-core host).
pub fn host_tsc_khz() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    let mhz: f64 = info
        .lines()
        .find(|l| l.starts_with("cpu MHz"))?
        .split(':')
        .nth(1)?
        .trim()
        .parse()
        .ok()?;
    Some((mhz * 1000.0) as u64).filter(|k| *k > 0)
}
