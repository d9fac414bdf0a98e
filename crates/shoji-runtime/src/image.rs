//! OCI images into root filesystems: an OCI image-layout directory, an OCI archive or a
//! `docker save` tarball. Layers are applied in order with whiteouts (`.wh.NAME` removes NAME,
//! `.wh..wh..opq` empties the directory); gzip and uncompressed layers are accepted.

use std::fs::File;
use std::io::{BufReader, Read};
use std::path::{Component, Path, PathBuf};

use oci_spec::image::{ImageConfiguration, ImageIndex, ImageManifest};

#[derive(Debug, thiserror::Error)]
pub enum ImageError {
    #[error("image {path} does not exist")]
    NotFound { path: PathBuf },
    #[error("cannot read {path}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid image tarball: {message}")]
    BadTarball { path: PathBuf, message: String },
    #[error("{path} is neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")]
    UnknownFormat { path: PathBuf },
    #[error("malformed {what} in image {image}: {message}")]
    Malformed {
        image: PathBuf,
        what: String,
        message: String,
    },
    #[error("layer {layer} of image {image} cannot be applied: {message}")]
    Layer {
        image: PathBuf,
        layer: String,
        message: String,
    },
}

/// Unpacks `image` (directory or tarball) into `rootfs`, using `scratch` for a tarball's
/// contents. Returns the image configuration.
pub fn unpack(
    image: &Path,
    scratch: &Path,
    rootfs: &Path,
) -> Result<ImageConfiguration, ImageError> {
    if !image.exists() {
        return Err(ImageError::NotFound {
            path: image.to_path_buf(),
        });
    }
    let layout = if image.is_dir() {
        image.to_path_buf()
    } else {
        extract_tarball(image, scratch)?;
        scratch.to_path_buf()
    };
    let (config, layers) = if layout.join("index.json").is_file() {
        read_oci(image, &layout)?
    } else if layout.join("manifest.json").is_file() {
        read_docker(image, &layout)?
    } else {
        return Err(ImageError::UnknownFormat {
            path: image.to_path_buf(),
        });
    };
    std::fs::create_dir_all(rootfs).map_err(|source| ImageError::Io {
        path: rootfs.to_path_buf(),
        source,
    })?;
    for layer in &layers {
        apply_layer(image, layer, rootfs)?;
    }
    Ok(config)
}

fn extract_tarball(tarball: &Path, into: &Path) -> Result<(), ImageError> {
    let bad = |message: String| ImageError::BadTarball {
        path: tarball.to_path_buf(),
        message,
    };
    std::fs::create_dir_all(into).map_err(|source| ImageError::Io {
        path: into.to_path_buf(),
        source,
    })?;
    let reader = open_maybe_gzip(tarball)?;
    let mut archive = tar::Archive::new(reader);
    let entries = archive.entries().map_err(|e| bad(e.to_string()))?;
    let mut count = 0;
    for entry in entries {
        let mut entry = entry.map_err(|e| bad(e.to_string()))?;
        entry.unpack_in(into).map_err(|e| bad(e.to_string()))?;
        count += 1;
    }
    if count == 0 {
        return Err(bad("the archive is empty".into()));
    }
    Ok(())
}

fn open_maybe_gzip(path: &Path) -> Result<Box<dyn Read>, ImageError> {
    let io = |source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut f = File::open(path).map_err(io)?;
    let mut magic = [0u8; 2];
    let n = f.read(&mut magic).map_err(io)?;
    let f = File::open(path).map_err(io)?;
    if n == 2 && magic == [0x1f, 0x8b] {
        Ok(Box::new(flate2::read::GzDecoder::new(BufReader::new(f))))
    } else {
        Ok(Box::new(BufReader::new(f)))
    }
}

/// Path of a blob named by `digest`, refusing anything that is not `alg:hex`.
fn blob_path(image: &Path, layout: &Path, digest: &str) -> Result<PathBuf, ImageError> {
    let (alg, hex) = digest
        .split_once(':')
        .ok_or_else(|| ImageError::Malformed {
            image: image.to_path_buf(),
            what: "digest".into(),
            message: format!("{digest:?} is not of the form algorithm:hex"),
        })?;
    let ok = |s: &str| !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric());
    if !ok(alg) || !ok(hex) {
        return Err(ImageError::Malformed {
            image: image.to_path_buf(),
            what: "digest".into(),
            message: format!("{digest:?} has characters outside [a-z0-9]"),
        });
    }
    Ok(layout.join("blobs").join(alg).join(hex))
}

