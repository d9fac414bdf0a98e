//! The tags of pulled images in the store's OCI layout (`<store>/oci/index.json`, one entry
//! per reference pulled) and what each reaches: its manifests, configuration and layer blobs,
//! and its layers' `diff_id`s. A blob no tag reaches is garbage, removed by [`collect_blobs`].
//!
//! Pulls hold `locks/oci-gc` shared from their first blob to their tag, rootless runs while
//! they unpack a pulled image; collection holds it exclusively, so it never sees a pull's
//! blobs before the tag that names them, nor takes blobs an unpack is reading.

use std::collections::HashSet;
use std::fs::File;
use std::io::{self, Write};
use std::path::Path;

use rustix::fs::FlockOperation;

use crate::digest::Digest;
use crate::layout::{MAX_JSON_BYTES, REF_NAME};
use crate::store::{Store, StoreError};

/// The lock pulls hold shared and blob collection exclusively.
pub(crate) const GC_LOCK: &str = "oci-gc";

/// One entry of the pulled layout's `index.json` and what it reaches.
#[derive(Debug, Clone)]
pub struct Tag {
    /// The whole reference (`127.0.0.1:5000/shoji/busybox:v1`, `docker.io/library/busybox:latest`).
    pub name: String,
    /// The manifest (or index) the reference named.
    pub manifest: Digest,
    /// The configurations reached: the images' identities (one per stored platform manifest).
    pub configs: Vec<Digest>,
    /// Every stored blob it reaches, `manifest` included.
    pub blobs: HashSet<Digest>,
    /// Its layers' uncompressed digests: their names under `layers/`.
    pub diff_ids: Vec<Digest>,
}

/// What [`collect_blobs`] removed.
#[derive(Debug, Default, Clone, Copy)]
pub struct Collected {
    pub blobs: usize,
    pub bytes: u64,
    /// A pull (or a rootless run's unpack of a pulled image) was running, so nothing was
    /// collected (a later `prune` does it).
    pub pull_running: bool,
}

fn blob_path(store: &Store, d: &Digest) -> std::path::PathBuf {
    store
        .pulled_dir()
        .join("blobs")
        .join(d.algorithm_name())
        .join(d.hex())
}

fn io_err(op: &'static str, path: &Path, source: io::Error) -> StoreError {
    StoreError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// A stored JSON blob (verified when it was stored), `None` if it is not stored or is not
/// JSON (a platform's manifest that was never pulled; a layer).
fn read_json(store: &Store, d: &Digest) -> Result<Option<serde_json::Value>, StoreError> {
    let p = blob_path(store, d);
    let f = match File::open(&p) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_err("open", &p, e)),
    };
    let mut buf = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(f, MAX_JSON_BYTES), &mut buf)
        .map_err(|e| io_err("read", &p, e))?;
    Ok(serde_json::from_slice(&buf).ok())
}

fn digest_at(v: &serde_json::Value) -> Option<Digest> {
    v.get("digest")?
        .as_str()
        .and_then(|s| Digest::parse(s).ok())
}

/// Adds what manifest or index `d` reaches to `tag` (nested indexes to a depth of 4, as the
/// layout reader follows them).
fn reach(store: &Store, d: &Digest, depth: usize, tag: &mut Tag) -> Result<(), StoreError> {
    tag.blobs.insert(d.clone());
    let Some(v) = read_json(store, d)? else {
        return Ok(());
    };
    if let Some(entries) = v.get("manifests").and_then(|m| m.as_array()) {
        for m in entries.iter().filter_map(digest_at) {
            if depth < 4 && blob_path(store, &m).is_file() {
                reach(store, &m, depth + 1, tag)?;
            }
        }
    }
    if let Some(c) = v.get("config").and_then(digest_at) {
        tag.blobs.insert(c.clone());
        let diff_ids = read_json(store, &c)?
            .and_then(|cfg| cfg.pointer("/rootfs/diff_ids").cloned())
            .and_then(|ids| serde_json::from_value::<Vec<String>>(ids).ok())
            .unwrap_or_default();
        tag.diff_ids
            .extend(diff_ids.iter().filter_map(|s| Digest::parse(s).ok()));
        tag.configs.push(c);
    }
    if let Some(layers) = v.get("layers").and_then(|l| l.as_array()) {
        tag.blobs.extend(layers.iter().filter_map(digest_at));
    }
    Ok(())
}

fn read_index(store: &Store) -> Result<Option<serde_json::Value>, StoreError> {
    let p = store.pulled_dir().join("index.json");
    match std::fs::read(&p) {
        Ok(b) => serde_json::from_slice(&b)
            .map(Some)
            .map_err(|e| io_err("read", &p, e.into())),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(io_err("read", &p, e)),
    }
}

