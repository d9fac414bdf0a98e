//! Registry credentials from Docker's configuration file (`$DOCKER_CONFIG/config.json`, else
//! `~/.docker/config.json`), as `docker login` leaves them: a credential helper named for the
//! registry in `credHelpers`, else the default helper `credsStore`, else the `auths` entry
//! (`auth`: base64 `user:password`, or `username` and `password`). A helper is the program
//! `docker-credential-NAME` on `PATH`, run as `docker-credential-NAME get` with the registry's
//! server address on standard input; it answers `{"ServerURL", "Username", "Secret"}` in JSON,
//! or fails saying `credentials not found`, in which case `auths` is looked at. Decisions in
//! `docs/adr/021-registry-pulls.md`.

use std::collections::BTreeMap;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use oci_client::secrets::RegistryAuth;

#[derive(Debug, thiserror::Error)]
pub enum CredentialsError {
    #[error("cannot read registry credentials from {path}; fix the file or remove it")]
    File {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "cannot run credential helper docker-credential-{helper} (named in {path}) for registry \
         {registry}; install it on PATH or remove it from the file"
    )]
    HelperRun {
        helper: String,
        registry: String,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "credential helper docker-credential-{helper} (named in {path}) failed for registry \
         {registry}: {message}; check the helper (`docker-credential-{helper} get`) or log in \
         again"
    )]
    Helper {
        helper: String,
        registry: String,
        path: PathBuf,
        message: String,
    },
}

/// How long a helper may take: one that waits for a prompt nobody sees must not hang a pull.
const HELPER_TIMEOUT: Duration = Duration::from_secs(30);
/// What a helper may print: an answer is a few hundred bytes.
const HELPER_MAX_OUTPUT: u64 = 1 << 20;

#[derive(serde::Deserialize)]
struct Entry {
    auth: Option<String>,
    username: Option<String>,
    password: Option<String>,
}

#[derive(serde::Deserialize)]
struct Config {
    #[serde(default)]
    auths: BTreeMap<String, Entry>,
    #[serde(default, rename = "credsStore")]
    creds_store: Option<String>,
    #[serde(default, rename = "credHelpers")]
    cred_helpers: BTreeMap<String, String>,
}

/// The host (`HOST[:PORT]`) of a configuration key, which may be a URL (`https://index.docker.io/v1/`).
fn host_of(k: &str) -> &str {
    let k = k
        .strip_prefix("https://")
        .or_else(|| k.strip_prefix("http://"))
        .unwrap_or(k);
    k.split('/').next().unwrap_or(k)
}

fn is_docker_hub(host: &str) -> bool {
    matches!(
        host,
        "docker.io" | "index.docker.io" | "registry-1.docker.io"
    )
}

/// The key names `registry` (Docker Hub under any of its names).
fn names(key: &str, registry: &str) -> bool {
    let h = host_of(key);
    h == registry || is_docker_hub(registry) && is_docker_hub(h)
}

/// The credentials for `registry` (`HOST[:PORT]`, `docker.io` for Docker Hub) from the Docker
/// configuration directory `dir` (default: `$DOCKER_CONFIG`, else `~/.docker`); anonymous
/// when it has none.
pub fn credentials(registry: &str, dir: Option<&Path>) -> Result<RegistryAuth, CredentialsError> {
    let dir = match dir {
        Some(d) => d.to_path_buf(),
        None => match std::env::var_os("DOCKER_CONFIG") {
            Some(d) => PathBuf::from(d),
            None => match std::env::var_os("HOME") {
                Some(h) => PathBuf::from(h).join(".docker"),
                None => return Ok(RegistryAuth::Anonymous),
            },
        },
    };
    let path = dir.join("config.json");
    let bad = |source| CredentialsError::File {
        path: path.clone(),
        source,
    };
    let bytes = match std::fs::read(&path) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(RegistryAuth::Anonymous),
        Err(e) => return Err(bad(e)),
    };
    let cfg: Config = serde_json::from_slice(&bytes).map_err(|e| bad(e.into()))?;
    let helper = cfg
        .cred_helpers
        .iter()
        .find(|(k, _)| names(k, registry))
        .map(|(_, h)| h)
        .or(cfg.creds_store.as_ref())
        .filter(|h| !h.is_empty());
    if let Some(helper) = helper {
        if let Some(auth) = from_helper(helper, registry, &path)? {
            return Ok(auth);
        }
    }
    let Some((_, e)) = cfg.auths.iter().find(|(k, _)| names(k, registry)) else {
        return Ok(RegistryAuth::Anonymous);
    };
    if let (Some(u), Some(p)) = (&e.username, &e.password) {
        return Ok(RegistryAuth::Basic(u.clone(), p.clone()));
    }
    let Some(auth) = &e.auth else {
        return Ok(RegistryAuth::Anonymous);
    };
    use base64::Engine as _;
    let invalid = |e: String| bad(io::Error::new(io::ErrorKind::InvalidData, e));
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(auth.trim())
        .map_err(|e| invalid(e.to_string()))?;
    let text = String::from_utf8(decoded).map_err(|e| invalid(e.to_string()))?;
    let (u, p) = text.split_once(':').ok_or_else(|| {
        invalid(format!(
            "the auth entry for {registry} is not base64 of user:password"
        ))
    })?;
    Ok(RegistryAuth::Basic(u.into(), p.into()))
}

