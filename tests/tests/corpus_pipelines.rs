//! Every upstream KFP file under `shared/fixtures/kfp/` goes through the real upload
//! route (`POST /apis/v2beta1/pipelines/upload`, multipart `uploadfile`, as kfp.Client
//! sends it): accepted with a 2xx and a round-trip of the spec, or refused with a 4xx
//! problem that names the feature (`unsupported_feature`); the three `invalid/` files
//! get a 4xx naming the problem. Never a 5xx.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hearth_e2e::{fixtures_dir, spawn_daemon};
use reqwest::Method;
use serde::Deserialize;
use serde_json::Value;

fn files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files(&p, out);
        } else if matches!(
            p.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        ) {
            out.push(p);
        }
    }
}

fn multipart(filename: &str, bytes: &[u8]) -> (String, Vec<u8>) {
    let boundary = "hearthcorpusboundary7d3f";
    let mut body = Vec::new();
    body.extend_from_slice(
        format!(
            "--{boundary}\r\nContent-Disposition: form-data; name=\"uploadfile\"; filename=\"{filename}\"\r\nContent-Type: application/octet-stream\r\n\r\n"
        )
        .as_bytes(),
    );
    body.extend_from_slice(bytes);
    body.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    (format!("multipart/form-data; boundary={boundary}"), body)
}

/// The file's documents as the API returns them: the bare IR, or
/// `{pipeline_spec, platform_spec}` when a platform spec follows it (a JSON file in
/// that nested form reads back as it is).
fn as_written(bytes: &[u8]) -> Value {
    let docs: Vec<Value> = serde_yaml_ng::Deserializer::from_slice(bytes)
        .map(|d| Value::deserialize(d).unwrap())
        .filter(|v| !v.is_null())
        .collect();
    let platform = docs.iter().find(|d| {
        d.as_object()
            .is_some_and(|o| o.len() == 1 && o.contains_key("platforms"))
    });
    let spec = docs
        .iter()
        .find(|d| {
            !d.as_object()
                .is_some_and(|o| o.len() == 1 && o.contains_key("platforms"))
        })
        .cloned()
        .unwrap_or(Value::Null);
    match platform {
        Some(p) => serde_json::json!({"pipeline_spec": spec, "platform_spec": p}),
        None => spec,
    }
}

#[test]
fn every_upstream_kfp_file_is_accepted_or_refused_by_name() {
    let root = fixtures_dir().join("kfp");
    let mut all = Vec::new();
    files(&root, &mut all);
    all.sort();
    assert!(
        all.len() >= 170,
        "expected the 172 upstream files, found {}",
        all.len()
    );
    let d = spawn_daemon();
    let token = d.admin().unwrap().to_string();
    let mut accepted = 0;
    let mut refused: BTreeMap<String, usize> = BTreeMap::new();
    let mut invalid = Vec::new();
    for (i, f) in all.iter().enumerate() {
        let bytes = std::fs::read(f).unwrap();
        let (ct, body) = multipart(&f.file_name().unwrap().to_string_lossy(), &bytes);
        // Unique names: several upstream files share a pipeline name.
        let path = format!("/apis/v2beta1/pipelines/upload?name=corpus-{i}");
        let r = d.send_body(Method::POST, &path, Some(&token), &ct, body);
        let rel = f.strip_prefix(&root).unwrap().display().to_string();
        assert!(r.status < 500, "{rel}: {r}");
        if rel.contains("/invalid/") {
            assert!((400..500).contains(&r.status), "{rel} must be refused: {r}");
            assert!(r.is_problem(), "{rel}: {r}");
            let detail = r.body["detail"].as_str().unwrap_or_default().to_string();
            let field = r.body["field"].as_str().unwrap_or_default().to_string();
            assert!(!detail.is_empty(), "{rel}: the problem names nothing: {r}");
            invalid.push(format!("{rel}: {field}: {detail}"));
            continue;
        }
        if r.status == 200 {
            accepted += 1;
            // Round trip: the stored version holds the spec exactly as written.
            let pid = r.body["pipeline_id"].as_str().unwrap().to_string();
            let versions = d.get(&format!("/apis/v2beta1/pipelines/{pid}/versions"), Some(&token));
            assert_eq!(versions.status, 200, "{rel}: {versions}");
            // Round trip: the stored version holds every document exactly as written
            // (the IR, and the platform spec when the file has one).
            let stored = &versions.body["pipeline_versions"][0]["pipeline_spec"];
            assert_eq!(
                stored,
                &as_written(&bytes),
                "{rel}: the stored pipeline_spec differs from the file"
            );
            let spec = stored.get("pipeline_spec").unwrap_or(stored);
            assert!(
                spec["pipelineInfo"]["name"]
                    .as_str()
                    .is_some_and(|n| !n.is_empty()),
                "{rel}: {versions}"
            );
        } else {
            assert_eq!(r.status, 422, "{rel}: {r}");
            assert_eq!(r.code(), "unsupported_feature", "{rel}: {r}");
            let feature = r.body["feature"].as_str().unwrap_or_default().to_string();
            assert!(!feature.is_empty(), "{rel}: {r}");
            *refused.entry(feature).or_default() += 1;
        }
    }
    let refused_total: usize = refused.values().sum();
    println!(
        "KFP corpus: {} files: {accepted} accepted, {refused_total} refused by feature, {} invalid",
        all.len(),
        invalid.len()
    );
    for (feature, n) in &refused {
        println!("  refused {n:>3} x {feature}");
    }
    for line in &invalid {
        println!("  invalid: {line}");
    }
    assert_eq!(invalid.len(), 3);
    assert!(accepted >= 100, "only {accepted} accepted");
}
