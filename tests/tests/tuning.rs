//! Katib Experiments end to end: the real daemon validates them as Katib's webhook
//! does, runs each trial as a batch/v1 Job (host processes printing `name=value`),
//! collects the metrics and ends the experiment with Katib's reasons. The upstream
//! examples and CRDs are checked in `corpus_tuning.rs`.

use std::collections::BTreeSet;
use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use serde_json::{json, Value};

const EXPERIMENTS: &str = "/apis/kubeflow.org/v1beta1/namespaces/tune/experiments";
const TRIALS: &str = "/apis/kubeflow.org/v1beta1/namespaces/tune/trials";
const SUGGESTIONS: &str = "/apis/kubeflow.org/v1beta1/namespaces/tune/suggestions";
const JOBS: &str = "/apis/batch/v1/namespaces/tune/jobs";

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().config("[jobs]\nbackoff_base_seconds = 0.1\n"))
}

/// An experiment whose trials run `script` (sh), the assignments in `$LR` and `$OPT`.
fn experiment(name: &str, algorithm: Value, script: &str, counts: Value) -> Value {
    let mut spec = json!({
        "objective": {"type": "maximize", "goal": 99, "objectiveMetricName": "accuracy"},
        "algorithm": algorithm,
        "parameters": [
            {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.4", "step": "0.1"}},
            {"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": ["sgd", "adam"]}}
        ],
        "trialTemplate": {
            "primaryContainerName": "training",
            "trialParameters": [
                {"name": "lr", "description": "learning rate", "reference": "lr"},
                {"name": "opt", "reference": "opt"}
            ],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "training", "image": "python:3.11", "command": ["sh", "-c", script],
                    "env": [{"name": "LR", "value": "${trialParameters.lr}"}, {"name": "OPT", "value": "${trialParameters.opt}"}]}]
            }}}}
        }
    });
    for (k, v) in counts.as_object().unwrap() {
        spec[k] = v.clone();
    }
    json!({"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": name}, "spec": spec})
}

fn create(d: &Daemon, doc: &Value) -> Reply {
    let reply = d.post_json(EXPERIMENTS, d.admin(), doc);
    assert_eq!(reply.status, 201, "{reply}");
    reply
}

fn condition<'a>(doc: &'a Value, kind: &str) -> Option<&'a Value> {
    doc["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == kind && c["status"] == "True")
}

fn wait_ended(d: &Daemon, name: &str) -> Value {
    d.wait_until(&format!("{EXPERIMENTS}/{name}"), Duration::from_secs(60), |r| {
        condition(&r.body, "Succeeded").is_some() || condition(&r.body, "Failed").is_some()
    })
    .body
}

fn reason(doc: &Value, kind: &str) -> String {
    condition(doc, kind)
        .and_then(|c| c["reason"].as_str())
        .unwrap_or("")
        .to_string()
}

fn trials_of(d: &Daemon, experiment: &str) -> Vec<Value> {
    let reply = d.get(
        &format!("{TRIALS}?labelSelector=katib.kubeflow.org/experiment={experiment}"),
        d.admin(),
    );
    assert_eq!(reply.status, 200, "{reply}");
    reply.body["items"].as_array().unwrap().clone()
}

