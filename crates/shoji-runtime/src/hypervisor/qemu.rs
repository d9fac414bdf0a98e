//! QEMU `microvm` (Debian's qemu-system-x86): PVH boot of an ELF vmlinux, virtio-mmio devices,
//! vhost-user vsock and virtio-fs, memory in a shared memfd (vhost-user needs it shared).

use std::path::{Path, PathBuf};

use tokio::process::Command;

use super::accel::Accel;
use super::{Hypervisor, HypervisorError, VmSpec};
use crate::process::{find_binary, ChildGuard, ProcessError};

#[derive(Debug, Clone)]
pub struct Qemu {
    pub path: PathBuf,
}

impl Qemu {
    /// Resolves the configured path (absolute or a name on PATH).
    pub fn locate(configured: &Path) -> Result<Self, ProcessError> {
        if configured.is_absolute() {
            if !configured.is_file() {
                return Err(ProcessError::Missing {
                    what: "QEMU",
                    path: configured.to_path_buf(),
                    hint: "install Debian's qemu-system-x86 or set [hypervisor.qemu] path",
                });
            }
            return Ok(Self {
                path: configured.to_path_buf(),
            });
        }
        find_binary(&configured.to_string_lossy())
            .map(|path| Self { path })
            .ok_or_else(|| ProcessError::NotFound {
                what: "QEMU",
                name: configured.display().to_string(),
                hint: "install Debian's qemu-system-x86 or set [hypervisor.qemu] path",
            })
    }

    /// First line of `qemu --version`.
    pub fn version(&self) -> Result<String, HypervisorError> {
        let out = std::process::Command::new(&self.path)
            .arg("--version")
            .output()
            .map_err(|source| HypervisorError::Version {
                path: self.path.clone(),
                source,
            })?;
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .next()
            .unwrap_or("")
            .to_string())
    }

    /// The full argument list for `spec` (public for tests and `shoji env`).
    pub fn args(spec: &VmSpec) -> Vec<String> {
        let mem = spec.memory_mib;
        let (accel, cpu) = match spec.accel.accel {
            Accel::Kvm => ("kvm", "host"),
            Accel::Tcg => ("tcg", "max"),
        };
        // Without ACPI tables QEMU appends `virtio_mmio.device=...` for each device to the
        // kernel command line; with them it describes the devices only in the tables.
        let acpi = if spec.acpi { "on" } else { "off" };
        let mut a: Vec<String> = vec![
            "-M".into(),
            format!("microvm,accel={accel},memory-backend=mem,isa-serial=on,rtc=on,acpi={acpi}"),
            "-cpu".into(),
            cpu.into(),
            "-smp".into(),
            spec.vcpus.to_string(),
            "-m".into(),
            format!("{mem}M"),
            "-object".into(),
            format!("memory-backend-memfd,id=mem,size={mem}M,share=on"),
            "-nodefaults".into(),
            "-no-user-config".into(),
            "-display".into(),
            "none".into(),
            "-monitor".into(),
            "none".into(),
            "-chardev".into(),
            format!("socket,id=con,path={}", spec.console_socket.display()),
            "-serial".into(),
            "chardev:con".into(),
            "-chardev".into(),
            format!("socket,id=vh,path={}", spec.vhost_vsock_socket.display()),
            "-device".into(),
            "vhost-user-vsock-device,chardev=vh".into(),
            "-chardev".into(),
            format!("socket,id=fs,path={}", spec.virtiofs_socket.display()),
            "-device".into(),
            format!("vhost-user-fs-device,chardev=fs,tag={}", spec.virtiofs_tag),
            "-kernel".into(),
            spec.kernel.display().to_string(),
            "-initrd".into(),
            spec.initrd.display().to_string(),
            "-append".into(),
            spec.kernel_cmdline.clone(),
            "-no-reboot".into(),
        ];
        a.extend(crate::network::NetworkPlan::qemu_args(&spec.network));
        a.shrink_to_fit();
        a
    }
}

impl Hypervisor for Qemu {
    fn name(&self) -> &'static str {
        "qemu"
    }

    fn launch(&self, spec: &VmSpec) -> Result<ChildGuard, HypervisorError> {
        let _span = tracing::info_span!("qemu.launch", source = "hypervisor", subsystem = "hypervisor", qemu.path = %self.path.display()).entered();
        let mut cmd = Command::new(&self.path);
        cmd.args(Self::args(spec))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        let inherited = spec.network.inherited_fds();
        if !inherited.is_empty() {
            // QEMU is told the same numbers (`-netdev tap,fd=N,vhostfd=M`): only close-on-exec
            // is cleared.
            // SAFETY: runs in the forked child before exec; fcntl is async-signal-safe and
            // touches only the fd numbers moved into the closure, which the parent keeps open
            // (the Arcs in the spec) until the child has exec'd.
            unsafe {
                cmd.pre_exec(move || {
                    for &raw in &inherited {
                        if libc::fcntl(raw, libc::F_SETFD, 0) < 0 {
                            return Err(std::io::Error::last_os_error());
                        }
                    }
                    Ok(())
                });
            }
        }
        Ok(ChildGuard::spawn("QEMU", cmd)?)
    }
}
