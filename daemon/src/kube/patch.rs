//! PATCH bodies by content type, as the Kubernetes API server takes them.
//!
//! - `application/merge-patch+json`: RFC 7396.
//! - `application/strategic-merge-patch+json` (what `kubectl apply`/`edit`/`patch`
//!   send for built-in kinds): applied as a merge patch. The kinds served here change
//!   only maps and scalars after creation (a Job's lists are in its immutable
//!   template), so the list-merge rules of strategic merge never apply; the patch
//!   directives (`$patch`, `$retainKeys`, `$setElementOrder/...`,
//!   `$deleteFromPrimitiveList/...`) are refused by name.
//! - `application/json-patch+json`: RFC 6902 (`add`, `remove`, `replace`, `move`,
//!   `copy`, `test`), as `kubectl patch --type=json` sends it.
//! - `application/apply-patch+yaml` (server-side apply) is refused with 415, naming
//!   what to send.

use serde_json::Value;

use crate::http::errors::ApiError;
use crate::model::meta::merge_patch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    StrategicMerge,
    Json,
}

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";
const JSON_PATCH: &str = "application/json-patch+json";

/// The patch type a `Content-Type` names, or 415.
pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        MERGE => Ok(PatchType::Merge),
        STRATEGIC => Ok(PatchType::StrategicMerge),
        JSON_PATCH => Ok(PatchType::Json),
        _ => Err(ApiError::UnsupportedMediaType {
            got: media,
            expected: "application/merge-patch+json, application/strategic-merge-patch+json or application/json-patch+json (server-side apply is not supported by Hearth)",
        }),
    }
}

/// The first strategic-merge directive in `patch`, with its path.
fn directive(value: &Value, path: &str) -> Option<String> {
    match value {
        Value::Object(map) => map.iter().find_map(|(key, v)| {
            let here = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            if key.starts_with('$') {
                Some(here)
            } else {
                directive(v, &here)
            }
        }),
        Value::Array(items) => items
            .iter()
            .enumerate()
            .find_map(|(i, v)| directive(v, &format!("{path}[{i}]"))),
        _ => None,
    }
}

/// Applies `patch` to `document` (the current object).
pub fn apply(document: &mut Value, patch: &Value, kind: PatchType) -> Result<(), ApiError> {
    if kind == PatchType::Json {
        return json_patch(document, patch);
    }
    if !patch.is_object() {
        return Err(ApiError::BadRequest("the patch must be a JSON object".into()));
    }
    if kind == PatchType::StrategicMerge {
        if let Some(at) = directive(patch, "") {
            return Err(ApiError::unsupported(
                at,
                "strategic merge patch directives are not supported by Hearth; send the fields as a merge patch",
            ));
        }
    }
    merge_patch(document, patch);
    Ok(())
}

/// The reference tokens of an RFC 6901 pointer (`~1` is `/`, `~0` is `~`).
fn tokens(pointer: &str, at: &str) -> Result<Vec<String>, ApiError> {
    if pointer.is_empty() {
        return Ok(Vec::new());
    }
    let rest = pointer
        .strip_prefix('/')
        .ok_or_else(|| ApiError::invalid(at, format!("{pointer:?} is not a JSON pointer (starts with /)")))?;
    Ok(rest
        .split('/')
        .map(|t| t.replace("~1", "/").replace("~0", "~"))
        .collect())
}

fn missing(at: &str, pointer: &str) -> ApiError {
    ApiError::invalid(at, format!("{pointer:?} does not exist in the object"))
}

/// The value a pointer's parent names, and the last token.
fn parent<'a>(document: &'a mut Value, pointer: &str, at: &str) -> Result<(&'a mut Value, String), ApiError> {
    let mut tokens = tokens(pointer, at)?;
    let last = tokens
        .pop()
        .ok_or_else(|| ApiError::invalid(at, "the whole object cannot be the target here"))?;
    let mut node = document;
    for token in tokens {
        node = match node {
            Value::Object(map) => map.get_mut(&token),
            Value::Array(items) => token.parse::<usize>().ok().and_then(|i| items.get_mut(i)),
            _ => None,
        }
        .ok_or_else(|| missing(at, pointer))?;
    }
    Ok((node, last))
}

fn index(token: &str, len: usize, append: bool, at: &str) -> Result<usize, ApiError> {
    if append && token == "-" {
        return Ok(len);
    }
    let limit = if append { len } else { len.saturating_sub(1) };
    token
        .parse::<usize>()
        .ok()
        .filter(|i| *i <= limit && (append || len > 0))
        .ok_or_else(|| {
            ApiError::invalid(
                at,
                format!("{token:?} is not an index of the list (0 to {limit})"),
            )
        })
}

fn add(document: &mut Value, pointer: &str, value: Value, at: &str) -> Result<(), ApiError> {
    if pointer.is_empty() {
        *document = value;
        return Ok(());
    }
    let (node, last) = parent(document, pointer, at)?;
    match node {
        Value::Object(map) => {
            map.insert(last, value);
        }
        Value::Array(items) => {
            let i = index(&last, items.len(), true, at)?;
            items.insert(i, value);
        }
        _ => return Err(missing(at, pointer)),
    }
    Ok(())
}

