//! Metrics collection as Katib's collectors do it: `StdOut` matches the primary
//! container's output line by line with the `metricsFormat` regular expressions
//! (Katib's default: `name=value`), `File` reads a file the trial wrote (`TEXT`: the
//! same matching; `JSON`: one object per line, its keys the metric names). Values are
//! kept in order, and each metric's observation is Katib's `{name, min, max, latest}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::spec::FileFormat;

/// The most bytes of output or metrics file read per trial (the end is kept: the
/// latest values are there).
pub const MAX_READ_BYTES: usize = 16 << 20;
/// The most values kept per metric.
pub const MAX_VALUES: usize = 100_000;
/// Katib's value for a metric that was never reported.
pub const UNAVAILABLE: &str = "unavailable";

/// The values reported per metric name, in order.
pub type Series = BTreeMap<String, Vec<f64>>;

fn push(series: &mut Series, wanted: &[String], name: &str, value: f64) {
    if !value.is_finite() || !wanted.iter().any(|w| w == name) {
        return;
    }
    let values = series.entry(name.to_string()).or_default();
    if values.len() < MAX_VALUES {
        values.push(value);
    }
}

/// Compiles a `metricsFormat` as Go's RE2 (Katib's) reads it: a `{` that opens no
/// repetition (`{2}`, `{1,3}`) is a literal there, as in Katib's own example
/// `{metricName: ([\w|-]+), metricValue: ...}`; Rust's `regex` wants it escaped.
pub fn go_regex(pattern: &str) -> Result<regex::Regex, regex::Error> {
    let mut out = String::with_capacity(pattern.len() + 8);
    let chars: Vec<char> = pattern.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        match chars[i] {
            '\\' => {
                out.push('\\');
                if let Some(next) = chars.get(i + 1) {
                    out.push(*next);
                }
                i += 2;
                continue;
            }
            '{' => {
                let rest: String = chars[i..].iter().take(24).collect();
                let repetition = rest.find('}').is_some_and(|end| {
                    let inner = &rest[1..end];
                    let (lo, hi) = inner.split_once(',').unwrap_or((inner, "0"));
                    !lo.is_empty()
                        && lo.chars().all(|c| c.is_ascii_digit())
                        && hi.chars().all(|c| c.is_ascii_digit())
                });
                if repetition {
                    while i < chars.len() && chars[i] != '}' {
                        out.push(chars[i]);
                        i += 1;
                    }
                    out.push('}');
                } else {
                    out.push_str("\\{");
                }
            }
            '}' => out.push_str("\\}"),
            c => out.push(c),
        }
        i += 1;
    }
    regex::Regex::new(&out)
}

/// Matches text (output or a TEXT file) with the filters; `formats` were checked
/// when the experiment was validated, so one that does not compile matches nothing.
pub fn from_text(text: &str, formats: &[String], wanted: &[String]) -> Series {
    let regexes: Vec<regex::Regex> = formats.iter().filter_map(|f| go_regex(f).ok()).collect();
    let mut series = Series::new();
    for line in text.lines() {
        for regex in &regexes {
            for captures in regex.captures_iter(line) {
                let (Some(name), Some(value)) = (captures.get(1), captures.get(2)) else {
                    continue;
                };
                if let Ok(v) = value.as_str().trim().parse::<f64>() {
                    push(&mut series, wanted, name.as_str().trim(), v);
                }
            }
        }
    }
    series
}

/// A JSON-lines metrics file: each line an object whose keys are metric names
/// (values numbers or numeric strings; Katib's `timestamp` key is not a metric).
pub fn from_json_lines(text: &str, wanted: &[String]) -> Series {
    let mut series = Series::new();
    for line in text.lines() {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        for (name, value) in object {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            if let Some(v) = number {
                push(&mut series, wanted, &name, v);
            }
        }
    }
    series
}

pub fn from_file(text: &str, format: FileFormat, formats: &[String], wanted: &[String]) -> Series {
    match format {
        FileFormat::Text => from_text(text, formats, wanted),
        FileFormat::Json => from_json_lines(text, wanted),
    }
}

/// Katib's `Observation.metrics`: `{name, min, max, latest}` per wanted metric, values
/// as strings, `unavailable` for a metric never reported.
pub fn observation(series: &Series, wanted: &[String]) -> Value {
    let metrics: Vec<Value> = wanted
        .iter()
        .map(|name| match series.get(name).filter(|v| !v.is_empty()) {
            Some(values) => {
                let min = values.iter().copied().fold(f64::INFINITY, f64::min);
                let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                let latest = values.last().copied().unwrap_or(f64::NAN);
                json!({"name": name, "min": min.to_string(), "max": max.to_string(), "latest": latest.to_string()})
            }
            None => json!({"name": name, "min": UNAVAILABLE, "max": UNAVAILABLE, "latest": UNAVAILABLE}),
        })
        .collect();
    json!({"metrics": metrics})
}

/// The tail of `bytes` within [`MAX_READ_BYTES`], as text.
pub fn tail_text(bytes: &[u8]) -> String {
    let start = bytes.len().saturating_sub(MAX_READ_BYTES);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tuning::spec::DEFAULT_METRICS_FORMAT;

    #[test]
    fn katibs_default_filter_reads_name_value_pairs() {
        let wanted = vec!["accuracy".to_string(), "loss".to_string()];
        let text = "epoch 1\naccuracy=0.5 loss = 1.2e-1\n2024-01-01T00:00:00Z accuracy=0.75\nnoise=3\n";
        let series = from_text(text, &[DEFAULT_METRICS_FORMAT.into()], &wanted);
        assert_eq!(series["accuracy"], [0.5, 0.75]);
        assert_eq!(series["loss"], [0.12]);
        assert!(!series.contains_key("noise"));
        let observed = observation(&series, &wanted);
        assert_eq!(
            observed["metrics"][0],
            json!({"name": "accuracy", "min": "0.5", "max": "0.75", "latest": "0.75"})
        );
        let none = observation(&Series::new(), &wanted);
        assert_eq!(none["metrics"][1]["latest"], "unavailable");
    }

    #[test]
    fn braces_that_open_no_repetition_are_literal_as_in_go() {
        let format = r"{metricName: ([\w|-]+), metricValue: ((-?\d+)(\.\d+)?)}".to_string();
        let wanted = vec!["loss".to_string()];
        let series = from_text("{metricName: loss, metricValue: 0.25}", &[format], &wanted);
        assert_eq!(series["loss"], [0.25]);
        assert!(go_regex(r"a{2}b{1,3}").unwrap().is_match("aab"));
    }

    #[test]
    fn json_lines_are_read_by_key() {
        let wanted = vec!["accuracy".to_string()];
        let series = from_json_lines(
            "{\"accuracy\": \"0.9\", \"timestamp\": \"x\"}\nnot json\n{\"accuracy\": 0.8}",
            &wanted,
        );
        assert_eq!(series["accuracy"], [0.9, 0.8]);
    }
}
