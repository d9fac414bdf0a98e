//! Builds the guest image: a kernel and an initramfs whose `/init` is `shoji-agent`.
//!
//! The default kernel is Shoji's own ([`kbuild`], ADR 014): built from Debian's
//! `linux-source-6.1` with everything the guest needs built in, so the initramfs holds no
//! modules. The fallback (`--kernel debian`) is Debian's cloud kernel (`linux-image-cloud-amd64`),
//! fetched with `apt-get download` and unpacked with `dpkg -x`; its LZ4-compressed `vmlinuz` is
//! turned into the ELF `vmlinux` QEMU's microvm boots directly (PVH), and the modules the agent
//! needs (virtio-mmio, vsock, virtio-fs, virtio-net) are copied with their dependencies, read from each
//! module's `depends=` modinfo string because the package ships no `modules.dep` (ADR 003).

mod agent;
pub mod kbuild;
mod kernel;
mod modules;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

pub use agent::{default_agent, is_static_elf};
pub use modules::{resolve_order, AGENT_MODULES};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("guest {what} {path} does not exist; run `shoji image build`")]
    Missing { what: &'static str, path: PathBuf },
    #[error("the agent binary {path} does not exist; build it with scripts/build-agent.sh or pass --agent")]
    NoAgent { path: PathBuf },
    #[error("the agent binary {path} is dynamically linked, but /init runs with no libraries beside it; build the static agent with scripts/build-agent.sh")]
    NotStatic { path: PathBuf },
    #[error("{what} failed: {detail}")]
    Tool { what: String, detail: String },
    #[error("cannot {what} {path}")]
    Io {
        what: &'static str,
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{0}")]
    Kernel(String),
    #[error("cannot build Shoji's guest kernel")]
    KernelBuild(#[from] kbuild::KernelBuildError),
}

/// Where `shoji image build` puts the guest image: `$SHOJI_GUEST_DIR`, else
/// `$XDG_DATA_HOME/shoji/guest`, else `~/.local/share/shoji/guest`.
pub fn guest_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("SHOJI_GUEST_DIR") {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_DATA_HOME") {
        return PathBuf::from(d).join("shoji/guest");
    }
    let home = std::env::var_os("HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/root"));
    home.join(".local/share/shoji/guest")
}

/// A built guest image.
#[derive(Debug, Clone)]
pub struct GuestImage {
    pub kernel: PathBuf,
    pub initrd: PathBuf,
}

impl GuestImage {
    /// The image in `dir`, or an error naming the missing file.
    pub fn find(dir: &Path) -> Result<Self, ImageError> {
        let kernel = dir.join("vmlinux");
        let initrd = dir.join("initrd.img");
        for (what, p) in [("kernel", &kernel), ("initrd", &initrd)] {
            if !p.is_file() {
                return Err(ImageError::Missing {
                    what,
                    path: p.clone(),
                });
            }
        }
        Ok(Self { kernel, initrd })
    }
}

/// Whether the kernel at `kernel` finds its devices through ACPI tables. Shoji's kernel has no
/// ACPI (ADR 014): QEMU must then list the virtio-mmio devices on the kernel command line, which
/// it does only for a machine without ACPI. Debian's cloud kernel is the opposite: no
/// command-line devices and no MP table parser, only ACPI. Told by the `manifest.json` that
/// `shoji image build` writes beside the kernel; a kernel without one (configured by path) is
/// taken to be a general-purpose kernel like Debian's.
pub fn kernel_uses_acpi(kernel: &Path) -> bool {
    let Some(manifest) = kernel.parent().map(|d| d.join("manifest.json")) else {
        return true;
    };
    std::fs::read(manifest)
        .ok()
        .and_then(|b| serde_json::from_slice::<Manifest>(&b).ok())
        .is_none_or(|m| m.kernel != KernelChoice::Shoji.as_str())
}

/// The initramfs is a newc cpio, not compressed (see `modules::write_initramfs`).
pub const INITRAMFS_FORMAT: &str = "newc";

