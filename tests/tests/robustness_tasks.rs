//! Per-object tasks are supervised too: a pipeline run whose driver panics is driven
//! again and still finishes, and a scheduler watcher that panics does not keep its
//! workload's GPU held. Faults come from the `HEARTH_FAULT_INJECT` test hook
//! (daemon/src/controller.rs).

use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use serde_json::json;

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";

fn daemon(fault: &str, config: &str) -> Daemon {
    spawn_daemon_with(
        Options::default()
            .env("HEARTH_FAULT_INJECT", fault)
            .config(config),
    )
}

fn ready(d: &Daemon) {
    let r = d.get("/readyz", None);
    assert_eq!(r.status, 200, "{r}\n{}", d.logs());
}

#[test]
fn a_run_whose_driver_panics_once_is_driven_again_and_succeeds() {
    let d = daemon("panic-driver:once", "");
    let token = d.admin().unwrap().to_string();
    let spec = json!({
        "pipelineInfo": {"name": "one"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-echo": {"executorLabel": "exec-echo"}},
        "deploymentSpec": {"executors": {"exec-echo": {"container": {
            "image": "alpine:3.23",
            "command": ["sh", "-c", "echo ok"],
        }}}},
        "root": {"dag": {"tasks": {"echo": {
            "taskInfo": {"name": "echo"},
            "componentRef": {"name": "comp-echo"},
        }}}},
    });
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "panics", "pipeline_spec": spec}),
    );
    assert_eq!(r.status, 200, "{r}");
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let run = d.wait_until(
        &format!("/apis/v2beta1/runs/{id}"),
        Duration::from_secs(30),
        |r: &Reply| ["SUCCEEDED", "FAILED", "CANCELED"].contains(&r.body["state"].as_str().unwrap_or("")),
    );
    assert_eq!(run.body["state"], "SUCCEEDED", "{run}\n{}", d.logs());
    assert!(d.logs().contains("pipeline run driver panicked"), "{}", d.logs());
    ready(&d);
}

fn gpu_job(name: &str) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox
        command: ['sh', '-c', 'sleep 0.3']
        resources:
          limits:
            nvidia.com/gpu: 1
"
    )
}

fn complete(r: &Reply) -> bool {
    r.body["status"]["conditions"].as_array().is_some_and(|cs| {
        cs.iter()
            .any(|c| c["type"] == "Complete" && c["status"] == "True")
    })
}

#[test]
fn a_watcher_that_panics_still_releases_the_gpu_when_its_workload_ends() {
    let d = daemon("panic-watcher:once", "[gpu]\nsimulate = 1\n");
    // The first workload's watcher panics once it ended: it is taken up again, its end
    // recorded and its GPU released, so the second (needing the only GPU) runs.
    for name in ["first", "second"] {
        assert_eq!(d.post_yaml(JOBS, d.admin(), &gpu_job(name)).status, 201);
    }
    for name in ["first", "second"] {
        let job = d.wait_until(&format!("{JOBS}/{name}"), Duration::from_secs(30), complete);
        assert!(complete(&job), "{job}\n{}", d.logs());
    }
    let queue = d.get("/hearth/v1/queue", d.admin());
    assert_eq!(queue.body["gpus_in_use"], 0, "{queue}");
    assert!(
        d.logs().contains("the watcher of a workload panicked"),
        "{}",
        d.logs()
    );
    ready(&d);
}
