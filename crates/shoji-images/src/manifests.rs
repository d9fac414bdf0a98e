//! Manifests and indexes from a registry, read by a GET of Shoji's own that stops at a cap
//! (ADR 026). `oci-client` reads a whole manifest body into memory before its caller sees its
//! size, so a hostile registry could answer a "manifest" of gigabytes; here a `Content-Length`
//! over the cap is refused before the body is read, and a body without one that grows past the
//! cap is cut off there. `oci-client` still does the token dance ([`authorization`]) and the
//! blobs, which are streamed into files with their descriptor's size as the bound.

use oci_client::errors::{OciDistributionError, OciEnvelope};
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference, RegistryOperation};

/// The largest manifest or index Shoji reads from a registry: 4 MiB. containerd's resolver
/// refuses larger ones too (`MaxManifestSize`, `4 * 1048 * 1048`, meant as 4 MiB), and the OCI
/// distribution specification asks registries to accept manifests of at least 4 MiB; real
/// ones are a few KiB (an index of every platform of a popular image: under 10 KiB).
pub const MAX_MANIFEST_BYTES: u64 = 4 << 20;

/// An error answer's body (the registry's JSON envelope) is read up to this much.
const MAX_ERROR_BYTES: u64 = 64 << 10;

#[derive(Debug, thiserror::Error)]
pub enum ManifestGetError {
    /// The request, or the registry's answer (status, error envelope), as `oci-client` would
    /// report it: what the pull's hints know how to explain.
    #[error(transparent)]
    Registry(#[from] OciDistributionError),
    #[error(
        "the registry declared {declared} bytes (Content-Length), more than the cap of \
         {MAX_MANIFEST_BYTES} bytes; refused before reading it"
    )]
    Declared { declared: u64 },
    #[error(
        "the registry sent more than the cap of {MAX_MANIFEST_BYTES} bytes (no Content-Length \
         said so); cut off there"
    )]
    Grew,
}

/// How a request proves who asks: what `oci-client` obtained for this repository.
#[derive(Clone)]
pub enum Authorization {
    None,
    Bearer(String),
    Basic(String, String),
}

impl std::fmt::Debug for Authorization {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Authorization::None => "None",
            Authorization::Bearer(_) => "Bearer(<redacted>)",
            Authorization::Basic(..) => "Basic(<redacted>)",
        })
    }
}

/// Asks `client` to authenticate for pulls from `r`'s repository (the registry's `/v2/`
/// challenge, then its token service for a bearer token); `client` keeps the token for its
/// blob requests, and the answer is what the manifest GETs send. A registry that challenges
/// with Basic, or not at all, gets the configured user and password, as `oci-client` sends
/// them.
pub async fn authorization(
    client: &Client,
    r: &Reference,
    auth: &RegistryAuth,
) -> Result<Authorization, OciDistributionError> {
    match client.auth(r, auth, RegistryOperation::Pull).await? {
        Some(token) => Ok(Authorization::Bearer(token)),
        None => Ok(match auth {
            RegistryAuth::Basic(u, p) => Authorization::Basic(u.clone(), p.clone()),
            RegistryAuth::Bearer(t) => Authorization::Bearer(t.clone()),
            RegistryAuth::Anonymous => Authorization::None,
        }),
    }
}

/// The manifest endpoint of `r` (its digest if it names one, else its tag).
pub fn manifest_url(r: &Reference, plain_http: bool) -> String {
    format!(
        "{}://{}/v2/{}/manifests/{}",
        if plain_http { "http" } else { "https" },
        r.resolve_registry(),
        r.repository(),
        r.digest().or(r.tag()).unwrap_or("latest"),
    )
}

/// What a manifest GET read.
#[derive(Debug)]
pub struct ManifestBody {
    pub bytes: Vec<u8>,
    /// The registry's `Docker-Content-Digest` header, when it sent one.
    pub digest_header: Option<String>,
}