/// Which kernel the image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum KernelChoice {
    /// Shoji's own, built from Debian's kernel source (ADR 014).
    #[default]
    Shoji,
    /// Debian's cloud kernel and its modules (ADR 003).
    Debian,
}

impl KernelChoice {
    pub fn as_str(self) -> &'static str {
        match self {
            KernelChoice::Shoji => "shoji",
            KernelChoice::Debian => "debian",
        }
    }
}

/// What `build` records next to the image, to know when it is up to date.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// `shoji` or `debian` ([`KernelChoice`]); absent in older manifests (Debian's kernel).
    #[serde(default)]
    pub kernel: String,
    /// `uname -r` in the guest, e.g. `6.1.192-shoji`.
    #[serde(default)]
    pub kernel_release: String,
    /// The Debian kernel package, or for Shoji's kernel the source package, its version and the
    /// build's cache key.
    pub kernel_package: String,
    pub agent_sha256: String,
    pub modules: Vec<String>,
    /// The modules asked for ([`AGENT_MODULES`], before dependencies): an image built for
    /// another list is rebuilt. Absent in older manifests, which are therefore rebuilt once.
    #[serde(default)]
    pub wanted_modules: Vec<String>,
    /// How the initramfs is packed ([`INITRAMFS_FORMAT`]); older images (gzip) are rebuilt.
    #[serde(default)]
    pub initramfs_format: String,
    pub built_unix: u64,
}

#[derive(Debug, Clone)]
pub struct BuildOptions {
    pub out: PathBuf,
    pub agent: PathBuf,
    pub kernel: KernelChoice,
    /// With [`KernelChoice::Debian`]: e.g. `linux-image-6.1.0-56-cloud-amd64`; default: what
    /// `linux-image-cloud-amd64` depends on.
    pub kernel_package: Option<String>,
    /// Where Shoji's kernel builds are cached ([`kbuild::cache_root`]).
    pub kernel_cache: PathBuf,
    /// Rebuild the image even if it is up to date.
    pub force: bool,
    /// Build Shoji's kernel again even if it is cached.
    pub rebuild_kernel: bool,
}

