//! Images from a registry: `[REGISTRY/]NAME[:TAG|@DIGEST]` (Docker's defaults for a bare name:
//! `docker.io`, `library/`, `latest`) fetched with `oci-client` into the store's own OCI
//! layout (`<store>/oci`, tagged with the whole reference), from where [`crate::Image::open`]
//! reads it like any local layout. Decisions in `docs/adr/021-registry-pulls.md`.
//!
//! Every blob (manifests, configuration, layers) is hashed while it arrives and stored under
//! its digest only once it matched (a temporary file renamed into place); a download that
//! grows past its descriptor's size is cut off. Manifests and indexes, whose size no descriptor
//! gives when they are named by a tag, are read by Shoji's own GET with a cap
//! ([`crate::manifests`], ADR 026); a configuration whose descriptor is over its cap is not
//! fetched. A blob already stored is not fetched again, and one blob is fetched by one process
//! at a time (a lock per blob, `locks/blob-<alg>-<hex>`).

use std::io::{self, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};

use futures::StreamExt;
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::errors::{OciDistributionError, OciErrorCode};
use oci_client::manifest::{self as media, OciDescriptor};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use oci_spec::image::{ImageIndex, ImageManifest};
use tracing::info_span;
use tracing::Instrument;

use crate::credentials::{credentials, CredentialsError};
use crate::digest::{self, Digest, DigestError, Digester};
use crate::layout::{self, MAX_JSON_BYTES, REF_NAME};
use crate::manifests::{self, Authorization, ManifestGetError};
use crate::store::{Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PullError {
    #[error(
        "{reference:?} is neither an existing path nor an image reference \
         ([REGISTRY/]NAME[:TAG|@DIGEST])"
    )]
    Reference {
        reference: String,
        #[source]
        source: oci_client::ParseError,
    },
    #[error(transparent)]
    Credentials(#[from] CredentialsError),
    #[error("registry {registry}: {step} of {reference} failed{hint}")]
    Registry {
        registry: String,
        reference: String,
        step: String,
        hint: &'static str,
        #[source]
        source: Box<OciDistributionError>,
    },
    #[error(
        "registry {registry} sent {what} of {reference} not matching its digest; it was not \
         stored: the registry's copy is corrupt or was tampered with"
    )]
    Verify {
        registry: String,
        reference: String,
        what: String,
        #[source]
        source: Box<DigestError>,
    },
    #[error(
        "registry {registry}: {what} of {reference} is too large to read and nothing was \
         stored (real ones are a few KiB: the registry is broken or hostile)"
    )]
    TooLarge {
        registry: String,
        reference: String,
        what: String,
        #[source]
        source: Box<ManifestGetError>,
    },
    #[error(
        "registry {registry}: {what} of {reference} is {size} bytes by its descriptor, more \
         than the cap of {cap} bytes; it was not fetched"
    )]
    DescriptorTooLarge {
        registry: String,
        reference: String,
        what: String,
        size: u64,
        cap: u64,
    },
    #[error("registry {registry}: {what} of {reference} is unusable: {message}")]
    Malformed {
        registry: String,
        reference: String,
        what: String,
        message: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("cannot {op} {path} in the image store")]
    Io {
        op: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// How to reach the registry.
#[derive(Debug, Clone, Default)]
pub struct PullOptions {
    /// Plain HTTP whatever the registry (`--plain-http`); loopback registries use it anyway.
    pub plain_http: bool,
    /// A progress bar per download on standard error.
    pub progress: bool,
    /// The Docker configuration directory (default: `$DOCKER_CONFIG`, else `~/.docker`).
    pub docker_config: Option<PathBuf>,
}

/// What a pull left in the store.
#[derive(Debug, Clone)]
pub struct Pulled {
    /// The reference as stored (Docker's defaults filled in): the tag in the store's layout.
    pub reference: String,
    /// The digest of the manifest (or index) the reference named.
    pub manifest_digest: Digest,
    /// `<store>/oci:<reference>`: a path [`crate::Image::open`] takes.
    pub image: PathBuf,
    pub blobs_downloaded: usize,
    pub blobs_cached: usize,
    pub bytes_downloaded: u64,
}

/// Parses a reference with Docker's defaults (`busybox` is `docker.io/library/busybox:latest`).
pub fn parse_reference(s: &str) -> Result<Reference, PullError> {
    s.parse::<Reference>()
        .map_err(|source| PullError::Reference {
            reference: s.into(),
            source,
        })
}

/// The host of `registry` (`HOST[:PORT]`, `[V6]:PORT`) is `localhost` or a loopback address:
/// such a registry is spoken to in plain HTTP, as Docker and containerd do by default.
pub fn is_loopback(registry: &str) -> bool {
    let host = if let Some(rest) = registry.strip_prefix('[') {
        rest.split(']').next().unwrap_or(rest)
    } else {
        registry.split(':').next().unwrap_or(registry)
    };
    host.eq_ignore_ascii_case("localhost") || host.parse::<IpAddr>().is_ok_and(|a| a.is_loopback())
}

/// What to tell the user to do about a registry error.
fn hint(e: &OciDistributionError, registry: &str) -> &'static str {
    match e {
        OciDistributionError::UnauthorizedError { .. }
        | OciDistributionError::AuthenticationFailure(_) => {
            "; not authorized: put credentials for this registry in ~/.docker/config.json (or \
             $DOCKER_CONFIG/config.json): `auths`, or a helper in `credHelpers` or `credsStore`"
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope.errors.iter().any(|e| {
                matches!(
                    e.code,
                    OciErrorCode::ManifestUnknown
                        | OciErrorCode::NameUnknown
                        | OciErrorCode::BlobUnknown
                )
            }) =>
        {
            "; the registry does not have it: check the name, tag or digest"
        }
        OciDistributionError::RegistryError { envelope, .. }
            if envelope
                .errors
                .iter()
                .any(|e| matches!(e.code, OciErrorCode::Unauthorized | OciErrorCode::Denied)) =>
        {
            "; access denied: put credentials for this registry in ~/.docker/config.json (or \
             $DOCKER_CONFIG/config.json): `auths`, or a helper in `credHelpers` or `credsStore`"
        }
        OciDistributionError::RequestError(_) if !is_loopback(registry) => {
            "; is the registry reachable? (a registry without TLS needs --plain-http)"
        }
        OciDistributionError::RequestError(_) => "; is the registry running and reachable?",
        _ => "",
    }
}

/// The largest image configuration Shoji fetches (JSON read into memory, as a local layout's).
pub const MAX_CONFIG_BYTES: u64 = MAX_JSON_BYTES;

/// One pull: the clients, the reference and where blobs go.
struct Puller<'a> {
    client: Client,
    auth: RegistryAuth,
    /// The manifest GETs' own client (same timeouts as `client`'s).
    http: reqwest::Client,
    plain_http: bool,
    /// Obtained through `client` before the first manifest GET.
    authz: Option<Authorization>,
    reference: Reference,
    store: &'a Store,
    blobs: PathBuf,
    progress: Option<indicatif::MultiProgress>,
    downloaded: usize,
    cached: usize,
    bytes: u64,
}

