//! The generic resource table: every managed thing (job, run, experiment, inference
//! service, notebook) is a row with the user's `spec` as written and Hearth's `status`.
//! `generation` counts spec changes; `resource_version` is the store-wide change
//! counter (Kubernetes' `metadata.resourceVersion`): every write appends to
//! `resource_changes` in the same transaction and takes its `rv`, so a controller can
//! write status only over the version it read, and a watch resumes from any version
//! still in the log.

use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::Value;

use super::{now_rfc3339, StoreError};

#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Resource {
    pub uid: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: i64,
    pub resource_version: i64,
    /// Labels, annotations and whatever else the user put in `metadata`.
    pub metadata: Value,
    pub spec: Value,
    pub status: Value,
    pub created_at: String,
    pub updated_at: String,
    pub deletion_requested_at: Option<String>,
}

pub struct NewResource {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub metadata: Value,
    pub spec: Value,
    pub status: Value,
}

#[derive(Debug, Clone, PartialEq, serde::Serialize, utoipa::ToSchema)]
pub struct EventRecord {
    /// `Normal` or `Warning`, as in Kubernetes.
    #[serde(rename = "type")]
    pub event_type: String,
    pub reason: String,
    pub message: String,
    pub count: i64,
    #[serde(rename = "firstTimestamp")]
    pub first_timestamp: String,
    #[serde(rename = "lastTimestamp")]
    pub last_timestamp: String,
}

const COLUMNS: &str = "uid, kind, namespace, name, generation, resource_version, metadata, spec, status, created_at, updated_at, deletion_requested_at";

fn from_row(row: &Row<'_>) -> rusqlite::Result<(Resource, [String; 3])> {
    Ok((
        Resource {
            uid: row.get(0)?,
            kind: row.get(1)?,
            namespace: row.get(2)?,
            name: row.get(3)?,
            generation: row.get(4)?,
            resource_version: row.get(5)?,
            metadata: Value::Null,
            spec: Value::Null,
            status: Value::Null,
            created_at: row.get(9)?,
            updated_at: row.get(10)?,
            deletion_requested_at: row.get(11)?,
        },
        [row.get(6)?, row.get(7)?, row.get(8)?],
    ))
}

fn decode((mut resource, [metadata, spec, status]): (Resource, [String; 3])) -> Result<Resource, StoreError> {
    resource.metadata = serde_json::from_str(&metadata)?;
    resource.spec = serde_json::from_str(&spec)?;
    resource.status = serde_json::from_str(&status)?;
    Ok(resource)
}

fn not_found(kind: &str, namespace: &str, name: &str) -> StoreError {
    StoreError::NotFound {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    }
}

pub fn create(conn: &Connection, new: NewResource) -> Result<Resource, StoreError> {
    atomically(conn, |conn| create_now(conn, new))
}

fn create_now(conn: &Connection, new: NewResource) -> Result<Resource, StoreError> {
    let uid = uuid::Uuid::new_v4().to_string();
    let now = now_rfc3339();
    let inserted = conn.execute(
        "INSERT INTO resources (uid, kind, namespace, name, generation, resource_version, metadata, spec, status, created_at, updated_at)
         VALUES (?1, ?2, ?3, ?4, 1, 1, ?5, ?6, ?7, ?8, ?8)
         ON CONFLICT (kind, namespace, name) DO NOTHING",
        params![
            uid,
            new.kind,
            new.namespace,
            new.name,
            new.metadata.to_string(),
            new.spec.to_string(),
            new.status.to_string(),
            now
        ],
    )?;
    if inserted == 0 {
        return Err(StoreError::AlreadyExists {
            kind: new.kind,
            namespace: new.namespace,
            name: new.name,
        });
    }
    record_change(conn, &uid, ChangeOp::Added)?;
    get(conn, &new.kind, &new.namespace, &new.name)
}

/// What `create` would store, for a dry run: a fresh uid, generation 1, no version.
pub fn unsaved(new: NewResource) -> Resource {
    let now = now_rfc3339();
    Resource {
        uid: uuid::Uuid::new_v4().to_string(),
        kind: new.kind,
        namespace: new.namespace,
        name: new.name,
        generation: 1,
        resource_version: 0,
        metadata: new.metadata,
        spec: new.spec,
        status: new.status,
        created_at: now.clone(),
        updated_at: now,
        deletion_requested_at: None,
    }
}

