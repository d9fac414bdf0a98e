//! The embedded trace store: one SQLite database in WAL mode in the data directory.
//!
//! Several processes write the same directory at once (a running `shoji run` and
//! `shoji trace serve`): SQLite's file locks serialise writers, WAL lets readers run beside
//! them, and every ingest is one `BEGIN IMMEDIATE` transaction, so a request is stored whole or
//! not at all. See `docs/adr/002-trace-store.md` for why, and `docs/ARCHITECTURE.md` for the
//! layout.

mod delete;
mod ingest;
mod read;
mod schema;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::Connection;

pub use ingest::IngestStats;
pub use read::{IdError, SummaryFilter, TraceSummary};

/// File name of the database inside the data directory.
pub const DB_FILE: &str = "traces.db";

/// How long a writer waits for another process's transaction before giving up. Long, because
/// giving up loses spans and the other writer's transactions are short.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot create the data directory {path}")]
    CreateDir {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot open the trace store {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error("trace store {path} has schema version {found}, this shoji knows up to {known}")]
    NewerSchema {
        path: PathBuf,
        found: i64,
        known: i64,
    },
    #[error("cannot upgrade the trace store {path} from schema version {from}; it is unchanged (the upgrade is one transaction), and an older shoji can still read it")]
    Migrate {
        path: PathBuf,
        from: i64,
        #[source]
        source: rusqlite::Error,
    },
    #[error("trace store query failed while {doing}")]
    Sql {
        doing: &'static str,
        #[source]
        source: rusqlite::Error,
    },
    #[error("stored spans of trace {trace_id} ({what}) cannot be decoded")]
    Corrupt {
        trace_id: String,
        what: String,
        #[source]
        source: prost::DecodeError,
    },
    #[error(transparent)]
    Id(#[from] IdError),
}

pub(crate) trait SqlContext<T> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError>;
}

impl<T> SqlContext<T> for Result<T, rusqlite::Error> {
    fn doing(self, doing: &'static str) -> Result<T, StoreError> {
        self.map_err(|source| StoreError::Sql { doing, source })
    }
}

/// Handle on the store. Cheap to clone; `Send + Sync`. Writes go through one connection and
/// reads through another so that a long query never holds up ingest in the same process.
#[derive(Clone)]
pub struct Store {
    inner: Arc<Inner>,
}

struct Inner {
    path: PathBuf,
    writer: Mutex<ingest::Writer>,
    reader: Mutex<Connection>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("path", &self.inner.path)
            .finish()
    }
}

impl Store {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::CreateDir {
            path: data_dir.to_path_buf(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let writer = open_connection(&path)?;
        schema::migrate(&writer, &path)?;
        let reader = open_connection(&path)?;
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: Mutex::new(ingest::Writer::new(writer)),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self) -> MutexGuard<'_, ingest::Writer> {
        // A panic while holding the lock cannot leave a half-written transaction behind
        // (SQLite rolls it back when the statement is dropped), so a poisoned lock is safe.
        self.inner
            .writer
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

fn open_connection(path: &Path) -> Result<Connection, StoreError> {
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let conn = Connection::open(path).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // page_size applies only when the file is created (first, before WAL mode is written into
    // it): 32 KiB pages make a chunk of 512 spans about 3 pages instead of 23, so a commit
    // writes a few WAL frames, not dozens (ADR 002, docs/benchmarks.md). Existing stores keep
    // their page size.
    // WAL: readers never block the writer and a commit is one sequential append.
    // synchronous=NORMAL: a committed transaction survives the death of the process (the WAL
    // is in the OS page cache); only a power loss can take the last commits. ADR 002.
    conn.execute_batch(
        "PRAGMA page_size=32768;
         PRAGMA journal_mode=WAL;
         PRAGMA synchronous=NORMAL;
         PRAGMA foreign_keys=OFF;
         PRAGMA cache_size=-65536;
         PRAGMA temp_store=MEMORY;",
    )
    .map_err(open_err)?;
    Ok(conn)
}

#[cfg(test)]
mod tests {
    fn send_sync<T: Send + Sync + Clone>() {}

    /// The runtime shares one `Store` between threads and tasks.
    #[test]
    fn store_is_send_sync_and_clone() {
        send_sync::<super::Store>();
    }
}