/// The tags in the pulled layout, with what each reaches.
pub fn tags(store: &Store) -> Result<Vec<Tag>, StoreError> {
    let Some(index) = read_index(store)? else {
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    let entries = index.get("manifests").and_then(|m| m.as_array());
    for e in entries.into_iter().flatten() {
        let (Some(name), Some(manifest)) = (e["annotations"][REF_NAME].as_str(), digest_at(e))
        else {
            continue;
        };
        let mut tag = Tag {
            name: name.into(),
            manifest: manifest.clone(),
            configs: Vec::new(),
            blobs: HashSet::new(),
            diff_ids: Vec::new(),
        };
        reach(store, &manifest, 0, &mut tag)?;
        out.push(tag);
    }
    Ok(out)
}

/// Rewrites the pulled layout's `index.json` under `locks/oci-index` (through a temporary file
/// renamed into place), `edit` changing its entries; made with `oci-layout` if missing.
pub(crate) fn update_index(
    store: &Store,
    edit: impl FnOnce(&mut Vec<serde_json::Value>),
) -> Result<(), StoreError> {
    let _lock = store.lock_exclusive("oci-index")?;
    let dir = store.pulled_dir();
    let path = dir.join("index.json");
    let mut index = read_index(store)?.unwrap_or_else(|| serde_json::json!({ "schemaVersion": 2 }));
    let entries = match index.get_mut("manifests").and_then(|m| m.as_array_mut()) {
        Some(e) => e,
        None => {
            index["manifests"] = serde_json::json!([]);
            index["manifests"]
                .as_array_mut()
                .ok_or_else(|| io_err("read", &path, io::ErrorKind::InvalidData.into()))?
        }
    };
    edit(entries);
    let layout = dir.join("oci-layout");
    if !layout.exists() {
        std::fs::write(&layout, br#"{"imageLayoutVersion":"1.0.0"}"#)
            .map_err(|e| io_err("write", &layout, e))?;
    }
    let write = || -> io::Result<()> {
        let mut tmp = tempfile::NamedTempFile::new_in(&dir)?;
        tmp.write_all(&serde_json::to_vec_pretty(&index)?)?;
        tmp.persist(&path).map_err(|e| e.error)?;
        Ok(())
    };
    write().map_err(|e| io_err("write", &path, e))
}

/// Drops the tags named `names` from the pulled layout; returns how many there were.
pub(crate) fn remove_tags(store: &Store, names: &[String]) -> Result<usize, StoreError> {
    if names.is_empty() {
        return Ok(0);
    }
    let mut n = 0;
    update_index(store, |entries| {
        let before = entries.len();
        entries.retain(|e| {
            !e["annotations"][REF_NAME]
                .as_str()
                .is_some_and(|t| names.iter().any(|n| n == t))
        });
        n = before - entries.len();
    })?;
    Ok(n)
}

/// Removes every blob of the pulled layout that no tag reaches, and what interrupted
/// downloads left (temporary files). Skipped, saying so, while a pull or a rootless unpack
/// runs ([`hold_blobs`]).
pub(crate) fn collect_blobs(store: &Store) -> Result<Collected, StoreError> {
    let mut out = Collected::default();
    let blobs = store.pulled_dir().join("blobs");
    if !blobs.is_dir() {
        return Ok(out);
    }
    let Some(_gc) = store.try_lock_exclusive(GC_LOCK)? else {
        out.pull_running = true;
        return Ok(out);
    };
    let keep: HashSet<Digest> = tags(store)?.into_iter().flat_map(|t| t.blobs).collect();
    for alg in std::fs::read_dir(&blobs)
        .map_err(|e| io_err("list", &blobs, e))?
        .flatten()
    {
        let alg_name = alg.file_name().to_string_lossy().into_owned();
        for e in std::fs::read_dir(alg.path())
            .map_err(|e| io_err("list", &alg.path(), e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let size = e.metadata().map(|m| m.len()).unwrap_or(0);
            let _lock = match Digest::parse(&format!("{alg_name}:{name}")) {
                Ok(d) if keep.contains(&d) => continue,
                // Being written by a download that has its lock (a pull without the gc
                // lock cannot be: this is belt and braces).
                Ok(d) => match store.try_lock_exclusive(&format!("blob-{alg_name}-{}", d.hex()))? {
                    Some(l) => Some(l),
                    None => continue,
                },
                // A temporary file: no pull runs, so it is what an interrupted one left.
                Err(_) => None,
            };
            match std::fs::remove_file(e.path()) {
                Err(err) if err.kind() != io::ErrorKind::NotFound => {
                    return Err(io_err("remove", &e.path(), err))
                }
                _ => {}
            }
            out.blobs += 1;
            out.bytes += size;
        }
    }
    Ok(out)
}

/// The blobs stored in the pulled layout: how many, and their bytes.
pub fn blob_usage(store: &Store) -> (usize, u64) {
    let blobs = store.pulled_dir().join("blobs");
    let files = std::fs::read_dir(&blobs)
        .into_iter()
        .flatten()
        .flatten()
        .flat_map(|alg| {
            std::fs::read_dir(alg.path())
                .into_iter()
                .flatten()
                .flatten()
        })
        .filter_map(|e| e.metadata().ok())
        .filter(|m| m.is_file());
    files.fold((0, 0), |(n, b), m| (n + 1, b + m.len()))
}

/// Holds `locks/oci-gc` shared: no blob collection while the file is open. A pull holds it
/// from its first blob to its tag; a rootless run while it unpacks a pulled image's blobs into
/// its sandbox (so an `image rm` meanwhile drops the tag and leaves the blobs to `prune`).
pub fn hold_blobs(store: &Store) -> Result<File, StoreError> {
    store.lock(GC_LOCK, FlockOperation::LockShared)
}
