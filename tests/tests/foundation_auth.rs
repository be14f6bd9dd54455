//! Authentication and authorization over every route of the OpenAPI document, so a
//! route added by any area is covered without touching this file.

use std::time::Duration;

use hearth_e2e::{
    fill_path, fill_path_with, openapi_operations, spawn_daemon, spawn_daemon_with, Daemon, Options,
};
use reqwest::Method;
use serde_json::{json, Value};

/// The only paths anyone may call without a token.
const OPEN: &[&str] = &["/healthz", "/readyz", "/version"];

fn served_doc(d: &Daemon) -> Value {
    let r = d.get("/openapi.json", d.admin());
    assert_eq!(r.status, 200, "{r}");
    r.body
}

/// Sends `method path` with a JSON body for writes, so that a route that forgot auth
/// would answer something other than 401 rather than fail on the body.
fn call(d: &Daemon, method: &Method, path: &str, token: Option<&str>) -> hearth_e2e::Reply {
    let builder = d.request(method.clone(), path, token);
    let builder = if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
        builder.header("content-type", "application/json").body("{}")
    } else {
        builder
    };
    d.send(builder)
}

/// The Kubernetes API's paths answer errors as `Status` objects, Hearth's own as
/// problem+json.
fn is_kubernetes(path: &str) -> bool {
    path == "/api"
        || path.starts_with("/api/")
        || (path.starts_with("/apis") && !path.starts_with("/apis/v2beta1"))
}

#[track_caller]
fn assert_forbidden(r: &hearth_e2e::Reply, path: &str) {
    if is_kubernetes(path) {
        r.assert_status(403, "Forbidden");
    } else {
        r.assert_problem(403, "forbidden");
    }
}

#[track_caller]
fn assert_unauthorized(r: &hearth_e2e::Reply, what: &str) {
    assert_eq!(r.status, 401, "{what}: {r}");
    if what.split_whitespace().any(is_kubernetes) {
        r.assert_status(401, "Unauthorized");
    } else {
        assert!(r.is_problem(), "{what}: {r}");
        assert_eq!(r.code(), "unauthorized", "{what}: {r}");
    }
    let challenges: Vec<&str> = r
        .headers
        .get_all("www-authenticate")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    assert!(
        challenges.iter().any(|c| c.starts_with("Bearer")),
        "{what}: no Bearer challenge in {challenges:?}"
    );
}

#[test]
fn every_protected_route_needs_a_valid_token() {
    let d = spawn_daemon();
    let doc = served_doc(&d);
    let ops = openapi_operations(&doc);
    assert!(ops.len() >= 12, "the document lists too few operations: {ops:?}");
    let mut protected = 0;
    for (method, template) in &ops {
        let path = fill_path(template, "alice");
        // The login route takes its token in the body (401 for a bad one, 422 for none);
        // tests/python/notebooks covers it, sessions and logout.
        if template == "/hearth/v1/session" {
            let r = call(&d, method, &path, None);
            assert!(matches!(r.status, 204 | 422), "{method} {path}: {r}");
            continue;
        }
        if OPEN.contains(&template.as_str()) {
            let r = call(&d, method, &path, None);
            assert!(r.status == 200, "{method} {path} must be open: {r}");
            continue;
        }
        protected += 1;
        let op = &doc["paths"][template][method.as_str().to_lowercase()];
        assert!(
            op["security"].is_array(),
            "{method} {template} does not declare bearer security"
        );
        assert_unauthorized(
            &call(&d, method, &path, None),
            &format!("{method} {path} without token"),
        );
        let bad = "hth_0000000000000000000000000000000000000000000000000000000000000000";
        assert_unauthorized(
            &call(&d, method, &path, Some(bad)),
            &format!("{method} {path} bad token"),
        );
        assert_unauthorized(
            &call(&d, method, &path, Some("")),
            &format!("{method} {path} empty token"),
        );
        let basic = d.send(
            d.request(method.clone(), &path, None)
                .basic_auth("admin", Some("wrong")),
        );
        assert_unauthorized(&basic, &format!("{method} {path} bad basic"));
    }
    assert!(protected >= 10, "{protected}");
    // Routes outside the document are protected too.
    for path in [
        "/openapi.json",
        "/swagger-ui/",
        "/metrics",
        "/no-such-route",
        "/hearth/v1/zzz",
    ] {
        assert_unauthorized(&d.get(path, None), path);
    }
    // The probes still answer with the token.
    for path in OPEN {
        assert_eq!(d.get(path, d.admin()).status, 200);
    }
    // Nothing the requests above carried was acted on.
    let users = d.get("/hearth/v1/users", d.admin());
    assert_eq!(users.body["items"].as_array().unwrap().len(), 1, "{users}");
}

