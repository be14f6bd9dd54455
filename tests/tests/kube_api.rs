//! The Kubernetes resource API, generic over kinds: the same checks run over every
//! kind Hearth serves at Kubernetes paths (a table of kinds, each with a minimal valid
//! document, a field that may change and a field to make invalid), as kubectl and the
//! Kubernetes clients rely on them: CRUD, `Status` errors, optimistic concurrency,
//! watch (with resume), selectors, paging, dry run, namespaces and discovery.

use std::io::{BufRead, BufReader};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use reqwest::Method;
use serde_json::{json, Value};

/// One kind, as the conformance checks need it.
struct Kind {
    /// `/apis/<group>/<version>`.
    group_version: &'static str,
    plural: &'static str,
    kind: &'static str,
    /// A minimal valid document named `name`.
    document: fn(&str) -> Value,
    /// A merge patch changing a field the kind lets change in place.
    change: Value,
    /// Where the change shows in the answer, and its value.
    changed_at: &'static str,
    changed_to: Value,
    /// A merge patch making the document invalid, and the field the `Status` names.
    invalid: Value,
    invalid_field: &'static str,
    /// Whether DELETE answers a `Status` (built-in kinds) or the object (CRDs).
    delete_answers_status: bool,
}

fn job(name: &str) -> Value {
    json!({
        "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": name},
        "spec": {"backoffLimit": 0, "suspend": true, "template": {"spec": {"restartPolicy": "Never",
            "terminationGracePeriodSeconds": 1,
            "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 30"]}]}}}
    })
}

fn isvc(name: &str) -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": name},
        "spec": {"predictor": {"minReplicas": 0, "sklearn": {"storageUri": "file:///nonexistent/model"}}}
    })
}

fn kinds() -> Vec<Kind> {
    vec![
        Kind {
            group_version: "/apis/batch/v1",
            plural: "jobs",
            kind: "Job",
            document: job,
            change: json!({"spec": {"activeDeadlineSeconds": 600}}),
            changed_at: "/spec/activeDeadlineSeconds",
            changed_to: json!(600),
            invalid: json!({"spec": {"completions": -1}}),
            invalid_field: "spec.completions",
            delete_answers_status: true,
        },
        Kind {
            group_version: "/apis/serving.kserve.io/v1beta1",
            plural: "inferenceservices",
            kind: "InferenceService",
            document: isvc,
            change: json!({"spec": {"predictor": {"maxReplicas": 3}}}),
            changed_at: "/spec/predictor/maxReplicas",
            changed_to: json!(3),
            invalid: json!({"spec": {"predictor": {"minReplicas": -1}}}),
            invalid_field: "spec.predictor.minReplicas",
            delete_answers_status: false,
        },
    ]
}

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().config("[isolation]\nenabled = false\n"))
}

fn collection(kind: &Kind, namespace: &str) -> String {
    format!("{}/namespaces/{namespace}/{}", kind.group_version, kind.plural)
}

fn patched(mut document: Value, patch: &Value) -> Value {
    merge(&mut document, patch);
    document
}

fn merge(target: &mut Value, patch: &Value) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                if v.is_null() {
                    t.remove(k);
                } else {
                    merge(t.entry(k.clone()).or_insert(Value::Null), v);
                }
            }
        }
        _ => *target = patch.clone(),
    }
}

fn names(list: &Reply) -> Vec<String> {
    list.body["items"]
        .as_array()
        .unwrap_or_else(|| panic!("no items: {list}"))
        .iter()
        .map(|i| i["metadata"]["name"].as_str().unwrap().to_string())
        .collect()
}

fn version(doc: &Value) -> i64 {
    doc["metadata"]["resourceVersion"]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no resourceVersion in {doc}"))
}

