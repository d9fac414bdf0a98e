//! `shoji runtime` commands.

use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum RuntimeCommand {
    /// Placeholder until the real commands land
    #[command(hide = true)]
    TodoRuntimeCommand,
}

impl RuntimeCommand {
    pub fn run(self, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}
