//! The container's root filesystem and runtime spec, from an image, a bundle or a bare rootfs.

use std::path::{Path, PathBuf};

use super::{BootError, SandboxDir};
use crate::image;
use crate::spec::ProcessOptions;

/// Where the container's root filesystem comes from.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RootSource {
    /// OCI image layout directory, OCI archive or docker-save tarball.
    Image(PathBuf),
    /// runc-style bundle: config.json + rootfs.
    Bundle(PathBuf),
    /// A bare root filesystem directory.
    Rootfs(PathBuf),
}

impl RootSource {
    /// The path given, whatever its kind.
    pub fn path(&self) -> &Path {
        match self {
            Self::Image(p) | Self::Bundle(p) | Self::Rootfs(p) => p,
        }
    }
}

/// Unpacks an image into `rootfs` (scratch space in `work`) and builds the runtime spec.
pub fn unpack_image(
    path: &Path,
    work: &Path,
    rootfs: &Path,
    opts: &ProcessOptions,
) -> Result<oci_spec::runtime::Spec, BootError> {
    let cfg = image::unpack(path, work, rootfs)?;
    let _ = std::fs::remove_dir_all(work);
    Ok(crate::spec::from_image(&cfg, rootfs, opts)?)
}

/// Makes the sandbox directory's `rootfs/` for an image to be unpacked into, already served
/// through its `nosuid,nodev` mount ([`SandboxDir::share_rootfs`]): no moment where a setuid
/// file from the image is reachable without it. Returns the path to unpack into and serve.
pub fn image_rootfs(sb: &SandboxDir) -> Result<PathBuf, BootError> {
    let rootfs = sb.rootfs();
    std::fs::create_dir_all(&rootfs).map_err(|source| {
        BootError::Image(image::ImageError::Io {
            path: rootfs.clone(),
            source,
        })
    })?;
    Ok(sb.share_rootfs(&rootfs)?)
}

/// The spec and the root filesystem directory to serve for `source`: an image is unpacked into
/// the sandbox directory's `rootfs/`; a bundle's or a bare rootfs is bind-mounted there. Either
/// way the host reaches it only through a `nosuid,nodev` mount (when Shoji runs as root).
pub fn prepare_rootfs(
    source: &RootSource,
    sb: &SandboxDir,
    opts: &ProcessOptions,
) -> Result<(oci_spec::runtime::Spec, PathBuf), BootError> {
    let (spec, rootfs) = match source {
        RootSource::Image(path) => {
            let rootfs = image_rootfs(sb)?;
            let spec = unpack_image(path, &sb.path().join("image"), &rootfs, opts)?;
            (spec, rootfs)
        }
        RootSource::Bundle(dir) => {
            let (spec, rootfs) = crate::spec::from_bundle(dir, opts)?;
            (spec, sb.share_rootfs(&rootfs)?)
        }
        RootSource::Rootfs(dir) => {
            if !dir.is_dir() {
                return Err(BootError::Image(image::ImageError::NotFound {
                    path: dir.clone(),
                }));
            }
            (crate::spec::for_rootfs(dir, opts)?, sb.share_rootfs(dir)?)
        }
    };
    // A bundle's own mounts are checked here, before anything boots (the options' mounts were
    // checked when they were given).
    let root = sb.path().parent().unwrap_or(sb.path()).to_path_buf();
    crate::volumes::check(spec.mounts().as_deref().unwrap_or_default(), &[root])?;
    Ok((spec, rootfs))
}
