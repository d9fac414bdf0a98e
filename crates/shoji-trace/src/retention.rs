//! Retention: how old and how large the store may grow. Whole traces are removed, oldest
//! first, never some of a trace's spans (see `Store::enforce_retention`).

use std::path::Path;
use std::time::Duration;

use crate::cli::time::parse_duration;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// Remove traces whose last span ended longer ago than this.
    pub max_age: Option<Duration>,
    /// Remove the oldest traces while stored span bytes exceed this.
    pub max_bytes: Option<u64>,
}

impl RetentionPolicy {
    pub fn is_enabled(&self) -> bool {
        self.max_age.is_some() || self.max_bytes.is_some()
    }
}

/// What one retention pass removed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionReport {
    pub traces: u64,
    pub spans: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RetentionError {
    #[error("{0:?} is not a size: expected a number and a unit (B, KB, MB, GB, KiB, MiB, GiB), e.g. 2GiB")]
    Size(String),
    #[error("{0:?} is not an age: expected a duration such as 7d or 12h")]
    Age(String),
    #[error("cannot read the configuration file {path}")]
    Read {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid TOML in {path}")]
    Toml {
        path: std::path::PathBuf,
        #[source]
        source: toml::de::Error,
    },
    #[error("unknown key trace_store.{key} in {path}: known keys are max_age and max_size")]
    UnknownKey {
        key: String,
        path: std::path::PathBuf,
    },
    #[error("trace_store.{key} in {path} must be a string such as \"7d\" or \"2GiB\"")]
    NotAString {
        key: String,
        path: std::path::PathBuf,
    },
}

/// Bytes in `500MB`, `2GiB`, `1048576`.
pub fn parse_size(text: &str) -> Result<u64, RetentionError> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| RetentionError::Size(text.into()))?;
    let scale: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        _ => return Err(RetentionError::Size(text.into())),
    };
    let b = n * scale;
    if !b.is_finite() || b < 0.0 || b > u64::MAX as f64 {
        return Err(RetentionError::Size(text.into()));
    }
    Ok(b as u64)
}

pub fn parse_age(text: &str) -> Result<Duration, RetentionError> {
    parse_duration(text)
        .map(Duration::from_nanos)
        .map_err(|_| RetentionError::Age(text.into()))
}

/// The `[trace_store]` table of the configuration file (`max_age`, `max_size`); other tables
/// belong to other parts and are not looked at here. A missing file means no limits.
pub fn from_config_file(path: &Path) -> Result<RetentionPolicy, RetentionError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(RetentionPolicy::default()),
        Err(source) => {
            return Err(RetentionError::Read {
                path: path.into(),
                source,
            })
        }
    };
    from_toml(&text, path)
}

pub fn from_toml(text: &str, path: &Path) -> Result<RetentionPolicy, RetentionError> {
    let doc: toml::Table = toml::from_str(text).map_err(|source| RetentionError::Toml {
        path: path.into(),
        source,
    })?;
    let mut policy = RetentionPolicy::default();
    let Some(table) = doc.get("trace_store").and_then(|v| v.as_table()) else {
        return Ok(policy);
    };
    for (key, value) in table {
        let s = value.as_str().ok_or_else(|| RetentionError::NotAString {
            key: key.clone(),
            path: path.into(),
        })?;
        match key.as_str() {
            "max_age" => policy.max_age = Some(parse_age(s)?),
            "max_size" => policy.max_bytes = Some(parse_size(s)?),
            _ => {
                return Err(RetentionError::UnknownKey {
                    key: key.clone(),
                    path: path.into(),
                })
            }
        }
    }
    Ok(policy)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_config_parse() {
        assert_eq!(parse_size("2GiB").ok(), Some(2 << 30));
        assert_eq!(parse_size("500MB").ok(), Some(500_000_000));
        assert!(parse_size("lots").is_err());
        let p = from_toml(
            "[runtime]\nx=1\n[trace_store]\nmax_age = \"7d\"\nmax_size = \"1MiB\"\n",
            Path::new("c.toml"),
        )
        .ok();
        assert_eq!(
            p,
            Some(RetentionPolicy {
                max_age: Some(Duration::from_secs(7 * 86400)),
                max_bytes: Some(1 << 20)
            })
        );
        let err = from_toml("[trace_store]\nmax_days = \"1d\"\n", Path::new("c.toml"));
        assert!(matches!(err, Err(RetentionError::UnknownKey { .. })));
    }
}
