//! Configuration: TOML with Kata's key names, every key optional with an embedded default.
//!
//! Precedence is command-line flag, then configuration file, then environment, then default.
//! Flags are applied by the caller after [`Config::load`]; this module merges file, environment
//! and defaults. Unknown keys are errors naming the key and the file (`deny_unknown_fields`).

use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The system-wide configuration file, used when no `--config` is given and it exists.
pub const SYSTEM_CONFIG: &str = "/etc/shoji/configuration.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read configuration file {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid configuration file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("invalid value {value:?} for {key} (from {origin}): {expected}")]
    Value {
        key: &'static str,
        value: String,
        origin: String,
        expected: &'static str,
    },
}

/// Which accelerator QEMU uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    #[default]
    Auto,
    Kvm,
    Tcg,
}

impl std::str::FromStr for Accel {
    type Err = ();
    fn from_str(s: &str) -> Result<Self, ()> {
        match s {
            "auto" => Ok(Self::Auto),
            "kvm" => Ok(Self::Kvm),
            "tcg" => Ok(Self::Tcg),
            _ => Err(()),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct QemuConfig {
    /// The QEMU binary; unset in the file: `SHOJI_QEMU`, else [`DEFAULT_QEMU`] ([`Self::path`]).
    pub path: Option<PathBuf>,
    /// Guest kernel; `None` means the image `shoji image build` made.
    pub kernel: Option<PathBuf>,
    pub initrd: Option<PathBuf>,
    /// Unset in the file: `SHOJI_ACCEL`, else `auto` ([`Self::accel`]).
    pub accel: Option<Accel>,
    pub default_vcpus: u32,
    /// MiB.
    pub default_memory: u32,
    pub kernel_params: String,
    /// Seconds from QEMU launch until the agent must answer.
    pub boot_timeout: u64,
}

impl Default for QemuConfig {
    fn default() -> Self {
        Self {
            path: None,
            kernel: None,
            initrd: None,
            accel: None,
            default_vcpus: 1,
            default_memory: 512,
            kernel_params: String::new(),
            boot_timeout: 30,
        }
    }
}

/// The QEMU binary when neither the file nor `SHOJI_QEMU` names one.
pub const DEFAULT_QEMU: &str = "/usr/bin/qemu-system-x86_64";

impl QemuConfig {
    /// The QEMU binary to run.
    pub fn path(&self) -> &Path {
        self.path.as_deref().unwrap_or(Path::new(DEFAULT_QEMU))
    }

    /// The accelerator asked for.
    pub fn accel(&self) -> Accel {
        self.accel.unwrap_or_default()
    }
}

/// Which VMM boots the sandboxes (`[hypervisor] kind`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HypervisorKind {
    /// QEMU's `microvm` machine, configured by `[hypervisor.qemu]`.
    #[default]
    Qemu,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HypervisorConfig {
    pub kind: HypervisorKind,
    pub qemu: QemuConfig,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentShojiConfig {
    pub enable_tracing: bool,
    pub trace_log_level: String,
}

impl Default for AgentShojiConfig {
    fn default() -> Self {
        Self {
            enable_tracing: false,
            trace_log_level: "info".into(),
        }
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AgentConfig {
    pub shoji: AgentShojiConfig,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RuntimeConfig {
    pub enable_tracing: bool,
    /// OTLP endpoint; overrides `OTEL_EXPORTER_OTLP_ENDPOINT`. Unset: the embedded store.
    pub otlp_endpoint: Option<String>,
    /// `grpc`, `http/protobuf` or `http/json`; overrides `OTEL_EXPORTER_OTLP_PROTOCOL`.
    pub otlp_protocol: Option<String>,
    /// Overrides `OTEL_SERVICE_NAME` (default `shoji-runtime`).
    pub service_name: Option<String>,
    /// Overrides `OTEL_TRACES_SAMPLER`.
    pub sampler: Option<String>,
    /// Where sandbox directories are made (default `$XDG_RUNTIME_DIR/shoji` or `/run/shoji`).
    pub sandbox_root: Option<PathBuf>,
    /// Most bytes each log stream of a sandbox keeps (`console.log`, `stdout.log`,
    /// `stderr.log`, each process's part of `sandbox.log`), e.g. "64M"; the rest is dropped.
    pub log_max_size: Option<String>,
}

impl RuntimeConfig {
    /// `log_max_size` in bytes, else [`crate::capped_log::DEFAULT_LOG_MAX_BYTES`].
    pub fn log_max_bytes(&self) -> Result<u64, ConfigError> {
        let Some(text) = &self.log_max_size else {
            return Ok(crate::capped_log::DEFAULT_LOG_MAX_BYTES);
        };
        crate::spec::parse_size(text).map_err(|_| ConfigError::Value {
            key: "runtime.log_max_size",
            value: text.clone(),
            origin: "the configuration file".into(),
            expected: "a size such as 64M or 1G",
        })
    }
}

/// Trace-store settings read by `shoji trace serve` and the embedded store.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TraceStoreConfig {
    /// Maximum age of a trace, e.g. "7d", "12h".
    pub max_age: Option<String>,
    /// Maximum size of the store, e.g. "1GiB".
    pub max_size: Option<String>,
}

/// The whole configuration.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub hypervisor: HypervisorConfig,
    pub agent: AgentConfig,
    pub runtime: RuntimeConfig,
    pub trace_store: TraceStoreConfig,
    /// The file this came from, if any (not a key).
    #[serde(skip)]
    pub source: Option<PathBuf>,
}

impl Config {
    /// Loads `explicit` if given (it must exist), else the system file if it exists, else the
    /// defaults; then applies the environment where the file left a key unset.
    pub fn load(explicit: Option<&Path>) -> Result<Self, ConfigError> {
        let path = match explicit {
            Some(p) => Some(p.to_path_buf()),
            None => Some(PathBuf::from(SYSTEM_CONFIG)).filter(|p| p.exists()),
        };
        let mut config = match &path {
            Some(p) => Self::parse_file(p)?,
            None => Self::default(),
        };
        config.source = path;
        config.apply_env(|k| std::env::var(k).ok())?;
        Ok(config)
    }

    pub fn parse_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Self::parse_str(&text, path)
    }

    pub fn parse_str(text: &str, path: &Path) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse {
            path: path.to_path_buf(),
            message: e.to_string().trim_end().replace('\n', " "),
        })
    }

    /// Environment below the file: `SHOJI_QEMU`, `SHOJI_KERNEL`, `SHOJI_INITRD`, `SHOJI_ACCEL`.
    /// The OTEL_* variables are read by the telemetry set-up, below the `[runtime]` keys.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let q = &mut self.hypervisor.qemu;
        if q.path.is_none() {
            q.path = get("SHOJI_QEMU").map(Into::into);
        }
        if q.kernel.is_none() {
            q.kernel = get("SHOJI_KERNEL").map(Into::into);
        }
        if q.initrd.is_none() {
            q.initrd = get("SHOJI_INITRD").map(Into::into);
        }
        if q.accel.is_none() {
            if let Some(v) = get("SHOJI_ACCEL") {
                q.accel = Some(v.parse().map_err(|()| ConfigError::Value {
                    key: "accel",
                    value: v.clone(),
                    origin: "environment variable SHOJI_ACCEL".into(),
                    expected: "one of auto, kvm, tcg",
                })?);
            }
        }
        Ok(())
    }

    /// Where this configuration came from, for `shoji env` and error messages.
    pub fn origin(&self) -> String {
        match &self.source {
            Some(p) => p.display().to_string(),
            None => "built-in defaults (no configuration file)".into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_defaults() {
        let c = Config::parse_str("", Path::new("x.toml")).unwrap();
        assert_eq!(c.hypervisor.qemu.default_memory, 512);
        assert_eq!(c.hypervisor.qemu.boot_timeout, 30);
        assert_eq!(c.hypervisor.qemu.accel(), Accel::Auto);
        assert_eq!(c.hypervisor.qemu.path(), Path::new(DEFAULT_QEMU));
        assert_eq!(c.agent.shoji.trace_log_level, "info");
    }

    #[test]
    fn unknown_key_is_named_with_the_file() {
        let e = Config::parse_str("[hypervisor.qemu]\nmemroy = 3\n", Path::new("/etc/x.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("memroy"), "{e}");
        assert!(e.contains("/etc/x.toml"), "{e}");
    }

    #[test]
    fn keys_parse() {
        let c = Config::parse_str(
            "[hypervisor.qemu]\naccel = \"tcg\"\ndefault_vcpus = 2\n[runtime]\nenable_tracing = true\n[agent.shoji]\nenable_tracing = true\n",
            Path::new("x.toml"),
        )
        .unwrap();
        assert_eq!(c.hypervisor.qemu.accel(), Accel::Tcg);
        assert_eq!(c.hypervisor.qemu.default_vcpus, 2);
        assert!(c.runtime.enable_tracing && c.agent.shoji.enable_tracing);
    }

    #[test]
    fn the_environment_fills_only_the_keys_the_file_leaves_unset() {
        let env = |k: &str| match k {
            "SHOJI_QEMU" => Some("/opt/qemu".to_string()),
            "SHOJI_ACCEL" => Some("kvm".to_string()),
            _ => None,
        };
        // A comment or another section's `path` is not the key: the environment applies.
        let mut c = Config::parse_str(
            "# path = \"/nowhere\"\n[runtime]\nsandbox_root = \"/x\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        c.apply_env(env).unwrap();
        assert_eq!(c.hypervisor.qemu.path(), Path::new("/opt/qemu"));
        assert_eq!(c.hypervisor.qemu.accel(), Accel::Kvm);
        // The file's own keys win over the environment.
        let mut c = Config::parse_str(
            "[hypervisor.qemu]\npath = \"/usr/local/bin/qemu\"\naccel = \"tcg\"\n",
            Path::new("x.toml"),
        )
        .unwrap();
        c.apply_env(env).unwrap();
        assert_eq!(c.hypervisor.qemu.path(), Path::new("/usr/local/bin/qemu"));
        assert_eq!(c.hypervisor.qemu.accel(), Accel::Tcg);
    }

    #[test]
    fn bad_accel_in_env_is_an_error() {
        let mut c = Config::default();
        let e = c
            .apply_env(|k| (k == "SHOJI_ACCEL").then(|| "fast".to_string()))
            .unwrap_err();
        assert!(e.to_string().contains("SHOJI_ACCEL"));
    }
}
