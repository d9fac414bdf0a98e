//! What PID 1 does before it can serve: console, the kernel's virtual filesystems, the kernel
//! modules the image builder listed, and the record of when each boot phase happened.

use std::ffi::CString;
use std::os::fd::AsRawFd;
use std::time::{SystemTime, UNIX_EPOCH};

use nix::mount::{mount, MsFlags};

pub fn now_unix_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Wall-clock time the kernel started: now minus CLOCK_BOOTTIME.
pub fn kernel_entered_ns() -> u64 {
    let boot = nix::time::clock_gettime(nix::time::ClockId::CLOCK_BOOTTIME)
        .map(|t| t.tv_sec() as u64 * 1_000_000_000 + t.tv_nsec() as u64)
        .unwrap_or(0);
    now_unix_ns().saturating_sub(boot)
}

/// Mounts the virtual filesystems; failures are logged, not fatal (a missing /dev/shm must not
/// stop the agent from reporting what went wrong).
pub fn mount_basics() {
    let m = |src: &str, dst: &str, fs: &str, flags: MsFlags, data: Option<&str>| {
        let _ = std::fs::create_dir_all(dst);
        if let Err(e) = mount(Some(src), dst, Some(fs), flags, data) {
            if e != nix::errno::Errno::EBUSY {
                eprintln!("shoji-agent: mount {fs} on {dst}: {e}");
            }
        }
    };
    let nosuid = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC;
    m("proc", "/proc", "proc", nosuid, None);
    m("sysfs", "/sys", "sysfs", nosuid, None);
    m(
        "devtmpfs",
        "/dev",
        "devtmpfs",
        MsFlags::MS_NOSUID,
        Some("mode=0755"),
    );
    m(
        "devpts",
        "/dev/pts",
        "devpts",
        MsFlags::MS_NOSUID | MsFlags::MS_NOEXEC,
        Some("newinstance,ptmxmode=0666,mode=0620"),
    );
    m(
        "shm",
        "/dev/shm",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    m(
        "tmpfs",
        "/tmp",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=1777"),
    );
    m(
        "tmpfs",
        "/run",
        "tmpfs",
        MsFlags::MS_NOSUID | MsFlags::MS_NODEV,
        Some("mode=0755"),
    );
    m("cgroup2", "/sys/fs/cgroup", "cgroup2", nosuid, None);
    // Every controller the guest kernel has (Shoji's fragments ask for these five), for the
    // containers' cgroups: their limits and the statistics containerd's `metrics` reads. One
    // write each, so that a kernel without one of them still gets the others.
    for controller in ["cpu", "cpuset", "io", "memory", "pids"] {
        let _ = std::fs::write(
            "/sys/fs/cgroup/cgroup.subtree_control",
            format!("+{controller}"),
        );
    }
}

/// The initramfs has no /dev/console node, so the kernel could not give PID 1 a console; take it
/// from devtmpfs now.
pub fn open_console() {
    if let Ok(f) = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/console")
    {
        for fd in 0..3 {
            // SAFETY: dup2 onto 0..2 replaces (and closes) whatever they were; `f` stays open.
            unsafe { libc::dup2(f.as_raw_fd(), fd) };
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ModuleError {
    #[error("opening module {path}")]
    Open {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error(
        "loading {name}: this kernel has no module support, but the initramfs carries modules: \
         the kernel and initrd come from different guest images (rebuild with `shoji image \
         build`, or configure both)"
    )]
    NoModuleSupport { name: String },
    #[error("loading module {name}")]
    Load {
        name: String,
        #[source]
        source: std::io::Error,
    },
}

/// Loads `/lib/modules/shoji/<name>` for each line of `load-order`, dependencies first.
///
/// Which modules there are is decided when the image is built, for the kernel it packs: Debian's
/// cloud kernel gets the virtio, vsock, virtio-fs and virtio-net modules, Shoji's kernel (built
/// in, no module support) none and no `load-order` at all. A kernel without module support
/// given modules means a kernel and an initramfs from different images: said so, not guessed
/// around.
pub fn load_modules() -> Result<usize, ModuleError> {
    let dir = "/lib/modules/shoji";
    let order = match std::fs::read_to_string(format!("{dir}/load-order")) {
        Ok(o) => o,
        Err(_) => return Ok(0),
    };
    let mut n = 0;
    for name in order.lines().map(str::trim).filter(|l| !l.is_empty()) {
        let path = format!("{dir}/{name}");
        let f = std::fs::File::open(&path).map_err(|source| ModuleError::Open {
            path: path.clone(),
            source,
        })?;
        let params = CString::default();
        // SAFETY: finit_module reads the module from a valid open fd; `params` is a valid
        // NUL-terminated string that outlives the call.
        let rc =
            unsafe { libc::syscall(libc::SYS_finit_module, f.as_raw_fd(), params.as_ptr(), 0) };
        if rc != 0 {
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EEXIST) => {}
                Some(libc::ENOSYS) => {
                    return Err(ModuleError::NoModuleSupport { name: name.into() })
                }
                _ => {
                    return Err(ModuleError::Load {
                        name: name.into(),
                        source: err,
                    })
                }
            }
        }
        n += 1;
    }
    Ok(n)
}

/// `shoji.*` keys from the kernel command line.
#[derive(Debug, Default, Clone)]
pub struct BootParams {
    pub sandbox_id: String,
    pub trace: bool,
    pub traceparent: Option<String>,
    pub log: String,
    pub launch_ns: u64,
    /// Which of the agent's spans it exports (`shoji.trace_level`; absent or not a level:
    /// `debug`, every span, as before levels existed).
    pub trace_level: shoji_protocols::TraceLevel,
}

pub fn parse_cmdline(cmdline: &str) -> BootParams {
    let mut p = BootParams {
        log: "info".into(),
        ..Default::default()
    };
    for word in cmdline.split_whitespace() {
        let Some((k, v)) = word.split_once('=') else {
            continue;
        };
        match k {
            "shoji.sandbox_id" => p.sandbox_id = v.into(),
            "shoji.trace" => p.trace = v == "1",
            "shoji.traceparent" => p.traceparent = Some(v.into()),
            "shoji.log" => p.log = v.into(),
            "shoji.launch_ns" => p.launch_ns = v.parse().unwrap_or(0),
            shoji_protocols::TRACE_LEVEL_CMDLINE_KEY => {
                p.trace_level = v.parse().unwrap_or_default()
            }
            _ => {}
        }
    }
    p
}

/// Powers the VM off: QEMU runs with -no-reboot, so a reboot request ends it.
pub fn power_off() -> ! {
    nix::unistd::sync();
    let _ = nix::sys::reboot::reboot(nix::sys::reboot::RebootMode::RB_AUTOBOOT);
    // Only reachable when not PID 1 (e.g. in a test): exit instead.
    std::process::exit(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cmdline_keys() {
        let p = parse_cmdline("console=ttyS0 shoji.sandbox_id=ab12 shoji.trace=1 shoji.traceparent=00-aa-bb-01 shoji.launch_ns=42 quiet");
        assert_eq!(p.sandbox_id, "ab12");
        assert!(p.trace);
        assert_eq!(p.traceparent.as_deref(), Some("00-aa-bb-01"));
        assert_eq!(p.launch_ns, 42);
        assert_eq!(p.log, "info");
        assert_eq!(p.trace_level, shoji_protocols::TraceLevel::Debug);
        let p = parse_cmdline("shoji.trace=1 shoji.trace_level=lifecycle");
        assert_eq!(p.trace_level, shoji_protocols::TraceLevel::Lifecycle);
    }
}
