//! `hearth k3s verify`: runs NVIDIA's CUDA vector-add sample as a pod on every GPU node
//! and expects `Test PASSED` in its log, the check people otherwise do by hand after
//! wiring the runtime, the device plugin and the taints. Talks to the cluster through
//! `k3s kubectl` with the admin kubeconfig k3s wrote under Hearth's data dir.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::gpu_rules::ClusterNodes;
use super::manifests;

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error(
        "{0} does not exist: start the daemon with --runtime k3s first (k3s writes it once its API is up)"
    )]
    NoKubeconfig(PathBuf),
    #[error("{0}")]
    Kubectl(String),
    #[error(
        "no node has GPUs (label nvidia.com/gpu.present=true or nvidia.com/gpu capacity): nothing to verify"
    )]
    NoGpuNodes,
}

/// One node's outcome.
#[derive(Debug, Clone, Serialize)]
pub struct NodeResult {
    pub node: String,
    pub passed: bool,
    /// The pod's phase and the log line that decided, or why it did not finish.
    pub detail: String,
}

/// Runs `k3s kubectl --kubeconfig K ARGS`, with `stdin` fed when given.
pub fn kubectl(
    binary: &Path,
    kubeconfig: &Path,
    args: &[&str],
    stdin: Option<&str>,
) -> Result<String, VerifyError> {
    let mut command = std::process::Command::new(binary);
    command
        .arg("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .stdin(if stdin.is_some() {
            std::process::Stdio::piped()
        } else {
            std::process::Stdio::null()
        })
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let what = || format!("{} kubectl {}", binary.display(), args.join(" "));
    let mut child = command
        .spawn()
        .map_err(|e| VerifyError::Kubectl(format!("{}: {e}", what())))?;
    if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
        pipe.write_all(text.as_bytes())
            .map_err(|e| VerifyError::Kubectl(format!("{}: {e}", what())))?;
    }
    let output = child
        .wait_with_output()
        .map_err(|e| VerifyError::Kubectl(format!("{}: {e}", what())))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        Err(VerifyError::Kubectl(format!(
            "{}: {}",
            what(),
            String::from_utf8_lossy(&output.stderr).trim()
        )))
    }
}

/// Verifies every GPU node; `timeout` is per node (the first run pulls the image).
pub fn run(
    binary: &Path,
    kubeconfig: &Path,
    timeout: Duration,
    poll: Duration,
) -> Result<Vec<NodeResult>, VerifyError> {
    if !kubeconfig.exists() {
        return Err(VerifyError::NoKubeconfig(kubeconfig.to_path_buf()));
    }
    let nodes = ClusterNodes::parse(&kubectl(
        binary,
        kubeconfig,
        &["get", "nodes", "-o", "json"],
        None,
    )?)
    .map_err(VerifyError::Kubectl)?;
    let gpu_nodes: Vec<String> = nodes
        .nodes
        .iter()
        .filter(|n| n.has_gpus)
        .map(|n| n.name.clone())
        .collect();
    if gpu_nodes.is_empty() {
        return Err(VerifyError::NoGpuNodes);
    }
    let mut results = Vec::new();
    for node in gpu_nodes {
        results.push(verify_node(binary, kubeconfig, &node, timeout, poll)?);
    }
    Ok(results)
}

fn verify_node(
    binary: &Path,
    kubeconfig: &Path,
    node: &str,
    timeout: Duration,
    poll: Duration,
) -> Result<NodeResult, VerifyError> {
    let name = manifests::verify_pod_name(node);
    let ns = ["-n", "default"];
    kubectl(
        binary,
        kubeconfig,
        &[
            &ns[..],
            &["delete", "pod", &name, "--ignore-not-found", "--wait=true"],
        ]
        .concat(),
        None,
    )?;
    let pod = manifests::verify_pod(node).to_string();
    kubectl(binary, kubeconfig, &["apply", "-f", "-"], Some(&pod))?;
    let deadline = Instant::now() + timeout;
    let result = loop {
        let text = kubectl(
            binary,
            kubeconfig,
            &[&ns[..], &["get", "pod", &name, "-o", "json"]].concat(),
            None,
        )?;
        let status: serde_json::Value =
            serde_json::from_str(&text).map_err(|e| VerifyError::Kubectl(format!("pod {name}: {e}")))?;
        let phase = status["status"]["phase"]
            .as_str()
            .unwrap_or("Pending")
            .to_string();
        if phase == "Succeeded" || phase == "Failed" {
            let logs = kubectl(binary, kubeconfig, &[&ns[..], &["logs", &name]].concat(), None)?;
            let passed = phase == "Succeeded" && logs.lines().any(|l| l.trim() == "Test PASSED");
            let line = logs
                .lines()
                .rev()
                .find(|l| !l.trim().is_empty())
                .unwrap_or("(empty log)")
                .trim()
                .to_string();
            break NodeResult {
                node: node.to_string(),
                passed,
                detail: format!("pod {phase}: {line}"),
            };
        }
        if Instant::now() >= deadline {
            let waiting = &status["status"]["containerStatuses"][0]["state"]["waiting"];
            let why = waiting["reason"]
                .as_str()
                .map(|r| format!(" ({r}: {})", waiting["message"].as_str().unwrap_or("")))
                .or_else(|| {
                    status["status"]["conditions"]
                        .as_array()
                        .and_then(|c| c.iter().find(|c| c["status"] == "False"))
                        .map(|c| {
                            format!(
                                " ({}: {})",
                                c["reason"].as_str().unwrap_or(""),
                                c["message"].as_str().unwrap_or("")
                            )
                        })
                })
                .unwrap_or_default();
            break NodeResult {
                node: node.to_string(),
                passed: false,
                detail: format!("pod still {phase} after {} s{why}", timeout.as_secs()),
            };
        }
        std::thread::sleep(poll);
    };
    // Leave nothing behind; a failed delete does not change the verdict.
    let _ = kubectl(
        binary,
        kubeconfig,
        &[
            &ns[..],
            &["delete", "pod", &name, "--ignore-not-found", "--wait=false"],
        ]
        .concat(),
        None,
    );
    Ok(result)
}
