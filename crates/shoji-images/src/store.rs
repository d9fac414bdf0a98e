//! The image store: each layer unpacked once, into a directory named by its verified digest,
//! and shared read-only (as an overlayfs lower layer) by every container of every image that
//! has it. Decisions in `docs/adr/018-image-store.md`.
//!
//! Layout of the store root (mode 0700: the layers hold the images' setuid files):
//! - `layers/<alg>-<hex>/`: a complete layer, named by its `diff_id` (the digest of the
//!   uncompressed tar, checked while it was unpacked): `fs/` (the tree, whiteouts as overlayfs
//!   whiteouts) and `layer.json` ([`LayerRecord`]). Present means complete and verified: a
//!   layer is unpacked into `tmp/` and renamed here in one step once both its digests matched.
//! - `tmp/<alg>-<hex>.<pid>`: an unpack in progress, or what a killed one left; never read,
//!   removed by the next unpack of that layer and by [`Store::prune`].
//! - `locks/<alg>-<hex>`: one lock file per layer (`flock`): shared while a container uses it
//!   or it is being unpacked ([`LayerLease`]), exclusive while it is removed; and
//!   `locks/<alg>-<hex>.unpack`, exclusive while it is unpacked (one unpacker at a time). A
//!   lock file is never removed: a process waiting on a removed one would lock a file nobody
//!   else sees.
//! - `images/<alg>-<hex>.json`: one [`ImageRecord`] per image (its configuration's digest).
//! - `oci/`: pulled images' blobs and tags, an OCI layout ([`crate::pull`], [`crate::tags`]).
//!
//! The digest in a layer's name has no `:`, so the directory can be an overlayfs `lowerdir`.

use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};

use rustix::fs::FlockOperation;

use crate::apply::ApplyOptions;
use crate::digest::Digest;
use crate::tags::Tag;
use crate::{Image, ImageError, LayerBlob, Root};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot {op} {path} in the image store")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "image store path {path} contains {ch:?}, which overlayfs cannot take in a layer path; \
         choose another [runtime] image_store"
    )]
    BadPath { path: PathBuf, ch: char },
    #[error("cannot unpack layer {layer} into the image store")]
    Unpack {
        layer: Digest,
        #[source]
        source: Box<ImageError>,
    },
    #[error("no image in the store matches {id:?} (see `shoji image ls`)")]
    NoSuchImage { id: String },
    #[error("{id:?} matches {count} images in the store; give more of the digest")]
    Ambiguous { id: String, count: usize },
    #[error(
        "image {image} is in use: its layer {layer} is under {users}; stop and remove that \
         first (nothing was removed)"
    )]
    InUse {
        layer: Digest,
        image: String,
        users: String,
    },
}

/// What `layers/<key>/layer.json` says about a complete layer.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct LayerRecord {
    /// The uncompressed tar's digest: the layer's name in the store.
    pub diff_id: Digest,
    /// The blob it was unpacked from, when the image recorded its digest.
    pub blob: Option<Digest>,
    /// Bytes of file data, and entries (files, directories, links, whiteouts).
    pub bytes: u64,
    pub entries: u64,
    /// RFC 3339, UTC.
    pub unpacked: String,
}

/// What `images/<key>.json` says about an image that was run.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct ImageRecord {
    pub config_digest: Digest,
    /// The path it was last run from.
    pub source: PathBuf,
    /// Its layers' `diff_id`s, lowest first.
    pub layers: Vec<Digest>,
    /// RFC 3339, UTC.
    pub last_used: String,
}

/// A layer as `shoji image ls` shows it.
#[derive(Debug, Clone)]
pub struct LayerInfo {
    pub record: LayerRecord,
    pub in_use: bool,
}

/// Shared locks on the layers of a running container: while one is held, no `rm` or `prune`
/// removes that layer. Released when dropped (or when the process dies).
#[derive(Debug)]
pub struct LayerLease {
    _locks: Vec<File>,
}

/// An image's layers in the store, ready to be an overlayfs' lower layers.
#[derive(Debug)]
pub struct Prepared {
    /// Each layer's tree, lowest first (overlayfs wants the reverse order).
    pub layers: Vec<PathBuf>,
    pub lease: LayerLease,
    /// How many layers this call unpacked (the others were in the store already).
    pub unpacked: usize,
}

