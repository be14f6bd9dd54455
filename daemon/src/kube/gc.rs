//! The garbage collector: deletion propagating over `metadata.ownerReferences`, as
//! Kubernetes' garbage collector does it (`pkg/controller/garbagecollector`,
//! `attemptToDeleteItem` and the orphan/foreground finalizers), for every stored kind
//! of the registry ([`super::ownership::stored_kinds`]).
//!
//! Each pass is level-triggered: it re-derives everything from the store, so a pass
//! after a restart (or a `kill -9` mid-cascade) finishes what the last one started.
//!
//! - A dependent none of whose owners is *solid* is deleted. An owner is *absent*
//!   when no object has its uid (with its kind, name and the dependent's namespace),
//!   or when it is being deleted in the background; it is *waiting* when it is being
//!   deleted in the foreground (then a dependent that has dependents of its own is
//!   deleted in the foreground too); otherwise solid. A dependent with a solid owner
//!   loses its references to absent and waiting owners, and stays.
//! - An owner being deleted with the `orphan` finalizer: its dependents lose their
//!   reference to it, then the finalizer goes.
//! - An owner being deleted with the `foregroundDeletion` finalizer: the finalizer goes
//!   once no dependent with `blockOwnerDeletion` is left.
//!
//! Once an object's last finalizer is gone its kind's controller is woken, and removes
//! it as for any deletion (its workloads stopped first).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actix_web::web;
use rusqlite::Connection;
use serde_json::Value;

use super::ownership::{owner_kind, owner_refs, stored_kinds, OwnerRef};
use super::params::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::http::AppState;
use crate::store::resources::{self, Preconditions, Resource};
use crate::store::StoreError;

/// How long a pass waits after a change, so a burst of writes costs one pass.
const SETTLE: Duration = Duration::from_millis(50);

/// The collector's loop: a pass at start, after every committed change (settled by
/// [`SETTLE`]) and at least every [`crate::controller::IDLE_TICK`].
pub async fn run(state: web::Data<AppState>) {
    let mut changes = state.store.changes();
    loop {
        if let Err(e) = collect(&state).await {
            tracing::warn!(error = %e, "collecting the dependents of deleted owners");
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    tokio::time::sleep(crate::controller::IDLE_TICK).await;
                }
            }
            () = tokio::time::sleep(crate::controller::IDLE_TICK) => {}
        }
        tokio::time::sleep(SETTLE).await;
    }
}

/// One pass; answers how many objects it started deleting or released.
pub async fn collect(state: &AppState) -> Result<usize, StoreError> {
    let wake = state.store.call(|conn| pass(conn)).await?;
    let count = wake.len();
    for (store_kind, namespace, name) in wake {
        let Some(kind) = stored_kinds().find(|k| k.store_kind == store_kind) else {
            continue;
        };
        // Marked already; this wakes the kind's controller, which stops what the
        // object runs and removes it.
        if let Err(e) = kind.delete(state, &namespace, &name, false).await {
            tracing::debug!(error = %e, kind = kind.kind, namespace, name, "waking a deletion");
        }
    }
    Ok(count)
}

/// What an owner reference points at, for a dependent in `namespace`.
enum Owner {
    Solid,
    Absent,
    Waiting,
}

fn classify(reference: &OwnerRef, owner: Option<&Resource>, namespace: &str) -> Owner {
    let Some(def) = owner_kind(&reference.api_version, &reference.kind) else {
        // Not a kind Hearth stores (refused on write; stored before): never judged gone.
        return Owner::Solid;
    };
    let Some(owner) = owner else {
        return Owner::Absent;
    };
    if owner.kind != def.store_kind
        || owner.name != reference.name
        || (def.namespaced && owner.namespace != namespace)
    {
        return Owner::Absent;
    }
    if owner.deletion_requested_at.is_none() {
        return Owner::Solid;
    }
    let finalizers = resources::finalizers(&owner.metadata);
    if finalizers.contains(&ORPHAN_FINALIZER) {
        Owner::Solid
    } else if finalizers.contains(&FOREGROUND_FINALIZER) {
        Owner::Waiting
    } else {
        Owner::Absent
    }
}

/// Rewrites a resource's `metadata` (read fresh) with `change`; a no-op when it is
/// gone.
fn edit_metadata(
    conn: &Connection,
    uid: &str,
    change: impl FnOnce(&mut serde_json::Map<String, Value>),
) -> Result<(), StoreError> {
    let Some(current) = resources::get_by_uid(conn, uid)? else {
        return Ok(());
    };
    let mut metadata = current.metadata.as_object().cloned().unwrap_or_default();
    let before = metadata.clone();
    change(&mut metadata);
    if metadata == before {
        return Ok(());
    }
    resources::set_metadata(conn, uid, &Value::Object(metadata), current.resource_version)?;
    Ok(())
}

