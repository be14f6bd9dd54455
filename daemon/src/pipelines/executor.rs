//! The KFP v2 executor contract, as `kfp.local`'s SubprocessRunner implements it: the
//! executor input JSON (`{{$}}`), the placeholders of a container's command and args,
//! and reading outputs back from output files and `executor_output.json`. Artifact URIs
//! are local paths under the data dir, so a component's `artifact.path == artifact.uri`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ir::{ComponentSpec, TypeSchema};

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Artifact {
    pub name: String,
    pub uri: String,
    #[serde(default)]
    pub metadata: Map<String, Value>,
    #[serde(rename = "type", default)]
    pub artifact_type: TypeSchema,
}

/// Parameter values and artifacts going into or coming out of a task.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Values {
    #[serde(default)]
    pub parameters: Map<String, Value>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, Vec<Artifact>>,
}

/// Makes a parameter value match its declared type: the SDK sends integer defaults as
/// floats (`3.0` for NUMBER_INTEGER) and outputs come back from files as text.
pub fn coerce(value: Value, parameter_type: &str) -> Result<Value, String> {
    Ok(match (parameter_type, value) {
        ("NUMBER_INTEGER", Value::Number(n)) => match n.as_i64() {
            Some(i) => Value::from(i),
            None => match n.as_f64() {
                Some(f) if f.fract() == 0.0 => Value::from(f as i64),
                _ => return Err(format!("{n} is not an integer")),
            },
        },
        ("NUMBER_INTEGER", Value::String(s)) => Value::from(
            s.trim()
                .parse::<i64>()
                .map_err(|_| format!("{s:?} is not an integer"))?,
        ),
        ("NUMBER_DOUBLE", Value::String(s)) => Value::from(
            s.trim()
                .parse::<f64>()
                .map_err(|_| format!("{s:?} is not a number"))?,
        ),
        ("BOOLEAN", Value::String(s)) => match s.trim() {
            "true" | "True" => Value::Bool(true),
            "false" | "False" => Value::Bool(false),
            other => return Err(format!("{other:?} is not a boolean")),
        },
        ("LIST" | "STRUCT", Value::String(s)) => {
            serde_json::from_str(&s).map_err(|e| format!("{s:?} is not JSON: {e}"))?
        }
        ("STRING", Value::String(s)) => Value::String(s),
        ("STRING", other) => Value::String(other.to_string()),
        (_, v) => v,
    })
}

/// Where one attempt of a container task keeps its files.
pub struct StepPaths {
    pub dir: PathBuf,
    pub artifact_root: PathBuf,
}

impl StepPaths {
    pub fn executor_output(&self) -> PathBuf {
        self.dir.join("executor_output.json")
    }
    pub fn parameter_file(&self, name: &str) -> PathBuf {
        self.dir.join("outputs").join(sanitize(name))
    }
}

/// A path segment safe for the file system: no separators, no dot-dot.
pub fn sanitize(s: &str) -> String {
    let out: String = s
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    if out.is_empty() || out.chars().all(|c| c == '.') {
        format!("_{out}")
    } else {
        out
    }
}

/// The output artifacts a task will write, with their local URIs.
pub fn output_artifacts(comp: &ComponentSpec, paths: &StepPaths) -> BTreeMap<String, Vec<Artifact>> {
    comp.output_definitions
        .artifacts
        .iter()
        .map(|(name, def)| {
            let uri = paths.artifact_root.join(sanitize(name));
            (
                name.clone(),
                vec![Artifact {
                    name: name.clone(),
                    uri: uri.display().to_string(),
                    metadata: Map::new(),
                    artifact_type: def.artifact_type.clone(),
                }],
            )
        })
        .collect()
}

/// A `RuntimeArtifact` in proto3 JSON: empty fields left out, as protojson writes them.
fn artifact_json(a: &Artifact) -> Value {
    let mut out = Map::new();
    if !a.name.is_empty() {
        out.insert("name".into(), Value::String(a.name.clone()));
    }
    if !a.artifact_type.schema_title.is_empty() {
        let mut t = Map::new();
        t.insert(
            "schemaTitle".into(),
            Value::String(a.artifact_type.schema_title.clone()),
        );
        if let Some(v) = a.artifact_type.schema_version.as_ref().filter(|v| !v.is_empty()) {
            t.insert("schemaVersion".into(), Value::String(v.clone()));
        }
        out.insert("type".into(), Value::Object(t));
    }
    if !a.uri.is_empty() {
        out.insert("uri".into(), Value::String(a.uri.clone()));
    }
    if !a.metadata.is_empty() {
        out.insert("metadata".into(), Value::Object(a.metadata.clone()));
    }
    Value::Object(out)
}

