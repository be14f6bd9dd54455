//! `metadata.ownerReferences` and `metadata.finalizers` of sent objects, checked as
//! the API server checks them (`ValidateOwnerReferences` in apimachinery's
//! `api/validation/objectmeta.go`), for every stored kind of the registry: the
//! garbage collector ([`super::gc`]) then deletes an object whose owners are gone.
//!
//! An owner must be a kind Hearth stores (one the collector can see go): a reference
//! to any other kind is refused by name rather than kept and never honoured. An owner
//! that does not exist (yet) is accepted, as upstream: the collector deletes the
//! dependent as dangling.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use super::kinds::{KindDef, KINDS};
use super::params::{FOREGROUND_FINALIZER, ORPHAN_FINALIZER};
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::store::resources;

/// The fields of an `OwnerReference` (meta/v1).
const OWNER_REFERENCE_FIELDS: &[&str] = &[
    "apiVersion",
    "kind",
    "name",
    "uid",
    "controller",
    "blockOwnerDeletion",
];

/// The kinds whose objects are stored (and so may own, and be collected): every kind of
/// the registry but the read-only views.
pub fn stored_kinds() -> impl Iterator<Item = &'static KindDef> {
    KINDS.iter().copied().filter(|k| !k.store_kind.is_empty())
}

/// The stored kind an owner reference's `apiVersion` and `kind` name (the version is
/// not compared: any served version of a group names the same objects).
pub fn owner_kind(api_version: &str, kind: &str) -> Option<&'static KindDef> {
    let group = api_version.rsplit_once('/').map_or("", |(group, _)| group);
    stored_kinds().find(|k| k.group == group && k.kind == kind)
}

/// One owner reference as stored (checked on write; read leniently, since stored data
/// may predate the checks).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerRef {
    pub api_version: String,
    pub kind: String,
    pub name: String,
    pub uid: String,
    pub block_owner_deletion: bool,
}

/// The owner references of stored `metadata`.
pub fn owner_refs(metadata: &Value) -> Vec<OwnerRef> {
    let text = |r: &Value, key: &str| r.get(key).and_then(Value::as_str).unwrap_or_default().to_string();
    metadata
        .get("ownerReferences")
        .and_then(Value::as_array)
        .map(|refs| {
            refs.iter()
                .map(|r| OwnerRef {
                    api_version: text(r, "apiVersion"),
                    kind: text(r, "kind"),
                    name: text(r, "name"),
                    uid: text(r, "uid"),
                    block_owner_deletion: r.get("blockOwnerDeletion").and_then(Value::as_bool) == Some(true),
                })
                .collect()
        })
        .unwrap_or_default()
}

fn string_field(reference: &Map<String, Value>, path: &str, key: &str) -> Result<String, ApiError> {
    match reference.get(key) {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(_) => Err(ApiError::invalid(format!("{path}.{key}"), "must be a string")),
    }
}

