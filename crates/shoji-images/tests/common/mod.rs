//! Test images built here, entry by entry, with the tar crate: layers, OCI layouts and
//! `docker save` archives, with digests right or deliberately wrong.

use std::io::Write;
use std::path::{Path, PathBuf};

use shoji_images::Digest;

pub enum E<'a> {
    File(&'a str, &'a [u8]),
    Mode(&'a str, &'a [u8], u32),
    Dir(&'a str),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// A file with PAX extended-attribute records.
    Xattrs(&'a str, &'a [u8], u32, &'a [(&'a str, &'a [u8])]),
}

fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_size(size);
    h.set_uid(0);
    h.set_gid(0);
    h.set_mtime(1_700_000_000);
    h
}

/// An uncompressed layer tar of `entries`, in order.
pub fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        match e {
            E::File(p, d) => append(
                &mut b,
                header(tar::EntryType::Regular, 0o644, d.len() as u64),
                p,
                d,
            ),
            E::Mode(p, d, m) => append(
                &mut b,
                header(tar::EntryType::Regular, *m, d.len() as u64),
                p,
                d,
            ),
            E::Dir(p) => append(&mut b, header(tar::EntryType::Directory, 0o755, 0), p, &[]),
            E::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hardlink(p, t) => {
                let mut h = header(tar::EntryType::Link, 0o644, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Xattrs(p, d, m, xattrs) => {
                let recs: Vec<(String, &[u8])> = xattrs
                    .iter()
                    .map(|(k, v)| (format!("SCHILY.xattr.{k}"), *v))
                    .collect();
                b.append_pax_extensions(recs.iter().map(|(k, v)| (k.as_str(), *v)))
                    .unwrap();
                append(
                    &mut b,
                    header(tar::EntryType::Regular, *m, d.len() as u64),
                    p,
                    d,
                );
            }
        }
    }
    b.into_inner().unwrap()
}

/// Appends with the name written as given (`./x` stays `./x`, as `tar -C dir .` writes it).
fn append(b: &mut tar::Builder<Vec<u8>>, mut h: tar::Header, path: &str, data: &[u8]) {
    let name = h.as_old_mut();
    name.name = [0; 100];
    name.name[..path.len()].copy_from_slice(path.as_bytes());
    h.set_cksum();
    b.append(&h, data).unwrap();
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

pub fn sha(data: &[u8]) -> String {
    Digest::sha256_of(data).to_string()
}

fn put_blob(dir: &Path, data: &[u8]) -> String {
    let d = Digest::sha256_of(data);
    let p = dir.join("blobs/sha256").join(d.hex());
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(p, data).unwrap();
    d.to_string()
}

pub fn config_json(diff_ids: &[String]) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": ["sh"]},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap()
}

/// How to build a layout: gzip the layers, override the diff_ids.
#[derive(Default)]
pub struct Opts {
    pub gzip: bool,
    pub diff_ids: Option<Vec<String>>,
}

/// Writes an OCI image layout of `layers` (uncompressed tars) into `dir`.
pub fn oci_layout(dir: &Path, layers: &[Vec<u8>], opts: Opts) -> PathBuf {
    std::fs::create_dir_all(dir).unwrap();
    let diff_ids = opts
        .diff_ids
        .unwrap_or_else(|| layers.iter().map(|l| sha(l)).collect());
    let mut descs = Vec::new();
    for l in layers {
        let blob = if opts.gzip { gzip(l) } else { l.clone() };
        let d = put_blob(dir, &blob);
        let mt = if opts.gzip {
            "application/vnd.oci.image.layer.v1.tar+gzip"
        } else {
            "application/vnd.oci.image.layer.v1.tar"
        };
        descs.push(serde_json::json!({"mediaType": mt, "digest": d, "size": blob.len()}));
    }
    let config = config_json(&diff_ids);
    let cd = put_blob(dir, &config);
    let manifest = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": config.len()},
        "layers": descs,
    }))
    .unwrap();
    let md = put_blob(dir, &manifest);
    let index = serde_json::json!({
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": md, "size": manifest.len()}],
    });
    std::fs::write(dir.join("index.json"), serde_json::to_vec(&index).unwrap()).unwrap();
    std::fs::write(dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#).unwrap();
    dir.to_path_buf()
}

