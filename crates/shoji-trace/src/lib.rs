//! Embedded trace store, OTLP receiver, Jaeger-compatible query API and trace analysis.
