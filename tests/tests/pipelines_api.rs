//! The KFP v2beta1 API over HTTP, and the run controller's durability: a `kill -9` of
//! the daemon mid-run, then a restart, completes the run without re-running a step.

use std::time::Duration;

use hearth_e2e::{spawn_daemon, Daemon};
use reqwest::Method;
use serde_json::{json, Value};

const DURABLE: &str = include_str!("../fixtures/pipelines/durable.yaml");

fn upload(d: &Daemon, token: &str, name: &str, yaml: &str) -> hearth_e2e::Reply {
    let boundary = "hearthpipelinestestboundary";
    let body = format!(
        "--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"p.yaml\"\r\nContent-Type: application/octet-stream\r\n\r\n{yaml}\r\n--{boundary}--\r\n"
    );
    d.send_body(
        Method::POST,
        &format!("/apis/v2beta1/pipelines/upload?name={name}"),
        Some(token),
        &format!("multipart/form-data; boundary={boundary}"),
        body,
    )
}

fn version_of(d: &Daemon, token: &str, pipeline_id: &str) -> String {
    let v = d.get(
        &format!("/apis/v2beta1/pipelines/{pipeline_id}/versions"),
        Some(token),
    );
    assert_eq!(v.status, 200, "{v}");
    v.body["pipeline_versions"][0]["pipeline_version_id"]
        .as_str()
        .unwrap()
        .to_string()
}