/// Checks one reference; answers it in its stored form and whether it is the
/// controller.
fn check_reference(value: &Value, path: &str) -> Result<(Value, bool, OwnerRef), ApiError> {
    let reference = value
        .as_object()
        .ok_or_else(|| ApiError::invalid(path, "must be an object (apiVersion, kind, name, uid)"))?;
    if let Some(unknown) = reference
        .keys()
        .find(|k| !OWNER_REFERENCE_FIELDS.contains(&k.as_str()))
    {
        return Err(ApiError::invalid(
            format!("{path}.{unknown}"),
            format!(
                "is not a field of an OwnerReference ({})",
                OWNER_REFERENCE_FIELDS.join(", ")
            ),
        ));
    }
    let api_version = string_field(reference, path, "apiVersion")?;
    let kind = string_field(reference, path, "kind")?;
    let name = string_field(reference, path, "name")?;
    let uid = string_field(reference, path, "uid")?;
    let flag = |key: &str| match reference.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => Err(ApiError::invalid(
            format!("{path}.{key}"),
            "must be true or false",
        )),
    };
    let controller = flag("controller")?;
    let block = flag("blockOwnerDeletion")?;
    let version = api_version.rsplit('/').next().unwrap_or_default();
    if version.is_empty() {
        return Err(ApiError::invalid(
            format!("{path}.apiVersion"),
            format!("Invalid value: {api_version:?}: version must not be empty"),
        ));
    }
    if kind.is_empty() {
        return Err(ApiError::invalid(
            format!("{path}.kind"),
            "Invalid value: \"\": kind must not be empty",
        ));
    }
    if name.is_empty() {
        return Err(ApiError::invalid(
            format!("{path}.name"),
            "Invalid value: \"\": name must not be empty",
        ));
    }
    if uid.is_empty() {
        return Err(ApiError::invalid(
            format!("{path}.uid"),
            "Invalid value: \"\": uid must not be empty",
        ));
    }
    let Some(owner) = owner_kind(&api_version, &kind) else {
        let stored: Vec<String> = stored_kinds()
            .map(|k| format!("{} {}", k.api_version(), k.kind))
            .collect();
        return Err(ApiError::invalid(
            format!("{path}.kind"),
            format!(
                "{api_version} {kind} is not a kind Hearth stores, so its deletion could not be followed; an owner must be one of: {}",
                stored.join(", ")
            ),
        ));
    };
    if owner.api_version() != api_version {
        return Err(ApiError::invalid(
            format!("{path}.apiVersion"),
            format!("{api_version:?} is not served; {} is", owner.api_version()),
        ));
    }
    let mut stored = Map::new();
    stored.insert("apiVersion".into(), Value::String(api_version.clone()));
    stored.insert("kind".into(), Value::String(kind.clone()));
    stored.insert("name".into(), Value::String(name.clone()));
    stored.insert("uid".into(), Value::String(uid.clone()));
    if let Some(c) = controller {
        stored.insert("controller".into(), Value::Bool(c));
    }
    if let Some(b) = block {
        stored.insert("blockOwnerDeletion".into(), Value::Bool(b));
    }
    let parsed = OwnerRef {
        api_version,
        kind,
        name,
        uid,
        block_owner_deletion: block == Some(true),
    };
    Ok((Value::Object(stored), controller == Some(true), parsed))
}

