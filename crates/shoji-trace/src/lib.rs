//! Embedded trace store, OTLP receiver, Jaeger-compatible query API and trace analysis.
//!
//! How the parts compose:
//! - [`store`] is the durable, multi-process-safe SQLite store in the data directory
//!   ([`data_dir`]). Everything writes through [`store::Store::ingest`] (an OTLP
//!   `ExportTraceServiceRequest`), everything reads [`model::Trace`]s back.
//! - [`render`] turns traces into terminal text; [`formats`] exports and imports files
//!   (OTLP JSON lines, Jaeger JSON, Chrome trace events); [`jaeger`] is Jaeger's JSON model.

pub mod analysis;
pub mod cli;
pub mod data_dir;
pub mod formats;
pub mod jaeger;
pub mod model;
pub mod query;
pub mod render;
pub mod retention;
pub mod server;
pub mod store;
pub use shoji_units as units;