/// A watch running in the background: its events, one per line, arrive on the channel.
fn watch(d: &Daemon, path: &str) -> mpsc::Receiver<Value> {
    let (tx, rx) = mpsc::channel();
    let response = d
        .request(Method::GET, path, d.admin())
        .timeout(Duration::from_secs(60))
        .send()
        .unwrap();
    assert_eq!(response.status(), 200, "{path}");
    thread::spawn(move || {
        for line in BufReader::new(response).lines() {
            let Ok(line) = line else { return };
            let Ok(event) = serde_json::from_str::<Value>(&line) else {
                return;
            };
            if tx.send(event).is_err() {
                return;
            }
        }
    });
    rx
}

/// Waits for an event of `event_type` about `name`; panics with what came instead.
fn expect_event(events: &mpsc::Receiver<Value>, event_type: &str, name: &str, timeout: Duration) -> Value {
    let deadline = Instant::now() + timeout;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match events.recv_timeout(left) {
            Ok(event) => {
                if event["type"] == event_type && event["object"]["metadata"]["name"] == name {
                    return event;
                }
                seen.push(format!(
                    "{} {}",
                    event["type"], event["object"]["metadata"]["name"]
                ));
            }
            Err(_) => break,
        }
    }
    panic!("no {event_type} event for {name} within {timeout:?}; saw {seen:?}");
}

