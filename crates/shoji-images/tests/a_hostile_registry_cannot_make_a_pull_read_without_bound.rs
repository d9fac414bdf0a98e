//! A registry that answers a "manifest" of gigabytes, declared or not, or a configuration
//! bigger than its cap, makes a pull fail with the reference and the cap named, after reading
//! at most the cap; a manifest that does not hash to the digest it was pulled by is refused;
//! nothing is tagged in the store (ADR 026). The registry is a tiny HTTP server on loopback
//! that plays the attacker: it streams its endless bodies until the client hangs up and counts
//! what it managed to send.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};
use shoji_images::manifests::MAX_MANIFEST_BYTES;
use shoji_images::pull::{pull, PullError, PullOptions, MAX_CONFIG_BYTES};
use shoji_images::store::Store;

const MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
const INDEX: &str = "application/vnd.oci.image.index.v1+json";
/// Stop an endless body here whatever happens, so a client without a cap fails the test by
/// reading all of it (and by the assertions below) instead of hanging it.
const GIVE_UP: u64 = 1 << 30;
/// What the kernel's socket buffers may hold besides what the client read.
const SLACK: u64 = 64 << 20;

/// What the attacker answers for a path.
#[derive(Clone)]
enum Reply {
    Json(&'static str, Vec<u8>),
    /// `prefix`, then spaces without end; with a Content-Length of `declared` if given, else
    /// chunked.
    Endless {
        content_type: &'static str,
        prefix: Vec<u8>,
        declared: Option<u64>,
    },
}

struct Attacker {
    port: u16,
    routes: Arc<Mutex<HashMap<String, Reply>>>,
    requests: Arc<Mutex<Vec<String>>>,
    sent: Arc<AtomicU64>,
}

impl Attacker {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let routes: Arc<Mutex<HashMap<String, Reply>>> = Arc::default();
        let requests: Arc<Mutex<Vec<String>>> = Arc::default();
        let sent = Arc::new(AtomicU64::new(0));
        let (r, q, s) = (routes.clone(), requests.clone(), sent.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let (r, q, s) = (r.clone(), q.clone(), s.clone());
                std::thread::spawn(move || serve(conn, &r, &q, &s));
            }
        });
        Self {
            port,
            routes,
            requests,
            sent,
        }
    }

    fn route(&self, path: &str, reply: Reply) {
        self.routes.lock().unwrap().insert(path.into(), reply);
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

/// One request per connection (`Connection: close`), answered from `routes`; `/v2/` says
/// "no authentication needed"; anything else is a registry's 404.
fn serve(
    conn: TcpStream,
    routes: &Mutex<HashMap<String, Reply>>,
    requests: &Mutex<Vec<String>>,
    sent: &AtomicU64,
) {
    conn.set_write_timeout(Some(Duration::from_secs(10))).ok();
    let mut reader = BufReader::new(conn.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() {
        return;
    }
    let path = line.split(' ').nth(1).unwrap_or("").to_string();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
            break;
        }
    }
    requests.lock().unwrap().push(path.clone());
    let mut out = conn;
    let reply = routes.lock().unwrap().get(&path).cloned();
    let head = |status: &str, ct: &str, len: Option<u64>| {
        let len = match len {
            Some(n) => format!("Content-Length: {n}\r\n"),
            None => "Transfer-Encoding: chunked\r\n".into(),
        };
        format!("HTTP/1.1 {status}\r\nContent-Type: {ct}\r\n{len}Connection: close\r\n\r\n")
    };
    match (path.as_str(), reply) {
        ("/v2/", _) => {
            let _ = out.write_all(head("200 OK", "application/json", Some(2)).as_bytes());
            let _ = out.write_all(b"{}");
        }
        (_, Some(Reply::Json(ct, body))) => {
            let _ = out.write_all(head("200 OK", ct, Some(body.len() as u64)).as_bytes());
            let _ = out.write_all(&body);
        }
        (
            _,
            Some(Reply::Endless {
                content_type,
                prefix,
                declared,
            }),
        ) => {
            if out
                .write_all(head("200 OK", content_type, declared).as_bytes())
                .is_err()
            {
                return;
            }
            let spaces = vec![b' '; 64 << 10];
            let mut first = Some(prefix);
            let mut total = 0u64;
            while total < GIVE_UP {
                let data = first.take().unwrap_or_else(|| spaces.clone());
                let framed = if declared.is_some() {
                    data.clone()
                } else {
                    let mut f = format!("{:x}\r\n", data.len()).into_bytes();
                    f.extend_from_slice(&data);
                    f.extend_from_slice(b"\r\n");
                    f
                };
                if out.write_all(&framed).is_err() {
                    break;
                }
                total += data.len() as u64;
                sent.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
        }
        _ => {
            let body = br#"{"errors":[{"code":"MANIFEST_UNKNOWN","message":"unknown"}]}"#;
            let _ = out.write_all(
                head("404 Not Found", "application/json", Some(body.len() as u64)).as_bytes(),
            );
            let _ = out.write_all(body);
        }
    }
}

fn sha256(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// A manifest naming a configuration of `config_size` bytes at `config_digest`.
fn manifest(config_digest: &str, config_size: u64) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": MANIFEST,
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            "digest": config_digest,
            "size": config_size,
        },
        "layers": [],
    }))
    .unwrap()
}

