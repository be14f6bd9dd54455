//! No InferenceService input can stop the daemon: every numeric, duration and count
//! field is refused out of range with a 4xx naming it, a stored object that predates
//! those bounds neither panics nor crash-loops the daemon on restart, and services
//! that come and go leave no series behind in `/metrics`.

use std::time::Duration;

use hearth_e2e::{spawn_daemon, Daemon};
use serde_json::{json, Value};

const BASE: &str = "/apis/serving.kserve.io/v1beta1/namespaces/bounds/inferenceservices";
const BASE_EXTRAS: &str = "/hearth/v1/namespaces/bounds/inferenceservices";

fn service(name: &str, predictor: Value, annotations: Value) -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": annotations},
        "spec": {"predictor": predictor},
    })
}

fn sklearn() -> Value {
    json!({"minReplicas": 0, "sklearn": {"storageUri": "file:///nonexistent/model"}})
}

/// The values every bounded field is tried with.
fn hostile() -> Vec<Value> {
    vec![
        json!(0),
        json!(-1),
        json!(9_223_372_036_854_775_807i64),
        json!(1e300),
        json!("NaN"),
        json!("12x"),
    ]
}

fn alive(d: &Daemon) {
    let r = d.get("/healthz", None);
    assert_eq!(r.status, 200, "the daemon stopped answering: {r}");
}

/// A 4xx naming `field` (in `field`, `feature` or `detail`), or a 201 for a value
/// the field allows (then the service is removed again).
fn refused_or_allowed(d: &Daemon, doc: &Value, field: &str, value: &Value) {
    let r = d.post_json(BASE, d.admin(), doc);
    if r.status == 201 {
        assert_eq!(value, &json!(0), "{field} = {value} was accepted: {r}");
        let name = doc["metadata"]["name"].as_str().unwrap_or_default();
        assert_eq!(d.delete(&format!("{BASE}/{name}"), d.admin()).status, 200);
        return;
    }
    assert!(
        (400..500).contains(&r.status),
        "{field} = {value}: {} {r}",
        r.status
    );
    let named = format!("{} {}", r.cause_field(), r.body["message"]);
    assert!(named.contains(field), "{field} = {value} not named: {r}");
    alive(d);
}

