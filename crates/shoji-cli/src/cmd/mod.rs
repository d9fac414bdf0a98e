//! Command groups. Each returns the process exit code (a container's status for `run`).

use std::path::PathBuf;

pub mod image;
pub mod lifecycle;
pub mod runtime;
pub mod telemetry;
pub mod trace;
pub mod trace_forward;
pub mod volumes;

/// Options every command takes.
#[derive(Debug, Clone, clap::Args)]
pub struct GlobalArgs {
    /// Configuration file (default: /etc/shoji/configuration.toml if it exists)
    #[arg(long, global = true, env = "SHOJI_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Where traces are stored (default: $SHOJI_DATA_DIR, else $XDG_DATA_HOME/shoji, else
    /// ~/.local/share/shoji)
    #[arg(long, global = true, value_name = "DIR")]
    pub data_dir: Option<PathBuf>,
}
