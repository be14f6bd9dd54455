//! Every upstream InferenceService in `../shared/fixtures/kserve/` (read in place) is
//! accepted, or refused with a named feature; retired apiVersions and malformed YAML
//! get a 4xx saying so; never a 5xx. Prints a summary.

use std::collections::BTreeMap;

use hearth_e2e::{spawn_daemon, Reply};

/// Splits a YAML stream at document markers, keeping each document's text.
fn documents(text: &str) -> Vec<String> {
    let mut docs = vec![String::new()];
    for line in text.lines() {
        if line.starts_with("---") {
            docs.push(String::new());
        } else if let Some(last) = docs.last_mut() {
            last.push_str(line);
            last.push('\n');
        }
    }
    docs.into_iter()
        .filter(|d| {
            d.lines()
                .any(|l| !l.trim().is_empty() && !l.trim_start().starts_with('#'))
        })
        .collect()
}

#[test]
fn upstream_kserve_corpus_is_accepted_or_refused_by_name() {
    let dir = hearth_e2e::fixtures_dir().join("kserve");
    let index = std::fs::read_to_string(dir.join("INDEX.tsv")).unwrap();
    let mut files: Vec<String> = index
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| l.split('\t').next().map(str::to_string))
        .collect();
    files.dedup();
    assert!(files.len() > 60, "the index lists {} files", files.len());

    let d = spawn_daemon();
    let mut accepted = Vec::new();
    let mut refused: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut malformed = Vec::new();
    let mut retired = Vec::new();
    for (i, file) in files.iter().enumerate() {
        let text = without_namespace(&std::fs::read_to_string(dir.join(file)).unwrap());
        let ns = format!("corpus-{i}");
        let base = format!("/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices");
        // A file that is not valid YAML as a whole is sent whole: the answer must
        // say so with a position.
        let whole = d.post_yaml(&base, d.admin(), &text);
        let message = whole.body["message"].as_str().unwrap_or("");
        if whole.status == 400 && message.starts_with("malformed YAML") {
            assert!(message.contains("line"), "{file}: {whole}");
            malformed.push(file.clone());
            continue;
        }
        let docs = documents(&text);
        if docs.len() == 1 {
            // Already sent.
            classify(file, &whole, &mut accepted, &mut refused, &mut retired);
            continue;
        }
        for (j, doc) in docs.iter().enumerate() {
            if !doc.contains("kind: InferenceService") {
                continue;
            }
            let r = d.post_yaml(&base, d.admin(), doc);
            classify(
                &format!("{file}#{j}"),
                &r,
                &mut accepted,
                &mut refused,
                &mut retired,
            );
        }
    }
    println!(
        "\nKServe corpus: {} accepted, {} refused by feature, {} retired apiVersion, {} malformed YAML",
        accepted.len(),
        refused.values().map(Vec::len).sum::<usize>(),
        retired.len(),
        malformed.len()
    );
    for a in &accepted {
        println!("  accepted  {a}");
    }
    for (feature, files) in &refused {
        println!("  refused   {feature}: {}", files.join(", "));
    }
    for r in &retired {
        println!("  retired   {r}");
    }
    for m in &malformed {
        println!("  malformed {m}");
    }
    assert!(malformed.iter().any(|f| f.contains("bentoml")), "{malformed:?}");
    assert!(
        retired.iter().any(|f| f.contains("sklearn-iap-no-authz")),
        "{retired:?}"
    );
    assert!(retired.iter().any(|f| f.contains("mnist-pvc")), "{retired:?}");
    for must in [
        "v1beta1/sklearn/v1/sklearn.yaml",
        "v1beta1/sklearn/v2/sklearn.yaml",
        "canary-example__L35.yaml",
        "sklearn__L82.yaml",
    ] {
        assert!(
            accepted.iter().any(|a| a.contains(must)),
            "{must} not accepted: {accepted:?}"
        );
    }
}

/// The document without its `metadata.namespace`: kubectl sends each document to its
/// own namespace's path (a document naming another namespace than its path is a 400,
/// as in Kubernetes), and the corpus checks what Hearth makes of the rest.
fn without_namespace(yaml: &str) -> String {
    yaml.lines()
        .filter(|line| !line.starts_with("  namespace:"))
        .map(|line| format!("{line}\n"))
        .collect()
}

fn classify(
    what: &str,
    r: &Reply,
    accepted: &mut Vec<String>,
    refused: &mut BTreeMap<String, Vec<String>>,
    retired: &mut Vec<String>,
) {
    assert!(r.status < 500, "{what}: a 5xx: {r}");
    match r.status {
        201 => accepted.push(what.to_string()),
        422 if r.body["details"]["causes"][0]["reason"] == "FieldValueNotSupported" => {
            let feature = r.cause_field().to_string();
            assert!(!feature.is_empty(), "{what}: refusal without a feature: {r}");
            refused.entry(feature).or_default().push(what.to_string());
        }
        422 if r.cause_field() == "apiVersion"
            && r.body["message"].as_str().unwrap_or("").contains("retired") =>
        {
            retired.push(what.to_string())
        }
        _ => panic!("{what}: neither accepted nor refused by feature: {r}"),
    }
}
