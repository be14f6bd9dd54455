//! The durable workload queue: every submitted workload is a row from `Queued` to a
//! final phase. The scheduler is the only writer.

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{now_rfc3339, StoreError};
use crate::runtime::{ExitInfo, Owner, Workload};
use crate::scheduler::{PriorityClass, WorkloadPhase, WorkloadRecord};

const COLUMNS: &str = "id, owner_uid, owner_kind, namespace, owner_name, priority, seq, phase, spec, gpu_uuids, pending_reason, exit, created_at, started_at, finished_at";

struct Raw {
    record: WorkloadRecord,
    spec: String,
    gpus: String,
    exit: Option<String>,
    priority: i64,
    phase: String,
}

fn from_row(r: &Row<'_>) -> rusqlite::Result<Raw> {
    Ok(Raw {
        record: WorkloadRecord {
            id: r.get(0)?,
            owner: Owner {
                uid: r.get(1)?,
                kind: r.get(2)?,
                namespace: r.get(3)?,
                name: r.get(4)?,
            },
            priority: PriorityClass::Batch,
            seq: r.get(6)?,
            phase: WorkloadPhase::Queued,
            workload: Workload::default(),
            pending_reason: r.get(10)?,
            gpu_uuids: Vec::new(),
            exit: None,
            created_at: r.get(12)?,
            started_at: r.get(13)?,
            finished_at: r.get(14)?,
        },
        priority: r.get(5)?,
        phase: r.get(7)?,
        spec: r.get(8)?,
        gpus: r.get(9)?,
        exit: r.get(11)?,
    })
}

fn decode(raw: Raw) -> Result<WorkloadRecord, StoreError> {
    let mut record = raw.record;
    record.priority = PriorityClass::from_rank(raw.priority);
    record.phase = WorkloadPhase::parse(&raw.phase).ok_or_else(|| {
        StoreError::Conflict(format!("workload {} has unknown phase {}", record.id, raw.phase))
    })?;
    record.workload = serde_json::from_str(&raw.spec)?;
    record.gpu_uuids = serde_json::from_str(&raw.gpus)?;
    record.exit = raw
        .exit
        .as_deref()
        .map(serde_json::from_str::<ExitInfo>)
        .transpose()?;
    Ok(record)
}

fn query(
    conn: &Connection,
    filter: &str,
    args: &[&dyn rusqlite::ToSql],
) -> Result<Vec<WorkloadRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM workloads WHERE {filter} ORDER BY priority DESC, seq");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(args, from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// Inserts a queued workload; an existing id is returned unchanged (`false`).
pub fn insert(
    conn: &Connection,
    workload: &Workload,
    priority: PriorityClass,
) -> Result<(WorkloadRecord, bool), StoreError> {
    if let Some(existing) = get(conn, &workload.id)? {
        return Ok((existing, false));
    }
    let seq: i64 = conn.query_row("SELECT COALESCE(MAX(seq), 0) + 1 FROM workloads", [], |r| {
        r.get(0)
    })?;
    conn.execute(
        "INSERT INTO workloads (id, owner_uid, owner_kind, namespace, owner_name, priority, seq, phase, spec,
                                cpu_millis, memory_bytes, gpu_count, created_at)
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'Queued', ?8, ?9, ?10, ?11, ?12)",
        params![
            workload.id,
            workload.owner.uid,
            workload.owner.kind,
            workload.owner.namespace,
            workload.owner.name,
            priority.rank(),
            seq,
            serde_json::to_string(workload)?,
            workload.resources.cpu_millis as i64,
            workload.resources.memory_bytes as i64,
            i64::from(workload.resources.gpus),
            now_rfc3339(),
        ],
    )?;
    let record = get(conn, &workload.id)?
        .ok_or_else(|| StoreError::Conflict(format!("workload {} vanished after insert", workload.id)))?;
    Ok((record, true))
}

pub fn get(conn: &Connection, id: &str) -> Result<Option<WorkloadRecord>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM workloads WHERE id = ?1");
    conn.query_row(&sql, params![id], from_row)
        .optional()?
        .map(decode)
        .transpose()
}

pub fn by_owner(conn: &Connection, owner_uid: &str) -> Result<Vec<WorkloadRecord>, StoreError> {
    query(conn, "owner_uid = ?1", &[&owner_uid])
}

/// Queued, starting and running workloads, in admission order.
/// Every workload of one namespace (or of all), whatever its phase.
pub fn in_namespace(conn: &Connection, namespace: Option<&str>) -> Result<Vec<WorkloadRecord>, StoreError> {
    match namespace {
        Some(ns) => query(conn, "namespace = ?1", &[&ns]),
        None => query(conn, "1 = 1", &[]),
    }
}

pub fn unfinished(conn: &Connection) -> Result<Vec<WorkloadRecord>, StoreError> {
    query(conn, "phase IN ('Queued', 'Starting', 'Running')", &[])
}

pub fn set_pending_reason(conn: &Connection, id: &str, reason: Option<&str>) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE workloads SET pending_reason = ?1 WHERE id = ?2 AND phase = 'Queued'",
        params![reason, id],
    )?;
    Ok(())
}

/// Claims GPUs and marks the workload as starting; fails if it is no longer queued.
pub fn mark_starting(
    conn: &Connection,
    id: &str,
    gpu_uuids: &[String],
    spec: &Workload,
) -> Result<bool, StoreError> {
    let changed = conn.execute(
        "UPDATE workloads SET phase = 'Starting', gpu_uuids = ?1, spec = ?2, pending_reason = NULL
         WHERE id = ?3 AND phase = 'Queued'",
        params![
            serde_json::to_string(gpu_uuids)?,
            serde_json::to_string(spec)?,
            id
        ],
    )?;
    Ok(changed == 1)
}