pub fn get(conn: &Connection, kind: &str, namespace: &str, name: &str) -> Result<Resource, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND namespace = ?2 AND name = ?3");
    let row = conn
        .query_row(&sql, params![kind, namespace, name], from_row)
        .optional()?;
    match row {
        Some(raw) => decode(raw),
        None => Err(not_found(kind, namespace, name)),
    }
}

pub fn get_by_uid(conn: &Connection, uid: &str) -> Result<Option<Resource>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE uid = ?1");
    conn.query_row(&sql, params![uid], from_row)
        .optional()?
        .map(decode)
        .transpose()
}

/// Lists one kind, in one namespace or (with `None`) all, oldest first.
pub fn list(conn: &Connection, kind: &str, namespace: Option<&str>) -> Result<Vec<Resource>, StoreError> {
    let sql = format!(
        "SELECT {COLUMNS} FROM resources WHERE kind = ?1 AND (?2 IS NULL OR namespace = ?2) ORDER BY created_at, rowid"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![kind, namespace], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        out.push(decode(row?)?);
    }
    Ok(out)
}

/// The uids of one kind's resources for which `keep` holds, oldest first. Rows are
/// decoded one at a time and dropped, so a controller's periodic resync costs memory
/// for the uids it keeps, not for every stored resource (finished Jobs pile up).
pub fn uids_where(
    conn: &Connection,
    kind: &str,
    keep: impl Fn(&Resource) -> bool,
) -> Result<Vec<String>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE kind = ?1 ORDER BY created_at, rowid");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![kind], from_row)?;
    let mut out = Vec::new();
    for row in rows {
        let resource = decode(row?)?;
        if keep(&resource) {
            out.push(resource.uid);
        }
    }
    Ok(out)
}

/// Where a page of `scan` ended; as a string, Kubernetes' opaque
/// `metadata.continue` token (URL-safe base64 of the last item's creation time and row).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    created_at: String,
    rowid: i64,
}

impl Cursor {
    /// A cursor over a computed view (pods, nodes, ...), whose items are ordered by a
    /// key of their own rather than by row.
    pub fn after_key(key: &str) -> Cursor {
        Cursor {
            created_at: key.to_string(),
            rowid: 0,
        }
    }

    /// The key of [`Cursor::after_key`].
    pub fn key(&self) -> &str {
        &self.created_at
    }

    pub fn encode(&self) -> String {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{}|{}", self.created_at, self.rowid))
    }

    /// `None` for a token this daemon did not make.
    pub fn decode(token: &str) -> Option<Cursor> {
        use base64::Engine;
        let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(token)
            .ok()?;
        let text = String::from_utf8(raw).ok()?;
        let (created_at, rowid) = text.rsplit_once('|')?;
        Some(Cursor {
            created_at: created_at.to_string(),
            rowid: rowid.parse().ok()?,
        })
    }
}

/// Up to `limit` items of one kind (in one namespace, or all; with `name`, that one),
/// each what `keep` makes of a row (`None`: skipped), oldest first, after `after`; and
/// the cursor to ask for the next page with when a further item is kept. Rows are
/// read, handed over by value and dropped one at a time along the
/// `resources_by_created` index, so a filtered page costs the rows it passes, not the
/// whole kind, and a row is decoded once.
pub fn scan<T>(
    conn: &Connection,
    kind: &str,
    namespace: Option<&str>,
    name: Option<&str>,
    limit: usize,
    after: Option<&Cursor>,
    mut keep: impl FnMut(Resource) -> Option<T>,
) -> Result<(Vec<T>, Option<Cursor>), StoreError> {
    let filter = if namespace.is_some() {
        "kind = ?1 AND namespace = ?2"
    } else {
        "kind = ?1 AND ?2 IS NULL"
    };
    let sql = format!(
        "SELECT {COLUMNS}, rowid FROM resources WHERE {filter}
           AND (?3 IS NULL OR (created_at, rowid) > (?3, ?4))
           AND (?5 IS NULL OR name = ?5)
         ORDER BY created_at, rowid"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(
        params![
            kind,
            namespace,
            after.map(|c| c.created_at.as_str()),
            after.map_or(0, |c| c.rowid),
            name
        ],
        |row| Ok((from_row(row)?, row.get::<_, i64>(12)?)),
    )?;
    let mut out = Vec::new();
    let mut last = None;
    for row in rows {
        let (raw, rowid) = row?;
        let resource = decode(raw)?;
        let created_at = resource.created_at.clone();
        let Some(item) = keep(resource) else {
            continue;
        };
        if out.len() == limit {
            let next = last.map(|(created_at, rowid)| Cursor { created_at, rowid });
            return Ok((out, next));
        }
        last = Some((created_at, rowid));
        out.push(item);
    }
    Ok((out, None))
}

