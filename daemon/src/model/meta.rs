//! `metadata` of submitted documents, and the rendering of stored resources back into
//! documents with server-owned fields (uid, generation, resourceVersion, timestamps).

use rand::Rng;
use serde_json::{json, Map, Value};

use super::strict::{only_keys, FieldError};
use crate::store::resources::Resource;

/// What a user may set in `metadata`. Server-owned fields that `kubectl get -o yaml`
/// exports (uid, resourceVersion, ...) are accepted and replaced, so a document read
/// from Hearth can be sent back.
const USER_FIELDS: &[&str] = &[
    "name",
    "generateName",
    "namespace",
    "labels",
    "annotations",
    "ownerReferences",
];
const SERVER_FIELDS: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "managedFields",
    "selfLink",
];

#[derive(Debug, Clone, PartialEq)]
pub struct Metadata {
    pub name: String,
    /// Labels and annotations, as stored in the resource row.
    pub stored: Value,
}

pub fn validate_name(path: &str, name: &str) -> Result<(), FieldError> {
    crate::auth::validate_dns_label("name", name).map_err(|e| match e {
        crate::auth::AuthError::InvalidName { message, .. } => FieldError::invalid(path, message),
        other => FieldError::invalid(path, other.to_string()),
    })
}

fn string_map(value: Option<&Value>, path: &str) -> Result<Map<String, Value>, FieldError> {
    match value {
        None | Some(Value::Null) => Ok(Map::new()),
        Some(Value::Object(map)) => {
            for (k, v) in map {
                if !v.is_string() {
                    return Err(FieldError::invalid(format!("{path}.{k}"), "must be a string"));
                }
            }
            Ok(map.clone())
        }
        Some(_) => Err(FieldError::invalid(path, "must be a map of strings")),
    }
}

/// Parses `metadata`. `name_from_path` is the name in the URL for PUT/PATCH, which
/// must agree with the document's.
pub fn parse(document: &Value, name_from_path: Option<&str>) -> Result<Metadata, FieldError> {
    let empty = json!({});
    let metadata = document.get("metadata").unwrap_or(&empty);
    let allowed: Vec<&str> = USER_FIELDS.iter().chain(SERVER_FIELDS).copied().collect();
    only_keys(
        metadata,
        "metadata",
        &allowed,
        "Hearth does not honour it (finalizers and deletion fields are set by Hearth itself)",
    )?;
    let labels = string_map(metadata.get("labels"), "metadata.labels")?;
    let annotations = string_map(metadata.get("annotations"), "metadata.annotations")?;
    let name = match (
        metadata.get("name").and_then(Value::as_str),
        metadata.get("generateName").and_then(Value::as_str),
        name_from_path,
    ) {
        (Some(name), _, Some(path_name)) if name != path_name => {
            return Err(FieldError::invalid(
                "metadata.name",
                format!("{name:?} does not match the name in the path ({path_name:?})"),
            ))
        }
        (Some(name), _, _) => name.to_string(),
        (None, _, Some(path_name)) => path_name.to_string(),
        (None, Some(prefix), None) => {
            let suffix: String = (0..5)
                .map(|_| {
                    let chars = b"bcdfghjklmnpqrstvwxz2456789";
                    chars[rand::rng().random_range(0..chars.len())] as char
                })
                .collect();
            format!("{prefix}{suffix}")
        }
        (None, None, None) => {
            return Err(FieldError::invalid(
                "metadata.name",
                "is required (or metadata.generateName)",
            ))
        }
    };
    validate_name("metadata.name", &name)?;
    let mut stored = Map::new();
    if !labels.is_empty() {
        stored.insert("labels".into(), Value::Object(labels));
    }
    if !annotations.is_empty() {
        stored.insert("annotations".into(), Value::Object(annotations));
    }
    // Checked (and put in their stored form) by `kube::ownership::check`.
    if let Some(owners) = metadata.get("ownerReferences").filter(|o| !o.is_null()) {
        stored.insert("ownerReferences".into(), owners.clone());
    }
    Ok(Metadata {
        name,
        stored: Value::Object(stored),
    })
}