fn conformance(d: &Daemon, kind: &Kind) {
    let base = collection(kind, "team");
    let what = kind.kind;

    // Create, and the same name again.
    let created = d.post_json(&base, d.admin(), &(kind.document)("first"));
    assert_eq!(created.status, 201, "{what}: {created}");
    assert_eq!(created.body["kind"], kind.kind);
    assert_eq!(created.body["metadata"]["generation"], 1, "{created}");
    let first_version = version(&created.body);
    let again = d.post_json(&base, d.admin(), &(kind.document)("first"));
    again.assert_status(409, "AlreadyExists");
    assert_eq!(again.body["details"]["name"], "first", "{again}");

    // Invalid: the Status names the field.
    let bad = patched((kind.document)("bad"), &kind.invalid);
    let reply = d.post_json(&base, d.admin(), &bad);
    reply.assert_status(422, "Invalid");
    assert_eq!(reply.cause_field(), kind.invalid_field, "{what}: {reply}");
    assert!(
        reply.body["message"].as_str().unwrap().contains(" is invalid: "),
        "{reply}"
    );

    // Get and list, in Kubernetes' shapes.
    let item = format!("{base}/first");
    let got = d.get(&item, d.admin());
    assert_eq!(got.status, 200, "{got}");
    assert_eq!(got.body["metadata"]["uid"], created.body["metadata"]["uid"]);
    d.get(&format!("{base}/missing"), d.admin())
        .assert_status(404, "NotFound");
    let list = d.get(&base, d.admin());
    assert_eq!(list.status, 200, "{list}");
    assert_eq!(list.body["kind"], format!("{}List", kind.kind), "{list}");
    assert_eq!(list.body["items"][0]["kind"], kind.kind, "{list}");
    assert_eq!(names(&list), ["first"]);
    let listed_at = list.body["metadata"]["resourceVersion"]
        .as_str()
        .unwrap()
        .to_string();

    // A watch resumed from the list's version sees what follows, and only that.
    let events = watch(d, &format!("{base}?watch=true&resourceVersion={listed_at}"));

    // Dry run changes nothing.
    let dry = d.post_json(
        &format!("{base}?dryRun=All"),
        d.admin(),
        &(kind.document)("ghost"),
    );
    assert_eq!(dry.status, 201, "{dry}");
    d.get(&format!("{base}/ghost"), d.admin())
        .assert_status(404, "NotFound");
    let dry_patch = d.send_body(
        Method::PATCH,
        &format!("{item}?dryRun=All"),
        d.admin(),
        "application/merge-patch+json",
        kind.change.to_string(),
    );
    assert_eq!(dry_patch.status, 200, "{dry_patch}");
    assert_eq!(dry_patch.body.pointer(kind.changed_at), Some(&kind.changed_to));
    assert_ne!(
        d.get(&item, d.admin()).body.pointer(kind.changed_at),
        Some(&kind.changed_to),
        "a dry run wrote"
    );
    d.post_json(&format!("{base}?dryRun=Some"), d.admin(), &(kind.document)("x"))
        .assert_status(400, "BadRequest");

    // Replace over the version read (read again if the controller wrote status in
    // between); again over the same, now stale, version: 409.
    let (current, replacement, replaced) = (0..10)
        .map(|_| {
            let current = d.get(&item, d.admin()).body;
            let replacement = patched(current.clone(), &kind.change);
            let replaced = d.put(&item, d.admin(), &replacement);
            (current, replacement, replaced)
        })
        .find(|(_, _, replaced)| replaced.status != 409)
        .expect("every replace conflicted with a controller write");
    assert_eq!(replaced.status, 200, "{what}: {replaced}");
    assert_eq!(replaced.body.pointer(kind.changed_at), Some(&kind.changed_to));
    assert_eq!(replaced.body["metadata"]["generation"], 2, "{replaced}");
    assert!(version(&replaced.body) > first_version);
    d.put(&item, d.admin(), &replacement)
        .assert_status(409, "Conflict");
    let stale_patch = json!({"metadata": {"resourceVersion": current["metadata"]["resourceVersion"], "labels": {"x": "y"}}});
    d.patch(&item, d.admin(), &stale_patch)
        .assert_status(409, "Conflict");

    // Patch: merge, strategic merge (as kubectl sends) and JSON patch; directives and
    // server-side apply are refused by name.
    let labelled = d.patch(
        &item,
        d.admin(),
        &json!({"metadata": {"labels": {"tier": "front"}}}),
    );
    assert_eq!(labelled.status, 200, "{labelled}");
    assert_eq!(labelled.body["metadata"]["labels"]["tier"], "front");
    assert_eq!(labelled.body.pointer(kind.changed_at), Some(&kind.changed_to));
    let strategic = d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/strategic-merge-patch+json",
        json!({"metadata": {"labels": {"app": "demo"}}}).to_string(),
    );
    assert_eq!(strategic.status, 200, "{strategic}");
    assert_eq!(
        strategic.body["metadata"]["labels"],
        json!({"tier": "front", "app": "demo"})
    );
    let directive = d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/strategic-merge-patch+json",
        json!({"metadata": {"$patch": "replace"}}).to_string(),
    );
    directive.assert_status(422, "Invalid");
    assert_eq!(directive.cause_field(), "metadata.$patch", "{directive}");
    let json_patch = d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/json-patch+json",
        json!([{"op": "add", "path": "/metadata/labels/json", "value": "patch"},
               {"op": "test", "path": "/metadata/labels/tier", "value": "front"}])
        .to_string(),
    );
    assert_eq!(json_patch.status, 200, "{json_patch}");
    assert_eq!(json_patch.body["metadata"]["labels"]["json"], "patch");
    d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/json-patch+json",
        json!([{"op": "test", "path": "/metadata/labels/tier", "value": "back"}]).to_string(),
    )
    .assert_status(422, "Invalid");
    let undone = d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/json-patch+json",
        json!([{"op": "remove", "path": "/metadata/labels/json"}]).to_string(),
    );
    assert_eq!(undone.status, 200, "{undone}");
    d.send_body(
        Method::PATCH,
        &item,
        d.admin(),
        "application/apply-patch+yaml",
        "{}",
    )
    .assert_status(415, "UnsupportedMediaType");

    // The status subresource.
    let status = d.get(&format!("{item}/status"), d.admin());
    assert_eq!(status.status, 200, "{status}");
    assert_eq!(status.body["kind"], kind.kind);
    d.put(&format!("{item}/status"), d.admin(), &current)
        .assert_status(409, "Conflict");

    // A second object, then selectors.
    let second = patched(
        (kind.document)("second"),
        &json!({"metadata": {"labels": {"tier": "back"}}}),
    );
    assert_eq!(d.post_json(&base, d.admin(), &second).status, 201);
    for (selector, expected) in [
        ("labelSelector=tier%3Dfront", vec!["first"]),
        ("labelSelector=tier%3D%3Dback", vec!["second"]),
        ("labelSelector=tier!%3Dfront", vec!["second"]),
        ("labelSelector=tier%20in%20(front,back)", vec!["first", "second"]),
        ("labelSelector=tier%20notin%20(front)", vec!["second"]),
        ("labelSelector=app", vec!["first"]),
        ("labelSelector=!app", vec!["second"]),
        ("fieldSelector=metadata.name%3Dsecond", vec!["second"]),
        ("fieldSelector=metadata.name!%3Dsecond", vec!["first"]),
        (
            "fieldSelector=metadata.namespace%3Dteam,metadata.name%3Dfirst",
            vec!["first"],
        ),
    ] {
        let list = d.get(&format!("{base}?{selector}"), d.admin());
        assert_eq!(list.status, 200, "{selector}: {list}");
        assert_eq!(names(&list), expected, "{what} {selector}");
    }
    let unsupported = d.get(&format!("{base}?fieldSelector=status.phase%3DRunning"), d.admin());
    unsupported.assert_status(400, "BadRequest");
    assert!(unsupported.text.contains("status.phase"), "{unsupported}");
    d.get(&format!("{base}?labelSelector=tier%20in%20front"), d.admin())
        .assert_status(400, "BadRequest");

    // Paging: limit and continue cover every item once.
    let page = d.get(&format!("{base}?limit=1"), d.admin());
    assert_eq!(names(&page), ["first"], "{page}");
    let token = page.body["metadata"]["continue"].as_str().unwrap().to_string();
    let rest = d.get(&format!("{base}?limit=1&continue={token}"), d.admin());
    assert_eq!(names(&rest), ["second"], "{rest}");
    assert!(rest.body["metadata"]["continue"].is_null(), "{rest}");

    // Another user's namespace is Forbidden; their all-namespaces list holds none of it.
    let alice = d.create_user(&format!("alice-{}", kind.plural));
    d.get(&base, Some(&alice)).assert_status(403, "Forbidden");
    d.post_json(&base, Some(&alice), &(kind.document)("x"))
        .assert_status(403, "Forbidden");
    let all = format!("{}/{}", kind.group_version, kind.plural);
    assert_eq!(names(&d.get(&all, Some(&alice))), Vec::<String>::new());
    assert_eq!(names(&d.get(&all, d.admin())), ["first", "second"]);

    // Delete, in the answer Kubernetes gives for the kind.
    let deleted = d.delete(&item, d.admin());
    assert_eq!(deleted.status, 200, "{deleted}");
    if kind.delete_answers_status {
        assert_eq!(deleted.body["kind"], "Status", "{deleted}");
        assert_eq!(deleted.body["status"], "Success", "{deleted}");
        assert_eq!(deleted.body["details"]["name"], "first", "{deleted}");
    } else {
        assert_eq!(deleted.body["kind"], kind.kind, "{deleted}");
        assert!(
            deleted.body["metadata"]["deletionTimestamp"].is_string(),
            "{deleted}"
        );
    }

    // The watch saw every change after the list, in order, then the deletion.
    let modified = expect_event(&events, "MODIFIED", "first", Duration::from_secs(10));
    assert!(version(&modified["object"]) > listed_at.parse::<i64>().unwrap());
    expect_event(&events, "ADDED", "second", Duration::from_secs(10));
    expect_event(&events, "DELETED", "first", Duration::from_secs(30));
    d.get(&item, d.admin()).assert_status(404, "NotFound");

    // A watch without a version starts with the current objects; labels filter it.
    let fresh = watch(
        d,
        &format!("{base}?watch=1&labelSelector=tier%3Dback&timeoutSeconds=5"),
    );
    let added = expect_event(&fresh, "ADDED", "second", Duration::from_secs(10));
    assert_eq!(added["object"]["kind"], kind.kind);
}

