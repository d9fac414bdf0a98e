//! `shoji trace` commands.

use std::process::ExitCode;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    /// Placeholder until the real commands land
    #[command(hide = true)]
    TodoTraceCommand,
}

impl TraceCommand {
    pub fn run(self, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}
