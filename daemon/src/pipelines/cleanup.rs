//! What a deleted run leaves behind, removed: its steps (stopped through the scheduler
//! whether or not a driver is live), its step directories, its artifacts, and the cache
//! entries that point at those artifacts. A periodic sweep finishes what a crash
//! interrupted (steps and files of runs that no longer exist) and prunes the KFP cache
//! to `CACHE_MAX_ENTRIES` entries of at most `CACHE_MAX_AGE`.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rusqlite::params;

use super::controller::{Inner, OWNER_KIND};
use super::executor;
use super::store as pstore;
use crate::scheduler::SchedulerError;
use crate::store::{resources, workloads, StoreError};

/// The most cache entries kept (all namespaces together); the oldest go first.
pub const CACHE_MAX_ENTRIES: u64 = 10_000;

/// How long a cache entry is kept after it was written: 30 days.
pub const CACHE_MAX_AGE: chrono::TimeDelta = chrono::TimeDelta::days(30);

/// How long a deleted run's steps get to end before its files go anyway.
const STOP_WAIT: Duration = Duration::from_secs(60);

/// A step directory or artifact tree younger than this is never swept: its run may
/// have been created after the sweep listed the runs.
const SWEEP_MIN_AGE: Duration = Duration::from_secs(60);

/// Where a run keeps its step directories.
pub fn run_dir(data_dir: &Path, run_id: &str) -> PathBuf {
    data_dir.join("pipelines").join("runs").join(run_id)
}

/// Where a run keeps its output artifacts.
pub fn artifact_dir(data_dir: &Path, namespace: &str, run_id: &str) -> PathBuf {
    data_dir
        .join("artifacts")
        .join(executor::sanitize(namespace))
        .join(run_id)
}

/// Stops every step of a run whose resource is gone, waits (up to `STOP_WAIT`) for its
/// steps and its driver to end, then removes its files and the cache entries that
/// point into them. Errors are logged: the periodic sweep tries again.
pub async fn deleted_run(
    inner: &Inner,
    is_driving: impl Fn() -> bool,
    uid: &str,
    namespace: &str,
    run_id: &str,
) {
    let deadline = tokio::time::Instant::now() + STOP_WAIT;
    let mut stopped: HashSet<String> = HashSet::new();
    loop {
        let active = match stop_steps(inner, uid, &mut stopped).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(run = %run_id, error = %e, "stopping the steps of a deleted run");
                return;
            }
        };
        if active == 0 && !is_driving() {
            break;
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!(run = %run_id, active, "steps of a deleted run still running; the sweep retries");
            return;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    if let Err(e) = remove_files(inner, namespace, run_id).await {
        tracing::warn!(run = %run_id, error = %e, "removing the files of a deleted run");
    }
}

/// Asks the scheduler to stop each step of the run not yet asked; returns how many
/// have not ended.
async fn stop_steps(
    inner: &Inner,
    uid: &str,
    stopped: &mut HashSet<String>,
) -> Result<usize, SchedulerError> {
    let steps = inner.scheduler.list_by_owner(uid).await?;
    let mut active = 0;
    for step in steps.iter().filter(|w| !w.phase.is_final()) {
        active += 1;
        if stopped.insert(step.id.clone()) {
            match inner.scheduler.stop(&step.id).await {
                Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                Err(e) => tracing::warn!(workload = %step.id, error = %e, "stopping a step of a deleted run"),
            }
        }
    }
    Ok(active)
}

