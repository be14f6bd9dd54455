//! SQLite store. One connection behind a mutex, used from one thread of its own (async
//! callers) or from start-up code, so database work never runs on the async executor.
//! WAL keeps readers cheap and makes a committed transaction survive a `kill -9` of the
//! daemon.
//!
//! Why a thread of its own rather than `spawn_blocking`: every call takes the one
//! connection anyway, so a burst of calls on the blocking pool only parks a thread per
//! waiting call on the mutex; each such thread keeps its stack and its malloc caches,
//! which is how RSS grew with the number of Jobs kept (README, "Performance").

pub mod access;
mod migrations;
pub mod observation_logs;
#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
pub mod resources;
pub mod workloads;

use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use rusqlite::Connection;

#[allow(
    unused_imports,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
pub use resources::{EventRecord, NewResource, Resource};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Sqlite(#[from] rusqlite::Error),
    #[error("{kind} {} not found", qualified(.namespace, .name))]
    NotFound {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{kind} {} already exists", qualified(.namespace, .name))]
    AlreadyExists {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("{0}")]
    Conflict(String),
    #[error(
        "the database at {path} was written by a newer Hearth (schema version {found}, this build knows up to {supported}); upgrade Hearth or point --data-dir elsewhere"
    )]
    TooNew {
        path: PathBuf,
        found: i64,
        supported: i64,
    },
    #[error("stored JSON is invalid: {0}")]
    Json(#[from] serde_json::Error),
    #[error("database worker failed: {0}")]
    Worker(String),
}

/// Locks the connection, taking it back if a store call panicked while holding it:
/// a panic inside a `Transaction` rolled it back as it unwound, and one left open
/// otherwise is rolled back here, so the connection is consistent and the daemon's
/// storage does not fail for good after one bug.
fn lock_recovering(conn: &Mutex<Connection>) -> MutexGuard<'_, Connection> {
    let guard = conn.lock().unwrap_or_else(|poisoned| {
        tracing::error!("a store call panicked; recovering the database connection");
        conn.clear_poison();
        poisoned.into_inner()
    });
    if !guard.is_autocommit() {
        if let Err(e) = guard.execute_batch("ROLLBACK") {
            tracing::error!(error = %e, "rolling back a transaction left open by a panic");
        }
    }
    guard
}

/// A store call queued for the store's thread.
type Call = Box<dyn FnOnce() + Send>;

#[derive(Clone)]
pub struct Store {
    conn: Arc<Mutex<Connection>>,
    /// The store thread's queue; the thread ends when the last clone is dropped.
    calls: mpsc::Sender<Call>,
    path: PathBuf,
    /// The newest `resourceVersion`, sent after each store call that wrote one, so
    /// watches wake right after the commit instead of polling.
    changes: Arc<tokio::sync::watch::Sender<i64>>,
}

/// After `work` ran on `conn`: tells watchers when it committed a new change.
fn announce(conn: &Connection, before: u64, changes: &tokio::sync::watch::Sender<i64>) {
    if conn.total_changes() == before || !conn.is_autocommit() {
        return;
    }
    match resources::latest_version(conn) {
        Ok(latest) => {
            changes.send_if_modified(|seen| {
                let newer = latest > *seen;
                if newer {
                    *seen = latest;
                }
                newer
            });
        }
        Err(e) => tracing::warn!(error = %e, "reading the latest resourceVersion"),
    }
}

