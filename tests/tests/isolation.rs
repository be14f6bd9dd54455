//! Isolation with the daemon as root (as CI runs it): each namespace's workloads run as
//! a Unix user of their own, read nothing of the daemon's or another namespace's, and
//! get none of the daemon's environment; pipelines and serving still work that way.
//! Each test names its users with a prefix of its own and deletes them at the end.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use serde_json::{json, Value};

const SECRET: &str = "isolation-test-secret-9f2c";

/// Deletes the Unix users (and their groups) a test made, however it ends.
struct Accounts(Vec<String>);

impl Drop for Accounts {
    fn drop(&mut self) {
        for name in &self.0 {
            // Workloads outlive a killed daemon by design: end those of this test's
            // users (by pid, found by uid), or userdel refuses.
            if let Some(uid) = uid_of(name) {
                for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
                        continue;
                    };
                    if std::fs::metadata(entry.path()).is_ok_and(|m| m.uid() == uid) {
                        let _ = Command::new("kill").args(["-9", &pid.to_string()]).output();
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            let _ = Command::new("userdel").arg(name).output();
            let _ = Command::new("groupdel").arg(name).output();
        }
    }
}

fn prefix(tag: &str) -> String {
    format!("t{}{tag}-", std::process::id() % 100_000)
}

fn isolated(prefix: &str, extra: &str) -> Options {
    Options::default()
        .env("HEARTH_ISOLATION_ENABLED", "true")
        .env("AWS_SECRET_ACCESS_KEY", SECRET)
        .env("HEARTH_SERVING_S3_ACCESS_KEY_ID", "isolation-test-key")
        .env("HEARTH_SERVING_S3_SECRET_ACCESS_KEY", SECRET)
        .config(&format!(
            "[jobs]\nbackoff_base_seconds = 0.1\n[isolation]\nuser_prefix = \"{prefix}\"\n{extra}"
        ))
}

fn uid_of(user: &str) -> Option<u32> {
    let out = Command::new("id").args(["-u", user]).output().ok()?;
    String::from_utf8(out.stdout).ok()?.trim().parse().ok()
}

fn job(name: &str, script: &str, container_extra: &str) -> Value {
    let mut container = json!({"name": "main", "image": "busybox", "command": ["sh", "-c", script]});
    if !container_extra.is_empty() {
        let extra: Value = serde_json::from_str(container_extra).unwrap();
        for (k, v) in extra.as_object().unwrap() {
            container[k] = v.clone();
        }
    }
    json!({"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never", "containers": [container]}}}})
}

fn run_job(d: &Daemon, token: &str, ns: &str, name: &str, script: &str) -> String {
    let base = format!("/apis/batch/v1/namespaces/{ns}/jobs");
    let created = d.post_json(&base, Some(token), &job(name, script, ""));
    assert_eq!(created.status, 201, "{created}");
    let done = d.wait_until(&format!("{base}/{name}"), Duration::from_secs(30), |r| {
        r.body["status"]["succeeded"] == 1 || r.body["status"]["failed"].as_u64().unwrap_or(0) > 0
    });
    let log = d
        .get(
            &format!("/hearth/v1/namespaces/{ns}/jobs/{name}/logs"),
            Some(token),
        )
        .text;
    assert_eq!(done.body["status"]["succeeded"], 1, "{done}\nlog:\n{log}");
    log
}

/// Files under `dir` (as root, from the test), first found.
fn first_file(dir: &Path) -> Option<PathBuf> {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for entry in std::fs::read_dir(&d).ok()?.flatten() {
            let p = entry.path();
            let meta = std::fs::symlink_metadata(&p).ok()?;
            if meta.is_dir() {
                stack.push(p);
            } else if meta.is_file() {
                return Some(p);
            }
        }
    }
    None
}