/// Replaces the spec (and user metadata); bumps `generation` only when the spec changed.
pub fn replace_spec(
    conn: &Connection,
    kind: &str,
    namespace: &str,
    name: &str,
    metadata: &Value,
    spec: &Value,
) -> Result<Resource, StoreError> {
    replace_spec_checked(conn, kind, namespace, name, metadata, spec, None)
}

/// [`replace_spec`] under Kubernetes' precondition: with `expected_version` (the
/// `metadata.resourceVersion` the caller read), a resource written since is a
/// `Conflict` and nothing changes.
pub fn replace_spec_checked(
    conn: &Connection,
    kind: &str,
    namespace: &str,
    name: &str,
    metadata: &Value,
    spec: &Value,
    expected_version: Option<i64>,
) -> Result<Resource, StoreError> {
    atomically(conn, |conn| {
        let current = get(conn, kind, namespace, name)?;
        if let Some(expected) = expected_version {
            if expected != current.resource_version {
                return Err(stale());
            }
        }
        let bump = i64::from(current.spec != *spec);
        // Finalizers are the server's (deletion under way): a replace keeps them.
        let mut metadata = metadata.clone();
        if let (Some(kept), Some(map)) = (current.metadata.get("finalizers"), metadata.as_object_mut()) {
            map.insert("finalizers".into(), kept.clone());
        }
        conn.execute(
            "UPDATE resources SET metadata = ?1, spec = ?2, generation = generation + ?3, updated_at = ?4
             WHERE uid = ?5",
            params![
                metadata.to_string(),
                spec.to_string(),
                bump,
                now_rfc3339(),
                current.uid
            ],
        )?;
        record_change(conn, &current.uid, ChangeOp::Modified)?;
        get(conn, kind, namespace, name)
    })
}

/// A PUT's write, one step for every kind: stores `metadata` and `spec` over `current`
/// under the precondition (see [`replace_spec_checked`]), or with `dry_run` (Kubernetes'
/// `dryRun=All`) answers the object as that write would leave it and stores nothing.
/// Errors: `NotFound` when the object went meanwhile, `Conflict` on a stale
/// `expected_version`.
pub async fn replace_spec_staged(
    store: &super::Store,
    current: Resource,
    metadata: Value,
    spec: Value,
    expected_version: Option<i64>,
    dry_run: bool,
) -> Result<Resource, StoreError> {
    if dry_run {
        if expected_version.is_some_and(|expected| expected != current.resource_version) {
            return Err(stale());
        }
        let mut would_be = current;
        would_be.generation += i64::from(would_be.spec != spec);
        let kept = would_be.metadata.get("finalizers").cloned();
        would_be.metadata = metadata;
        if let (Some(kept), Some(map)) = (kept, would_be.metadata.as_object_mut()) {
            map.insert("finalizers".into(), kept);
        }
        would_be.spec = spec;
        return Ok(would_be);
    }
    store
        .call(move |conn| {
            replace_spec_checked(
                conn,
                &current.kind,
                &current.namespace,
                &current.name,
                &metadata,
                &spec,
                expected_version,
            )
        })
        .await
}

/// The message Kubernetes gives a write over a stale `resourceVersion` (after
/// "Operation cannot be fulfilled on <kind> <name>: ").
fn stale() -> StoreError {
    StoreError::Conflict(
        "the object has been modified; please apply your changes to the latest version and try again".into(),
    )
}

/// Writes status. With `expected_version`, refuses to overwrite a newer write.
pub fn update_status(
    conn: &Connection,
    uid: &str,
    status: &Value,
    expected_version: Option<i64>,
) -> Result<i64, StoreError> {
    atomically(conn, |conn| {
        let changed = conn.execute(
            "UPDATE resources SET status = ?1, updated_at = ?2
             WHERE uid = ?3 AND (?4 IS NULL OR resource_version = ?4)",
            params![status.to_string(), now_rfc3339(), uid, expected_version],
        )?;
        if changed == 0 {
            return Err(StoreError::Conflict(format!(
                "resource {uid} changed since it was read, or is gone"
            )));
        }
        record_change(conn, uid, ChangeOp::Modified)
    })
}