/// What a removal did.
#[derive(Debug, Default, Clone, Copy)]
pub struct Removed {
    pub images: usize,
    pub layers: usize,
    pub bytes: u64,
    /// Leftovers of interrupted unpacks.
    pub partial: usize,
    /// Images kept because a running sandbox uses one of their layers.
    pub kept_in_use: usize,
    /// Tags of pulled images dropped from the store's OCI layout.
    pub tags: usize,
    /// Pulled blobs (manifests, configurations, compressed layers) no tag reached any more.
    pub blobs: usize,
    pub blob_bytes: u64,
    /// Blobs were not collected because a pull (or a rootless run's unpack of a pulled image)
    /// was running.
    pub pull_running: bool,
}

impl Removed {
    fn add_collected(&mut self, c: crate::tags::Collected) {
        self.blobs += c.blobs;
        self.blob_bytes += c.bytes;
        self.pull_running |= c.pull_running;
    }
}

/// A store directory; see the module's documentation.
#[derive(Debug, Clone)]
pub struct Store {
    root: PathBuf,
}

fn key(d: &Digest) -> String {
    format!("{}-{}", d.algorithm_name(), d.hex())
}

fn digest_of_key(name: &str) -> Option<Digest> {
    let (alg, hex) = name.split_once('-')?;
    Digest::parse(&format!("{alg}:{hex}")).ok()
}

fn now() -> String {
    jiff::Timestamp::now()
        .strftime("%Y-%m-%dT%H:%M:%SZ")
        .to_string()
}