/// Takes the references to the owners in `gone` out of `metadata`.
fn drop_references(metadata: &mut serde_json::Map<String, Value>, gone: &HashSet<String>) {
    if let Some(Value::Array(refs)) = metadata.get_mut("ownerReferences") {
        refs.retain(|r| {
            !r.get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| gone.contains(u))
        });
        if refs.is_empty() {
            metadata.remove("ownerReferences");
        }
    }
}

/// Sets `blockOwnerDeletion: false` on the references to the owners in `owners`.
fn unblock(metadata: &mut serde_json::Map<String, Value>, owners: &HashSet<String>) {
    if let Some(Value::Array(refs)) = metadata.get_mut("ownerReferences") {
        for reference in refs.iter_mut() {
            let named = reference
                .get("uid")
                .and_then(Value::as_str)
                .is_some_and(|u| owners.contains(u));
            if let (true, Some(map)) = (named, reference.as_object_mut()) {
                map.insert("blockOwnerDeletion".into(), Value::Bool(false));
            }
        }
    }
}

fn drop_finalizer(metadata: &mut serde_json::Map<String, Value>, finalizer: &str) {
    if let Some(Value::Array(items)) = metadata.get_mut("finalizers") {
        items.retain(|f| f != finalizer);
        if items.is_empty() {
            metadata.remove("finalizers");
        }
    }
}

type Key = (String, String, String);

fn key(r: &Resource) -> Key {
    (r.kind.clone(), r.namespace.clone(), r.name.clone())
}

