//! `shoji env`: what Shoji found and chose, so a user can see why a run behaves as it does.

use std::path::PathBuf;

use serde::Serialize;

use crate::config::Config;
use crate::hypervisor::{accel, qemu::Qemu};
use crate::{helpers, sandbox};

#[derive(Debug, Serialize)]
pub struct Found {
    pub path: Option<PathBuf>,
    /// Version, or why it is missing.
    pub detail: String,
}

#[derive(Debug, Serialize)]
pub struct EnvReport {
    pub config_file: String,
    pub qemu: Found,
    pub accel: String,
    pub accel_reason: String,
    pub kernel: Found,
    pub initrd: Found,
    pub vhost_device_vsock: Found,
    pub virtiofsd: Found,
    pub guest_dir: PathBuf,
    pub sandbox_root: PathBuf,
}

fn file(path: PathBuf) -> Found {
    let detail = match std::fs::metadata(&path) {
        Ok(m) => format!("{} bytes", m.len()),
        Err(_) => "missing: run `shoji image build`".into(),
    };
    Found {
        path: Some(path),
        detail,
    }
}

pub fn report(config: &Config) -> EnvReport {
    let q = &config.hypervisor.qemu;
    let qemu = match Qemu::locate(q.path()) {
        Ok(qm) => Found {
            detail: qm.version().unwrap_or_else(|e| e.to_string()),
            path: Some(qm.path),
        },
        Err(e) => Found {
            path: None,
            detail: e.to_string(),
        },
    };
    let root = config
        .runtime
        .sandbox_root
        .clone()
        .unwrap_or_else(sandbox::default_root);
    let choice = accel::choose(q.accel(), &root);
    let guest_dir = shoji_image::guest_dir();
    let helper = |name: &'static str| match helpers::locate(name) {
        Ok(p) => Found {
            path: Some(p),
            detail: "found".into(),
        },
        Err(e) => Found {
            path: None,
            detail: e.to_string(),
        },
    };
    EnvReport {
        config_file: config.origin(),
        qemu,
        accel: choice.accel.as_str().into(),
        accel_reason: choice.reason,
        kernel: file(
            q.kernel
                .clone()
                .unwrap_or_else(|| guest_dir.join("vmlinux")),
        ),
        initrd: file(
            q.initrd
                .clone()
                .unwrap_or_else(|| guest_dir.join("initrd.img")),
        ),
        vhost_device_vsock: helper("vhost-device-vsock"),
        virtiofsd: helper("virtiofsd"),
        guest_dir,
        sandbox_root: root,
    }
}

impl std::fmt::Display for EnvReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let show = |f: &mut std::fmt::Formatter<'_>, name: &str, x: &Found| {
            let p = x
                .path
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_else(|| "-".into());
            writeln!(f, "{name:<20} {p}  ({})", x.detail)
        };
        writeln!(f, "{:<20} {}", "config", self.config_file)?;
        show(f, "qemu", &self.qemu)?;
        writeln!(
            f,
            "{:<20} {}  ({})",
            "accelerator", self.accel, self.accel_reason
        )?;
        show(f, "kernel", &self.kernel)?;
        show(f, "initrd", &self.initrd)?;
        show(f, "vhost-device-vsock", &self.vhost_device_vsock)?;
        show(f, "virtiofsd", &self.virtiofsd)?;
        writeln!(f, "{:<20} {}", "guest image dir", self.guest_dir.display())?;
        writeln!(f, "{:<20} {}", "sandbox root", self.sandbox_root.display())
    }
}