#[test]
fn admin_routes_refuse_users_with_403() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    d.create_user("bob");
    let doc = served_doc(&d);
    // Admin-only operations say so in their description: the convention every area follows.
    let mut admin_ops = Vec::new();
    for (method, template) in openapi_operations(&doc) {
        let op = &doc["paths"][&template][method.as_str().to_lowercase()];
        let text = format!(
            "{} {}",
            op["summary"].as_str().unwrap_or(""),
            op["description"].as_str().unwrap_or("")
        );
        if text.contains("(admin only)") {
            admin_ops.push((method, template));
        }
    }
    let found: Vec<String> = admin_ops.iter().map(|(m, t)| format!("{m} {t}")).collect();
    for expected in [
        "POST /hearth/v1/users",
        "GET /hearth/v1/users",
        "DELETE /hearth/v1/users/{name}",
    ] {
        assert!(
            found.contains(&expected.to_string()),
            "{expected} not marked admin only: {found:?}"
        );
    }
    for (method, template) in &admin_ops {
        let path = fill_path(template, "bob");
        let body = json!({"name": "mallory"});
        let r = if [Method::POST, Method::PUT, Method::PATCH].contains(method) {
            d.send_body(
                method.clone(),
                &path,
                Some(&alice),
                "application/json",
                body.to_string(),
            )
        } else {
            d.send(d.request(method.clone(), &path, Some(&alice)))
        };
        assert_forbidden(&r, &path);
    }
    // bob is still there and mallory was not made.
    let r = d.get("/hearth/v1/users", d.admin());
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap())
        .collect();
    assert_eq!(names.len(), 3, "{r}");
    assert!(names.contains(&"bob") && !names.contains(&"mallory"), "{r}");
}

#[test]
fn users_see_only_their_own_namespace() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    let bob = d.create_user("bob");

    let r = d.get("/hearth/v1/namespaces", Some(&alice));
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, vec!["alice"], "{r}");
    let r = d.get("/hearth/v1/whoami", Some(&alice));
    assert_eq!(r.body["user"], "alice");
    assert_eq!(r.body["admin"], false);
    assert_eq!(r.body["namespaces"], json!(["alice"]), "{r}");
    let r = d.get("/hearth/v1/whoami", Some(&bob));
    assert_eq!(r.body["namespaces"], json!(["bob"]), "{r}");

    let r = d.get("/hearth/v1/namespaces", d.admin());
    let all: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["name"].as_str().unwrap())
        .collect();
    assert!(all.contains(&"alice") && all.contains(&"bob"), "{r}");

    // A user's tokens are their own: bob cannot list or revoke alice's.
    let r = d.get("/hearth/v1/tokens", Some(&bob));
    let owners: Vec<&str> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["user"].as_str().unwrap())
        .collect();
    assert!(owners.iter().all(|u| *u == "bob"), "{r}");
    assert_eq!(d.delete("/hearth/v1/tokens/initial", Some(&bob)).status, 204);
    assert_eq!(
        d.get("/hearth/v1/whoami", Some(&alice)).status,
        200,
        "bob revoked alice's token"
    );
    assert_eq!(d.get("/hearth/v1/whoami", Some(&bob)).status, 401);
}

/// Every namespaced route (any area's) refuses a user on another user's namespace.
#[test]
fn namespaced_routes_refuse_other_users_namespaces() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    d.create_user("bob");
    let doc = served_doc(&d);
    let mut checked = Vec::new();
    for (method, template) in openapi_operations(&doc) {
        if !(template.contains("{namespace}") || template.contains("{ns}")) {
            continue;
        }
        let path = fill_path_with(&template, |p| match p {
            "namespace" | "ns" => "bob".to_string(),
            _ => "thing".to_string(),
        });
        let r = call(&d, &method, &path, Some(&alice));
        assert_forbidden(&r, &path);
        // Unknown namespaces are not told apart from others' (no probing for names).
        let path = fill_path_with(&template, |p| match p {
            "namespace" | "ns" => "nobody".to_string(),
            _ => "thing".to_string(),
        });
        let r = call(&d, &method, &path, Some(&alice));
        assert_forbidden(&r, &path);
        checked.push(format!("{method} {template}"));
    }
    eprintln!("namespaced operations checked: {}", checked.len());
    // With or without namespaced routes yet, a user's view holds no other namespace.
    let r = d.get("/hearth/v1/namespaces", Some(&alice));
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{r}");
}

