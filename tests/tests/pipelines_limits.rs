//! Every number, duration and time a KFP client can send — retry policies, iterator
//! and platform limits, accelerator counts, recurring-run triggers, page sizes — gets
//! the values 0, -1, 2^63-1, 1e300, NaN and a malformed string: each is a 4xx naming
//! the field and its range, or is taken and behaves; the daemon answers throughout.
//! Objects an older version stored with such values (written into SQLite while the
//! daemon is stopped) neither stop a restart nor retry forever: the run ends FAILED with
//! the reason, the recurring run carries its error, and both leave the rest working.

use std::time::Duration;

use hearth_e2e::{spawn_daemon, Daemon, Reply};
use serde_json::{json, Value};

/// The same six values for every field, in the field's own form.
fn values(duration: bool) -> Vec<Value> {
    if duration {
        vec![
            json!("0s"),
            json!("-1s"),
            json!("9223372036854775807s"),
            json!("1e300s"),
            json!("NaN s"),
            json!("soon"),
        ]
    } else {
        vec![
            json!(0),
            json!(-1),
            json!(9_223_372_036_854_775_807u64),
            json!(1e300),
            json!("NaN"),
            json!("soon"),
        ]
    }
}

/// A one-step pipeline; `task` and `resources` are merged into its task and container.
fn pipeline(task: Value, resources: Option<Value>, platform: Option<Value>) -> Value {
    let mut container = json!({"image": "alpine:3.23", "command": ["true"]});
    if let Some(r) = resources {
        container["resources"] = r;
    }
    let mut step = json!({"taskInfo": {"name": "step"}, "componentRef": {"name": "comp-step"}});
    if let (Some(step), Some(extra)) = (step.as_object_mut(), task.as_object()) {
        step.extend(extra.clone());
    }
    let spec = json!({
        "pipelineInfo": {"name": "limits"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {"comp-step": {"executorLabel": "exec-step"}},
        "deploymentSpec": {"executors": {"exec-step": {"container": container}}},
        "root": {"dag": {"tasks": {"step": step}}},
    });
    match platform {
        None => spec,
        Some(p) => json!({"pipeline_spec": spec, "platform_spec": p}),
    }
}

fn create_run(d: &Daemon, token: &str, spec: Value) -> Reply {
    d.post_json(
        "/apis/v2beta1/runs",
        Some(token),
        &json!({"display_name": "limits", "pipeline_spec": spec}),
    )
}

#[track_caller]
fn assert_refused(r: &Reply, field: &str, what: &str) {
    assert!((400..500).contains(&r.status), "{what}: {r}");
    assert_eq!(r.body["field"].as_str(), Some(field), "{what}: {r}");
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains(" from ") || detail.contains("must be"),
        "{what}: the problem gives no allowed range: {r}"
    );
}

#[track_caller]
fn assert_answers(d: &Daemon) {
    let r = d.get("/readyz", None);
    assert_eq!(r.status, 200, "the daemon no longer answers ready: {r}");
}

