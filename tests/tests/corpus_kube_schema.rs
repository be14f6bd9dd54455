//! The schemas `/openapi/v3` serves, checked against upstream in `../shared/fixtures/`
//! (read in place): every field Hearth's InferenceService schema declares exists in
//! KServe's CRD (`config/crd/full/serving.kserve.io_inferenceservices.yaml`) with the
//! same type; every field of Hearth's Job schema exists in Kubernetes' own Job type
//! (the Kubernetes Python client's models) with the same type; every upstream
//! InferenceService sample, and every batch/v1 Job that
//! Katib's examples embed as a trial template, is either accepted by the server
//! (`dryRun=All`) and valid against Hearth's schema, or refused naming a field.

use std::path::Path;

use hearth_e2e::{spawn_daemon, Daemon};
use serde_json::{json, Value};

fn schema(d: &Daemon, group_version: &str, name: &str) -> Value {
    let doc = d.get(&format!("/openapi/v3/{group_version}"), d.admin());
    assert_eq!(doc.status, 200, "{doc}");
    let schema = doc.body["components"]["schemas"][name].clone();
    assert!(schema.is_object(), "{name} is not served: {doc}");
    schema
}

fn type_of(schema: &Value) -> String {
    if schema["x-kubernetes-int-or-string"] == json!(true) {
        return "int-or-string".into();
    }
    schema["type"].as_str().unwrap_or("").to_string()
}

/// Every property of `ours` exists in `upstream` with the same type, recursively.
fn same_fields(ours: &Value, upstream: &Value, path: &str, checked: &mut usize, errors: &mut Vec<String>) {
    let (a, b) = (type_of(ours), type_of(upstream));
    if !b.is_empty() && a != b {
        errors.push(format!("{path}: Hearth says {a}, upstream {b}"));
        return;
    }
    *checked += 1;
    if let (Some(props), Some(theirs)) = (ours["properties"].as_object(), upstream["properties"].as_object())
    {
        for (name, sub) in props {
            match theirs.get(name) {
                Some(up) => same_fields(sub, up, &format!("{path}.{name}"), checked, errors),
                None => errors.push(format!("{path}.{name}: not an upstream field")),
            }
        }
    }
    if ours["items"].is_object() && upstream["items"].is_object() {
        same_fields(
            &ours["items"],
            &upstream["items"],
            &format!("{path}[]"),
            checked,
            errors,
        );
    }
    if ours["additionalProperties"].is_object() && upstream["additionalProperties"].is_object() {
        same_fields(
            &ours["additionalProperties"],
            &upstream["additionalProperties"],
            &format!("{path}.*"),
            checked,
            errors,
        );
    }
}

/// Structural validation of a document against a served schema (what kubectl's
/// client-side validation checks: unknown fields and types).
fn validate(value: &Value, schema: &Value, path: &str, errors: &mut Vec<String>) {
    if schema["x-kubernetes-preserve-unknown-fields"] == json!(true) {
        return;
    }
    let ok = match type_of(schema).as_str() {
        "int-or-string" => value.is_i64() || value.is_u64() || value.is_string(),
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "boolean" => value.is_boolean(),
        "array" => {
            for (i, item) in value.as_array().into_iter().flatten().enumerate() {
                validate(item, &schema["items"], &format!("{path}[{i}]"), errors);
            }
            value.is_array()
        }
        "object" => {
            for (key, sub) in value.as_object().into_iter().flatten() {
                let p = format!("{path}.{key}");
                if let Some(s) = schema["properties"].get(key) {
                    validate(sub, s, &p, errors);
                } else if schema["additionalProperties"].is_object() {
                    validate(sub, &schema["additionalProperties"], &p, errors);
                } else {
                    errors.push(format!("{p}: unknown field"));
                }
            }
            value.is_object()
        }
        _ => true,
    };
    if !ok {
        errors.push(format!("{path}: not a {}", type_of(schema)));
    }
}

