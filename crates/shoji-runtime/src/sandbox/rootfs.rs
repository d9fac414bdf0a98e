//! The container's root filesystem and runtime spec, from an image, a bundle or a bare rootfs.

use std::path::{Path, PathBuf};

use super::dir::SharedRootfs;
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

/// Makes container `container_id`'s root filesystem directory in the sandbox's share, for an
/// image to be unpacked into, already served through its `nosuid,nodev` mount
/// ([`SandboxDir::share_rootfs`]): no moment where a setuid file from the image is reachable
/// without it. Its `host` is the path to unpack into.
pub fn image_rootfs(sb: &SandboxDir, container_id: &str) -> Result<SharedRootfs, BootError> {
    if !super::mounts::can_mount() {
        // No share without root: the rootfs is served as it is, from the sandbox directory.
        let rootfs = sb.path().join("rootfs");
        std::fs::create_dir_all(&rootfs).map_err(|source| {
            BootError::Image(image::ImageError::Io {
                path: rootfs.clone(),
                source,
            })
        })?;
        return Ok(sb.share_rootfs(container_id, &rootfs)?);
    }
    let rootfs = sb.container_rootfs(container_id);
    // The mount point is made by share_rootfs; the image is unpacked into the mount.
    Ok(sb.share_rootfs(container_id, &rootfs)?)
}

/// The spec and container `container_id`'s root filesystem in the sandbox's share for
/// `source`: an image is unpacked into it; a bundle's or a bare rootfs is bind-mounted there.
/// Either way the host reaches it only through a `nosuid,nodev` mount (when Shoji runs as
/// root).
pub fn prepare_rootfs(
    source: &RootSource,
    sb: &SandboxDir,
    container_id: &str,
    opts: &ProcessOptions,
) -> Result<(oci_spec::runtime::Spec, SharedRootfs), BootError> {
    Ok(match source {
        RootSource::Image(path) => {
            let rootfs = image_rootfs(sb, container_id)?;
            let spec = unpack_image(path, &sb.path().join("image"), &rootfs.host, opts)?;
            (spec, rootfs)
        }
        RootSource::Bundle(dir) => {
            let (spec, rootfs) = crate::spec::from_bundle(dir, opts)?;
            (spec, sb.share_rootfs(container_id, &rootfs)?)
        }
        RootSource::Rootfs(dir) => {
            if !dir.is_dir() {
                return Err(BootError::Image(image::ImageError::NotFound {
                    path: dir.clone(),
                }));
            }
            (
                crate::spec::for_rootfs(dir, opts)?,
                sb.share_rootfs(container_id, dir)?,
            )
        }
    })
}
