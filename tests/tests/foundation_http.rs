//! Bad input of every kind is answered with application/problem+json and a stable
//! `code`, changes nothing, and every answer carries a request id.

use std::io::Read;

use hearth_e2e::{spawn_daemon, spawn_daemon_with, Daemon, Options};
use reqwest::Method;
use serde_json::{json, Value};

fn user_names(d: &Daemon) -> Vec<String> {
    let r = d.get("/hearth/v1/users", d.admin());
    assert_eq!(r.status, 200, "{r}");
    let mut names: Vec<String> = r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["name"].as_str().unwrap().to_string())
        .collect();
    names.sort();
    names
}

fn token_names(d: &Daemon) -> Vec<String> {
    let r = d.get("/hearth/v1/tokens", d.admin());
    assert_eq!(r.status, 200, "{r}");
    r.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn unknown_route_is_404_route_not_found() {
    let d = spawn_daemon();
    for path in [
        "/nope",
        "/hearth/v1/nope",
        "/hearth/v2/version",
        "/hearth/v1/users/a/b",
    ] {
        d.get(path, d.admin()).assert_problem(404, "route_not_found");
    }
    // Under the Kubernetes API's prefixes, the same answer is a Kubernetes `Status`.
    for path in ["/api/v2/version", "/apis/batch/v1/namespaces/a/jobs/b/c/d"] {
        d.get(path, d.admin()).assert_status(404, "NotFound");
    }
}

#[test]
fn wrong_method_is_405_with_allow() {
    let d = spawn_daemon();
    let r = d.send(d.request(Method::DELETE, "/hearth/v1/version", d.admin()));
    r.assert_problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("GET"), "{r}");

    let r = d.send(d.request(Method::PATCH, "/hearth/v1/users", d.admin()));
    r.assert_problem(405, "method_not_allowed");
    let allow = r.header("allow").unwrap_or_default();
    assert!(allow.contains("GET") && allow.contains("POST"), "{allow}");

    let r = d.send(d.request(Method::PUT, "/hearth/v1/tokens/foo", d.admin()));
    r.assert_problem(405, "method_not_allowed");
    assert_eq!(r.header("allow"), Some("DELETE"));
}

/// A reader whose size reqwest cannot know, so the body goes out chunked.
struct Chunked(std::io::Cursor<Vec<u8>>);

impl Read for Chunked {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(512);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn body_over_the_limit_is_413_with_and_without_content_length() {
    let d = spawn_daemon_with(Options::default().config("max_body_bytes = 2048"));
    let big = json!({ "name": "big", "padding": "x".repeat(4096) }).to_string();
    let before = token_names(&d);

    let r = d.send_body(
        Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        big.clone(),
    );
    r.assert_problem(413, "payload_too_large");

    let chunked = reqwest::blocking::Body::new(Chunked(std::io::Cursor::new(big.into_bytes())));
    let r = d.send(
        d.request(Method::POST, "/hearth/v1/tokens", d.admin())
            .header("content-type", "application/json")
            .body(chunked),
    );
    r.assert_problem(413, "payload_too_large");