/// The start of a JSON manifest whose annotation never ends.
fn endless_prefix() -> Vec<u8> {
    format!(r#"{{"schemaVersion":2,"mediaType":"{MANIFEST}","annotations":{{"a":""#).into_bytes()
}

fn pull_from(store_dir: &Path, reference: &str) -> PullError {
    let store = Store::open(store_dir).unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let start = Instant::now();
    let result = rt.block_on(pull(&store, reference, &PullOptions::default()));
    // Reading a gigabyte into memory and hashing it would take longer than this here.
    assert!(
        start.elapsed() < Duration::from_secs(30),
        "the pull of {reference} took {:?}",
        start.elapsed()
    );
    let err = result.expect_err("a hostile registry's answer was accepted");
    // Nothing tagged: a later run cannot find the reference in the store.
    let index = std::fs::read_to_string(store.pulled_dir().join("index.json")).unwrap_or_default();
    assert!(!index.contains(reference), "{index}");
    err
}

/// The error and its sources, as the CLI prints them.
fn chain(e: &PullError) -> String {
    let mut s = e.to_string();
    let mut src = std::error::Error::source(e);
    while let Some(c) = src {
        s.push_str(": ");
        s.push_str(&c.to_string());
        src = c.source();
    }
    s
}

#[test]
fn a_manifest_declared_over_the_cap_is_refused_before_its_body_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let evil = Attacker::start();
    evil.route(
        "/v2/evil/big/manifests/v1",
        Reply::Endless {
            content_type: MANIFEST,
            prefix: endless_prefix(),
            declared: Some(5 << 30),
        },
    );
    let reference = format!("127.0.0.1:{}/evil/big:v1", evil.port);
    let err = pull_from(&dir.path().join("store"), &reference);
    let msg = chain(&err);
    assert!(
        matches!(err, PullError::TooLarge { .. }),
        "not refused for its size: {msg}"
    );
    for part in [
        reference.as_str(),
        &MAX_MANIFEST_BYTES.to_string(),
        "5368709120 bytes (Content-Length)",
        "before reading it",
    ] {
        assert!(msg.contains(part), "{part:?} missing from: {msg}");
    }
    let sent = evil.sent.load(Ordering::Relaxed);
    assert!(sent < SLACK, "the registry got {sent} bytes out");
}

