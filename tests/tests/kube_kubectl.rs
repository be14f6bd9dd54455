//! The real kubectl 1.35 (`hearth_e2e::kubectl()`, installed by scripts/test) against
//! a spawned daemon with nothing but `<data-dir>/kubeconfig`: the read-only views
//! (nodes, namespaces, pods with their logs, cluster serving runtimes), `apply -f` of
//! an upstream Job document, `wait`, `logs`, `describe`, `delete -f`, `delete
//! --cascade=orphan|foreground`, and the `Invalid` and `Forbidden` answers as kubectl
//! prints them.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hearth_e2e::{hearth_command, kubectl, spawn_daemon_with, Daemon, Options};
use serde_json::Value;

struct Kubectl {
    bin: PathBuf,
    kubeconfig: PathBuf,
    home: tempfile::TempDir,
}

impl Kubectl {
    fn for_admin(d: &Daemon) -> Option<Kubectl> {
        Some(Kubectl {
            bin: kubectl()?,
            kubeconfig: d.data_dir.join("kubeconfig"),
            home: tempfile::tempdir().unwrap(),
        })
    }

    /// kubectl with only the kubeconfig, and a HOME of its own so its discovery cache
    /// and any `~/.kube/config` of the machine stay out of the test.
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.bin);
        cmd.arg("--kubeconfig")
            .arg(&self.kubeconfig)
            .args(args)
            .env_remove("KUBECONFIG")
            .env("HOME", self.home.path())
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command(args).output().expect("run kubectl")
    }

    /// Runs and expects success; answers stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(out.status.success(), "kubectl {args:?}: {}", text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn json(&self, args: &[&str]) -> Value {
        let mut all = args.to_vec();
        all.extend(["-o", "json"]);
        let out = self.ok(&all);
        serde_json::from_str(&out).unwrap_or_else(|e| panic!("{e}: {out}"))
    }

    /// `kubectl apply -f` of `yaml` (written to a file, as users do).
    fn apply(&self, yaml: &str) -> Output {
        let file = self.home.path().join("apply.yaml");
        std::fs::write(&file, yaml).unwrap();
        self.run(&["apply", "-f", file.to_str().unwrap()])
    }
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn daemon(gpus: u32) -> Daemon {
    spawn_daemon_with(Options::default().config(&format!(
        "[gpu]\nsimulate = {gpus}\n[jobs]\nbackoff_base_seconds = 0.1\n"
    )))
}

/// `hearth kubeconfig` for another user's token.
fn user_kubeconfig(d: &Daemon, token: &str, dir: &Path) -> PathBuf {
    let out = hearth_command()
        .arg("kubeconfig")
        .arg("--data-dir")
        .arg(&d.data_dir)
        .arg("--config")
        .arg(d.config_path())
        .arg("--token")
        .arg(token)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join("user.kubeconfig");
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

#[test]
fn get_nodes_shows_this_host_with_the_simulated_gpus() {
    let d = daemon(3);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let nodes = k.json(&["get", "nodes"]);
    assert_eq!(nodes["kind"], "List");
    let node = &nodes["items"][0];
    assert_eq!(node["kind"], "Node");
    assert_eq!(node["status"]["allocatable"]["nvidia.com/gpu"], "3");
    assert_eq!(node["status"]["capacity"]["nvidia.com/gpu"], "3");
    assert_eq!(node["metadata"]["labels"]["nvidia.com/gpu.present"], "true");
    assert_eq!(node["metadata"]["labels"]["hearth.dev/gpu.simulated"], "true");
    assert_eq!(node["status"]["conditions"][0]["type"], "Ready");
    let allocatable = k.ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[0].status.allocatable.nvidia\\.com/gpu}",
    ]);
    assert_eq!(allocatable, "3");
    let name = node["metadata"]["name"].as_str().unwrap();
    let one = k.json(&["get", "node", name]);
    assert_eq!(one["status"]["nodeInfo"]["operatingSystem"], "linux");
    // Server-side printing: the Node printer's columns.
    let table = k.ok(&["get", "nodes"]);
    assert!(table.starts_with("NAME"), "{table}");
    for column in ["STATUS", "ROLES", "AGE", "VERSION", "Ready", "control-plane"] {
        assert!(table.contains(column), "{column}: {table}");
    }
    assert!(table.contains(name), "{table}");
}