#[test]
fn every_kfp_number_is_bounded_or_honoured() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let task_field = "root.dag.tasks.step";

    // Task fields: the first value of each list is in range and is taken.
    let cases: Vec<(&str, &str, bool)> = vec![
        ("retryPolicy", "maxRetryCount", false),
        ("retryPolicy", "backoffDuration", true),
        ("retryPolicy", "backoffMaxDuration", true),
        ("retryPolicy", "backoffFactor", false),
        ("iteratorPolicy", "parallelismLimit", false),
    ];
    for (object, key, duration) in cases {
        for (i, v) in values(duration).into_iter().enumerate() {
            let r = create_run(&d, &token, pipeline(json!({object: {key: v}}), None, None));
            let what = format!("{object}.{key} = {v}");
            if i == 0 {
                assert_eq!(r.status, 200, "{what}: {r}");
            } else {
                assert_refused(&r, &format!("{task_field}.{object}.{key}"), &what);
            }
        }
        assert_answers(&d);
    }

    // The platform's deadline (int64 seconds; 0 means none) and the accelerator count.
    for (i, v) in values(false).into_iter().enumerate() {
        let platform = json!({"platforms": {"kubernetes": {"deploymentSpec": {"executors": {
            "exec-step": {"activeDeadlineSeconds": v}}}}}});
        let r = create_run(&d, &token, pipeline(json!({}), None, Some(platform)));
        let what = format!("activeDeadlineSeconds = {v}");
        if i == 0 {
            assert_eq!(r.status, 200, "{what}: {r}");
        } else {
            assert_refused(
                &r,
                "platforms.kubernetes.deploymentSpec.executors.exec-step.activeDeadlineSeconds",
                &what,
            );
        }
        let resources = json!({"accelerator": {"type": "nvidia.com/gpu", "count": v}});
        let r = create_run(&d, &token, pipeline(json!({}), Some(resources), None));
        let what = format!("accelerator.count = {v}");
        if i == 0 {
            assert_eq!(r.status, 200, "{what}: {r}");
        } else {
            assert_refused(
                &r,
                "deploymentSpec.executors.exec-step.container.resources.accelerator.count",
                &what,
            );
        }
    }
    assert_answers(&d);

    // Recurring runs: the interval (int64, at least 1 s), max_concurrency (1 to 10, as
    // KFP documents), and the trigger's times and cron.
    let recurring = |trigger: Value, extra: Value| {
        let mut body = json!({
            "display_name": "every",
            "pipeline_spec": pipeline(json!({}), None, None),
            "trigger": trigger,
            "mode": "DISABLE",
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        d.post_json("/apis/v2beta1/recurringruns", Some(&token), &body)
    };
    for v in values(false) {
        let r = recurring(json!({"periodic_schedule": {"interval_second": v}}), json!({}));
        assert_refused(
            &r,
            "trigger.periodic_schedule.interval_second",
            &format!("interval_second = {v}"),
        );
        let as_text = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let r = recurring(
            json!({"periodic_schedule": {"interval_second": as_text}}),
            json!({}),
        );
        assert_refused(
            &r,
            "trigger.periodic_schedule.interval_second",
            &format!("interval_second = {as_text:?}"),
        );
        let r = recurring(
            json!({"periodic_schedule": {"interval_second": "60"}}),
            json!({"max_concurrency": v}),
        );
        assert_refused(&r, "max_concurrency", &format!("max_concurrency = {v}"));
        for key in ["start_time", "end_time"] {
            let r = recurring(
                json!({"periodic_schedule": {"interval_second": "60", key: v}}),
                json!({}),
            );
            assert_refused(
                &r,
                &format!("trigger.periodic_schedule.{key}"),
                &format!("{key} = {v}"),
            );
        }
        let r = recurring(json!({"cron_schedule": {"cron": v}}), json!({}));
        assert!((400..500).contains(&r.status), "cron = {v}: {r}");
        assert!(
            r.body["field"]
                .as_str()
                .is_some_and(|f| f.starts_with("trigger.cron_schedule")),
            "cron = {v}: {r}"
        );
    }
    // In range, and the schedule's own times are kept as written.
    let r = recurring(
        json!({"periodic_schedule": {"interval_second": "3600", "start_time": "2030-01-01T00:00:00Z"}}),
        json!({"max_concurrency": "10"}),
    );
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(
        r.body["trigger"]["periodic_schedule"]["start_time"], "2030-01-01T00:00:00Z",
        "{r}"
    );
    assert_answers(&d);

    // page_size: int32; 0 means everything.
    for (i, v) in values(false).into_iter().enumerate() {
        let text = match &v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        for list in ["runs", "pipelines", "experiments", "recurringruns"] {
            let r = d.get(&format!("/apis/v2beta1/{list}?page_size={text}"), Some(&token));
            if i == 0 {
                assert_eq!(r.status, 200, "{list} page_size={text}: {r}");
            } else {
                assert_refused(&r, "page_size", &format!("{list} page_size={text}"));
            }
        }
    }
    assert_answers(&d);
}

fn wait_run(d: &Daemon, token: &str, id: &str, done: impl Fn(&Reply) -> bool) -> Reply {
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let r = d.get(&format!("/apis/v2beta1/runs/{id}"), Some(token));
        if done(&r) || std::time::Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn objects_stored_before_validation_end_with_a_reason_and_the_daemon_stays_up() {
    let mut d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let good = create_run(&d, &token, pipeline(json!({}), None, None));
    assert_eq!(good.status, 200, "{good}");
    let good_id = good.body["run_id"].as_str().unwrap().to_string();
    let done = wait_run(&d, &token, &good_id, |r| r.body["state"] == "SUCCEEDED");
    assert_eq!(done.body["state"], "SUCCEEDED", "{done}");
    let rr = d.post_json(
        "/apis/v2beta1/recurringruns",
        Some(&token),
        &json!({
            "display_name": "every-hour",
            "pipeline_spec": pipeline(json!({}), None, None),
            "trigger": {"periodic_schedule": {"interval_second": "3600"}},
        }),
    );
    assert_eq!(rr.status, 200, "{rr}");
    let rr_id = rr.body["recurring_run_id"].as_str().unwrap().to_string();
    d.terminate();

    // What an older version would have accepted and stored.
    let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
    let bad_runs = [
        (
            "11111111-1111-4111-8111-111111111111",
            "$.pipeline_spec.root.dag.tasks.step.retryPolicy",
            json!({"maxRetryCount": 2, "backoffDuration": "1e300s"}),
        ),
        (
            "22222222-2222-4222-8222-222222222222",
            "$.pipeline_spec.root.dag.tasks.step.retryPolicy",
            json!({"maxRetryCount": -1}),
        ),
        (
            "33333333-3333-4333-8333-333333333333",
            "$.pipeline_spec.root.dag.tasks.step.iteratorPolicy",
            json!({"parallelismLimit": 1e300}),
        ),
    ];
    for (id, path, value) in &bad_runs {
        let n = db
            .execute(
                "INSERT INTO resources (uid, kind, namespace, name, generation, resource_version, \
                 metadata, spec, status, created_at, updated_at) \
                 SELECT ?1, kind, namespace, ?1, generation, resource_version, metadata, \
                 json_set(spec, ?2, json(?3)), '{\"state\":\"PENDING\"}', created_at, updated_at \
                 FROM resources WHERE kind = 'KfpRun' AND name = ?4",
                rusqlite::params![id, path, value.to_string(), good_id],
            )
            .unwrap();
        assert_eq!(n, 1);
    }
    let n = db
        .execute(
            "UPDATE resources SET \
             spec = json_set(spec, '$.trigger.periodic_schedule.interval_second', '9000000000000000000'), \
             status = json_set(status, '$.last_fire', '2020-01-01T00:00:00Z') \
             WHERE kind = 'KfpRecurringRun' AND name = ?1",
            [&rr_id],
        )
        .unwrap();
    assert_eq!(n, 1);
    drop(db);

    d.restart();
    assert_answers(&d);
    for (id, _, _) in &bad_runs {
        let r = wait_run(&d, &token, id, |r| r.body["state"] == "FAILED");
        assert_eq!(r.body["state"], "FAILED", "{r}");
        let message = r.body["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains("the run cannot start"), "{r}");
        assert!(
            message.contains("retryPolicy") || message.contains("iteratorPolicy"),
            "{r}"
        );
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let rr = loop {
        let rr = d.get(&format!("/apis/v2beta1/recurringruns/{rr_id}"), Some(&token));
        if rr.body["error"].is_string() || std::time::Instant::now() > deadline {
            break rr;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        rr.body["error"]
            .as_str()
            .is_some_and(|e| e.contains("interval_second")),
        "{rr}"
    );
    // The controller goes on: a new run still runs.
    let again = create_run(&d, &token, pipeline(json!({}), None, None));
    assert_eq!(again.status, 200, "{again}");
    let id = again.body["run_id"].as_str().unwrap().to_string();
    let r = wait_run(&d, &token, &id, |r| r.body["state"] == "SUCCEEDED");
    assert_eq!(r.body["state"], "SUCCEEDED", "{r}");
    assert_answers(&d);
}

#[test]
fn a_condition_that_does_not_parse_is_invalid_and_names_the_parse_error() {
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let cond = |c: &str| pipeline(json!({"triggerPolicy": {"condition": c}}), None, None);
    let r = create_run(&d, &token, cond("inputs.parameter_values['x'] == == 'a'"));
    assert_eq!(r.status, 422, "{r}");
    assert_eq!(r.code(), "invalid_field", "{r}");
    assert_eq!(
        r.body["field"], "root.dag.tasks.step.triggerPolicy.condition",
        "{r}"
    );
    let detail = r.body["detail"].as_str().unwrap_or_default();
    assert!(
        detail.contains("does not parse") && detail.contains("unexpected"),
        "{r}"
    );
    // Well-formed CEL that uses what Hearth does not evaluate is refused by name.
    let r = create_run(&d, &token, cond("size(inputs.parameter_values['x']) > 1"));
    assert_eq!(r.status, 422, "{r}");
    assert_eq!(r.code(), "unsupported_feature", "{r}");
}