/// Asks `docker-credential-<helper>` for `registry`'s credentials; `None` when it has none.
fn from_helper(
    helper: &str,
    registry: &str,
    path: &Path,
) -> Result<Option<RegistryAuth>, CredentialsError> {
    let failed = |message: String| CredentialsError::Helper {
        helper: helper.into(),
        registry: registry.into(),
        path: path.to_path_buf(),
        message,
    };
    if helper.contains('/') {
        return Err(failed("a helper's name cannot contain `/`".into()));
    }
    // Docker stores Docker Hub's credentials under its v1 index URL.
    let server = if is_docker_hub(registry) {
        "https://index.docker.io/v1/"
    } else {
        registry
    };
    let run_err = |source| CredentialsError::HelperRun {
        helper: helper.into(),
        registry: registry.into(),
        path: path.to_path_buf(),
        source,
    };
    let mut child = Command::new(format!("docker-credential-{helper}"))
        .arg("get")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(run_err)?;
    // A helper that exits without reading its input closes the pipe: its answer says why.
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(server.as_bytes());
    }
    let read = |r: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(r) = r {
                let _ = r.take(HELPER_MAX_OUTPUT).read_to_end(&mut buf);
            }
            buf
        })
    };
    let out = read(
        child
            .stdout
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let err = read(
        child
            .stderr
            .take()
            .map(|r| Box::new(r) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + HELPER_TIMEOUT;
    let status = loop {
        match child.try_wait().map_err(run_err)? {
            Some(st) => break st,
            None if Instant::now() >= deadline => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(failed(format!(
                    "no answer within {} s",
                    HELPER_TIMEOUT.as_secs()
                )));
            }
            None => std::thread::sleep(Duration::from_millis(20)),
        }
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    let said = |b: &[u8]| String::from_utf8_lossy(b).trim().to_string();
    if !status.success() {
        let message = [said(&out), said(&err)]
            .into_iter()
            .filter(|m| !m.is_empty())
            .collect::<Vec<_>>()
            .join("; ");
        // The answer docker-credential-helpers give for a registry they hold nothing for.
        if message.contains("credentials not found") {
            return Ok(None);
        }
        return Err(failed(if message.is_empty() {
            status.to_string()
        } else {
            format!("{status}: {message}")
        }));
    }
    #[derive(serde::Deserialize)]
    struct Answer {
        #[serde(rename = "Username", default)]
        username: String,
        #[serde(rename = "Secret", default)]
        secret: String,
    }
    let a: Answer = serde_json::from_slice(&out)
        .map_err(|e| failed(format!("its answer is not the JSON expected: {e}")))?;
    if a.username == "<token>" {
        return Err(failed(
            "it holds an identity token, which Shoji cannot use yet; log in with a user name \
             and password"
                .into(),
        ));
    }
    if a.username.is_empty() && a.secret.is_empty() {
        return Ok(None);
    }
    Ok(Some(RegistryAuth::Basic(a.username, a.secret)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_come_from_the_docker_config() {
        let dir = tempfile::tempdir().unwrap();
        // No file: anonymous.
        assert!(matches!(
            credentials("127.0.0.1:5000", Some(dir.path())).unwrap(),
            RegistryAuth::Anonymous
        ));
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"auths": {
                "127.0.0.1:5000": {"auth": "dTE6cDE="},
                "https://index.docker.io/v1/": {"username": "u2", "password": "p2"}
            }}"#,
        )
        .unwrap();
        let basic = |r| match credentials(r, Some(dir.path())).unwrap() {
            RegistryAuth::Basic(u, p) => Some((u, p)),
            _ => None,
        };
        assert_eq!(basic("127.0.0.1:5000"), Some(("u1".into(), "p1".into())));
        assert_eq!(basic("index.docker.io"), Some(("u2".into(), "p2".into())));
        assert_eq!(basic("127.0.0.1:5001"), None);
        std::fs::write(dir.path().join("config.json"), "{").unwrap();
        let e = credentials("x", Some(dir.path())).unwrap_err();
        assert!(e.to_string().contains("config.json"), "{e}");
    }

    #[test]
    fn a_missing_helper_is_named_with_the_registry() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join("config.json"),
            r#"{"credHelpers": {"127.0.0.1:5000": "shoji-absent-helper"}}"#,
        )
        .unwrap();
        let e = credentials("127.0.0.1:5000", Some(dir.path())).unwrap_err();
        let s = e.to_string();
        assert!(
            s.contains("docker-credential-shoji-absent-helper") && s.contains("127.0.0.1:5000"),
            "{s}"
        );
        // Another registry does not use that helper.
        assert!(matches!(
            credentials("127.0.0.1:5001", Some(dir.path())).unwrap(),
            RegistryAuth::Anonymous
        ));
    }
}
