//! The store's tables, and migration from older versions (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

pub(super) const VERSION: i64 = 2;

/// `chunks` holds spans: one row per trace, resource/scope and ingest, whose body is the
/// protobuf of a `ScopeSpans` carrying only those spans (resource and scope are stored once per
/// distinct value in `contexts`). Few, large rows: an ingest of 512 spans is one row insert,
/// not 512 B-tree inserts (ADR 002). The unique `(trace_id, digest)` index finds a trace's
/// chunks and refuses a re-sent one. `names` lists the chunk's distinct span names for the
/// operation filter, and sits before `body` so that reading it does not touch the body's pages.
/// `traces` is the per-trace summary kept current by every ingest, so `ls` never reads spans.
const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS contexts (
    id   INTEGER PRIMARY KEY,
    body BLOB NOT NULL UNIQUE
);
CREATE TABLE IF NOT EXISTS chunks (
    id         INTEGER PRIMARY KEY,
    trace_id   BLOB NOT NULL,
    digest     INTEGER NOT NULL,
    context_id INTEGER NOT NULL,
    span_count INTEGER NOT NULL,
    names      TEXT NOT NULL,
    body       BLOB NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS chunks_by_trace ON chunks (trace_id, digest);
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

/// Spans per chunk when version 1's rows are regrouped.
const MIGRATED_CHUNK_SPANS: usize = 1024;

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
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    if found == 0 {
        // Must precede the first table; lets retention give freed pages back to the file system.
        conn.execute_batch("PRAGMA auto_vacuum=INCREMENTAL")
            .map_err(open_err)?;
    }
    // IMMEDIATE: two processes opening a directory at once must not both create or migrate;
    // the second finds the work done once it has the lock.
    conn.execute_batch("BEGIN IMMEDIATE").map_err(open_err)?;
    let done = (|| {
        let found: i64 = conn.query_row("PRAGMA user_version", [], |r| r.get(0))?;
        if found == 1 {
            from_v1(conn)?;
        }
        if found < VERSION {
            conn.execute_batch(&format!("{SCHEMA} PRAGMA user_version={VERSION};"))?;
        }
        conn.execute_batch("COMMIT")
    })();
    if let Err(source) = done {
        let _ = conn.execute_batch("ROLLBACK");
        return Err(StoreError::Migrate {
            path: path.to_path_buf(),
            from: found,
            source,
        });
    }
    if found == 1 {
        // The dropped span table's pages go back to the file system.
        let _ = conn.execute_batch("PRAGMA incremental_vacuum;");
    }
    Ok(())
}

/// Version 1 kept one row per span in `spans`, clustered by (trace id, span id). Its rows are
/// regrouped into chunks of one trace and context, in span id order, and the table dropped.
/// Summaries, contexts and operations are unchanged.
fn from_v1(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(SCHEMA)?;
    let mut read = conn.prepare(
        "SELECT trace_id, context_id, name, body FROM spans ORDER BY trace_id, context_id, span_id",
    )?;
    let mut write = conn.prepare(
        "INSERT OR IGNORE INTO chunks (trace_id, digest, context_id, span_count, names, body)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
    )?;
    let mut rows = read.query([])?;
    let mut chunk: Option<MigratedChunk> = None;
    while let Some(r) = rows.next()? {
        let trace_id: Vec<u8> = r.get(0)?;
        let ctx: i64 = r.get(1)?;
        let name: String = r.get(2)?;
        let body = r.get_ref(3)?.as_blob()?;
        let same = chunk.as_ref().is_some_and(|c| {
            c.trace_id == trace_id && c.ctx == ctx && c.count < MIGRATED_CHUNK_SPANS
        });
        if !same {
            if let Some(c) = chunk.take() {
                c.write(&mut write)?;
            }
            chunk = Some(MigratedChunk::new(trace_id, ctx));
        }
        if let Some(c) = chunk.as_mut() {
            c.add(&name, body);
        }
    }
    if let Some(c) = chunk.take() {
        c.write(&mut write)?;
    }
    drop(rows);
    conn.execute_batch("DROP TABLE spans;")
}

struct MigratedChunk {
    trace_id: Vec<u8>,
    ctx: i64,
    count: usize,
    names: Vec<String>,
    digest: super::ingest::Digest,
    body: Vec<u8>,
}

impl MigratedChunk {
    fn new(trace_id: Vec<u8>, ctx: i64) -> Self {
        MigratedChunk {
            trace_id,
            ctx,
            count: 0,
            names: Vec::new(),
            digest: Default::default(),
            body: Vec::new(),
        }
    }

    /// `span` is one span's protobuf, as version 1 stored it.
    fn add(&mut self, name: &str, span: &[u8]) {
        super::ingest::append_encoded_span(&mut self.body, span);
        if let Ok(s) = <opentelemetry_proto::tonic::trace::v1::Span as prost::Message>::decode(span)
        {
            self.digest.add(&s.span_id);
        }
        if !self.names.iter().any(|n| n == name) {
            self.names.push(name.to_string());
        }
        self.count += 1;
    }

    fn write(self, stmt: &mut rusqlite::Statement<'_>) -> Result<(), rusqlite::Error> {
        stmt.execute(rusqlite::params![
            self.trace_id,
            self.digest.value() as i64,
            self.ctx,
            self.count as i64,
            super::ingest::join_services(self.names.iter().map(String::as_str)),
            self.body
        ])
        .map(|_| ())
    }
}
