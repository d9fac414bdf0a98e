//! Where an image's files come from (an OCI image-layout directory, or an archive of one or of a
//! `docker save`), and what its manifests say: the configuration and the layers, each with the
//! digests it must match. Every blob named by a digest is verified while it is read.

use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

use oci_spec::image::{Descriptor, ImageConfiguration, ImageIndex, ImageManifest};
use rustix::fs::{Mode, OFlags, ResolveFlags};

use crate::archive::{Archive, ArchiveError};
use crate::digest::{Digest, DigestError, DigestReader};

/// Manifests, indexes and configurations are small; a bigger one is refused before it is read.
pub const MAX_JSON_BYTES: u64 = 8 << 20;

#[derive(Debug, thiserror::Error)]
pub enum LayoutError {
    #[error("cannot open {name:?} in image directory {dir}")]
    Open {
        dir: PathBuf,
        name: String,
        #[source]
        source: io::Error,
    },
    #[error("{name:?} in image directory {dir} is not a regular file")]
    NotAFile { dir: PathBuf, name: String },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error("cannot read {what}")]
    Read {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what} is larger than {MAX_JSON_BYTES} bytes")]
    TooLarge { what: String },
    #[error("{what} is not valid JSON of its kind")]
    Json {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Digest(#[from] DigestError),
    #[error("neither an OCI image layout (index.json) nor a docker save archive (manifest.json)")]
    UnknownFormat,
    #[error("no image tagged {tag:?} (tags present: {present}); give one of those after the `:`")]
    NoSuchTag { tag: String, present: String },
    #[error("malformed {what}: {message}")]
    Malformed { what: String, message: String },
}

/// The image's files: a directory (every name resolved inside it) or an indexed archive.
pub enum Source {
    Dir { path: PathBuf, fd: OwnedFd },
    Archive(Archive),
}

/// One layer to apply: where its blob is, and what it must hash to.
#[derive(Debug, Clone)]
pub struct LayerBlob {
    /// The name it has in the source (`blobs/sha256/...`, `<id>/layer.tar`).
    pub name: String,
    /// The compressed blob's digest and size, when the format records them.
    pub digest: Option<Digest>,
    pub size: Option<u64>,
    /// The uncompressed tar's digest, from the configuration's `rootfs.diff_ids`.
    pub diff_id: Digest,
}

pub struct Resolved {
    pub config: ImageConfiguration,
    pub config_digest: Digest,
    pub layers: Vec<LayerBlob>,
}

impl Source {
    pub fn open(path: &Path, scratch: &Path) -> Result<Self, LayoutError> {
        if path.is_dir() {
            let fd = rustix::fs::open(
                path,
                OFlags::DIRECTORY | OFlags::RDONLY | OFlags::CLOEXEC,
                Mode::empty(),
            )
            .map_err(|e| LayoutError::Open {
                dir: path.to_path_buf(),
                name: ".".into(),
                source: e.into(),
            })?;
            Ok(Source::Dir {
                path: path.to_path_buf(),
                fd,
            })
        } else {
            Ok(Source::Archive(Archive::open(path, scratch)?))
        }
    }

    fn exists(&self, name: &str) -> bool {
        match self {
            Source::Dir { fd, .. } => rustix::fs::openat2(
                fd,
                name,
                OFlags::PATH | OFlags::CLOEXEC,
                Mode::empty(),
                in_root(),
            )
            .is_ok(),
            Source::Archive(a) => a.contains(name),
        }
    }

    /// A reader of the regular file `name` and its size.
    pub fn open_file(&self, name: &str) -> Result<(Box<dyn Read + Send + '_>, u64), LayoutError> {
        match self {
            Source::Dir { path, fd } => {
                let open_err = |source| LayoutError::Open {
                    dir: path.clone(),
                    name: name.to_string(),
                    source,
                };
                // O_NONBLOCK: opening a FIFO must not wait for a writer; it is then refused.
                let f = rustix::fs::openat2(
                    fd,
                    name,
                    OFlags::RDONLY | OFlags::CLOEXEC | OFlags::NONBLOCK | OFlags::NOCTTY,
                    Mode::empty(),
                    in_root(),
                )
                .map_err(|e| open_err(e.into()))?;
                let st = rustix::fs::fstat(&f).map_err(|e| open_err(e.into()))?;
                if rustix::fs::FileType::from_raw_mode(st.st_mode)
                    != rustix::fs::FileType::RegularFile
                {
                    return Err(LayoutError::NotAFile {
                        dir: path.clone(),
                        name: name.to_string(),
                    });
                }
                Ok((Box::new(File::from(f)), st.st_size as u64))
            }
            Source::Archive(a) => {
                let (r, size) = a.open_member(name)?;
                Ok((Box::new(r), size))
            }
        }
    }

    /// The name of the blob `digest` in an OCI layout.
    pub fn blob_name(digest: &Digest) -> String {
        format!("blobs/{}/{}", digest.algorithm_name(), digest.hex())
    }

    /// Reads the image's manifests and configuration: those of the entry tagged `tag` (an OCI
    /// layout's `org.opencontainers.image.ref.name`, a `docker save`'s `RepoTags`) when given.
    pub fn resolve(&self, tag: Option<&str>) -> Result<Resolved, LayoutError> {
        if self.exists("index.json") {
            self.resolve_oci(tag)
        } else if self.exists("manifest.json") {
            self.resolve_docker(tag)
        } else {
            Err(LayoutError::UnknownFormat)
        }
    }

    /// Reads JSON from `name`, verified against `digest` (and `size`) when given.
    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        name: &str,
        digest: Option<(&Digest, Option<u64>)>,
    ) -> Result<T, LayoutError> {
        let (reader, size) = self.open_file(name)?;
        if size > MAX_JSON_BYTES {
            return Err(LayoutError::TooLarge { what: name.into() });
        }
        let alg = digest
            .map(|(d, _)| d.algorithm())
            .unwrap_or(crate::digest::Algorithm::Sha256);
        let mut r = DigestReader::new(reader.take(MAX_JSON_BYTES + 1), alg);
        let mut buf = Vec::new();
        r.read_to_end(&mut buf)
            .map_err(|source| LayoutError::Read {
                what: name.into(),
                source,
            })?;
        if buf.len() as u64 > MAX_JSON_BYTES {
            return Err(LayoutError::TooLarge { what: name.into() });
        }
        if let Some((expected, size)) = digest {
            let (got, count) = r.finish();
            crate::digest::check(name, expected, size, &got, count)?;
        }
        serde_json::from_slice(&buf).map_err(|source| LayoutError::Json {
            what: name.into(),
            source,
        })
    }

    fn read_blob_json<T: serde::de::DeserializeOwned>(
        &self,
        desc: &Descriptor,
    ) -> Result<(T, Digest), LayoutError> {
        let digest = Digest::parse(desc.digest().as_ref())?;
        let v = self.read_json(
            &Self::blob_name(&digest),
            Some((&digest, Some(desc.size()))),
        )?;
        Ok((v, digest))
    }

    fn resolve_oci(&self, tag: Option<&str>) -> Result<Resolved, LayoutError> {
        let index: ImageIndex = self.read_json("index.json", None)?;
        let mut desc = match tag {
            Some(t) => pick_tagged(&index, t)?,
            None => pick_manifest(&index, "index.json")?,
        };
        // Nested indexes (multi-platform images), to a bounded depth.
        for _ in 0..4 {
            let mt = desc.media_type().to_string();
            // OCI image index, or Docker's manifest list.
            if !mt.contains("index") && !mt.contains("manifest.list") {
                break;
            }
            let (nested, d): (ImageIndex, _) = self.read_blob_json(&desc)?;
            desc = pick_manifest(&nested, &format!("image index {d}"))?;
        }
        let (manifest, _): (ImageManifest, _) = self.read_blob_json(&desc)?;
        let (config, config_digest): (ImageConfiguration, _) =
            self.read_blob_json(manifest.config())?;
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != manifest.layers().len() {
            return Err(LayoutError::Malformed {
                what: "image".into(),
                message: format!(
                    "the manifest lists {} layers, the configuration's rootfs.diff_ids {}",
                    manifest.layers().len(),
                    diff_ids.len()
                ),
            });
        }
        let layers = manifest
            .layers()
            .iter()
            .zip(diff_ids)
            .map(|(l, diff_id)| {
                let digest = Digest::parse(l.digest().as_ref())?;
                Ok(LayerBlob {
                    name: Self::blob_name(&digest),
                    digest: Some(digest),
                    size: Some(l.size()),
                    diff_id,
                })
            })
            .collect::<Result<_, LayoutError>>()?;
        Ok(Resolved {
            config,
            config_digest,
            layers,
        })
    }

    fn resolve_docker(&self, tag: Option<&str>) -> Result<Resolved, LayoutError> {
        #[derive(serde::Deserialize)]
        #[serde(rename_all = "PascalCase")]
        struct Entry {
            config: String,
            layers: Vec<String>,
            #[serde(default)]
            repo_tags: Option<Vec<String>>,
        }
        let entries: Vec<Entry> = self.read_json("manifest.json", None)?;
        let malformed = |message: String| LayoutError::Malformed {
            what: "manifest.json".into(),
            message,
        };
        let first = match tag {
            None => entries
                .into_iter()
                .next()
                .ok_or_else(|| malformed("no images".into()))?,
            Some(t) => {
                // `docker save` tags are `NAME:TAG`: either the whole or the part after the
                // last `:` names the entry.
                let matches = |rt: &String| {
                    rt == t || rt.rsplit_once(':').is_some_and(|(_, short)| short == t)
                };
                let present: Vec<String> = entries
                    .iter()
                    .flat_map(|e| e.repo_tags.iter().flatten().cloned())
                    .collect();
                entries
                    .into_iter()
                    .find(|e| e.repo_tags.iter().flatten().any(matches))
                    .ok_or_else(|| LayoutError::NoSuchTag {
                        tag: t.into(),
                        present: tag_list(&present),
                    })?
            }
        };
        // The configuration is named by its digest: `blobs/sha256/<hex>` (Docker 25 and later)
        // or `<hex>.json` (earlier).
        let config_digest = digest_from_name(&first.config).ok_or_else(|| {
            malformed(format!(
                "the configuration {:?} is not named by its digest, so it cannot be verified",
                first.config
            ))
        })?;
        let config: ImageConfiguration =
            self.read_json(&first.config, Some((&config_digest, None)))?;
        let diff_ids = diff_ids(&config)?;
        if diff_ids.len() != first.layers.len() {
            return Err(malformed(format!(
                "{} layers listed, the configuration's rootfs.diff_ids has {}",
                first.layers.len(),
                diff_ids.len()
            )));
        }
        let layers = first
            .layers
            .into_iter()
            .zip(diff_ids)
            .map(|(name, diff_id)| LayerBlob {
                digest: name
                    .starts_with("blobs/")
                    .then(|| digest_from_name(&name))
                    .flatten(),
                size: None,
                name,
                diff_id,
            })
            .collect();
        Ok(Resolved {
            config,
            config_digest,
            layers,
        })
    }
}