fn remove(document: &mut Value, pointer: &str, at: &str) -> Result<Value, ApiError> {
    let (node, last) = parent(document, pointer, at)?;
    match node {
        Value::Object(map) => map.remove(&last).ok_or_else(|| missing(at, pointer)),
        Value::Array(items) => {
            let i = index(&last, items.len(), false, at)?;
            Ok(items.remove(i))
        }
        _ => Err(missing(at, pointer)),
    }
}

/// RFC 6902 JSON patch: every operation applies, or the patch fails and the object is
/// left as it was (the caller keeps its copy).
fn json_patch(document: &mut Value, patch: &Value) -> Result<(), ApiError> {
    let operations = patch
        .as_array()
        .ok_or_else(|| ApiError::BadRequest("a JSON patch is a list of operations".into()))?;
    let mut work = document.clone();
    for (i, operation) in operations.iter().enumerate() {
        let at = format!("patch[{i}]");
        let text = |key: &str| -> Result<&str, ApiError> {
            operation
                .get(key)
                .and_then(Value::as_str)
                .ok_or_else(|| ApiError::invalid(format!("{at}.{key}"), "is required (a string)"))
        };
        let value = || {
            operation
                .get("value")
                .cloned()
                .ok_or_else(|| ApiError::invalid(format!("{at}.value"), "is required"))
        };
        let path = text("path")?;
        let path_at = format!("{at}.path");
        match text("op")? {
            "add" => add(&mut work, path, value()?, &path_at)?,
            "remove" => {
                remove(&mut work, path, &path_at)?;
            }
            "replace" => {
                remove(&mut work, path, &path_at)?;
                add(&mut work, path, value()?, &path_at)?;
            }
            "move" => {
                let from = text("from")?;
                let moved = remove(&mut work, from, &format!("{at}.from"))?;
                add(&mut work, path, moved, &path_at)?;
            }
            "copy" => {
                let from = text("from")?;
                let copied = work
                    .pointer(from)
                    .cloned()
                    .ok_or_else(|| missing(&format!("{at}.from"), from))?;
                add(&mut work, path, copied, &path_at)?;
            }
            "test" => {
                if work.pointer(path) != Some(&value()?) {
                    return Err(ApiError::invalid(path_at, format!("the test of {path:?} failed")));
                }
            }
            other => {
                return Err(ApiError::invalid(
                    format!("{at}.op"),
                    format!("{other:?} is not add, remove, replace, move, copy or test"),
                ))
            }
        }
    }
    *document = work;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn patch_types_and_directives() {
        assert_eq!(patch_type(Some(MERGE)).unwrap(), PatchType::Merge);
        assert_eq!(
            patch_type(Some("application/strategic-merge-patch+json; charset=utf-8")).unwrap(),
            PatchType::StrategicMerge
        );
        assert_eq!(patch_type(Some(JSON_PATCH)).unwrap(), PatchType::Json);
        assert!(patch_type(Some("application/apply-patch+yaml")).is_err());
        assert!(patch_type(None).is_err());
        let mut doc = json!({"spec": {"a": 1, "b": 2}});
        apply(
            &mut doc,
            &json!({"spec": {"a": null, "c": 3}}),
            PatchType::StrategicMerge,
        )
        .unwrap();
        assert_eq!(doc, json!({"spec": {"b": 2, "c": 3}}));
        let err = apply(
            &mut doc,
            &json!({"spec": {"list": [{"$patch": "delete"}]}}),
            PatchType::StrategicMerge,
        )
        .unwrap_err();
        assert!(err.to_string().contains("spec.list[0].$patch"), "{err}");
    }

    #[test]
    fn json_patch_follows_rfc6902() {
        let mut doc = json!({"a": {"b": [1, 2]}, "c/d": 1, "e": "x"});
        let patch = json!([
            {"op": "test", "path": "/e", "value": "x"},
            {"op": "add", "path": "/a/b/-", "value": 3},
            {"op": "add", "path": "/a/b/0", "value": 0},
            {"op": "replace", "path": "/c~1d", "value": 2},
            {"op": "move", "from": "/e", "path": "/f"},
            {"op": "copy", "from": "/f", "path": "/g"},
            {"op": "remove", "path": "/a/b/1"}
        ]);
        apply(&mut doc, &patch, PatchType::Json).unwrap();
        assert_eq!(doc, json!({"a": {"b": [0, 2, 3]}, "c/d": 2, "f": "x", "g": "x"}));
        let before = doc.clone();
        for bad in [
            json!([{"op": "test", "path": "/f", "value": "y"}]),
            json!([{"op": "remove", "path": "/nope"}]),
            json!([{"op": "add", "path": "/a/b/9", "value": 1}]),
            json!([{"op": "replace", "path": "/a/b/3", "value": 1}]),
            json!([{"op": "add", "path": "/f", "value": 1}, {"op": "frobnicate", "path": "/f"}]),
            json!({"op": "add"}),
        ] {
            assert!(apply(&mut doc, &bad, PatchType::Json).is_err(), "{bad}");
            assert_eq!(doc, before, "a failed patch changes nothing: {bad}");
        }
    }
}

/// `io.k8s.apimachinery.pkg.apis.meta.v1.Patch`: the body of a PATCH, a JSON object
/// read as its `Content-Type` says (merge or strategic merge patch). A named schema, as
/// Kubernetes' own document has, so generated clients get one patch type.
#[derive(utoipa::ToSchema)]
#[allow(
    dead_code,
    reason = "documents the PATCH body for OpenAPI; patches are read as JSON values"
)]
pub struct Patch(std::collections::BTreeMap<String, serde_json::Value>);