pub(crate) fn io(what: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> ImageError {
    let path = path.to_path_buf();
    move |source| ImageError::Io { what, path, source }
}

pub(crate) fn run_tool(cmd: &mut Command) -> Result<Vec<u8>, ImageError> {
    let what = format!("{cmd:?}");
    let out = cmd.output().map_err(|e| ImageError::Tool {
        what: what.clone(),
        detail: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(ImageError::Tool {
            what,
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(out.stdout)
}

fn sha256_file(path: &Path) -> Result<String, ImageError> {
    let data = std::fs::read(path).map_err(io("read", path))?;
    Ok(hex::encode(Sha256::digest(&data)))
}

/// Builds (or confirms up to date) the image in `opts.out`. `progress` receives one line per step.
pub fn build(
    opts: &BuildOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<GuestImage, ImageError> {
    if !opts.agent.is_file() {
        return Err(ImageError::NoAgent {
            path: opts.agent.clone(),
        });
    }
    if !is_static_elf(&opts.agent)? {
        return Err(ImageError::NotStatic {
            path: opts.agent.clone(),
        });
    }
    std::fs::create_dir_all(&opts.out).map_err(io("create", &opts.out))?;
    let cache = opts.out.join("cache");
    std::fs::create_dir_all(&cache).map_err(io("create", &cache))?;

    let (package, wanted): (String, &[&str]) = match opts.kernel {
        KernelChoice::Shoji => {
            let version = kbuild::source_version()?;
            let key = kbuild::cache_key(&version, &kbuild::toolchain()?);
            (format!("{} {version} {key}", kbuild::SOURCE_PACKAGE), &[])
        }
        KernelChoice::Debian => (
            match &opts.kernel_package {
                Some(p) => p.clone(),
                None => kernel::resolve_package()?,
            },
            AGENT_MODULES,
        ),
    };
    let agent_sha = sha256_file(&opts.agent)?;
    let manifest_path = opts.out.join("manifest.json");
    let old: Option<Manifest> = std::fs::read(&manifest_path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    if !opts.force && !opts.rebuild_kernel {
        if let (Some(m), Ok(img)) = (&old, GuestImage::find(&opts.out)) {
            if m.kernel == opts.kernel.as_str()
                && m.kernel_package == package
                && m.agent_sha256 == agent_sha
                && m.wanted_modules == wanted
                && m.initramfs_format == INITRAMFS_FORMAT
            {
                progress(&format!(
                    "guest image is up to date ({} kernel {}, agent {})",
                    m.kernel,
                    m.kernel_release,
                    &agent_sha[..12]
                ));
                return Ok(img);
            }
        }
    }

    let vmlinux = opts.out.join("vmlinux");
    let (release, order) = match opts.kernel {
        KernelChoice::Shoji => {
            let k = kbuild::build_kernel(&opts.kernel_cache, opts.rebuild_kernel, progress)?;
            let tmp = vmlinux.with_extension("tmp");
            std::fs::copy(&k.vmlinux, &tmp).map_err(io("copy the kernel to", &tmp))?;
            std::fs::rename(&tmp, &vmlinux).map_err(io("rename", &vmlinux))?;
            progress(&format!(
                "kernel {} (Shoji's, no modules): {}",
                k.release,
                vmlinux.display()
            ));
            (k.release, Vec::new())
        }
        KernelChoice::Debian => {
            let tree = kernel::fetch_and_extract(&package, &cache, progress)?;
            kernel::extract_vmlinux(&tree, &vmlinux, progress)?;
            let modules_dir = kernel::modules_dir(&tree)?;
            let order = resolve_order(&modules_dir, AGENT_MODULES)?;
            progress(&format!(
                "modules (dependencies first): {}",
                order
                    .iter()
                    .map(|(n, _)| n.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ));
            let release = modules_dir
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            (release, order)
        }
    };

    let initrd = opts.out.join("initrd.img");
    modules::write_initramfs(&opts.agent, &order, &cache.join("initramfs"), &initrd)?;
    let size = std::fs::metadata(&initrd).map(|m| m.len()).unwrap_or(0);
    progress(&format!(
        "initramfs {} ({} KiB, {} modules)",
        initrd.display(),
        size / 1024,
        order.len()
    ));

    let manifest = Manifest {
        kernel: opts.kernel.as_str().into(),
        kernel_release: release,
        kernel_package: package,
        agent_sha256: agent_sha,
        modules: order.iter().map(|(n, _)| n.clone()).collect(),
        wanted_modules: wanted.iter().map(|m| m.to_string()).collect(),
        initramfs_format: INITRAMFS_FORMAT.into(),
        built_unix: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0),
    };
    let text =
        serde_json::to_vec_pretty(&manifest).map_err(|e| ImageError::Kernel(e.to_string()))?;
    std::fs::write(&manifest_path, text).map_err(io("write", &manifest_path))?;
    GuestImage::find(&opts.out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(kernel: &str) -> Manifest {
        Manifest {
            kernel: kernel.into(),
            kernel_release: String::new(),
            kernel_package: String::new(),
            agent_sha256: String::new(),
            modules: Vec::new(),
            wanted_modules: Vec::new(),
            initramfs_format: INITRAMFS_FORMAT.into(),
            built_unix: 0,
        }
    }

    #[test]
    fn only_shojis_kernel_is_booted_without_acpi() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kernel = dir.path().join("vmlinux");
        // No manifest beside it: a kernel configured by path, taken to be like Debian's.
        assert!(kernel_uses_acpi(&kernel));
        let write = |m: &Manifest| {
            std::fs::write(
                dir.path().join("manifest.json"),
                serde_json::to_vec(m).expect("manifest serialises"),
            )
            .expect("write manifest");
        };
        write(&manifest("debian"));
        assert!(kernel_uses_acpi(&kernel));
        write(&manifest("shoji"));
        assert!(!kernel_uses_acpi(&kernel));
        std::fs::write(dir.path().join("manifest.json"), b"not json").expect("write");
        assert!(kernel_uses_acpi(&kernel));
    }
}