/// The blob file of the `n`th layer of a layout made by [`oci_layout`].
pub fn layer_blob(dir: &Path, n: usize) -> PathBuf {
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("index.json")).unwrap()).unwrap();
    let md = index["manifests"][0]["digest"].as_str().unwrap();
    let m: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("blobs/sha256").join(&md[7..])).unwrap())
            .unwrap();
    let ld = m["layers"][n]["digest"].as_str().unwrap();
    dir.join("blobs/sha256").join(&ld[7..])
}

/// A member of a hand-made archive.
pub enum Member<'a> {
    File(&'a str, &'a [u8]),
    Symlink(&'a str, &'a str),
    Fifo(&'a str),
}

pub fn archive(path: &Path, members: &[Member]) -> PathBuf {
    let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
    for m in members {
        match m {
            Member::File(p, d) => {
                let mut h = header(tar::EntryType::Regular, 0o644, d.len() as u64);
                b.append_data(&mut h, p, *d).unwrap();
            }
            Member::Symlink(p, t) => {
                let mut h = header(tar::EntryType::Symlink, 0o777, 0);
                b.append_link(&mut h, p, t).unwrap();
            }
            Member::Fifo(p) => {
                let mut h = header(tar::EntryType::Fifo, 0o644, 0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
        }
    }
    b.finish().unwrap();
    path.to_path_buf()
}

/// A `docker save` manifest.json naming `config` and `layers`.
pub fn docker_manifest(config: &str, layers: &[&str]) -> Vec<u8> {
    serde_json::to_vec(
        &serde_json::json!([{"Config": config, "RepoTags": ["t:latest"], "Layers": layers}]),
    )
    .unwrap()
}

/// Every file under `dir` with its content and mode, for before/after comparisons.
pub fn snapshot(dir: &Path) -> Vec<(PathBuf, Vec<u8>, u32)> {
    use std::os::unix::fs::MetadataExt;
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            let md = std::fs::symlink_metadata(&p).unwrap();
            let content = if md.is_file() {
                std::fs::read(&p).unwrap()
            } else if md.file_type().is_symlink() {
                std::fs::read_link(&p)
                    .unwrap()
                    .into_os_string()
                    .into_encoded_bytes()
            } else {
                Vec::new()
            };
            if md.is_dir() {
                stack.push(p.clone());
            }
            out.push((p, content, md.mode()));
        }
    }
    out.sort();
    out
}

/// A temp dir with `root/` (the rootfs) and `outside/` (host files that must not change).
pub struct Host {
    pub tmp: tempfile::TempDir,
}

impl Host {
    pub fn new() -> Self {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(tmp.path().join("outside/dir")).unwrap();
        std::fs::write(tmp.path().join("outside/file"), b"host file").unwrap();
        std::fs::write(tmp.path().join("outside/dir/a"), b"host a").unwrap();
        Self { tmp }
    }
    pub fn root(&self) -> PathBuf {
        self.tmp.path().join("root")
    }
    pub fn outside(&self) -> PathBuf {
        self.tmp.path().join("outside")
    }
    pub fn scratch(&self) -> PathBuf {
        self.tmp.path().join("scratch")
    }
    pub fn image(&self) -> PathBuf {
        self.tmp.path().join("image")
    }
    /// Unpacks `layers` as an OCI layout into `root/`.
    pub fn unpack(&self, layers: &[Vec<u8>]) -> Result<(), shoji_images::ImageError> {
        let img = oci_layout(&self.image(), layers, Opts::default());
        shoji_images::unpack(&img, &self.scratch(), &self.root()).map(|_| ())
    }
}

/// An error and its sources, as one line (not every test file uses it).
#[allow(unused_imports)]
pub use shoji_protocols::error_chain as chain;
