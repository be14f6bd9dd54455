//! The executor input (`{{$}}`) Hearth hands to each step is proto3 JSON as KFP's
//! driver writes it with Go's `protojson.Marshal`: default and empty fields are left
//! out (an empty `parameterValues`, `artifacts` or `parameters` map, an artifact's
//! empty `metadata`), and an exit handler's `PipelineTaskFinalStatus` carries the empty
//! `google.rpc.Status` (`"error": {}`) after a success, so the SDK reads `None`. API
//! answers leave unset fields out too, as KFP's server (protojson) does.

use std::path::Path;
use std::time::Duration;

use hearth_e2e::spawn_daemon;
use serde_json::{json, Value};

/// A step that writes its executor input to `<dir>/<name>.json`.
fn dump(dir: &Path, name: &str) -> Value {
    json!({"container": {
        "image": "alpine:3.23",
        "command": ["sh", "-c", "printf '%s' \"$1\" > \"$0\"",
                    dir.join(format!("{name}.json")).display().to_string(), "{{$}}"],
    }})
}

#[test]
fn executor_inputs_leave_out_what_protojson_leaves_out() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let dir = tempfile::Builder::new().prefix("hearth-ei-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o777)).unwrap();
    let artifact_type = json!({"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"});
    let spec = json!({
        "pipelineInfo": {"name": "executor-input"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {
            "comp-bare": {"executorLabel": "exec-bare"},
            "comp-produce": {
                "executorLabel": "exec-produce",
                "inputDefinitions": {"parameters": {"n": {"parameterType": "NUMBER_INTEGER"}}},
                "outputDefinitions": {
                    "artifacts": {"data": {"artifactType": artifact_type}},
                    "parameters": {"count": {"parameterType": "NUMBER_INTEGER"}},
                },
            },
            "comp-consume": {
                "executorLabel": "exec-consume",
                "inputDefinitions": {"artifacts": {"data": {"artifactType": artifact_type}}},
            },
            "comp-handler": {
                "executorLabel": "exec-handler",
                "inputDefinitions": {"parameters": {"status": {"parameterType": "TASK_FINAL_STATUS"}}},
            },
        },
        "deploymentSpec": {"executors": {
            "exec-bare": dump(dir.path(), "bare"),
            "exec-produce": {"container": {
                "image": "alpine:3.23",
                "command": ["sh", "-c",
                    "printf '%s' \"$1\" > \"$0\"; echo rows > \"$2\"; printf 3 > \"$3\"",
                    dir.path().join("produce.json").display().to_string(), "{{$}}",
                    "{{$.outputs.artifacts['data'].path}}",
                    "{{$.outputs.parameters['count'].output_file}}"],
            }},
            "exec-consume": dump(dir.path(), "consume"),
            "exec-handler": dump(dir.path(), "handler"),
        }},
        "root": {"dag": {"tasks": {
            "bare": {"taskInfo": {"name": "bare"}, "componentRef": {"name": "comp-bare"}},
            "produce": {
                "taskInfo": {"name": "produce"},
                "componentRef": {"name": "comp-produce"},
                "inputs": {"parameters": {"n": {"runtimeValue": {"constant": 3}}}},
            },
            "consume": {
                "taskInfo": {"name": "consume"},
                "componentRef": {"name": "comp-consume"},
                "dependentTasks": ["produce"],
                "inputs": {"artifacts": {"data": {"taskOutputArtifact": {
                    "producerTask": "produce", "outputArtifactKey": "data"}}}},
            },
            "handler": {
                "taskInfo": {"name": "handler"},
                "componentRef": {"name": "comp-handler"},
                "dependentTasks": ["consume"],
                "triggerPolicy": {"strategy": "ALL_UPSTREAM_TASKS_COMPLETED"},
                "inputs": {"parameters": {"status": {"taskFinalStatus": {"producerTask": "consume"}}}},
            },
        }}},
    });
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "executor-input", "pipeline_spec": spec}),
    );
    assert_eq!(r.status, 200, "{r}");
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let run = d.wait_until(
        &format!("/apis/v2beta1/runs/{id}"),
        Duration::from_secs(30),
        |r| ["SUCCEEDED", "FAILED"].contains(&r.body["state"].as_str().unwrap_or_default()),
    );
    assert_eq!(run.body["state"], "SUCCEEDED", "{run}");
    let read = |name: &str| -> Value {
        let text = std::fs::read_to_string(dir.path().join(format!("{name}.json"))).unwrap();
        serde_json::from_str(&text).unwrap()
    };

    // No inputs and no outputs but the output file: empty maps are left out.
    let bare = read("bare");
    assert_eq!(bare["inputs"], json!({}), "{bare}");
    let outputs = bare["outputs"].as_object().unwrap();
    assert_eq!(outputs.keys().collect::<Vec<_>>(), ["outputFile"], "{bare}");

    // An input parameter and planned outputs: no artifact map on the input side, and
    // the planned artifact has name, type and uri, but no empty metadata.
    let produce = read("produce");
    assert_eq!(
        produce["inputs"],
        json!({"parameterValues": {"n": 3}}),
        "{produce}"
    );
    let planned = &produce["outputs"]["artifacts"]["data"]["artifacts"][0];
    let keys: Vec<&String> = planned.as_object().unwrap().keys().collect();
    assert_eq!(keys, ["name", "type", "uri"], "{produce}");
    assert_eq!(planned["type"], artifact_type, "{produce}");
    assert!(produce["outputs"]["parameters"]["count"]["outputFile"].is_string());

    // An input artifact without metadata, and no parameterValues.
    let consume = read("consume");
    let inputs = consume["inputs"].as_object().unwrap();
    assert_eq!(inputs.keys().collect::<Vec<_>>(), ["artifacts"], "{consume}");
    let given = &consume["inputs"]["artifacts"]["data"]["artifacts"][0];
    assert!(given.get("metadata").is_none(), "{consume}");
    assert_eq!(given["uri"], planned["uri"], "{consume}");

    // The final status after a success: the empty google.rpc.Status, as the driver
    // writes it (the SDK's error_code and error_message read None from it).
    let handler = read("handler");
    let status = &handler["inputs"]["parameterValues"]["status"];
    assert_eq!(status["state"], "SUCCEEDED", "{handler}");
    assert_eq!(status["error"], json!({}), "{handler}");
    assert_eq!(status["pipelineTaskName"], "consume", "{handler}");
    assert_eq!(status["pipelineJobResourceName"], json!(id), "{handler}");

    // The API answers as KFP's server writes them (protojson, unpopulated fields left
    // out): no top-level `null` or empty string in a run or its task details.
    let unset = |v: &Value| {
        v.as_object()
            .unwrap()
            .iter()
            .filter(|(_, f)| f.is_null() || f.as_str() == Some(""))
            .map(|(k, _)| k.clone())
            .collect::<Vec<_>>()
    };
    assert_eq!(unset(&run.body), Vec::<String>::new(), "{run}");
    for task in run.body["run_details"]["task_details"].as_array().unwrap() {
        assert_eq!(unset(task), Vec::<String>::new(), "{task}");
    }
    let experiment = d.get(
        &format!(
            "/apis/v2beta1/experiments/{}",
            run.body["experiment_id"].as_str().unwrap()
        ),
        Some(&token),
    );
    assert_eq!(unset(&experiment.body), Vec::<String>::new(), "{experiment}");
}
