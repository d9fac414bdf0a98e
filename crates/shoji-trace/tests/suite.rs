//! shoji-trace's integration tests, one binary: each file beside this one is a module of it, and
//! `common/` the harness they share. One binary instead of one per file: the harness and
//! the dependencies' generic code are compiled and linked once, not 20 times. cargo-nextest still
//! runs every test in a process of its own. A new test file must be named here (Cargo's discovery of
//! `tests/*.rs` is off, `autotests = false`): the runtime's suite checks every crate's.

mod common;

mod a_50000_span_request_fits_the_default_limit;
mod a_read_only_data_directory_can_be_read;
mod a_version_1_store_is_upgraded;
mod acknowledged_spans_survive_kill_9;
mod analysis_answers_where_the_time_went;
mod batched_requests_are_stored_like_single_ones;
mod cli_reads_the_store_directly;
mod dependencies_are_the_calls_between_services;
mod export_formats_round_trip_through_import;
mod jaeger_and_zipkin_files_are_imported_field_by_field;
mod late_parents_are_linked_when_they_arrive;
mod malformed_and_oversized_requests_are_refused;
mod one_corrupt_trace_does_not_fail_searches;
mod otlp_http_accepts_json_and_gzip;
mod python_sdk_spans_are_stored;
mod query_api_speaks_jaeger_json;
mod retention_removes_whole_traces;
mod rust_otlp_exporter_spans_are_stored;
mod two_writers_share_one_data_dir;
mod web_pages_cannot_post_spans_or_read_traces;
