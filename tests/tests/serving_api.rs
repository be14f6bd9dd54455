//! InferenceService control plane: CRUD, YAML and JSON bodies, namespaces, refusals
//! by name. The upstream corpus is in `corpus_serving.rs`.

use hearth_e2e::spawn_daemon;
use serde_json::{json, Value};

const IRIS_YAML: &str = r#"
apiVersion: serving.kserve.io/v1beta1
kind: InferenceService
metadata:
  name: sklearn-iris
  annotations:
    sidecar.istio.io/inject: "false"
spec:
  predictor:
    minReplicas: 0
    model:
      modelFormat:
        name: sklearn
      storageUri: file:///nonexistent/model
"#;

#[test]
fn crud_yaml_json_patch_and_namespaces() {
    let d = spawn_daemon();
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices";
    let created = d.post_yaml(base, d.admin(), IRIS_YAML);
    assert_eq!(created.status, 201, "{created}");
    let doc = &created.body;
    assert_eq!(doc["metadata"]["namespace"], "team");
    // A document naming another namespace than its path is refused, as Kubernetes does.
    let elsewhere = IRIS_YAML.replace("metadata:\n", "metadata:\n  namespace: kubeflow\n");
    d.post_yaml(base, d.admin(), &elsewhere)
        .assert_status(400, "BadRequest");
    assert_eq!(doc["metadata"]["name"], "sklearn-iris");
    assert_eq!(
        doc["spec"]["predictor"]["minReplicas"], 0,
        "the spec is answered as written"
    );
    assert!(doc["status"].is_object(), "{created}");
    assert!(doc["metadata"]["uid"].is_string());

    d.post_yaml(base, d.admin(), IRIS_YAML)
        .assert_status(409, "AlreadyExists");

    let listed = d.get(base, d.admin());
    assert_eq!(listed.status, 200, "{listed}");
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(1), "{listed}");
    assert_eq!(
        d.get(
            "/apis/serving.kserve.io/v1beta1/namespaces/other/inferenceservices",
            d.admin()
        )
        .body["items"],
        json!([])
    );

    let item = format!("{base}/sklearn-iris");
    let patched = d.patch(
        &item,
        d.admin(),
        &json!({"spec": {"predictor": {"canaryTrafficPercent": 10}}}),
    );
    assert_eq!(patched.status, 200, "{patched}");
    assert_eq!(patched.body["spec"]["predictor"]["canaryTrafficPercent"], 10);
    assert_eq!(patched.body["metadata"]["generation"], 2);

    let mut replaced = patched.body.clone();
    replaced["spec"]["predictor"]["maxReplicas"] = json!(3);
    // Without metadata.resourceVersion the replace is unconditional, as Kubernetes
    // allows: the controller may have written status since the patch was answered.
    replaced["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("resourceVersion");
    let put = d.put(&item, d.admin(), &replaced);
    assert_eq!(put.status, 200, "{put}");
    assert_eq!(put.body["spec"]["predictor"]["maxReplicas"], 3);

    let mut renamed = replaced.clone();
    renamed["metadata"]["name"] = json!("other-name");
    d.put(&item, d.admin(), &renamed).assert_status(422, "Invalid");
    d.patch(
        &item,
        d.admin(),
        &json!({"spec": {"predictor": {"minReplicas": -1}}}),
    )
    .assert_status(422, "Invalid");

    // JSON body and the runtime table.
    let json_doc: Value = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "xgb"}, "spec": {"predictor": {"xgboost": {"storageUri": "https://example.com/m.bst", "protocolVersion": "v2"}}}});
    assert_eq!(d.post_json(base, d.admin(), &json_doc).status, 201);
    let runtimes = d.get("/hearth/v1/servingruntimes", d.admin());
    assert_eq!(runtimes.status, 200, "{runtimes}");
    let names: Vec<&str> = runtimes.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["name"].as_str())
        .collect();
    assert!(names.contains(&"kserve-mlserver"), "{runtimes}");
    assert_eq!(
        d.get("/hearth/v1/servingruntimes/kserve-mlserver", d.admin())
            .status,
        200
    );
    d.get("/hearth/v1/servingruntimes/nope", d.admin())
        .assert_problem(404, "not_found");

    // Auth: no token, and another user's namespace.
    assert_eq!(d.get(base, None).status, 401);
    let user = d.post_json("/hearth/v1/users", d.admin(), &json!({"name": "alice"}));
    assert_eq!(user.status, 201, "{user}");
    let alice = user.body["token"]["token"].as_str().unwrap().to_string();
    d.get(base, Some(&alice)).assert_status(403, "Forbidden");
    assert_eq!(
        d.post_yaml(
            "/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices",
            Some(&alice),
            IRIS_YAML
        )
        .status,
        201
    );

    let deleted = d.delete(&item, d.admin());
    assert_eq!(deleted.status, 200, "{deleted}");
    d.delete(&format!("{base}/missing"), d.admin())
        .assert_status(404, "NotFound");
}