#[test]
fn random_search_runs_its_trials_as_jobs_and_reports_the_best() {
    let d = daemon();
    let doc = experiment(
        "rand",
        json!({"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]}),
        "echo epoch 1; echo accuracy=$LR",
        json!({"maxTrialCount": 4, "parallelTrialCount": 2}),
    );
    let created = create(&d, &doc);
    // Katib's defaults are written out.
    assert_eq!(
        created.body["spec"]["metricsCollectorSpec"]["collector"]["kind"],
        "StdOut"
    );
    assert_eq!(
        created.body["spec"]["objective"]["metricStrategies"],
        json!([{"name": "accuracy", "value": "max"}])
    );

    // parallelTrialCount holds while it runs.
    let mut most_active = 0;
    let ended = loop {
        let now = d.get(&format!("{EXPERIMENTS}/rand"), d.admin()).body;
        let active = now["status"]["trialsRunning"].as_u64().unwrap_or(0)
            + now["status"]["trialsPending"].as_u64().unwrap_or(0);
        most_active = most_active.max(active);
        if condition(&now, "Succeeded").is_some() || condition(&now, "Failed").is_some() {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(most_active <= 2, "{most_active} trials at once");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    assert!(condition(&ended, "Created").is_some());
    let status = &ended["status"];
    assert_eq!(status["trials"], 4, "{ended}");
    assert_eq!(status["trialsSucceeded"], 4, "{ended}");
    assert_eq!(status["succeededTrialList"].as_array().unwrap().len(), 4);

    let trials = trials_of(&d, "rand");
    assert_eq!(trials.len(), 4);
    let mut best = (String::new(), f64::MIN);
    for t in &trials {
        assert_eq!(t["kind"], "Trial");
        assert_eq!(t["metadata"]["ownerReferences"][0]["kind"], "Experiment");
        assert_eq!(
            t["metadata"]["ownerReferences"][0]["uid"],
            created.body["metadata"]["uid"]
        );
        assert!(condition(t, "Succeeded").is_some(), "{t}");
        let lr = t["spec"]["parameterAssignments"][0]["value"]
            .as_str()
            .unwrap()
            .to_string();
        let metric = &t["status"]["observation"]["metrics"][0];
        assert_eq!(metric["name"], "accuracy");
        assert_eq!(
            metric["latest"].as_str().unwrap().parse::<f64>().unwrap(),
            lr.parse::<f64>().unwrap(),
            "{t}"
        );
        let value: f64 = lr.parse().unwrap();
        if value > best.1 {
            best = (t["metadata"]["name"].as_str().unwrap().to_string(), value);
        }
        // The trial's Job ran the substituted command, and is removed once done (retain false).
        assert!(
            t["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["command"][2]
                .as_str()
                .unwrap()
                .contains("accuracy=$LR")
        );
        assert_eq!(
            t["spec"]["runSpec"]["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"],
            lr.as_str()
        );
    }
    let optimal = &status["currentOptimalTrial"];
    assert_eq!(
        optimal["observation"]["metrics"][0]["max"]
            .as_str()
            .unwrap()
            .parse::<f64>()
            .unwrap(),
        best.1
    );
    assert_eq!(optimal["parameterAssignments"][0]["name"], "lr");

    // The suggestion records every assignment once.
    let suggestion = d.get(&format!("{SUGGESTIONS}/rand"), d.admin());
    assert_eq!(suggestion.status, 200, "{suggestion}");
    assert_eq!(suggestion.body["status"]["suggestionCount"], 4);
    assert_eq!(suggestion.body["spec"]["requests"], 4);

    // A seeded experiment suggests the same values again.
    let mut again = doc.clone();
    again["metadata"]["name"] = json!("rand-again");
    create(&d, &again);
    wait_ended(&d, "rand-again");
    let values = |name: &str| -> BTreeSet<String> {
        trials_of(&d, name)
            .iter()
            .map(|t| t["spec"]["parameterAssignments"].to_string())
            .collect()
    };
    assert_eq!(values("rand"), values("rand-again"));

    // kubectl's table: the CRD's printer columns.
    let table = d.send(
        d.request(reqwest::Method::GET, EXPERIMENTS, d.admin())
            .header("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io"),
    );
    assert_eq!(table.status, 200, "{table}");
    assert_eq!(table.body["columnDefinitions"][1]["name"], "Type");
}

#[test]
fn grid_ends_when_the_grid_is_exhausted() {
    let d = daemon();
    create(
        &d,
        &experiment(
            "grid",
            json!({"algorithmName": "grid"}),
            "echo accuracy=$LR",
            json!({"maxTrialCount": 20, "parallelTrialCount": 3}),
        ),
    );
    let ended = wait_ended(&d, "grid");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentSuggestionEndReached",
        "{ended}"
    );
    let trials = trials_of(&d, "grid");
    // lr 0.1..0.4 step 0.1 (4 values) × 2 optimizers.
    assert_eq!(trials.len(), 8, "{ended}");
    let distinct: BTreeSet<String> = trials
        .iter()
        .map(|t| t["spec"]["parameterAssignments"].to_string())
        .collect();
    assert_eq!(distinct.len(), 8);
    assert_eq!(
        ended["status"]["currentOptimalTrial"]["parameterAssignments"][0]["value"],
        "0.4"
    );
}

#[test]
fn goal_failures_and_missing_metrics_end_as_katib_says() {
    let d = daemon();
    let mut goal = experiment(
        "goal",
        json!({"algorithmName": "random"}),
        "echo loss=0.05",
        json!({"maxTrialCount": 6, "parallelTrialCount": 1}),
    );
    goal["spec"]["objective"] = json!({"type": "minimize", "goal": 0.1, "objectiveMetricName": "loss"});
    create(&d, &goal);
    create(
        &d,
        &experiment(
            "failing",
            json!({"algorithmName": "random"}),
            "exit 3",
            json!({"maxTrialCount": 6, "parallelTrialCount": 1, "maxFailedTrialCount": 1}),
        ),
    );
    create(
        &d,
        &experiment(
            "silent",
            json!({"algorithmName": "random"}),
            "echo nothing to report",
            json!({"maxTrialCount": 1, "parallelTrialCount": 1}),
        ),
    );

    let ended = wait_ended(&d, "goal");
    assert_eq!(reason(&ended, "Succeeded"), "ExperimentGoalReached", "{ended}");
    assert_eq!(ended["status"]["trials"], 1, "{ended}");

    let ended = wait_ended(&d, "failing");
    assert_eq!(reason(&ended, "Failed"), "ExperimentFailed", "{ended}");
    assert_eq!(ended["status"]["trialsFailed"], 2, "{ended}");
    assert!(trials_of(&d, "failing")
        .iter()
        .all(|t| condition(t, "Failed").is_some()));

    let ended = wait_ended(&d, "silent");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    assert_eq!(ended["status"]["trialMetricsUnavailable"], 1, "{ended}");
    let trial = &trials_of(&d, "silent")[0];
    assert!(condition(trial, "MetricsUnavailable").is_some(), "{trial}");
    assert_eq!(
        trial["status"]["observation"]["metrics"][0]["latest"],
        "unavailable"
    );
}

/// A change to a valid experiment that makes it invalid.
type Change = Box<dyn Fn(&mut Value)>;

#[test]
fn bad_experiments_are_refused_naming_the_field_and_trials_are_read_only() {
    let d = daemon();
    let base = experiment(
        "bad",
        json!({"algorithmName": "random"}),
        "echo accuracy=1",
        json!({"maxTrialCount": 2, "parallelTrialCount": 1}),
    );
    let cases: Vec<(&str, Change)> = vec![
        (
            "spec.algorithm.algorithmName",
            Box::new(|e| e["spec"]["algorithm"]["algorithmName"] = json!("enas")),
        ),
        (
            "spec.algorithm.algorithmSettings[0].name",
            Box::new(|e| {
                e["spec"]["algorithm"] = json!({"algorithmName": "tpe",
                    "algorithmSettings": [{"name": "gamma", "value": "0.2"}]})
            }),
        ),
        (
            "spec.algorithm.algorithmSettings[1].value",
            Box::new(|e| {
                e["spec"]["algorithm"] = json!({"algorithmName": "bayesianoptimization",
                    "algorithmSettings": [{"name": "random_state", "value": "1"},
                                          {"name": "base_estimator", "value": "RF"}]})
            }),
        ),
        (
            "spec.parameters",
            Box::new(|e| e["spec"]["algorithm"] = json!({"algorithmName": "cmaes"})),
        ),
        (
            "spec.parallelTrialCount",
            Box::new(|e| e["spec"]["parallelTrialCount"] = json!(3)),
        ),
        (
            "spec.objective.type",
            Box::new(|e| e["spec"]["objective"]["type"] = json!("best")),
        ),
        ("spec.nasConfig", Box::new(|e| e["spec"]["nasConfig"] = json!({}))),
        (
            "spec.maxTrialCount",
            Box::new(|e| e["spec"]["maxTrialCount"] = json!(-1)),
        ),
        (
            "spec.trialTemplate.trialSpec.kind",
            Box::new(|e| e["spec"]["trialTemplate"]["trialSpec"]["kind"] = json!("TFJob")),
        ),
        (
            "spec.metricsCollectorSpec.collector.kind",
            Box::new(|e| e["spec"]["metricsCollectorSpec"] = json!({"collector": {"kind": "Prometheus"}})),
        ),
        (
            "spec.parameters[0].feasibleSpace.max",
            Box::new(|e| e["spec"]["parameters"][0]["feasibleSpace"]["max"] = json!("0.01")),
        ),
        (
            "spec.trialTemplate.trialParameters",
            Box::new(|e| {
                e["spec"]["trialTemplate"]["trialParameters"]
                    .as_array_mut()
                    .unwrap()
                    .push(json!({"name": "unused", "reference": "lr"}))
            }),
        ),
    ];
    for (field, change) in cases {
        let mut doc = base.clone();
        change(&mut doc);
        let reply = d.post_json(EXPERIMENTS, d.admin(), &doc);
        assert_eq!(reply.status, 422, "{field}: {reply}");
        assert_eq!(reply.body["kind"], "Status", "{reply}");
        assert_eq!(reply.cause_field(), field, "{reply}");
    }
    assert_eq!(d.get(&format!("{EXPERIMENTS}/bad"), d.admin()).status, 404);

    let trial =
        json!({"apiVersion": "kubeflow.org/v1beta1", "kind": "Trial", "metadata": {"name": "t"}, "spec": {}});
    let reply = d.post_json(TRIALS, d.admin(), &trial);
    assert_eq!(reply.status, 405, "{reply}");

    // Discovery lists the three kinds, Trials and Suggestions read-only.
    let group = d.get("/apis/kubeflow.org/v1beta1", d.admin());
    assert_eq!(group.status, 200, "{group}");
    let verbs = |plural: &str| -> Vec<String> {
        group.body["resources"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == plural)
            .map(|r| serde_json::from_value(r["verbs"].clone()).unwrap())
            .unwrap_or_default()
    };
    assert!(verbs("experiments").contains(&"create".to_string()));
    assert_eq!(verbs("trials"), ["get", "list", "watch"]);
    assert_eq!(verbs("suggestions"), ["get", "list", "watch"]);
}

#[test]
fn deleting_an_experiment_stops_its_trials_and_removes_what_it_made() {
    let d = daemon();
    create(
        &d,
        &experiment(
            "long",
            json!({"algorithmName": "random"}),
            "sleep 60; echo accuracy=1",
            json!({"maxTrialCount": 4, "parallelTrialCount": 2}),
        ),
    );
    let jobs = d.wait_until(
        &format!("{JOBS}?labelSelector=katib.kubeflow.org/experiment=long"),
        Duration::from_secs(20),
        |r| r.body["items"].as_array().is_some_and(|i| i.len() == 2),
    );
    let job = &jobs.body["items"][0];
    assert_eq!(job["metadata"]["ownerReferences"][0]["kind"], "Trial");
    let reply = d.delete(&format!("{EXPERIMENTS}/long"), d.admin());
    assert_eq!(reply.status, 200, "{reply}");
    d.wait_until(&format!("{EXPERIMENTS}/long"), Duration::from_secs(20), |r| {
        r.status == 404
    });
    // The garbage collector follows: Trials and the Suggestion, then the Jobs.
    d.wait_until(
        &format!("{TRIALS}?labelSelector=katib.kubeflow.org/experiment=long"),
        Duration::from_secs(20),
        |r| r.body["items"].as_array().is_some_and(|i| i.is_empty()),
    );
    d.wait_until(&format!("{SUGGESTIONS}/long"), Duration::from_secs(20), |r| {
        r.status == 404
    });
    d.wait_until(
        &format!("{JOBS}?labelSelector=katib.kubeflow.org/experiment=long"),
        Duration::from_secs(20),
        |r| r.body["items"].as_array().is_some_and(|i| i.is_empty()),
    );
}

#[test]
fn an_orphaning_delete_leaves_the_trials() {
    let d = daemon();
    create(
        &d,
        &experiment(
            "orphans",
            json!({"algorithmName": "random"}),
            "echo accuracy=$LR",
            json!({"maxTrialCount": 2, "parallelTrialCount": 2}),
        ),
    );
    wait_ended(&d, "orphans");
    let reply = d.delete(
        &format!("{EXPERIMENTS}/orphans?propagationPolicy=Orphan"),
        d.admin(),
    );
    assert_eq!(reply.status, 200, "{reply}");
    d.wait_until(&format!("{EXPERIMENTS}/orphans"), Duration::from_secs(20), |r| {
        r.status == 404
    });
    let trials = trials_of(&d, "orphans");
    assert_eq!(trials.len(), 2);
    assert!(
        trials.iter().all(|t| t["metadata"]
            .get("ownerReferences")
            .is_none_or(|o| o == &json!([]))),
        "{trials:?}"
    );
}

#[test]
fn a_kill_9_mid_experiment_loses_no_trial_and_runs_none_twice() {
    let mut d = daemon();
    // Each trial's command records its run (its `${trialSpec.Name}`) in a file.
    let runs = tempfile::tempdir().unwrap();
    let record = runs.path().join("runs");
    let mut doc = experiment(
        "durable",
        json!({"algorithmName": "random"}),
        &format!("echo $ME >> {}; sleep 0.5; echo accuracy=$LR", record.display()),
        json!({"maxTrialCount": 5, "parallelTrialCount": 2}),
    );
    doc["spec"]["trialTemplate"]["trialParameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "me", "reference": "${trialSpec.Name}"}));
    doc["spec"]["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ME", "value": "${trialParameters.me}"}));
    create(&d, &doc);
    d.wait_until(&format!("{EXPERIMENTS}/durable"), Duration::from_secs(20), |r| {
        r.body["status"]["trials"].as_u64().unwrap_or(0) >= 2
    });
    d.kill9();
    d.restart();
    let ended = wait_ended(&d, "durable");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    let trials = trials_of(&d, "durable");
    assert_eq!(trials.len(), 5, "{ended}");
    let suggestion = d.get(&format!("{SUGGESTIONS}/durable"), d.admin()).body;
    let suggested: BTreeSet<&str> = suggestion["status"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    let made: BTreeSet<&str> = trials
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    assert_eq!(suggested, made, "every suggestion has exactly its trial");
    // A trial running at the kill is one whose process died with the daemon's
    // workloads or kept running; either way it ran once: never started again.
    let text = std::fs::read_to_string(&record).unwrap();
    let mut ran: Vec<&str> = text.lines().collect();
    ran.sort_unstable();
    let once: Vec<&str> = made.iter().copied().collect();
    assert_eq!(ran, once, "each trial ran exactly once: {text}");
}

/// The seeded tpe experiment of the model-based restart test: one trial at a time,
/// each recording its run (`$ME`) in `record` and then printing its loss.
fn sequential_tpe(name: &str, record: &std::path::Path) -> Value {
    let mut doc = quadratic(
        name,
        json!({"algorithmName": "tpe", "algorithmSettings": [
            {"name": "n_startup_trials", "value": "3"}, {"name": "random_state", "value": "7"}]}),
        json!({"maxTrialCount": 8, "parallelTrialCount": 1}),
    );
    let script = format!(
        r#"echo $ME >> {}; sleep 0.4; awk -v x="$X" -v y="$Y" 'BEGIN {{ printf "loss=%.6f\n", (x-0.3)^2 + (y-0.6)^2 }}'"#,
        record.display()
    );
    let template = &mut doc["spec"]["trialTemplate"];
    template["trialParameters"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "me", "reference": "${trialSpec.Name}"}));
    let container = &mut template["trialSpec"]["spec"]["template"]["spec"]["containers"][0];
    container["command"] = json!(["sh", "-c", script]);
    container["env"]
        .as_array_mut()
        .unwrap()
        .push(json!({"name": "ME", "value": "${trialParameters.me}"}));
    doc
}

/// The assignments of an experiment's suggestions, in the order made.
fn suggested_points(d: &Daemon, experiment: &str) -> Vec<Vec<(String, String)>> {
    let suggestion = d.get(&format!("{SUGGESTIONS}/{experiment}"), d.admin()).body;
    suggestion["status"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            s["parameterAssignments"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| {
                    (
                        a["name"].as_str().unwrap().to_string(),
                        a["value"].as_str().unwrap().to_string(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The restart test with a model-based algorithm: a seeded `tpe` experiment running
/// one trial at a time is a deterministic function of its history, so the one killed
/// (`kill -9`) after its model took over and restarted must suggest exactly what an
/// uninterrupted twin suggested, point for point: the model was rebuilt from the
/// stored trials, each told once with its objective. And every trial ran once.
#[test]
fn a_kill_9_mid_tpe_experiment_rebuilds_the_model_from_the_stored_trials() {
    let mut d = daemon();
    let runs = tempfile::tempdir().unwrap();
    let twin_record = runs.path().join("twin");
    create(&d, &sequential_tpe("twin", &twin_record));
    let twin = wait_ended(&d, "twin");
    assert_eq!(reason(&twin, "Succeeded"), "ExperimentMaxTrialsReached", "{twin}");
    let expected = suggested_points(&d, "twin");
    assert_eq!(expected.len(), 8, "{twin}");

    let record = runs.path().join("durable");
    create(&d, &sequential_tpe("durable", &record));
    // Past the 3 start-up trials: the fifth suggestion came from the model.
    d.wait_until(&format!("{EXPERIMENTS}/durable"), Duration::from_secs(30), |r| {
        r.body["status"]["trials"].as_u64().unwrap_or(0) >= 5
    });
    d.kill9();
    d.restart();
    let ended = wait_ended(&d, "durable");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    let trials = trials_of(&d, "durable");
    assert_eq!(trials.len(), 8, "{ended}");
    assert!(
        trials.iter().all(|t| condition(t, "Succeeded").is_some()),
        "{trials:?}"
    );
    assert_eq!(
        suggested_points(&d, "durable"),
        expected,
        "the restarted experiment suggested what its uninterrupted twin did"
    );
    let made: BTreeSet<&str> = trials
        .iter()
        .map(|t| t["metadata"]["name"].as_str().unwrap())
        .collect();
    let text = std::fs::read_to_string(&record).unwrap();
    let mut ran: Vec<&str> = text.lines().collect();
    ran.sort_unstable();
    assert_eq!(
        ran,
        made.iter().copied().collect::<Vec<_>>(),
        "each trial ran exactly once: {text}"
    );
}

#[test]
fn the_file_collector_reads_the_trials_file_and_never_an_older_one() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let fresh = dir.path().join("fresh.log");
    let stale = dir.path().join("stale.log");
    std::fs::write(&stale, "accuracy=0.99\n").unwrap();
    let file_collector = |path: &std::path::Path, format: &str| {
        json!({
            "collector": {"kind": "File"},
            "source": {"fileSystemPath": {"path": path.to_str().unwrap(), "kind": "File", "format": format}}
        })
    };
    // A trial that writes nothing must not read the file left before it was made.
    std::thread::sleep(Duration::from_millis(1100));
    let mut reads_stale = experiment(
        "stale",
        json!({"algorithmName": "random"}),
        "true",
        json!({"maxTrialCount": 1, "parallelTrialCount": 1}),
    );
    reads_stale["spec"]["metricsCollectorSpec"] = file_collector(&stale, "TEXT");
    create(&d, &reads_stale);

    let mut writes = experiment(
        "file",
        json!({"algorithmName": "random"}),
        &format!(
            "sleep 0.3; echo '{{\"accuracy\": \"'$LR'\"}}' >> {}",
            fresh.display()
        ),
        json!({"maxTrialCount": 3, "parallelTrialCount": 3}),
    );
    writes["spec"]["metricsCollectorSpec"] = file_collector(&fresh, "JSON");
    create(&d, &writes);
    // Another experiment's trials write the same file (a host path is shared across
    // experiments and namespaces): they wait for each other's.
    let mut also = experiment(
        "file-too",
        json!({"algorithmName": "random"}),
        &format!(
            "sleep 0.2; echo '{{\"accuracy\": \"'$LR'\"}}' >> {}",
            fresh.display()
        ),
        json!({"maxTrialCount": 2, "parallelTrialCount": 2}),
    );
    also["spec"]["metricsCollectorSpec"] = file_collector(&fresh, "JSON");
    create(&d, &also);
    // Trials writing the same file run one at a time, and each reads only its lines.
    let mut most_active = 0;
    let mut most_running = 0;
    let ended = loop {
        let now = d.get(&format!("{EXPERIMENTS}/file"), d.admin()).body;
        let other = d.get(&format!("{EXPERIMENTS}/file-too"), d.admin()).body;
        let active = now["status"]["trialsRunning"].as_u64().unwrap_or(0)
            + now["status"]["trialsPending"].as_u64().unwrap_or(0);
        most_active = most_active.max(active);
        let running = now["status"]["trialsRunning"].as_u64().unwrap_or(0)
            + other["status"]["trialsRunning"].as_u64().unwrap_or(0);
        most_running = most_running.max(running);
        let done = |e: &Value| condition(e, "Succeeded").is_some() || condition(e, "Failed").is_some();
        if done(&now) && done(&other) {
            break now;
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(most_active, 1, "{ended}");
    assert!(most_running <= 1, "{most_running} at once: {ended}");
    assert_eq!(ended["status"]["trialsSucceeded"], 3, "{ended}");
    let mut all = trials_of(&d, "file");
    all.extend(trials_of(&d, "file-too"));
    assert_eq!(all.len(), 5);
    for t in all {
        let lr: f64 = t["spec"]["parameterAssignments"][0]["value"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        let metric = &t["status"]["observation"]["metrics"][0];
        for key in ["min", "max", "latest"] {
            let value: f64 = metric[key].as_str().unwrap().parse().unwrap();
            assert_eq!(value, lr, "{key}: {t}");
        }
        assert!(t["status"].get("hearth").is_none(), "{t}");
    }
    let ended = wait_ended(&d, "stale");
    assert_eq!(ended["status"]["trialMetricsUnavailable"], 1, "{ended}");
}

#[test]
fn the_trial_budget_may_change_while_it_runs_and_nothing_else() {
    let d = daemon();
    create(
        &d,
        &experiment(
            "budget",
            json!({"algorithmName": "random"}),
            "sleep 0.3; echo accuracy=$LR",
            json!({"maxTrialCount": 2, "parallelTrialCount": 1}),
        ),
    );
    let path = format!("{EXPERIMENTS}/budget");
    let raised = d.patch(&path, d.admin(), &json!({"spec": {"maxTrialCount": 3}}));
    assert_eq!(raised.status, 200, "{raised}");
    let refused = d.patch(
        &path,
        d.admin(),
        &json!({"spec": {"objective": {"type": "minimize"}}}),
    );
    assert_eq!(refused.status, 422, "{refused}");
    assert_eq!(refused.cause_field(), "spec.objective", "{refused}");
    // A document read back and sent again changes nothing (409 only when the
    // controller wrote status between the read and the write, as Kubernetes answers).
    let mut again = d.put(&path, d.admin(), &d.get(&path, d.admin()).body);
    for _ in 0..20 {
        if again.status != 409 {
            break;
        }
        again = d.put(&path, d.admin(), &d.get(&path, d.admin()).body);
    }
    assert_eq!(again.status, 200, "{again}");
    assert_eq!(again.body["metadata"]["generation"], 2, "{again}");
    let ended = wait_ended(&d, "budget");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    assert_eq!(ended["status"]["trials"], 3, "{ended}");
    // Once ended, `resumePolicy: Never` (the default) keeps it ended, as Katib does.
    let resumed = d.patch(&path, d.admin(), &json!({"spec": {"maxTrialCount": 5}}));
    assert_eq!(resumed.status, 422, "{resumed}");
    assert_eq!(resumed.cause_field(), "spec.resumePolicy", "{resumed}");
}

#[test]
fn a_long_running_experiment_resumes_when_its_budget_is_raised() {
    let d = daemon();
    let mut doc = experiment(
        "resumes",
        json!({"algorithmName": "random"}),
        "echo accuracy=$LR",
        json!({"maxTrialCount": 1, "parallelTrialCount": 1}),
    );
    doc["spec"]["resumePolicy"] = json!("LongRunning");
    create(&d, &doc);
    let ended = wait_ended(&d, "resumes");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    let path = format!("{EXPERIMENTS}/resumes");
    let same = d.patch(
        &path,
        d.admin(),
        &json!({"spec": {"maxTrialCount": 1, "parallelTrialCount": 1}}),
    );
    assert_eq!(same.status, 200, "nothing changed: {same}");
    let lowered = d.patch(
        &path,
        d.admin(),
        &json!({"spec": {"parallelTrialCount": 1, "maxFailedTrialCount": 1}}),
    );
    assert_eq!(lowered.status, 422, "{lowered}");
    assert_eq!(lowered.cause_field(), "spec.maxTrialCount", "{lowered}");
    let raised = d.patch(&path, d.admin(), &json!({"spec": {"maxTrialCount": 3}}));
    assert_eq!(raised.status, 200, "{raised}");
    d.wait_until(&path, Duration::from_secs(20), |r| {
        r.body["status"]["trials"].as_u64() == Some(3)
            && condition(&r.body, "Succeeded").is_some_and(|c| c["status"] == "True")
    });
    let again = d.get(&path, d.admin()).body;
    assert_eq!(
        reason(&again, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{again}"
    );
    assert_eq!(again["status"]["trialsSucceeded"], 3, "{again}");
    let restarting = again["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Restarting")
        .unwrap();
    assert_eq!(
        restarting["status"], "False",
        "restarted, then ended again: {again}"
    );

    // FromVolume is refused by name.
    let mut volume = experiment("volume", json!({"algorithmName": "random"}), "true", json!({}));
    volume["spec"]["resumePolicy"] = json!("FromVolume");
    let refused = d.post_json(EXPERIMENTS, d.admin(), &volume);
    assert_eq!(refused.status, 422, "{refused}");
    assert_eq!(refused.cause_field(), "spec.resumePolicy", "{refused}");
}

/// Katib's medianstop: once `min_trials_required` trials have succeeded, a trial whose
/// best objective value from its `start_step`-th report on is below the median of their
/// averages over `start_step` reports is stopped: `EarlyStopped` (not `Failed`), its
/// Job suspended but kept (`retain`), counted as Katib counts it. Each trial's values
/// are in its observation log, timestamps from the output's RFC 3339 prefix.
#[test]
fn medianstop_stops_a_bad_trial_early_and_keeps_its_retained_job() {
    let d = daemon();
    // One trial at a time; a counter file numbers them. The first three report
    // accuracy=0.5 five times (RFC 3339 prefixes) and succeed: the median of their
    // averages over start_step=2 reports is 0.5. Later trials report 0.1, below it, and
    // would then linger 30 s: they are stopped early instead.
    let dir = tempfile::tempdir().unwrap();
    let count = dir.path().join("count");
    let script = format!(
        "n=$(( $(cat {c} 2>/dev/null || echo 0) + 1 )); echo $n > {c}; v=0.5; [ $n -gt 3 ] && v=0.1; \
         for i in 1 2 3 4 5; do echo \"2024-01-0${{i}}T00:00:00Z accuracy=$v\"; sleep 0.05; done; \
         [ $n -gt 3 ] && sleep 30; true",
        c = count.display()
    );
    let mut doc = experiment(
        "median",
        json!({"algorithmName": "random"}),
        &script,
        json!({"maxTrialCount": 5, "parallelTrialCount": 1}),
    );
    doc["spec"]["earlyStopping"] = json!({"algorithmName": "medianstop",
        "algorithmSettings": [{"name": "min_trials_required", "value": "3"}, {"name": "start_step", "value": "2"}]});
    doc["spec"]["trialTemplate"]["retain"] = json!(true);
    create(&d, &doc);
    let ended = wait_ended(&d, "median");
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentMaxTrialsReached",
        "{ended}"
    );
    let mut trials = trials_of(&d, "median");
    trials.sort_by_key(|t| t["metadata"]["creationTimestamp"].as_str().unwrap().to_string());
    let stopped: Vec<&Value> = trials
        .iter()
        .filter(|t| condition(t, "EarlyStopped").is_some())
        .collect();
    assert_eq!(stopped.len(), 2, "the fourth and fifth: {ended}");
    assert_eq!(ended["status"]["trialsEarlyStopped"], 2, "{ended}");
    assert_eq!(ended["status"]["trialsSucceeded"], 3, "{ended}");
    for t in &stopped {
        assert_eq!(reason(t, "EarlyStopped"), "TrialEarlyStopped", "{t}");
        assert!(condition(t, "Failed").is_none(), "{t}");
        let rule = &t["spec"]["earlyStoppingRules"][0];
        assert_eq!(rule["name"], "accuracy", "{t}");
        assert_eq!(rule["comparison"], "less", "{t}");
        assert_eq!(rule["startStep"], 2, "{t}");
        assert_eq!(
            rule["value"].as_str().unwrap().parse::<f64>().unwrap(),
            0.5,
            "{t}"
        );
        // Retained: the Job is kept, its pods stopped.
        let name = t["metadata"]["name"].as_str().unwrap();
        let job = d.get(&format!("{JOBS}/{name}"), d.admin());
        assert_eq!(job.status, 200, "{job}");
        assert_eq!(job.body["spec"]["suspend"], true, "{job}");
    }
    // The first three trials ran before any rule existed.
    let first = &trials[0];
    assert_eq!(first["spec"]["earlyStoppingRules"], json!([]), "{first}");

    // The observation log, in Katib's shape.
    let name = first["metadata"]["name"].as_str().unwrap();
    let log = d.get(
        &format!("/hearth/v1/namespaces/tune/trials/{name}/observationlog"),
        d.admin(),
    );
    assert_eq!(log.status, 200, "{log}");
    let entries = log.body["metricLogs"].as_array().unwrap();
    assert_eq!(entries.len(), 5, "{log}");
    assert_eq!(entries[0]["timeStamp"], "2024-01-01T00:00:00.000Z", "{log}");
    assert_eq!(entries[4]["timeStamp"], "2024-01-05T00:00:00.000Z", "{log}");
    assert_eq!(
        entries[0]["metric"],
        json!({"name": "accuracy", "value": "0.5"}),
        "{log}"
    );
    let only = d.get(
        &format!("/hearth/v1/namespaces/tune/trials/{name}/observationlog?metric_name=loss"),
        d.admin(),
    );
    assert_eq!(only.body["metricLogs"], json!([]), "{only}");
    let bad = d.get(
        &format!("/hearth/v1/namespaces/tune/trials/{name}/observationlog?since=1"),
        d.admin(),
    );
    assert_eq!(bad.status, 400, "{bad}");
    let missing = d.get("/hearth/v1/namespaces/tune/trials/nope/observationlog", d.admin());
    assert_eq!(missing.status, 404, "{missing}");
    // Another namespace's user may not read it.
    let other = d.create_user("mallory");
    let denied = d.get(
        &format!("/hearth/v1/namespaces/tune/trials/{name}/observationlog"),
        Some(&other),
    );
    assert_eq!(denied.status, 403, "{denied}");

    // Settings are checked as Katib's medianstop service checks them.
    let mut bad = experiment("bad-stop", json!({"algorithmName": "random"}), "true", json!({}));
    bad["spec"]["earlyStopping"] = json!({"algorithmName": "medianstop",
        "algorithmSettings": [{"name": "start_step", "value": "0"}]});
    let refused = d.post_json(EXPERIMENTS, d.admin(), &bad);
    assert_eq!(refused.status, 422, "{refused}");
    assert_eq!(
        refused.cause_field(),
        "spec.earlyStopping.algorithmSettings[0].value",
        "{refused}"
    );
}

/// The observation log keeps at most 10,000 values per trial; past that, values are
/// not logged, and the trial's observation still counts them.
#[test]
fn the_observation_log_is_bounded_and_the_observation_is_not() {
    let d = daemon();
    create(
        &d,
        &experiment(
            "bounded",
            json!({"algorithmName": "random"}),
            "i=0; while [ $i -lt 10005 ]; do i=$((i+1)); echo accuracy=$i; done",
            json!({"maxTrialCount": 1, "parallelTrialCount": 1}),
        ),
    );
    let ended = wait_ended(&d, "bounded");
    assert_eq!(ended["status"]["trialsSucceeded"], 1, "{ended}");
    let trial = &trials_of(&d, "bounded")[0];
    let metric = &trial["status"]["observation"]["metrics"][0];
    assert_eq!(metric["latest"], "10005", "{trial}");
    let name = trial["metadata"]["name"].as_str().unwrap();
    let log = d.get(
        &format!("/hearth/v1/namespaces/tune/trials/{name}/observationlog"),
        d.admin(),
    );
    let entries = log.body["metricLogs"].as_array().unwrap();
    assert_eq!(entries.len(), 10_000);
    assert_eq!(entries[9_999]["metric"]["value"], "10000");
}

/// An experiment minimizing `loss = (x - 0.3)^2 + (y - 0.6)^2` over [0, 1]^2 (awk in
/// the trial's shell), `epochs` an int in [1, 4] that the function ignores.
fn quadratic(name: &str, algorithm: Value, counts: Value) -> Value {
    let script =
        r#"awk -v x="$X" -v y="$Y" -v e="$E" 'BEGIN { printf "loss=%.6f\n", (x-0.3)^2 + (y-0.6)^2 }'"#;
    let mut doc = experiment(name, algorithm, script, counts);
    let spec = &mut doc["spec"];
    spec["objective"] = json!({"type": "minimize", "goal": 0.0001, "objectiveMetricName": "loss"});
    spec["parameters"] = json!([
        {"name": "x", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
        {"name": "y", "parameterType": "double", "feasibleSpace": {"min": "0", "max": "1"}},
        {"name": "epochs", "parameterType": "int", "feasibleSpace": {"min": "1", "max": "4"}}
    ]);
    let template = &mut spec["trialTemplate"];
    template["trialParameters"] = json!([
        {"name": "x", "reference": "x"}, {"name": "y", "reference": "y"}, {"name": "e", "reference": "epochs"}
    ]);
    template["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["env"] = json!([
        {"name": "X", "value": "${trialParameters.x}"}, {"name": "Y", "value": "${trialParameters.y}"},
        {"name": "E", "value": "${trialParameters.e}"}
    ]);
    doc
}

fn assignment(trial: &Value, name: &str) -> String {
    trial["spec"]["parameterAssignments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["name"] == name)
        .map(|a| a["value"].as_str().unwrap().to_string())
        .unwrap()
}

/// Every model-based algorithm runs a real experiment of local trials to its limit:
/// its suggestions stay in the space, none repeats, the best is reported, and the
/// model's history is the stored trials (a seeded model-based run is told each
/// finished trial; hyperband's later rungs rerun the best of the rung before, which
/// only the history can say).
#[test]
fn every_search_algorithm_runs_an_experiment_to_its_limit() {
    let d = daemon();
    let counts = json!({"maxTrialCount": 10, "parallelTrialCount": 3});
    let runs = [
        (
            "tpe",
            json!([{"name": "n_startup_trials", "value": "4"}, {"name": "random_state", "value": "1"}]),
        ),
        (
            "multivariate-tpe",
            json!([{"name": "n_startup_trials", "value": "4"}, {"name": "random_state", "value": "2"}]),
        ),
        ("sobol", json!([])),
        (
            "cmaes",
            json!([{"name": "random_state", "value": "3"}, {"name": "sigma", "value": "0.2"}]),
        ),
        (
            "bayesianoptimization",
            json!([{"name": "n_initial_points", "value": "4"}, {"name": "random_state", "value": "4"},
                                         {"name": "acq_optimizer", "value": "sampling"}]),
        ),
    ];
    for (name, settings) in &runs {
        create(
            &d,
            &quadratic(
                name,
                json!({"algorithmName": name, "algorithmSettings": settings}),
                counts.clone(),
            ),
        );
    }
    // Hyperband with r_l 4, eta 2: brackets of 4, 2, 1 trials at 1, 2, 4 epochs; 3, 2 at
    // 2, 4; 3 at 4: 15 trials, then the suggestions end.
    create(
        &d,
        &quadratic(
            "hyperband",
            json!({"algorithmName": "hyperband", "algorithmSettings": [
                {"name": "resource_name", "value": "epochs"}, {"name": "r_l", "value": "4"},
                {"name": "eta", "value": "2"}, {"name": "random_state", "value": "5"}]}),
            json!({"maxTrialCount": 30, "parallelTrialCount": 4}),
        ),
    );
    for (name, _) in &runs {
        let ended = wait_ended(&d, name);
        assert_eq!(
            reason(&ended, "Succeeded"),
            "ExperimentMaxTrialsReached",
            "{name}: {ended}"
        );
        let trials = trials_of(&d, name);
        assert_eq!(trials.len(), 10, "{name}: {ended}");
        let mut seen = BTreeSet::new();
        for t in &trials {
            let (x, y): (f64, f64) = (
                assignment(t, "x").parse().unwrap(),
                assignment(t, "y").parse().unwrap(),
            );
            let e: i64 = assignment(t, "epochs").parse().unwrap();
            assert!(
                (0.0..=1.0).contains(&x) && (0.0..=1.0).contains(&y) && (1..=4).contains(&e),
                "{name}: {t}"
            );
            assert!(seen.insert(format!("{x},{y}")), "{name} repeated a point: {t}");
            assert!(condition(t, "Succeeded").is_some(), "{name}: {t}");
        }
        let best = &ended["status"]["currentOptimalTrial"];
        let loss: f64 = best["observation"]["metrics"][0]["min"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(loss < 0.25, "{name}: {best}");
    }
    let ended = d
        .wait_until(
            &format!("{EXPERIMENTS}/hyperband"),
            Duration::from_secs(90),
            |r| condition(&r.body, "Succeeded").is_some() || condition(&r.body, "Failed").is_some(),
        )
        .body;
    assert_eq!(
        reason(&ended, "Succeeded"),
        "ExperimentSuggestionEndReached",
        "{ended}"
    );
    let mut trials = trials_of(&d, "hyperband");
    assert_eq!(trials.len(), 15, "{ended}");
    // In the order suggested (the Suggestion's list).
    let suggestion = d.get(&format!("{SUGGESTIONS}/hyperband"), d.admin()).body;
    let order: Vec<String> = suggestion["status"]["suggestions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap().to_string())
        .collect();
    trials.sort_by_key(|t| order.iter().position(|n| t["metadata"]["name"] == n.as_str()));
    let epochs: Vec<String> = trials.iter().map(|t| assignment(t, "epochs")).collect();
    let count = |e: &str| epochs.iter().filter(|x| *x == e).count();
    assert_eq!((count("1"), count("2"), count("4")), (4, 5, 6), "{epochs:?}");
    // The first bracket's second rung reruns the two best of its first four.
    let loss = |t: &Value| -> f64 {
        t["status"]["observation"]["metrics"][0]["latest"]
            .as_str()
            .unwrap()
            .parse()
            .unwrap()
    };
    let mut first: Vec<&Value> = trials.iter().filter(|t| assignment(t, "epochs") == "1").collect();
    first.sort_by(|a, b| loss(a).total_cmp(&loss(b)));
    let promoted: BTreeSet<String> = trials
        .iter()
        .filter(|t| assignment(t, "epochs") == "2")
        .take(2)
        .map(|t| assignment(t, "x"))
        .collect();
    let best_two: BTreeSet<String> = first[..2].iter().map(|t| assignment(t, "x")).collect();
    assert_eq!(promoted, best_two, "{epochs:?}");
}