/// Pulls `reference` into `store`'s layout and tags it there; the layers are not unpacked
/// (the store's `prepare` does that, verifying each `diff_id`).
pub async fn pull(store: &Store, reference: &str, opts: &PullOptions) -> Result<Pulled, PullError> {
    let r = parse_reference(reference)?;
    let registry = r.registry().to_string();
    let span = info_span!(
        "image.pull",
        source = "runtime",
        subsystem = "image",
        image.reference = %r.whole(),
        image.registry = %registry,
        image.manifest_digest = tracing::field::Empty,
        image.blobs.downloaded = tracing::field::Empty,
        image.blobs.cached = tracing::field::Empty,
        image.bytes.downloaded = tracing::field::Empty,
    );
    let plain = opts.plain_http || is_loopback(&registry);
    let config = ClientConfig {
        protocol: if plain {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        // Shoji's guests are linux on this host's architecture; the layout's own pick
        // (linux/<arch>) is used, not the client's.
        platform_resolver: None,
        connect_timeout: Some(std::time::Duration::from_secs(10)),
        read_timeout: Some(std::time::Duration::from_secs(60)),
        ..ClientConfig::default()
    };
    let auth = credentials(r.resolve_registry(), opts.docker_config.as_deref())?;
    let dir = store.pulled_dir();
    let blobs = dir.join("blobs");
    for d in [&dir, &blobs, &blobs.join("sha256"), &blobs.join("sha512")] {
        match std::fs::create_dir(d) {
            Err(e) if e.kind() != io::ErrorKind::AlreadyExists => {
                return Err(PullError::Io {
                    op: "create",
                    path: d.clone(),
                    source: e,
                })
            }
            _ => {}
        }
    }
    // No blob collection (`image rm`, `prune`) until the tag names what this pull stores.
    let gc_store = store.clone();
    let _gc = tokio::task::spawn_blocking(move || crate::tags::hold_blobs(&gc_store))
        .await
        .map_err(|e| PullError::Io {
            op: "lock",
            path: store.root().join("locks").join(crate::tags::GC_LOCK),
            source: io::Error::other(e.to_string()),
        })??;
    let http = reqwest::Client::builder()
        .connect_timeout(std::time::Duration::from_secs(10))
        .read_timeout(std::time::Duration::from_secs(60))
        .user_agent(concat!("shoji/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| PullError::Registry {
            registry: registry.clone(),
            reference: r.whole(),
            step: "set up (HTTP client)".into(),
            hint: "",
            source: Box::new(e.into()),
        })?;
    let mut p = Puller {
        client: Client::new(config),
        auth,
        http,
        plain_http: plain,
        authz: None,
        reference: r,
        store,
        blobs,
        progress: opts.progress.then(indicatif::MultiProgress::new),
        downloaded: 0,
        cached: 0,
        bytes: 0,
    };
    let result = p.run().instrument(span.clone()).await;
    span.record("image.blobs.downloaded", p.downloaded);
    span.record("image.blobs.cached", p.cached);
    span.record("image.bytes.downloaded", p.bytes);
    let (manifest_digest, media_type, size) = result?;
    span.record(
        "image.manifest_digest",
        manifest_digest.to_string().as_str(),
    );
    let name = p.reference.whole();
    write_index(store, &name, &manifest_digest, &media_type, size)?;
    Ok(Pulled {
        image: PathBuf::from(format!("{}:{name}", dir.display())),
        reference: name,
        manifest_digest,
        blobs_downloaded: p.downloaded,
        blobs_cached: p.cached,
        bytes_downloaded: p.bytes,
    })
}

const MANIFEST_TYPES: &[&str] = &[
    media::OCI_IMAGE_MEDIA_TYPE,
    media::OCI_IMAGE_INDEX_MEDIA_TYPE,
    media::IMAGE_MANIFEST_MEDIA_TYPE,
    media::IMAGE_MANIFEST_LIST_MEDIA_TYPE,
];

impl Puller<'_> {
    fn registry(&self) -> String {
        self.reference.registry().to_string()
    }

    fn registry_err(&self, step: String, e: OciDistributionError) -> PullError {
        PullError::Registry {
            registry: self.registry(),
            reference: self.reference.whole(),
            hint: hint(&e, self.reference.registry()),
            step,
            source: Box::new(e),
        }
    }

    fn malformed(&self, what: &str, message: String) -> PullError {
        PullError::Malformed {
            registry: self.registry(),
            reference: self.reference.whole(),
            what: what.into(),
            message,
        }
    }

    fn blob_path(&self, d: &Digest) -> PathBuf {
        self.blobs.join(d.algorithm_name()).join(d.hex())
    }

    /// Fetches the manifest the reference names (and, for an index, this host's), its
    /// configuration and layers. Returns the top manifest's digest, media type and size.
    async fn run(&mut self) -> Result<(Digest, String, u64), PullError> {
        let top_ref = self.reference.clone();
        let (top, top_digest, top_type) = self.manifest(&top_ref, "resolve").await?;
        let mut body = top.clone();
        let mut media_type = top_type.clone();
        // Nested indexes (multi-platform images), to a bounded depth, as the layout reader.
        for _ in 0..4 {
            if !(media_type.contains("index") || media_type.contains("manifest.list")) {
                break;
            }
            let index: ImageIndex = serde_json::from_slice(&body)
                .map_err(|e| self.malformed("the image index", e.to_string()))?;
            let desc = layout::pick_manifest(&index, "image index")
                .map_err(|e| self.malformed("the image index", e.to_string()))?;
            let r = self.reference.clone_with_digest(desc.digest().to_string());
            let (b, _, t) = self.manifest(&r, "manifest").await?;
            body = b;
            media_type = t;
        }
        let manifest: ImageManifest = serde_json::from_slice(&body)
            .map_err(|e| self.malformed("the manifest", e.to_string()))?;
        let config = manifest.config();
        if config.size() > MAX_CONFIG_BYTES {
            return Err(PullError::DescriptorTooLarge {
                registry: self.registry(),
                reference: self.reference.whole(),
                what: "the configuration".into(),
                size: config.size(),
                cap: MAX_CONFIG_BYTES,
            });
        }
        self.blob(config.digest().as_ref(), config.size(), "configuration")
            .await?;
        for (i, l) in manifest.layers().iter().enumerate() {
            self.blob(l.digest().as_ref(), l.size(), &format!("layer {}", i + 1))
                .await?;
        }
        Ok((top_digest, top_type, top.len() as u64))
    }

    /// Fetches a manifest (`step` names it in errors), verifies it against the digest the
    /// reference names (if it names one), stores it. Returns its bytes, digest, media type.
    async fn manifest(
        &mut self,
        r: &Reference,
        step: &str,
    ) -> Result<(Vec<u8>, Digest, String), PullError> {
        let what = if step == "resolve" {
            "the manifest or index"
        } else {
            "the manifest"
        };
        let step = format!("{step} (manifest)");
        let authz = match &self.authz {
            Some(a) => a.clone(),
            None => {
                let a = manifests::authorization(&self.client, r, &self.auth)
                    .await
                    .map_err(|e| self.registry_err("authenticate".into(), e))?;
                self.authz = Some(a.clone());
                a
            }
        };
        let url = manifests::manifest_url(r, self.plain_http);
        let got = manifests::get_manifest(&self.http, &url, MANIFEST_TYPES, &authz).await;
        let fetched = match got {
            Ok(b) => b,
            Err(ManifestGetError::Registry(e)) => return Err(self.registry_err(step, e)),
            Err(e) => {
                return Err(PullError::TooLarge {
                    registry: self.registry(),
                    reference: self.reference.whole(),
                    what: what.into(),
                    source: Box::new(e),
                })
            }
        };
        let body = fetched.bytes;
        let verify_err = |source| PullError::Verify {
            registry: self.registry(),
            reference: self.reference.whole(),
            what: what.into(),
            source: Box::new(source),
        };
        // What the registry says it sent must be what it sent (as oci-client checked).
        if let Some(h) = &fetched.digest_header {
            let claimed = Digest::parse(h)
                .map_err(|e| self.malformed("the Docker-Content-Digest header", e.to_string()))?;
            let mut dg = Digester::new(claimed.algorithm());
            dg.update(&body);
            let (got, n) = dg.finish();
            digest::check(what, &claimed, None, &got, n).map_err(verify_err)?;
        }
        if let Some(d) = r.digest() {
            let expected =
                Digest::parse(d).map_err(|e| self.malformed("the digest", e.to_string()))?;
            let mut dg = Digester::new(expected.algorithm());
            dg.update(&body);
            let (got, n) = dg.finish();
            digest::check(what, &expected, None, &got, n).map_err(verify_err)?;
            self.store_bytes(&expected, &body)?;
            let mt = media_type_of(&body);
            return Ok((body, expected, mt));
        }
        let got = Digest::sha256_of(&body);
        self.store_bytes(&got, &body)?;
        let mt = media_type_of(&body);
        Ok((body, got, mt))
    }

    /// Writes a verified small blob under its digest (temporary file, renamed).
    fn store_bytes(&self, d: &Digest, bytes: &[u8]) -> Result<(), PullError> {
        let path = self.blob_path(d);
        if path.is_file() {
            return Ok(());
        }
        let io_err = |op, source| PullError::Io {
            op,
            path: path.clone(),
            source,
        };
        let dir = path.parent().unwrap_or(&self.blobs);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("create", e))?;
        tmp.write_all(bytes).map_err(|e| io_err("write", e))?;
        tmp.as_file().sync_all().map_err(|e| io_err("sync", e))?;
        tmp.persist(&path)
            .map_err(|e| io_err("rename into place", e.error))?;
        Ok(())
    }

    /// Fetches blob `digest` (`size` bytes) unless it is stored, verifying it on the way.
    async fn blob(&mut self, digest: &str, size: u64, what: &str) -> Result<(), PullError> {
        let d = Digest::parse(digest).map_err(|e| self.malformed(what, e.to_string()))?;
        let span = info_span!(
            "image.pull.blob",
            source = "runtime",
            subsystem = "image",
            blob.digest = %d,
            blob.size = size,
            blob.kind = what,
            blob.cached = tracing::field::Empty,
        );
        let path = self.blob_path(&d);
        // One download of a blob at a time: a second pull waits, then finds it stored.
        let lock_name = format!("blob-{}-{}", d.algorithm_name(), d.hex());
        let store = self.store.clone();
        let _lock = tokio::task::spawn_blocking(move || store.lock_exclusive(&lock_name))
            .await
            .map_err(|e| PullError::Io {
                op: "lock",
                path: path.clone(),
                source: io::Error::other(e.to_string()),
            })??;
        if path.is_file() {
            span.record("blob.cached", true);
            self.cached += 1;
            return Ok(());
        }
        span.record("blob.cached", false);
        self.download(&d, size, what, &path)
            .instrument(span)
            .await?;
        self.downloaded += 1;
        Ok(())
    }

    async fn download(
        &mut self,
        d: &Digest,
        size: u64,
        what: &str,
        path: &Path,
    ) -> Result<(), PullError> {
        let io_err = |op, source| PullError::Io {
            op,
            path: path.to_path_buf(),
            source,
        };
        let step = format!("blob {d} ({what})");
        let desc = OciDescriptor {
            digest: d.to_string(),
            size: size as i64,
            ..OciDescriptor::default()
        };
        let mut stream = self
            .client
            .pull_blob_stream(&self.reference, &desc)
            .await
            .map_err(|e| self.registry_err(step.clone(), e))?;
        let bar = self.progress.as_ref().map(|m| {
            let b = m.add(indicatif::ProgressBar::new(size));
            b.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec}",
                )
                .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
                .progress_chars("=> "),
            );
            b.set_message(format!("{} {}", &d.hex()[..12], what));
            b
        });
        let dir = path.parent().unwrap_or(&self.blobs);
        let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| io_err("create", e))?;
        let mut hash = Digester::new(d.algorithm());
        let (registry, reference) = (self.registry(), self.reference.whole());
        let verify_err = |source| PullError::Verify {
            registry: registry.clone(),
            reference: reference.clone(),
            what: format!("blob {d} ({what})"),
            source: Box::new(source),
        };
        while let Some(chunk) = stream.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    // oci-client checks the digest too, at the end: ours names what was wrong.
                    let (got, n) = hash.finish();
                    if n == size && got != *d {
                        return Err(verify_err(DigestError::Mismatch {
                            what: "the blob".into(),
                            expected: d.clone(),
                            got,
                        }));
                    }
                    return Err(self.registry_err(
                        format!("{step}, after {n} of {size} bytes,"),
                        OciDistributionError::IoError(e),
                    ));
                }
            };
            hash.update(&chunk);
            // A registry that sends more than the descriptor says is cut off there.
            if hash.count() > size {
                return Err(verify_err(DigestError::Size {
                    what: "the blob".into(),
                    expected: size,
                    got: hash.count(),
                }));
            }
            tmp.write_all(&chunk).map_err(|e| io_err("write", e))?;
            self.bytes += chunk.len() as u64;
            if let Some(b) = &bar {
                b.inc(chunk.len() as u64);
            }
        }
        if let Some(b) = bar {
            b.finish_and_clear();
        }
        let (got, n) = hash.finish();
        digest::check("the blob", d, Some(size), &got, n).map_err(verify_err)?;
        tmp.as_file().sync_all().map_err(|e| io_err("sync", e))?;
        tmp.persist(path)
            .map_err(|e| io_err("rename into place", e.error))?;
        Ok(())
    }
}

