//! Tracing set-up for Shoji's binaries: OpenTelemetry bridge, exporters, span sinks.
