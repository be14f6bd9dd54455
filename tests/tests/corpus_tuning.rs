//! Katib's own Experiments and CRDs (`../shared/fixtures/katib`, read in place)
//! against Hearth's tuning kinds: every hp-tuning example is accepted (`dryRun=All`)
//! or refused naming a field, and the served kinds carry the CRDs' names.

use hearth_e2e::spawn_daemon;
use serde_json::Value;

const EXPERIMENTS: &str = "/apis/kubeflow.org/v1beta1/namespaces/tune/experiments";

/// Every hp-tuning example of Katib (read in place) is accepted (`dryRun=All`) or
/// refused naming a field; none is a server error.
#[test]
fn katibs_hp_tuning_examples_validate_or_are_refused_by_name() {
    let d = spawn_daemon();
    let dir = hearth_e2e::fixtures_dir().join("katib/examples/v1beta1/hp-tuning");
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert!(files.len() >= 10, "{dir:?}");
    let (mut accepted, mut refused) = (Vec::new(), Vec::new());
    for file in &files {
        let mut doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(file).unwrap()).unwrap();
        doc["metadata"].as_object_mut().unwrap().remove("namespace");
        let reply = d.post_json(&format!("{EXPERIMENTS}?dryRun=All"), d.admin(), &doc);
        let name = file.file_name().unwrap().to_string_lossy().to_string();
        match reply.status {
            201 => accepted.push(name),
            422 => {
                assert!(!reply.cause_field().is_empty(), "{name}: {reply}");
                refused.push(format!("{name}: {}", reply.cause_field()));
            }
            _ => panic!("{name}: {reply}"),
        }
    }
    eprintln!("accepted {accepted:?}\nrefused {refused:?}");
    for must in [
        "random.yaml",
        "grid.yaml",
        "hyperopt-distribution.yaml",
        "optuna-distribution.yaml",
        "tpe.yaml",
        "multivariate-tpe.yaml",
        "sobol.yaml",
        "cma-es.yaml",
        "bayesian-optimization.yaml",
        "hyperband.yaml",
    ] {
        assert!(accepted.iter().any(|a| a == must), "{must} refused: {refused:?}");
    }
    assert!(
        refused
            .iter()
            .any(|r| r == "simple-pbt.yaml: spec.algorithm.algorithmName"),
        "{refused:?}"
    );
}

fn yaml_files(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            yaml_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
            out.push(path);
        }
    }
}

/// Every Experiment anywhere in Katib's examples (NAS, early stopping, other trial
/// kinds, other collectors) is accepted or refused naming a field; never a 5xx.
#[test]
fn every_katib_example_experiment_is_accepted_or_refused_by_name() {
    let d = spawn_daemon();
    let mut files = Vec::new();
    yaml_files(&hearth_e2e::fixtures_dir().join("katib/examples"), &mut files);
    files.sort();
    let (mut accepted, mut refused) = (0, std::collections::BTreeMap::<String, usize>::new());
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        for doc in serde_yaml_ng::Deserializer::from_str(&text) {
            let Ok(mut doc) = <Value as serde::Deserialize>::deserialize(doc) else {
                break;
            };
            if doc["kind"] != "Experiment" || doc["apiVersion"] != "kubeflow.org/v1beta1" {
                continue;
            }
            if let Some(meta) = doc["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            let reply = d.post_json(&format!("{EXPERIMENTS}?dryRun=All"), d.admin(), &doc);
            match reply.status {
                201 => accepted += 1,
                422 if !reply.cause_field().is_empty() => {
                    *refused.entry(reply.cause_field().to_string()).or_default() += 1
                }
                _ => panic!("{}: {reply}", file.display()),
            }
        }
    }
    eprintln!("{accepted} accepted; refused by field: {refused:?}");
    assert!(accepted >= 5, "{accepted} accepted; refused {refused:?}");
}