/// Marks a resource for deletion; its controller cleans up and then calls `delete`.
pub fn request_deletion(
    conn: &Connection,
    kind: &str,
    namespace: &str,
    name: &str,
) -> Result<Resource, StoreError> {
    atomically(conn, |conn| {
        let current = get(conn, kind, namespace, name)?;
        if current.deletion_requested_at.is_some() {
            return Ok(current);
        }
        conn.execute(
            "UPDATE resources SET deletion_requested_at = ?1 WHERE uid = ?2",
            params![now_rfc3339(), current.uid],
        )?;
        record_change(conn, &current.uid, ChangeOp::Modified)?;
        get(conn, kind, namespace, name)
    })
}

/// Removes a resource once its controller has cleaned up. A resource marked for
/// deletion that still has `metadata.finalizers` (Kubernetes' `foregroundDeletion`,
/// `orphan`) stays until they are removed, as the API server keeps such an object:
/// the garbage collector removes them and wakes the controller, which calls this again.
pub fn delete(conn: &Connection, uid: &str) -> Result<(), StoreError> {
    atomically(conn, |conn| {
        let Some(current) = get_by_uid(conn, uid)? else {
            return Ok(());
        };
        if current.deletion_requested_at.is_some() && !finalizers(&current.metadata).is_empty() {
            return Ok(());
        }
        record_change(conn, uid, ChangeOp::Deleted)?;
        conn.execute("DELETE FROM resources WHERE uid = ?1", params![uid])?;
        Ok(())
    })
}

/// `metadata.finalizers` of stored metadata (none when absent or malformed).
pub fn finalizers(metadata: &Value) -> Vec<&str> {
    metadata
        .get("finalizers")
        .and_then(Value::as_array)
        .map(|items| items.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// Kubernetes' `DeleteOptions.preconditions`: the deletion applies only to the object
/// with this uid and/or at this `resourceVersion`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Preconditions {
    pub uid: Option<String>,
    pub resource_version: Option<i64>,
}

/// [`request_deletion`] under `preconditions` (a mismatch is a `Conflict`, in the API
/// server's words), adding `finalizer` to `metadata.finalizers` in the same
/// transaction when the deletion starts now, so the deletion and how it propagates are
/// recorded together. A resource already being deleted is answered as it is.
pub fn request_deletion_with(
    conn: &Connection,
    kind: &str,
    namespace: &str,
    name: &str,
    preconditions: &Preconditions,
    finalizer: Option<&str>,
) -> Result<Resource, StoreError> {
    atomically(conn, |conn| {
        let current = get(conn, kind, namespace, name)?;
        check_preconditions(&current, preconditions)?;
        if current.deletion_requested_at.is_some() {
            return Ok(current);
        }
        let mut metadata = current.metadata.clone();
        if let (Some(finalizer), Some(map)) = (finalizer, metadata.as_object_mut()) {
            let list = map
                .entry("finalizers")
                .or_insert_with(|| Value::Array(Vec::new()));
            if let Some(items) = list.as_array_mut() {
                if !items.iter().any(|f| f == finalizer) {
                    items.push(Value::String(finalizer.to_string()));
                }
            }
        }
        conn.execute(
            "UPDATE resources SET deletion_requested_at = ?1, metadata = ?2 WHERE uid = ?3",
            params![now_rfc3339(), metadata.to_string(), current.uid],
        )?;
        record_change(conn, &current.uid, ChangeOp::Modified)?;
        get(conn, kind, namespace, name)
    })
}

/// The API server's precondition check of a delete (`Precondition failed: ...`).
pub fn check_preconditions(current: &Resource, preconditions: &Preconditions) -> Result<(), StoreError> {
    if let Some(uid) = &preconditions.uid {
        if *uid != current.uid {
            return Err(StoreError::Conflict(format!(
                "Precondition failed: UID in precondition: {uid}, UID in object meta: {}",
                current.uid
            )));
        }
    }
    if let Some(version) = preconditions.resource_version {
        if version != current.resource_version {
            return Err(StoreError::Conflict(format!(
                "Precondition failed: ResourceVersion in precondition: {version}, ResourceVersion in object meta: {}",
                current.resource_version
            )));
        }
    }
    Ok(())
}

/// Writes `metadata` only (owner references, finalizers: the garbage collector's
/// writes), over `expected_version`; spec, status and `generation` stay.
pub fn set_metadata(
    conn: &Connection,
    uid: &str,
    metadata: &Value,
    expected_version: i64,
) -> Result<i64, StoreError> {
    atomically(conn, |conn| {
        let changed = conn.execute(
            "UPDATE resources SET metadata = ?1, updated_at = ?2 WHERE uid = ?3 AND resource_version = ?4",
            params![metadata.to_string(), now_rfc3339(), uid, expected_version],
        )?;
        if changed == 0 {
            return Err(stale());
        }
        record_change(conn, uid, ChangeOp::Modified)
    })
}

/// The condition of [`with_owners_or_finalizers`] and of the index that serves it.
const OWNED: &str =
    "kind = ?1 AND (instr(metadata, '\"ownerReferences\"') > 0 OR instr(metadata, '\"finalizers\"') > 0)";

/// The resources of `kinds` whose `metadata` has owner references or finalizers: what
/// the garbage collector looks at, along the partial index `resources_owned` (whose
/// condition this query repeats), so the cost is theirs, not every object's.
pub fn with_owners_or_finalizers(conn: &Connection, kinds: &[&str]) -> Result<Vec<Resource>, StoreError> {
    let sql = format!("SELECT {COLUMNS} FROM resources WHERE {OWNED}");
    let mut stmt = conn.prepare_cached(&sql)?;
    let mut out = Vec::new();
    for kind in kinds {
        for row in stmt.query_map(params![kind], from_row)? {
            out.push(decode(row?)?);
        }
    }
    Ok(out)
}

/// What a write did to a resource, named as Kubernetes watch events name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeOp {
    Added,
    Modified,
    Deleted,
}

