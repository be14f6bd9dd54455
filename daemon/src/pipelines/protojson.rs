//! KFP's numbers as proto3 JSON writes them, read with bounds. proto3 JSON writes
//! `int64` as a decimal string (`"interval_second": "60"`), `int32` as a number, and a
//! `google.protobuf.Duration` as seconds with an `s` suffix (`"3600s"`, `"1.5s"`);
//! every one Hearth reads from a user is bounded here, so no later arithmetic on it can
//! overflow (see `model::strict::MAX_SECONDS`).

use std::time::Duration;

use serde_json::Value;

use crate::model::strict::{self, FieldError, MAX_SECONDS};

fn full(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

/// An optional integer at `path.key` within `min..=max`, written as a JSON number or
/// (proto3 JSON's `int64` form) as a decimal string. Anything else is
/// `FieldError::Invalid` naming the field and the range.
pub fn int_in(value: &Value, key: &str, path: &str, min: u64, max: u64) -> Result<Option<u64>, FieldError> {
    match value.get(key) {
        // Digits only, as proto3 JSON writes them (Rust's parse would also take "+5").
        Some(Value::String(s)) => match s.bytes().all(|b| b.is_ascii_digit()).then(|| s.parse::<u64>()) {
            Some(Ok(n)) if (min..=max).contains(&n) => Ok(Some(n)),
            _ => Err(FieldError::invalid(
                full(path, key),
                format!("must be an integer from {min} to {max}, not {s:?}"),
            )),
        },
        _ => strict::opt_u64_in(value, key, path, min, max),
    }
}

/// A `google.protobuf.Duration` in proto3 JSON (`"30s"`, `"1.5s"`) from 0 to
/// `MAX_SECONDS`; `None` when the text is not one.
pub fn parse_duration(text: &str) -> Option<Duration> {
    let secs: f64 = text.trim().strip_suffix('s')?.trim().parse().ok()?;
    if !(0.0..=MAX_SECONDS as f64).contains(&secs) {
        return None;
    }
    Duration::try_from_secs_f64(secs).ok()
}

/// An optional duration at `path.key` (see `parse_duration`), or `FieldError::Invalid`
/// naming the field and the form and range allowed.
pub fn duration_in(value: &Value, key: &str, path: &str) -> Result<Option<Duration>, FieldError> {
    let bad = |v: &Value| {
        FieldError::invalid(
            full(path, key),
            format!("must be a duration such as \"30s\", from 0s to {MAX_SECONDS}s, not {v}"),
        )
    };
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::String(s)) => parse_duration(s).map(Some).ok_or_else(|| bad(v)),
        Some(v) => Err(bad(v)),
    }
}

/// An optional finite number at `path.key` within `min..=max`.
pub fn number_in(
    value: &Value,
    key: &str,
    path: &str,
    min: f64,
    max: f64,
) -> Result<Option<f64>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(v) => match v.as_f64() {
            Some(f) if f.is_finite() && (min..=max).contains(&f) => Ok(Some(f)),
            _ => Err(FieldError::invalid(
                full(path, key),
                format!("must be a number from {min} to {max}, not {v}"),
            )),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn integers_as_numbers_or_strings_are_bounded() {
        let doc = json!({"a": "60", "b": 60, "c": "9000000000000000000", "d": "-1", "e": "x", "f": 1e300});
        assert_eq!(int_in(&doc, "a", "t", 1, MAX_SECONDS), Ok(Some(60)));
        assert_eq!(int_in(&doc, "b", "t", 1, MAX_SECONDS), Ok(Some(60)));
        for key in ["c", "d", "e", "f"] {
            let e = int_in(&doc, key, "t", 1, MAX_SECONDS).unwrap_err().to_string();
            assert!(
                e.starts_with(&format!("t.{key}: must be an integer from 1 to 2147483647")),
                "{e}"
            );
        }
    }

    #[test]
    fn durations_are_bounded_and_never_panic() {
        assert_eq!(parse_duration("0s"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        for bad in [
            "1e300s",
            "NaN s",
            "NaNs",
            "-1s",
            "infs",
            "3600",
            "",
            "s",
            "9223372036854775807s",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
        let doc = json!({"d": "1e300s"});
        let e = duration_in(&doc, "d", "retryPolicy").unwrap_err().to_string();
        assert!(e.starts_with("retryPolicy.d: must be a duration"), "{e}");
    }
}