fn pipeline_with_artifacts() -> Value {
    let artifact = json!({"artifactType": {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}});
    json!({
        "pipelineInfo": {"name": "handoff"},
        "schemaVersion": "2.1.0",
        "components": {
            "comp-make": {"executorLabel": "exec-make",
                "outputDefinitions": {"artifacts": {"out": artifact.clone()}}},
            "comp-use": {"executorLabel": "exec-use",
                "inputDefinitions": {"artifacts": {"data": artifact.clone()}},
                "outputDefinitions": {"artifacts": {"copy": artifact}}}
        },
        "deploymentSpec": {"executors": {
            "exec-make": {"container": {"image": "alpine", "command": ["sh", "-c",
                "printf bob-artifact-data > \"$0\"", "{{$.outputs.artifacts['out'].path}}"]}},
            "exec-use": {"container": {"image": "alpine", "command": ["sh", "-c",
                "cat \"$0\" > \"$1\" && id -u >> \"$1\"",
                "{{$.inputs.artifacts['data'].path}}", "{{$.outputs.artifacts['copy'].path}}"]}}
        }},
        "root": {"dag": {"tasks": {
            "make": {"taskInfo": {"name": "make"}, "componentRef": {"name": "comp-make"}},
            "use": {"taskInfo": {"name": "use"}, "componentRef": {"name": "comp-use"},
                "dependentTasks": ["make"],
                "inputs": {"artifacts": {"data": {"taskOutputArtifact": {"producerTask": "make", "outputArtifactKey": "out"}}}}}
        }}}
    })
}

/// A predictor on the host's own Python that answers with the model file's contents.
const PREDICTOR: &str = r#"
import http.server, json, os
model = open(os.path.join(os.environ["MODEL_DIR"], "model.txt")).read()
class H(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        self.rfile.read(int(self.headers.get("content-length", 0)))
        body = json.dumps({"predictions": [model, os.getuid()]}).encode()
        self.send_response(200); self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body))); self.end_headers(); self.wfile.write(body)
    def log_message(self, *a): pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

fn probe_script(paths: &[(&str, &Path)]) -> String {
    let mut script = String::from("echo uid=$(id -u); ");
    for (label, path) in paths {
        script.push_str(&format!(
            "if out=$(cat '{p}' 2>&1 >/dev/null); then echo 'READ {label}'; else echo \"DENIED {label}: $out\"; fi; ",
            p = path.display()
        ));
    }
    script.push_str("echo ENV-BEGIN; env; echo ENV-END; echo cwd=$(pwd)");
    script
}

fn assert_denied(log: &str, labels: &[&str], uid: u32) {
    assert!(
        log.contains(&format!("uid={uid}\n")),
        "not alice's uid {uid}:\n{log}"
    );
    for label in labels {
        let line = log
            .lines()
            .find(|l| l.contains(&format!(" {label}")))
            .unwrap_or_else(|| panic!("no line for {label}:\n{log}"));
        assert!(
            line.starts_with("DENIED") && line.contains("Permission denied"),
            "{label}: {line}\n{log}"
        );
    }
    assert!(
        !log.contains(SECRET),
        "a daemon secret reached the workload:\n{log}"
    );
    let env: Vec<&str> = log
        .split("ENV-BEGIN\n")
        .nth(1)
        .and_then(|rest| rest.split("ENV-END").next())
        .unwrap_or_default()
        .lines()
        .collect();
    for var in &env {
        let name = var.split('=').next().unwrap_or_default();
        assert!(
            ![
                "AWS_",
                "NOTIFY_SOCKET",
                "HEARTH_SERVING",
                "HEARTH_ISOLATION",
                "HEARTH_CONFIG"
            ]
            .iter()
            .any(|p| name.starts_with(p)),
            "the daemon's {name} reached the workload"
        );
    }
    assert!(env.iter().any(|v| v.starts_with("HOME=")), "{env:?}");
}

