//! The `shoji` command: argument parsing and wiring. Each command group lives in its own module
//! under `cmd/` and calls into the library crates; no logic lives here.

use clap::{Parser, Subcommand};

mod cmd;

/// mimalloc instead of glibc's allocator: the span path allocates and frees every attribute of
/// every span, often on another thread than the one that allocated it, and glibc's arenas made
/// that half of the forwarder's CPU time (ADR 006, docs/benchmarks.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Run OCI containers in lightweight VMs, and see where the time goes.
#[derive(Debug, Parser)]
#[command(name = "shoji", version, propagate_version = true)]
struct Cli {
    #[command(flatten)]
    global: cmd::GlobalArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    #[command(flatten)]
    Runtime(cmd::runtime::RuntimeCommand),
    /// Pull an image from a registry into the image store
    Pull(cmd::image::PullArgs),
    /// The guest image (`build`) and the image store (`load`, `pull`, `ls`, `rm`, `prune`)
    #[command(subcommand)]
    Image(cmd::image::ImageCommand),
    /// Store, serve, forward, inspect and export traces
    #[command(subcommand)]
    Trace(cmd::trace::TraceCommand),
}

fn main() -> std::process::ExitCode {
    // mimalloc maps its heaps 2 MiB-aligned and advises transparent huge pages, so every thread
    // that allocates costs a whole huge page: 27 instead of 20 MiB of host RSS per sandbox,
    // with no gain in span throughput (docs/benchmarks.md). Off for this process; the children
    // that want them (QEMU's guest RAM) get them back in `shoji_runtime::process::spawn`.
    let _ = nix::sys::prctl::set_thp_disable(true);
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Runtime(c) => c.run(&cli.global),
        Command::Pull(a) => cmd::image::pull(a, &cli.global),
        Command::Image(c) => c.run(&cli.global),
        Command::Trace(c) => c.run(&cli.global),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("shoji: error: {e:#}");
            std::process::ExitCode::from(125)
        }
    }
}