#[test]
fn every_kind_behaves_as_the_kubernetes_api() {
    let d = daemon();
    for kind in kinds() {
        conformance(&d, &kind);
    }
}

#[test]
fn discovery_describes_every_kind() {
    let d = daemon();
    let api = d.get("/api", d.admin());
    assert_eq!(api.body["kind"], "APIVersions", "{api}");
    assert_eq!(api.body["versions"], json!(["v1"]));
    let groups = d.get("/apis", d.admin());
    assert_eq!(groups.body["kind"], "APIGroupList", "{groups}");
    let group_names: Vec<&str> = groups.body["groups"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|g| g["name"].as_str())
        .collect();
    for kind in kinds() {
        let resources = d.get(kind.group_version, d.admin());
        assert_eq!(resources.body["kind"], "APIResourceList", "{resources}");
        assert!(
            resources.content_type().starts_with("application/json"),
            "{resources}"
        );
        let entries = resources.body["resources"].as_array().unwrap();
        let entry = entries
            .iter()
            .find(|r| r["name"] == kind.plural)
            .unwrap_or_else(|| panic!("{} not in {resources}", kind.plural));
        assert_eq!(entry["kind"], kind.kind);
        assert_eq!(entry["namespaced"], true);
        assert!(entry["verbs"].as_array().unwrap().contains(&json!("watch")));
        assert!(entries
            .iter()
            .any(|r| r["name"] == format!("{}/status", kind.plural)));
        let group = kind
            .group_version
            .trim_start_matches("/apis/")
            .split('/')
            .next()
            .unwrap();
        assert!(group_names.contains(&group), "{group} not in {groups}");
    }
    let isvc = d.get("/apis/serving.kserve.io/v1beta1", d.admin());
    assert_eq!(isvc.body["resources"][0]["shortNames"], json!(["isvc"]));
    // Aggregated discovery is not served: the plain form answers, as client-go falls
    // back to it.
    let aggregated = d.send(d.request(Method::GET, "/apis", d.admin()).header(
        "accept",
        "application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json",
    ));
    assert_eq!(aggregated.body["kind"], "APIGroupList", "{aggregated}");
    assert_eq!(aggregated.content_type(), "application/json");
}

