//! Rows of Katib's observation log (`observation_logs`, migration 7): one per metric
//! value a trial reported, `{time_stamp, name, value}` as Katib's DB manager keeps
//! them (`MetricLog`), in the order reported.

use rusqlite::{params, Connection};

use super::StoreError;

/// One reported value: Katib's `MetricLog` (`timeStamp` RFC 3339, the metric's name,
/// its value as the string reported).
#[derive(Debug, Clone, PartialEq)]
pub struct MetricLog {
    pub time_stamp: String,
    pub name: String,
    pub value: String,
}

/// How many values the trial's log holds.
pub fn count(conn: &Connection, trial_uid: &str) -> Result<u64, StoreError> {
    let n: i64 = conn.query_row(
        "SELECT COUNT(*) FROM observation_logs WHERE trial_uid = ?1",
        params![trial_uid],
        |row| row.get(0),
    )?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// Appends `logs` in one transaction, at most up to `bound` rows for the trial in
/// all; answers how many were written (fewer than given once the bound is reached).
pub fn append(
    conn: &mut Connection,
    trial_uid: &str,
    logs: &[MetricLog],
    bound: u64,
) -> Result<usize, StoreError> {
    let tx = conn.transaction()?;
    let held = count(&tx, trial_uid)?;
    let room = usize::try_from(bound.saturating_sub(held)).unwrap_or(usize::MAX);
    let mut written = 0;
    {
        let mut insert = tx.prepare_cached(
            "INSERT INTO observation_logs (trial_uid, time_stamp, name, value) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for log in logs.iter().take(room) {
            insert.execute(params![trial_uid, log.time_stamp, log.name, log.value])?;
            written += 1;
        }
    }
    tx.commit()?;
    Ok(written)
}

/// The trial's log in the order reported, only `metric` when given.
pub fn read(conn: &Connection, trial_uid: &str, metric: Option<&str>) -> Result<Vec<MetricLog>, StoreError> {
    let mut statement = conn.prepare_cached(
        "SELECT time_stamp, name, value FROM observation_logs
         WHERE trial_uid = ?1 AND (?2 IS NULL OR name = ?2) ORDER BY seq",
    )?;
    let rows = statement.query_map(params![trial_uid, metric], |row| {
        Ok(MetricLog {
            time_stamp: row.get(0)?,
            name: row.get(1)?,
            value: row.get(2)?,
        })
    })?;
    Ok(rows.collect::<Result<Vec<_>, _>>()?)
}