    // Just under the limit is parsed (and refused for its unknown field, not its size).
    let small = json!({ "name": "small", "padding": "x".repeat(1500) }).to_string();
    let r = d.send_body(
        Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        small,
    );
    r.assert_problem(422, "invalid_field");
    assert_eq!(token_names(&d), before);
}

#[test]
fn unsupported_content_type_is_415() {
    let d = spawn_daemon();
    for ct in [
        "text/plain",
        "application/xml",
        "application/yaml",
        "multipart/form-data; boundary=x",
    ] {
        let r = d.send_body(
            Method::POST,
            "/hearth/v1/tokens",
            d.admin(),
            ct,
            r#"{"name":"t"}"#,
        );
        r.assert_problem(415, "unsupported_media_type");
    }
    assert!(!token_names(&d).contains(&"t".to_string()));
}

#[test]
fn malformed_json_names_line_and_column() {
    let d = spawn_daemon();
    let r = d.send_body(
        Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        "{\n  \"name\": \"x\",\n  oops\n}",
    );
    r.assert_problem(400, "malformed_body");
    assert_eq!(r.body["line"], 3, "{r}");
    assert_eq!(r.body["column"], 3, "{r}");
    assert!(r.body["detail"].as_str().unwrap().contains("JSON"), "{r}");

    let r = d.send_body(
        Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        "",
    );
    r.assert_problem(400, "bad_request");
    let r = d.send_body(
        Method::POST,
        "/hearth/v1/tokens",
        d.admin(),
        "application/json",
        "[1,2]",
    );
    r.assert_problem(422, "invalid_field");
}

#[test]
fn unknown_or_badly_typed_field_is_named() {
    let d = spawn_daemon();
    let before = token_names(&d);
    let r = d.post_json(
        "/hearth/v1/tokens",
        d.admin(),
        &json!({"name": "t1", "colour": "red"}),
    );
    r.assert_problem(422, "invalid_field");
    assert!(r.body["detail"].as_str().unwrap().contains("colour"), "{r}");

    let r = d.post_json(
        "/hearth/v1/tokens",
        d.admin(),
        &json!({"name": "t1", "expires_in_seconds": "soon"}),
    );
    r.assert_problem(422, "invalid_field");
    let r = d.post_json(
        "/hearth/v1/tokens",
        d.admin(),
        &json!({"name": "t1", "expires_in_seconds": 0}),
    );
    r.assert_problem(422, "invalid_field");
    assert_eq!(r.body["field"], "expires_in_seconds", "{r}");
    // The published maximum is enforced, and nothing past it overflows into a 500.
    let doc = d.get("/openapi.json", d.admin()).body;
    let max = doc["components"]["schemas"]["CreateToken"]["properties"]["expires_in_seconds"]["maximum"]
        .as_u64()
        .expect("expires_in_seconds has a maximum");
    for too_long in [max + 1, u64::MAX] {
        let r = d.post_json(
            "/hearth/v1/tokens",
            d.admin(),
            &json!({"name": "t1", "expires_in_seconds": too_long}),
        );
        r.assert_problem(422, "invalid_field");
    }
    for fractional in [json!(1.5), json!(-3), json!("60")] {
        let r = d.post_json(
            "/hearth/v1/tokens",
            d.admin(),
            &json!({"name": "t1", "expires_in_seconds": fractional}),
        );
        r.assert_problem(422, "invalid_field");
    }
    // A whole number written as a float is an integer to JSON Schema, so it is accepted.
    let r = d.post_json(
        "/hearth/v1/tokens",
        d.admin(),
        &json!({"name": "t-float", "expires_in_seconds": 60.0}),
    );
    assert_eq!(r.status, 201, "{r}");
    let r = d.post_json(
        "/hearth/v1/tokens",
        d.admin(),
        &json!({"name": "t-max", "expires_in_seconds": max}),
    );
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(d.delete("/hearth/v1/tokens/t-max", d.admin()).status, 204);
    assert_eq!(d.delete("/hearth/v1/tokens/t-float", d.admin()).status, 204);
    let r = d.post_json("/hearth/v1/users", d.admin(), &json!({"nome": "bob"}));
    r.assert_problem(422, "invalid_field");
    assert!(r.body["detail"].as_str().unwrap().contains("nome"), "{r}");
    assert_eq!(token_names(&d), before);
}

#[test]
fn invalid_names_are_refused_and_change_nothing() {
    let d = spawn_daemon();
    d.create_user("alice");
    let users = user_names(&d);
    let tokens = token_names(&d);
    // `x` beside the data dir is what `../x` would reach. Another program may own a
    // file of that name in the shared temp dir: the check is that nothing changed it.
    let beside = d.data_dir.parent().unwrap().join("x");
    let beside_before = modified(&beside);
    for bad in [
        "../x",
        "..",
        "Alice",
        "a/b",
        "a b",
        "-a",
        "a-",
        "",
        "a.b",
        "ä",
        &"a".repeat(64),
    ] {
        let r = d.post_json("/hearth/v1/users", d.admin(), &json!({ "name": bad }));
        r.assert_problem(422, "invalid_field");
        assert_eq!(r.body["field"], "name", "{r}");
        let r = d.post_json("/hearth/v1/tokens", d.admin(), &json!({ "name": bad }));
        r.assert_problem(422, "invalid_field");
    }
    for bad in ["..%2Fx", "%2E%2E", "Alice", "a%20b", "a.b"] {
        let r = d.delete(&format!("/hearth/v1/users/{bad}"), d.admin());
        assert!((400..500).contains(&r.status) && r.is_problem(), "{bad}: {r}");
        let r = d.delete(&format!("/hearth/v1/tokens/{bad}"), d.admin());
        assert!((400..500).contains(&r.status) && r.is_problem(), "{bad}: {r}");
    }
    assert_eq!(user_names(&d), users);
    assert_eq!(token_names(&d), tokens);
    assert_eq!(
        modified(&beside),
        beside_before,
        "a traversal created or changed {} next to the data dir",
        beside.display()
    );
}

#[test]
fn missing_and_duplicate_resources_are_problems() {
    let d = spawn_daemon();
    d.delete("/hearth/v1/users/ghost", d.admin())
        .assert_problem(404, "not_found");
    d.delete("/hearth/v1/tokens/ghost", d.admin())
        .assert_problem(404, "not_found");
    d.create_user("bob");
    let r = d.post_json("/hearth/v1/users", d.admin(), &json!({"name": "bob"}));
    r.assert_problem(409, "already_exists");
    d.delete("/hearth/v1/users/admin", d.admin())
        .assert_problem(409, "conflict");
}

#[test]
fn request_id_is_echoed_or_generated_and_logged() {
    let d = spawn_daemon();
    let r = d.send(
        d.request(Method::GET, "/hearth/v1/version", d.admin())
            .header("x-request-id", "e2e-request-42"),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.header("x-request-id"), Some("e2e-request-42"));

    // Errors carry it too, and so does the unauthenticated path.
    let r = d.send(
        d.request(Method::GET, "/nowhere", None)
            .header("x-request-id", "e2e-denied-7"),
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.header("x-request-id"), Some("e2e-denied-7"));

    let r = d.get("/healthz", None);
    let generated = r.header("x-request-id").unwrap_or_default().to_string();
    assert!(generated.len() >= 16, "{generated:?}");
    let other = d.get("/healthz", None);
    assert_ne!(other.header("x-request-id").unwrap_or_default(), generated);

    // An id that could forge log lines is replaced, not echoed.
    let r = d.send(
        d.request(Method::GET, "/healthz", None)
            .header("x-request-id", "a\"b c"),
    );
    assert_ne!(r.header("x-request-id"), Some("a\"b c"));

    let logs = d.wait_logs_containing(&["e2e-request-42", "e2e-denied-7", &generated]);
    let line = logs.lines().find(|l| l.contains("e2e-request-42")).unwrap();
    assert!(line.contains("/hearth/v1/version"), "{line}");
}

#[test]
fn version_and_node_describe_the_daemon() {
    let d = spawn_daemon();
    let r = d.get("/hearth/v1/version", d.admin());
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(r.body["api_version"], "v1");
    assert!(!r.body["git_commit"].as_str().unwrap().is_empty(), "{r}");

    let r = d.get("/hearth/v1/node", d.admin());
    assert_eq!(r.status, 200, "{r}");
    let n = &r.body;
    assert!(n["cpus"].as_u64().unwrap() >= 1, "{r}");
    assert!(n["memory_total_bytes"].as_u64().unwrap() > 0, "{r}");
    assert!(n["disk_total_bytes"].as_u64().unwrap() > 0, "{r}");
    assert_eq!(n["runtime"], "process");
    assert_eq!(n["data_dir"], d.data_dir.display().to_string());
    assert_eq!(n["k3s"]["state"], "disabled", "{r}");
    let gpus = &n["gpus"];
    if gpus["source"] == "none" {
        assert!(
            !gpus["reason"].as_str().unwrap_or("").is_empty(),
            "no GPUs needs a reason: {r}"
        );
        assert_eq!(gpus["devices"], json!([]));
    } else {
        assert_eq!(gpus["source"], "nvml", "{r}");
    }
}

#[test]
fn simulated_gpus_are_marked() {
    let d = spawn_daemon_with(Options::default().config("[gpu]\nsimulate = 2"));
    let r = d.get("/hearth/v1/node", d.admin());
    let gpus = &r.body["gpus"];
    assert_eq!(gpus["source"], "simulated", "{r}");
    assert_eq!(gpus["simulated"], true);
    let devices = gpus["devices"].as_array().unwrap();
    assert_eq!(devices.len(), 2, "{r}");
    assert!(devices.iter().all(|g| g["simulated"] == Value::Bool(true)), "{r}");
    let uuids: Vec<&str> = devices.iter().map(|g| g["uuid"].as_str().unwrap()).collect();
    assert_ne!(uuids[0], uuids[1]);
}

#[test]
fn probes_and_metrics() {
    let d = spawn_daemon();
    let r = d.get("/healthz", None);
    assert_eq!((r.status, r.body["status"].as_str()), (200, Some("ok")), "{r}");
    let r = d.get("/readyz", None);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["ready"], true);
    d.get("/nope", d.admin());
    let r = d.get("/metrics", d.admin());
    assert_eq!(r.status, 200, "{r}");
    assert!(
        r.content_type().starts_with("application/openmetrics-text"),
        "{r}"
    );
    assert!(r.text.contains("process_resident_memory_bytes"), "{r}");
    assert!(r.text.contains("hearth_http_requests_total"), "{r}");
    assert!(r.text.contains("route=\"/healthz\""), "{r}");
    assert!(r.text.contains("status=\"404\""), "{r}");
    assert!(
        r.text.contains("hearth_http_request_duration_seconds_bucket"),
        "{r}"
    );
}

/// The modification time of `path`, `None` when it does not exist.
fn modified(path: &std::path::Path) -> Option<std::time::SystemTime> {
    std::fs::metadata(path).and_then(|m| m.modified()).ok()
}