#[test]
fn bad_documents_are_4xx_naming_the_problem() {
    let d = spawn_daemon();
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices";
    let cases: Vec<(&str, u16, &str, &str)> = vec![
        ("spec: [unclosed", 400, "BadRequest", ""),
        ("apiVersion: serving.kubeflow.org/v1beta1\nkind: InferenceService\nmetadata: {name: a}\nspec: {}\n", 422, "Invalid", "apiVersion"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: Notebook\nmetadata: {name: a}\nspec: {}\n", 422, "Invalid", "kind"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: A_b}\nspec: {predictor: {sklearn: {storageUri: /m}}}\n", 422, "Invalid", "metadata.name"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: a}\nspec: {predictor: {sklearn: {storageUri: 'pvc://b/m'}}}\n", 422, "Invalid", "storageUri.pvc"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: a}\nspec: {predictor: {sklearn: {storageUri: /m}}, explainer: {alibi: {}}}\n", 422, "Invalid", "spec.explainer"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: a}\nspec: {predictor: {model: {modelFormat: {name: tensorflow}, storageUri: /m}}}\n", 422, "Invalid", "modelFormat.tensorflow"),
        ("apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: a}\nspec: {predictor: {sklearn: {storageUri: /m}, scaleMetric: memory}}\n", 422, "Invalid", "scaleMetric.memory"),
    ];
    for (body, status, code, named) in cases {
        let r = d.post_yaml(base, d.admin(), body);
        r.assert_status(status, code);
        let text = format!("{} {}", r.body["message"], r.cause_field());
        assert!(text.contains(named), "{named} not named in {r}");
    }
}

/// A custom predictor that writes a line, waits, writes another and exits: it never
/// becomes ready, which is enough to read its replicas and logs.
fn chatty(name: &str) -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"minReplicas": 1, "containers": [{
            "name": "kserve-container",
            "image": "example/chatty:latest",
            "command": ["/bin/sh", "-c", "echo serving on $PORT; sleep 1; echo second line; exit 3"]
        }]}}
    })
}