/// One pass over the store, in one call on its connection (so nothing changes between
/// the reads and the writes); answers the objects whose controller must be woken.
fn pass(conn: &Connection) -> Result<Vec<Key>, StoreError> {
    let kinds: Vec<&str> = stored_kinds().map(|k| k.store_kind).collect();
    let rows = resources::with_owners_or_finalizers(conn, &kinds)?;
    let mut owners: HashMap<String, Option<Resource>> = HashMap::new();
    for reference in rows.iter().flat_map(|r| owner_refs(&r.metadata)) {
        if let std::collections::hash_map::Entry::Vacant(entry) = owners.entry(reference.uid) {
            let found = resources::get_by_uid(conn, entry.key())?;
            entry.insert(found);
        }
    }
    let owning: HashSet<String> = owners.keys().cloned().collect();
    let mut wake = Vec::new();

    for dependent in rows.iter().filter(|r| r.deletion_requested_at.is_none()) {
        let references = owner_refs(&dependent.metadata);
        if references.is_empty() {
            continue;
        }
        let (mut solid, mut released, mut waiting) = (0, HashSet::new(), HashSet::new());
        for reference in &references {
            let owner = owners.get(&reference.uid).and_then(Option::as_ref);
            match classify(reference, owner, &dependent.namespace) {
                Owner::Solid => solid += 1,
                Owner::Absent => {
                    released.insert(reference.uid.clone());
                }
                Owner::Waiting => {
                    waiting.insert(reference.uid.clone());
                    released.insert(reference.uid.clone());
                }
            }
        }
        if solid == 0 {
            let foreground = !waiting.is_empty() && owning.contains(&dependent.uid);
            // A dependent of this one waiting for its own dependents may be a cycle
            // back to the waiting owner, which would hold both for ever: as upstream,
            // this one stops blocking the owners it waits for.
            let cycle = foreground
                && rows.iter().any(|r| {
                    r.deletion_requested_at.is_some()
                        && resources::finalizers(&r.metadata).contains(&FOREGROUND_FINALIZER)
                        && owner_refs(&r.metadata).iter().any(|o| o.uid == dependent.uid)
                });
            if cycle {
                edit_metadata(conn, &dependent.uid, |m| unblock(m, &waiting))?;
            }
            let marked = resources::request_deletion_with(
                conn,
                &dependent.kind,
                &dependent.namespace,
                &dependent.name,
                &Preconditions {
                    uid: Some(dependent.uid.clone()),
                    resource_version: None,
                },
                foreground.then_some(FOREGROUND_FINALIZER),
            );
            match marked {
                Ok(_) => wake.push(key(dependent)),
                Err(StoreError::NotFound { .. } | StoreError::Conflict(_)) => {}
                Err(e) => return Err(e),
            }
        } else if !released.is_empty() {
            edit_metadata(conn, &dependent.uid, |m| drop_references(m, &released))?;
        }
    }

    // Owners held by a finalizer, read again: the loop above may have changed their
    // dependents.
    let rows = resources::with_owners_or_finalizers(conn, &kinds)?;
    for owner in rows.iter().filter(|r| r.deletion_requested_at.is_some()) {
        let finalizers = resources::finalizers(&owner.metadata);
        if finalizers.is_empty() {
            continue;
        }
        let dependents: Vec<(&Resource, OwnerRef)> = rows
            .iter()
            .flat_map(|r| owner_refs(&r.metadata).into_iter().map(move |o| (r, o)))
            .filter(|(_, o)| o.uid == owner.uid)
            .collect();
        let mut release = Vec::new();
        if finalizers.contains(&ORPHAN_FINALIZER) {
            let gone = HashSet::from([owner.uid.clone()]);
            for (dependent, _) in &dependents {
                edit_metadata(conn, &dependent.uid, |m| drop_references(m, &gone))?;
            }
            release.push(ORPHAN_FINALIZER);
        }
        if finalizers.contains(&FOREGROUND_FINALIZER)
            && !dependents.iter().any(|(_, o)| o.block_owner_deletion)
        {
            release.push(FOREGROUND_FINALIZER);
        }
        if release.is_empty() {
            continue;
        }
        edit_metadata(conn, &owner.uid, |m| {
            for finalizer in &release {
                drop_finalizer(m, finalizer);
            }
        })?;
        if release.len() == finalizers.len() {
            wake.push(key(owner));
        }
    }
    Ok(wake)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::resources::NewResource;
    use crate::store::test_store;
    use serde_json::json;

    fn new(name: &str, metadata: Value) -> NewResource {
        NewResource {
            kind: "Job".into(),
            namespace: "team".into(),
            name: name.into(),
            metadata,
            spec: json!({}),
            status: json!({}),
        }
    }

    fn owned_by(owner: &Resource, block: bool) -> Value {
        json!({"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": owner.name, "uid": owner.uid, "blockOwnerDeletion": block}]})
    }

    fn deleting(conn: &Connection, name: &str) -> bool {
        resources::get(conn, "Job", "team", name)
            .unwrap()
            .deletion_requested_at
            .is_some()
    }

    #[test]
    fn propagation_follows_each_policy() {
        let (_dir, store) = test_store();
        store
            .call_blocking(|conn| {
                let owner = resources::create(conn, new("owner", json!({})))?;
                let child = resources::create(conn, new("child", owned_by(&owner, true)))?;
                let dangling = resources::create(
                    conn,
                    new(
                        "dangling",
                        json!({"ownerReferences": [{"apiVersion": "batch/v1", "kind": "Job", "name": "gone", "uid": "no-such-uid"}]}),
                    ),
                )?;
                assert_eq!(pass(conn)?, vec![key(&dangling)]);
                assert!(!deleting(conn, "child") && deleting(conn, "dangling"));

                // Foreground: the owner is held while its blocking dependent exists.
                resources::request_deletion_with(
                    conn,
                    "Job",
                    "team",
                    "owner",
                    &Preconditions::default(),
                    Some(FOREGROUND_FINALIZER),
                )?;
                assert_eq!(pass(conn)?, vec![key(&child)]);
                resources::delete(conn, &owner.uid)?;
                assert!(
                    resources::get_by_uid(conn, &owner.uid)?.is_some(),
                    "a finalizer holds the owner"
                );
                resources::delete(conn, &child.uid)?;
                assert_eq!(pass(conn)?, vec![key(&owner)]);
                resources::delete(conn, &owner.uid)?;
                assert!(resources::get_by_uid(conn, &owner.uid)?.is_none());

                // Orphan: the dependent loses its reference and stays.
                let parent = resources::create(conn, new("parent", json!({})))?;
                resources::create(conn, new("kept", owned_by(&parent, false)))?;
                resources::request_deletion_with(
                    conn,
                    "Job",
                    "team",
                    "parent",
                    &Preconditions::default(),
                    Some(ORPHAN_FINALIZER),
                )?;
                assert_eq!(pass(conn)?, vec![key(&parent)]);
                let kept = resources::get(conn, "Job", "team", "kept")?;
                assert!(kept.metadata.get("ownerReferences").is_none(), "{:?}", kept.metadata);
                assert!(!deleting(conn, "kept"));
                assert!(resources::finalizers(&resources::get_by_uid(conn, &parent.uid)?.unwrap().metadata).is_empty());

                // A cycle deleted in the foreground does not hold itself for ever.
                let a = resources::create(conn, new("a", json!({})))?;
                let b = resources::create(conn, new("b", owned_by(&a, true)))?;
                resources::set_metadata(conn, &a.uid, &owned_by(&b, true), resources::get_by_uid(conn, &a.uid)?.unwrap().resource_version)?;
                resources::request_deletion_with(conn, "Job", "team", "a", &Preconditions::default(), Some(FOREGROUND_FINALIZER))?;
                for _ in 0..6 {
                    for (_, _, name) in pass(conn)? {
                        // What the Job controller does once a woken Job's workloads stopped.
                        let uid = resources::get(conn, "Job", "team", &name)?.uid;
                        resources::delete(conn, &uid)?;
                    }
                    for uid in [&a.uid, &b.uid] {
                        if resources::get_by_uid(conn, uid)?.is_some_and(|r| r.deletion_requested_at.is_some()) {
                            resources::delete(conn, uid)?;
                        }
                    }
                }
                assert!(resources::get_by_uid(conn, &a.uid)?.is_none(), "the cycle's owner is gone");
                assert!(resources::get_by_uid(conn, &b.uid)?.is_none(), "the cycle's dependent is gone");
                Ok(())
            })
            .unwrap();
    }
}
