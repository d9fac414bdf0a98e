//! Command groups. Each returns the process exit code (a container's status for `run`).

use std::path::PathBuf;

pub mod image;
pub mod lifecycle;
pub mod network;
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

/// The configuration (flag, file, environment), with the image store in the data directory
/// when the file names none.
pub fn load_config(global: &GlobalArgs) -> anyhow::Result<shoji_runtime::config::Config> {
    let mut config = shoji_runtime::config::Config::load(global.config.as_deref())?;
    config.runtime.image_store.get_or_insert_with(|| {
        shoji_trace::data_dir::resolve(global.data_dir.as_deref()).join("images")
    });
    Ok(config)
}