impl Store {
    /// Opens the store at `root`, making it (0700) and its subdirectories if missing.
    pub fn open(root: &Path) -> Result<Self, StoreError> {
        use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
        if let Some(ch) = root.to_string_lossy().chars().find(|c| ",:\\".contains(*c)) {
            return Err(StoreError::BadPath {
                path: root.to_path_buf(),
                ch,
            });
        }
        let s = Self {
            root: root.to_path_buf(),
        };
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(root)
            .map_err(|e| s.io("create", root, e))?;
        std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| s.io("close to other users", root, e))?;
        for sub in ["layers", "tmp", "locks", "images"] {
            let p = root.join(sub);
            match std::fs::create_dir(&p) {
                Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                    return Err(s.io("create", &p, e))
                }
                _ => {}
            }
        }
        Ok(s)
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The OCI layout that pulled images' blobs and tags are kept in (`oci/`).
    pub fn pulled_dir(&self) -> PathBuf {
        self.root.join("oci")
    }

    /// `locks/<name>`, held exclusively: waits for whoever holds it.
    pub(crate) fn lock_exclusive(&self, name: &str) -> Result<File, StoreError> {
        self.lock(name, FlockOperation::LockExclusive)
    }

    /// `locks/<name>`, locked with `op` (waiting, unless `op` is a non-blocking one).
    pub(crate) fn lock(&self, name: &str, op: FlockOperation) -> Result<File, StoreError> {
        let f = self.open_lock(name)?;
        rustix::fs::flock(&f, op)
            .map_err(|e| self.io("lock", &self.root.join("locks").join(name), e.into()))?;
        Ok(f)
    }

    /// `locks/<name>` exclusively without waiting: `None` if someone holds it.
    pub(crate) fn try_lock_exclusive(&self, name: &str) -> Result<Option<File>, StoreError> {
        match self.lock(name, FlockOperation::NonBlockingLockExclusive) {
            Ok(f) => Ok(Some(f)),
            Err(StoreError::Io { source, .. }) if source.kind() == io::ErrorKind::WouldBlock => {
                Ok(None)
            }
            Err(e) => Err(e),
        }
    }

    fn io(&self, op: &'static str, path: &Path, source: io::Error) -> StoreError {
        StoreError::Io {
            op,
            path: path.to_path_buf(),
            source,
        }
    }

    fn layer_dir(&self, d: &Digest) -> PathBuf {
        self.root.join("layers").join(key(d))
    }

    fn lock_file(&self, d: &Digest) -> Result<File, StoreError> {
        self.open_lock(&key(d))
    }

    fn open_lock(&self, name: &str) -> Result<File, StoreError> {
        let p = self.root.join("locks").join(name);
        std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&p)
            .map_err(|e| self.io("open lock", &p, e))
    }

    fn flock(&self, f: &File, op: FlockOperation, d: &Digest) -> Result<(), StoreError> {
        rustix::fs::flock(f, op).map_err(|e| self.io("lock", &self.layer_dir(d), e.into()))
    }

    /// Exclusive without waiting: `None` if someone holds the layer (a container, an unpack).
    fn try_exclusive(&self, d: &Digest) -> Result<Option<File>, StoreError> {
        let f = self.lock_file(d)?;
        match rustix::fs::flock(&f, FlockOperation::NonBlockingLockExclusive) {
            Ok(()) => Ok(Some(f)),
            Err(rustix::io::Errno::WOULDBLOCK) => Ok(None),
            Err(e) => Err(self.io("lock", &self.layer_dir(d), e.into())),
        }
    }

    /// Every layer of `image` in the store, each unpacked once whoever else asks for it at the
    /// same time, and leased (shared locks) until the result is dropped. Records the image.
    pub fn prepare(&self, image: &Image) -> Result<Prepared, StoreError> {
        self.prepare_reporting(image, &mut |_, _| {})
    }

    /// [`Store::prepare`], calling `report(n, layer)` before it unpacks the `n`th layer
    /// (from 1) and `report(0, layer)` once that layer is done (progress on a terminal).
    pub fn prepare_reporting(
        &self,
        image: &Image,
        report: &mut dyn FnMut(usize, &LayerBlob),
    ) -> Result<Prepared, StoreError> {
        let mut layers = Vec::new();
        let mut locks = Vec::new();
        let mut unpacked = 0;
        for (i, layer) in image.layers().iter().enumerate() {
            let lock = self.lock_file(&layer.diff_id)?;
            let dir = self.layer_dir(&layer.diff_id);
            // Shared: no one removes the layer from here on (rm and prune need it exclusive).
            self.flock(&lock, FlockOperation::LockShared, &layer.diff_id)?;
            if !dir.is_dir() {
                // One unpacker at a time, on a lock of its own: the users' shared locks on the
                // first one must not hold up a second first use.
                let unpacking = self.open_lock(&format!("{}.unpack", key(&layer.diff_id)))?;
                self.flock(&unpacking, FlockOperation::LockExclusive, &layer.diff_id)?;
                if !dir.is_dir() {
                    report(i + 1, layer);
                    let r = self.unpack_layer(image, layer);
                    report(0, layer);
                    r?;
                    unpacked += 1;
                }
            }
            layers.push(dir.join("fs"));
            locks.push(lock);
        }
        self.record_image(image)?;
        Ok(Prepared {
            layers,
            lease: LayerLease { _locks: locks },
            unpacked,
        })
    }

    /// Unpacks one layer into `tmp/` and renames it into `layers/` once verified and synced.
    /// The caller holds the layer's unpack lock exclusively and its lock shared.
    fn unpack_layer(&self, image: &Image, layer: &LayerBlob) -> Result<(), StoreError> {
        let k = key(&layer.diff_id);
        let tmp_root = self.root.join("tmp");
        self.remove_partial(&k)?;
        let tmp = tmp_root.join(format!("{k}.{}", std::process::id()));
        let fs = tmp.join("fs");
        std::fs::create_dir_all(&fs).map_err(|e| self.io("create", &fs, e))?;
        let result = (|| {
            let root = Root::open(&fs).map_err(|e| self.io("open", &fs, e))?;
            let opts = ApplyOptions {
                overlay_whiteouts: true,
                ..ApplyOptions::default()
            };
            let stats = image
                .apply(layer, &root, opts)
                .map_err(|source| StoreError::Unpack {
                    layer: layer.diff_id.clone(),
                    source: Box::new(source),
                })?;
            let record = LayerRecord {
                diff_id: layer.diff_id.clone(),
                blob: layer.digest.clone(),
                bytes: stats.bytes,
                entries: stats.entries,
                unpacked: now(),
            };
            let json = serde_json::to_vec_pretty(&record).map_err(io::Error::from);
            let rec = tmp.join("layer.json");
            json.and_then(|j| std::fs::write(&rec, j))
                .map_err(|e| self.io("write", &rec, e))?;
            // Complete on disk before it is named complete: a crash after the rename must
            // not leave a layer that looks whole and is not.
            rustix::fs::syncfs(root.fd()).map_err(|e| self.io("sync", &fs, e.into()))?;
            let dst = self.layer_dir(&layer.diff_id);
            std::fs::rename(&tmp, &dst).map_err(|e| self.io("rename into place", &dst, e))
        })();
        if result.is_err() {
            let _ = std::fs::remove_dir_all(&tmp);
        }
        result
    }

    /// Removes what interrupted unpacks of `k` left in `tmp/` (the caller holds its unpack
    /// lock, or its lock exclusively: no unpack of it runs).
    fn remove_partial(&self, k: &str) -> Result<usize, StoreError> {
        let tmp_root = self.root.join("tmp");
        let mut n = 0;
        let rd = std::fs::read_dir(&tmp_root).map_err(|e| self.io("list", &tmp_root, e))?;
        for e in rd.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.split('.').next() == Some(k) {
                std::fs::remove_dir_all(e.path())
                    .map_err(|err| self.io("remove the leftover", &e.path(), err))?;
                n += 1;
            }
        }
        Ok(n)
    }

    fn record_image(&self, image: &Image) -> Result<(), StoreError> {
        // A pulled image is named by its reference, not by the store's own layout.
        let source = match image.tag() {
            Some(t) if image.layout() == self.pulled_dir() => PathBuf::from(t),
            _ => std::path::absolute(&image.path).unwrap_or_else(|_| image.path.clone()),
        };
        let rec = ImageRecord {
            config_digest: image.config_digest().clone(),
            source,
            layers: image.layers().iter().map(|l| l.diff_id.clone()).collect(),
            last_used: now(),
        };
        let path = self
            .root
            .join("images")
            .join(format!("{}.json", key(&rec.config_digest)));
        // A temporary file of its own per writer (threads of one process record the same
        // image at once: the shim starting two containers of it), renamed into place.
        let write = || -> io::Result<()> {
            let dir = path.parent().unwrap_or(&self.root);
            let mut tmp = tempfile::NamedTempFile::new_in(dir)?;
            io::Write::write_all(&mut tmp, &serde_json::to_vec_pretty(&rec)?)?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        };
        write().map_err(|e| self.io("write", &path, e))
    }

    /// The images recorded, most recently used first.
    pub fn images(&self) -> Result<Vec<ImageRecord>, StoreError> {
        let dir = self.root.join("images");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| self.io("list", &dir, e))?
            .flatten()
        {
            let p = e.path();
            if p.extension().is_none_or(|x| x != "json") {
                continue;
            }
            // A record that cannot be read names nothing: its layers are unreferenced.
            match std::fs::read(&p).map(|b| serde_json::from_slice::<ImageRecord>(&b)) {
                Ok(Ok(r)) => out.push(r),
                _ => tracing::warn!(path = %p.display(), "unreadable image record skipped"),
            }
        }
        out.sort_by(|a, b| b.last_used.cmp(&a.last_used));
        Ok(out)
    }

    /// The complete layers, with whether a running sandbox uses each.
    pub fn layers(&self) -> Result<Vec<LayerInfo>, StoreError> {
        let dir = self.root.join("layers");
        let mut out = Vec::new();
        for e in std::fs::read_dir(&dir)
            .map_err(|e| self.io("list", &dir, e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            let Some(d) = digest_of_key(&name) else {
                continue;
            };
            let rec = std::fs::read(e.path().join("layer.json"))
                .ok()
                .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
                .unwrap_or(LayerRecord {
                    diff_id: d.clone(),
                    blob: None,
                    bytes: 0,
                    entries: 0,
                    unpacked: String::new(),
                });
            let in_use = self.try_exclusive(&d)?.is_none();
            out.push(LayerInfo {
                record: rec,
                in_use,
            });
        }
        Ok(out)
    }

    /// What `rm ID` removes: the image record and the pulled layout's tags `id` names. A
    /// reference (`busybox`, `127.0.0.1:5000/x:v1`) names that tag only; a configuration
    /// digest or a prefix of its hex (4 digits at least), a manifest digest (`sha256:...`,
    /// `NAME@sha256:...`) or the path an image was run from name the image and all its tags.
    fn target(
        &self,
        id: &str,
        records: &[ImageRecord],
        tags: &[Tag],
    ) -> Result<Target, StoreError> {
        let record_of = |configs: &[Digest]| {
            records
                .iter()
                .find(|r| configs.contains(&r.config_digest))
                .cloned()
        };
        let whole = crate::pull::parse_reference(id).ok().map(|r| r.whole());
        if let Some(t) = tags
            .iter()
            .find(|t| t.name == id || whole.as_deref() == Some(t.name.as_str()))
        {
            return Ok(Target {
                record: record_of(&t.configs),
                tags: vec![t.name.clone()],
                name: t.name.clone(),
            });
        }
        let hex = id.rsplit(':').next().unwrap_or(id);
        let by_prefix = |d: &Digest| hex.len() >= 4 && d.hex().starts_with(hex);
        let by_path = std::path::absolute(id).ok();
        let manifest = Digest::parse(id.rsplit('@').next().unwrap_or(id)).ok();
        let mut configs: Vec<Digest> = records
            .iter()
            .filter(|r| {
                by_prefix(&r.config_digest)
                    || by_path.as_deref() == Some(r.source.as_path())
                    || r.source.as_os_str() == id
            })
            .map(|r| r.config_digest.clone())
            .collect();
        for t in tags {
            for c in &t.configs {
                if by_prefix(c) || manifest.as_ref() == Some(&t.manifest) {
                    configs.push(c.clone());
                }
            }
        }
        let mut unique = Vec::new();
        for c in configs {
            if !unique.contains(&c) {
                unique.push(c);
            }
        }
        let config = match unique.len() {
            0 => return Err(StoreError::NoSuchImage { id: id.into() }),
            1 => unique.remove(0),
            n => {
                return Err(StoreError::Ambiguous {
                    id: id.into(),
                    count: n,
                })
            }
        };
        let record = record_of(std::slice::from_ref(&config));
        let tag_names: Vec<String> = tags
            .iter()
            .filter(|t| t.configs.contains(&config))
            .map(|t| t.name.clone())
            .collect();
        let name = match (&record, tag_names.first()) {
            (_, Some(t)) => t.clone(),
            (Some(r), None) => r.source.display().to_string(),
            (None, None) => config.to_string(),
        };
        Ok(Target {
            record,
            tags: tag_names,
            name,
        })
    }

    /// The image record `id` names (see [`Store::remove_image`] for what `id` may be).
    pub fn find(&self, id: &str) -> Result<ImageRecord, StoreError> {
        let tags = crate::tags::tags(self)?;
        self.target(id, &self.images()?, &tags)?
            .record
            .ok_or_else(|| StoreError::NoSuchImage { id: id.into() })
    }

    /// Removes what `id` names (a pulled reference: that tag; an image's digest, short id or
    /// path: the image and all its tags), the layers no other image or tag has, and the
    /// pulled blobs no tag reaches any more. Refused, removing nothing, if a running or created
    /// container uses one of the layers that would go; the error names the containers.
    pub fn remove_image(&self, id: &str) -> Result<Removed, StoreError> {
        let records = self.images()?;
        let tags = crate::tags::tags(self)?;
        let t = self.target(id, &records, &tags)?;
        let kept_tags: Vec<&Tag> = tags.iter().filter(|x| !t.tags.contains(&x.name)).collect();
        // The record goes with its last tag: another tag of the same image keeps it.
        let record = t.record.clone().filter(|r| {
            !kept_tags
                .iter()
                .any(|k| k.configs.contains(&r.config_digest))
        });
        let gone = record.as_ref().map(|r| &r.config_digest);
        let dropped = tags.iter().filter(|x| t.tags.contains(&x.name));
        let mut candidates: Vec<&Digest> = record.iter().flat_map(|r| &r.layers).collect();
        candidates.extend(dropped.flat_map(|x| &x.diff_ids));
        let kept = |d: &Digest| {
            records
                .iter()
                .any(|o| Some(&o.config_digest) != gone && o.layers.contains(d))
                || kept_tags.iter().any(|k| k.diff_ids.contains(d))
        };
        // Only the layers that go are locked: one that another image keeps may be in use.
        let mut held: Vec<(Digest, File)> = Vec::new();
        for d in candidates {
            if kept(d) || held.iter().any(|(h, _)| h == d) {
                continue;
            }
            match self.try_exclusive(d)? {
                Some(lock) => held.push((d.clone(), lock)),
                None => {
                    return Err(StoreError::InUse {
                        layer: d.clone(),
                        image: t.name.clone(),
                        users: self.users_of(d),
                    })
                }
            }
        }
        let mut removed = Removed {
            images: 1,
            ..Removed::default()
        };
        removed.tags = crate::tags::remove_tags(self, &t.tags)?;
        if let Some(r) = &record {
            self.remove_record(&r.config_digest)?;
        }
        for (d, _lock) in &held {
            removed.bytes += self.remove_layer(d)?;
            removed.layers += 1;
        }
        removed.add_collected(crate::tags::collect_blobs(self)?);
        Ok(removed)
    }

    /// Who uses layer `d`: the overlays whose lower layers include it (`/proc/self/mountinfo`),
    /// a runtime's `<sandbox>/shared/<container>/rootfs` named as that container.
    fn users_of(&self, d: &Digest) -> String {
        let fs = self.layer_dir(d).join("fs");
        let canonical = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
        let fs = canonical(&fs);
        let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
        let mut users = Vec::new();
        for line in info.lines() {
            // `ID PARENT MAJ:MIN ROOT MOUNT-POINT OPTIONS [OPTIONAL...] - TYPE SOURCE SUPER`
            let Some((mount, fs_part)) = line.split_once(" - ") else {
                continue;
            };
            let mut f = fs_part.split(' ');
            if f.next() != Some("overlay") {
                continue;
            }
            // `lowerdir=A:B` as mounted, or one `lowerdir+=A` per layer (new mount API).
            let mut lowers = f.nth(1).unwrap_or("").split(',').flat_map(|o| {
                o.strip_prefix("lowerdir=")
                    .or_else(|| o.strip_prefix("lowerdir+="))
                    .unwrap_or("")
                    .split(':')
            });
            if !lowers.any(|l| !l.is_empty() && canonical(&unescape_mountinfo(l.as_bytes())) == fs)
            {
                continue;
            }
            if let Some(mp) = mount.split(' ').nth(4) {
                users.push(describe_mount(&unescape_mountinfo(mp.as_bytes())));
            }
        }
        if users.is_empty() {
            "a running or created container (its mount is not visible here)".into()
        } else {
            users.join(", ")
        }
    }

    fn remove_record(&self, d: &Digest) -> Result<(), StoreError> {
        let p = self.root.join("images").join(format!("{}.json", key(d)));
        match std::fs::remove_file(&p) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(self.io("remove", &p, e)),
            _ => Ok(()),
        }
    }

    /// Removes a layer whose lock the caller holds exclusively; returns its size. It is
    /// renamed into `tmp/` first, so that a removal cut short never leaves a partial layer
    /// under its complete name.
    fn remove_layer(&self, d: &Digest) -> Result<u64, StoreError> {
        let dir = self.layer_dir(d);
        let bytes = std::fs::read(dir.join("layer.json"))
            .ok()
            .and_then(|b| serde_json::from_slice::<LayerRecord>(&b).ok())
            .map_or(0, |r| r.bytes);
        let doomed =
            self.root
                .join("tmp")
                .join(format!("{}.removed-{}", key(d), std::process::id()));
        match std::fs::rename(&dir, &doomed) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
            r => r.map_err(|e| self.io("remove", &dir, e))?,
        }
        std::fs::remove_dir_all(&doomed).map_err(|e| self.io("remove", &doomed, e))?;
        Ok(bytes)
    }

    /// Removes leftovers of interrupted unpacks and downloads, the layers no image record or
    /// pulled tag names and the pulled blobs no tag reaches; with `all`, first every image
    /// (record and tags) none of whose layers a running or created container uses.
    pub fn prune(&self, all: bool) -> Result<Removed, StoreError> {
        let mut removed = Removed::default();
        let tmp_root = self.root.join("tmp");
        let mut partial_keys: Vec<String> = std::fs::read_dir(&tmp_root)
            .map_err(|e| self.io("list", &tmp_root, e))?
            .flatten()
            .filter_map(|e| {
                let n = e.file_name().to_string_lossy().into_owned();
                n.split('.').next().map(String::from)
            })
            .collect();
        partial_keys.sort();
        partial_keys.dedup();
        for k in partial_keys {
            let Some(d) = digest_of_key(&k) else { continue };
            // Held: an unpack is running (its `tmp/` entry is not a leftover).
            if let Some(_lock) = self.try_exclusive(&d)? {
                removed.partial += self.remove_partial(&k)?;
            }
        }
        let mut images = self.images()?;
        let mut tags = crate::tags::tags(self)?;
        if all {
            let mut kept = Vec::new();
            for rec in images {
                if self.all_free(&rec.layers)? {
                    self.remove_record(&rec.config_digest)?;
                    removed.images += 1;
                } else {
                    removed.kept_in_use += 1;
                    kept.push(rec);
                }
            }
            images = kept;
            let (mut dropped, mut kept_tags) = (Vec::new(), Vec::new());
            for t in tags {
                let recorded = images.iter().any(|r| t.configs.contains(&r.config_digest));
                if !recorded && self.all_free(&t.diff_ids)? {
                    dropped.push(t.name.clone());
                } else {
                    kept_tags.push(t);
                }
            }
            removed.tags = crate::tags::remove_tags(self, &dropped)?;
            tags = kept_tags;
        }
        for info in self.layers()? {
            let d = &info.record.diff_id;
            if images.iter().any(|r| r.layers.contains(d))
                || tags.iter().any(|t| t.diff_ids.contains(d))
            {
                continue;
            }
            if let Some(_lock) = self.try_exclusive(d)? {
                removed.bytes += self.remove_layer(d)?;
                removed.layers += 1;
            }
        }
        removed.add_collected(crate::tags::collect_blobs(self)?);
        Ok(removed)
    }

    /// No running or created container uses any of `layers`.
    fn all_free(&self, layers: &[Digest]) -> Result<bool, StoreError> {
        for d in layers {
            if self.try_exclusive(d)?.is_none() {
                return Ok(false);
            }
        }
        Ok(true)
    }
}

