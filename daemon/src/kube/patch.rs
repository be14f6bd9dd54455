//! PATCH bodies by content type, as the Kubernetes API server takes them.
//!
//! - `application/merge-patch+json`: RFC 7396.
//! - `application/strategic-merge-patch+json` (what `kubectl apply`/`edit`/`patch`
//!   send for built-in kinds): applied as a merge patch. The kinds served here change
//!   only maps and scalars after creation (a Job's lists are in its immutable
//!   template), so the list-merge rules of strategic merge never apply; the patch
//!   directives (`$patch`, `$retainKeys`, `$setElementOrder/...`,
//!   `$deleteFromPrimitiveList/...`) are refused by name.
//! - `application/json-patch+json` (RFC 6902) and `application/apply-patch+yaml`
//!   (server-side apply) are refused with 415, naming what to send.

use serde_json::Value;

use crate::http::errors::ApiError;
use crate::model::meta::merge_patch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PatchType {
    Merge,
    StrategicMerge,
}

const MERGE: &str = "application/merge-patch+json";
const STRATEGIC: &str = "application/strategic-merge-patch+json";

/// The patch type a `Content-Type` names, or 415.
pub fn patch_type(content_type: Option<&str>) -> Result<PatchType, ApiError> {
    let media = content_type
        .and_then(|c| c.split(';').next())
        .map(|c| c.trim().to_ascii_lowercase())
        .unwrap_or_default();
    match media.as_str() {
        MERGE => Ok(PatchType::Merge),
        STRATEGIC => Ok(PatchType::StrategicMerge),
        _ => Err(ApiError::UnsupportedMediaType {
            got: media,
            expected: "application/merge-patch+json or application/strategic-merge-patch+json (JSON patch and server-side apply are not supported by Hearth)",
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
        assert!(patch_type(Some("application/json-patch+json")).is_err());
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
}
