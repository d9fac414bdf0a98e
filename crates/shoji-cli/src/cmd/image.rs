//! `shoji image` commands.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum ImageCommand {
    /// Build the guest image: a kernel (Shoji's own, built once from Debian's linux-source-6.1
    /// and cached) and an initramfs with shoji-agent as /init
    Build(BuildArgs),
}

/// Which kernel the guest image boots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum KernelArg {
    /// Shoji's kernel: everything built in, no modules (several minutes to build, once per machine)
    Shoji,
    /// Debian's cloud kernel and the modules the agent needs (the fallback)
    Debian,
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
    /// The kernel: Shoji's own (default) or Debian's cloud kernel
    #[arg(long, value_enum, value_name = "KIND")]
    pub kernel: Option<KernelArg>,
    /// Debian kernel package, with --kernel debian (default: what linux-image-cloud-amd64
    /// depends on); implies --kernel debian when --kernel is not given
    #[arg(long, value_name = "NAME")]
    pub kernel_package: Option<String>,
    /// Rebuild the image even if up to date
    #[arg(long)]
    pub force: bool,
    /// Build Shoji's kernel again even if it is cached (in $XDG_CACHE_HOME/shoji/kernel, else
    /// ~/.cache/shoji/kernel)
    #[arg(long)]
    pub rebuild_kernel: bool,
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
        let kernel = match (a.kernel, &a.kernel_package) {
            (Some(KernelArg::Shoji), Some(p)) => anyhow::bail!(
                "--kernel-package {p} names a Debian kernel package, but --kernel shoji builds Shoji's kernel; use --kernel debian with it"
            ),
            (Some(KernelArg::Shoji), None) | (None, None) => shoji_image::KernelChoice::Shoji,
            (Some(KernelArg::Debian), _) | (None, Some(_)) => shoji_image::KernelChoice::Debian,
        };
        let opts = shoji_image::BuildOptions {
            out: a.out.unwrap_or_else(shoji_image::guest_dir),
            agent,
            kernel,
            kernel_package: a.kernel_package,
            kernel_cache: shoji_image::kbuild::cache_root(),
            force: a.force,
            rebuild_kernel: a.rebuild_kernel,
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