#[test]
fn namespaces_are_the_callers_own_and_another_users_are_forbidden() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let alice = d.create_user("alice");
    d.create_user("bob");
    let all = k.json(&["get", "namespaces"]);
    let names: Vec<&str> = all["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["metadata"]["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"alice") && names.contains(&"bob"), "{names:?}");
    assert_eq!(all["items"][0]["status"]["phase"], "Active");
    let dir = tempfile::tempdir().unwrap();
    let as_alice = Kubectl {
        bin: k.bin.clone(),
        kubeconfig: user_kubeconfig(&d, &alice, dir.path()),
        home: tempfile::tempdir().unwrap(),
    };
    let own = as_alice.json(&["get", "namespaces"]);
    assert_eq!(own["items"].as_array().unwrap().len(), 1, "{own}");
    assert_eq!(own["items"][0]["metadata"]["name"], "alice");
    let out = as_alice.run(&["get", "pods", "-n", "bob"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Error from server (Forbidden)"), "{}", text(&out));
    let out = as_alice.run(&["get", "namespace", "bob"]);
    assert!(!out.status.success(), "{}", text(&out));
}

const JOB: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: pi
spec:
  backoffLimit: 0
  template:
    spec:
      containers:
      - name: pi
        image: perl:5.34.0
        command: ["sh", "-c", "echo hello from pi; sleep 0.5; echo done"]
      restartPolicy: Never
"#;

#[test]
fn a_jobs_attempt_is_a_pod_with_its_labels_owner_status_and_log() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let out = k.apply(JOB);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job.batch/pi created"),
        "{}",
        text(&out)
    );
    k.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]);
    let pods = k.json(&["get", "pods", "-l", "job-name=pi"]);
    let pod = &pods["items"][0];
    assert_eq!(pod["kind"], "Pod");
    assert_eq!(pod["status"]["phase"], "Succeeded");
    let job = k.json(&["get", "job", "pi"]);
    let uid = job["metadata"]["uid"].as_str().unwrap();
    assert_eq!(pod["metadata"]["labels"]["controller-uid"], uid);
    assert_eq!(pod["metadata"]["labels"]["batch.kubernetes.io/job-name"], "pi");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["kind"], "Job");
    assert_eq!(pod["metadata"]["ownerReferences"][0]["uid"], uid);
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 0, "{pod}");
    assert_eq!(terminated["reason"], "Completed");
    assert_eq!(pod["spec"]["containers"][0]["command"][0], "sh");
    let name = pod["metadata"]["name"].as_str().unwrap();
    assert!(name.starts_with("pi-"), "{name}");
    let log = k.ok(&["logs", name]);
    assert_eq!(log, "hello from pi\ndone\n");
    let tail = k.ok(&["logs", name, "--tail=1"]);
    assert_eq!(tail, "done\n");
    let followed = k.ok(&["logs", "-f", name]);
    assert_eq!(followed, "hello from pi\ndone\n");
    // `--timestamps`: RFC3339Nano and a space before each line, in the Job's run.
    let stamped = k.ok(&["logs", name, "--timestamps"]);
    let stamps: Vec<(&str, &str)> = stamped.lines().map(|l| l.split_once(' ').unwrap()).collect();
    assert_eq!(
        stamps.iter().map(|(_, t)| *t).collect::<Vec<_>>(),
        ["hello from pi", "done"],
        "{stamped}"
    );
    let started = terminated["startedAt"].as_str().unwrap();
    let finished = terminated["finishedAt"].as_str().unwrap();
    for (at, _) in &stamps {
        assert!(at.ends_with('Z') && at.len() > 20, "{stamped}");
        // Same format and zone: the text order is the time order (to the second).
        assert!(
            at[..19] >= started[..19] && at[..19] <= finished[..19],
            "{at} not in {started}..{finished}"
        );
    }
    assert!(stamps[0].0 < stamps[1].0, "{stamped}");
    // `--since` and `--since-time`: the 0.5 s sleep splits the lines.
    assert_eq!(k.ok(&["logs", name, "--since=1h"]), "hello from pi\ndone\n");
    // kubectl sends `sinceTime` to the second.
    let first_second = format!("--since-time={}Z", &stamps[0].0[..19]);
    assert_eq!(k.ok(&["logs", name, &first_second]), "hello from pi\ndone\n");
    assert_eq!(k.ok(&["logs", name, "--since-time=2099-01-01T00:00:00Z"]), "");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(k.ok(&["logs", name, "--since=1s"]), "");
    assert_eq!(k.ok(&["logs", name, "--limit-bytes=8"]), "hello fr");
    let out = k.run(&["logs", name, "--previous"]);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("previous terminated container"),
        "{}",
        text(&out)
    );
    // A field selector on the pods' own name.
    let by_name = k.json(&[
        "get",
        "pods",
        "--field-selector",
        &format!("metadata.name={name}"),
    ]);
    assert_eq!(by_name["items"].as_array().unwrap().len(), 1);
    let table = k.ok(&["get", "pods"]);
    assert!(table.contains(name), "{table}");
    for column in ["READY", "STATUS", "RESTARTS", "AGE", "0/1", "Completed"] {
        assert!(table.contains(column), "{column}: {table}");
    }
    let jobs = k.ok(&["get", "jobs"]);
    for column in ["STATUS", "COMPLETIONS", "DURATION", "AGE", "Complete", "1/1"] {
        assert!(jobs.contains(column), "{column}: {jobs}");
    }
    let namespaces = k.ok(&["get", "namespaces"]);
    assert!(namespaces.contains("Active"), "{namespaces}");
    // The Job's events, found by `involvedObject.*`, as `describe` shows them.
    let events = k.json(&[
        "get",
        "events",
        "--field-selector",
        "involvedObject.kind=Job,involvedObject.name=pi",
    ]);
    let reasons: Vec<&str> = events["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["reason"].as_str().unwrap())
        .collect();
    assert!(reasons.contains(&"SuccessfulCreate"), "{events}");
    assert_eq!(events["items"][0]["involvedObject"]["uid"], uid);
    assert_eq!(events["items"][0]["source"]["component"], "hearth");
    let described = k.ok(&["describe", "job", "pi"]);
    assert!(described.contains("SuccessfulCreate"), "{described}");
    let described = k.ok(&["describe", "pod", name]);
    assert!(described.contains("Succeeded"), "{described}");
}