fn task_states(run: &Value) -> Vec<(String, String)> {
    let mut out: Vec<(String, String)> = run["run_details"]["task_details"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["display_name"].as_str().unwrap().to_string(),
                t["state"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn kill9_mid_run_then_restart_completes_without_rerunning_a_step() {
    let mut d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let up = upload(&d, &token, "durable", DURABLE);
    assert_eq!(up.status, 200, "{up}");
    let pid = up.body["pipeline_id"].as_str().unwrap().to_string();
    let vid = version_of(&d, &token, &pid);
    let dir = tempfile::tempdir().unwrap();
    let marker = dir.path().join("marker");
    let run = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({
            "display_name": "durable",
            "pipeline_version_reference": {"pipeline_id": pid, "pipeline_version_id": vid},
            "runtime_config": {"parameters": {"marker": marker.display().to_string()}},
        }),
    );
    assert_eq!(run.status, 200, "{run}");
    let run_id = run.body["run_id"].as_str().unwrap().to_string();
    // Wait until step two runs, then kill the daemon under it.
    d.wait_until(
        &format!("/apis/v2beta1/runs/{run_id}"),
        Duration::from_secs(30),
        |r| task_states(&r.body).contains(&("two".into(), "RUNNING".into())),
    );
    d.kill9();
    d.restart();
    let done = d.wait_until(
        &format!("/apis/v2beta1/runs/{run_id}"),
        Duration::from_secs(60),
        |r| r.body["state"] == "SUCCEEDED" || r.body["state"] == "FAILED",
    );
    assert_eq!(done.body["state"], "SUCCEEDED", "{done}");
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "one\ntwo\nhello two\n");
    let three = done.body["run_details"]["task_details"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["display_name"] == "three")
        .unwrap()["task_id"]
        .as_str()
        .unwrap()
        .to_string();
    let out = d.get(
        &format!("/hearth/v1/pipelines/runs/{run_id}/tasks/{three}/outputs"),
        Some(&token),
    );
    assert_eq!(
        out.body["outputs"]["parameters"]["said"], "hello hello two",
        "{out}"
    );
    let log = d.get(
        &format!("/hearth/v1/pipelines/runs/{run_id}/tasks/{three}/logs"),
        Some(&token),
    );
    assert_eq!(log.status, 200, "{log}");
}

#[test]
fn api_shapes_filters_errors_and_isolation() {
    let d = spawn_daemon();
    let admin = d.admin().unwrap().to_string();
    assert_eq!(
        d.get("/apis/v2beta1/healthz", Some(&admin)).body["multi_user"],
        false
    );

    // Experiments: the SDK's integer filter and the documented name form both work.
    for name in ["alpha", "beta"] {
        let e = d.post_json(
            "/apis/v2beta1/experiments",
            Some(&admin),
            &json!({"display_name": name, "namespace": "default"}),
        );
        assert_eq!(e.status, 200, "{e}");
    }
    let f1 = r#"{"predicates": [{"operation": 1, "key": "display_name", "stringValue": "beta"}]}"#;
    let f2 = r#"{"predicates": [{"operation": "EQUALS", "key": "display_name", "string_value": "beta"}]}"#;
    for f in [f1, f2] {
        let q = format!(
            "/apis/v2beta1/experiments?namespace=default&filter={}",
            urlencode(f)
        );
        let r = d.get(&q, Some(&admin));
        assert_eq!(r.status, 200, "{r}");
        assert_eq!(r.body["experiments"].as_array().unwrap().len(), 1, "{r}");
        assert_eq!(r.body["experiments"][0]["display_name"], "beta");
    }
    let dup = d.post_json(
        "/apis/v2beta1/experiments",
        Some(&admin),
        &json!({"display_name": "beta", "namespace": "default"}),
    );
    assert_eq!(dup.status, 409, "{dup}");
    let bad = d.get("/apis/v2beta1/experiments?filter=%7Bnope", Some(&admin));
    assert_eq!(bad.status, 422, "{bad}");

    // Pipelines, get by name, runs with a bad parameter.
    let up = upload(&d, &admin, "durable", DURABLE);
    let pid = up.body["pipeline_id"].as_str().unwrap().to_string();
    let by_name = d.get("/apis/v2beta1/pipelines/names/durable", Some(&admin));
    assert_eq!(by_name.body["pipeline_id"], pid.as_str(), "{by_name}");
    let vid = version_of(&d, &admin, &pid);
    let reference = json!({"pipeline_id": pid, "pipeline_version_id": vid});
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&admin),
        &json!({"display_name": "x", "pipeline_version_reference": reference, "runtime_config": {"parameters": {"nope": 1}}}),
    );
    assert_eq!(r.status, 422, "{r}");
    assert_eq!(r.body["field"], "runtime_config.parameters.nope", "{r}");
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&admin),
        &json!({"display_name": "x", "pipeline_version_reference": reference}),
    );
    assert_eq!(r.body["field"], "runtime_config.parameters.marker", "{r}");
    let secret = d.post_json(
        "/apis/v2beta1/runs",
        Some(&admin),
        &json!({"display_name": "x", "pipeline_spec": {"pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "deploymentSpec": {"executors": {"exec-a": {"container": {"image": "i", "command": ["true"]}}}}},
                "platform_spec": {"platforms": {"kubernetes": {"deploymentSpec": {"executors": {"exec-a": {"secretAsEnv": []}}}}}}}}),
    );
    assert_eq!(secret.status, 422, "{secret}");
    assert_eq!(
        secret.body["feature"], "platforms.kubernetes.secretAsEnv",
        "{secret}"
    );

    // A run, archived and listed with paging.
    let dir = tempfile::tempdir().unwrap();
    let params = json!({"marker": dir.path().join("m").display().to_string()});
    let mut ids = Vec::new();
    for i in 0..3 {
        let r = d.post_json(
            "/apis/v2beta1/runs",
            Some(&admin),
            &json!({"display_name": format!("run-{i}"), "pipeline_version_reference": reference, "runtime_config": {"parameters": params}}),
        );
        assert_eq!(r.status, 200, "{r}");
        ids.push(r.body["run_id"].as_str().unwrap().to_string());
    }
    let page1 = d.get(
        "/apis/v2beta1/runs?namespace=&page_size=2&sort_by=name%20desc",
        Some(&admin),
    );
    assert_eq!(page1.body["total_size"], 3, "{page1}");
    assert_eq!(page1.body["runs"][0]["display_name"], "run-2", "{page1}");
    let token = page1.body["next_page_token"].as_str().unwrap();
    let page2 = d.get(
        &format!("/apis/v2beta1/runs?namespace=&page_size=2&page_token={token}"),
        Some(&admin),
    );
    assert_eq!(page2.body["runs"].as_array().unwrap().len(), 1, "{page2}");
    let arch = d.post_json(
        &format!("/apis/v2beta1/runs/{}:archive", ids[0]),
        Some(&admin),
        &json!({}),
    );
    assert_eq!(arch.status, 200, "{arch}");
    assert_eq!(
        d.get(&format!("/apis/v2beta1/runs/{}", ids[0]), Some(&admin))
            .body["storage_state"],
        "ARCHIVED"
    );

    // Another user sees none of it and cannot reach it by id.
    let alice = d.create_user("alice");
    assert_eq!(
        d.get(&format!("/apis/v2beta1/runs/{}", ids[1]), Some(&alice))
            .status,
        404
    );
    let theirs = d.get("/apis/v2beta1/runs?namespace=", Some(&alice));
    assert_eq!(theirs.body["total_size"], 0, "{theirs}");
    assert_eq!(
        d.get("/apis/v2beta1/runs?namespace=default", Some(&alice)).status,
        403
    );
    assert_eq!(d.get("/apis/v2beta1/runs/nope", Some(&admin)).status, 404);
    for id in &ids {
        d.wait_until(
            &format!("/apis/v2beta1/runs/{id}"),
            Duration::from_secs(60),
            |r| r.body["state"] == "SUCCEEDED",
        );
    }
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A step that leaves a directory artifact with a good file, a symlink out of the data
/// dir, a symlink to a sibling beside the artifact, and that sibling.
const ESCAPE_STEP: &str = r#"mkdir -p "$0" && printf fine > "$0/ok.txt" && printf hearth-escape-token > "$0/../secret.txt" && ln -s /etc/passwd "$0/passwd" && ln -s ../secret.txt "$0/sibling""#;