/// `{key: value}` without the keys whose values are empty maps: proto3 JSON leaves an
/// empty map field out.
fn without_empty(fields: Vec<(&str, Map<String, Value>)>) -> Map<String, Value> {
    fields
        .into_iter()
        .filter(|(_, m)| !m.is_empty())
        .map(|(k, m)| (k.to_string(), Value::Object(m)))
        .collect()
}

/// The executor input (`{{$}}`) in proto3 JSON, as KFP's driver writes it with Go's
/// `protojson.Marshal` (backend/src/v2/driver) and `kfp.dsl.executor_main` reads it:
/// camelCase names, and default or empty fields (an empty `parameterValues`, an
/// artifact's empty `metadata`) left out. `inputs` and `outputs` are always there.
pub fn executor_input(
    comp: &ComponentSpec,
    inputs: &Values,
    outputs: &BTreeMap<String, Vec<Artifact>>,
    paths: &StepPaths,
) -> Value {
    let in_artifacts: Map<String, Value> = inputs
        .artifacts
        .iter()
        .map(|(k, list)| {
            (
                k.clone(),
                serde_json::json!({"artifacts": list.iter().map(artifact_json).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let out_params: Map<String, Value> = comp
        .output_definitions
        .parameters
        .keys()
        .map(|k| {
            (
                k.clone(),
                serde_json::json!({"outputFile": paths.parameter_file(k).display().to_string()}),
            )
        })
        .collect();
    let out_artifacts: Map<String, Value> = outputs
        .iter()
        .map(|(k, list)| {
            (
                k.clone(),
                serde_json::json!({"artifacts": list.iter().map(artifact_json).collect::<Vec<_>>()}),
            )
        })
        .collect();
    let inputs = without_empty(vec![
        ("parameterValues", inputs.parameters.clone()),
        ("artifacts", in_artifacts),
    ]);
    let mut outputs = without_empty(vec![("parameters", out_params), ("artifacts", out_artifacts)]);
    outputs.insert(
        "outputFile".into(),
        Value::String(paths.executor_output().display().to_string()),
    );
    serde_json::json!({"inputs": inputs, "outputs": outputs})
}

/// What a placeholder may refer to besides the executor input.
pub struct PlaceholderContext<'a> {
    pub executor_input: &'a Value,
    pub run_id: &'a str,
    pub run_name: &'a str,
    pub task_name: &'a str,
    pub task_id: &'a str,
}

fn param_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

fn quoted_key<'a>(rest: &'a str, prefix: &str) -> Option<(&'a str, &'a str)> {
    let r = rest.strip_prefix(prefix)?;
    let q = r.chars().next()?;
    if q != '\'' && q != '"' {
        return None;
    }
    let end = r[1..].find(q)? + 1;
    let key = &r[1..end];
    let tail = r[end + 1..].strip_prefix(']')?;
    Some((key, tail))
}

/// Resolves one `{{$...}}` expression (without the braces); `None` when the input is
/// absent (an optional input), which `IfPresent` tests and plain use turns into "".
fn resolve_one(expr: &str, ctx: &PlaceholderContext<'_>) -> Result<Option<String>, String> {
    let ei = ctx.executor_input;
    match expr {
        "$" => return Ok(Some(ei.to_string())),
        "$.outputs.output_file" | "$.outputMetadataUri" => {
            return Ok(ei["outputs"]["outputFile"].as_str().map(str::to_string))
        }
        "$.pipeline_job_name" => return Ok(Some(ctx.run_name.to_string())),
        "$.pipeline_job_uuid" | "$.pipeline_job_resource_name" => return Ok(Some(ctx.run_id.to_string())),
        "$.pipeline_task_name" => return Ok(Some(ctx.task_name.to_string())),
        "$.pipeline_task_uuid" => return Ok(Some(ctx.task_id.to_string())),
        "$.pipeline_job_create_time_utc" | "$.pipeline_job_schedule_time_utc" => {
            return Ok(Some(chrono::Utc::now().to_rfc3339()))
        }
        _ => {}
    }
    if let Some((key, tail)) = quoted_key(expr, "$.inputs.parameters[") {
        if !tail.is_empty() {
            return Err(format!("unsupported placeholder {{{{{expr}}}}}"));
        }
        return Ok(ei["inputs"]["parameterValues"].get(key).map(param_text));
    }
    if let Some((key, tail)) = quoted_key(expr, "$.outputs.parameters[") {
        return match tail {
            ".output_file" => Ok(ei["outputs"]["parameters"][key]["outputFile"]
                .as_str()
                .map(str::to_string)),
            _ => Err(format!("unsupported placeholder {{{{{expr}}}}}")),
        };
    }
    for (prefix, side) in [
        ("$.inputs.artifacts[", "inputs"),
        ("$.outputs.artifacts[", "outputs"),
    ] {
        if let Some((key, tail)) = quoted_key(expr, prefix) {
            let first = &ei[side]["artifacts"][key]["artifacts"][0];
            if first.is_null() {
                return Ok(None);
            }
            return match tail {
                ".path" | ".uri" => Ok(first["uri"].as_str().map(str::to_string)),
                // Left out of the executor input when empty.
                ".metadata" => Ok(Some(match &first["metadata"] {
                    Value::Null => "{}".to_string(),
                    m => m.to_string(),
                })),
                _ => Err(format!("unsupported placeholder {{{{{expr}}}}}")),
            };
        }
    }
    Err(format!("unsupported placeholder {{{{{expr}}}}}"))
}

/// Substitutes every `{{$...}}` in a string.
fn substitute(s: &str, ctx: &PlaceholderContext<'_>) -> Result<String, String> {
    let mut out = String::new();
    let mut rest = s;
    while let Some(start) = rest.find("{{$") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find("}}")
            .ok_or_else(|| format!("unterminated placeholder in {s:?}"))?;
        out.push_str(&resolve_one(&after[..end], ctx)?.unwrap_or_default());
        rest = &after[end + 2..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Whether a structured placeholder's input is present (`IfPresent.InputName`).
fn present(name: &str, ctx: &PlaceholderContext<'_>) -> bool {
    let ei = ctx.executor_input;
    ei["inputs"]["parameterValues"]
        .get(name)
        .is_some_and(|v| !v.is_null())
        || ei["inputs"]["artifacts"].get(name).is_some()
}

fn structured(v: &Value, ctx: &PlaceholderContext<'_>, out: &mut Vec<String>) -> Result<(), String> {
    match v {
        Value::String(s) => out.push(substitute(s, ctx)?),
        Value::Array(items) => {
            for item in items {
                structured(item, ctx, out)?;
            }
        }
        Value::Object(m) => {
            if let Some(parts) = m.get("Concat") {
                let mut pieces = Vec::new();
                structured(parts, ctx, &mut pieces)?;
                out.push(pieces.concat());
            } else if let Some(ifp) = m.get("IfPresent") {
                let name = ifp["InputName"].as_str().ok_or("IfPresent without InputName")?;
                let branch = if present(name, ctx) {
                    &ifp["Then"]
                } else {
                    &ifp["Else"]
                };
                if !branch.is_null() {
                    structured(branch, ctx, out)?;
                }
            } else {
                return Err(format!("unsupported structured placeholder {v}"));
            }
        }
        other => out.push(other.to_string()),
    }
    Ok(())
}

/// Resolves a command or args list. A JSON-encoded `{"Concat": ...}` or
/// `{"IfPresent": ...}` argument (how the compiler writes them) expands to 0..n args.
pub fn resolve_args(args: &[String], ctx: &PlaceholderContext<'_>) -> Result<Vec<String>, String> {
    let mut out = Vec::new();
    for a in args {
        let t = a.trim_start();
        if t.starts_with("{\"Concat\"") || t.starts_with("{\"IfPresent\"") {
            let v: Value =
                serde_json::from_str(t).map_err(|e| format!("bad structured placeholder {a:?}: {e}"))?;
            structured(&v, ctx, &mut out)?;
        } else {
            out.push(substitute(a, ctx)?);
        }
    }
    Ok(out)
}

/// Reads a finished step's outputs: output parameter files, then `executor_output.json`
/// (which wins, as in KFP), with artifact metadata merged in.
pub fn collect_outputs(
    comp: &ComponentSpec,
    planned: &BTreeMap<String, Vec<Artifact>>,
    paths: &StepPaths,
) -> Result<Values, String> {
    let mut out = Values {
        parameters: Map::new(),
        artifacts: planned.clone(),
    };
    let exec_out: Option<Value> = match std::fs::read(paths.executor_output()) {
        Ok(bytes) => Some(serde_json::from_slice(&bytes).map_err(|e| format!("executor_output.json: {e}"))?),
        Err(_) => None,
    };
    for (name, def) in &comp.output_definitions.parameters {
        let from_exec = exec_out
            .as_ref()
            .and_then(|e| e["parameterValues"].get(name))
            .cloned();
        let value = match from_exec {
            Some(v) => v,
            None => match std::fs::read_to_string(paths.parameter_file(name)) {
                Ok(text) => Value::String(text),
                Err(_) => {
                    return Err(format!("the step did not write output parameter {name:?}"));
                }
            },
        };
        let value =
            coerce(value, &def.parameter_type).map_err(|e| format!("output parameter {name}: {e}"))?;
        out.parameters.insert(name.clone(), value);
    }
    if let Some(arts) = exec_out.as_ref().and_then(|e| e["artifacts"].as_object()) {
        for (name, list) in arts {
            let Some(mine) = out.artifacts.get_mut(name) else {
                continue;
            };
            let items = list["artifacts"].as_array().cloned().unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                if let Some(slot) = mine.get_mut(i) {
                    if let Some(m) = item["metadata"].as_object() {
                        slot.metadata.extend(m.clone());
                    }
                    if let Some(uri) = item["uri"].as_str() {
                        slot.uri = uri.to_string();
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Where a path lies, made absolute without touching the file system.
pub fn under(root: &Path, candidate: &Path) -> bool {
    let mut parts = Vec::new();
    for c in candidate.components() {
        match c {
            std::path::Component::ParentDir => {
                if parts.pop().is_none() {
                    return false;
                }
            }
            std::path::Component::CurDir => {}
            other => parts.push(other),
        }
    }
    let normal: PathBuf = parts.iter().collect();
    normal.starts_with(root)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn placeholders_resolve_like_kfp_local() {
        let ei = json!({
            "inputs": {"parameterValues": {"a": 3, "s": "hi"}, "artifacts": {"d": {"artifacts": [{"uri": "/x/d"}]}}},
            "outputs": {"parameters": {"Output": {"outputFile": "/o/Output"}}, "artifacts": {}, "outputFile": "/o/eo.json"}
        });
        let ctx = PlaceholderContext {
            executor_input: &ei,
            run_id: "r",
            run_name: "n",
            task_name: "t",
            task_id: "i",
        };
        let args = vec![
            "{{$.inputs.parameters['a']}}".to_string(),
            "x={{$.inputs.parameters['s']}}".to_string(),
            "{{$.inputs.artifacts['d'].path}}".to_string(),
            "{{$.outputs.parameters['Output'].output_file}}".to_string(),
            r#"{"IfPresent": {"InputName": "missing", "Then": ["--m"]}}"#.to_string(),
            r#"{"Concat": ["a-", "{{$.inputs.parameters['s']}}"]}"#.to_string(),
        ];
        assert_eq!(
            resolve_args(&args, &ctx).unwrap(),
            vec!["3", "x=hi", "/x/d", "/o/Output", "a-hi"]
        );
        assert!(resolve_args(&["{{$.nope}}".to_string()], &ctx).is_err());
    }

    #[test]
    fn coercion_and_paths() {
        assert_eq!(coerce(json!(3.0), "NUMBER_INTEGER").unwrap(), json!(3));
        assert_eq!(coerce(json!("[1,2]"), "LIST").unwrap(), json!([1, 2]));
        assert_eq!(coerce(json!("True"), "BOOLEAN").unwrap(), json!(true));
        assert!(under(Path::new("/a"), Path::new("/a/b/../c")));
        assert!(!under(Path::new("/a"), Path::new("/a/../etc")));
        assert_eq!(sanitize(".."), "_..");
    }
}
