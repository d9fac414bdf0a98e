//! The container's root filesystem and runtime spec, from an image, a bundle or a bare rootfs.
//! As root an image's layers come from the image store (each unpacked once, shared) under an
//! overlay with a writable layer of the container's own (ADR 018); without root it is
//! unpacked into the sandbox directory, as no overlay can be mounted.

use std::path::{Path, PathBuf};

use shoji_images::{Image, Store};

use super::dir::SharedRootfs;
use super::{mounts, BootError, SandboxDir};
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

/// Told about each layer a run unpacks into the image store, for a spinner on a terminal:
/// `(n, total, layer)` before the `n`th layer (from 1) of `total`, `(0, total, layer)` once it
/// is done. Layers already in the store are not reported.
#[derive(Clone)]
pub struct UnpackProgress(pub std::sync::Arc<UnpackReport>);

/// What [`UnpackProgress`] calls: `(n, total, layer)`.
pub type UnpackReport = dyn Fn(usize, usize, &shoji_images::LayerBlob) + Send + Sync;

impl std::fmt::Debug for UnpackProgress {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("UnpackProgress")
    }
}

/// The image's layers from the store at `store` (unpacked there if missing, verified), under
/// an overlay mounted at container `container_id`'s root filesystem in the sandbox's share,
/// with the container's own writable layer; and the spec. Root only ([`mounts::can_mount`]).
pub fn image_from_store(
    path: &Path,
    store: &Path,
    sb: &SandboxDir,
    container_id: &str,
    opts: &ProcessOptions,
    progress: Option<&UnpackProgress>,
) -> Result<(oci_spec::runtime::Spec, SharedRootfs), BootError> {
    let work = sb.path().join("image");
    let img = Image::open(path, &work)?;
    let total = img.layers().len();
    let prepared = Store::open(store)?.prepare_reporting(&img, &mut |n, layer| {
        if let Some(p) = progress {
            (p.0)(n, total, layer)
        }
    })?;
    tracing::Span::current().record("image.layers.unpacked", prepared.unpacked);
    let rootfs = sb.mount_image_layers(container_id, &prepared.layers, prepared.lease)?;
    let spec = crate::spec::from_image(img.config(), &rootfs.host, opts)?;
    drop(img);
    let _ = std::fs::remove_dir_all(&work);
    Ok((spec, rootfs))
}

/// Keeps blob collection away while a rootless run unpacks the pulled image at `path`
/// (`<store>/oci:<reference>`); `None` for any other image.
fn hold_pulled_blobs(path: &Path, store: &Path) -> Result<Option<std::fs::File>, BootError> {
    let pulled = store.join("oci");
    let is_pulled = path
        .to_string_lossy()
        .strip_prefix(&*pulled.to_string_lossy())
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(':'));
    if !is_pulled {
        return Ok(None);
    }
    let store = Store::open(store)?;
    Ok(Some(shoji_images::tags::hold_blobs(&store)?))
}

/// The spec and container `container_id`'s root filesystem in the sandbox's share for
/// `source`: an image comes from the image store `store` under an overlay (as root; else it
/// is unpacked into the sandbox directory); a bundle's or a bare rootfs is bind-mounted there.
/// Either way the host reaches it only through a `nosuid,nodev` mount (when Shoji runs as
/// root).
pub fn prepare_rootfs(
    source: &RootSource,
    sb: &SandboxDir,
    container_id: &str,
    opts: &ProcessOptions,
    store: &Path,
    progress: Option<&UnpackProgress>,
) -> Result<(oci_spec::runtime::Spec, SharedRootfs), BootError> {
    let (mut spec, rootfs) = match source {
        RootSource::Image(path) if mounts::can_mount() => {
            image_from_store(path, store, sb, container_id, opts, progress)?
        }
        RootSource::Image(path) => {
            // The blobs of a pulled image stay until the unpack is done, whatever an `image
            // rm` does meanwhile (it drops the tag and leaves them to `prune`).
            let _blobs = hold_pulled_blobs(path, store)?;
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
    };
    // A bundle's own mounts are checked here, before anything boots (the options' mounts were
    // checked when they were given), and every bind volume staged in the container's
    // directory of the share. Neither the sandboxes' root nor the image store may be a volume
    // (a guest writing the store's layers would change every container of those images).
    let root = sb.path().parent().unwrap_or(sb.path()).to_path_buf();
    let forbidden = [root, store.to_path_buf()];
    crate::volumes::prepare_spec(&mut spec, &sb.shared().join(container_id), &forbidden, None)?;
    Ok((spec, rootfs))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Whether `locks/oci-gc` of `store` is held by someone (blob collection would skip).
    fn gc_held(store: &Path) -> bool {
        let f = std::fs::File::open(store.join("locks/oci-gc")).unwrap();
        nix::fcntl::Flock::lock(f, nix::fcntl::FlockArg::LockExclusiveNonblock).is_err()
    }

    #[test]
    fn a_pulled_image_holds_the_blobs_and_other_images_do_not() {
        let dir = tempfile::tempdir().unwrap();
        let store = dir.path().join("images");
        Store::open(&store).unwrap();
        let pulled = PathBuf::from(format!(
            "{}:127.0.0.1:5000/a/b:v1",
            store.join("oci").display()
        ));
        let held = hold_pulled_blobs(&pulled, &store).unwrap();
        assert!(held.is_some() && gc_held(&store));
        drop(held);
        assert!(!gc_held(&store));
        for other in [
            dir.path().join("layout"),
            PathBuf::from(format!("{}:v1", dir.path().join("layout").display())),
            PathBuf::from(format!("{}2:x", store.join("oci").display())),
        ] {
            assert!(
                hold_pulled_blobs(&other, &store).unwrap().is_none(),
                "{}",
                other.display()
            );
        }
    }
}
