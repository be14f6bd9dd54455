//! Versioned schema migrations, compiled into the binary. `PRAGMA user_version` holds
//! the version applied; a database from a newer build is refused rather than guessed at.

use std::path::Path;

use rusqlite::Connection;

use super::StoreError;

/// Append only: a released migration is never edited.
const MIGRATIONS: &[&str] = &[
    // 1: access control and the generic resource table.
    r#"
    CREATE TABLE users (
        name        TEXT PRIMARY KEY,
        admin       INTEGER NOT NULL DEFAULT 0,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE namespaces (
        name        TEXT PRIMARY KEY,
        owner       TEXT REFERENCES users(name) ON DELETE SET NULL,
        created_at  TEXT NOT NULL
    );
    CREATE TABLE tokens (
        id          TEXT PRIMARY KEY,
        user_name   TEXT NOT NULL REFERENCES users(name) ON DELETE CASCADE,
        name        TEXT NOT NULL,
        hash        BLOB NOT NULL UNIQUE,
        created_at  TEXT NOT NULL,
        expires_at  TEXT,
        UNIQUE (user_name, name)
    );
    CREATE TABLE resources (
        uid               TEXT PRIMARY KEY,
        kind              TEXT NOT NULL,
        namespace         TEXT NOT NULL,
        name              TEXT NOT NULL,
        generation        INTEGER NOT NULL,
        resource_version  INTEGER NOT NULL,
        metadata          TEXT NOT NULL,
        spec              TEXT NOT NULL,
        status            TEXT NOT NULL,
        created_at        TEXT NOT NULL,
        updated_at        TEXT NOT NULL,
        deletion_requested_at TEXT,
        UNIQUE (kind, namespace, name)
    );
    CREATE INDEX resources_by_kind ON resources(kind, namespace);
    CREATE TABLE events (
        id               INTEGER PRIMARY KEY AUTOINCREMENT,
        resource_uid     TEXT NOT NULL REFERENCES resources(uid) ON DELETE CASCADE,
        type             TEXT NOT NULL,
        reason           TEXT NOT NULL,
        message          TEXT NOT NULL,
        count            INTEGER NOT NULL,
        first_timestamp  TEXT NOT NULL,
        last_timestamp   TEXT NOT NULL
    );
    CREATE INDEX events_by_resource ON events(resource_uid);
    "#,
    // 2: the workload queue and ledger. One row per workload (job attempt, pipeline
    // step, replica, notebook); GPU allocations live on the row, so they are exactly
    // the rows that are starting or running.
    r#"
    CREATE TABLE workloads (
        id            TEXT PRIMARY KEY,
        owner_uid     TEXT NOT NULL,
        owner_kind    TEXT NOT NULL,
        namespace     TEXT NOT NULL,
        owner_name    TEXT NOT NULL,
        priority      INTEGER NOT NULL,
        seq           INTEGER NOT NULL,
        phase         TEXT NOT NULL,
        spec          TEXT NOT NULL,
        cpu_millis    INTEGER NOT NULL,
        memory_bytes  INTEGER NOT NULL,
        gpu_count     INTEGER NOT NULL,
        gpu_uuids     TEXT NOT NULL DEFAULT '[]',
        pending_reason TEXT,
        exit          TEXT,
        created_at    TEXT NOT NULL,
        started_at    TEXT,
        finished_at   TEXT
    );
    CREATE INDEX workloads_by_owner ON workloads(owner_uid);
    CREATE INDEX workloads_by_phase ON workloads(phase);
    "#,
    // 3: paged listing (`limit`/`continue`) reads one page, not every item of a kind.
    r#"
    CREATE INDEX resources_by_created ON resources(kind, namespace, created_at);
    "#,
    // 4: each insert takes the next queue position from MAX(seq); without an index that
    // read every workload row ever kept, so submitting slowed as finished work piled up.
    r#"
    CREATE INDEX workloads_by_seq ON workloads(seq);
    "#,
    // 5: one store-wide resourceVersion. Every write to `resources` appends a change in
    // the same transaction; its `rv` becomes the row's `resource_version`, and a watch
    // resumes by reading `rv > ?`. `object` is the resource as of that change, so a
    // DELETED event still carries the last state. The counter starts above every
    // per-row version written before this migration.
    r#"
    CREATE TABLE resource_changes (
        rv         INTEGER PRIMARY KEY AUTOINCREMENT,
        uid        TEXT NOT NULL,
        kind       TEXT NOT NULL,
        namespace  TEXT NOT NULL,
        name       TEXT NOT NULL,
        op         TEXT NOT NULL,
        object     TEXT NOT NULL
    );
    CREATE INDEX resource_changes_by_kind ON resource_changes(kind, rv);
    INSERT INTO sqlite_sequence (name, seq)
        SELECT 'resource_changes', COALESCE(MAX(resource_version), 0) FROM resources;
    "#,
    // 6: the garbage collector's candidates (objects with owner references or
    // finalizers), so its pass after each change reads those rows, not every object.
    // The condition is `resources::with_owners_or_finalizers`'s, word for word.
    r#"
    CREATE INDEX resources_owned ON resources(kind)
        WHERE instr(metadata, '"ownerReferences"') > 0 OR instr(metadata, '"finalizers"') > 0;
    "#,
    // 7: Katib's observation log: every metric value a trial reported, with its
    // timestamp, in the order reported (`seq`). Its own table, not the Trial's status,
    // which would grow with every value; keyed by the Trial's uid, so a later Trial of
    // the same name starts empty, and gone with its Trial (the trigger).
    r#"
    CREATE TABLE observation_logs (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        trial_uid   TEXT NOT NULL,
        time_stamp  TEXT NOT NULL,
        name        TEXT NOT NULL,
        value       TEXT NOT NULL
    );
    CREATE INDEX observation_logs_by_trial ON observation_logs(trial_uid, seq);
    CREATE TRIGGER observation_logs_follow_trials AFTER DELETE ON resources
        WHEN OLD.kind = 'Trial'
        BEGIN DELETE FROM observation_logs WHERE trial_uid = OLD.uid; END;
    "#,
];

pub fn supported_version() -> i64 {
    MIGRATIONS.len() as i64
}

pub fn apply(conn: &mut Connection, path: &Path) -> Result<(), StoreError> {
    let current: i64 = conn.pragma_query_value(None, "user_version", |row| row.get(0))?;
    let supported = supported_version();
    if current > supported {
        return Err(StoreError::TooNew {
            path: path.to_path_buf(),
            found: current,
            supported,
        });
    }
    for (index, sql) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        let version = index as i64 + 1;
        let tx = conn.transaction()?;
        tx.execute_batch(sql)?;
        tx.pragma_update(None, "user_version", version)?;
        tx.commit()?;
        tracing::info!(version, "applied database migration");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::Store;

    #[test]
    fn newer_database_is_refused_with_a_clear_message() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        drop(Store::open(&path).unwrap());
        let conn = Connection::open(&path).unwrap();
        conn.pragma_update(None, "user_version", supported_version() + 7)
            .unwrap();
        drop(conn);
        let err = Store::open(&path).err().unwrap().to_string();
        assert!(err.contains("newer Hearth"), "{err}");
    }

    #[test]
    fn reopening_applies_nothing_twice() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("hearth.db");
        drop(Store::open(&path).unwrap());
        let store = Store::open(&path).unwrap();
        let version: i64 = store
            .call_blocking(|c| Ok(c.pragma_query_value(None, "user_version", |r| r.get(0))?))
            .unwrap();
        assert_eq!(version, supported_version());
    }
}
