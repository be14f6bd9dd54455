//! The Jupyter server a notebook runs, and what Hearth reads from it: the command line
//! (Jupyter Server 2's `ServerApp` options), readiness and activity from its REST API
//! (`GET {base_url}api/status`, `GET {base_url}api/kernels`; jupyter_server's
//! `services/api/handlers.py` and `services/kernels/handlers.py`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Deserialize;

/// Kubeflow's URL prefix of a notebook: `/notebook/{namespace}/{name}/`. Both the
/// server's `base_url` and `NB_PREFIX` (the variable Kubeflow's images read).
pub fn base_url(namespace: &str, name: &str) -> String {
    format!("/notebook/{namespace}/{name}/")
}

/// The first of `names` that is an executable file on `path` (a `PATH` value).
fn find_on_path(names: &[&str], path: &str) -> Option<PathBuf> {
    use std::os::unix::fs::PermissionsExt;
    for name in names {
        for dir in path.split(':').filter(|d| !d.is_empty()) {
            let candidate = Path::new(dir).join(name);
            let executable = std::fs::metadata(&candidate)
                .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
                .unwrap_or(false);
            if executable {
                return Some(candidate);
            }
        }
    }
    None
}

/// The configured server command, or `jupyter-lab` (else `jupyter-server`) found on
/// `PATH` with `path_prefix` in front, as the workload's own `PATH` will be.
pub fn server_command(
    configured: Option<&[String]>,
    path_prefix: Option<&str>,
) -> Result<Vec<String>, String> {
    if let Some(command) = configured.filter(|c| !c.is_empty()) {
        return Ok(command.to_vec());
    }
    let system = std::env::var("PATH").unwrap_or_default();
    let path = match path_prefix {
        Some(prefix) => format!("{prefix}:{system}"),
        None => system,
    };
    find_on_path(&["jupyter-lab", "jupyter-server"], &path)
        .map(|p| vec![p.display().to_string()])
        .ok_or_else(|| {
            "no Jupyter server found: neither jupyter-lab nor jupyter-server is on PATH; install jupyterlab \
             (or jupyter-server), or set [notebooks] command in config.toml"
                .to_string()
        })
}

/// The full argv: the command, then the `ServerApp` options Hearth relies on. The
/// token is not on the command line (other users could read it in `ps`): it is
/// `JUPYTER_TOKEN` in the environment.
/// `all_interfaces`: the server has a network namespace of its own (a container on a
/// bridge network), whose loopback the published port cannot reach.
pub fn argv(
    command: Vec<String>,
    port: u16,
    base_url: &str,
    root_dir: &Path,
    all_interfaces: bool,
) -> Vec<String> {
    let mut argv = command;
    argv.extend([
        format!(
            "--ServerApp.ip={}",
            if all_interfaces { "0.0.0.0" } else { "127.0.0.1" }
        ),
        format!("--ServerApp.port={port}"),
        // The port was chosen by Hearth: another one would be unreachable.
        "--ServerApp.port_retries=0".to_string(),
        "--ServerApp.open_browser=False".to_string(),
        format!("--ServerApp.base_url={base_url}"),
        format!("--ServerApp.root_dir={}", root_dir.display()),
        // The proxy is the only client; shutting the server down is Hearth's job.
        "--ServerApp.quit_button=False".to_string(),
        // Hearth chose the user (the namespace's, or the daemon's own in shared mode,
        // which may be root); Jupyter's refusal to run as root would only stop it.
        "--ServerApp.allow_root=True".to_string(),
    ]);
    argv
}

/// A free loopback port, chosen now (the server binds it when it starts).
pub fn free_port() -> std::io::Result<u16> {
    let listener = std::net::TcpListener::bind(("127.0.0.1", 0))?;
    Ok(listener.local_addr()?.port())
}

/// A random token of 32 bytes, hex.
pub fn new_token() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

#[derive(Debug, Deserialize)]
struct ApiStatus {
    last_activity: Option<DateTime<Utc>>,
}

#[derive(Debug, Deserialize)]
struct Kernel {
    last_activity: Option<DateTime<Utc>>,
    execution_state: Option<String>,
}

/// What one look at a running server found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// `/api/status` answered 200; the last activity seen (now while a kernel is busy).
    Ready { last_activity: Option<DateTime<Utc>> },
    /// No answer yet (starting), or an error.
    NotReady(String),
}

/// Reads `/api/status` and `/api/kernels` (the latter with `no_track_activity`, so the
/// look itself is no activity) of the server at `port`.
pub async fn probe(http: &awc::Client, port: u16, base_url: &str, token: &str, now: DateTime<Utc>) -> Probe {
    let get = |path: &str| {
        http.get(format!("http://127.0.0.1:{port}{base_url}{path}"))
            .insert_header(("Authorization", format!("token {token}")))
            .timeout(Duration::from_secs(5))
    };
    let status: ApiStatus = match get("api/status").send().await {
        Ok(mut r) if r.status().is_success() => match r.json().await {
            Ok(s) => s,
            Err(e) => return Probe::NotReady(format!("api/status: {e}")),
        },
        Ok(r) => return Probe::NotReady(format!("api/status answered {}", r.status())),
        Err(e) => return Probe::NotReady(format!("api/status: {e}")),
    };
    let mut last = status.last_activity;
    if let Ok(mut r) = get("api/kernels?no_track_activity=1").send().await {
        if let Ok(kernels) = r.json::<Vec<Kernel>>().await {
            for kernel in kernels {
                if kernel.execution_state.as_deref() == Some("busy") {
                    last = Some(now);
                }
                last = last.max(kernel.last_activity);
            }
        }
    }
    Probe::Ready { last_activity: last }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_server_gets_kubeflows_prefix_and_a_loopback_port() {
        let argv = argv(
            vec!["jupyter-lab".into()],
            4242,
            &base_url("a", "nb"),
            Path::new("/w"),
            false,
        );
        assert!(argv.contains(&"--ServerApp.base_url=/notebook/a/nb/".to_string()));
        assert!(argv.contains(&"--ServerApp.ip=127.0.0.1".to_string()));
        assert!(argv.contains(&"--ServerApp.root_dir=/w".to_string()));
        assert!(!argv.iter().any(|a| a.contains("token")));
        assert_eq!(new_token().len(), 64);
        // In a container of its own network, on all of its interfaces (Docker publishes
        // the port on the host's loopback only).
        let boxed = super::argv(vec!["jupyter".into()], 4242, "/", Path::new("/w"), true);
        assert!(boxed.contains(&"--ServerApp.ip=0.0.0.0".to_string()));
    }

    #[test]
    fn a_configured_command_wins_and_a_missing_server_is_explained() {
        let configured = vec!["jupyter".to_string(), "server".to_string()];
        assert_eq!(server_command(Some(&configured), None).unwrap(), configured);
        let dir = tempfile::tempdir().unwrap();
        let saved = std::env::var("PATH").ok();
        // Only the prefix is searched beyond PATH; an empty directory finds nothing
        // unless the host has Jupyter on PATH.
        if find_on_path(&["jupyter-lab", "jupyter-server"], saved.as_deref().unwrap_or("")).is_none() {
            let err = server_command(None, dir.path().to_str()).unwrap_err();
            assert!(err.contains("[notebooks] command"), "{err}");
        }
    }
}