#[test]
fn artifact_download_refuses_path_traversal_and_reads_nothing_outside() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let spec = json!({
        "pipelineInfo": {"name": "escape"},
        "schemaVersion": "2.1.0",
        "components": {"comp-make": {
            "executorLabel": "exec-make",
            "outputDefinitions": {"artifacts": {"out": {"artifactType": {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}}}}
        }},
        "deploymentSpec": {"executors": {"exec-make": {"container": {
            "image": "alpine:3.23",
            "command": ["sh", "-c", ESCAPE_STEP, "{{$.outputs.artifacts['out'].path}}"]
        }}}},
        "root": {"dag": {"tasks": {"make": {"taskInfo": {"name": "make"}, "componentRef": {"name": "comp-make"}}}}}
    });
    let run = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "escape", "pipeline_spec": spec}),
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
    let base = format!("/hearth/v1/pipelines/runs/{run_id}/tasks/{task}/artifacts");

    // The control: a file inside the artifact is served.
    let ok = d.get(&format!("{base}/out?path=ok.txt"), Some(&token));
    assert_eq!(ok.status, 200, "{ok}");
    assert_eq!(ok.text, "fine");

    let passwd = std::fs::read_to_string("/etc/passwd").unwrap_or_default();
    for rel in [
        "../secret.txt",
        "../../../../../../etc/passwd",
        "/etc/passwd",
        "sub/../../secret.txt",
        "%2E%2E/secret.txt",
        "passwd",
        "sibling",
    ] {
        let r = d.get(&format!("{base}/out?path={rel}"), Some(&token));
        assert!(
            (400..500).contains(&r.status),
            "path={rel}: expected a 4xx, got {r}"
        );
        assert!(r.is_problem(), "path={rel}: not problem+json: {r}");
        assert!(
            !r.text.contains("hearth-escape-token") && (passwd.is_empty() || !r.text.contains(&passwd)),
            "path={rel}: the answer carries a file from outside the artifact: {r}"
        );
    }
    // The artifact name is a key, never a path.
    for name in ["..%2Fsecret.txt", "..", "%2Fetc%2Fpasswd"] {
        let r = d.get(&format!("{base}/{name}"), Some(&token));
        assert!((400..500).contains(&r.status), "name={name}: {r}");
        assert!(r.is_problem(), "name={name}: {r}");
        assert!(!r.text.contains("hearth-escape-token"), "name={name}: {r}");
    }
}

/// A retried step waits `backoffDuration` times `backoffFactor` to the attempt's power
/// between attempts: 1 s, then 2 s.
#[test]
fn retries_wait_the_backoff_between_attempts() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let dir = tempfile::Builder::new()
        .prefix("hearth-retry-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let times = dir.path().join("times");
    let spec = json!({
        "pipelineInfo": {"name": "backoff"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-flaky": {"executorLabel": "exec-flaky"}},
        "deploymentSpec": {"executors": {"exec-flaky": {"container": {
            "image": "alpine:3.23",
            "command": ["sh", "-c", "date +%s.%N >> \"$0\"; [ $(wc -l < \"$0\") -ge 3 ]",
                        times.display().to_string()],
        }}}},
        "root": {"dag": {"tasks": {"flaky": {
            "taskInfo": {"name": "flaky"},
            "componentRef": {"name": "comp-flaky"},
            "retryPolicy": {"maxRetryCount": 3, "backoffDuration": "1s", "backoffFactor": 2.0,
                            "backoffMaxDuration": "3600s"},
        }}}},
    });
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "backoff", "pipeline_spec": spec}),
    );
    assert_eq!(r.status, 200, "{r}");
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let run = d.wait_until(
        &format!("/apis/v2beta1/runs/{id}"),
        Duration::from_secs(30),
        |r| ["SUCCEEDED", "FAILED"].contains(&r.body["state"].as_str().unwrap_or_default()),
    );
    assert_eq!(run.body["state"], "SUCCEEDED", "{run}");
    let starts: Vec<f64> = std::fs::read_to_string(&times)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(starts.len(), 3, "{starts:?}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    // Each gap is the backoff plus a failed `sh` and a step start (well under a second).
    assert!((1.0..2.0).contains(&gaps[0]), "{gaps:?}");
    assert!((2.0..3.0).contains(&gaps[1]), "{gaps:?}");
}