/// GETs `url` with `accept` as the media types, reading at most [`MAX_MANIFEST_BYTES`].
pub async fn get_manifest(
    http: &reqwest::Client,
    url: &str,
    accept: &[&str],
    authz: &Authorization,
) -> Result<ManifestBody, ManifestGetError> {
    let mut req = http
        .get(url)
        .header(reqwest::header::ACCEPT, accept.join(", "));
    // reqwest drops the Authorization header on a redirect to another host.
    req = match authz {
        Authorization::None => req,
        Authorization::Bearer(t) => req.bearer_auth(t),
        Authorization::Basic(u, p) => req.basic_auth(u, Some(p)),
    };
    let mut res = req.send().await.map_err(OciDistributionError::from)?;
    let status = res.status();
    if status != reqwest::StatusCode::OK {
        // An error body that fails or is too long to read still leaves its status to report.
        let body = read_capped(&mut res, MAX_ERROR_BYTES)
            .await
            .ok()
            .flatten()
            .unwrap_or_default();
        return Err(status_error(status, &body, url).into());
    }
    if let Some(declared) = res.content_length() {
        if declared > MAX_MANIFEST_BYTES {
            return Err(ManifestGetError::Declared { declared });
        }
    }
    let digest_header = res
        .headers()
        .get("Docker-Content-Digest")
        .and_then(|v| v.to_str().ok())
        .map(str::to_string);
    let bytes = read_capped(&mut res, MAX_MANIFEST_BYTES)
        .await?
        .ok_or(ManifestGetError::Grew)?;
    Ok(ManifestBody {
        bytes,
        digest_header,
    })
}

/// The body, unless it grows past `cap` (`None`: the connection is dropped there).
async fn read_capped(
    res: &mut reqwest::Response,
    cap: u64,
) -> Result<Option<Vec<u8>>, OciDistributionError> {
    let mut buf = Vec::new();
    while let Some(chunk) = res.chunk().await? {
        if (buf.len() + chunk.len()) as u64 > cap {
            return Ok(None);
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(Some(buf))
}

/// A non-200 answer as `oci-client` reports it (so the pull's hints apply alike).
fn status_error(status: reqwest::StatusCode, body: &[u8], url: &str) -> OciDistributionError {
    let url = url.to_string();
    if status == reqwest::StatusCode::UNAUTHORIZED {
        return OciDistributionError::UnauthorizedError { url };
    }
    if status.is_client_error() {
        if let Ok(envelope) = serde_json::from_slice::<OciEnvelope>(body) {
            return OciDistributionError::RegistryError { envelope, url };
        }
    }
    OciDistributionError::ServerError {
        code: status.as_u16(),
        url,
        message: String::from_utf8_lossy(body).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_name_the_digest_before_the_tag() {
        let r: Reference = "127.0.0.1:5000/a/b:v1".parse().unwrap();
        assert_eq!(
            manifest_url(&r, true),
            "http://127.0.0.1:5000/v2/a/b/manifests/v1"
        );
        let d = format!("sha256:{}", "0".repeat(64));
        let r = r.clone_with_digest(d.clone());
        assert_eq!(
            manifest_url(&r, false),
            format!("https://127.0.0.1:5000/v2/a/b/manifests/{d}")
        );
        // Docker Hub's registry is reached at its API host.
        let r: Reference = "busybox".parse().unwrap();
        assert_eq!(
            manifest_url(&r, false),
            "https://index.docker.io/v2/library/busybox/manifests/latest"
        );
    }

    #[test]
    fn error_answers_keep_their_registry_codes() {
        let url = "http://r/v2/x/manifests/y";
        let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"no"}]}"#;
        assert!(matches!(
            status_error(reqwest::StatusCode::NOT_FOUND, body, url),
            OciDistributionError::RegistryError { .. }
        ));
        assert!(matches!(
            status_error(reqwest::StatusCode::UNAUTHORIZED, b"", url),
            OciDistributionError::UnauthorizedError { .. }
        ));
        assert!(matches!(
            status_error(reqwest::StatusCode::BAD_GATEWAY, b"<html>", url),
            OciDistributionError::ServerError { code: 502, .. }
        ));
    }
}