/// Objects of `kind`/`api_version` anywhere inside `value` (trial templates nest Jobs).
fn find_objects(value: &Value, api_version: &str, kind: &str, out: &mut Vec<Value>) {
    match value {
        Value::Object(map) => {
            if map.get("kind") == Some(&json!(kind)) && map.get("apiVersion") == Some(&json!(api_version)) {
                out.push(value.clone());
                return;
            }
            map.values().for_each(|v| find_objects(v, api_version, kind, out));
        }
        Value::Array(items) => items.iter().for_each(|v| find_objects(v, api_version, kind, out)),
        _ => {}
    }
}

fn yaml_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Each upstream object of the kind is created with `dryRun=All`: accepted (then it
/// must also be valid against the served schema) or refused naming a field.
fn samples(
    d: &Daemon,
    dir: &Path,
    api_version: &str,
    kind: &str,
    plural: &str,
    schema: &Value,
) -> (usize, usize) {
    let mut files = Vec::new();
    yaml_files(dir, &mut files);
    files.sort();
    let (mut accepted, mut refused) = (0, 0);
    let mut errors = Vec::new();
    let mut reasons = std::collections::BTreeMap::<String, usize>::new();
    for file in files {
        let Ok(text) = std::fs::read_to_string(&file) else {
            continue;
        };
        if !text.contains(kind) {
            continue;
        }
        let mut objects = Vec::new();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(value) = <Value as serde::Deserialize>::deserialize(doc) else {
                break;
            };
            find_objects(&value, api_version, kind, &mut objects);
        }
        for (i, mut object) in objects.into_iter().enumerate() {
            // Katib names a trial's Job itself; a template has no metadata of its own.
            if !object["metadata"].is_object() {
                object["metadata"] = json!({});
            }
            if let Some(meta) = object["metadata"].as_object_mut() {
                meta.remove("namespace");
                meta.insert("name".into(), json!(format!("sample-{i}")));
            }
            let path = format!("/apis/{api_version}/namespaces/corpus/{plural}?dryRun=All");
            let reply = d.post_json(&path, d.admin(), &object);
            let at = file.display();
            match reply.status {
                200 | 201 => {
                    accepted += 1;
                    let mut found = Vec::new();
                    validate(&object, schema, "", &mut found);
                    errors.extend(found.into_iter().map(|e| format!("{at}: accepted but {e}")));
                }
                400 | 422 => {
                    refused += 1;
                    let field = reply.body["details"]["causes"][0]["field"].as_str().unwrap_or("");
                    *reasons.entry(field.to_string()).or_insert(0) += 1;
                    if field.is_empty() {
                        errors.push(format!("{at}: refused without naming a field: {reply}"));
                    }
                }
                _ => errors.push(format!("{at}: {reply}")),
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    eprintln!("{kind}: refused fields {reasons:?}");
    (accepted, refused)
}

#[test]
fn served_schemas_match_upstream_and_every_upstream_sample_validates_or_is_refused_by_name() {
    let fixtures = hearth_e2e::fixtures_dir();
    let d = spawn_daemon();

    let isvc = schema(
        &d,
        "apis/serving.kserve.io/v1beta1",
        "io.kserve.serving.v1beta1.InferenceService",
    );
    let crd_path = fixtures.join("kserve/upstream/config/crd/full/serving.kserve.io_inferenceservices.yaml");
    let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&crd_path).unwrap()).unwrap();
    let upstream = crd["spec"]["versions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|v| v["name"] == "v1beta1")
        .map(|v| v["schema"]["openAPIV3Schema"].clone())
        .expect("the CRD has v1beta1");
    let (mut checked, mut errors) = (0, Vec::new());
    same_fields(
        &isvc["properties"]["spec"],
        &upstream["properties"]["spec"],
        "spec",
        &mut checked,
        &mut errors,
    );
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(checked > 100, "only {checked} fields compared");

    let (accepted, refused) = samples(
        &d,
        &fixtures.join("kserve"),
        "serving.kserve.io/v1beta1",
        "InferenceService",
        "inferenceservices",
        &isvc,
    );
    eprintln!("InferenceService samples: {accepted} accepted, {refused} refused by name");
    assert!(accepted >= 15, "{accepted} accepted");

    let job = schema(&d, "apis/batch/v1", "io.k8s.api.batch.v1.Job");
    let (accepted, refused) = samples(&d, &fixtures.join("katib"), "batch/v1", "Job", "jobs", &job);
    eprintln!("Job trial templates: {accepted} accepted, {refused} refused by name");
    assert!(accepted > 5, "{accepted} accepted");
}

/// The schema of `class` (a model of the Kubernetes Python client, generated from
/// Kubernetes' own OpenAPI) in OpenAPI form: names from `attribute_map`, types from
/// `openapi_types`.
const CLIENT_SCHEMA: &str = r#"
import json, re, sys
import kubernetes.client as k

def schema(t, depth=0):
    if depth > 12:
        return {}
    m = re.fullmatch(r"[lL]ist\[(.*)\]", t)
    if m:
        return {"type": "array", "items": schema(m.group(1), depth + 1)}
    m = re.fullmatch(r"dict\(str, (.*)\)", t) or re.fullmatch(r"Dict\[str, (.*)\]", t)
    if m:
        return {"type": "object", "additionalProperties": schema(m.group(1), depth + 1)}
    simple = {"str": "string", "int": "integer", "bool": "boolean", "float": "number",
              "datetime": "string", "date": "string", "object": "object"}
    if t in simple:
        return {"type": simple[t]}
    cls = getattr(k, t)
    return {"type": "object", "properties": {
        cls.attribute_map[a]: schema(at, depth + 1) for a, at in cls.openapi_types.items()}}

print(json.dumps(schema(sys.argv[1])))
"#;

/// Kubernetes' own Job type (through the Kubernetes Python client 37.x that scripts/test
/// installs in the tools venv `.venv`; `.venv-kserve` holds 30.1.0 for kserve's sake,
/// which predates `successPolicy`): every field Hearth's Job schema declares exists there
/// with the same type.
#[test]
fn the_job_schema_matches_kubernetes_own_job_type() {
    let fixtures = hearth_e2e::fixtures_dir();
    assert!(fixtures.is_dir());
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    if !python.exists() {
        assert!(std::env::var_os("CI").is_none(), "scripts/test builds .venv");
        eprintln!("skipped: no .venv (scripts/test builds it)");
        return;
    }
    let out = std::process::Command::new(&python)
        .args(["-c", CLIENT_SCHEMA, "V1Job"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let mut upstream: Value = serde_json::from_slice(&out.stdout).unwrap();
    // Kubernetes types `resource.Quantity` as a string in its own OpenAPI; Hearth, as
    // CRDs do, writes the int-or-string that YAML documents actually carry.
    mark_quantities(&mut upstream);
    let d = spawn_daemon();
    let job = schema(&d, "apis/batch/v1", "io.k8s.api.batch.v1.Job");
    let (mut checked, mut errors) = (0, Vec::new());
    same_fields(&job, &upstream, "", &mut checked, &mut errors);
    assert!(errors.is_empty(), "{}", errors.join("\n"));
    assert!(checked > 50, "only {checked} fields compared");
}

fn mark_quantities(schema: &mut Value) {
    if let Some(props) = schema["properties"].as_object_mut() {
        for (name, sub) in props.iter_mut() {
            if name == "limits" || name == "requests" {
                sub["additionalProperties"] = json!({"x-kubernetes-int-or-string": true});
            }
            mark_quantities(sub);
        }
    }
    if schema["items"].is_object() {
        mark_quantities(&mut schema["items"]);
    }
}
