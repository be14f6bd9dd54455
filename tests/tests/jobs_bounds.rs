//! No Job input can hurt the daemon: every number, duration and count of a Job is
//! bounded at the API (a 4xx naming the field), and a Job stored before those bounds
//! (as an older Hearth wrote it) is marked with the reason and left alone, so the daemon
//! comes up Ready instead of crashing on every start.

use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options};
use serde_json::{json, Value};

const JOBS: &str = "/apis/batch/v1/namespaces/team/jobs";
const JOB_EXTRAS: &str = "/hearth/v1/namespaces/team/jobs";

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().config("[jobs]\nbackoff_base_seconds = 0.1\n"))
}

/// A valid Job document: Indexed with per-index backoff and both policies, so that
/// every numeric field has a place to go.
fn base(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {
            "suspend": true,
            "completions": 2, "parallelism": 1, "completionMode": "Indexed",
            "backoffLimit": 1, "backoffLimitPerIndex": 1, "maxFailedIndexes": 1,
            "activeDeadlineSeconds": 60, "ttlSecondsAfterFinished": 60,
            "podFailurePolicy": {"rules": [{"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}}]},
            "successPolicy": {"rules": [{"succeededCount": 1}]},
            "template": {"spec": {
                "restartPolicy": "Never", "activeDeadlineSeconds": 30, "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "command": ["true"],
                    "resources": {"requests": {"cpu": "100m", "memory": "1Mi"}, "limits": {"nvidia.com/gpu": 0}}}]
            }}
        }
    })
}

/// (JSON pointer into the document, the field path Hearth must name).
const FIELDS: &[(&str, &str)] = &[
    ("/spec/activeDeadlineSeconds", "spec.activeDeadlineSeconds"),
    ("/spec/backoffLimit", "spec.backoffLimit"),
    ("/spec/ttlSecondsAfterFinished", "spec.ttlSecondsAfterFinished"),
    ("/spec/completions", "spec.completions"),
    ("/spec/parallelism", "spec.parallelism"),
    ("/spec/backoffLimitPerIndex", "spec.backoffLimitPerIndex"),
    ("/spec/maxFailedIndexes", "spec.maxFailedIndexes"),
    (
        "/spec/podFailurePolicy/rules/0/onExitCodes/values/0",
        "spec.podFailurePolicy.rules[0].onExitCodes.values[0]",
    ),
    (
        "/spec/successPolicy/rules/0/succeededCount",
        "spec.successPolicy.rules[0].succeededCount",
    ),
    (
        "/spec/template/spec/activeDeadlineSeconds",
        "spec.template.spec.activeDeadlineSeconds",
    ),
    (
        "/spec/template/spec/terminationGracePeriodSeconds",
        "spec.template.spec.terminationGracePeriodSeconds",
    ),
    (
        "/spec/template/spec/containers/0/resources/requests/cpu",
        "spec.template.spec.containers[0].resources",
    ),
    (
        "/spec/template/spec/containers/0/resources/requests/memory",
        "spec.template.spec.containers[0].resources",
    ),
    (
        "/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
        "spec.template.spec.containers[0].resources",
    ),
];

fn set(doc: &mut Value, pointer: &str, value: Value) {
    *doc.pointer_mut(pointer).unwrap_or_else(|| panic!("{pointer}")) = value;
}

/// The answer either creates the Job (the value is one Kubernetes allows) or is a 4xx
/// naming the field; never a 5xx.
fn check(d: &Daemon, name: &str, reply: &hearth_e2e::Reply, field: &str, shown: &str) -> bool {
    match reply.status {
        201 => {
            assert_eq!(d.delete(&format!("{JOBS}/{name}"), d.admin()).status, 200);
            true
        }
        400..=499 => {
            assert!(
                reply.text.contains(field),
                "{field} = {shown}: the answer does not name the field: {reply}"
            );
            false
        }
        _ => panic!("{field} = {shown}: {reply}"),
    }
}

