//! Content digests (`algorithm:hex`) and a reader that hashes the bytes passing through it, so a
//! blob is verified while it is read, never read twice.

use std::fmt;
use std::io::{self, Read};

use sha2::Digest as _;

#[derive(Debug, thiserror::Error)]
pub enum DigestError {
    #[error("digest {digest:?} is malformed: {reason}")]
    Malformed {
        digest: String,
        reason: &'static str,
    },
    #[error("{what} does not match its digest: expected {expected}, got {got}")]
    Mismatch {
        what: String,
        expected: Digest,
        got: Digest,
    },
    #[error("{what} is {got} bytes long, its descriptor says {expected}")]
    Size {
        what: String,
        expected: u64,
        got: u64,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Algorithm {
    Sha256,
    Sha512,
}

impl Algorithm {
    fn name(self) -> &'static str {
        match self {
            Algorithm::Sha256 => "sha256",
            Algorithm::Sha512 => "sha512",
        }
    }

    fn hex_len(self) -> usize {
        match self {
            Algorithm::Sha256 => 64,
            Algorithm::Sha512 => 128,
        }
    }
}

/// A validated digest: a known algorithm and lowercase hex of the right length, so that it can
/// name a file (`blobs/<alg>/<hex>`) without further checks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Digest {
    algorithm: Algorithm,
    hex: String,
}

impl Digest {
    pub fn parse(s: &str) -> Result<Self, DigestError> {
        let bad = |reason| DigestError::Malformed {
            digest: s.to_string(),
            reason,
        };
        let (alg, hex) = s
            .split_once(':')
            .ok_or_else(|| bad("not of the form algorithm:hex"))?;
        let algorithm = match alg {
            "sha256" => Algorithm::Sha256,
            "sha512" => Algorithm::Sha512,
            _ => return Err(bad("only sha256 and sha512 are supported")),
        };
        if hex.len() != algorithm.hex_len()
            || !hex
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(bad("the hex part has the wrong length or characters"));
        }
        Ok(Self {
            algorithm,
            hex: hex.to_string(),
        })
    }

    pub fn algorithm(&self) -> Algorithm {
        self.algorithm
    }

    pub fn algorithm_name(&self) -> &'static str {
        self.algorithm.name()
    }

    pub fn hex(&self) -> &str {
        &self.hex
    }

    /// The SHA-256 digest of `bytes`.
    pub fn sha256_of(bytes: &[u8]) -> Self {
        Self {
            algorithm: Algorithm::Sha256,
            hex: hex::encode(sha2::Sha256::digest(bytes)),
        }
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.algorithm.name(), self.hex)
    }
}

/// Written as `algorithm:hex`, and parsed as strictly when read back.
impl serde::Serialize for Digest {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Digest {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Digest::parse(&s).map_err(serde::de::Error::custom)
    }
}

enum Hasher {
    Sha256(sha2::Sha256),
    Sha512(sha2::Sha512),
}

/// Hashes and counts bytes given to it piece by piece (a download's chunks).
pub struct Digester {
    hasher: Hasher,
    count: u64,
}

impl Digester {
    pub fn new(algorithm: Algorithm) -> Self {
        let hasher = match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        Self { hasher, count: 0 }
    }

    pub fn update(&mut self, bytes: &[u8]) {
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(bytes),
            Hasher::Sha512(h) => h.update(bytes),
        }
        self.count += bytes.len() as u64;
    }

    /// Bytes seen so far.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The digest and length of everything given.
    pub fn finish(self) -> (Digest, u64) {
        let (algorithm, hex) = match self.hasher {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        (Digest { algorithm, hex }, self.count)
    }
}

/// Hashes and counts everything read through it.
pub struct DigestReader<R> {
    inner: R,
    hasher: Hasher,
    count: u64,
}

impl<R: Read> DigestReader<R> {
    pub fn new(inner: R, algorithm: Algorithm) -> Self {
        let hasher = match algorithm {
            Algorithm::Sha256 => Hasher::Sha256(sha2::Sha256::new()),
            Algorithm::Sha512 => Hasher::Sha512(sha2::Sha512::new()),
        };
        Self {
            inner,
            hasher,
            count: 0,
        }
    }

    /// Reads what is left, so that the digest covers the whole stream.
    pub fn drain(&mut self) -> io::Result<()> {
        io::copy(self, &mut io::sink()).map(|_| ())
    }

    /// The digest and length of what was read so far.
    pub fn finish(self) -> (Digest, u64) {
        let (algorithm, hex) = match self.hasher {
            Hasher::Sha256(h) => (Algorithm::Sha256, hex::encode(h.finalize())),
            Hasher::Sha512(h) => (Algorithm::Sha512, hex::encode(h.finalize())),
        };
        (Digest { algorithm, hex }, self.count)
    }

    /// Drains the stream and checks its digest (and size, when known).
    pub fn verify(
        mut self,
        what: &str,
        expected: &Digest,
        size: Option<u64>,
    ) -> Result<Result<(), DigestError>, io::Error> {
        self.drain()?;
        let (got, count) = self.finish();
        Ok(check(what, expected, size, &got, count))
    }
}

/// Compares a computed digest and length with the expected ones.
pub fn check(
    what: &str,
    expected: &Digest,
    size: Option<u64>,
    got: &Digest,
    count: u64,
) -> Result<(), DigestError> {
    if got != expected {
        return Err(DigestError::Mismatch {
            what: what.to_string(),
            expected: expected.clone(),
            got: got.clone(),
        });
    }
    match size {
        Some(expected) if expected != count => Err(DigestError::Size {
            what: what.to_string(),
            expected,
            got: count,
        }),
        _ => Ok(()),
    }
}

impl<R: Read> Read for DigestReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        match &mut self.hasher {
            Hasher::Sha256(h) => h.update(&buf[..n]),
            Hasher::Sha512(h) => h.update(&buf[..n]),
        }
        self.count += n as u64;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_refuses_traversal_unknown_algorithms_and_uppercase() {
        for bad in [
            "sha256:../../etc",
            "md5:d41d8cd98f00b204e9800998ecf8427e",
            "sha256",
            &format!("sha256:{}", "A".repeat(64)),
            &format!("sha256:{}", "a".repeat(63)),
        ] {
            let e = Digest::parse(bad).unwrap_err();
            assert!(e.to_string().contains(bad), "{e}");
        }
        let ok = format!("sha256:{}", "0".repeat(64));
        assert_eq!(Digest::parse(&ok).unwrap().to_string(), ok);
    }

    #[test]
    fn reader_verifies_digest_and_size() {
        let data = b"hello";
        let d = Digest::sha256_of(data);
        let r = DigestReader::new(&data[..], Algorithm::Sha256);
        assert!(r.verify("blob", &d, Some(5)).unwrap().is_ok());
        let r = DigestReader::new(&data[..], Algorithm::Sha256);
        let e = r.verify("blob", &d, Some(6)).unwrap().unwrap_err();
        assert!(e.to_string().contains("6"), "{e}");
        let r = DigestReader::new(&b"hellO"[..], Algorithm::Sha256);
        let e = r.verify("blob", &d, None).unwrap().unwrap_err();
        assert!(e.to_string().contains(&d.to_string()), "{e}");
    }
}