async fn remove_files(inner: &Inner, namespace: &str, run_id: &str) -> Result<(), String> {
    let artifacts = artifact_dir(&inner.data_dir, namespace, run_id);
    // Outputs the cache would hand to later runs would name removed files.
    let (ns, prefix) = (namespace.to_string(), format!("{}/", artifacts.display()));
    inner
        .store
        .call(move |conn| drop_cache_into(conn, &ns, &prefix))
        .await
        .map_err(|e| e.to_string())?;
    let dirs = [run_dir(&inner.data_dir, run_id), artifacts];
    tokio::task::spawn_blocking(move || {
        for dir in dirs {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(format!("{}: {e}", dir.display())),
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// Deletes the namespace's cache entries whose outputs name a file under `prefix`.
fn drop_cache_into(conn: &rusqlite::Connection, namespace: &str, prefix: &str) -> Result<usize, StoreError> {
    // The outputs are JSON; serde_json writes a path's `/` unescaped.
    let escaped = serde_json::to_string(prefix).map_err(StoreError::Json)?;
    let needle = escaped.trim_matches('"').to_string();
    Ok(conn.execute(
        "DELETE FROM resources WHERE kind = ?1 AND namespace = ?2 AND instr(spec, ?3) > 0",
        params![pstore::CACHE, namespace, needle],
    )?)
}

/// Keeps the cache within `CACHE_MAX_ENTRIES` and `CACHE_MAX_AGE`; returns how many
/// entries went.
pub fn prune_cache(
    conn: &rusqlite::Connection,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<usize, StoreError> {
    let cutoff = now
        .checked_sub_signed(CACHE_MAX_AGE)
        .unwrap_or(now)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let keep = i64::try_from(CACHE_MAX_ENTRIES).unwrap_or(i64::MAX);
    // created_at is RFC 3339 in UTC with a fixed width, so text order is time order.
    Ok(conn.execute(
        "DELETE FROM resources WHERE kind = ?1 AND (created_at < ?2 OR uid IN \
         (SELECT uid FROM resources WHERE kind = ?1 ORDER BY created_at DESC LIMIT -1 OFFSET ?3))",
        params![pstore::CACHE, cutoff, keep],
    )?)
}

/// One sweep: stops steps of runs that no longer exist (deleted while the daemon was
/// down, or a crash between the delete and the stop), removes files of such runs once
/// nothing of theirs runs, and prunes the cache.
pub async fn sweep(inner: &Arc<Inner>) -> Result<(), String> {
    let store = &inner.store;
    let runs = store
        .call(|conn| resources::list(conn, pstore::RUN, None))
        .await
        .map_err(|e| e.to_string())?;
    let live_uids: HashSet<String> = runs.iter().map(|r| r.uid.clone()).collect();
    let live_ids: HashSet<String> = runs.iter().map(|r| r.name.clone()).collect();
    let unfinished = store
        .call(|conn| workloads::unfinished(conn))
        .await
        .map_err(|e| e.to_string())?;
    let mut busy: HashSet<String> = HashSet::new();
    for w in unfinished.iter().filter(|w| w.owner.kind == OWNER_KIND) {
        if live_uids.contains(&w.owner.uid) || !busy.insert(w.owner.name.clone()) {
            continue;
        }
        tracing::info!(run = %w.owner.name, "stopping the steps of a deleted run");
        // Its steps are stopped and its files removed once they end, as a delete does.
        let (inner, owner) = (inner.clone(), w.owner.clone());
        tokio::spawn(async move {
            deleted_run(&inner, || false, &owner.uid, &owner.namespace, &owner.name).await;
        });
    }
    let data_dir = inner.data_dir.clone();
    let removed = tokio::task::spawn_blocking(move || remove_orphan_dirs(&data_dir, &live_ids, &busy))
        .await
        .map_err(|e| e.to_string())?;
    if removed > 0 {
        tracing::info!(count = removed, "removed files of deleted pipeline runs");
    }
    let pruned = store
        .call(|conn| prune_cache(conn, chrono::Utc::now()))
        .await
        .map_err(|e| e.to_string())?;
    if pruned > 0 {
        tracing::info!(count = pruned, "pruned the KFP cache");
    }
    Ok(())
}

fn old_enough(path: &Path) -> bool {
    path.metadata()
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age >= SWEEP_MIN_AGE)
}

/// Removes `pipelines/runs/<id>` and `artifacts/<ns>/<id>` of runs that do not exist
/// and have no step still running.
fn remove_orphan_dirs(data_dir: &Path, live: &HashSet<String>, busy: &HashSet<String>) -> usize {
    let orphan = |path: &Path| {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        // Only what a run could have made: run ids are UUIDs.
        uuid::Uuid::parse_str(&name).is_ok()
            && !live.contains(&name)
            && !busy.contains(&name)
            && old_enough(path)
    };
    let mut candidates: Vec<PathBuf> = Vec::new();
    let entries = |dir: PathBuf| -> Vec<PathBuf> {
        std::fs::read_dir(dir)
            .map(|rd| rd.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default()
    };
    candidates.extend(entries(data_dir.join("pipelines").join("runs")));
    for ns in entries(data_dir.join("artifacts")) {
        candidates.extend(entries(ns));
    }
    let mut removed = 0;
    for path in candidates.into_iter().filter(|p| p.is_dir() && orphan(p)) {
        match std::fs::remove_dir_all(&path) {
            Ok(()) => removed += 1,
            Err(e) => tracing::warn!(path = %path.display(), error = %e, "removing files of a deleted run"),
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::resources::NewResource;
    use crate::store::test_store;

    #[tokio::test]
    async fn the_cache_keeps_its_bounds_and_drops_entries_into_removed_artifacts() {
        let (_dir, store) = test_store();
        store
            .call(|conn| {
                for (i, uri) in ["/d/artifacts/ns/run-a/t/out", "/d/artifacts/ns/run-b/t/out"]
                    .iter()
                    .enumerate()
                {
                    resources::create(
                        conn,
                        NewResource {
                            kind: pstore::CACHE.into(),
                            namespace: "ns".into(),
                            name: format!("key-{i}"),
                            metadata: serde_json::json!({}),
                            spec: serde_json::json!({"outputs": {"artifacts": {"out": [{"uri": uri}]}}}),
                            status: serde_json::json!({}),
                        },
                    )?;
                }
                Ok(())
            })
            .await
            .unwrap();
        let dropped = store
            .call(|conn| drop_cache_into(conn, "ns", "/d/artifacts/ns/run-a/"))
            .await
            .unwrap();
        assert_eq!(dropped, 1);
        // Nothing is old yet; a clock two months on prunes what is left.
        assert_eq!(
            store
                .call(|conn| prune_cache(conn, chrono::Utc::now()))
                .await
                .unwrap(),
            0
        );
        let later = chrono::Utc::now() + chrono::TimeDelta::days(60);
        assert_eq!(store.call(move |conn| prune_cache(conn, later)).await.unwrap(), 1);
    }
}