/// An owner reference to `owner` (a created object's answer).
fn reference_to(owner: &Value, block: bool) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
        "controller": true, "blockOwnerDeletion": block,
    })
}

fn create(d: &Daemon, kind: &Kind, namespace: &str, name: &str, owners: Vec<Value>) -> Value {
    let mut document = (kind.document)(name);
    if !owners.is_empty() {
        document["metadata"]["ownerReferences"] = Value::Array(owners);
    }
    let created = d.post_json(&collection(kind, namespace), d.admin(), &document);
    assert_eq!(created.status, 201, "{}: {created}", kind.kind);
    created.body
}

fn item_path(kind: &Kind, namespace: &str, name: &str) -> String {
    format!("{}/{name}", collection(kind, namespace))
}

fn wait_gone(d: &Daemon, path: &str) {
    d.wait_until(path, Duration::from_secs(30), |r| r.status == 404);
}

fn delete_with(d: &Daemon, path: &str, options: &Value) -> Reply {
    d.send(
        d.request(Method::DELETE, path, d.admin())
            .header("content-type", "application/json")
            .body(options.to_string()),
    )
}

/// The owner/dependent checks for one pair of kinds: validation of
/// `metadata.ownerReferences`, each `propagationPolicy`, preconditions, a dangling
/// owner and a dependent with a second, living owner.
fn ownership(d: &Daemon, owner_kind: &Kind, dependent_kind: &Kind, tag: &str) {
    let ns = "owners";
    let what = format!("{} owning {}", owner_kind.kind, dependent_kind.kind);
    let dependents = collection(dependent_kind, ns);

    // Validation, as the API server's: the Status names the field.
    let owner = create(d, owner_kind, ns, &format!("{tag}-o"), vec![]);
    let mut document = (dependent_kind.document)(&format!("{tag}-bad"));
    let mut no_uid = reference_to(&owner, true);
    no_uid.as_object_mut().unwrap().remove("uid");
    document["metadata"]["ownerReferences"] = json!([no_uid]);
    let reply = d.post_json(&dependents, d.admin(), &document);
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.cause_field(),
        "metadata.ownerReferences[0].uid",
        "{what}: {reply}"
    );
    let mut second = reference_to(&owner, false);
    second["uid"] = json!("another-uid");
    document["metadata"]["ownerReferences"] = json!([reference_to(&owner, true), second]);
    let reply = d.post_json(&dependents, d.admin(), &document);
    reply.assert_status(422, "Invalid");
    assert_eq!(reply.cause_field(), "metadata.ownerReferences", "{what}: {reply}");
    let elsewhere = create(d, owner_kind, "owners-elsewhere", &format!("{tag}-x"), vec![]);
    document["metadata"]["ownerReferences"] = json!([reference_to(&elsewhere, true)]);
    let reply = d.post_json(&dependents, d.admin(), &document);
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.cause_field(),
        "metadata.ownerReferences[0].uid",
        "{what}: {reply}"
    );
    document["metadata"]["ownerReferences"] =
        json!([{"apiVersion": "v1", "kind": "ConfigMap", "name": "c", "uid": "u"}]);
    let reply = d.post_json(&dependents, d.admin(), &document);
    reply.assert_status(422, "Invalid");
    assert_eq!(
        reply.cause_field(),
        "metadata.ownerReferences[0].kind",
        "{what}: {reply}"
    );
    document["metadata"]["finalizers"] = json!(["example.com/keep"]);
    document["metadata"]
        .as_object_mut()
        .unwrap()
        .remove("ownerReferences");
    let reply = d.post_json(&dependents, d.admin(), &document);
    reply.assert_status(422, "Invalid");
    assert_eq!(reply.cause_field(), "metadata.finalizers[0]", "{what}: {reply}");

    // Background (the default): the owner goes, then its dependent.
    let child = create(
        d,
        dependent_kind,
        ns,
        &format!("{tag}-bg"),
        vec![reference_to(&owner, true)],
    );
    assert_eq!(
        child["metadata"]["ownerReferences"][0]["uid"], owner["metadata"]["uid"],
        "{child}"
    );
    let owner_path = item_path(owner_kind, ns, &format!("{tag}-o"));
    let child_path = item_path(dependent_kind, ns, &format!("{tag}-bg"));
    // Preconditions: another uid or version is a Conflict and deletes nothing.
    delete_with(d, &owner_path, &json!({"preconditions": {"uid": "not-its-uid"}}))
        .assert_status(409, "Conflict");
    delete_with(
        d,
        &owner_path,
        &json!({"preconditions": {"resourceVersion": "1"}}),
    )
    .assert_status(409, "Conflict");
    // The controller may have written status since: preconditions name the version
    // read now. A busy controller can write again between that read and the DELETE
    // (a 409 naming both versions, as the API server answers): read again.
    let mut deleted = None;
    for _ in 0..20 {
        let owner = d.get(&owner_path, d.admin()).body;
        let reply = delete_with(
            d,
            &owner_path,
            &json!({"kind": "DeleteOptions", "apiVersion": "v1", "preconditions": {"uid": owner["metadata"]["uid"], "resourceVersion": owner["metadata"]["resourceVersion"]}}),
        );
        let raced = reply.status == 409 && reply.text.contains("ResourceVersion in precondition");
        deleted = Some(reply);
        if !raced {
            break;
        }
    }
    let deleted = deleted.expect("a DELETE was sent");
    assert_eq!(deleted.status, 200, "{what}: {deleted}");
    wait_gone(d, &owner_path);
    wait_gone(d, &child_path);

    // Foreground: the owner stays, held by the finalizer, until its blocking
    // dependent is gone.
    let owner = create(d, owner_kind, ns, &format!("{tag}-fg"), vec![]);
    let owner_path = item_path(owner_kind, ns, &format!("{tag}-fg"));
    let child_path = item_path(dependent_kind, ns, &format!("{tag}-fgc"));
    create(
        d,
        dependent_kind,
        ns,
        &format!("{tag}-fgc"),
        vec![reference_to(&owner, true)],
    );
    let held = delete_with(d, &owner_path, &json!({"propagationPolicy": "Foreground"}));
    assert_eq!(held.status, 200, "{what}: {held}");
    assert_eq!(
        held.body["kind"], owner_kind.kind,
        "the held object is answered: {held}"
    );
    assert_eq!(
        held.body["metadata"]["finalizers"],
        json!(["foregroundDeletion"]),
        "{held}"
    );
    assert!(held.body["metadata"]["deletionTimestamp"].is_string(), "{held}");
    // Until the dependent is gone, the owner is there.
    loop {
        let owner_now = d.get(&owner_path, d.admin());
        let child_now = d.get(&child_path, d.admin());
        if child_now.status == 404 {
            break;
        }
        assert_eq!(
            owner_now.status, 200,
            "{what}: the owner went before its dependent: {owner_now}"
        );
        thread::sleep(Duration::from_millis(20));
    }
    wait_gone(d, &owner_path);

    // Orphan: the dependent loses the reference and stays.
    let owner = create(d, owner_kind, ns, &format!("{tag}-or"), vec![]);
    let owner_path = item_path(owner_kind, ns, &format!("{tag}-or"));
    let child_path = item_path(dependent_kind, ns, &format!("{tag}-orc"));
    create(
        d,
        dependent_kind,
        ns,
        &format!("{tag}-orc"),
        vec![reference_to(&owner, true)],
    );
    let orphaned = d.delete(&format!("{owner_path}?propagationPolicy=Orphan"), d.admin());
    assert_eq!(orphaned.status, 200, "{what}: {orphaned}");
    assert_eq!(
        orphaned.body["metadata"]["finalizers"],
        json!(["orphan"]),
        "{orphaned}"
    );
    wait_gone(d, &owner_path);
    let kept = d.get(&child_path, d.admin());
    assert_eq!(kept.status, 200, "{what}: {kept}");
    assert!(kept.body["metadata"]["ownerReferences"].is_null(), "{kept}");
    assert!(kept.body["metadata"]["deletionTimestamp"].is_null(), "{kept}");
    d.delete(&child_path, d.admin());
    wait_gone(d, &child_path);

    // A dependent with a living second owner stays and loses the reference to the
    // deleted one.
    let first = create(d, owner_kind, ns, &format!("{tag}-a"), vec![]);
    let second = create(d, owner_kind, ns, &format!("{tag}-b"), vec![]);
    let mut to_second = reference_to(&second, false);
    to_second["controller"] = json!(false);
    let child_path = item_path(dependent_kind, ns, &format!("{tag}-ab"));
    create(
        d,
        dependent_kind,
        ns,
        &format!("{tag}-ab"),
        vec![reference_to(&first, false), to_second],
    );
    d.delete(&item_path(owner_kind, ns, &format!("{tag}-a")), d.admin());
    let kept = d.wait_until(&child_path, Duration::from_secs(30), |r| {
        r.body["metadata"]["ownerReferences"]
            .as_array()
            .is_some_and(|o| o.len() == 1)
    });
    assert_eq!(
        kept.body["metadata"]["ownerReferences"][0]["uid"], second["metadata"]["uid"],
        "{kept}"
    );
    assert!(kept.body["metadata"]["deletionTimestamp"].is_null(), "{kept}");
    d.delete(&item_path(owner_kind, ns, &format!("{tag}-b")), d.admin());
    wait_gone(d, &child_path);

    // A dangling owner (no object has its uid): the dependent is collected.
    let ghost = json!({"apiVersion": owner_kind.group_version.trim_start_matches("/apis/"), "kind": owner_kind.kind,
        "name": "ghost", "uid": "00000000-0000-4000-8000-000000000000"});
    create(d, dependent_kind, ns, &format!("{tag}-dg"), vec![ghost]);
    wait_gone(d, &item_path(dependent_kind, ns, &format!("{tag}-dg")));
    d.delete(
        &item_path(owner_kind, "owners-elsewhere", &format!("{tag}-x")),
        d.admin(),
    );
}

