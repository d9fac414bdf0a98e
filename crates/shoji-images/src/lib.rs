//! OCI images on the host: read layouts/archives, verify digests, unpack confined to the root.
//!
//! An image is an OCI image-layout directory, an OCI archive (a tar of one) or a `docker save`
//! archive, plain or gzip-compressed. [`Image::open`] reads its manifests ([`layout`]; archive
//! members in place, regular files only: [`archive`]), verifying each blob against its digest.
//! [`Image::unpack`] streams every layer through two hashes (the blob's digest, then the
//! uncompressed tar's `diff_id` from the configuration) into [`apply::apply_layer`], which
//! resolves every path inside the root directory with `openat2(RESOLVE_IN_ROOT)` ([`root`]).
//! A layer that does not match its digests is reported once it has been read: the caller must
//! then discard the root (the runtime unpacks into a sandbox's own directory, removed on error).

pub mod apply;
pub mod archive;
pub mod credentials;
pub mod digest;
pub mod layout;
pub mod manifests;
pub mod pull;
pub mod root;
pub mod store;
pub mod tags;

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use oci_spec::image::ImageConfiguration;

pub use apply::{ApplyError, ApplyOptions, LayerStats};
pub use digest::{Digest, DigestError};
pub use layout::{LayerBlob, LayoutError};
pub use root::{RelPath, Root};
pub use store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read image {path}")]
    Layout {
        path: PathBuf,
        #[source]
        source: LayoutError,
    },
    #[error("cannot open root directory {path}")]
    Root {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("cannot read layer {layer} of image {path}")]
    LayerRead {
        path: PathBuf,
        layer: String,
        #[source]
        source: io::Error,
    },
    #[error(
        "layer {layer} of image {path} is {compression}-compressed, which is not supported \
         (gzip and uncompressed layers are)"
    )]
    Compression {
        path: PathBuf,
        layer: String,
        compression: &'static str,
    },
    #[error("cannot apply layer {layer} of image {path}")]
    Apply {
        path: PathBuf,
        layer: String,
        #[source]
        source: ApplyError,
    },
    #[error("refusing image {path}: layer {layer} was tampered with or corrupted")]
    Verify {
        path: PathBuf,
        layer: String,
        #[source]
        source: Box<DigestError>,
    },
}

/// Why [`open_regular`] refused a path.
#[derive(Debug)]
pub(crate) enum OpenRegularError {
    NotRegular,
    Io(io::Error),
}

/// Opens `path` for reading only if it is a regular file (a FIFO is not waited on).
pub(crate) fn open_regular(path: &Path) -> Result<File, OpenRegularError> {
    let fd = rustix::fs::open(
        path,
        rustix::fs::OFlags::RDONLY
            | rustix::fs::OFlags::CLOEXEC
            | rustix::fs::OFlags::NONBLOCK
            | rustix::fs::OFlags::NOCTTY,
        rustix::fs::Mode::empty(),
    )
    .map_err(|e| OpenRegularError::Io(e.into()))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| OpenRegularError::Io(e.into()))?;
    if rustix::fs::FileType::from_raw_mode(st.st_mode) != rustix::fs::FileType::RegularFile {
        return Err(OpenRegularError::NotRegular);
    }
    Ok(File::from(fd))
}

/// Splits `DIR:TAG` (or `ARCHIVE:TAG`) into the path and the tag. A path that exists is taken
/// whole, `:` and all; otherwise the longest part before a `:` that exists is the path and the
/// rest the tag. `None` when no such path exists (a registry reference, or a typo).
pub fn split_tag(arg: &Path) -> Option<(PathBuf, Option<String>)> {
    if std::fs::symlink_metadata(arg).is_ok() {
        return Some((arg.to_path_buf(), None));
    }
    let s = arg.to_str()?;
    s.rmatch_indices(':').find_map(|(i, _)| {
        let (dir, tag) = (&s[..i], &s[i + 1..]);
        (!dir.is_empty() && !tag.is_empty() && std::fs::symlink_metadata(dir).is_ok())
            .then(|| (PathBuf::from(dir), Some(tag.to_string())))
    })
}

/// An opened image: its source, configuration and layers, manifests verified.
pub struct Image {
    /// As given (`DIR:TAG` included), for messages and the store's record.
    path: PathBuf,
    /// The layout directory or archive, and the tag picked in it.
    layout: PathBuf,
    tag: Option<String>,
    source: layout::Source,
    config: ImageConfiguration,
    config_digest: Digest,
    layers: Vec<LayerBlob>,
}

impl Image {
    /// Opens `path` (directory or archive, `:TAG` after it to pick a tagged entry: see
    /// [`split_tag`]); `scratch` holds a decompressed copy of a gzip archive (an unnamed file,
    /// gone when the image is dropped).
    pub fn open(path: &Path, scratch: &Path) -> Result<Self, ImageError> {
        let Some((layout, tag)) = split_tag(path) else {
            return Err(ImageError::NotFound {
                path: path.to_path_buf(),
            });
        };
        let layout_err = |source| ImageError::Layout {
            path: path.to_path_buf(),
            source,
        };
        let source = layout::Source::open(&layout, scratch).map_err(layout_err)?;
        let r = source.resolve(tag.as_deref()).map_err(layout_err)?;
        Ok(Self {
            path: path.to_path_buf(),
            layout,
            tag,
            source,
            config: r.config,
            config_digest: r.config_digest,
            layers: r.layers,
        })
    }

    /// The layout directory or archive, without the tag.
    pub fn layout(&self) -> &Path {
        &self.layout
    }

    /// The tag picked in the layout, if one was given.
    pub fn tag(&self) -> Option<&str> {
        self.tag.as_deref()
    }

