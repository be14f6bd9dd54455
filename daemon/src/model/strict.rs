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

/// The longest time span, in seconds, that any duration, deadline or TTL field may
/// hold: 2^31-1 s (about 68 years), the range Kubernetes gives its `int32` second
/// fields. Bounding every user-given span here keeps the arithmetic done on it
/// (`Instant + Duration`, `DateTime + TimeDelta`) far from overflow.
pub const MAX_SECONDS: u64 = i32::MAX as u64;

/// An optional integer at `path.key` within `min..=max`; anything else (a negative,
/// a fraction, a number past the range, NaN written as a string, a string) is
/// `FieldError::Invalid` naming the field and the range allowed.
pub fn opt_u64_in(
    value: &Value,
    key: &str,
    path: &str,
    min: u64,
    max: u64,
) -> Result<Option<u64>, FieldError> {
    let field = || {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_u64() {
            Some(n) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(FieldError::invalid(
                field(),
                format!("must be an integer from {min} to {max}, not {v}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bounded_integers_name_the_field_and_the_range() {
        let doc =
            json!({"a": 5, "b": -1, "c": 1e300, "d": "NaN", "e": 9_223_372_036_854_775_807u64, "f": 1.5});
        assert_eq!(opt_u64_in(&doc, "a", "spec", 0, 10), Ok(Some(5)));
        assert_eq!(opt_u64_in(&doc, "missing", "spec", 0, 10), Ok(None));
        for key in ["b", "c", "d", "e", "f"] {
            let err = opt_u64_in(&doc, key, "spec", 0, MAX_SECONDS).unwrap_err();
            let text = err.to_string();
            assert!(
                text.starts_with(&format!("spec.{key}: must be an integer from 0 to 2147483647")),
                "{text}"
            );
        }
    }
}