/// The `mediaType` a manifest declares; by shape when it declares none.
fn media_type_of(body: &[u8]) -> String {
    #[derive(serde::Deserialize)]
    struct Head {
        #[serde(rename = "mediaType")]
        media_type: Option<String>,
        manifests: Option<serde_json::Value>,
    }
    match serde_json::from_slice::<Head>(body) {
        Ok(Head {
            media_type: Some(t),
            ..
        }) => t,
        Ok(Head {
            manifests: Some(_), ..
        }) => media::OCI_IMAGE_INDEX_MEDIA_TYPE.into(),
        _ => media::OCI_IMAGE_MEDIA_TYPE.into(),
    }
}

/// Tags `digest` as `name` in the layout's `index.json` (replacing an older entry of that
/// name).
fn write_index(
    store: &Store,
    name: &str,
    digest: &Digest,
    media_type: &str,
    size: u64,
) -> Result<(), PullError> {
    crate::tags::update_index(store, |entries| {
        entries.retain(|e| e["annotations"][REF_NAME].as_str() != Some(name));
        entries.push(serde_json::json!({
            "mediaType": media_type,
            "digest": digest.to_string(),
            "size": size,
            "annotations": { REF_NAME: name },
        }));
    })?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_registries_are_plain_http() {
        for r in [
            "localhost",
            "localhost:5000",
            "127.0.0.1:5000",
            "127.3.2.1",
            "[::1]:5000",
        ] {
            assert!(is_loopback(r), "{r}");
        }
        for r in [
            "docker.io",
            "10.0.0.1:5000",
            "registry.example:443",
            "[fe80::1]:5000",
        ] {
            assert!(!is_loopback(r), "{r}");
        }
    }

    #[test]
    fn bare_names_take_dockers_defaults() {
        let r = parse_reference("busybox").unwrap();
        assert_eq!(r.whole(), "docker.io/library/busybox:latest");
        let r = parse_reference("127.0.0.1:5000/x/y:v1").unwrap();
        assert_eq!(
            (r.registry(), r.repository(), r.tag()),
            ("127.0.0.1:5000", "x/y", Some("v1"))
        );
        assert!(parse_reference("UPPER/Case::").is_err());
    }
}
