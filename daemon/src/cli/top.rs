//! `hearth top`: the GPUs (utilization, memory, who holds each, simulated or real) and
//! the workload queue with why each entry waits, from `GET /hearth/v1/node` and
//! `GET /hearth/v1/queue`.

use std::process::ExitCode;

use clap::Args;
use serde_json::{json, Value};

use super::client::Client;
use super::{field, print_data, print_table, CliError, OutputFlag};

#[derive(Args)]
pub struct TopArgs {
    #[command(flatten)]
    pub output: OutputFlag,
    #[command(flatten)]
    pub tls: super::trust::TlsFlags,
}

pub fn top(args: &TopArgs) -> Result<ExitCode, CliError> {
    let client = Client::from_environment(&args.tls)?;
    let node = client.get("/hearth/v1/node")?;
    let queue = client.get("/hearth/v1/queue")?;
    let data = json!({"gpus": node["gpus"], "queue": queue});
    if print_data(args.output.output, &data)? {
        return Ok(ExitCode::SUCCESS);
    }
    let entries = queue["items"].as_array().cloned().unwrap_or_default();
    let gpus = node["gpus"]["devices"].as_array().cloned().unwrap_or_default();
    // `source`: nvml, simulated, or none (with `reason`).
    match node["gpus"]["reason"].as_str() {
        Some(reason) => println!(
            "GPUs: {} ({}: {reason})",
            gpus.len(),
            field(&node["gpus"], "source")
        ),
        None => println!("GPUs: {} ({})", gpus.len(), field(&node["gpus"], "source")),
    }
    let rows: Vec<Vec<String>> = gpus
        .iter()
        .map(|gpu| {
            let holders: Vec<String> = entries
                .iter()
                .filter(|e| {
                    e["gpu_uuids"]
                        .as_array()
                        .is_some_and(|ids| ids.iter().any(|id| id == &gpu["uuid"]))
                })
                .map(|e| {
                    format!(
                        "{}/{}/{}",
                        field(e, "kind"),
                        field(e, "namespace"),
                        field(e, "name")
                    )
                })
                .collect();
            vec![
                field(gpu, "index"),
                field(gpu, "name"),
                format!("{}%", field(gpu, "utilization_percent")),
                format!(
                    "{}/{}",
                    gib(&gpu["memory_used_bytes"]),
                    gib(&gpu["memory_total_bytes"])
                ),
                if gpu["simulated"] == true { "yes" } else { "no" }.into(),
                if holders.is_empty() {
                    "-".into()
                } else {
                    holders.join(",")
                },
            ]
        })
        .collect();
    print_table(
        &["GPU", "NAME", "UTIL", "MEMORY(GiB)", "SIMULATED", "HELD BY"],
        &rows,
    );
    println!();
    println!(
        "Queue: {} running, {} waiting; GPUs {}/{} in use",
        field(&queue, "running"),
        field(&queue, "queued"),
        field(&queue, "gpus_in_use"),
        field(&queue, "gpus_total")
    );
    let rows: Vec<Vec<String>> = entries
        .iter()
        .map(|e| {
            vec![
                field(e, "kind"),
                format!("{}/{}", field(e, "namespace"), field(e, "name")),
                field(e, "phase"),
                field(e, "priority"),
                field(e, "gpus"),
                field(e, "reason"),
            ]
        })
        .collect();
    print_table(&["KIND", "NAME", "PHASE", "PRIORITY", "GPUS", "REASON"], &rows);
    Ok(ExitCode::SUCCESS)
}

fn gib(bytes: &Value) -> String {
    let bytes = bytes.as_u64().unwrap_or(0) as f64;
    format!("{:.1}", bytes / (1024.0 * 1024.0 * 1024.0))
}
