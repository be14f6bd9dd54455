//! Metrics collection as Katib's collectors do it: `StdOut` matches the primary
//! container's output line by line with the `metricsFormat` regular expressions
//! (Katib's default: `name=value`), `File` reads a file the trial wrote (`TEXT`: the
//! same matching; `JSON`: one object per line, its keys the metric names). Values are
//! kept in order, and each metric's observation is Katib's `{name, min, max, latest}`.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::spec::FileFormat;
pub use crate::store::observation_logs::MetricLog;

/// The most bytes of output or metrics file read per trial (the end is kept: the
/// latest values are there).
pub const MAX_READ_BYTES: usize = 16 << 20;
/// The most values kept per metric.
pub const MAX_VALUES: usize = 100_000;
/// The most values a trial's observation log keeps (`observation_logs`). Past it,
/// StdOut and File values are no longer logged (the trial's observation, its `min`,
/// `max` and `latest`, still counts them, up to [`MAX_VALUES`] per metric), and a
/// `Push` report is refused (`RESOURCE_EXHAUSTED`).
pub const LOG_BOUND: u64 = 10_000;
/// Katib's value for a metric that was never reported.
pub const UNAVAILABLE: &str = "unavailable";

/// The values reported per metric name, in order.
pub type Series = BTreeMap<String, Vec<f64>>;

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

/// An RFC 3339 timestamp at the start of a line (Katib's collectors take it as the
/// value's time), normalised to UTC with milliseconds.
fn leading_timestamp(line: &str) -> Option<String> {
    let first = line.split_whitespace().next()?;
    chrono::DateTime::parse_from_rfc3339(first).ok().map(|t| {
        t.with_timezone(&chrono::Utc)
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
    })
}

fn wanted_value(wanted: &[String], name: &str, value: f64) -> bool {
    value.is_finite() && wanted.iter().any(|w| w == name)
}

/// Matches text (output or a TEXT file) with the filters, each value with its line's
/// leading RFC 3339 timestamp or `now`; `formats` were checked when the experiment was
/// validated, so one that does not compile matches nothing. At most [`MAX_VALUES`]
/// per metric.
pub fn logs_from_text(text: &str, formats: &[String], wanted: &[String], now: &str) -> Vec<MetricLog> {
    let regexes: Vec<regex::Regex> = formats.iter().filter_map(|f| go_regex(f).ok()).collect();
    let mut logs = Vec::new();
    let mut per_metric = BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let stamp = leading_timestamp(line);
        for regex in &regexes {
            for captures in regex.captures_iter(line) {
                let (Some(name), Some(value)) = (captures.get(1), captures.get(2)) else {
                    continue;
                };
                let name = name.as_str().trim();
                let Ok(v) = value.as_str().trim().parse::<f64>() else {
                    continue;
                };
                let seen = per_metric.entry(name.to_string()).or_default();
                if !wanted_value(wanted, name, v) || *seen >= MAX_VALUES {
                    continue;
                }
                *seen += 1;
                logs.push(MetricLog {
                    time_stamp: stamp.clone().unwrap_or_else(|| now.to_string()),
                    name: name.to_string(),
                    value: v.to_string(),
                });
            }
        }
    }
    logs
}

/// A JSON-lines metrics file: each line an object whose keys are metric names
/// (values numbers or numeric strings); Katib's `timestamp` key (RFC 3339) is the
/// values' time, not a metric.
pub fn logs_from_json_lines(text: &str, wanted: &[String], now: &str) -> Vec<MetricLog> {
    let mut logs = Vec::new();
    let mut per_metric = BTreeMap::<String, usize>::new();
    for line in text.lines() {
        let Ok(Value::Object(object)) = serde_json::from_str::<Value>(line) else {
            continue;
        };
        let stamp = object
            .get("timestamp")
            .and_then(Value::as_str)
            .and_then(leading_timestamp)
            .unwrap_or_else(|| now.to_string());
        for (name, value) in object {
            let number = match value {
                Value::Number(n) => n.as_f64(),
                Value::String(s) => s.trim().parse().ok(),
                _ => None,
            };
            let Some(v) = number else { continue };
            let seen = per_metric.entry(name.clone()).or_default();
            if !wanted_value(wanted, &name, v) || *seen >= MAX_VALUES {
                continue;
            }
            *seen += 1;
            logs.push(MetricLog {
                time_stamp: stamp.clone(),
                name,
                value: v.to_string(),
            });
        }
    }
    logs
}

pub fn logs_from_file(
    text: &str,
    format: FileFormat,
    formats: &[String],
    wanted: &[String],
    now: &str,
) -> Vec<MetricLog> {
    match format {
        FileFormat::Text => logs_from_text(text, formats, wanted, now),
        FileFormat::Json => logs_from_json_lines(text, wanted, now),
    }
}

/// The values per metric, in order, of a log (values that do not parse are left out).
pub fn series(logs: &[MetricLog]) -> Series {
    let mut series = Series::new();
    for log in logs {
        if let Ok(v) = log.value.trim().parse::<f64>() {
            if v.is_finite() {
                series.entry(log.name.clone()).or_default().push(v);
            }
        }
    }
    series
}

/// [`logs_from_text`]'s values per metric.
#[cfg(test)]
pub fn from_text(text: &str, formats: &[String], wanted: &[String]) -> Series {
    series(&logs_from_text(text, formats, wanted, ""))
}

/// [`logs_from_json_lines`]'s values per metric.
#[cfg(test)]
pub fn from_json_lines(text: &str, wanted: &[String]) -> Series {
    series(&logs_from_json_lines(text, wanted, ""))
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