/// Checks the `metadata.ownerReferences` and `metadata.finalizers` of an object sent
/// to `kind` in `namespace`, and leaves them in the form the kind stores: owner
/// references normalized, finalizers taken out (Hearth sets its own,
/// `foregroundDeletion` and `orphan`, from a delete's `propagationPolicy`, and keeps
/// them over a replace; any other is refused by name).
///
/// Errors: `Invalid` naming `metadata.ownerReferences[i].<field>` (or
/// `metadata.ownerReferences` for a second controller) or `metadata.finalizers[i]`.
pub async fn check(
    kind: &KindDef,
    state: &AppState,
    namespace: &str,
    document: &mut Value,
) -> Result<(), ApiError> {
    let Some(metadata) = document.get_mut("metadata").and_then(Value::as_object_mut) else {
        return Ok(());
    };
    match metadata.get("finalizers") {
        None | Some(Value::Null) => {}
        Some(Value::Array(items)) => {
            for (i, item) in items.iter().enumerate() {
                if !matches!(item.as_str(), Some(FOREGROUND_FINALIZER | ORPHAN_FINALIZER)) {
                    return Err(ApiError::invalid(
                        format!("metadata.finalizers[{i}]"),
                        format!(
                            "Unsupported value: {item}: Hearth's controllers finish deletion themselves; the only finalizers are its own ({FOREGROUND_FINALIZER}, {ORPHAN_FINALIZER}), set from a delete's propagationPolicy"
                        ),
                    ));
                }
            }
        }
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata.finalizers",
                "must be a list of strings",
            ))
        }
    }
    metadata.remove("finalizers");
    let references = match metadata.remove("ownerReferences") {
        None | Some(Value::Null) => return Ok(()),
        Some(Value::Array(items)) => items,
        Some(_) => {
            return Err(ApiError::invalid(
                "metadata.ownerReferences",
                "must be a list of owner references",
            ))
        }
    };
    let mut stored = Vec::new();
    let mut parsed = Vec::new();
    let mut controllers = Vec::new();
    for (i, reference) in references.iter().enumerate() {
        let (value, controller, owner) =
            check_reference(reference, &format!("metadata.ownerReferences[{i}]"))?;
        if controller {
            controllers.push(format!("{}/{}", owner.kind, owner.name));
        }
        stored.push(value);
        parsed.push(owner);
    }
    if controllers.len() > 1 {
        return Err(ApiError::invalid(
            "metadata.ownerReferences",
            format!(
                "Only one reference can have Controller set to true. Found \"true\" in references for {} and {}",
                controllers[0], controllers[1]
            ),
        ));
    }
    let uids: BTreeSet<String> = parsed.iter().map(|o| o.uid.clone()).collect();
    let found = state
        .store
        .call(move |conn| {
            let mut found = Vec::new();
            for uid in uids {
                if let Some(owner) = resources::get_by_uid(conn, &uid)? {
                    found.push(owner);
                }
            }
            Ok(found)
        })
        .await?;
    for (i, reference) in parsed.iter().enumerate() {
        let Some(owner) = found.iter().find(|o| o.uid == reference.uid) else {
            continue;
        };
        let path = format!("metadata.ownerReferences[{i}]");
        let owner_def = owner_kind(&reference.api_version, &reference.kind);
        if owner_def.is_some_and(|d| d.store_kind != owner.kind) || owner.name != reference.name {
            return Err(ApiError::invalid(
                format!("{path}.uid"),
                format!(
                    "{} is the uid of {} {}/{}, not of {} {}",
                    owner.uid, owner.kind, owner.namespace, owner.name, reference.kind, reference.name
                ),
            ));
        }
        let owner_namespaced = owner_def.is_none_or(|d| d.namespaced);
        if owner_namespaced && (!kind.namespaced || owner.namespace != namespace) {
            return Err(ApiError::invalid(
                format!("{path}.uid"),
                format!(
                    "{} {} is in namespace {:?}; a namespaced owner must be in its dependent's namespace ({namespace:?}), and a cluster-scoped object may have only cluster-scoped owners",
                    owner.kind, owner.name, owner.namespace
                ),
            ));
        }
    }
    if !stored.is_empty() {
        metadata.insert("ownerReferences".into(), Value::Array(stored));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(reference: Value) -> Result<(Value, bool, OwnerRef), ApiError> {
        check_reference(&reference, "metadata.ownerReferences[0]")
    }

    fn field(result: Result<(Value, bool, OwnerRef), ApiError>) -> String {
        match result {
            Err(ApiError::InvalidField { field, .. }) => field,
            other => panic!("not an invalid field: {other:?}"),
        }
    }

    #[test]
    fn references_are_checked_field_by_field() {
        let good =
            json!({"apiVersion": "batch/v1", "kind": "Job", "name": "a", "uid": "u", "controller": true});
        let (stored, controller, parsed) = one(good.clone()).unwrap();
        assert_eq!(stored, good);
        assert!(controller && !parsed.block_owner_deletion);
        let without = |key: &str| {
            let mut r = good.clone();
            r.as_object_mut().unwrap().remove(key);
            r
        };
        assert_eq!(field(one(without("uid"))), "metadata.ownerReferences[0].uid");
        assert_eq!(field(one(without("name"))), "metadata.ownerReferences[0].name");
        assert_eq!(field(one(without("kind"))), "metadata.ownerReferences[0].kind");
        assert_eq!(
            field(one(without("apiVersion"))),
            "metadata.ownerReferences[0].apiVersion"
        );
        let mut pod = good.clone();
        pod["apiVersion"] = json!("v1");
        pod["kind"] = json!("Pod");
        assert_eq!(field(one(pod)), "metadata.ownerReferences[0].kind");
        let mut old = good.clone();
        old["apiVersion"] = json!("batch/v2");
        assert_eq!(field(one(old)), "metadata.ownerReferences[0].apiVersion");
        let mut extra = good.clone();
        extra["namespace"] = json!("x");
        assert_eq!(field(one(extra)), "metadata.ownerReferences[0].namespace");
        let isvc = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService", "name": "s", "uid": "v", "blockOwnerDeletion": true});
        assert!(one(isvc).unwrap().2.block_owner_deletion);
    }
}