fn in_root() -> ResolveFlags {
    ResolveFlags::IN_ROOT | ResolveFlags::NO_MAGICLINKS
}

/// `blobs/<alg>/<hex>` or `<hex>.json` as a digest.
fn digest_from_name(name: &str) -> Option<Digest> {
    let norm = crate::archive::normalize_member(name)?;
    if let Some(rest) = norm.strip_prefix("blobs/") {
        let (alg, hex) = rest.split_once('/')?;
        return Digest::parse(&format!("{alg}:{hex}")).ok();
    }
    let hex = norm.strip_suffix(".json")?;
    Digest::parse(&format!("sha256:{hex}")).ok()
}

fn diff_ids(config: &ImageConfiguration) -> Result<Vec<Digest>, LayoutError> {
    config
        .rootfs()
        .diff_ids()
        .iter()
        .map(|d| Digest::parse(d).map_err(LayoutError::from))
        .collect()
}

/// The annotation an OCI layout names its entries with (`skopeo copy ... oci:DIR:TAG`).
pub const REF_NAME: &str = "org.opencontainers.image.ref.name";

fn tag_list(tags: &[String]) -> String {
    if tags.is_empty() {
        "none".into()
    } else {
        tags.join(", ")
    }
}

/// The entry of `index.json` whose `org.opencontainers.image.ref.name` is `tag`.
fn pick_tagged(index: &ImageIndex, tag: &str) -> Result<Descriptor, LayoutError> {
    let name = |d: &Descriptor| {
        d.annotations()
            .as_ref()
            .and_then(|a| a.get(REF_NAME))
            .cloned()
    };
    index
        .manifests()
        .iter()
        .find(|d| name(d).as_deref() == Some(tag))
        .cloned()
        .ok_or_else(|| {
            let present: Vec<String> = index.manifests().iter().filter_map(name).collect();
            LayoutError::NoSuchTag {
                tag: tag.into(),
                present: tag_list(&present),
            }
        })
}

fn host_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    }
}

/// The index entry for this host: one without a platform, or linux on this architecture.
pub(crate) fn pick_manifest(index: &ImageIndex, what: &str) -> Result<Descriptor, LayoutError> {
    let arch = host_arch();
    index
        .manifests()
        .iter()
        .find(|d| {
            d.platform().as_ref().is_none_or(|p| {
                p.architecture().to_string() == arch && p.os().to_string() == "linux"
            })
        })
        .cloned()
        .ok_or_else(|| {
            let found: Vec<String> = index
                .manifests()
                .iter()
                .filter_map(|d| d.platform().as_ref())
                .map(|p| format!("{}/{}", p.os(), p.architecture()))
                .collect();
            LayoutError::Malformed {
                what: what.into(),
                message: if found.is_empty() {
                    "no manifests".into()
                } else {
                    format!("no manifest for linux/{arch} (found: {})", found.join(", "))
                },
            }
        })
}