impl ChangeOp {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeOp::Added => "ADDED",
            ChangeOp::Modified => "MODIFIED",
            ChangeOp::Deleted => "DELETED",
        }
    }

    fn parse(text: &str) -> Option<ChangeOp> {
        [ChangeOp::Added, ChangeOp::Modified, ChangeOp::Deleted]
            .into_iter()
            .find(|op| op.as_str() == text)
    }
}

/// One entry of the change log: the resource as it was right after change `rv`.
#[derive(Debug, Clone)]
pub struct Change {
    pub rv: i64,
    pub op: ChangeOp,
    pub object: Resource,
}

/// The kinds whose changes keep the object (what a watch sends): those the Kubernetes
/// API serves (`crate::kube::kinds::KINDS`, which a test holds to this list). Other
/// kinds (pipeline runs and their bookkeeping, with specs of megabytes) only take a
/// version.
pub const WATCHED_KINDS: &[&str] = &[
    "Job",
    "InferenceService",
    "Experiment",
    "Trial",
    "Suggestion",
    "Notebook",
];

/// How many changes the log keeps; a watch resuming from an older version gets 410
/// `Expired` and lists again, as from a compacted etcd.
pub const CHANGE_LOG_KEEP: i64 = 50_000;

/// Runs `work` inside a savepoint, so its writes commit together or not at all,
/// whether or not the caller already opened a transaction.
fn atomically<R>(
    conn: &Connection,
    work: impl FnOnce(&Connection) -> Result<R, StoreError>,
) -> Result<R, StoreError> {
    conn.execute_batch("SAVEPOINT resource_write")?;
    match work(conn) {
        Ok(value) => {
            conn.execute_batch("RELEASE resource_write")?;
            Ok(value)
        }
        Err(e) => {
            conn.execute_batch("ROLLBACK TO resource_write; RELEASE resource_write")?;
            Err(e)
        }
    }
}

/// Appends a change for `uid` (which must exist), gives the row the change's `rv` as
/// its `resource_version`, and returns it.
fn record_change(conn: &Connection, uid: &str, op: ChangeOp) -> Result<i64, StoreError> {
    let gone = || StoreError::NotFound {
        kind: "resource".into(),
        namespace: String::new(),
        name: uid.to_string(),
    };
    let kind: String = conn
        .query_row("SELECT kind FROM resources WHERE uid = ?1", params![uid], |r| {
            r.get(0)
        })
        .optional()?
        .ok_or_else(gone)?;
    conn.execute(
        "INSERT INTO resource_changes (uid, kind, namespace, name, op, object)
         SELECT uid, kind, namespace, name, ?2, '' FROM resources WHERE uid = ?1",
        params![uid, op.as_str()],
    )?;
    let rv = conn.last_insert_rowid();
    conn.execute(
        "UPDATE resources SET resource_version = ?1 WHERE uid = ?2",
        params![rv, uid],
    )?;
    // Only a watched kind's object is read back (and its JSON decoded): a pipeline
    // run's spec is megabytes.
    if WATCHED_KINDS.contains(&kind.as_str()) {
        let object = get_by_uid(conn, uid)?.ok_or_else(gone)?;
        conn.execute(
            "UPDATE resource_changes SET object = ?1 WHERE rv = ?2",
            params![serde_json::to_string(&object)?, rv],
        )?;
    }
    if rv % 1024 == 0 {
        trim_changes(conn, CHANGE_LOG_KEEP)?;
    }
    Ok(rv)
}

