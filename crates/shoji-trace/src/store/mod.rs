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
pub use read::{IdError, SummaryFilter, TraceSummary, TraceVersion};

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
    #[error("the trace store {path} was opened read-only (its directory or file is not writable); {doing} needs write access")]
    ReadOnly { path: PathBuf, doing: &'static str },
    #[error("the trace store {path} has schema version {found} and must be upgraded to {known} first, which needs write access: run any shoji trace command as a user who can write it")]
    NeedsUpgrade {
        path: PathBuf,
        found: i64,
        known: i64,
    },
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
    /// `None` when the store was opened read-only.
    writer: Option<Mutex<ingest::Writer>>,
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
                writer: Some(Mutex::new(ingest::Writer::new(writer))),
                reader: Mutex::new(reader),
            }),
        })
    }

    /// Opens the store for reading only: what `shoji trace ls/show/export` need, so that a
    /// data directory the user may read but not write (another user's, a read-only mount)
    /// still works. No file is created or written, the WAL's shared-memory file included: when
    /// that file cannot be created (a read-only directory and no writer running), the database
    /// is opened as immutable, which is what it is for this reader. A store that does not exist
    /// yet is created (as [`Store::open`] does), so a first `ls` shows an empty store rather
    /// than an error; one that needs a schema upgrade is upgraded when writable.
    pub fn open_read_only(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join(DB_FILE);
        if !path.exists() {
            return Store::open(data_dir);
        }
        let reader = open_reader(&path)?;
        let found: i64 = reader
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(|source| StoreError::Open {
                path: path.clone(),
                source,
            })?;
        if found != schema::VERSION {
            drop(reader);
            return match Store::open(data_dir) {
                Err(StoreError::Open { .. } | StoreError::Migrate { .. })
                    if found < schema::VERSION =>
                {
                    Err(StoreError::NeedsUpgrade {
                        path,
                        found,
                        known: schema::VERSION,
                    })
                }
                other => other,
            };
        }
        Ok(Store {
            inner: Arc::new(Inner {
                path,
                writer: None,
                reader: Mutex::new(reader),
            }),
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    fn writer(&self, doing: &'static str) -> Result<MutexGuard<'_, ingest::Writer>, StoreError> {
        let Some(writer) = &self.inner.writer else {
            return Err(StoreError::ReadOnly {
                path: self.inner.path.clone(),
                doing,
            });
        };
        // A panic while holding the lock cannot leave a half-written transaction behind
        // (SQLite rolls it back when the statement is dropped), so a poisoned lock is safe.
        Ok(writer.lock().unwrap_or_else(|poison| poison.into_inner()))
    }

    fn reader(&self) -> MutexGuard<'_, Connection> {
        self.inner
            .reader
            .lock()
            .unwrap_or_else(|poison| poison.into_inner())
    }
}

/// A read-only connection. In WAL mode a reader needs the `-shm` file; where it cannot be
/// created the database is opened `immutable` (no locks, no shared memory), see
/// [`Store::open_read_only`].
fn open_reader(path: &Path) -> Result<Connection, StoreError> {
    use rusqlite::OpenFlags;
    let open_err = |source| StoreError::Open {
        path: path.to_path_buf(),
        source,
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_ONLY
        | OpenFlags::SQLITE_OPEN_NO_MUTEX
        | OpenFlags::SQLITE_OPEN_URI;
    let conn = Connection::open_with_flags(path, flags).map_err(open_err)?;
    conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
    // The first read is what needs the -shm file.
    if conn
        .query_row("SELECT count(*) FROM sqlite_master", [], |r| {
            r.get::<_, i64>(0)
        })
        .is_ok()
    {
        return Ok(conn);
    }
    drop(conn);
    let uri = format!("file:{}?immutable=1", uri_path(path));
    let conn = Connection::open_with_flags(uri, flags).map_err(open_err)?;
    conn.query_row("SELECT count(*) FROM sqlite_master", [], |r| {
        r.get::<_, i64>(0)
    })
    .map_err(open_err)?;
    Ok(conn)
}

/// `path` for an SQLite `file:` URI: the characters a URI gives meaning to, percent-encoded.
fn uri_path(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::new();
    for &b in path.as_os_str().as_bytes() {
        match b {
            b'%' | b'?' | b'#' | b' ' | 0x80..=0xff | 0..=0x1f => {
                out.push_str(&format!("%{b:02X}"))
            }
            _ => out.push(b as char),
        }
    }
    out
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