#[test]
fn every_number_of_an_inference_service_is_bounded_and_named() {
    let d = spawn_daemon();
    let mut n = 0;
    let mut next = || {
        n += 1;
        format!("b{n}")
    };
    for field in [
        "minReplicas",
        "maxReplicas",
        "scaleTarget",
        "containerConcurrency",
        "timeout",
        "canaryTrafficPercent",
    ] {
        for value in hostile() {
            let mut predictor = sklearn();
            predictor[field] = value.clone();
            let doc = service(&next(), predictor, json!({}));
            refused_or_allowed(&d, &doc, &format!("spec.predictor.{field}"), &value);
        }
    }
    // The transformer's numbers, and a container port.
    for field in ["minReplicas", "timeout", "containerConcurrency"] {
        for value in hostile() {
            let mut predictor = json!({"sklearn": {"storageUri": "file:///m"}, "minReplicas": 0});
            let mut transformer =
                json!({"containers": [{"name": "t", "image": "t", "command": ["sleep", "1"]}]});
            transformer[field] = value.clone();
            predictor["minReplicas"] = json!(0);
            let mut doc = service(&next(), predictor, json!({}));
            doc["spec"]["transformer"] = transformer;
            refused_or_allowed(&d, &doc, &format!("spec.transformer.{field}"), &value);
        }
    }
    for value in hostile() {
        let predictor = json!({"containers": [{"name": "c", "image": "c", "command": ["sleep", "1"],
            "ports": [{"containerPort": value.clone()}]}]});
        let doc = service(&next(), predictor, json!({}));
        refused_or_allowed(
            &d,
            &doc,
            "spec.predictor.containers[0].ports[0].containerPort",
            &value,
        );
    }
    // Quantities: a number or a string, each out of range or malformed.
    for resource in ["cpu", "memory", "nvidia.com/gpu"] {
        for value in hostile() {
            let mut predictor = sklearn();
            predictor["sklearn"]["resources"] = json!({"limits": {resource: value.clone()}});
            let doc = service(&next(), predictor, json!({}));
            refused_or_allowed(
                &d,
                &doc,
                &format!("spec.predictor.sklearn.resources.limits.{resource}"),
                &value,
            );
        }
    }
    // Annotations are strings; each number in one is bounded alike.
    for key in [
        "autoscaling.knative.dev/min-scale",
        "autoscaling.knative.dev/target",
        "serving.hearth.dev/response-cache",
        "serving.hearth.dev/response-cache-size",
    ] {
        for value in ["-1", "9223372036854775807", "1e300", "NaN", "12x"] {
            let mut annotations = json!({key: value});
            if key == "serving.hearth.dev/response-cache-size" {
                annotations["serving.hearth.dev/response-cache"] = json!("true");
            }
            let doc = service(&next(), sklearn(), annotations);
            refused_or_allowed(&d, &doc, &format!("metadata.annotations.{key}"), &json!(value));
        }
    }
    // Upstream fields with numbers Hearth does not run are refused by name whatever
    // their values: the batcher, probes, Knative windows.
    let mut predictor = sklearn();
    predictor["batcher"] = json!({"maxBatchSize": 9_223_372_036_854_775_807i64, "maxLatency": 1e300});
    refused_or_allowed(
        &d,
        &service(&next(), predictor, json!({})),
        "spec.predictor.batcher",
        &json!("batcher"),
    );
    let mut predictor = sklearn();
    predictor["sklearn"]["livenessProbe"] = json!({"periodSeconds": -1, "timeoutSeconds": 1e300});
    refused_or_allowed(
        &d,
        &service(&next(), predictor, json!({})),
        "livenessProbe",
        &json!("probe"),
    );
    for key in [
        "autoscaling.knative.dev/window",
        "autoscaling.knative.dev/scale-to-zero-pod-retention-period",
        "autoscaling.knative.dev/max-scale",
    ] {
        refused_or_allowed(
            &d,
            &service(&next(), sklearn(), json!({key: "9223372036854775807s"})),
            key,
            &json!("annotation"),
        );
    }
    // YAML's NaN has no JSON form: it must not become a 500 or a crash.
    let yaml = "apiVersion: serving.kserve.io/v1beta1\nkind: InferenceService\nmetadata: {name: yaml-nan}\nspec:\n  predictor:\n    minReplicas: .nan\n    timeout: .inf\n    sklearn: {storageUri: file:///m}\n";
    let r = d.post_yaml(BASE, d.admin(), yaml);
    assert!(r.status < 500, "{r}");
    if r.status != 201 {
        assert!(
            r.to_string().contains("timeout") || r.to_string().contains("minReplicas"),
            "{r}"
        );
    }
    alive(&d);
}

