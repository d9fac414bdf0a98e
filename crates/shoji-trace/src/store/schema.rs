//! The store's tables, and migration from older versions (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

const VERSION: i64 = 1;

/// `spans` is clustered by (trace_id, span_id) so that all spans of a trace are adjacent on
/// disk: loading a 10,000-span trace is one range scan. The span body is the OTLP protobuf of
/// the span; resource and scope are stored once per distinct value in `contexts`.
/// `traces` is the per-trace summary kept current by every ingest, so `ls` never scans spans.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS spans (
    trace_id   BLOB NOT NULL,
    span_id    BLOB NOT NULL,
    parent_id  BLOB,
    name       TEXT NOT NULL,
    start_ns   INTEGER NOT NULL,
    end_ns     INTEGER NOT NULL,
    context_id INTEGER NOT NULL,
    body       BLOB NOT NULL,
    PRIMARY KEY (trace_id, span_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS traces (
    trace_id     BLOB PRIMARY KEY,
    start_ns     INTEGER NOT NULL,
    end_ns       INTEGER NOT NULL,
    span_count   INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    root_name    TEXT NOT NULL,
    root_service TEXT NOT NULL,
    has_root     INTEGER NOT NULL,
    services     TEXT NOT NULL,
    updated_ns   INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS traces_by_start ON traces (start_ns);
CREATE TABLE IF NOT EXISTS operations (
    service TEXT NOT NULL,
    name    TEXT NOT NULL,
    kind    INTEGER NOT NULL,
    PRIMARY KEY (service, name, kind)
) WITHOUT ROWID;
";

pub(super) fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    if found > VERSION {
        return Err(StoreError::NewerSchema {
            path: path.to_path_buf(),
            found,
            known: VERSION,
        });
    }
    if found == VERSION {
        return Ok(());
    }
    // Must precede the first table; lets retention give freed pages back to the file system.
    conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL")
        .map_err(|source| StoreError::Open {
            path: path.to_path_buf(),
            source,
        })?;
    // IMMEDIATE: two processes opening a fresh directory at once must not both create.
    conn.execute_batch(&format!(
        "BEGIN IMMEDIATE; {SCHEMA} PRAGMA user_version={VERSION}; COMMIT;"
    ))
    .map_err(|source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    })
}
