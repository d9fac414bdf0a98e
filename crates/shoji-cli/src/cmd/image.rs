//! `shoji image` commands.

use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Placeholder until the real commands land
    #[command(hide = true)]
    TodoImageCommand,
}

impl ImageCommand {
    pub fn run(self, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}
