//! Notebooks through the API without a Jupyter server at hand (the real servers run in
//! tests/python/notebooks): both served versions are one object, a server that cannot
//! be found is `CreateContainerError` with the way out named, the stop annotation stops
//! it, a notebook that could never fit is refused naming its resources, and the proxy
//! refuses what is not ready and what is another user's.

use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Options};
use serde_json::{json, Value};

const V1: &str = "/apis/kubeflow.org/v1/namespaces/admin/notebooks";
const V1BETA1: &str = "/apis/kubeflow.org/v1beta1/namespaces/admin/notebooks";

fn notebook(api_version: &str, name: &str, gpus: u32) -> Value {
    json!({
        "apiVersion": api_version,
        "kind": "Notebook",
        "metadata": {"name": name},
        "spec": {"template": {"spec": {"containers": [{
            "name": name,
            "image": "jupyter-scipy",
            "resources": {"limits": {"nvidia.com/gpu": gpus}}
        }]}}}
    })
}

#[test]
fn a_notebook_without_a_jupyter_server_says_so_and_stops_by_annotation() {
    // No Jupyter on PATH: the daemon must say how to get one.
    let d = spawn_daemon_with(
        Options::default()
            .config("[gpu]\nsimulate = 1")
            .env("PATH", "/nonexistent"),
    );
    let created = d.post_json(V1BETA1, d.admin(), &notebook("kubeflow.org/v1beta1", "nb", 0));
    assert_eq!(created.status, 201, "{created}");
    assert_eq!(created.body["apiVersion"], "kubeflow.org/v1beta1");
    // One object, served by both versions.
    let read = d.get(&format!("{V1}/nb"), d.admin());
    assert_eq!(read.status, 200, "{read}");
    assert_eq!(read.body["apiVersion"], "kubeflow.org/v1");
    assert_eq!(read.body["metadata"]["uid"], created.body["metadata"]["uid"]);

    let waiting = d.wait_until(&format!("{V1}/nb"), Duration::from_secs(20), |r| {
        r.body["status"]["containerState"]["waiting"]["reason"] == "CreateContainerError"
    });
    let message = waiting.body["status"]["containerState"]["waiting"]["message"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(message.contains("[notebooks] command"), "{waiting}");
    assert_eq!(waiting.body["status"]["readyReplicas"], 0);
    assert!(waiting.body["status"].get("hearth").is_none(), "{waiting}");
    let proxied = d.get("/notebook/admin/nb/api/status", d.admin());
    assert_eq!(proxied.status, 503, "{proxied}");

    let stop = json!({"metadata": {"annotations": {"kubeflow-resource-stopped": "2026-01-01T00:00:00Z"}}});
    let patched = d.patch(&format!("{V1}/nb"), d.admin(), &stop);
    assert_eq!(patched.status, 200, "{patched}");
    d.wait_until(&format!("{V1}/nb"), Duration::from_secs(20), |r| {
        r.body["status"]["conditions"][0]["reason"] == "Stopped"
    });

    // Another user reaches neither the object nor its proxy.
    let bob = d.create_user("bob");
    assert_eq!(d.get(&format!("{V1}/nb"), Some(&bob)).status, 403);
    assert_eq!(d.get("/notebook/admin/nb/api/status", Some(&bob)).status, 403);

    // More GPUs than the node has: refused naming the field, as for Jobs.
    let refused = d.post_json(V1, d.admin(), &notebook("kubeflow.org/v1", "big", 2));
    assert_eq!(refused.status, 422, "{refused}");
    assert!(refused.cause_field().contains("resources"), "{refused}");

    let deleted = d.delete(&format!("{V1}/nb"), d.admin());
    assert_eq!(deleted.status, 200, "{deleted}");
    d.wait_until(&format!("{V1}/nb"), Duration::from_secs(20), |r| r.status == 404);
}