#[test]
fn a_users_workloads_run_as_their_namespace_user_and_read_nothing_else() {
    let p = prefix("a");
    let _accounts = Accounts(vec![format!("{p}alice"), format!("{p}bob")]);
    let mut d = spawn_daemon_with(isolated(&p, ""));
    let alice = d.create_user("alice");
    let bob = d.create_user("bob");

    // The node view says how workloads run.
    let node = d.get("/hearth/v1/node", Some(&alice));
    assert_eq!(node.body["isolation"]["isolated"], true, "{node}");

    // bob's job, pipeline (an artifact passed between two steps) and service (a file://
    // model) all work as bob's user.
    let bob_log = run_job(&d, &bob, "bob", "bobjob", "echo bob-private-log; id -u");
    let bob_uid = uid_of(&format!("{p}bob")).expect("bob's Unix user");
    assert!(
        bob_log.contains(&format!("bob-private-log\n{bob_uid}\n")),
        "{bob_log}"
    );

    let run = d.post_json(
        "/apis/v2beta1/runs",
        Some(&bob),
        &json!({"display_name": "handoff", "pipeline_spec": pipeline_with_artifacts()}),
    );
    assert_eq!(run.status, 200, "{run}");
    let run_id = run.body["run_id"].as_str().unwrap().to_string();
    let done = d.wait_until(
        &format!("/apis/v2beta1/runs/{run_id}"),
        Duration::from_secs(60),
        |r| r.body["state"] == "SUCCEEDED" || r.body["state"] == "FAILED",
    );
    assert_eq!(done.body["state"], "SUCCEEDED", "{done}\n{}", d.logs());
    let bob_artifacts = d.data_dir.join("artifacts/bob");
    let copy = std::fs::read_dir(&bob_artifacts)
        .unwrap()
        .flatten()
        .find_map(|run| {
            let mut stack = vec![run.path()];
            while let Some(dir) = stack.pop() {
                for e in std::fs::read_dir(&dir).ok()?.flatten() {
                    if e.file_name() == "copy" && e.path().is_file() {
                        return Some(e.path());
                    }
                    if e.path().is_dir() {
                        stack.push(e.path());
                    }
                }
            }
            None
        })
        .expect("the second step's artifact");
    assert_eq!(
        std::fs::read_to_string(&copy).unwrap(),
        format!("bob-artifact-data{bob_uid}\n")
    );
    assert_eq!(std::fs::metadata(&copy).unwrap().uid(), bob_uid);

    let model_src = tempfile::Builder::new()
        .prefix("hearth-iso-model-")
        .tempdir()
        .unwrap();
    std::fs::write(model_src.path().join("model.txt"), "bob-model-weights").unwrap();
    // The source is bob's: his user reads it (the daemon copies it as him).
    Command::new("chown")
        .args(["-R", &format!("{p}bob"), &model_src.path().display().to_string()])
        .status()
        .unwrap();
    let isvc = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "echo", "annotations": {"serving.hearth.dev/require-token": "true"}},
        "spec": {"predictor": {"minReplicas": 1, "containers": [{"name": "kserve-container",
            "image": "python", "command": ["/usr/bin/python3", "-c", PREDICTOR],
            "storageUri": format!("file://{}", model_src.path().display())}]}}});
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/bob/inferenceservices";
    let created = d.post_json(base, Some(&bob), &isvc);
    assert_eq!(created.status, 201, "{created}");
    let ready = d.wait_until(&format!("{base}/echo"), Duration::from_secs(60), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    assert!(ready.to_string().contains("requests need a token"), "{ready}");
    let predict = |auth: &dyn Fn(reqwest::blocking::RequestBuilder) -> reqwest::blocking::RequestBuilder| {
        auth(
            d.client
                .post(format!("{}/v1/models/echo:predict", d.serving_url()))
                .header("Host", "echo.bob.example.com")
                .json(&json!({"instances": [1]})),
        )
        .send()
        .unwrap()
    };
    // require-token: none, or alice's, is refused; bob's bearer or web login passes.
    assert!(predict(&|r| r).status().is_client_error());
    assert!(predict(&|r| r.bearer_auth(&alice)).status().is_client_error());
    assert_eq!(
        predict(&|r| r.basic_auth("bob", Some(&bob))).status().as_u16(),
        200
    );
    let predicted = predict(&|r| r.bearer_auth(&bob));
    assert_eq!(predicted.status().as_u16(), 200, "{ready}");
    let body: Value = predicted.json().unwrap();
    assert_eq!(body["predictions"], json!(["bob-model-weights", bob_uid]));

    // A model file of root's that bob's user cannot read is refused, never copied.
    let secret_model = tempfile::Builder::new()
        .prefix("hearth-iso-root-")
        .tempdir()
        .unwrap();
    std::fs::write(secret_model.path().join("model.txt"), SECRET).unwrap();
    std::fs::set_permissions(
        secret_model.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let mut stolen = isvc.clone();
    stolen["metadata"] = json!({"name": "stolen"});
    stolen["spec"]["predictor"]["containers"][0]["storageUri"] =
        json!(format!("file://{}", secret_model.path().display()));
    assert_eq!(d.post_json(base, Some(&bob), &stolen).status, 201);
    let failed = d.wait_until(&format!("{base}/stolen"), Duration::from_secs(30), |r| {
        r.to_string().contains("Permission denied")
    });
    assert!(!failed.to_string().contains(SECRET));
    assert!(
        failed.to_string().contains("any local process may call it"),
        "{failed}"
    );

    // alice's job reads none of it.
    let bob_job_log = d
        .data_dir
        .join("workloads")
        .read_dir()
        .unwrap()
        .flatten()
        .map(|e| e.path().join("output.log"))
        .find(|p| std::fs::read_to_string(p).is_ok_and(|t| t.contains("bob-private-log")))
        .expect("bob's job log");
    let models = d.data_dir.join("serving/models");
    let bob_model = first_file(&models).expect("bob's model cache");
    let targets: Vec<(&str, PathBuf)> = vec![
        ("admin-token", d.data_dir.join("admin.token")),
        ("database", d.data_dir.join("hearth.db")),
        ("bob-artifact", copy.clone()),
        ("bob-model", bob_model),
        ("bob-log", bob_job_log),
    ];
    let refs: Vec<(&str, &Path)> = targets.iter().map(|(l, p)| (*l, p.as_path())).collect();
    let labels: Vec<&str> = targets.iter().map(|(l, _)| *l).collect();
    let alice_uid = || uid_of(&format!("{p}alice")).expect("alice's Unix user");
    let log = run_job(&d, &alice, "alice", "probe", &probe_script(&refs));
    assert_denied(&log, &labels, alice_uid());
    // Started in a directory of its own, not the daemon's.
    assert!(
        log.contains(&format!("cwd={}", d.data_dir.join("workloads").display())),
        "{log}"
    );

    // A step of alice's that points its artifact at bob's (executor_output.json, as
    // KFP lets a step set its artifact's uri) gets nothing of it through the API.
    let output = json!({"artifacts": {"out": {"artifacts": [{"uri": copy.display().to_string()}]}}});
    let spec = json!({
        "pipelineInfo": {"name": "pointer"},
        "schemaVersion": "2.1.0",
        "components": {"comp-make": {"executorLabel": "exec-make",
            "outputDefinitions": {"artifacts": {"out": {"artifactType": {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}}}}}},
        "deploymentSpec": {"executors": {"exec-make": {"container": {"image": "alpine", "command": ["sh", "-c",
            format!("printf mine > \"$0\"; printf '%s' '{output}' > executor_output.json"),
            "{{$.outputs.artifacts['out'].path}}"]}}}},
        "root": {"dag": {"tasks": {"make": {"taskInfo": {"name": "make"}, "componentRef": {"name": "comp-make"}}}}}
    });
    let run = d.post_json(
        "/apis/v2beta1/runs",
        Some(&alice),
        &json!({"display_name": "pointer", "pipeline_spec": spec}),
    );
    assert_eq!(run.status, 200, "{run}");
    let run_id = run.body["run_id"].as_str().unwrap().to_string();
    let done = d.wait_until(
        &format!("/apis/v2beta1/runs/{run_id}"),
        Duration::from_secs(30),
        |r| r.body["state"] == "SUCCEEDED" || r.body["state"] == "FAILED",
    );
    assert_eq!(done.body["state"], "SUCCEEDED", "{done}");
    let task = done.body["run_details"]["task_details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["display_name"] == "make")
        .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let got = d.get(
        &format!("/hearth/v1/pipelines/runs/{run_id}/tasks/{task}/artifacts/out"),
        Some(&alice),
    );
    assert!(
        got.status >= 400 && !got.text.contains("bob-artifact-data"),
        "{got}"
    );

    // Nothing of root's under the data dir is readable or writable by group or others;
    // its directories may at most be traversable (0711), so users reach their own
    // directories, which are 0700 (what a workload writes inside is its own business).
    let mut stack = vec![d.data_dir.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if path == d.log_path() || meta.file_type().is_symlink() {
                continue;
            }
            let loose = if meta.is_dir() && meta.uid() == 0 {
                0o066
            } else {
                0o077
            };
            assert_eq!(
                meta.mode() & loose,
                0,
                "{} is mode {:o}",
                path.display(),
                meta.mode() & 0o7777
            );
            if meta.is_dir() && meta.uid() == 0 {
                stack.push(path);
            }
        }
    }

    // securityContext: root is refused with the reason, alice's own uid is honoured.
    let jobs = "/apis/batch/v1/namespaces/alice/jobs";
    let root = d.post_json(
        jobs,
        Some(&alice),
        &job("root", "id -u", r#"{"securityContext": {"runAsUser": 0}}"#),
    );
    root.assert_status(422, "Invalid");
    assert!(
        root.to_string().contains("securityContext.runAsUser")
            && root.to_string().contains("privileged_namespaces"),
        "{root}"
    );
    let own = job(
        "own",
        "id -u",
        &format!(
            r#"{{"securityContext": {{"runAsUser": {}, "runAsNonRoot": true}}}}"#,
            alice_uid()
        ),
    );
    assert_eq!(d.post_json(jobs, Some(&alice), &own).status, 201);

    // After a restart: a job that was running keeps its user, new ones get it too.
    let long = d.post_json(jobs, Some(&alice), &job("long", "sleep 2; id -u", ""));
    assert_eq!(long.status, 201, "{long}");
    d.wait_until(&format!("{jobs}/long"), Duration::from_secs(15), |r| {
        r.body["status"]["active"] == 1
    });
    d.restart();
    let done = d.wait_until(&format!("{jobs}/long"), Duration::from_secs(30), |r| {
        r.body["status"]["succeeded"] == 1
    });
    assert_eq!(done.body["status"]["succeeded"], 1, "{done}");
    let long_log = d
        .get("/hearth/v1/namespaces/alice/jobs/long/logs", Some(&alice))
        .text;
    assert_eq!(long_log, format!("{}\n", alice_uid()));
    let log = run_job(&d, &alice, "alice", "probe-again", &probe_script(&refs));
    assert_denied(&log, &labels, alice_uid());
}

#[test]
fn a_mapped_account_runs_the_jobs_and_owns_what_they_write() {
    let p = prefix("m");
    let account = format!("{p}carol");
    let home = tempfile::Builder::new()
        .prefix("hearth-iso-home-")
        .tempdir()
        .unwrap();
    let carol_home = home.path().join("carol");
    let made = Command::new("useradd")
        .args([
            "--create-home",
            "--home-dir",
            &carol_home.display().to_string(),
            &account,
        ])
        .output()
        .unwrap();
    let _accounts = Accounts(vec![account.clone()]);
    assert!(made.status.success(), "{made:?}");
    // tempdir is 0700 root: carol must reach her home through it.
    std::fs::set_permissions(home.path(), std::os::unix::fs::PermissionsExt::from_mode(0o711)).unwrap();
    let uid = uid_of(&account).unwrap();

    let d = spawn_daemon_with(isolated(&p, &format!("accounts = {{ carol = \"{account}\" }}")));
    let carol = d.create_user("carol");
    let log = run_job(
        &d,
        &carol,
        "carol",
        "writes",
        "echo $USER $HOME; id -u; echo made > \"$HOME/by-job\"",
    );
    assert_eq!(log, format!("{account} {}\n{uid}\n", carol_home.display()));
    assert_eq!(std::fs::metadata(carol_home.join("by-job")).unwrap().uid(), uid);
}

#[test]
fn a_job_cannot_start_in_a_directory_its_user_cannot_read() {
    let p = prefix("w");
    let _accounts = Accounts(vec![format!("{p}dave")]);
    let d = spawn_daemon_with(isolated(&p, ""));
    let dave = d.create_user("dave");
    let base = "/apis/batch/v1/namespaces/dave/jobs";
    // /root is 0700: a namespace's user cannot enter it.
    let spec = job("nosy", "ls", r#"{"workingDir": "/root"}"#);
    assert_eq!(d.post_json(base, Some(&dave), &spec).status, 201);
    let done: Reply = d.wait_until(&format!("{base}/nosy"), Duration::from_secs(30), |r| {
        r.body["status"]["failed"].as_u64().unwrap_or(0) > 0
    });
    let log = d
        .get("/hearth/v1/namespaces/dave/jobs/nosy/logs", Some(&dave))
        .text;
    assert!(log.contains("Permission denied"), "{done}\n{log}");
}

#[test]
fn without_isolation_the_node_view_says_namespaces_are_not_isolated() {
    // The harness's default: isolation off, so workloads run as the daemon's (root) user.
    let d = hearth_e2e::spawn_daemon();
    let node = d.get("/hearth/v1/node", d.admin());
    assert_eq!(node.body["isolation"]["isolated"], false, "{node}");
    assert!(
        node.body["isolation"]["detail"]
            .as_str()
            .unwrap()
            .contains("not isolated"),
        "{node}"
    );
    let log = run_job(&d, d.admin().unwrap(), "team", "who", "id -u");
    assert_eq!(log, "0\n");
}