#[test]
fn a_manifest_or_index_growing_past_the_cap_without_a_length_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let evil = Attacker::start();
    // By tag: the top manifest is endless. By way of an index: the manifest it names is.
    evil.route(
        "/v2/evil/grows/manifests/v1",
        Reply::Endless {
            content_type: MANIFEST,
            prefix: endless_prefix(),
            declared: None,
        },
    );
    let nested = format!("sha256:{}", "1".repeat(64));
    let index = serde_json::to_vec(&serde_json::json!({
        "schemaVersion": 2,
        "mediaType": INDEX,
        "manifests": [{
            "mediaType": MANIFEST,
            "digest": nested,
            "size": 1000,
            "platform": { "os": "linux", "architecture": "amd64" },
        }],
    }))
    .unwrap();
    evil.route("/v2/evil/grows/manifests/multi", Reply::Json(INDEX, index));
    evil.route(
        &format!("/v2/evil/grows/manifests/{nested}"),
        Reply::Endless {
            content_type: MANIFEST,
            prefix: endless_prefix(),
            declared: None,
        },
    );
    for (n, tag) in ["v1", "multi"].into_iter().enumerate() {
        let before = evil.sent.load(Ordering::Relaxed);
        let reference = format!("127.0.0.1:{}/evil/grows:{tag}", evil.port);
        let err = pull_from(&dir.path().join(format!("store{n}")), &reference);
        let msg = chain(&err);
        assert!(
            matches!(err, PullError::TooLarge { .. }),
            "not cut off: {msg}"
        );
        for part in [
            reference.as_str(),
            &MAX_MANIFEST_BYTES.to_string(),
            "cut off",
        ] {
            assert!(msg.contains(part), "{part:?} missing from: {msg}");
        }
        let sent = evil.sent.load(Ordering::Relaxed) - before;
        assert!(
            (MAX_MANIFEST_BYTES..MAX_MANIFEST_BYTES + SLACK).contains(&sent),
            "the registry got {sent} bytes out for {tag}"
        );
    }
}

#[test]
fn a_manifest_not_hashing_to_the_digest_it_was_pulled_by_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let evil = Attacker::start();
    let wanted = manifest(&format!("sha256:{}", "2".repeat(64)), 10);
    let sent = manifest(&format!("sha256:{}", "3".repeat(64)), 10);
    let digest = sha256(&wanted);
    evil.route(
        &format!("/v2/evil/swap/manifests/{digest}"),
        Reply::Json(MANIFEST, sent.clone()),
    );
    let reference = format!("127.0.0.1:{}/evil/swap@{digest}", evil.port);
    let store_dir = dir.path().join("store");
    let err = pull_from(&store_dir, &reference);
    let msg = chain(&err);
    assert!(matches!(err, PullError::Verify { .. }), "{msg}");
    assert!(
        msg.contains(&digest) && msg.contains(&sha256(&sent)),
        "{msg}"
    );
    // Stored under neither digest.
    for d in [&digest, &sha256(&sent)] {
        let blob = store_dir.join("oci/blobs/sha256").join(&d[7..]);
        assert!(!blob.exists(), "{} was stored", blob.display());
    }
}

#[test]
fn a_configuration_over_its_cap_is_not_fetched_and_one_longer_than_its_descriptor_is_cut_off() {
    let dir = tempfile::tempdir().unwrap();
    let evil = Attacker::start();
    let config = format!("sha256:{}", "4".repeat(64));
    evil.route(
        "/v2/evil/config/manifests/huge",
        Reply::Json(MANIFEST, manifest(&config, MAX_CONFIG_BYTES + 1)),
    );
    evil.route(
        "/v2/evil/config/manifests/long",
        Reply::Json(MANIFEST, manifest(&config, 100)),
    );
    evil.route(
        &format!("/v2/evil/config/blobs/{config}"),
        Reply::Endless {
            content_type: "application/octet-stream",
            prefix: b"{".to_vec(),
            declared: None,
        },
    );

    let reference = format!("127.0.0.1:{}/evil/config:huge", evil.port);
    let err = pull_from(&dir.path().join("store1"), &reference);
    let msg = chain(&err);
    assert!(matches!(err, PullError::DescriptorTooLarge { .. }), "{msg}");
    assert!(
        msg.contains(&reference) && msg.contains(&MAX_CONFIG_BYTES.to_string()),
        "{msg}"
    );
    assert!(
        !evil.requests().iter().any(|p| p.contains("/blobs/")),
        "the configuration was requested: {:?}",
        evil.requests()
    );

    let reference = format!("127.0.0.1:{}/evil/config:long", evil.port);
    let err = pull_from(&dir.path().join("store2"), &reference);
    let msg = chain(&err);
    assert!(matches!(err, PullError::Verify { .. }), "{msg}");
    let sent = evil.sent.load(Ordering::Relaxed);
    assert!(sent < SLACK, "the registry got {sent} bytes out");
}
