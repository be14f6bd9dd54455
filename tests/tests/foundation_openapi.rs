//! The committed OpenAPI document is what the binary generates and what it serves.

use std::path::Path;

use hearth_e2e::{hearth_command, spawn_daemon};
use serde_json::Value;

const REGENERATE: &str =
    "regenerate it with: cargo build && ./target/debug/hearth openapi > openapi/openapi.json";

fn committed() -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../openapi/openapi.json");
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}; {REGENERATE}", path.display()))
}

#[test]
fn committed_document_matches_hearth_openapi() {
    let out = hearth_command().arg("openapi").output().unwrap();
    assert!(out.status.success());
    let generated = String::from_utf8(out.stdout).unwrap();
    let committed = committed();
    if generated != committed {
        let line = generated
            .lines()
            .zip(committed.lines())
            .position(|(a, b)| a != b)
            .map(|i| i + 1)
            .unwrap_or_else(|| generated.lines().count().min(committed.lines().count()) + 1);
        panic!("openapi/openapi.json is out of date (first difference at line {line}); {REGENERATE}");
    }
}

#[test]
fn served_document_matches_and_swagger_ui_is_vendored() {
    let d = spawn_daemon();
    let r = d.get("/openapi.json", d.admin());
    assert_eq!(r.status, 200, "{r}");
    let committed: Value = serde_json::from_str(&committed()).unwrap();
    assert!(
        r.body == committed,
        "the served /openapi.json differs from the committed one; {REGENERATE}"
    );
    assert!(r.body["openapi"].as_str().unwrap().starts_with("3."));

    let r = d.get("/swagger-ui/", d.admin());
    assert_eq!(r.status, 200, "{r}");
    assert!(r.content_type().starts_with("text/html"), "{r}");
    assert!(r.text.contains("swagger-ui"), "{r}");
    // The page's assets come from the daemon, not from a CDN.
    assert!(
        !r.text.contains("://"),
        "Swagger UI refers to an outside host:\n{}",
        r.text
    );
    for asset in ["swagger-ui.css", "swagger-ui-bundle.js", "swagger-initializer.js"] {
        let r = d.get(&format!("/swagger-ui/{asset}"), d.admin());
        assert_eq!(r.status, 200, "{asset}: {r}");
        assert!(r.text.len() > 100, "{asset}");
    }
    let init = d.get("/swagger-ui/swagger-initializer.js", d.admin());
    assert!(init.text.contains("/openapi.json"), "{}", init.text);
}

#[test]
fn every_operation_documents_problem_answers() {
    let doc: Value = serde_json::from_str(&committed()).unwrap();
    for (method, path) in hearth_e2e::openapi_operations(&doc) {
        let op = &doc["paths"][&path][method.as_str().to_lowercase()];
        let responses = op["responses"].as_object().unwrap();
        assert!(responses.contains_key("500"), "{method} {path}");
        let kubernetes = path == "/api"
            || path.starts_with("/api/")
            || (path.starts_with("/apis") && !path.starts_with("/apis/v2beta1"));
        if kubernetes {
            // The Kubernetes API's errors are `Status` objects.
            let unauthorized = &responses["401"]["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(
                unauthorized, "#/components/schemas/Status",
                "{method} {path} lacks a Status 401"
            );
        } else if !["/healthz", "/readyz", "/version"].contains(&path.as_str()) {
            let unauthorized = &responses["401"]["content"]["application/problem+json"];
            assert!(
                unauthorized.is_object(),
                "{method} {path} lacks a problem+json 401"
            );
        }
        assert!(op["operationId"].is_string(), "{method} {path}");
    }
}

/// What client generators need (issue 18, SDKs): every operation has a unique
/// operation id and a tag; every response a description; every JSON request and
/// response body a named schema (a `$ref`), not a bare `{"type": "object"}`.
#[test]
fn every_operation_is_named_tagged_and_has_named_bodies() {
    let doc: Value = serde_json::from_str(&committed()).unwrap();
    let mut ids = std::collections::BTreeMap::new();
    let mut problems = Vec::new();
    let named = |schema: &Value| {
        schema.get("$ref").is_some()
            || schema["type"] == "string"
            || (schema["type"] == "array"
                && (schema["items"].get("$ref").is_some() || schema["items"]["type"] == "integer"))
            || schema["oneOf"].as_array().is_some_and(|alts| {
                alts.iter()
                    .all(|a| a.get("$ref").is_some() || a["type"] == "null")
            })
    };
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            if !["get", "put", "post", "delete", "patch"].contains(&method.as_str()) {
                continue;
            }
            let at = format!("{} {path}", method.to_uppercase());
            match op["operationId"].as_str() {
                Some(id) => {
                    if let Some(other) = ids.insert(id.to_string(), at.clone()) {
                        problems.push(format!("{at}: operationId {id} is also {other}'s"));
                    }
                }
                None => problems.push(format!("{at}: no operationId")),
            }
            if op["tags"].as_array().is_none_or(Vec::is_empty) {
                problems.push(format!("{at}: no tag"));
            }
            for (ct, content) in op["requestBody"]["content"].as_object().into_iter().flatten() {
                if !named(&content["schema"]) {
                    problems.push(format!("{at}: request {ct} has no named schema"));
                }
            }
            for (status, response) in op["responses"].as_object().unwrap() {
                if response["description"].as_str().is_none_or(str::is_empty) {
                    problems.push(format!("{at}: response {status} has no description"));
                }
                for (ct, content) in response["content"].as_object().into_iter().flatten() {
                    if !named(&content["schema"]) {
                        problems.push(format!("{at}: response {status} {ct} has no named schema"));
                    }
                }
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
