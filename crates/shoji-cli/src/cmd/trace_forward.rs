//! `shoji trace forward`: the standalone forwarder, the Kata way.

use std::process::ExitCode;

use super::GlobalArgs;

/// Receive agent span frames on a hybrid-vsock socket and pass them on
#[derive(Debug, clap::Args)]
pub struct ForwardArgs {}

impl ForwardArgs {
    pub fn run(self, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        anyhow::bail!("not implemented yet")
    }
}