/// Checks `apiVersion` and `kind` against what an endpoint takes.
pub fn check_type(document: &Value, api_versions: &[&str], kind: &str) -> Result<(), FieldError> {
    let api_version = document.get("apiVersion").and_then(Value::as_str);
    match api_version {
        Some(v) if api_versions.contains(&v) => {}
        Some(v) => {
            return Err(FieldError::unsupported(
                "apiVersion",
                format!("{v:?} is not accepted here; use {}", api_versions.join(" or ")),
            ))
        }
        None => {
            return Err(FieldError::invalid(
                "apiVersion",
                format!("is required ({})", api_versions.join(" or ")),
            ))
        }
    }
    match document.get("kind").and_then(Value::as_str) {
        Some(k) if k == kind => Ok(()),
        Some(k) => Err(FieldError::invalid(
            "kind",
            format!("{k:?} is not accepted here; this endpoint takes {kind}"),
        )),
        None => Err(FieldError::invalid("kind", format!("is required ({kind})"))),
    }
}

/// The stored resource as a document: the user's spec as written, Hearth's status.
/// Takes the resource by value: a list renders each row once, moving its parsed
/// fields into the document instead of copying them.
pub fn render(resource: Resource, api_version: &str, kind: &str) -> Value {
    let Resource {
        uid,
        namespace,
        name,
        generation,
        resource_version,
        metadata,
        spec,
        status,
        created_at,
        deletion_requested_at,
        ..
    } = resource;
    // The user's labels and annotations first; the server-owned fields always win.
    let mut metadata = match metadata {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    metadata.insert("name".into(), Value::String(name));
    metadata.insert("namespace".into(), Value::String(namespace));
    metadata.insert("uid".into(), Value::String(uid));
    metadata.insert("generation".into(), json!(generation));
    metadata.insert(
        "resourceVersion".into(),
        Value::String(resource_version.to_string()),
    );
    metadata.insert("creationTimestamp".into(), Value::String(created_at));
    if let Some(deleting) = deletion_requested_at {
        metadata.insert("deletionTimestamp".into(), Value::String(deleting));
    }
    let mut document = Map::new();
    document.insert("apiVersion".into(), Value::String(api_version.into()));
    document.insert("kind".into(), Value::String(kind.into()));
    document.insert("metadata".into(), Value::Object(metadata));
    document.insert("spec".into(), spec);
    document.insert("status".into(), status);
    Value::Object(document)
}

/// RFC 7396 JSON merge patch.
pub fn merge_patch(target: &mut Value, patch: &Value) {
    match patch {
        Value::Object(patch_map) => {
            if !target.is_object() {
                *target = Value::Object(Map::new());
            }
            if let Value::Object(target_map) = target {
                for (k, v) in patch_map {
                    if v.is_null() {
                        target_map.remove(k);
                    } else {
                        merge_patch(target_map.entry(k.clone()).or_insert(Value::Null), v);
                    }
                }
            }
        }
        other => *target = other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked_and_generated() {
        let doc = json!({"metadata": {"generateName": "train-"}});
        let meta = parse(&doc, None).unwrap();
        assert!(meta.name.starts_with("train-") && meta.name.len() == 11);
        assert!(parse(&json!({"metadata": {"name": "../etc"}}), None).is_err());
        assert!(parse(&json!({"metadata": {"name": "a", "finalizers": []}}), None).is_err());
        assert!(parse(&json!({"metadata": {"name": "a"}}), Some("b")).is_err());
    }

    #[test]
    fn merge_patch_follows_rfc7396() {
        let mut target = json!({"a": "b", "c": {"d": "e", "f": "g"}});
        merge_patch(&mut target, &json!({"a": "z", "c": {"f": null}}));
        assert_eq!(target, json!({"a": "z", "c": {"d": "e"}}));
        merge_patch(&mut target, &json!({"c": [1]}));
        assert_eq!(
            target,
            json!({"a": "z", "c": [1]}),
            "arrays are replaced, not merged"
        );
    }
}
