//! `shoji trace` commands: dispatch to `shoji_trace::cli` (reading the store directly) and
//! `shoji_trace::server` (`serve`).

use std::io::Write;
use std::process::ExitCode;

use anyhow::Context;
use shoji_trace::cli::{
    CriticalPathArgs, DiffArgs, ExportArgs, ImportArgs, LsArgs, ServeArgs, ShowArgs, SummaryArgs,
};

use super::GlobalArgs;

#[derive(Debug, clap::Subcommand)]
pub enum TraceCommand {
    Serve(ServeArgs),
    Ls(LsArgs),
    Show(ShowArgs),
    Summary(SummaryArgs),
    CriticalPath(CriticalPathArgs),
    Diff(DiffArgs),
    Export(ExportArgs),
    Import(ImportArgs),
    Forward(super::trace_forward::ForwardArgs),
}

impl TraceCommand {
    pub fn run(self, global: &GlobalArgs) -> anyhow::Result<ExitCode> {
        let data_dir = shoji_trace::data_dir::resolve(global.data_dir.as_deref());
        let out = match self {
            TraceCommand::Forward(args) => return args.run(global),
            TraceCommand::Serve(a) => {
                a.run(&data_dir, global.config.as_deref())
                    .with_context(|| format!("while serving traces from {}", data_dir.display()))?;
                return Ok(ExitCode::SUCCESS);
            }
            TraceCommand::Summary(a) => a
                .run(&data_dir)
                .with_context(|| format!("while summarising trace {}", a.id))?,
            TraceCommand::CriticalPath(a) => a
                .run(&data_dir)
                .with_context(|| format!("while finding the critical path of trace {}", a.id))?,
            TraceCommand::Diff(a) => a
                .run(&data_dir)
                .with_context(|| format!("while comparing traces {} and {}", a.a, a.b))?,
            TraceCommand::Ls(a) => {
                let listing = a.run(&data_dir).context("while listing traces")?;
                for note in &listing.notes {
                    eprintln!("note: {note}");
                }
                listing.text
            }
            TraceCommand::Show(a) => a
                .run(&data_dir)
                .with_context(|| format!("while showing trace {}", a.id))?,
            TraceCommand::Export(a) => {
                let text = a
                    .run(&data_dir)
                    .with_context(|| format!("while exporting trace {}", a.id))?;
                if let Some(path) = &a.output {
                    std::fs::write(path, text)
                        .with_context(|| format!("while writing {}", path.display()))?;
                    return Ok(ExitCode::SUCCESS);
                }
                text
            }
            TraceCommand::Import(a) => a
                .run(&data_dir)
                .with_context(|| format!("while importing {}", a.file.display()))?,
        };
        print(&out)?;
        Ok(ExitCode::SUCCESS)
    }
}

/// Writes to stdout; a closed pipe (`shoji trace ls | head`) is not an error.
fn print(text: &str) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    match stdout
        .write_all(text.as_bytes())
        .and_then(|()| stdout.flush())
    {
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => other.context("while writing to standard output"),
    }
}