fn read_json<T: serde::de::DeserializeOwned>(image: &Path, path: &Path) -> Result<T, ImageError> {
    let text = std::fs::read(path).map_err(|source| ImageError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    serde_json::from_slice(&text).map_err(|e| ImageError::Malformed {
        image: image.to_path_buf(),
        what: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
        message: e.to_string(),
    })
}

fn read_oci(image: &Path, layout: &Path) -> Result<(ImageConfiguration, Vec<PathBuf>), ImageError> {
    let index: ImageIndex = read_json(image, &layout.join("index.json"))?;
    let mut desc = index
        .manifests()
        .first()
        .cloned()
        .ok_or_else(|| ImageError::Malformed {
            image: image.to_path_buf(),
            what: "index.json".into(),
            message: "no manifests".into(),
        })?;
    // Follow nested indexes (multi-platform images) to the first manifest.
    for _ in 0..4 {
        if !desc.media_type().to_string().contains("index") {
            break;
        }
        let nested: ImageIndex =
            read_json(image, &blob_path(image, layout, desc.digest().as_ref())?)?;
        desc = nested
            .manifests()
            .iter()
            .find(|d| {
                d.platform()
                    .as_ref()
                    .is_none_or(|p| p.architecture().to_string() == "amd64")
            })
            .cloned()
            .ok_or_else(|| ImageError::Malformed {
                image: image.to_path_buf(),
                what: "image index".into(),
                message: "no amd64 manifest".into(),
            })?;
    }
    let manifest: ImageManifest =
        read_json(image, &blob_path(image, layout, desc.digest().as_ref())?)?;
    let config: ImageConfiguration = read_json(
        image,
        &blob_path(image, layout, manifest.config().digest().as_ref())?,
    )?;
    let layers = manifest
        .layers()
        .iter()
        .map(|l| blob_path(image, layout, l.digest().as_ref()))
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct DockerManifestEntry {
    config: String,
    layers: Vec<String>,
}

fn inside(layout: &Path, rel: &str) -> Option<PathBuf> {
    let p = Path::new(rel);
    p.components()
        .all(|c| matches!(c, Component::Normal(_)))
        .then(|| layout.join(p))
}

fn read_docker(
    image: &Path,
    layout: &Path,
) -> Result<(ImageConfiguration, Vec<PathBuf>), ImageError> {
    let entries: Vec<DockerManifestEntry> = read_json(image, &layout.join("manifest.json"))?;
    let malformed = |message: String| ImageError::Malformed {
        image: image.to_path_buf(),
        what: "manifest.json".into(),
        message,
    };
    let first = entries
        .into_iter()
        .next()
        .ok_or_else(|| malformed("no images".into()))?;
    let config_path = inside(layout, &first.config)
        .ok_or_else(|| malformed(format!("bad path {:?}", first.config)))?;
    let config: ImageConfiguration = read_json(image, &config_path)?;
    let layers = first
        .layers
        .iter()
        .map(|l| inside(layout, l).ok_or_else(|| malformed(format!("bad path {l:?}"))))
        .collect::<Result<_, _>>()?;
    Ok((config, layers))
}

fn apply_layer(image: &Path, layer: &Path, rootfs: &Path) -> Result<(), ImageError> {
    let name = layer
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let err = |message: String| ImageError::Layer {
        image: image.to_path_buf(),
        layer: name.clone(),
        message,
    };
    let reader = open_maybe_gzip(layer)?;
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(nix::unistd::geteuid().is_root());
    archive.set_unpack_xattrs(false);
    archive.set_overwrite(true);
    for entry in archive.entries().map_err(|e| err(e.to_string()))? {
        let mut entry = entry.map_err(|e| err(e.to_string()))?;
        let path = entry.path().map_err(|e| err(e.to_string()))?.into_owned();
        let file_name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        if let Some(target) = file_name.strip_prefix(".wh.") {
            let parent = path.parent().unwrap_or(Path::new(""));
            let dir =
                inside(rootfs, &parent.to_string_lossy()).unwrap_or_else(|| rootfs.to_path_buf());
            if target == ".wh..opq" {
                if let Ok(rd) = std::fs::read_dir(&dir) {
                    for e in rd.flatten() {
                        remove_any(&e.path());
                    }
                }
            } else if let Some(victim) = inside(&dir, target) {
                remove_any(&victim);
            }
            continue;
        }
        entry.unpack_in(rootfs).map_err(|e| {
            err(format!(
                "{}: {e}: {}",
                path.display(),
                std::error::Error::source(&e)
                    .map(|s| s.to_string())
                    .unwrap_or_default()
            ))
        })?;
    }
    Ok(())
}

fn remove_any(p: &Path) {
    match std::fs::symlink_metadata(p) {
        Ok(m) if m.is_dir() => {
            let _ = std::fs::remove_dir_all(p);
        }
        Ok(_) => {
            let _ = std::fs::remove_file(p);
        }
        Err(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(dir: &Path, name: &str, files: &[(&str, &[u8])]) -> PathBuf {
        let p = dir.join(name);
        let mut b = tar::Builder::new(File::create(&p).unwrap());
        for (path, data) in files {
            let mut h = tar::Header::new_gnu();
            h.set_size(data.len() as u64);
            h.set_mode(0o644);
            h.set_uid(0);
            h.set_gid(0);
            h.set_mtime(0);
            h.set_cksum();
            b.append_data(&mut h, path, *data).unwrap();
        }
        b.finish().unwrap();
        p
    }

    #[test]
    fn whiteouts_remove_lower_files() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("root");
        std::fs::create_dir(&root).unwrap();
        let l1 = layer(
            t.path(),
            "l1",
            &[("a/x", b"1"), ("a/y", b"2"), ("b/z", b"3")],
        );
        let l2 = layer(
            t.path(),
            "l2",
            &[("a/.wh.x", b""), ("b/.wh..wh..opq", b""), ("b/new", b"4")],
        );
        apply_layer(t.path(), &l1, &root).unwrap();
        apply_layer(t.path(), &l2, &root).unwrap();
        assert!(!root.join("a/x").exists());
        assert!(root.join("a/y").exists());
        assert!(!root.join("b/z").exists());
        assert!(root.join("b/new").exists());
    }

    #[test]
    fn digest_with_path_traversal_is_refused() {
        let e = blob_path(Path::new("img"), Path::new("/l"), "sha256:../../etc").unwrap_err();
        assert!(e.to_string().contains("sha256:../../etc"));
    }

    #[test]
    fn garbage_tarball_is_a_clear_error() {
        let t = tempfile::tempdir().unwrap();
        let f = t.path().join("img.tar");
        std::fs::write(&f, b"this is not a tar archive at all, sorry").unwrap();
        let e = unpack(&f, &t.path().join("s"), &t.path().join("r")).unwrap_err();
        assert!(e.to_string().contains("img.tar"), "{e}");
    }
}
