//! `shoji image` commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the guest image (Debian's cloud kernel + an initramfs with shoji-agent as /init)
    Build(BuildArgs),
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Output directory (default: $SHOJI_GUEST_DIR, else $XDG_DATA_HOME/shoji/guest, else
    /// ~/.local/share/shoji/guest)
    #[arg(long, value_name = "DIR")]
    pub out: Option<PathBuf>,
    /// The static agent binary (default: a static shoji-agent next to this shoji executable,
    /// else target/x86_64-unknown-linux-gnu/agent/shoji-agent beside cargo's target/debug)
    #[arg(long, value_name = "PATH")]
    pub agent: Option<PathBuf>,
    /// Debian kernel package (default: what linux-image-cloud-amd64 depends on)
    #[arg(long, value_name = "NAME")]
    pub kernel_package: Option<String>,
    /// Rebuild even if up to date
    #[arg(long)]
    pub force: bool,
}

impl ImageCommand {
    pub fn run(self, _global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        let ImageCommand::Build(a) = self;
        let agent = match a.agent {
            Some(p) => p,
            None => shoji_image::default_agent(
                &std::env::current_exe().context("while locating the shoji executable")?,
            )
            .context("while looking for the static agent binary")?,
        };
        let opts = shoji_image::BuildOptions {
            out: a.out.unwrap_or_else(shoji_image::guest_dir),
            agent,
            kernel_package: a.kernel_package,
            force: a.force,
        };
        let start = std::time::Instant::now();
        let img = shoji_image::build(&opts, &mut |line| eprintln!("  {line}"))
            .context("while building the guest image")?;
        eprintln!(
            "guest image ready in {:.1} s: {} and {}",
            start.elapsed().as_secs_f64(),
            img.kernel.display(),
            img.initrd.display()
        );
        Ok(ExitCode::SUCCESS)
    }
}
