//! The `shoji trace` commands that read or write the store directly (no server): their
//! arguments (clap) and what they print. The binary only dispatches to these.

mod serve;

pub use serve::{ServeArgs, ServeError, DEFAULT_CONFIG};

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use crate::formats::{self, ExportFormat, FormatError};
use crate::model::TraceId;
use crate::query::{self, TraceQuery};
use crate::render::{self, Color, ShowOptions};
use crate::store::{Store, StoreError, SummaryFilter};

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Format(#[from] FormatError),
    #[error(transparent)]
    Unit(#[from] crate::units::UnitError),
    #[error("{0:?} is not a tag: expected key=value")]
    Tag(String),
    #[error("trace {0} has no spans in the store")]
    NoSpans(String),
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} holds no spans")]
    NothingToImport { path: PathBuf },
}

/// When to colour the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum ColorChoice {
    /// Only when standard output is a terminal (and NO_COLOR is unset)
    #[default]
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    pub fn resolve(self) -> Color {
        match self {
            ColorChoice::Always => Color::Always,
            ColorChoice::Never => Color::Never,
            ColorChoice::Auto => {
                if std::io::stdout().is_terminal() && std::env::var_os("NO_COLOR").is_none() {
                    Color::Always
                } else {
                    Color::Never
                }
            }
        }
    }
}

/// List traces, newest first
#[derive(Debug, Clone, clap::Args)]
pub struct LsArgs {
    /// Only traces with spans from this service
    #[arg(long)]
    pub service: Option<String>,
    /// Only traces with a span of this name
    #[arg(long)]
    pub operation: Option<String>,
    /// Only traces with a span carrying this attribute (key=value); repeatable
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    pub tags: Vec<String>,
    /// Only traces at least this long (e.g. 500ms, 2s)
    #[arg(long, value_name = "DURATION")]
    pub min_duration: Option<String>,
    /// Only traces that started since then: a duration ago (1h), RFC 3339, or Unix seconds
    #[arg(long, value_name = "TIME")]
    pub since: Option<String>,
    /// At most this many traces
    #[arg(long, default_value_t = 20)]
    pub limit: usize,
    /// JSON lines instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Show a trace's span tree with durations and a timeline
#[derive(Debug, Clone, clap::Args)]
pub struct ShowArgs {
    /// Trace id: hex (16 digits = a 64-bit id, zero-extended as Jaeger does), a unique prefix ending in `*` (e.g. 4bf9*), or `latest`
    pub id: String,
    /// Also print each span's ids, status, attributes and events
    #[arg(short, long)]
    pub verbose: bool,
    /// Colour spans by their `source` attribute
    #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
    pub color: ColorChoice,
}

/// Print a trace in a file format
#[derive(Debug, Clone, clap::Args)]
pub struct ExportArgs {
    /// Trace id: hex (16 digits = a 64-bit id, zero-extended as Jaeger does), a unique prefix ending in `*` (e.g. 4bf9*), or `latest`
    pub id: String,
    /// otlp-json (OTLP JSON lines), jaeger-json (Jaeger UI upload) or chrome (Perfetto, speedscope)
    #[arg(long, default_value = "otlp-json")]
    pub format: ExportFormat,
    /// Write to this file instead of standard output
    #[arg(long, short)]
    pub output: Option<PathBuf>,
}

/// Import a trace file into the store: OTLP JSON (one document or one per line), Jaeger JSON
/// (`{"data": [...]}` as its UI downloads, one trace, or a list) or Zipkin v2 JSON (a list
/// of spans); the format is detected
#[derive(Debug, Clone, clap::Args)]
pub struct ImportArgs {
    /// The file (`-` for standard input)
    pub file: PathBuf,
}

/// Where the time went: self and total time by operation, subsystem and source
#[derive(Debug, Clone, clap::Args)]
pub struct SummaryArgs {
    /// Trace id: hex (16 digits = a 64-bit id, zero-extended as Jaeger does), a unique prefix ending in `*` (e.g. 4bf9*), or `latest`
    pub id: String,
    /// Rows per table
    #[arg(long, default_value_t = 15)]
    pub top: usize,
    /// JSON instead of tables
    #[arg(long)]
    pub json: bool,
}

/// The chain of spans that determined the trace's duration
#[derive(Debug, Clone, clap::Args)]
pub struct CriticalPathArgs {
    /// Trace id: hex (16 digits = a 64-bit id, zero-extended as Jaeger does), a unique prefix ending in `*` (e.g. 4bf9*), or `latest`
    pub id: String,
    /// JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Which operations got slower or faster between two traces, and what is in only one
#[derive(Debug, Clone, clap::Args)]
pub struct DiffArgs {
    /// The baseline trace (hex id, prefix ending in `*`, or `latest`)
    pub a: String,
    /// The trace to compare with it
    pub b: String,
    /// JSON instead of tables
    #[arg(long)]
    pub json: bool,
}

impl SummaryArgs {
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let trace = load(&Store::open_read_only(data_dir)?, &self.id)?;
        let s = crate::analysis::summary::summarize(&trace);
        if self.json {
            return Ok(json(&s));
        }
        Ok(render::analysis::summary(&s, self.top))
    }
}

impl CriticalPathArgs {
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let trace = load(&Store::open_read_only(data_dir)?, &self.id)?;
        let path = crate::analysis::critical_path::critical_path(&trace);
        if self.json {
            return Ok(json(&path));
        }
        Ok(render::analysis::critical_path(
            &hex::encode(trace.trace_id),
            trace.duration_ns(),
            &path,
        ))
    }
}

