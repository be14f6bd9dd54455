//! `hearth run PIPELINE.yaml`: what `kfp.Client().create_run_from_pipeline_package`
//! does (the compiled spec inline in `POST /apis/v2beta1/runs`, parameters typed by the
//! spec's `root.inputDefinitions`, optionally in a named experiment), then, with
//! `--wait`, follows the run's tasks until it ends: exit 0 when it succeeded, 1 when
//! it failed or was canceled.

use std::collections::BTreeMap;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::Args;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::access::segment;
use super::client::Client;
use super::{print_data, CliError, Output, OutputFlag};

#[derive(Args)]
pub struct RunArgs {
    /// A pipeline compiled by the KFP SDK (`kfp.compiler.Compiler().compile`), YAML.
    pub pipeline: PathBuf,
    /// A pipeline parameter, `NAME=VALUE` (repeatable); typed by the spec's inputs.
    #[arg(short = 'p', long = "param", value_name = "NAME=VALUE")]
    pub params: Vec<String>,
    /// The experiment, by display name; created when missing [default: KFP's Default].
    #[arg(long)]
    pub experiment: Option<String>,
    /// The run's display name [default: the pipeline's name].
    #[arg(long)]
    pub name: Option<String>,
    /// Follow the run until it ends; the exit code says how it ended.
    #[arg(long)]
    pub wait: bool,
    /// Give up waiting after this many seconds (the run goes on).
    #[arg(long, default_value_t = 3600)]
    pub timeout_seconds: u64,
    #[command(flatten)]
    pub output: OutputFlag,
    #[command(flatten)]
    pub tls: super::trust::TlsFlags,
}

/// States in which a KFP v2 run has ended (`V2beta1RuntimeState`).
const ENDED: [&str; 4] = ["SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"];

