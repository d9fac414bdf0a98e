//! Files in and out of the store: OTLP JSON lines, Jaeger JSON, Chrome trace events.

pub mod chrome;
pub mod otlp_json;

use opentelemetry_proto::tonic::trace::v1::ResourceSpans;

use crate::jaeger;
use crate::model::Trace;

/// Export formats of `shoji trace export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExportFormat {
    /// One OTLP `TracesData` per line, hex ids: the OpenTelemetry file-exporter format.
    OtlpJson,
    /// Jaeger's JSON (`{"data": [trace]}`), loadable into Jaeger UI's "JSON file" upload.
    JaegerJson,
    /// Chrome trace events, for Perfetto, speedscope and chrome://tracing.
    Chrome,
}

impl std::str::FromStr for ExportFormat {
    type Err = FormatError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "otlp-json" => Ok(ExportFormat::OtlpJson),
            "jaeger-json" => Ok(ExportFormat::JaegerJson),
            "chrome" => Ok(ExportFormat::Chrome),
            other => Err(FormatError::UnknownFormat(other.to_string())),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    #[error("unknown format {0:?}: expected otlp-json, jaeger-json or chrome")]
    UnknownFormat(String),
    #[error("line {line} is not OTLP JSON (TracesData)")]
    OtlpLine {
        line: usize,
        #[source]
        source: serde_json::Error,
    },
    #[error("not Jaeger JSON")]
    Jaeger(#[source] jaeger::JaegerError),
    #[error("neither OTLP JSON lines nor Jaeger JSON: the input is empty")]
    Empty,
    #[error("cannot serialise the export")]
    Serialise(#[source] serde_json::Error),
}

/// Renders `trace` in `format`, ending with a newline.
pub fn export(trace: &Trace, format: ExportFormat) -> Result<String, FormatError> {
    let mut out = match format {
        ExportFormat::OtlpJson => otlp_json::export(trace)?,
        ExportFormat::JaegerJson => {
            let doc = jaeger::Envelope::ok(vec![jaeger::JaegerTrace::from_trace(trace)]);
            serde_json::to_string_pretty(&doc).map_err(FormatError::Serialise)?
        }
        ExportFormat::Chrome => chrome::export(trace)?,
    };
    if !out.ends_with('\n') {
        out.push('\n');
    }
    Ok(out)
}

/// Parses an import file: Jaeger JSON (an object with `data`) or OTLP JSON lines.
pub fn import(text: &str) -> Result<Vec<ResourceSpans>, FormatError> {
    let trimmed = text.trim_start();
    if trimmed.is_empty() {
        return Err(FormatError::Empty);
    }
    if jaeger::looks_like_jaeger(trimmed) {
        return jaeger::import::to_otlp(trimmed).map_err(FormatError::Jaeger);
    }
    otlp_json::import(text)
}