#[test]
fn deletion_propagates_over_owner_references_between_every_pair_of_kinds() {
    let d = daemon();
    // Namespaces exist once a Job was created in them.
    create(&d, &kinds()[0], "owners", "seed", vec![]);
    create(&d, &kinds()[0], "owners-elsewhere", "seed", vec![]);
    for (i, owner) in kinds().iter().enumerate() {
        for (j, dependent) in kinds().iter().enumerate() {
            ownership(&d, owner, dependent, &format!("p{i}{j}"));
        }
    }
}

/// A `kill -9` mid-cascade loses nothing: after the restart the dependents of the
/// deleted owners are collected (and what they ran stopped), a foreground owner
/// finishes, an owner deleted with Orphan leaves its dependent.
#[test]
fn a_cascade_interrupted_by_kill_9_finishes_after_restart() {
    let mut d = daemon();
    let jobs = &kinds()[0];
    let ns = "cascade";
    let mut running = job("x");
    running["spec"]["suspend"] = json!(false);
    let running_named = |name: &str, owner: &Value| {
        let mut document = running.clone();
        document["metadata"] = json!({"name": name, "ownerReferences": [reference_to(owner, true)]});
        document
    };
    let owners: Vec<Value> = ["bg", "fg", "or"]
        .iter()
        .map(|n| create(&d, jobs, ns, n, vec![]))
        .collect();
    for (owner, child) in owners.iter().zip(["bg-child", "fg-child", "or-child"]) {
        let reply = d.post_json(&collection(jobs, ns), d.admin(), &running_named(child, owner));
        assert_eq!(reply.status, 201, "{reply}");
    }
    // The dependents run before the owners go.
    d.wait_until(
        &format!("/api/v1/namespaces/{ns}/pods?fieldSelector=status.phase%3DRunning"),
        Duration::from_secs(30),
        |r| r.body["items"].as_array().is_some_and(|i| i.len() == 3),
    );
    let bg = d.delete(&item_path(jobs, ns, "bg"), d.admin());
    assert_eq!(bg.status, 200, "{bg}");
    let fg = d.delete(
        &format!("{}?propagationPolicy=Foreground", item_path(jobs, ns, "fg")),
        d.admin(),
    );
    assert_eq!(fg.status, 200, "{fg}");
    let or = d.delete(
        &format!("{}?propagationPolicy=Orphan", item_path(jobs, ns, "or")),
        d.admin(),
    );
    assert_eq!(or.status, 200, "{or}");
    d.kill9();
    d.restart();
    for name in ["bg", "bg-child", "fg", "fg-child", "or"] {
        wait_gone(&d, &item_path(jobs, ns, name));
    }
    let kept = d.get(&item_path(jobs, ns, "or-child"), d.admin());
    assert_eq!(kept.status, 200, "{kept}");
    assert!(kept.body["metadata"]["ownerReferences"].is_null(), "{kept}");
    // Nothing of the collected dependents runs on.
    d.wait_until(
        &format!("/api/v1/namespaces/{ns}/pods?fieldSelector=status.phase%3DRunning"),
        Duration::from_secs(30),
        |r| {
            r.body["items"].as_array().is_some_and(|items| {
                items
                    .iter()
                    .all(|p| p["metadata"]["labels"]["job-name"] == "or-child")
            })
        },
    );
}
