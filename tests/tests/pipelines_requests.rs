//! KFP v2beta1 request bodies: fields of the wrong type are refused naming the field
//! (the typed OpenAPI schemas promise it), concurrent first runs in a namespace share
//! one `Default` experiment, and a `ParallelFor` wider than Hearth's limit is refused.

use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon, Daemon, Reply};
use serde_json::{json, Value};

/// The most iterations one ParallelFor may have (README, Pipelines).
const MAX_LOOP_ITEMS: usize = 10_000;

/// A one-step pipeline.
fn one_step() -> Value {
    json!({
        "pipelineInfo": {"name": "one"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-step": {"executorLabel": "exec-step"}},
        "deploymentSpec": {"executors": {"exec-step": {"container": {"image": "alpine:3.23", "command": ["true"]}}}},
        "root": {"dag": {"tasks": {"step": {"taskInfo": {"name": "step"}, "componentRef": {"name": "comp-step"}}}}},
    })
}

/// A ParallelFor as the KFP compiler writes it, over `items`: a raw JSON list, or
/// (with `None`) the pipeline's `items` input parameter.
fn loop_pipeline(raw: Option<String>) -> Value {
    let (items, loop_inputs, root_inputs) = match raw {
        Some(raw) => (json!({"raw": raw}), json!({}), json!({})),
        None => (
            json!({"inputParameter": "pipelinechannel--items"}),
            json!({"pipelinechannel--items": {"componentInputParameter": "items"}}),
            json!({"items": {"parameterType": "LIST"}}),
        ),
    };
    json!({
        "pipelineInfo": {"name": "fan-out"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {
            "comp-for-loop-1": {
                "dag": {"tasks": {"step": {
                    "taskInfo": {"name": "step"},
                    "componentRef": {"name": "comp-step"},
                    "inputs": {"parameters": {"x": {"componentInputParameter": "pipelinechannel--items-loop-item"}}},
                }}},
                "inputDefinitions": {"parameters": {
                    "pipelinechannel--items": {"parameterType": "LIST"},
                    "pipelinechannel--items-loop-item": {"parameterType": "NUMBER_INTEGER"},
                }},
            },
            "comp-step": {
                "executorLabel": "exec-step",
                "inputDefinitions": {"parameters": {"x": {"parameterType": "NUMBER_INTEGER"}}},
            },
        },
        "deploymentSpec": {"executors": {"exec-step": {"container": {"image": "alpine:3.23", "command": ["true"]}}}},
        "root": {
            "dag": {"tasks": {"for-loop-1": {
                "taskInfo": {"name": "for-loop-1"},
                "componentRef": {"name": "comp-for-loop-1"},
                "inputs": {"parameters": loop_inputs},
                "parameterIterator": {"itemInput": "pipelinechannel--items-loop-item", "items": items},
            }}},
            "inputDefinitions": {"parameters": root_inputs},
        },
    })
}

#[track_caller]
fn assert_invalid(r: &Reply, field: &str) {
    assert_eq!(r.status, 422, "{field}: {r}");
    assert_eq!(r.body["field"].as_str(), Some(field), "{r}");
}

#[test]
fn declared_fields_of_the_wrong_type_are_refused_by_name() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let run = |extra: Value| {
        let mut body = json!({"display_name": "typed", "pipeline_spec": one_step()});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        d.post_json("/apis/v2beta1/runs", Some(&token), &body)
    };
    assert_invalid(&run(json!({"display_name": 5})), "display_name");
    assert_invalid(&run(json!({"namespace": ["a"]})), "namespace");
    assert_invalid(&run(json!({"runtime_config": "x"})), "runtime_config");
    assert_invalid(
        &run(json!({"runtime_config": {"parameters": [1]}})),
        "runtime_config.parameters",
    );
    let recurring = |extra: Value| {
        let mut body = json!({"display_name": "rr", "pipeline_spec": one_step(),
            "trigger": {"periodic_schedule": {"interval_second": "3600"}}, "mode": "DISABLE"});
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        d.post_json("/apis/v2beta1/recurringruns", Some(&token), &body)
    };
    assert_invalid(&recurring(json!({"no_catchup": "yes"})), "no_catchup");
    assert_invalid(&recurring(json!({"mode": 1})), "mode");
    assert_invalid(
        &recurring(json!({"trigger": {"periodic_schedule": {"interval_second": "+60"}}})),
        "trigger.periodic_schedule.interval_second",
    );
    assert_invalid(
        &recurring(json!({"trigger": {"cron_schedule": {"cron": "0 * * * * *"},
            "periodic_schedule": {"interval_second": 60}}})),
        "trigger",
    );
    // What kfp.Client sends: numbers as JSON numbers, `no_catchup` left out.
    let r = recurring(json!({"max_concurrency": 1,
        "trigger": {"periodic_schedule": {"interval_second": 60}}}));
    assert_eq!(r.status, 200, "{r}");
    let r = d.post_json(
        "/apis/v2beta1/experiments",
        Some(&token),
        &json!({"display_name": "e", "description": 7}),
    );
    assert_invalid(&r, "description");
    let r = d.post_json(
        "/apis/v2beta1/pipelines",
        Some(&token),
        &json!({"display_name": true}),
    );
    assert_invalid(&r, "display_name");
}

#[test]
fn concurrent_first_runs_share_one_default_experiment() {
    let d = spawn_daemon();
    let user = d.create_user("racer");
    let replies: Vec<Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|i| {
                let (d, user) = (&d, &user);
                s.spawn(move || {
                    d.post_json(
                        "/apis/v2beta1/runs",
                        Some(user),
                        &json!({"display_name": format!("first-{i}"), "pipeline_spec": one_step()}),
                    )
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for r in &replies {
        assert_eq!(r.status, 200, "{r}");
    }
    let ids: std::collections::BTreeSet<&str> = replies
        .iter()
        .map(|r| r.body["experiment_id"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(ids.len(), 1, "the runs went into different experiments: {ids:?}");
    let list = d.get("/apis/v2beta1/experiments?namespace=racer", Some(&user));
    assert_eq!(list.status, 200, "{list}");
    let experiments = list.body["experiments"].as_array().cloned().unwrap_or_default();
    assert_eq!(experiments.len(), 1, "{list}");
    assert_eq!(experiments[0]["display_name"], "Default", "{list}");
}

fn create_version(d: &Daemon, token: &str, pipeline_id: &str, name: &str, spec: Value) -> Reply {
    d.post_json(
        &format!("/apis/v2beta1/pipelines/{pipeline_id}/versions"),
        Some(token),
        &json!({"display_name": name, "pipeline_spec": spec}),
    )
}

#[test]
fn a_parallel_for_wider_than_the_limit_is_refused() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let p = d.post_json(
        "/apis/v2beta1/pipelines",
        Some(&token),
        &json!({"display_name": "fan"}),
    );
    assert_eq!(p.status, 200, "{p}");
    let pid = p.body["pipeline_id"].as_str().unwrap().to_string();
    let list = |n: usize| serde_json::to_string(&(0..n).collect::<Vec<_>>()).unwrap();

    // A literal list: checked when the pipeline is stored (stored, not run: the widest
    // allowed loop would start MAX_LOOP_ITEMS steps).
    let r = create_version(
        &d,
        &token,
        &pid,
        "at-limit",
        loop_pipeline(Some(list(MAX_LOOP_ITEMS))),
    );
    assert_eq!(r.status, 200, "{r}");
    let r = create_version(
        &d,
        &token,
        &pid,
        "over",
        loop_pipeline(Some(list(MAX_LOOP_ITEMS + 1))),
    );
    assert_invalid(&r, "root.dag.tasks.for-loop-1.parameterIterator.items.raw");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(detail.contains(&MAX_LOOP_ITEMS.to_string()), "{r}");

    // A list known only at run time: the loop task fails, naming the limit, before it
    // starts any iteration.
    let items: Vec<usize> = (0..=MAX_LOOP_ITEMS).collect();
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "wide", "pipeline_spec": loop_pipeline(None),
            "runtime_config": {"parameters": {"items": items}}}),
    );
    assert_eq!(r.status, 200, "{r}");
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let run = loop {
        let r = d.get(&format!("/apis/v2beta1/runs/{id}"), Some(&token));
        if r.body["state"] == "FAILED" || Instant::now() > deadline {
            break r;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(run.body["state"], "FAILED", "{run}");
    assert!(
        run.text
            .contains(&format!("a ParallelFor may have at most {MAX_LOOP_ITEMS}")),
        "{run}"
    );
    let steps = run.body["run_details"]["task_details"]
        .as_array()
        .map(|t| t.iter().filter(|t| t["display_name"] == "step").count())
        .unwrap_or(0);
    assert_eq!(steps, 0, "iterations started: {run}");
}