pub fn mark_running(conn: &Connection, id: &str, started_at: &str) -> Result<(), StoreError> {
    conn.execute(
        "UPDATE workloads SET phase = 'Running', started_at = COALESCE(started_at, ?1)
         WHERE id = ?2 AND phase IN ('Starting', 'Running')",
        params![started_at, id],
    )?;
    Ok(())
}

/// Records the end; GPUs are released because only starting/running rows count. The
/// scheduler calls it only once the runtime has seen the workload's processes gone.
pub fn mark_finished(
    conn: &Connection,
    id: &str,
    phase: WorkloadPhase,
    exit: &ExitInfo,
) -> Result<bool, StoreError> {
    finish_from(conn, id, "'Queued', 'Starting', 'Running'", phase, exit)
}

/// Ends a workload that is still queued (a stop before admission); `false` when it is
/// not queued any more, e.g. admitted in between: then the runtime must stop it.
pub fn stop_queued(conn: &Connection, id: &str, exit: &ExitInfo) -> Result<bool, StoreError> {
    finish_from(conn, id, "'Queued'", WorkloadPhase::Stopped, exit)
}

/// `from`: the phases (a literal SQL list) a row may end from.
fn finish_from(
    conn: &Connection,
    id: &str,
    from: &'static str,
    phase: WorkloadPhase,
    exit: &ExitInfo,
) -> Result<bool, StoreError> {
    let sql = format!(
        "UPDATE workloads SET phase = ?1, exit = ?2, finished_at = ?3, pending_reason = NULL,
                started_at = COALESCE(started_at, ?4)
         WHERE id = ?5 AND phase IN ({from})"
    );
    let changed = conn.prepare_cached(&sql)?.execute(params![
        phase.as_str(),
        serde_json::to_string(exit)?,
        exit.finished_at,
        exit.started_at,
        id,
    ])?;
    Ok(changed == 1)
}

/// Workloads, in any phase, whose owner (a Job, a pipeline run, an InferenceService) is
/// gone, with their phase as stored (`None` for a phase this version does not know).
pub fn orphans(conn: &Connection) -> Result<Vec<(String, Option<WorkloadPhase>)>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT id, phase FROM workloads w \
         WHERE NOT EXISTS (SELECT 1 FROM resources r WHERE r.uid = w.owner_uid) ORDER BY seq",
    )?;
    let rows = stmt.query_map([], |r| Ok((r.get::<_, String>(0)?, r.get::<_, String>(1)?)))?;
    let mut out = Vec::new();
    for row in rows {
        let (id, phase) = row?;
        out.push((id, WorkloadPhase::parse(&phase)));
    }
    Ok(out)
}

/// Removes an ended workload's row; `false` when there was none or it has not ended.
pub fn delete_ended(conn: &Connection, id: &str) -> Result<bool, StoreError> {
    let deleted = conn.execute(
        "DELETE FROM workloads WHERE id = ?1 AND phase IN ('Succeeded', 'Failed', 'Stopped')",
        params![id],
    )?;
    Ok(deleted == 1)
}

pub fn all_ids(conn: &Connection) -> Result<std::collections::HashSet<String>, StoreError> {
    let mut stmt = conn.prepare_cached("SELECT id FROM workloads")?;
    let ids = stmt.query_map([], |r| r.get(0))?;
    Ok(ids.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;

    fn workload(id: &str, ns: &str) -> Workload {
        Workload {
            id: id.into(),
            owner: Owner {
                kind: "Job".into(),
                namespace: ns.into(),
                name: id.into(),
                uid: format!("uid-{id}"),
            },
            command: vec!["true".into()],
            ..Default::default()
        }
    }

    #[test]
    fn the_queue_is_ordered_by_class_then_first_come() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                insert(conn, &workload("batch-1", "a"), PriorityClass::Batch)?;
                insert(conn, &workload("serving-1", "a"), PriorityClass::Serving)?;
                insert(conn, &workload("notebook-1", "a"), PriorityClass::Notebook)?;
                insert(conn, &workload("batch-2", "a"), PriorityClass::Batch)?;
                insert(conn, &workload("serving-2", "a"), PriorityClass::Serving)?;
                let (again, created) = insert(conn, &workload("batch-1", "a"), PriorityClass::Serving)?;
                assert!(!created, "an existing id is never queued twice");
                assert_eq!(again.priority, PriorityClass::Batch);
                let order: Vec<String> = unfinished(conn)?.into_iter().map(|r| r.id).collect();
                assert_eq!(
                    order,
                    ["serving-1", "serving-2", "notebook-1", "batch-1", "batch-2"]
                );
                assert!(mark_starting(
                    conn,
                    "batch-1",
                    &["GPU-x".into()],
                    &workload("batch-1", "a")
                )?);
                assert!(
                    !mark_starting(conn, "batch-1", &[], &workload("batch-1", "a"))?,
                    "claimed once"
                );
                let exit = ExitInfo {
                    exit_code: Some(0),
                    signal: None,
                    reason: "Completed".into(),
                    message: String::new(),
                    started_at: None,
                    finished_at: now_rfc3339(),
                };
                assert!(mark_finished(conn, "batch-1", WorkloadPhase::Succeeded, &exit)?);
                assert!(
                    !mark_finished(conn, "batch-1", WorkloadPhase::Failed, &exit)?,
                    "final is final"
                );
                let record = get(conn, "batch-1")?.unwrap();
                assert_eq!(record.phase, WorkloadPhase::Succeeded);
                assert_eq!(record.gpu_uuids, ["GPU-x"]);
                Ok(())
            })
            .unwrap();
    }
}
