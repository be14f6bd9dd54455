//! Refusing fields by name. Upstream documents carry many fields; each area lists the
//! ones it honours, and anything else is refused naming its full path, never ignored.

use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FieldError {
    /// A field Hearth does not honour (or does not know).
    #[error("{path} is not supported: {detail}")]
    Unsupported { path: String, detail: String },
    /// A field with a value Hearth cannot use.
    #[error("{path}: {detail}")]
    Invalid { path: String, detail: String },
}

impl FieldError {
    pub fn invalid(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::Invalid {
            path: path.into(),
            detail: detail.into(),
        }
    }

    pub fn unsupported(path: impl Into<String>, detail: impl Into<String>) -> FieldError {
        FieldError::Unsupported {
            path: path.into(),
            detail: detail.into(),
        }
    }
}

/// Checks that `value` (an object at `path`) has only `allowed` keys.
pub fn only_keys(value: &Value, path: &str, allowed: &[&str], why: &str) -> Result<(), FieldError> {
    let Some(object) = value.as_object() else {
        return Err(FieldError::invalid(path, "must be an object"));
    };
    for key in object.keys() {
        if !allowed.contains(&key.as_str()) {
            let full = if path.is_empty() {
                key.clone()
            } else {
                format!("{path}.{key}")
            };
            return Err(FieldError::unsupported(full, why));
        }
    }
    Ok(())
}

pub fn object<'a>(value: &'a Value, path: &str) -> Result<&'a serde_json::Map<String, Value>, FieldError> {
    value
        .as_object()
        .ok_or_else(|| FieldError::invalid(path, "must be an object"))
}

pub fn opt_string(value: &Value, key: &str, path: &str) -> Result<Option<String>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(FieldError::invalid(format!("{path}.{key}"), "must be a string")),
    }
}

pub fn opt_u64(value: &Value, key: &str, path: &str) -> Result<Option<u64>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => v
            .as_u64()
            .map(Some)
            .ok_or_else(|| FieldError::invalid(format!("{path}.{key}"), "must be a non-negative integer")),
    }
}

pub fn string_list(value: &Value, key: &str, path: &str) -> Result<Vec<String>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, item)| match item {
                Value::String(s) => Ok(s.clone()),
                // YAML authors write `- 1` for an argument; Kubernetes would refuse it, but
                // its meaning is unambiguous.
                Value::Number(n) => Ok(n.to_string()),
                _ => Err(FieldError::invalid(
                    format!("{path}.{key}[{i}]"),
                    "must be a string",
                )),
            })
            .collect(),
        Some(_) => Err(FieldError::invalid(
            format!("{path}.{key}"),
            "must be a list of strings",
        )),
    }
}
