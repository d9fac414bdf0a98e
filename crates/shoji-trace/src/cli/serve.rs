//! `shoji trace serve`: arguments and the blocking entry point.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::retention::{self, RetentionError};
use crate::server::{self, ServeConfig, ServerError};
use crate::store::{Store, StoreError};

/// Receive OTLP (gRPC 4317, HTTP 4318) and Zipkin v2 JSON (9411), store it, and serve the query
/// API and viewer (16686)
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (every port); loopback unless you say otherwise
    #[arg(long, default_value = "127.0.0.1")]
    pub listen: IpAddr,
    /// OTLP/gRPC port (0: any free port)
    #[arg(long, default_value_t = 4317)]
    pub grpc_port: u16,
    /// OTLP/HTTP port (0: any free port)
    #[arg(long, default_value_t = 4318)]
    pub http_port: u16,
    /// Query API and viewer port (0: any free port)
    #[arg(long, default_value_t = 16686)]
    pub query_port: u16,
    /// Zipkin v2 receiver port, `POST /api/v2/spans` (0: any free port)
    #[arg(long, default_value_t = 9411)]
    pub zipkin_port: u16,
    /// A host name browsers may use to reach the HTTP ports when listening beyond loopback
    /// (repeatable); requests naming any other host get 403 (DNS rebinding defence)
    #[arg(long = "allow-host", value_name = "NAME")]
    pub allow_hosts: Vec<String>,
    /// Largest accepted request (e.g. 64MiB); larger ones get 413 / RESOURCE_EXHAUSTED
    #[arg(long, default_value = "64MiB")]
    pub max_request_size: String,
    /// Remove traces older than this (e.g. 7d); overrides `[trace_store] max_age`
    #[arg(long, value_name = "DURATION")]
    pub max_age: Option<String>,
    /// Keep stored spans under this size (e.g. 2GiB); overrides `[trace_store] max_size`
    #[arg(long, value_name = "SIZE")]
    pub max_size: Option<String>,
    /// How often retention runs
    #[arg(long, default_value = "60s", value_name = "DURATION")]
    pub retention_interval: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Retention(#[from] RetentionError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Server(#[from] ServerError),
    #[error(transparent)]
    Unit(#[from] crate::units::UnitError),
    #[error("cannot start the async runtime")]
    Runtime(#[source] std::io::Error),
}

/// The configuration file `shoji` reads when `--config` is not given.
pub const DEFAULT_CONFIG: &str = "/etc/shoji/configuration.toml";

impl ServeArgs {
    /// The server configuration: flags over the configuration file over defaults.
    pub fn config(&self, config_file: Option<&Path>) -> Result<ServeConfig, ServeError> {
        let file = config_file
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG));
        let mut policy = retention::from_config_file(&file)?;
        if let Some(a) = &self.max_age {
            policy.max_age = Some(retention::parse_age(a)?);
        }
        if let Some(s) = &self.max_size {
            policy.max_bytes = Some(retention::parse_size(s)?);
        }
        let max = retention::parse_size(&self.max_request_size)?;
        Ok(ServeConfig {
            listen: self.listen,
            grpc_port: self.grpc_port,
            http_port: self.http_port,
            query_port: self.query_port,
            zipkin_port: self.zipkin_port,
            allowed_hosts: self.allow_hosts.clone(),
            max_request_bytes: usize::try_from(max).unwrap_or(usize::MAX),
            retention: policy,
            retention_interval: Duration::from_nanos(
                crate::units::parse_duration(&self.retention_interval)?.max(1_000_000),
            ),
        })
    }

    /// Serves until SIGINT or SIGTERM. Prints the bound addresses first (one line each, so
    /// scripts and tests can read the ports when they asked for port 0).
    pub fn run(&self, data_dir: &Path, config_file: Option<&Path>) -> Result<(), ServeError> {
        let cfg = self.config(config_file)?;
        let store = Store::open(data_dir)?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()
            .map_err(ServeError::Runtime)?;
        rt.block_on(async move {
            let running = server::start(store.clone(), cfg.clone()).await?;
            println!("store {}", store.path().display());
            println!("otlp-grpc {}", running.grpc_addr);
            println!("otlp-http http://{}/v1/traces", running.http_addr);
            println!("zipkin http://{}/api/v2/spans", running.zipkin_addr);
            println!("query http://{}/", running.query_addr);
            if cfg.retention.is_enabled() {
                println!(
                    "retention max_age={:?} max_bytes={:?}",
                    cfg.retention.max_age, cfg.retention.max_bytes
                );
            }
            use std::io::Write;
            let _ = std::io::stdout().flush();
            wait_for_signal().await;
            running.shutdown().await;
            Ok(())
        })
    }
}

async fn wait_for_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeArgs,
    }

    #[test]
    fn flags_override_the_configuration_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = dir.path().join("configuration.toml");
        std::fs::write(
            &file,
            "[trace_store]\nmax_age = \"7d\"\nmax_size = \"1GiB\"\n",
        )
        .expect("write");
        let cli = Cli::parse_from(["x", "--max-age", "1h", "--query-port", "0"]);
        let cfg = cli.serve.config(Some(&file)).expect("config");
        assert_eq!(cfg.retention.max_age, Some(Duration::from_secs(3600)));
        assert_eq!(cfg.retention.max_bytes, Some(1 << 30));
        assert_eq!(cfg.query_port, 0);
        assert_eq!(cfg.listen.to_string(), "127.0.0.1", "loopback by default");
        assert_eq!(cfg.max_request_bytes, 64 << 20);
        let none = cli
            .serve
            .config(Some(&dir.path().join("absent.toml")))
            .expect("config");
        assert_eq!(none.retention.max_bytes, None);
    }
}