#[test]
fn replicas_and_their_logs_like_kubectl() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices";
    let extras = "/hearth/v1/namespaces/alice/inferenceservices";
    let created = d.post_json(base, Some(&alice), &chatty("chatty"));
    assert_eq!(created.status, 201, "{created}");

    let listed = d.wait_until(
        &format!("{extras}/chatty/replicas"),
        std::time::Duration::from_secs(20),
        |r| r.body["items"].as_array().is_some_and(|i| !i.is_empty()),
    );
    let first = &listed.body["items"][0];
    assert_eq!(first["revision"], "chatty-predictor-00001", "{listed}");
    assert_eq!(first["component"], "predictor");
    assert!(first["port"].as_u64().is_some_and(|p| p > 0), "{listed}");
    let replica = first["name"].as_str().unwrap().to_string();

    // Following one replica ends when it does, with everything it wrote.
    let mut response = d
        .client
        .get(d.url(&format!("{extras}/chatty/logs?follow=true&replica={replica}")))
        .bearer_auth(&alice)
        .send()
        .unwrap();
    assert_eq!(response.status().as_u16(), 200);
    assert_eq!(
        response
            .headers()
            .get("x-hearth-replica")
            .and_then(|v| v.to_str().ok()),
        Some(replica.as_str())
    );
    let mut text = String::new();
    std::io::Read::read_to_string(&mut response, &mut text).unwrap();
    assert!(text.starts_with("serving on "), "{text:?}");
    assert!(text.ends_with("second line\n"), "{text:?}");

    let ended = d.wait_until(
        &format!("{extras}/chatty/replicas"),
        std::time::Duration::from_secs(20),
        |r| r.body["items"][0]["exit"]["exitCode"] == 3,
    );
    assert_ne!(ended.body["items"][0]["phase"], "Running", "{ended}");
    let tail = d.get(
        &format!("{extras}/chatty/logs?replica={replica}&tail=1"),
        Some(&alice),
    );
    assert_eq!(tail.status, 200, "{tail}");
    assert_eq!(tail.text, "second line\n");
    assert!(tail.content_type().starts_with("text/plain"), "{tail}");

    d.get(
        &format!("{extras}/chatty/logs?component=transformer"),
        Some(&alice),
    )
    .assert_problem(404, "not_found");
    d.get(&format!("{extras}/chatty/logs?replica=nope"), Some(&alice))
        .assert_problem(404, "not_found");
    d.get(&format!("{extras}/chatty/logs?component=explainer"), Some(&alice))
        .assert_problem(400, "bad_request");
    d.get(&format!("{extras}/chatty/logs?container=x"), Some(&alice))
        .assert_problem(400, "bad_request");
    d.get(&format!("{extras}/nothing/replicas"), Some(&alice))
        .assert_problem(404, "not_found");
    let bob = d.create_user("bob");
    d.get(&format!("{extras}/chatty/logs"), Some(&bob))
        .assert_problem(403, "forbidden");
    d.get(&format!("{extras}/chatty/replicas"), Some(&bob))
        .assert_problem(403, "forbidden");
}

#[test]
fn ended_replicas_beyond_the_kept_number_and_those_of_deleted_services_are_removed() {
    use hearth_e2e::{spawn_daemon_with, Options};
    use std::time::{Duration, Instant};
    let d = spawn_daemon_with(Options::default().config(
        "[serving]\nended_replicas_kept = 1\nrevision_failure_limit = 2\n[workloads]\ngc_interval_seconds = 1",
    ));
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices";
    let extras = "/hearth/v1/namespaces/team/inferenceservices";
    assert_eq!(d.post_json(base, d.admin(), &chatty("chatty")).status, 201);
    // Two replicas exit before they are ready: the revision fails, and of the two
    // ended replicas only the newest is kept.
    d.wait_until(&format!("{base}/chatty"), Duration::from_secs(30), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["reason"] == "RevisionFailed"))
    });
    let kept = d.wait_until(
        &format!("{extras}/chatty/replicas"),
        Duration::from_secs(20),
        |r| r.body["items"].as_array().map(Vec::len) == Some(1),
    );
    assert_eq!(
        kept.body["items"][0]["name"].as_str().map(|n| n.ends_with("-1")),
        Some(true),
        "{kept}"
    );
    let count = |dir: &str| {
        std::fs::read_dir(d.data_dir.join(dir))
            .map(|e| e.count())
            .unwrap_or(0)
    };
    assert_eq!(count("workloads"), 1);
    assert_eq!(count("serving/replicas"), 1);

    assert_eq!(d.delete(&format!("{base}/chatty"), d.admin()).status, 200);
    let deadline = Instant::now() + Duration::from_secs(20);
    while count("workloads") + count("serving/replicas") > 0 {
        assert!(
            Instant::now() < deadline,
            "workloads {} replica dirs {}",
            count("workloads"),
            count("serving/replicas")
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