/// The served kinds agree with Katib's CRDs (read in place): group, version, names,
/// categories, scope and the status subresource.
#[test]
fn the_kinds_match_katibs_crds() {
    let d = spawn_daemon();
    let group = d.get("/apis/kubeflow.org/v1beta1", d.admin()).body;
    let dir = hearth_e2e::fixtures_dir().join("katib/manifests/v1beta1/components/crd");
    for file in ["experiment.yaml", "trial.yaml", "suggestion.yaml"] {
        let crd: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(dir.join(file)).unwrap()).unwrap();
        assert_eq!(crd["spec"]["group"], "kubeflow.org");
        assert_eq!(crd["spec"]["scope"], "Namespaced");
        let names = &crd["spec"]["names"];
        let version = &crd["spec"]["versions"][0];
        assert_eq!(version["name"], "v1beta1");
        let plural = names["plural"].as_str().unwrap();
        let served = group["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == plural)
            .unwrap_or_else(|| panic!("{plural} not served: {group}"));
        assert_eq!(served["kind"], names["kind"]);
        assert_eq!(served["singularName"], names["singular"]);
        assert_eq!(served["namespaced"], true);
        assert_eq!(served["categories"], names["categories"], "{plural}");
        if plural == "experiments" {
            assert!(version["subresources"]["status"].is_object());
            let status = format!("{plural}/status");
            assert!(
                group["resources"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|r| r["name"] == status.as_str()),
                "{group}"
            );
        }
    }
    // The served schema's spec fields are Katib's ExperimentSpec fields.
    let doc = d.get("/openapi/v3/apis/kubeflow.org/v1beta1", d.admin()).body;
    let schema =
        &doc["components"]["schemas"]["org.kubeflow.v1beta1.Experiment"]["properties"]["spec"]["properties"];
    assert!(
        schema["parameters"].is_object() && schema["trialTemplate"].is_object(),
        "{doc}"
    );
}

/// Katib's own `random.yaml`, its trial command made a local one (the loss a function
/// of the two parameters, printed in Katib's StdOut format), applied with the real
/// kubectl as a user would: it runs to completion, and `kubectl get
/// experiments,trials` shows it and its trials.
#[test]
fn katibs_random_example_runs_to_completion_through_kubectl_apply() {
    let Some(kubectl) = hearth_e2e::kubectl() else {
        return;
    };
    let d = hearth_e2e::spawn_daemon_with(
        hearth_e2e::Options::default().config("[jobs]\nbackoff_base_seconds = 0.1\n"),
    );
    let file = hearth_e2e::fixtures_dir().join("katib/examples/v1beta1/hp-tuning/random.yaml");
    let mut doc: Value = serde_yaml_ng::from_str(&std::fs::read_to_string(&file).unwrap()).unwrap();
    let container =
        &mut doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0];
    assert_eq!(container["name"], "training-container");
    container["command"] = serde_json::json!([
        "sh",
        "-c",
        r#"awk -v lr="${trialParameters.learningRate}" -v m="${trialParameters.momentum}" 'BEGIN { printf "loss=%.6f\n", (lr - 0.03)^2 + (m - 0.7)^2 }'"#
    ]);
    let home = tempfile::tempdir().unwrap();
    let manifest = home.path().join("random.yaml");
    std::fs::write(&manifest, serde_yaml_ng::to_string(&doc).unwrap()).unwrap();
    let run = |args: &[&str]| -> String {
        let out = std::process::Command::new(&kubectl)
            .arg("--kubeconfig")
            .arg(d.data_dir.join("kubeconfig"))
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", home.path())
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "kubectl {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let applied = run(&["apply", "-f", manifest.to_str().unwrap()]);
    assert!(
        applied.contains("experiment.kubeflow.org/random created"),
        "{applied}"
    );
    let ended = d
        .wait_until(
            "/apis/kubeflow.org/v1beta1/namespaces/kubeflow/experiments/random",
            std::time::Duration::from_secs(90),
            |r| {
                r.body["status"]["conditions"].as_array().is_some_and(|cs| {
                    cs.iter()
                        .any(|c| (c["type"] == "Succeeded" || c["type"] == "Failed") && c["status"] == "True")
                })
            },
        )
        .body;
    let conditions = ended["status"]["conditions"].as_array().unwrap();
    let succeeded = conditions
        .iter()
        .find(|c| c["type"] == "Succeeded" && c["status"] == "True")
        .unwrap_or_else(|| panic!("{ended}"));
    assert!(
        ["ExperimentMaxTrialsReached", "ExperimentGoalReached"]
            .contains(&succeeded["reason"].as_str().unwrap()),
        "{ended}"
    );
    let succeeded_trials = ended["status"]["trialsSucceeded"].as_u64().unwrap();
    assert!(succeeded_trials >= 1, "{ended}");
    let table = run(&["get", "experiments,trials", "-n", "kubeflow"]);
    assert!(table.contains("experiment.kubeflow.org/random"), "{table}");
    let trial_rows = table
        .lines()
        .filter(|l| l.starts_with("trial.kubeflow.org/random-"))
        .collect::<Vec<_>>();
    assert_eq!(
        trial_rows.len() as u64,
        ended["status"]["trials"].as_u64().unwrap(),
        "{table}"
    );
    assert!(trial_rows.iter().all(|l| l.contains("Succeeded")), "{table}");
}