/// Drops all but the newest `keep` changes (etcd's compaction, for this log).
pub fn trim_changes(conn: &Connection, keep: i64) -> Result<(), StoreError> {
    let latest = latest_version(conn)?;
    conn.execute(
        "DELETE FROM resource_changes WHERE rv <= ?1",
        params![latest.saturating_sub(keep)],
    )?;
    Ok(())
}

/// The newest `resourceVersion` in the store (a list's `metadata.resourceVersion`).
pub fn latest_version(conn: &Connection) -> Result<i64, StoreError> {
    Ok(conn
        .query_row(
            "SELECT seq FROM sqlite_sequence WHERE name = 'resource_changes'",
            [],
            |r| r.get(0),
        )
        .optional()?
        .unwrap_or(0))
}

/// The oldest version a watch may resume from: changes after it are all in the log.
pub fn oldest_resumable_version(conn: &Connection) -> Result<i64, StoreError> {
    let first: Option<i64> = conn.query_row("SELECT MIN(rv) FROM resource_changes", [], |r| r.get(0))?;
    match first {
        Some(rv) => Ok(rv - 1),
        None => latest_version(conn),
    }
}

/// At most `limit` changes of one kind (in one namespace, or all) after `since`,
/// oldest first.
pub fn changes_since(
    conn: &Connection,
    kind: &str,
    namespace: Option<&str>,
    since: i64,
    limit: usize,
) -> Result<Vec<Change>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT rv, op, object FROM resource_changes
         WHERE kind = ?1 AND rv > ?2 AND (?3 IS NULL OR namespace = ?3)
         ORDER BY rv LIMIT ?4",
    )?;
    let limit = i64::try_from(limit).unwrap_or(i64::MAX);
    let rows = stmt.query_map(params![kind, since, namespace, limit], |r| {
        Ok((
            r.get::<_, i64>(0)?,
            r.get::<_, String>(1)?,
            r.get::<_, String>(2)?,
        ))
    })?;
    let mut out = Vec::new();
    for row in rows {
        let (rv, op, object) = row?;
        let Some(op) = ChangeOp::parse(&op) else { continue };
        let mut object: Resource = serde_json::from_str(&object)?;
        object.resource_version = rv;
        out.push(Change { rv, op, object });
    }
    Ok(out)
}

/// Sets (`Some((reason, message))`) or removes (`None`) the condition `kind` in
/// `status.conditions`, Kubernetes style (`status: "True"`, `lastTransitionTime`), on
/// the resource `uid`; other conditions are kept. A resource that is gone is left so.
pub fn set_condition(
    conn: &Connection,
    uid: &str,
    kind: &str,
    set: Option<(&str, &str)>,
) -> Result<(), StoreError> {
    let Some(resource) = get_by_uid(conn, uid)? else {
        return Ok(());
    };
    let mut status = match resource.status {
        Value::Object(map) => map,
        _ => serde_json::Map::new(),
    };
    let mut conditions: Vec<Value> = status
        .get("conditions")
        .and_then(Value::as_array)
        .cloned()
        .unwrap_or_default();
    let before = conditions.len();
    conditions.retain(|c| c.get("type").and_then(Value::as_str) != Some(kind));
    if set.is_none() && conditions.len() == before {
        return Ok(());
    }
    if let Some((reason, message)) = set {
        let now = now_rfc3339();
        conditions.push(serde_json::json!({
            "type": kind,
            "status": "True",
            "reason": reason,
            "message": message,
            "lastProbeTime": now,
            "lastTransitionTime": now,
        }));
    }
    status.insert("conditions".into(), Value::Array(conditions));
    update_status(conn, uid, &Value::Object(status), Some(resource.resource_version))?;
    Ok(())
}