/// What `rm` removes (see [`Store::remove_image`]).
struct Target {
    record: Option<ImageRecord>,
    tags: Vec<String>,
    /// How the user knows the image: its first tag, else its source.
    name: String,
}

/// A path from `/proc/self/mountinfo`, whose space, tab, newline and backslash are `\ooo`
/// octal escapes (also used by the runtime's mount code).
pub fn unescape_mountinfo(b: &[u8]) -> PathBuf {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let octal = b
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(|c| (b'0'..=b'7').contains(c)));
        if let (b'\\', Some(d)) = (b[i], octal) {
            let n = d.iter().fold(0u32, |n, c| n * 8 + u32::from(c - b'0'));
            if let Ok(n) = u8::try_from(n) {
                out.push(n);
                i += 4;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    PathBuf::from(std::ffi::OsString::from_vec(out))
}

/// A mount point as a user knows it: the runtime mounts a container's root filesystem at
/// `<sandbox root>/<sandbox>/shared/<container>/rootfs`.
fn describe_mount(mp: &Path) -> String {
    let names: Vec<String> = mp
        .iter()
        .rev()
        .take(4)
        .map(|c| c.to_string_lossy().into_owned())
        .collect();
    match names.as_slice() {
        [rootfs, container, shared, sandbox] if rootfs == "rootfs" && shared == "shared" => {
            format!("container {container} of sandbox {sandbox}")
        }
        _ => format!("the overlay mounted at {}", mp.display()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_name_their_container() {
        assert_eq!(
            unescape_mountinfo(br"/a\040b/c\134d"),
            Path::new(r"/a b/c\d")
        );
        assert_eq!(unescape_mountinfo(br"/x\0"), Path::new(r"/x\0"));
        assert_eq!(
            describe_mount(Path::new("/run/shoji/sb-1/shared/web/rootfs")),
            "container web of sandbox sb-1"
        );
        assert_eq!(
            describe_mount(Path::new("/mnt/x")),
            "the overlay mounted at /mnt/x"
        );
    }
}
