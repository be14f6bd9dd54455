//! The OpenAPI v3 documents kubectl reads, driven by the real kubectl 1.35 with only
//! the daemon's kubeconfig: `kubectl explain` prints Hearth's descriptions, `kubectl
//! apply` validates by default (no `--validate=false`: kubectl finds
//! `fieldValidation` on the kind's PATCH operation and sends `fieldValidation=Strict`),
//! applying again is `unchanged` and a changed mutable field `configured`, and a
//! misspelt or mistyped field is refused by the server naming it.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use hearth_e2e::{kubectl, spawn_daemon};
use serde_json::Value;

fn run(kubectl: &Path, kubeconfig: &Path, home: &Path, args: &[&str], stdin: Option<&str>) -> Output {
    use std::io::Write;
    let mut child = Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

const JOB: &str = "apiVersion: batch/v1
kind: Job
metadata:
  name: hello
spec:
  backoffLimit: 1
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: [\"true\"]
";

#[test]
fn kubectl_explains_and_validates_with_the_served_schemas() {
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped: kubectl is not installed (scripts/test installs it; set HEARTH_KUBECTL)");
        return;
    };
    let d = spawn_daemon();
    let home = tempfile::tempdir().unwrap();
    let config = d.kubeconfig_path();
    let kc = |args: &[&str], stdin: Option<&str>| run(&kubectl, &config, home.path(), args, stdin);

    let explain = kc(&["explain", "isvc.spec.predictor"], None);
    let out = text(&explain);
    assert!(explain.status.success(), "{out}");
    assert!(out.contains("KIND:       InferenceService"), "{out}");
    assert!(out.contains("replicas behind Hearth's router"), "{out}");
    assert!(out.contains("canaryTrafficPercent"), "{out}");
    assert!(!out.contains("explainer"), "a refused field is advertised: {out}");

    let explain = kc(&["explain", "job.spec.template.spec.containers"], None);
    let out = text(&explain);
    assert!(explain.status.success(), "{out}");
    assert!(out.contains("GROUP:      batch"), "{out}");
    assert!(out.contains("run as a host process"), "{out}");
    assert!(out.contains("command\t<[]string>"), "{out}");
    assert!(
        !out.contains("volumeMounts"),
        "a refused field is advertised: {out}"
    );

    // Validation on (the default): kubectl reads the v3 documents and leaves checking
    // to the server, which it asks for strictly.
    let apply = kc(&["apply", "-f", "-", "-v=6"], Some(JOB));
    let out = text(&apply);
    assert!(apply.status.success(), "{out}");
    assert!(out.contains("job.batch/hello created"), "{out}");
    assert!(out.contains("/openapi/v3/apis/batch/v1?hash="), "{out}");
    assert!(out.contains("fieldValidation=Strict"), "{out}");

    // Again, and with a changed mutable field: kubectl's strategic merge patch reads
    // the same v3 schema for the Job's patch metadata.
    let again = kc(&["apply", "-f", "-"], Some(JOB));
    assert!(
        text(&again).contains("job.batch/hello unchanged"),
        "{}",
        text(&again)
    );
    let labelled = JOB.replace("  name: hello\n", "  name: hello\n  labels:\n    team: a\n");
    let changed = kc(&["apply", "-f", "-"], Some(&labelled));
    assert!(
        text(&changed).contains("job.batch/hello configured"),
        "{}",
        text(&changed)
    );

    let model = tempfile::tempdir().unwrap();
    let isvc = format!(
        "apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: iris
spec:
  predictor:
    minReplicas: 0
    model:
      modelFormat:
        name: sklearn
      storageUri: {}
",
        model.path().display()
    );
    let apply = kc(&["apply", "-f", "-"], Some(&isvc));
    let out = text(&apply);
    assert!(apply.status.success(), "{out}");
    assert!(
        out.contains("inferenceservice.serving.kserve.io/iris created"),
        "{out}"
    );

    // A misspelt field is refused by name, and nothing is stored.
    let bad = JOB
        .replace("name: hello", "name: typo")
        .replace("image: busybox", "imagee: busybox");
    let apply = kc(&["apply", "-f", "-"], Some(&bad));
    let out = text(&apply);
    assert!(!apply.status.success(), "{out}");
    // kubectl prints the server's `Invalid` Status as `The Job "typo" is invalid: ...`.
    assert!(out.contains("The Job \"typo\" is invalid"), "{out}");
    assert!(out.contains("spec.template.spec.containers[0].imagee"), "{out}");
    let get = kc(&["get", "job", "typo", "-o", "json"], None);
    assert!(!get.status.success(), "{}", text(&get));

    // A mistyped one too.
    let bad = JOB
        .replace("name: hello", "name: typo")
        .replace("backoffLimit: 1", "backoffLimit: many");
    let apply = kc(&["apply", "-f", "-"], Some(&bad));
    let out = text(&apply);
    assert!(!apply.status.success(), "{out}");
    assert!(out.contains("backoffLimit"), "{out}");

    let job: Value =
        serde_json::from_slice(&kc(&["get", "job", "hello", "-o", "json"], None).stdout).unwrap();
    assert_eq!(job["spec"]["backoffLimit"], 1, "{job}");
}
