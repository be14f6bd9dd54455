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