/// Records an event; a repeat of the latest (same type, reason and message) only bumps
/// its count, as `kubectl describe` shows.
pub fn record_event(
    conn: &Connection,
    resource_uid: &str,
    event_type: &str,
    reason: &str,
    message: &str,
) -> Result<(), StoreError> {
    let now = now_rfc3339();
    let latest: Option<(i64, String, String, String)> = conn
        .query_row(
            "SELECT id, type, reason, message FROM events WHERE resource_uid = ?1 ORDER BY id DESC LIMIT 1",
            params![resource_uid],
            |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?)),
        )
        .optional()?;
    match latest {
        Some((id, t, r, m)) if t == event_type && r == reason && m == message => {
            conn.execute(
                "UPDATE events SET count = count + 1, last_timestamp = ?1 WHERE id = ?2",
                params![now, id],
            )?;
        }
        _ => {
            conn.execute(
                "INSERT INTO events (resource_uid, type, reason, message, count, first_timestamp, last_timestamp)
                 VALUES (?1, ?2, ?3, ?4, 1, ?5, ?5)",
                params![resource_uid, event_type, reason, message, now],
            )?;
        }
    }
    Ok(())
}

/// An event with the object it is about, for the core/v1 `Event` view.
#[derive(Debug, Clone)]
pub struct ObjectEvent {
    pub id: i64,
    pub event: EventRecord,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub uid: String,
}