/// What an older Hearth could have stored, written into SQLite directly: the daemon
/// comes up Ready, marks the service it cannot read, and keeps answering.
#[test]
fn a_restart_with_out_of_range_objects_stored_comes_up_ready() {
    let mut d = spawn_daemon();
    for name in ["stored-spec", "stored-revision"] {
        let r = d.post_json(BASE, d.admin(), &service(name, sklearn(), json!({})));
        assert_eq!(r.status, 201, "{r}");
    }
    // The revision exists once the controller has made it.
    d.wait_until(&format!("{BASE}/stored-revision"), Duration::from_secs(30), |r| {
        r.body["status"]["components"]["predictor"]["latestCreatedRevision"].is_string()
    });
    d.terminate();

    let db = rusqlite::Connection::open(d.data_dir.join("hearth.db")).unwrap();
    let changed = db
        .execute(
            "UPDATE resources SET spec = json_set(spec, '$.predictor.minReplicas', 9223372036854775807,
                 '$.predictor.timeout', 1e300, '$.predictor.canaryTrafficPercent', -1),
             metadata = json_set(metadata, '$.annotations', json('{\"serving.hearth.dev/response-cache\": \"99999999999999999999\"}'))
             WHERE kind = 'InferenceService' AND name = 'stored-spec'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let changed = db
        .execute(
            // A stale hash makes the controller number a new revision after this one.
            "UPDATE resources SET spec = json_set(spec, '$.number', 9223372036854775807, '$.hash', 'stale',
                 '$.component.scaling.min_replicas', 4294967295, '$.component.scaling.target', 1e300,
                 '$.component.timeout_seconds', 9223372036854775807,
                 '$.component.scaling.container_concurrency', 4294967295),
             status = json_set(status, '$.nextSlot', 9223372036854775807, '$.timeouts', 9223372036854775807,
                 '$.fetchAttempts', 9223372036854775807, '$.fetchRetryAt', '+262142-12-31T23:59:59Z')
             WHERE kind = 'InferenceServiceRevision' AND name = 'stored-revision-predictor-00001'",
            [],
        )
        .unwrap();
    assert_eq!(changed, 1);
    drop(db);

    d.restart();
    d.wait_until("/readyz", Duration::from_secs(30), |r| r.status == 200);
    let spec = d.wait_until(&format!("{BASE}/stored-spec"), Duration::from_secs(30), |r| {
        r.body["status"]["conditions"][0]["reason"] == "InvalidSpec"
    });
    let message = spec.body["status"]["conditions"][0]["message"].to_string();
    assert!(message.contains("spec.predictor"), "{spec}");
    // The controller went on past both: a new revision after the stored one, and a
    // service created now is reconciled.
    d.wait_until(&format!("{BASE}/stored-revision"), Duration::from_secs(30), |r| {
        r.body["status"]["components"]["predictor"]["latestCreatedRevision"]
            == "stored-revision-predictor-9223372036854775807"
    });
    let r = d.post_json(BASE, d.admin(), &service("fresh", sklearn(), json!({})));
    assert_eq!(r.status, 201, "{r}");
    d.wait_until(&format!("{BASE}/fresh"), Duration::from_secs(30), |r| {
        r.body["status"]["components"]["predictor"]["latestCreatedRevision"] == "fresh-predictor-00001"
    });
    assert!(d.is_running(), "the daemon exited: {}", d.logs());
    assert_eq!(d.get("/readyz", None).status, 200);
    let listed = d.get(BASE, d.admin());
    assert_eq!(listed.status, 200, "{listed}");
    assert_eq!(listed.body["items"].as_array().map(Vec::len), Some(3));
    // The service whose revision was out of range started no replica beyond the
    // one its (failing) fetch allows: none.
    let replicas = d.get(&format!("{BASE_EXTRAS}/stored-revision/replicas"), d.admin());
    if replicas.status == 200 {
        let n = replicas.body["items"].as_array().map(Vec::len).unwrap_or(0);
        assert!(n <= 1, "{replicas}");
    }
    // Both can still be deleted.
    for name in ["stored-spec", "stored-revision", "fresh"] {
        assert_eq!(d.delete(&format!("{BASE}/{name}"), d.admin()).status, 200);
    }
    d.wait_until(BASE, Duration::from_secs(30), |r| r.body["items"] == json!([]));
    assert!(d.is_running());
}

/// The series of one service in `/metrics`.
fn series_of(d: &Daemon, service: &str) -> Vec<String> {
    let text = d.get("/metrics", d.admin()).text;
    let needle = format!("service=\"{service}\"");
    text.lines()
        .filter(|l| l.starts_with("hearth_serving_") && l.contains(&needle))
        .map(str::to_string)
        .collect()
}