    pub fn config(&self) -> &ImageConfiguration {
        &self.config
    }

    /// The configuration's digest: the image's identity.
    pub fn config_digest(&self) -> &Digest {
        &self.config_digest
    }

    pub fn layers(&self) -> &[LayerBlob] {
        &self.layers
    }

    /// Applies every layer, in order, onto the directory `rootfs` (created if missing).
    pub fn unpack(&self, rootfs: &Path) -> Result<LayerStats, ImageError> {
        std::fs::create_dir_all(rootfs).map_err(|source| ImageError::Io {
            path: rootfs.to_path_buf(),
            source,
        })?;
        let root = Root::open(rootfs).map_err(|source| ImageError::Root {
            path: rootfs.to_path_buf(),
            source,
        })?;
        let mut total = LayerStats::default();
        for layer in &self.layers {
            let s = self.apply(layer, &root, ApplyOptions::default())?;
            total.entries += s.entries;
            total.bytes += s.bytes;
            total.whiteouts += s.whiteouts;
        }
        Ok(total)
    }

    /// Applies one layer onto `root`, verifying its blob digest and its `diff_id`.
    pub fn apply(
        &self,
        layer: &LayerBlob,
        root: &Root,
        opts: ApplyOptions,
    ) -> Result<LayerStats, ImageError> {
        let read_err = |source| ImageError::LayerRead {
            path: self.path.clone(),
            layer: layer.name.clone(),
            source,
        };
        let (reader, _) =
            self.source
                .open_file(&layer.name)
                .map_err(|source| ImageError::Layout {
                    path: self.path.clone(),
                    source,
                })?;
        let alg = layer
            .digest
            .as_ref()
            .map(|d| d.algorithm())
            .unwrap_or(digest::Algorithm::Sha256);
        let mut blob = digest::DigestReader::new(reader, alg);
        let (stats, diff) = {
            let mut buffered = BufReader::with_capacity(256 * 1024, &mut blob);
            let head = buffered.fill_buf().map_err(read_err)?;
            let compression = if head.starts_with(&[0x1f, 0x8b]) {
                Some("gzip")
            } else if head.starts_with(&[0x28, 0xb5, 0x2f, 0xfd]) {
                Some("zstd")
            } else {
                None
            };
            let tar: Box<dyn Read> = match compression {
                Some("gzip") => Box::new(flate2::bufread::MultiGzDecoder::new(buffered)),
                Some(other) => {
                    return Err(ImageError::Compression {
                        path: self.path.clone(),
                        layer: layer.name.clone(),
                        compression: other,
                    })
                }
                None => Box::new(buffered),
            };
            let mut tar = digest::DigestReader::new(tar, layer.diff_id.algorithm());
            let applied = apply::apply_layer(root, &mut tar, opts);
            // A digest mismatch explains a broken stream better than the tar error does.
            let drained = tar.drain();
            let diff = tar.finish();
            match applied {
                Ok(s) => {
                    drained.map_err(read_err)?;
                    (Ok(s), diff)
                }
                Err(e) => (Err(e), diff),
            }
        };
        let verify = |what: &str, expected: &Digest, size, got: &Digest, count| {
            digest::check(what, expected, size, got, count).map_err(|source| ImageError::Verify {
                path: self.path.clone(),
                layer: layer.name.clone(),
                source: Box::new(source),
            })
        };
        let blob_drained = blob.drain();
        let (blob_digest, blob_len) = blob.finish();
        if let Some(expected) = &layer.digest {
            if blob_drained.is_ok() {
                verify(
                    &format!("blob {}", layer.name),
                    expected,
                    layer.size,
                    &blob_digest,
                    blob_len,
                )?;
            }
        }
        let stats = stats.map_err(|source| ImageError::Apply {
            path: self.path.clone(),
            layer: layer.name.clone(),
            source,
        })?;
        blob_drained.map_err(read_err)?;
        verify(
            "uncompressed layer (rootfs.diff_ids)",
            &layer.diff_id,
            None,
            &diff.0,
            diff.1,
        )?;
        Ok(stats)
    }
}

/// Unpacks `image` (directory or archive) into `rootfs`, using `scratch` for a compressed
/// archive. Returns the image configuration.
pub fn unpack(
    image: &Path,
    scratch: &Path,
    rootfs: &Path,
) -> Result<ImageConfiguration, ImageError> {
    let img = Image::open(image, scratch)?;
    let stats = img.unpack(rootfs)?;
    tracing::debug!(
        entries = stats.entries,
        bytes = stats.bytes,
        whiteouts = stats.whiteouts,
        layers = img.layers().len(),
        "image unpacked"
    );
    Ok(img.config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_tag_takes_existing_paths_whole_and_the_longest_existing_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().to_str().unwrap();
        std::fs::create_dir(dir.path().join("img")).unwrap();
        std::fs::create_dir(dir.path().join("img:v1")).unwrap();
        let split = |s: &str| split_tag(Path::new(s));
        assert_eq!(
            split(&format!("{d}/img:v1")),
            Some((PathBuf::from(format!("{d}/img:v1")), None))
        );
        assert_eq!(
            split(&format!("{d}/img:v2")),
            Some((PathBuf::from(format!("{d}/img")), Some("v2".into())))
        );
        // A tag with `:` of its own (a whole reference), after the longest path that exists.
        assert_eq!(
            split(&format!("{d}/img:v1:reg:5000/x:latest")),
            Some((
                PathBuf::from(format!("{d}/img:v1")),
                Some("reg:5000/x:latest".into())
            ))
        );
        assert_eq!(split("busybox:latest"), None);
        assert_eq!(split(&format!("{d}/img:")), None);
    }
}
