//! The web page opens the links `kfp.Client` prints after `create_run_from_...`,
//! `create_experiment` and `upload_pipeline`: `<host>/#/runs/details/<id>`,
//! `#/pipelines/details/<id>` and `#/experiments/details/<id>`. The fragment never
//! reaches the server, so the page's `kfpLink` routes it: this test runs that function
//! (with node, where installed) on each form, and checks that the API entry each detail
//! reads answers for the object, with the page's Basic credentials.

use std::process::Command;

use hearth_e2e::{spawn_daemon, Daemon, Reply};
use reqwest::Method;
use serde_json::json;

fn basic(d: &Daemon, path: &str, token: &str) -> Reply {
    d.send(
        d.client
            .request(Method::GET, d.url(path))
            .basic_auth("anyone", Some(token)),
    )
}

/// The script's `kfpLink` function, between its markers.
fn kfp_link_source(js: &str) -> &str {
    let begin = js
        .find("// KFP-LINKS-BEGIN")
        .expect("app.js has no KFP-LINKS-BEGIN marker");
    let end = js
        .find("// KFP-LINKS-END")
        .expect("app.js has no KFP-LINKS-END marker");
    &js[begin..end]
}

/// The path template of the API table entry `key`.
fn api_path(js: &str, key: &str) -> String {
    let line = js
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with(&format!("{key}: {{")))
        .unwrap_or_else(|| panic!("app.js has no API entry {key}"));
    let start = line.find("path: \"").unwrap() + "path: \"".len();
    let len = line[start..].find('"').unwrap();
    line[start..start + len].to_string()
}

#[test]
fn the_page_opens_the_links_kfp_client_prints() {
    let d = spawn_daemon();
    let t = d.admin_token.clone();
    let token = Some(t.as_str());
    let e = d.post_json(
        "/apis/v2beta1/experiments",
        token,
        &json!({"display_name": "links"}),
    );
    assert_eq!(e.status, 200, "{e}");
    let experiment = e.body["experiment_id"].as_str().unwrap().to_string();
    let spec = json!({
        "pipelineInfo": {"name": "links"},
        "schemaVersion": "2.1.0",
        "components": {"comp-a": {"executorLabel": "exec-a"}},
        "deploymentSpec": {"executors": {"exec-a": {"container": {"image": "alpine", "command": ["true"]}}}},
        "root": {"dag": {"tasks": {"a": {"taskInfo": {"name": "a"}, "componentRef": {"name": "comp-a"}}}}},
    });
    let p = d.post_json(
        "/apis/v2beta1/pipelines",
        token,
        &json!({"display_name": "links"}),
    );
    assert_eq!(p.status, 200, "{p}");
    let pipeline = p.body["pipeline_id"].as_str().unwrap().to_string();
    let r = d.post_json(
        "/apis/v2beta1/runs",
        token,
        &json!({"display_name": "links", "experiment_id": experiment, "pipeline_spec": spec}),
    );
    assert_eq!(r.status, 200, "{r}");
    let run = r.body["run_id"].as_str().unwrap().to_string();

    let js = basic(&d, "/ui/app.js", &t).text;
    let source = kfp_link_source(&js);
    // The links as kfp.Client formats them (kfp/client/client.py: `%s/#/runs/details/%s`).
    let links = [
        (format!("#/runs/details/{run}"), "runDetail", "run", &run),
        (
            format!("#/pipelines/details/{pipeline}"),
            "pipelineDetail",
            "pipeline",
            &pipeline,
        ),
        (
            format!("#/experiments/details/{experiment}"),
            "experimentDetail",
            "experiment",
            &experiment,
        ),
    ];
    for (hash, which, key, id) in &links {
        assert!(
            js.contains(&format!("{which}: [\"{key}\"")),
            "no {which} entry reads API {key}"
        );
        let template = api_path(&js, key);
        let path = template
            .split('/')
            .map(|seg| if seg.starts_with('{') { id.as_str() } else { seg })
            .collect::<Vec<_>>()
            .join("/");
        let got = basic(&d, &path, &t);
        assert_eq!(got.status, 200, "{hash}: GET {path}: {got}");
        assert_eq!(got.body["display_name"], "links", "{hash}: {got}");
    }

    match Command::new("node").arg("--version").output() {
        Ok(out) if out.status.success() => {
            let mut script = format!("{source}\nconst out = [];\n");
            for (hash, ..) in &links {
                script.push_str(&format!("out.push(kfpLink({hash:?}));\n"));
            }
            script.push_str(
                "out.push(kfpLink(\"#ns=default\"), kfpLink(\"\"));\nconsole.log(JSON.stringify(out));\n",
            );
            let out = Command::new("node").arg("-e").arg(&script).output().unwrap();
            assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
            let got: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let want: Vec<serde_json::Value> = links
                .iter()
                .map(|(_, which, _, id)| json!({"which": which, "id": id}))
                .chain([serde_json::Value::Null, serde_json::Value::Null])
                .collect();
            assert_eq!(got, json!(want));
        }
        _ => println!("node is not installed: kfpLink itself was not run"),
    }
}