/// Services edited and deleted leave no per-revision state behind: each revision's
/// series (and with them its pool and autoscaler) goes when it can get no traffic.
#[test]
fn revisions_that_come_and_go_leave_no_series_behind() {
    let d = spawn_daemon();
    // Each round is waited for before the next edit: an edit the controller has not
    // seen yet is coalesced with the next one (one revision for both), and this test
    // names the revisions it checks (serving_churn covers edits in flight).
    let names: Vec<String> = (0..12).map(|i| format!("churn{i}")).collect();
    for name in &names {
        let r = d.post_json(BASE, d.admin(), &service(name, sklearn(), json!({})));
        assert_eq!(r.status, 201, "{r}");
    }
    // Two edits each: revisions 00002 and 00003; 00001 and 00002 were never ready,
    // so neither can get traffic again.
    for round in 1..=3 {
        for name in names.iter().filter(|_| round > 1) {
            let patch = json!({"spec": {"predictor": {"sklearn": {"storageUri": format!("file:///nonexistent/m{round}")}}}});
            let r = d.patch(&format!("{BASE}/{name}"), d.admin(), &patch);
            assert_eq!(r.status, 200, "{r}");
        }
        for name in &names {
            let failed = format!("{name}-predictor-0000{round}");
            d.wait_until(&format!("{BASE}/{name}"), Duration::from_secs(60), |r| {
                let predictor = &r.body["status"]["components"]["predictor"];
                predictor["latestCreatedRevision"] == json!(failed)
                    && r.body["status"]["conditions"]
                        .as_array()
                        .is_some_and(|c| c.iter().any(|c| c["reason"] == "RevisionFailed"))
            });
        }
    }
    let probe = &names[0];
    let wanted = format!("revision=\"{probe}-predictor-00003\"");
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let series = series_of(&d, probe);
        let stale = series.iter().any(|l| {
            l.contains(&format!("revision=\"{probe}-predictor-00001\""))
                || l.contains(&format!("revision=\"{probe}-predictor-00002\""))
        });
        if series.iter().any(|l| l.contains(&wanted)) && !stale {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the idle revisions' series stayed: {series:#?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    for name in &names {
        assert_eq!(d.delete(&format!("{BASE}/{name}"), d.admin()).status, 200);
    }
    d.wait_until(BASE, Duration::from_secs(60), |r| r.body["items"] == json!([]));
    for name in &names {
        let left = series_of(&d, name);
        assert!(left.is_empty(), "{name} left series behind: {left:#?}");
    }
}

/// `/metrics` carries each service's series labelled with its namespace: a user sees
/// the node-wide series and their own namespace's, never another's; an admin sees all.
#[test]
fn a_user_sees_only_their_own_namespaces_serving_series() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    let bob = d.create_user("bob");
    for namespace in ["alice", "bob"] {
        let base = format!("/apis/serving.kserve.io/v1beta1/namespaces/{namespace}/inferenceservices");
        let r = d.post_json(
            &base,
            d.admin(),
            &service(&format!("{namespace}-model"), sklearn(), json!({})),
        );
        assert_eq!(r.status, 201, "{r}");
    }
    d.wait_until("/metrics", Duration::from_secs(60), |r| {
        r.text.contains("namespace=\"alice\"") && r.text.contains("namespace=\"bob\"")
    });
    for (token, own, other) in [(&alice, "alice", "bob"), (&bob, "bob", "alice")] {
        let r = d.get("/metrics", Some(token));
        assert_eq!(r.status, 200, "{r}");
        assert!(
            r.text.contains(&format!("namespace=\"{own}\"")),
            "{own} misses their own series: {}",
            r.text
        );
        assert!(
            !r.text.contains(&format!("namespace=\"{other}\"")),
            "{own} sees {other}'s series: {}",
            r.text
        );
        assert!(
            !r.text.contains(&format!("{other}-model")),
            "{own} sees {other}'s service: {}",
            r.text
        );
        assert!(
            r.text.contains("process_threads"),
            "node-wide series are kept: {}",
            r.text
        );
        assert!(r.text.trim_end().ends_with("# EOF"), "{}", r.text);
    }
}