#[test]
fn logs_of_a_job_find_its_pod() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    // Another Job's pod comes first: the selector must tell them apart.
    let other = JOB
        .replace("name: pi\n", "name: aaa\n")
        .replace("hello from pi", "not me");
    let out = k.apply(&other);
    assert!(out.status.success(), "{}", text(&out));
    k.ok(&["wait", "--for=condition=complete", "job/aaa", "--timeout=60s"]);
    let out = k.apply(JOB);
    assert!(out.status.success(), "{}", text(&out));
    let job = k.json(&["get", "job", "pi"]);
    assert_eq!(
        job["spec"]["selector"]["matchLabels"]["batch.kubernetes.io/controller-uid"],
        job["metadata"]["uid"]
    );
    let followed = k.ok(&["logs", "-f", "job/pi"]);
    assert_eq!(followed, "hello from pi\ndone\n");
    let log = k.ok(&["logs", "job/pi"]);
    assert_eq!(log, "hello from pi\ndone\n");
}

#[test]
fn watching_pods_sees_an_attempt_run_and_finish() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let mut watch = k
        .command(&["get", "pods", "-w", "-o", "json", "--request-timeout=20s"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(500));
    let out = k.apply(JOB);
    assert!(out.status.success(), "{}", text(&out));
    k.ok(&["wait", "--for=condition=complete", "job/pi", "--timeout=60s"]);
    std::thread::sleep(Duration::from_millis(1500));
    let _ = watch.kill();
    let out = watch.wait_with_output().unwrap();
    let stream = String::from_utf8_lossy(&out.stdout);
    let phases: Vec<String> = serde_json::Deserializer::from_str(&stream)
        .into_iter::<Value>()
        .filter_map(Result::ok)
        .map(|p| p["status"]["phase"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(phases.contains(&"Succeeded".to_string()), "{phases:?}\n{stream}");
    assert!(phases.len() >= 2, "{phases:?}");
    // `get -w` printing as a table (Table for the list, then watch events).
    for what in ["pods", "jobs"] {
        let out = k.run(&["get", what, "-w", "--request-timeout=2s"]);
        let printed = String::from_utf8_lossy(&out.stdout);
        assert!(
            printed.starts_with("NAME") && printed.contains("pi"),
            "{}",
            text(&out)
        );
        assert!(
            !String::from_utf8_lossy(&out.stderr).contains("decode"),
            "{}",
            text(&out)
        );
    }
}

#[test]
fn cluster_serving_runtimes_list_the_runtime_table() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let runtimes = k.json(&["get", "clusterservingruntimes"]);
    let first = &runtimes["items"][0];
    assert_eq!(first["kind"], "ClusterServingRuntime");
    assert!(first["spec"]["supportedModelFormats"]
        .as_array()
        .is_some_and(|f| !f.is_empty()));
    let name = first["metadata"]["name"].as_str().unwrap();
    let one = k.json(&["get", "clusterservingruntime", name]);
    assert_eq!(one["metadata"]["name"], name);
}

const SLOW_JOB: &str = r#"apiVersion: batch/v1
kind: Job
metadata:
  name: slow
  labels:
    team: a
spec:
  backoffLimit: 0
  template:
    spec:
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "sleep 30"]
      restartPolicy: Never