#[test]
fn every_number_of_a_job_is_bounded_and_named() {
    let d = daemon();
    assert_eq!(d.post_json(JOBS, d.admin(), &base("valid")).status, 201);
    assert_eq!(d.delete(&format!("{JOBS}/valid"), d.admin()).status, 200);

    let huge: u64 = 9_223_372_036_854_775_807;
    let values: Vec<(Value, &str)> = vec![
        (json!(0), "0"),
        (json!(-1), "-1"),
        (json!(huge), "2^63-1"),
        (json!(1e300), "1e300"),
        (json!("NaN"), "\"NaN\""),
        (json!("twelve"), "a malformed string"),
        (json!(10_000_000_000_000u64), "10^13"),
    ];
    let mut n = 0;
    for (pointer, field) in FIELDS {
        for (value, shown) in &values {
            n += 1;
            let name = format!("b{n}");
            let mut doc = base(&name);
            set(&mut doc, pointer, value.clone());
            let reply = d.post_json(JOBS, d.admin(), &doc);
            let accepted = check(&d, &name, &reply, field, shown);
            // Only 0 (and a zero quantity) is a value Kubernetes takes; nothing past the
            // bounds is ever stored.
            // Exit codes are int32 in Kubernetes, so -1 is one; 0 is refused there.
            let allowed: &[&str] = if field.contains("onExitCodes") {
                &["-1"]
            } else {
                &["0"]
            };
            if accepted {
                assert!(allowed.contains(shown), "{field} = {shown} was accepted: {reply}");
            } else {
                assert_eq!(reply.status, 422, "{field} = {shown}: {reply}");
            }
        }
        // YAML's NaN and infinity have no JSON form: refused where the body is read.
        let yaml_field = pointer.rsplit('/').next().unwrap_or_default().replace("~1", "/");
        for not_finite in [".nan", ".inf", "-.inf"] {
            let yaml = format!(
                "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: nan}}\nspec:\n  {yaml_field}: {not_finite}\n  template: {{spec: {{containers: [{{command: ['true']}}]}}}}\n"
            );
            let reply = d.post_yaml(JOBS, d.admin(), &yaml);
            assert_eq!(reply.status, 400, "{yaml_field}: {not_finite}: {reply}");
            assert!(reply.text.contains("finite"), "{reply}");
        }
    }
    // Replacing and patching go through the same checks, and change nothing.
    assert_eq!(d.post_json(JOBS, d.admin(), &base("kept")).status, 201);
    for (pointer, field) in FIELDS.iter().filter(|(_, f)| !f.starts_with("spec.template")) {
        let mut doc = d.get(&format!("{JOBS}/kept"), d.admin()).body;
        set(&mut doc, pointer, json!(huge));
        let reply = d.put(&format!("{JOBS}/kept"), d.admin(), &doc);
        assert!(
            reply.status == 422 && reply.text.contains(field),
            "PUT {field}: {reply}"
        );
    }
    let reply = d.patch(
        &format!("{JOBS}/kept"),
        d.admin(),
        &json!({"spec": {"activeDeadlineSeconds": 10_000_000_000_000u64}}),
    );
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.body["details"]["causes"][0]["field"], "spec.activeDeadlineSeconds",
        "{reply}"
    );
    assert!(
        reply.body["message"]
            .as_str()
            .unwrap()
            .contains("from 0 to 2147483647"),
        "the answer gives the range: {reply}"
    );
    let kept = d.get(&format!("{JOBS}/kept"), d.admin()).body;
    assert_eq!(kept["spec"]["activeDeadlineSeconds"], 60);
    assert_eq!(kept["metadata"]["generation"], 1);
    assert_eq!(d.get("/readyz", None).status, 200);
}

#[test]
fn limits_of_zero_behave_as_kubernetes_says() {
    let d = daemon();
    let zero_deadline = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "no-time"},
        "spec": {"activeDeadlineSeconds": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "command": ["sleep", "30"]}]}}}
    });
    assert_eq!(d.post_json(JOBS, d.admin(), &zero_deadline).status, 201);
    let zero_completions = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "nothing-to-do"},
        "spec": {"completions": 0, "template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "command": ["true"]}]}}}
    });
    assert_eq!(d.post_json(JOBS, d.admin(), &zero_completions).status, 201);
    let failed = d.wait_until(&format!("{JOBS}/no-time"), Duration::from_secs(10), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Failed"))
    });
    let conditions = failed.body["status"]["conditions"].to_string();
    assert!(conditions.contains("DeadlineExceeded"), "{conditions}");
    let done = d.wait_until(&format!("{JOBS}/nothing-to-do"), Duration::from_secs(10), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Complete"))
    });
    assert_eq!(done.body["status"]["succeeded"], 0, "{}", done.body);
    assert_eq!(done.body["status"]["hearth"]["attempts"], 0, "{}", done.body);
}

/// Writes `spec` into the stored Job as an older Hearth, which bounded nothing, would
/// have kept it.
fn store_spec_directly(d: &Daemon, name: &str, edit: impl Fn(&mut Value)) {
    let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
    let spec: String = db
        .query_row(
            "SELECT spec FROM resources WHERE kind = 'Job' AND namespace = 'team' AND name = ?1",
            [name],
            |row| row.get(0),
        )
        .unwrap();
    let mut spec: Value = serde_json::from_str(&spec).unwrap();
    edit(&mut spec);
    let changed = db
        .execute(
            "UPDATE resources SET spec = ?1 WHERE kind = 'Job' AND namespace = 'team' AND name = ?2",
            rusqlite::params![spec.to_string(), name],
        )
        .unwrap();
    assert_eq!(changed, 1);
}