impl DiffArgs {
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let store = Store::open_read_only(data_dir)?;
        let a = load(&store, &self.a)?;
        let b = load(&store, &self.b)?;
        let d = crate::analysis::diff::diff(&a, &b);
        if self.json {
            return Ok(json(&d));
        }
        Ok(render::analysis::diff(&d))
    }
}

fn json<T: serde::Serialize>(v: &T) -> String {
    // Plain data structures always serialise.
    let mut s = serde_json::to_string_pretty(v).unwrap_or_default();
    s.push('\n');
    s
}

impl clap::builder::ValueParserFactory for ExportFormat {
    type Parser = clap::builder::ValueParser;
    fn value_parser() -> Self::Parser {
        clap::builder::ValueParser::new(|s: &str| s.parse::<ExportFormat>())
    }
}

/// Resolves an id argument to a stored trace id.
pub fn resolve(store: &Store, id: &str) -> Result<TraceId, CliError> {
    Ok(store.resolve_id(id)?)
}

fn load(store: &Store, id: &str) -> Result<crate::model::Trace, CliError> {
    let tid = resolve(store, id)?;
    store
        .trace(&tid)?
        .ok_or_else(|| CliError::NoSpans(hex::encode(tid)))
}

/// What `shoji trace ls` prints: the listing on standard output, the notes (skipped corrupt
/// traces, a tag search stopped at its bound) on standard error.
#[derive(Debug)]
pub struct Listing {
    pub text: String,
    pub notes: Vec<String>,
}

impl LsArgs {
    pub fn run(&self, data_dir: &Path) -> Result<Listing, CliError> {
        let store = Store::open_read_only(data_dir)?;
        let tags = self
            .tags
            .iter()
            .map(|t| query::parse_tag(t).ok_or_else(|| CliError::Tag(t.clone())))
            .collect::<Result<Vec<_>, _>>()?;
        let q = TraceQuery {
            filter: SummaryFilter {
                service: self.service.clone(),
                operation: self.operation.clone(),
                min_duration_ns: self
                    .min_duration
                    .as_deref()
                    .map(crate::units::parse_duration)
                    .transpose()?,
                start_min_ns: self
                    .since
                    .as_deref()
                    .map(crate::units::parse_time)
                    .transpose()?,
                ..SummaryFilter::default()
            },
            tags,
            limit: self.limit,
        };
        let found = query::search(&store, &q)?;
        let notes = found.notes();
        let text = if self.json {
            let mut out = String::new();
            for s in &found.traces {
                // Serialising plain data into a String cannot fail.
                out.push_str(&serde_json::to_string(s).unwrap_or_default());
                out.push('\n');
            }
            out
        } else {
            render::ls(&found.traces)
        };
        Ok(Listing { text, notes })
    }
}

impl ShowArgs {
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let store = Store::open_read_only(data_dir)?;
        let trace = load(&store, &self.id)?;
        Ok(render::show(
            &trace,
            &ShowOptions {
                verbose: self.verbose,
                color: self.color.resolve(),
                ..ShowOptions::default()
            },
        ))
    }
}

impl ExportArgs {
    /// The exported text; the caller writes it to `output` or standard output.
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let store = Store::open_read_only(data_dir)?;
        let trace = load(&store, &self.id)?;
        Ok(formats::export(&trace, self.format)?)
    }
}

impl ImportArgs {
    pub fn run(&self, data_dir: &Path) -> Result<String, CliError> {
        let read_err = |source| CliError::Read {
            path: self.file.clone(),
            source,
        };
        let text = if self.file == Path::new("-") {
            std::io::read_to_string(std::io::stdin()).map_err(read_err)?
        } else {
            std::fs::read_to_string(&self.file).map_err(read_err)?
        };
        let imported = formats::import(&text)?;
        let store = Store::open(data_dir)?;
        let stats = store.ingest_resource_spans(&imported.resource_spans)?;
        let mut out = String::new();
        for s in &imported.skipped {
            out.push_str(&format!("skipped {s}\n"));
        }
        if stats.stored + stats.duplicates == 0 {
            return Err(CliError::NothingToImport {
                path: self.file.clone(),
            });
        }
        out.push_str(&format!(
            "imported {} spans from {} ({} already stored, {} rejected for invalid ids, {} skipped)\n",
            stats.stored,
            imported.format,
            stats.duplicates,
            stats.rejected,
            imported.skipped.len()
        ));
        Ok(out)
    }
}