"#;

#[test]
fn apply_creates_leaves_unchanged_configures_refuses_and_deletes() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let out = k.apply(SLOW_JOB);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job.batch/slow created"),
        "{}",
        text(&out)
    );
    let out = k.apply(SLOW_JOB);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job.batch/slow unchanged"),
        "{}",
        text(&out)
    );
    let out = k.apply(&SLOW_JOB.replace("team: a", "team: b"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("job.batch/slow configured"),
        "{}",
        text(&out)
    );
    assert_eq!(
        k.ok(&["get", "job", "slow", "-o", "jsonpath={.metadata.labels.team}"]),
        "b"
    );
    let yaml = k.ok(&["get", "job", "slow", "-o", "yaml"]);
    assert!(yaml.contains("kind: Job") && yaml.contains("team: b"), "{yaml}");
    // An out-of-range field: kubectl prints the `Invalid` Status with its causes as it
    // does for the API server ("The Job "bad" is invalid: <field>: ..."; the bare
    // "Error from server (Invalid)" is its form for an Invalid without causes).
    let out = k.apply(
        &SLOW_JOB
            .replace("name: slow", "name: bad")
            .replace("backoffLimit: 0", "backoffLimit: -3"),
    );
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("The Job \"bad\" is invalid"), "{}", text(&out));
    assert!(err.contains("spec.backoffLimit: Invalid value"), "{}", text(&out));
    assert!(
        !k.run(&["get", "job", "bad"]).status.success(),
        "an invalid Job was stored"
    );
    let file = k.home.path().join("apply.yaml");
    std::fs::write(&file, SLOW_JOB).unwrap();
    let out = k.ok(&["delete", "-f", file.to_str().unwrap(), "--wait=false"]);
    assert!(out.contains("job.batch \"slow\" deleted"), "{out}");
}

const ISVC: &str = r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
spec:
  predictor:
    minReplicas: 0
    model:
      modelFormat:
        name: sklearn
      storageUri: file:///nonexistent/model
"#;

#[test]
fn apply_of_an_inference_service_uses_merge_patch_and_prints_its_columns() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let out = k.apply(ISVC);
    let created = "inferenceservice.serving.kserve.io/sklearn-iris created";
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(created),
        "{}",
        text(&out)
    );
    let out = k.apply(ISVC);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sklearn-iris unchanged"),
        "{}",
        text(&out)
    );
    let out = k.apply(&ISVC.replace("minReplicas: 0", "minReplicas: 0\n    maxReplicas: 2"));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("sklearn-iris configured"),
        "{}",
        text(&out)
    );
    assert_eq!(
        k.ok(&[
            "get",
            "isvc",
            "sklearn-iris",
            "-o",
            "jsonpath={.spec.predictor.maxReplicas}"
        ]),
        "2"
    );
    let table = k.ok(&["get", "isvc"]);
    for column in ["URL", "READY", "PREV", "LATEST", "AGE", "sklearn-iris"] {
        assert!(table.contains(column), "{column}: {table}");
    }
    let all = k.ok(&["get", "jobs,isvc,pods,nodes"]);
    assert!(
        all.contains("inferenceservice.serving.kserve.io/sklearn-iris"),
        "{all}"
    );
    assert!(all.contains("node/"), "{all}");
    let runtimes = k.ok(&["get", "clusterservingruntimes"]);
    assert!(runtimes.contains("MODELTYPE"), "{runtimes}");
}