#[test]
fn a_stored_job_past_the_bounds_is_marked_and_the_daemon_comes_up_ready() {
    let mut d = daemon();
    let job_doc = |name: &str, extra: Value| {
        let mut doc = json!({
            "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
            "spec": {"template": {"spec": {"restartPolicy": "Never", "terminationGracePeriodSeconds": 1,
                "containers": [{"name": "main", "command": ["true"]}]}}}
        });
        for (k, v) in extra.as_object().unwrap() {
            doc["spec"][k] = v.clone();
        }
        doc
    };
    // One waiting to run, and one already finished whose TTL is still to come.
    assert_eq!(
        d.post_json(JOBS, d.admin(), &job_doc("waiting", json!({"suspend": true})))
            .status,
        201
    );
    assert_eq!(
        d.post_json(
            JOBS,
            d.admin(),
            &job_doc("finished", json!({"ttlSecondsAfterFinished": 3600}))
        )
        .status,
        201
    );
    d.wait_until(&format!("{JOBS}/finished"), Duration::from_secs(10), |r| {
        r.body["status"]["succeeded"] == 1 && r.body["status"]["completionTime"].is_string()
    });
    d.terminate();

    store_spec_directly(&d, "waiting", |spec| {
        spec["suspend"] = json!(false);
        spec["activeDeadlineSeconds"] = json!(10_000_000_000_000u64);
    });
    store_spec_directly(&d, "finished", |spec| {
        spec["ttlSecondsAfterFinished"] = json!(9_223_372_036_854_775_807u64);
    });
    d.restart();
    d.wait_until("/readyz", Duration::from_secs(10), |r| r.status == 200);

    let marked = d.wait_until(&format!("{JOBS}/waiting"), Duration::from_secs(10), |r| {
        r.body["status"]["conditions"].is_array()
    });
    let failed = marked.body["status"]["conditions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["type"] == "Failed")
        .cloned()
        .unwrap_or_else(|| panic!("{}", marked.body));
    assert_eq!(failed["reason"], "InvalidSpec", "{failed}");
    assert!(
        failed["message"]
            .as_str()
            .unwrap()
            .contains("spec.activeDeadlineSeconds"),
        "the condition says why: {failed}"
    );
    assert_eq!(
        marked.body["status"]["hearth"]["attempts"].as_u64().unwrap_or(0),
        0,
        "nothing ran: {}",
        marked.body
    );

    // Still there, and still answering after a few controller passes.
    std::thread::sleep(Duration::from_secs(2));
    assert!(d.is_running(), "{}", d.logs());
    let finished = d.get(&format!("{JOBS}/finished"), d.admin());
    assert_eq!(finished.status, 200, "{finished}");
    assert_eq!(d.get("/readyz", None).status, 200);
    let log = d.logs();
    assert!(!log.contains("panicked"), "{log}");
    let retries = log.matches("reconcile failed").count();
    assert!(retries < 3, "no retry storm: {retries} failed reconciles\n{log}");

    // And once more, as a second restart would find it.
    d.restart();
    d.wait_until("/readyz", Duration::from_secs(10), |r| r.status == 200);
    assert_eq!(d.get(&format!("{JOBS}/waiting"), d.admin()).status, 200);
}

#[test]
fn log_query_numbers_are_checked_too() {
    let d = daemon();
    let doc = json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "said"},
        "spec": {"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "command": ["sh", "-c", "echo one; echo two"]}]}}}
    });
    assert_eq!(d.post_json(JOBS, d.admin(), &doc).status, 201);
    d.wait_until(&format!("{JOBS}/said"), Duration::from_secs(10), |r| {
        r.body["status"]["succeeded"] == 1
    });
    for key in ["tail", "attempt"] {
        for value in ["0", "-1", "9223372036854775807", "1e300", "NaN", "twelve"] {
            let reply = d.get(&format!("{JOB_EXTRAS}/said/logs?{key}={value}"), d.admin());
            match reply.status {
                200 => assert_eq!(value, "0", "{key}={value}: {reply}"),
                400 => assert!(
                    reply
                        .text
                        .contains(&format!("query parameter {key}: must be an integer from 0 to")),
                    "{key}={value}: the answer names the parameter and the range: {reply}"
                ),
                _ => panic!("{key}={value}: {reply}"),
            }
        }
    }
    assert_eq!(
        d.get(&format!("{JOB_EXTRAS}/said/logs?tail=0"), d.admin()).text,
        ""
    );
    assert_eq!(
        d.get(&format!("{JOB_EXTRAS}/said/logs?tail=100000000"), d.admin())
            .text,
        "one\ntwo\n"
    );
    assert_eq!(d.get("/readyz", None).status, 200);
}
