//! Retention: how old and how large the store may grow. Whole traces are removed, oldest
//! first, never some of a trace's spans (see `Store::enforce_retention`).

use std::path::Path;
use std::time::Duration;

use crate::units::parse_duration;
pub use crate::units::parse_size;

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
    #[error(transparent)]
    Size(#[from] crate::units::UnitError),
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
        assert_eq!(parse_size("500MB").ok(), Some(500 << 20));
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