/// The events of every object in `namespace` (or in all), oldest first.
pub fn events_in(conn: &Connection, namespace: Option<&str>) -> Result<Vec<ObjectEvent>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT e.id, e.type, e.reason, e.message, e.count, e.first_timestamp, e.last_timestamp,
                r.kind, r.namespace, r.name, r.uid
         FROM events e JOIN resources r ON r.uid = e.resource_uid
         WHERE ?1 IS NULL OR r.namespace = ?1 ORDER BY e.id",
    )?;
    let rows = stmt.query_map(params![namespace], |r| {
        Ok(ObjectEvent {
            id: r.get(0)?,
            event: EventRecord {
                event_type: r.get(1)?,
                reason: r.get(2)?,
                message: r.get(3)?,
                count: r.get(4)?,
                first_timestamp: r.get(5)?,
                last_timestamp: r.get(6)?,
            },
            kind: r.get(7)?,
            namespace: r.get(8)?,
            name: r.get(9)?,
            uid: r.get(10)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

pub fn list_events(conn: &Connection, resource_uid: &str) -> Result<Vec<EventRecord>, StoreError> {
    let mut stmt = conn.prepare_cached(
        "SELECT type, reason, message, count, first_timestamp, last_timestamp
         FROM events WHERE resource_uid = ?1 ORDER BY id",
    )?;
    let rows = stmt.query_map(params![resource_uid], |r| {
        Ok(EventRecord {
            event_type: r.get(0)?,
            reason: r.get(1)?,
            message: r.get(2)?,
            count: r.get(3)?,
            first_timestamp: r.get(4)?,
            last_timestamp: r.get(5)?,
        })
    })?;
    Ok(rows.collect::<Result<_, _>>()?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::test_store;
    use serde_json::json;

    fn job(name: &str) -> NewResource {
        NewResource {
            kind: "Job".into(),
            namespace: "team".into(),
            name: name.into(),
            metadata: json!({"labels": {"a": "b"}}),
            spec: json!({"x": 1}),
            status: json!({}),
        }
    }

    #[test]
    fn create_get_replace_and_conflicts() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                let created = create(conn, job("one"))?;
                assert_eq!(created.generation, 1);
                assert!(matches!(
                    create(conn, job("one")),
                    Err(StoreError::AlreadyExists { .. })
                ));
                let same = replace_spec(conn, "Job", "team", "one", &json!({}), &json!({"x": 1}))?;
                assert_eq!(same.generation, 1, "unchanged spec keeps the generation");
                let changed = replace_spec(conn, "Job", "team", "one", &json!({}), &json!({"x": 2}))?;
                assert_eq!(changed.generation, 2);
                let stale = update_status(
                    conn,
                    &created.uid,
                    &json!({"s": 1}),
                    Some(created.resource_version),
                );
                assert!(matches!(stale, Err(StoreError::Conflict(_))));
                update_status(
                    conn,
                    &created.uid,
                    &json!({"s": 1}),
                    Some(changed.resource_version),
                )?;
                assert_eq!(get(conn, "Job", "team", "one")?.status, json!({"s": 1}));
                assert_eq!(list(conn, "Job", Some("team"))?.len(), 1);
                assert_eq!(list(conn, "Job", Some("other"))?.len(), 0);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn pages_cover_every_item_once_in_order() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                for i in 0..7 {
                    create(conn, job(&format!("j{i}")))?;
                }
                let mut names = Vec::new();
                let mut after = None;
                loop {
                    let (items, next) = scan(conn, "Job", Some("team"), None, 3, after.as_ref(), Some)?;
                    assert!(items.len() <= 3);
                    names.extend(items.into_iter().map(|r| r.name));
                    match next {
                        Some(c) => after = Cursor::decode(&c.encode()),
                        None => break,
                    }
                }
                let all: Vec<String> = list(conn, "Job", Some("team"))?
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                assert_eq!(names, all);
                assert_eq!(names.len(), 7);
                let (items, next) = scan(conn, "Job", None, None, 10, None, Some)?;
                assert_eq!((items.len(), next), (7, None));
                assert!(Cursor::decode("not a cursor").is_none());
                let plan: String = conn.query_row(
                    "EXPLAIN QUERY PLAN SELECT uid FROM resources WHERE kind = 'Job' AND namespace = 'team'
                       AND (created_at, rowid) > ('x', 1) ORDER BY created_at, rowid LIMIT 3",
                    [],
                    |r| r.get(3),
                )?;
                assert!(plan.contains("resources_by_created"), "{plan}");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn every_write_takes_the_next_store_wide_version_and_is_logged() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                let a = create(conn, job("a"))?;
                let b = create(conn, job("b"))?;
                assert_eq!(b.resource_version, a.resource_version + 1, "one counter for all");
                let rv = update_status(conn, &a.uid, &json!({"s": 1}), Some(a.resource_version))?;
                assert_eq!(rv, b.resource_version + 1);
                let stale = replace_spec_checked(
                    conn,
                    "Job",
                    "team",
                    "a",
                    &json!({}),
                    &json!({"x": 3}),
                    Some(a.resource_version),
                );
                assert!(matches!(stale, Err(StoreError::Conflict(_))));
                assert_eq!(
                    get(conn, "Job", "team", "a")?.spec,
                    json!({"x": 1}),
                    "a refused write changes nothing"
                );
                delete(conn, &a.uid)?;
                let changes = changes_since(conn, "Job", Some("team"), 0, 100)?;
                let ops: Vec<(&str, ChangeOp)> =
                    changes.iter().map(|c| (c.object.name.as_str(), c.op)).collect();
                assert_eq!(
                    ops,
                    [
                        ("a", ChangeOp::Added),
                        ("b", ChangeOp::Added),
                        ("a", ChangeOp::Modified),
                        ("a", ChangeOp::Deleted)
                    ]
                );
                assert_eq!(
                    changes[2].object.status,
                    json!({"s": 1}),
                    "each change holds the object as it was"
                );
                assert_eq!(latest_version(conn)?, changes[3].rv);
                assert_eq!(oldest_resumable_version(conn)?, 0);
                trim_changes(conn, 1)?;
                assert_eq!(
                    oldest_resumable_version(conn)?,
                    changes[3].rv - 1,
                    "a trimmed log resumes only from its start"
                );
                assert_eq!(changes_since(conn, "Job", None, 0, 100)?.len(), 1);
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn the_collectors_candidates_are_read_along_their_own_index() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                create(conn, job("plain"))?;
                let mut owned = job("owned");
                owned.metadata = json!({"ownerReferences": [{"uid": "u"}]});
                create(conn, owned)?;
                let names: Vec<String> = with_owners_or_finalizers(conn, &["Job"])?
                    .into_iter()
                    .map(|r| r.name)
                    .collect();
                assert_eq!(names, ["owned"]);
                let plan: String = conn.query_row(
                    &format!("EXPLAIN QUERY PLAN SELECT uid FROM resources WHERE {OWNED}"),
                    ["Job"],
                    |r| r.get(3),
                )?;
                assert!(plan.contains("resources_owned"), "{plan}");
                Ok(())
            })
            .unwrap();
    }

    #[test]
    fn repeated_events_are_counted() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                let r = create(conn, job("ev"))?;
                record_event(conn, &r.uid, "Normal", "Started", "started")?;
                record_event(conn, &r.uid, "Normal", "Started", "started")?;
                record_event(conn, &r.uid, "Warning", "Failed", "exit 1")?;
                let events = list_events(conn, &r.uid)?;
                assert_eq!(events.len(), 2);
                assert_eq!(events[0].count, 2);
                delete(conn, &r.uid)?;
                assert!(list_events(conn, &r.uid)?.is_empty());
                Ok(())
            })
            .unwrap();
    }
}