#[test]
fn tokens_expire_and_can_be_revoked() {
    let d = spawn_daemon();
    let alice = d.create_user("alice");
    let r = d.post_json(
        "/hearth/v1/tokens",
        Some(&alice),
        &json!({"name": "short", "expires_in_seconds": 1}),
    );
    assert_eq!(r.status, 201, "{r}");
    assert!(r.body["expires_at"].is_string(), "{r}");
    let short = r.body["token"].as_str().unwrap().to_string();
    assert!(short.starts_with("hth_"));
    let r = d.post_json("/hearth/v1/tokens", Some(&alice), &json!({"name": "ci"}));
    assert_eq!(r.status, 201, "{r}");
    let ci = r.body["token"].as_str().unwrap().to_string();
    let r = d.post_json("/hearth/v1/tokens", Some(&alice), &json!({"name": "ci"}));
    r.assert_problem(409, "already_exists");

    assert_eq!(d.get("/hearth/v1/whoami", Some(&short)).body["token"], "short");
    std::thread::sleep(Duration::from_millis(1500));
    let r = d.get("/hearth/v1/whoami", Some(&short));
    assert_unauthorized(&r, "expired token");
    assert!(r.body["detail"].as_str().unwrap().contains("expired"), "{r}");

    // Listing never shows secrets.
    let r = d.get("/hearth/v1/tokens", Some(&alice));
    assert!(!r.text.contains(&ci) && !r.text.contains("hth_"), "{r}");

    assert_eq!(d.get("/hearth/v1/whoami", Some(&ci)).status, 200);
    assert_eq!(d.delete("/hearth/v1/tokens/ci", Some(&alice)).status, 204);
    assert_unauthorized(&d.get("/hearth/v1/whoami", Some(&ci)), "revoked token");
    assert_eq!(
        d.get("/hearth/v1/whoami", Some(&alice)).status,
        200,
        "other tokens keep working"
    );

    // Deleting a user ends all their tokens.
    assert_eq!(d.delete("/hearth/v1/users/alice", d.admin()).status, 204);
    assert_unauthorized(&d.get("/hearth/v1/whoami", Some(&alice)), "deleted user's token");
}

#[test]
fn tokens_are_stored_hashed_and_admin_token_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let mut d = spawn_daemon();
    let alice = d.create_user("alice");
    let mode = std::fs::metadata(d.data_dir.join("admin.token"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    let logs = d.logs();
    assert!(!logs.contains(&d.admin_token), "the admin token was logged");
    assert!(
        logs.contains("admin.token"),
        "the token's path is not logged:\n{logs}"
    );
    d.terminate();
    let mut db = std::fs::read(d.data_dir.join("hearth.db")).unwrap();
    db.extend(std::fs::read(d.data_dir.join("hearth.db-wal")).unwrap_or_default());
    let needle = alice.as_bytes();
    assert!(
        !db.windows(needle.len()).any(|w| w == needle),
        "a token secret is in the database"
    );
    // A restart keeps the admin token that is still valid.
    let before = d.admin_token.clone();
    d.restart();
    assert_eq!(d.admin_token, before);
}

#[test]
fn metrics_need_a_token_unless_public() {
    let d = spawn_daemon();
    assert_unauthorized(&d.get("/metrics", None), "/metrics");
    assert_eq!(d.get("/metrics", d.admin()).status, 200);
    let public = spawn_daemon_with(Options::default().config("[metrics]\npublic = true"));
    let r = public.get("/metrics", None);
    assert_eq!(r.status, 200, "{r}");
    assert!(r.text.contains("process_resident_memory_bytes"));
    // Public metrics open nothing else.
    assert_unauthorized(
        &public.get("/hearth/v1/version", None),
        "version with public metrics",
    );
}