/// A custom predictor (a KServe `containers` predictor) that listens on `$PORT`: Hearth
/// counts a custom container ready once it accepts connections.
const LISTENING_ISVC: &str = r#"apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: web
spec:
  predictor:
    minReplicas: 1
    containers:
    - name: kserve-container
      image: example/web:latest
      command: ["/bin/sh", "-c", "exec python3 -m http.server --bind 127.0.0.1 $PORT"]
"#;

#[test]
fn wait_for_condition_ready_of_an_inference_service_and_describe_it() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    let out = k.apply(LISTENING_ISVC);
    assert!(out.status.success(), "{}", text(&out));
    let waited = k.run(&["wait", "--for=condition=Ready", "isvc/web", "--timeout=90s"]);
    assert!(waited.status.success(), "{}\n{}", text(&waited), d.logs());
    assert!(
        String::from_utf8_lossy(&waited.stdout)
            .contains("inferenceservice.serving.kserve.io/web condition met"),
        "{}",
        text(&waited)
    );
    let ready = k.ok(&[
        "get",
        "isvc",
        "web",
        "-o",
        "jsonpath={.status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert_eq!(ready, "True");
    let pods = k.ok(&["get", "pods", "-l", "serving.kserve.io/inferenceservice=web"]);
    assert!(pods.contains("Running"), "{pods}");
    let described = k.ok(&["describe", "isvc", "web"]);
    assert!(
        described.contains("Name:") && described.contains("web"),
        "{described}"
    );
    let out = k.ok(&["delete", "isvc", "web"]);
    assert!(out.contains("\"web\" deleted"), "{out}");
}

/// A suspended Job document, owned by `owner` (`kubectl get -o json` of it) if any.
fn owned_job(name: &str, owner: Option<&Value>) -> String {
    let references = owner.map_or(String::new(), |owner| {
        format!(
            "  ownerReferences:\n  - apiVersion: batch/v1\n    kind: Job\n    name: {}\n    uid: {}\n    controller: true\n    blockOwnerDeletion: true\n",
            owner["metadata"]["name"].as_str().unwrap(),
            owner["metadata"]["uid"].as_str().unwrap(),
        )
    });
    format!(
        r#"apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
{references}spec:
  suspend: true
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ["sh", "-c", "sleep 30"]
"#
    )
}

#[test]
fn delete_cascade_orphan_keeps_dependents_and_foreground_deletes_them_first() {
    let d = daemon(0);
    let Some(k) = Kubectl::for_admin(&d) else { return };
    for owner in ["keeper", "parent"] {
        let out = k.apply(&owned_job(owner, None));
        assert!(out.status.success(), "{}", text(&out));
    }
    let keeper = k.json(&["get", "job", "keeper"]);
    let parent = k.json(&["get", "job", "parent"]);
    let out = k.apply(&owned_job("kept", Some(&keeper)));
    assert!(out.status.success(), "{}", text(&out));
    let out = k.apply(&owned_job("child", Some(&parent)));
    assert!(out.status.success(), "{}", text(&out));
    let kept = k.json(&["get", "job", "kept"]);
    assert_eq!(
        kept["metadata"]["ownerReferences"][0]["uid"],
        keeper["metadata"]["uid"]
    );

    // --cascade=orphan: the owner goes, its dependent stays without the reference.
    let deleted = k.ok(&["delete", "job", "keeper", "--cascade=orphan"]);
    assert!(deleted.contains("job.batch \"keeper\" deleted"), "{deleted}");
    let kept = k.json(&["get", "job", "kept"]);
    assert!(kept["metadata"]["ownerReferences"].is_null(), "{kept}");
    assert!(kept["metadata"]["deletionTimestamp"].is_null(), "{kept}");

    // --cascade=foreground: kubectl waits until the owner is gone, which is after its
    // dependent.
    let deleted = k.ok(&["delete", "job", "parent", "--cascade=foreground", "--timeout=60s"]);
    assert!(deleted.contains("job.batch \"parent\" deleted"), "{deleted}");
    let gone = k.run(&["get", "job", "child"]);
    assert!(!gone.status.success(), "{}", text(&gone));
    assert!(
        String::from_utf8_lossy(&gone.stderr).contains("NotFound"),
        "{}",
        text(&gone)
    );
    let remaining = k.json(&["get", "jobs"]);
    let names: Vec<&str> = remaining["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|j| j["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, ["kept"]);
}