pub fn run(args: &RunArgs) -> Result<ExitCode, CliError> {
    let spec = read_spec(&args.pipeline)?;
    let parameters = typed_parameters(&spec, &args.params)?;
    let client = Client::from_environment(&args.tls)?;
    let display_name = args.name.clone().unwrap_or_else(|| {
        spec["pipelineInfo"]["name"]
            .as_str()
            .map(str::to_string)
            .unwrap_or_else(|| file_stem(&args.pipeline))
    });
    let mut body = json!({
        "display_name": display_name,
        "pipeline_spec": spec,
        "runtime_config": {"parameters": parameters},
    });
    if let Some(experiment) = &args.experiment {
        body["experiment_id"] = json!(experiment_id(&client, experiment)?);
    }
    let created = client.post("/apis/v2beta1/runs", &body)?;
    let run_id = created["run_id"]
        .as_str()
        .ok_or_else(|| CliError::Output("the server's run has no run_id".into()))?
        .to_string();
    if !args.wait {
        if !print_data(args.output.output, &created)? {
            println!("run {run_id} created ({display_name})");
        }
        return Ok(ExitCode::SUCCESS);
    }
    eprintln!("run {run_id} ({display_name})");
    let done = follow(
        &client,
        &run_id,
        Duration::from_secs(args.timeout_seconds),
        args.output.output,
    )?;
    let state = done["state"].as_str().unwrap_or("UNKNOWN").to_string();
    if !print_data(args.output.output, &done)? {
        match done["error"]["message"].as_str() {
            Some(message) if state != "SUCCEEDED" => println!("run {run_id} {state}: {message}"),
            _ => println!("run {run_id} {state}"),
        }
    }
    Ok(if state == "SUCCEEDED" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// The pipeline spec from a compiled file: its first YAML document (the second, when
/// present, is the platform spec), or a `PipelineJob`'s `pipelineSpec`.
fn read_spec(path: &std::path::Path) -> Result<Value, CliError> {
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let bad = |detail: String| CliError::Input(format!("{}: {detail}", path.display()));
    let first = serde_yaml_ng::Deserializer::from_str(&text)
        .next()
        .ok_or_else(|| bad("empty file".into()))?;
    let doc = Value::deserialize(first).map_err(|e| bad(format!("not YAML: {e}")))?;
    let spec = match doc.get("pipelineSpec") {
        Some(inner) => inner.clone(),
        None => doc,
    };
    if !spec.is_object() || spec.get("root").is_none() || spec.get("pipelineInfo").is_none() {
        return Err(bad(
            "not a compiled KFP pipeline (no pipelineInfo and root): compile it with kfp.compiler.Compiler().compile".into(),
        ));
    }
    Ok(spec)
}

/// `NAME=VALUE` pairs typed as the spec's `root.inputDefinitions.parameters` say
/// (`STRING`, `NUMBER_INTEGER`, `NUMBER_DOUBLE`, `BOOLEAN`, `LIST`, `STRUCT`).
fn typed_parameters(spec: &Value, params: &[String]) -> Result<Map<String, Value>, CliError> {
    let mut out = Map::new();
    for param in params {
        let (name, raw) = param
            .split_once('=')
            .ok_or_else(|| CliError::Input(format!("-p {param:?}: give NAME=VALUE")))?;
        let kind = spec["root"]["inputDefinitions"]["parameters"][name]["parameterType"]
            .as_str()
            .unwrap_or("STRING");
        let bad = |what: &str| CliError::Input(format!("-p {name}: {raw:?} is not {what}"));
        let value = match kind {
            "NUMBER_INTEGER" => json!(raw.parse::<i64>().map_err(|_| bad("an integer"))?),
            "NUMBER_DOUBLE" => json!(raw.parse::<f64>().map_err(|_| bad("a number"))?),
            "BOOLEAN" => json!(raw.parse::<bool>().map_err(|_| bad("true or false"))?),
            "LIST" | "STRUCT" => serde_json::from_str(raw).map_err(|_| bad("JSON"))?,
            _ => json!(raw),
        };
        out.insert(name.to_string(), value);
    }
    Ok(out)
}

/// The id of the experiment named `name`, created when there is none.
fn experiment_id(client: &Client, name: &str) -> Result<String, CliError> {
    let mut page_token = String::new();
    loop {
        let path = format!(
            "/apis/v2beta1/experiments?page_size=100&page_token={}",
            segment(&page_token)
        );
        let page = client.get(&path)?;
        for experiment in page["experiments"].as_array().into_iter().flatten() {
            if experiment["display_name"] == name {
                if let Some(id) = experiment["experiment_id"].as_str() {
                    return Ok(id.to_string());
                }
            }
        }
        match page["next_page_token"].as_str() {
            Some(next) if !next.is_empty() => page_token = next.to_string(),
            _ => break,
        }
    }
    let created = client.post("/apis/v2beta1/experiments", &json!({"display_name": name}))?;
    created["experiment_id"]
        .as_str()
        .map(str::to_string)
        .ok_or_else(|| CliError::Output("the server's experiment has no experiment_id".into()))
}

/// Polls the run once a second, showing its tasks' states as they change (redrawn in
/// place on a terminal, a line per change otherwise), until it ends.
/// How long `--wait` keeps trying a daemon it cannot reach (a restart takes seconds).
const RECONNECT: Duration = Duration::from_secs(60);

fn follow(client: &Client, run_id: &str, timeout: Duration, output: Output) -> Result<Value, CliError> {
    let started = Instant::now();
    let live = std::io::stderr().is_terminal();
    let mut shown: BTreeMap<String, String> = BTreeMap::new();
    let mut drawn_lines = 0usize;
    // A daemon restart (an upgrade) does not end the run: waiting goes on for a while.
    let mut unreachable_since: Option<Instant> = None;
    loop {
        let run = match client.get(&format!("/apis/v2beta1/runs/{}", segment(run_id))) {
            Ok(run) => {
                unreachable_since = None;
                run
            }
            Err(e @ CliError::Connect { .. }) => {
                let since = *unreachable_since.get_or_insert_with(|| {
                    eprintln!(
                        "  {e}; the run goes on without us: retrying for {}s",
                        RECONNECT.as_secs()
                    );
                    Instant::now()
                });
                if since.elapsed() > RECONNECT {
                    return Err(e);
                }
                std::thread::sleep(Duration::from_secs(1));
                continue;
            }
            Err(e) => return Err(e),
        };
        let state = run["state"].as_str().unwrap_or("PENDING").to_string();
        let tasks = task_states(&run);
        if output == Output::Table || live {
            let mut err = std::io::stderr().lock();
            if live {
                // Back over the previous drawing, then draw every task afresh.
                if drawn_lines > 0 {
                    let _ = write!(err, "\x1b[{drawn_lines}A\x1b[J");
                }
                let elapsed = started.elapsed().as_secs();
                let _ = writeln!(err, "  {state:<10} {elapsed}s");
                for (task, task_state) in &tasks {
                    let _ = writeln!(err, "    {task_state:<10} {task}");
                }
                drawn_lines = tasks.len() + 1;
            } else {
                for (task, task_state) in &tasks {
                    if shown.get(task) != Some(task_state) {
                        let _ = writeln!(err, "  {task}: {task_state}");
                    }
                }
            }
            shown = tasks;
        }
        if ENDED.contains(&state.as_str()) {
            return Ok(run);
        }
        if started.elapsed() > timeout {
            return Err(CliError::Input(format!(
                "run {run_id} still {state} after {}s (it goes on; see GET /apis/v2beta1/runs/{run_id})",
                timeout.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_secs(1));
    }
}

/// Task display name to state, from `run_details.task_details`.
fn task_states(run: &Value) -> BTreeMap<String, String> {
    run["run_details"]["task_details"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|task| {
            (
                task["display_name"].as_str().unwrap_or("?").to_string(),
                task["state"].as_str().unwrap_or("PENDING").to_string(),
            )
        })
        .collect()
}

fn file_stem(path: &std::path::Path) -> String {
    path.file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "run".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameters_take_the_spec_types() {
        let spec = json!({"root": {"inputDefinitions": {"parameters": {
            "n": {"parameterType": "NUMBER_INTEGER"},
            "lr": {"parameterType": "NUMBER_DOUBLE"},
            "on": {"parameterType": "BOOLEAN"},
            "s": {"parameterType": "STRING"},
            "xs": {"parameterType": "LIST"}
        }}}});
        let got = typed_parameters(
            &spec,
            &["n=3", "lr=0.5", "on=true", "s=7", "xs=[1,2]", "other=x"].map(String::from),
        )
        .unwrap();
        assert_eq!(
            Value::Object(got),
            json!({"n": 3, "lr": 0.5, "on": true, "s": "7", "xs": [1, 2], "other": "x"})
        );
        let err = typed_parameters(&spec, &["n=three".to_string()]).unwrap_err();
        assert_eq!(err.to_string(), r#"-p n: "three" is not an integer"#);
        assert!(typed_parameters(&spec, &["novalue".to_string()]).is_err());
    }
}
