//! Kubeflow's own Notebooks (`../shared/fixtures/notebooks`, read in place) against
//! Hearth's Notebook kind: every Notebook document of the corpus is accepted
//! (`dryRun=All`) or refused naming a field; the served schema (v1 and v1beta1) declares
//! only fields of Kubeflow's CRD (`kubeflow.org_notebooks.yaml`), with its types; and
//! the real kubectl applies an upstream sample as it is.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use hearth_e2e::{kubectl, spawn_daemon, Daemon};
use serde_json::{json, Value};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
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
    for key in ["items", "additionalProperties"] {
        if ours[key].is_object() && upstream[key].is_object() {
            same_fields(
                &ours[key],
                &upstream[key],
                &format!("{path}[{key}]"),
                checked,
                errors,
            );
        }
    }
}

fn crd() -> Value {
    let path = hearth_e2e::fixtures_dir()
        .join("notebooks/kubeflow-notebooks/components/notebook-controller/config/crd/bases/kubeflow.org_notebooks.yaml");
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn the_served_notebook_schema_is_kubeflows_crd_cut_to_what_hearth_honours() {
    let d = spawn_daemon();
    let crd = crd();
    for version in ["v1", "v1beta1"] {
        let doc = d.get(&format!("/openapi/v3/apis/kubeflow.org/{version}"), d.admin());
        assert_eq!(doc.status, 200, "{doc}");
        let ours = &doc.body["components"]["schemas"][format!("org.kubeflow.{version}.Notebook")];
        assert!(ours.is_object(), "{doc}");
        let upstream = crd["spec"]["versions"]
            .as_array()
            .unwrap()
            .iter()
            .find(|v| v["name"] == version)
            .map(|v| v["schema"]["openAPIV3Schema"].clone())
            .unwrap();
        let (mut checked, mut errors) = (0, Vec::new());
        same_fields(
            &ours["properties"]["spec"],
            &upstream["properties"]["spec"],
            "spec",
            &mut checked,
            &mut errors,
        );
        assert!(errors.is_empty(), "{version}: {}", errors.join("\n"));
        assert!(checked > 30, "{version}: only {checked} fields compared");
        // Kubeflow's status fields are the ones Hearth writes.
        let status = upstream["properties"]["status"]["properties"]
            .as_object()
            .unwrap();
        for field in ["readyReplicas", "containerState", "conditions"] {
            assert!(status.contains_key(field), "{field}");
        }
    }
}

/// Each Notebook in the corpus: accepted, or refused with the field named.
#[test]
fn every_upstream_notebook_is_accepted_or_refused_by_name() {
    let d = spawn_daemon();
    let mut files = Vec::new();
    yaml_files(&hearth_e2e::fixtures_dir().join("notebooks"), &mut files);
    files.sort();
    let (mut accepted, mut refused, mut unreadable) = (Vec::new(), Vec::new(), Vec::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // A top-level `kind: Notebook` (the CRD names the kind indented).
        if !text.lines().any(|l| l.trim_end() == "kind: Notebook") {
            continue;
        }
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        let mut found = 0;
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let mut doc = match <Value as serde::Deserialize>::deserialize(doc) {
                Ok(doc) => doc,
                Err(e) => {
                    // The web app's template has `{name}`-style placeholders: YAML
                    // flow mappings, not a document to create.
                    unreadable.push(format!("{name}: {e}"));
                    break;
                }
            };
            if doc["kind"] != "Notebook" {
                continue;
            }
            found += 1;
            if let Some(meta) = doc["metadata"].as_object_mut() {
                meta.remove("namespace");
                meta.insert("name".into(), json!(format!("sample-{i}")));
            }
            let version = doc["apiVersion"]
                .as_str()
                .unwrap_or("kubeflow.org/v1")
                .to_string();
            let served = if version == "kubeflow.org/v1beta1" {
                "v1beta1"
            } else {
                "v1"
            };
            let reply = d.post_json(
                &format!("/apis/kubeflow.org/{served}/namespaces/corpus/notebooks?dryRun=All"),
                d.admin(),
                &doc,
            );
            match reply.status {
                200 | 201 => accepted.push(format!("{name} ({version})")),
                400 | 422 => {
                    assert!(!reply.cause_field().is_empty(), "{name}: {reply}");
                    refused.push(format!("{name}: {}", reply.cause_field()));
                }
                _ => panic!("{name}: {reply}"),
            }
        }
        if found == 0 && !unreadable.iter().any(|u| u.starts_with(&name)) {
            panic!("{name} mentions a Notebook but none was read");
        }
    }
    eprintln!("accepted {accepted:#?}\nrefused {refused:#?}\nunreadable {unreadable:#?}");
    for must in [
        "_v1_notebook.yaml (kubeflow.org/v1)",
        "_v1beta1_notebook.yaml (kubeflow.org/v1beta1)",
        "jupyter_test.yaml (kubeflow.org/v1)",
        "test-notebook.yaml (kubeflow.org/v1beta1)",
        "notebook.test.kubeflow-user-example.com.yaml (kubeflow.org/v1)",
    ] {
        assert!(
            accepted.iter().any(|a| a == must),
            "{must} not accepted: {refused:?}"
        );
    }
    assert!(
        refused.iter().any(|r| r == "_v1alpha1_notebook.yaml: apiVersion"),
        "{refused:?}"
    );
}

fn kubectl_for(d: &Daemon, home: &Path) -> Option<impl Fn(&[&str]) -> std::process::Output> {
    let bin = kubectl()?;
    let kubeconfig = d.data_dir.join("kubeconfig");
    let home = home.to_path_buf();
    Some(move |args: &[&str]| {
        Command::new(&bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", &home)
            .stdin(Stdio::null())
            .output()
            .expect("run kubectl")
    })
}

/// `kubectl apply -f` of Kubeflow's own samples, as they are, then `get` and `delete -f`.
#[test]
fn kubectl_applies_kubeflows_notebook_samples() {
    let d = spawn_daemon();
    let home = tempfile::tempdir().unwrap();
    let Some(kubectl) = kubectl_for(&d, home.path()) else {
        assert!(std::env::var_os("CI").is_none(), "scripts/test installs kubectl");
        eprintln!("skipped: no kubectl (scripts/test installs it)");
        return;
    };
    let samples = hearth_e2e::fixtures_dir()
        .join("notebooks/kubeflow-notebooks/components/notebook-controller/config/samples");
    for file in ["_v1_notebook.yaml", "_v1beta1_notebook.yaml"] {
        let path = samples.join(file);
        let out = kubectl(&["apply", "-n", "admin", "-f", path.to_str().unwrap()]);
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{file}: {text}");
        assert!(text.contains("created"), "{file}: {text}");
    }
    let out = kubectl(&["get", "notebooks", "-n", "admin", "-o", "json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = list["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|i| i["metadata"]["name"].as_str())
        .collect();
    assert!(names.contains(&"notebook-sample-v1"), "{names:?}");
    assert!(names.contains(&"notebook-sample-v1beta1"), "{names:?}");
    // A second apply is unchanged, as kubectl's three-way merge sees it.
    let path = samples.join("_v1_notebook.yaml");
    let out = kubectl(&["apply", "-n", "admin", "-f", path.to_str().unwrap()]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged"),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&["delete", "-n", "admin", "-f", path.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}
