//! `labelSelector` and `fieldSelector`, as the Kubernetes API server reads them
//! (k8s.io/apimachinery `labels.Parse` and `fields.ParseSelector`).
//!
//! Labels: comma-separated requirements, each `key=value`, `key==value`,
//! `key!=value`, `key in (a,b)`, `key notin (a,b)`, `key` (exists) or `!key`.
//! Fields: `metadata.name` and `metadata.namespace` with `=`, `==` or `!=`; any other
//! field is refused by name, as the API server refuses a field it does not index.

use serde_json::Value;

use crate::http::errors::ApiError;

#[derive(Debug, Clone, PartialEq)]
enum LabelOp {
    Equals(String),
    NotEquals(String),
    In(Vec<String>),
    NotIn(Vec<String>),
    Exists,
    DoesNotExist,
}

#[derive(Debug, Clone, PartialEq)]
struct Requirement {
    key: String,
    op: LabelOp,
}

/// A parsed `labelSelector`; the empty selector matches everything.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LabelSelector(Vec<Requirement>);

fn bad(parameter: &str, text: &str, why: &str) -> ApiError {
    ApiError::BadRequest(format!(
        "{parameter}: unable to parse requirement {text:?}: {why}"
    ))
}

/// Splits on commas outside parentheses (`a in (x,y),b`).
fn split_top(text: &str) -> Vec<&str> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0i32, 0usize);
    for (i, c) in text.char_indices() {
        match c {
            '(' => depth += 1,
            ')' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&text[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&text[start..]);
    parts
}

/// A label key: an optional DNS-subdomain prefix and `/`, then a name of at most 63
/// characters of alphanumerics, `-`, `_` and `.`, starting and ending alphanumeric.
fn valid_key(key: &str) -> bool {
    let name = match key.rsplit_once('/') {
        Some((prefix, name)) => {
            if prefix.is_empty() || prefix.len() > 253 {
                return false;
            }
            if !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.')
            {
                return false;
            }
            name
        }
        None => key,
    };
    !name.is_empty() && valid_value(name)
}

/// A label value: empty, or at most 63 characters like a key's name part.
fn valid_value(value: &str) -> bool {
    if value.is_empty() {
        return true;
    }
    value.len() <= 63
        && value
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && value.starts_with(|c: char| c.is_ascii_alphanumeric())
        && value.ends_with(|c: char| c.is_ascii_alphanumeric())
}

fn value_set(text: &str, whole: &str) -> Result<Vec<String>, ApiError> {
    let inner = text
        .trim()
        .strip_prefix('(')
        .and_then(|t| t.strip_suffix(')'))
        .ok_or_else(|| bad("labelSelector", whole, "a set must be written (a,b,...)"))?;
    let values: Vec<String> = inner.split(',').map(|v| v.trim().to_string()).collect();
    if let Some(v) = values.iter().find(|v| !valid_value(v)) {
        return Err(bad(
            "labelSelector",
            whole,
            &format!("{v:?} is not a valid label value"),
        ));
    }
    Ok(values)
}

impl LabelSelector {
    pub fn parse(text: &str) -> Result<LabelSelector, ApiError> {
        let mut requirements = Vec::new();
        if text.trim().is_empty() {
            return Ok(LabelSelector(requirements));
        }
        for part in split_top(text) {
            let part = part.trim();
            let requirement = if let Some(key) = part.strip_prefix('!') {
                Requirement {
                    key: key.trim().to_string(),
                    op: LabelOp::DoesNotExist,
                }
            } else if let Some((key, value)) = part.split_once("!=") {
                Requirement {
                    key: key.trim().to_string(),
                    op: LabelOp::NotEquals(value.trim().to_string()),
                }
            } else if let Some((key, value)) = part.split_once("==").or_else(|| part.split_once('=')) {
                Requirement {
                    key: key.trim().to_string(),
                    op: LabelOp::Equals(value.trim().to_string()),
                }
            } else if let Some((key, set)) = part.split_once(" notin ") {
                Requirement {
                    key: key.trim().to_string(),
                    op: LabelOp::NotIn(value_set(set, part)?),
                }
            } else if let Some((key, set)) = part.split_once(" in ") {
                Requirement {
                    key: key.trim().to_string(),
                    op: LabelOp::In(value_set(set, part)?),
                }
            } else {
                Requirement {
                    key: part.to_string(),
                    op: LabelOp::Exists,
                }
            };
            if !valid_key(&requirement.key) {
                return Err(bad(
                    "labelSelector",
                    part,
                    &format!("{:?} is not a valid label key", requirement.key),
                ));
            }
            if let LabelOp::Equals(v) | LabelOp::NotEquals(v) = &requirement.op {
                if !valid_value(v) {
                    return Err(bad(
                        "labelSelector",
                        part,
                        &format!("{v:?} is not a valid label value"),
                    ));
                }
            }
            requirements.push(requirement);
        }
        Ok(LabelSelector(requirements))
    }

    /// Whether a document's `metadata.labels` satisfy every requirement.
    pub fn matches(&self, document: &Value) -> bool {
        let labels = document.pointer("/metadata/labels");
        let label = |key: &str| labels.and_then(|l| l.get(key)).and_then(Value::as_str);
        self.0.iter().all(|r| match &r.op {
            LabelOp::Equals(v) => label(&r.key) == Some(v.as_str()),
            LabelOp::NotEquals(v) => label(&r.key) != Some(v.as_str()),
            LabelOp::In(set) => label(&r.key).is_some_and(|l| set.iter().any(|v| v == l)),
            LabelOp::NotIn(set) => label(&r.key).is_none_or(|l| !set.iter().any(|v| v == l)),
            LabelOp::Exists => label(&r.key).is_some(),
            LabelOp::DoesNotExist => label(&r.key).is_none(),
        })
    }
}

/// A parsed `fieldSelector` over the [`FIELDS`] Hearth knows.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FieldSelector(Vec<(String, bool, String)>);

/// The fields a `fieldSelector` may name, with where they are in the document.
const FIELDS: &[(&str, &str)] = &[
    ("metadata.name", "/metadata/name"),
    ("metadata.namespace", "/metadata/namespace"),
    // Events (`kubectl describe` finds an object's events by these).
    ("involvedObject.kind", "/involvedObject/kind"),
    ("involvedObject.name", "/involvedObject/name"),
    ("involvedObject.namespace", "/involvedObject/namespace"),
    ("involvedObject.uid", "/involvedObject/uid"),
    ("involvedObject.apiVersion", "/involvedObject/apiVersion"),
    ("reason", "/reason"),
    ("type", "/type"),
    // Pods.
    ("status.phase", "/status/phase"),
    ("spec.nodeName", "/spec/nodeName"),
];

impl FieldSelector {
    pub fn parse(text: &str) -> Result<FieldSelector, ApiError> {
        let mut terms = Vec::new();
        if text.trim().is_empty() {
            return Ok(FieldSelector(terms));
        }
        for part in text.split(',') {
            let (field, equal, value) = if let Some((f, v)) = part.split_once("!=") {
                (f, false, v)
            } else if let Some((f, v)) = part.split_once("==").or_else(|| part.split_once('=')) {
                (f, true, v)
            } else {
                return Err(bad(
                    "fieldSelector",
                    part,
                    "expected field=value, field==value or field!=value",
                ));
            };
            let field = field.trim();
            let Some((_, pointer)) = FIELDS.iter().find(|(name, _)| *name == field) else {
                let known: Vec<&str> = FIELDS.iter().map(|(name, _)| *name).collect();
                return Err(ApiError::BadRequest(format!(
                    "fieldSelector: field label not supported: {field} (Hearth selects on {})",
                    known.join(", ")
                )));
            };
            terms.push((pointer.to_string(), equal, value.trim().to_string()));
        }
        Ok(FieldSelector(terms))
    }

    /// Refuses a term on a field `kind` cannot be selected by: every kind takes
    /// `metadata.name` and `metadata.namespace`, and some take `fields` more.
    pub fn only(&self, kind: &str, fields: &[&str]) -> Result<(), ApiError> {
        for (pointer, _, _) in &self.0 {
            let Some((name, _)) = FIELDS.iter().find(|(_, p)| p == pointer) else {
                continue;
            };
            if !name.starts_with("metadata.") && !fields.contains(name) {
                let mut known = vec!["metadata.name", "metadata.namespace"];
                known.extend(fields);
                return Err(ApiError::BadRequest(format!(
                    "fieldSelector: field label not supported for {kind}: {name} (it selects on {})",
                    known.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn matches(&self, document: &Value) -> bool {
        self.0.iter().all(|(pointer, equal, value)| {
            let actual = document.pointer(pointer).and_then(Value::as_str).unwrap_or("");
            (actual == value) == *equal
        })
    }

    /// The one name an `metadata.name=x` term pins, so a list reads one row.
    pub fn name(&self) -> Option<&str> {
        self.0
            .iter()
            .find(|(pointer, equal, _)| pointer == "/metadata/name" && *equal)
            .map(|(_, _, v)| v.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn label_selectors_follow_kubernetes() {
        let doc =
            json!({"metadata": {"name": "a", "namespace": "n", "labels": {"app": "web", "tier": "front"}}});
        let cases = [
            ("", true),
            ("app=web", true),
            ("app==web", true),
            ("app!=web", false),
            ("app in (web,api)", true),
            ("app notin (web)", false),
            ("tier", true),
            ("!tier", false),
            ("!missing", true),
            ("app=web,tier=back", false),
            ("missing notin (x)", true),
            ("example.com/role!=x", true),
        ];
        for (text, expected) in cases {
            assert_eq!(
                LabelSelector::parse(text).unwrap().matches(&doc),
                expected,
                "{text}"
            );
        }
        for bad in ["app in web", "a b=c", "=x", "app=(x", "-a=b"] {
            assert!(LabelSelector::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn field_selectors_take_name_namespace_and_the_kinds_own_fields() {
        let doc = json!({"metadata": {"name": "a", "namespace": "n"}});
        assert!(FieldSelector::parse("metadata.name=a").unwrap().matches(&doc));
        assert!(!FieldSelector::parse("metadata.name!=a").unwrap().matches(&doc));
        assert!(FieldSelector::parse("metadata.namespace==n,metadata.name=a")
            .unwrap()
            .matches(&doc));
        let phase = FieldSelector::parse("status.phase=Running").unwrap();
        let err = phase.only("Job", &[]).unwrap_err().to_string();
        assert!(err.contains("status.phase"), "{err}");
        assert!(phase.only("Pod", &["status.phase"]).is_ok());
        let err = FieldSelector::parse("spec.unknown=x").unwrap_err().to_string();
        assert!(err.contains("spec.unknown"), "{err}");
    }
}