impl Store {
    /// Opens (creating if needed) and migrates the database. Runs at start-up, before the
    /// executor serves requests, so it may block.
    pub fn open(path: &Path) -> Result<Store, StoreError> {
        let mut conn = Connection::open(path)?;
        conn.pragma_update(None, "journal_mode", "WAL")?;
        // NORMAL in WAL mode loses nothing on a process crash; only a power cut can drop
        // the last transactions, and FULL would cost an fsync per acknowledged write.
        conn.pragma_update(None, "synchronous", "NORMAL")?;
        conn.pragma_update(None, "foreign_keys", "ON")?;
        conn.busy_timeout(std::time::Duration::from_secs(5))?;
        migrations::apply(&mut conn, path)?;
        let latest = resources::latest_version(&conn)?;
        let (calls, queue) = mpsc::channel::<Call>();
        std::thread::Builder::new()
            .name("hearth-store".into())
            .spawn(move || {
                for call in queue {
                    // A panicking call drops its answer channel (its caller gets
                    // `Worker`); the thread and the connection carry on.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(call));
                }
            })
            .map_err(|e| StoreError::Worker(format!("starting the store thread: {e}")))?;
        Ok(Store {
            conn: Arc::new(Mutex::new(conn)),
            calls,
            path: path.to_path_buf(),
            changes: Arc::new(tokio::sync::watch::channel(latest).0),
        })
    }

    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `work` with the connection on the store's thread, in the order calls came.
    ///
    /// Errors: what `work` returns; `Worker` when it panicked.
    pub async fn call<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        R: Send + 'static,
        F: FnOnce(&mut Connection) -> Result<R, StoreError> + Send + 'static,
    {
        let conn = Arc::clone(&self.conn);
        let changes = Arc::clone(&self.changes);
        let (answer, answered) = tokio::sync::oneshot::channel();
        let call: Call = Box::new(move || {
            let mut guard = lock_recovering(&conn);
            let before = guard.total_changes();
            let result = work(&mut guard);
            announce(&guard, before, &changes);
            // The caller may have gone (a request cancelled); the work is done either way.
            let _ = answer.send(result);
        });
        self.calls
            .send(call)
            .map_err(|_| StoreError::Worker("the store thread has stopped".into()))?;
        answered
            .await
            .map_err(|_| StoreError::Worker("a store call panicked".into()))?
    }

    /// The same as `call`, for start-up code and tests that are not async.
    pub fn call_blocking<R, F>(&self, work: F) -> Result<R, StoreError>
    where
        F: FnOnce(&mut Connection) -> Result<R, StoreError>,
    {
        let mut guard = lock_recovering(&self.conn);
        let before = guard.total_changes();
        let result = work(&mut guard);
        announce(&guard, before, &self.changes);
        result
    }

    /// The newest `resourceVersion`, updated after every committed change.
    pub fn changes(&self) -> tokio::sync::watch::Receiver<i64> {
        self.changes.subscribe()
    }

    pub async fn ping(&self) -> Result<(), StoreError> {
        self.call(|conn| {
            conn.query_row("SELECT 1", [], |_| Ok(()))?;
            Ok(())
        })
        .await
    }

    /// Checkpoints the WAL so the database file is complete on its own after shutdown.
    pub fn close(&self) -> Result<(), StoreError> {
        self.call_blocking(|conn| {
            conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);")?;
            Ok(())
        })
    }
}

/// `namespace/name`, or `name` alone for a kind without a namespace (a user).
fn qualified(namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        name.to_string()
    } else {
        format!("{namespace}/{name}")
    }
}

pub fn now_rfc3339() -> String {
    rfc3339(chrono::Utc::now())
}

/// The one time format Hearth stores and answers: RFC 3339, UTC, milliseconds, `Z`
/// (`2026-12-02T13:20:00.123Z`).
pub fn rfc3339(at: chrono::DateTime<chrono::Utc>) -> String {
    at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
pub(crate) fn test_store() -> (tempfile::TempDir, Store) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(&dir.path().join("hearth.db")).unwrap();
    (dir, store)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_store_call_that_panics_leaves_the_store_usable_and_its_transaction_undone() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(&dir.path().join("hearth.db")).unwrap();
        store
            .call_blocking(|conn| Ok(conn.execute_batch("CREATE TABLE t (x INTEGER)")?))
            .unwrap();
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _: Result<(), StoreError> = store.call_blocking(|conn| {
                conn.execute_batch("BEGIN; INSERT INTO t VALUES (1)")?;
                panic!("a bug in a store call");
            });
        }));
        assert!(panicked.is_err());
        let rows: i64 = store
            .call_blocking(|conn| Ok(conn.query_row("SELECT count(*) FROM t", [], |r| r.get(0))?))
            .unwrap();
        assert_eq!(rows, 0);
    }

    #[tokio::test]
    async fn an_async_store_call_that_panics_answers_worker_and_the_next_call_runs() {
        let (_dir, store) = test_store();
        let failed = store
            .call(|_conn| -> Result<(), StoreError> { panic!("a bug in a store call") })
            .await;
        assert!(matches!(failed, Err(StoreError::Worker(_))), "{failed:?}");
        let one: i64 = store
            .call(|conn| Ok(conn.query_row("SELECT 1", [], |r| r.get(0))?))
            .await
            .unwrap();
        assert_eq!(one, 1);
    }
}
