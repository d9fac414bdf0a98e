//! Files in and out of the store: OTLP JSON lines, Jaeger JSON, Chrome trace events out;
//! OTLP JSON, Jaeger JSON and Zipkin v2 JSON in (detected, see [`import`]).

pub mod chrome;
pub mod otlp_json;
pub mod zipkin;

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
    #[error("the input looks like {format} but is not valid {format}")]
    Invalid {
        format: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("the input is not one of the formats tried: {TRIED}")]
    Unrecognised {
        #[source]
        source: Box<FormatError>,
    },
    #[error("the input holds no spans (formats tried: {TRIED})")]
    Empty,
    #[error("found {0}")]
    Shape(String),
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

/// What `import` detects, in the order it tries them (named in errors).
const TRIED: &str = "OTLP JSON (a TracesData document, or one per line), Jaeger JSON \
({\"data\": [traces]}, one trace, or a list of traces), Zipkin v2 JSON (a list of spans)";

/// An import file turned into OTLP.
#[derive(Debug)]
pub struct Imported {
    pub resource_spans: Vec<ResourceSpans>,
    /// The format detected: `otlp-json`, `jaeger-json` or `zipkin-json`.
    pub format: &'static str,
    /// Spans left out (ids the format's own tools refuse too), one line each.
    pub skipped: Vec<String>,
}

/// Parses an import file, detecting its format from its shape: a JSON object with
/// `resourceSpans` is OTLP; one with `data` is Jaeger (as its query API and UI write it); one
/// with `spans` is one Jaeger trace; a list is Jaeger traces (items with `spans`) or Zipkin v2
/// spans (items with `traceId` and `id`); anything that is not one JSON document is read as
/// OTLP JSON lines. When nothing fits, the error names every format tried.
pub fn import(text: &str) -> Result<Imported, FormatError> {
    let trimmed = text.trim();
    if trimmed.is_empty() {
        return Err(FormatError::Empty);
    }
    let doc = match serde_json::from_str::<serde_json::Value>(trimmed) {
        Ok(doc) => doc,
        // Not one document: OTLP JSON lines, the only line-oriented format.
        Err(_) => {
            return otlp_json::import(text)
                .map(|rs| Imported {
                    resource_spans: rs,
                    format: "otlp-json",
                    skipped: Vec::new(),
                })
                .map_err(|e| match e {
                    FormatError::Empty => FormatError::Empty,
                    e => FormatError::Unrecognised {
                        source: Box::new(e),
                    },
                })
        }
    };
    let invalid = |format: &'static str| {
        move |source: serde_json::Error| FormatError::Invalid { format, source }
    };
    let jaeger = |traces: Vec<jaeger::JaegerTrace>| {
        let c = jaeger::import::to_otlp(traces);
        Imported {
            resource_spans: c.resource_spans,
            format: "jaeger-json",
            skipped: c.skipped,
        }
    };
    let has = |v: &serde_json::Value, k: &str| v.get(k).is_some();
    let imported = match &doc {
        serde_json::Value::Object(_) if has(&doc, "resourceSpans") => {
            let data: opentelemetry_proto::tonic::trace::v1::TracesData =
                serde_json::from_value(doc).map_err(invalid("OTLP JSON"))?;
            Imported {
                resource_spans: data.resource_spans,
                format: "otlp-json",
                skipped: Vec::new(),
            }
        }
        serde_json::Value::Object(_) if has(&doc, "data") => {
            let env: jaeger::Envelope<Vec<jaeger::JaegerTrace>> =
                serde_json::from_value(doc).map_err(invalid("Jaeger JSON"))?;
            jaeger(env.data)
        }
        serde_json::Value::Object(_) if has(&doc, "spans") => {
            let t: jaeger::JaegerTrace =
                serde_json::from_value(doc).map_err(invalid("Jaeger JSON (one trace)"))?;
            jaeger(vec![t])
        }
        serde_json::Value::Array(items) if items.is_empty() => return Err(FormatError::Empty),
        serde_json::Value::Array(items) if has(&items[0], "spans") => {
            let ts: Vec<jaeger::JaegerTrace> =
                serde_json::from_value(doc).map_err(invalid("Jaeger JSON (a list of traces)"))?;
            jaeger(ts)
        }
        serde_json::Value::Array(items) if has(&items[0], "traceId") && has(&items[0], "id") => {
            let spans: Vec<zipkin::ZipkinSpan> =
                serde_json::from_value(doc).map_err(invalid("Zipkin v2 JSON"))?;
            let c = zipkin::to_otlp(spans);
            Imported {
                resource_spans: c.resource_spans,
                format: "zipkin-json",
                skipped: c.skipped,
            }
        }
        _ => {
            return Err(FormatError::Unrecognised {
                source: Box::new(FormatError::Shape(shape(&doc))),
            })
        }
    };
    if imported.resource_spans.is_empty() && imported.skipped.is_empty() {
        return Err(FormatError::Empty);
    }
    Ok(imported)
}

/// A few words on what a JSON document that fits no format looks like.
fn shape(doc: &serde_json::Value) -> String {
    match doc {
        serde_json::Value::Object(m) => {
            let keys: Vec<&str> = m.keys().take(6).map(String::as_str).collect();
            format!("an object with keys {keys:?}")
        }
        serde_json::Value::Array(items) => match items.first() {
            Some(serde_json::Value::Object(m)) => {
                let keys: Vec<&str> = m.keys().take(6).map(String::as_str).collect();
                format!("a list of objects with keys {keys:?}")
            }
            _ => "a list of non-objects".into(),
        },
        other => format!(
            "a JSON {}",
            match other {
                serde_json::Value::String(_) => "string",
                serde_json::Value::Number(_) => "number",
                serde_json::Value::Bool(_) => "boolean",
                _ => "null",
            }
        ),
    }
}
