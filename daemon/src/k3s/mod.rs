//! Embedded k3s (`--runtime k3s`): what Hearth checks before starting it (`preflight`),
//! the containerd NVIDIA runtime wiring and the manifests it drops into k3s's
//! auto-applied manifests dir (`containerd`, `manifests`, `render`), the child process
//! it supervises (`supervisor`), and the GPU taint and readiness rules (`gpu_rules`).
//!
//! k3s itself is not part of the build or the tests: every piece here is tested against
//! what can run without it (a stand-in executable for the supervisor, Debian's
//! containerd for the template, `kubernetes-validate` for the manifests).

pub mod containerd;
pub mod gpu_rules;
pub mod join;
pub mod manifests;
pub mod preflight;
pub mod render;
pub mod supervisor;
pub mod verify;

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// `[k3s]` in the config file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct K3sConfig {
    /// The k3s executable (the installer and the air-gap bundle put it here).
    pub executable: PathBuf,
    /// k3s's API server port (`--https-listen-port`).
    pub https_listen_port: u16,
    /// First restart delay after k3s exits unexpectedly, in seconds; doubles per crash
    /// in a row up to `restart_backoff_max_seconds`.
    pub restart_backoff_base_seconds: f64,
    pub restart_backoff_max_seconds: f64,
    /// k3s's log (`<data_dir>/k3s/k3s.log`) is rotated past this size, one older file kept.
    pub log_max_bytes: u64,
}

impl Default for K3sConfig {
    fn default() -> Self {
        K3sConfig {
            executable: PathBuf::from("/usr/local/bin/k3s"),
            https_listen_port: 6443,
            restart_backoff_base_seconds: 2.0,
            restart_backoff_max_seconds: 300.0,
            log_max_bytes: 32 * 1024 * 1024,
        }
    }
}

/// k3s's own data dir under Hearth's (`--data-dir` of `k3s server`).
pub fn data_dir(hearth_data_dir: &Path) -> PathBuf {
    hearth_data_dir.join("k3s")
}

/// Where k3s reads a containerd config template (`<k3s data dir>/agent/etc/containerd`).
pub fn containerd_dir(hearth_data_dir: &Path) -> PathBuf {
    data_dir(hearth_data_dir).join("agent/etc/containerd")
}

/// Where k3s applies every manifest it finds, at start and on change
/// (`<k3s data dir>/server/manifests`).
pub fn manifests_dir(hearth_data_dir: &Path) -> PathBuf {
    data_dir(hearth_data_dir).join("server/manifests")
}

/// Where k3s imports image tarballs from at start (air-gapped installs).
pub fn images_dir(hearth_data_dir: &Path) -> PathBuf {
    data_dir(hearth_data_dir).join("agent/images")
}

/// The kubeconfig k3s writes for its admin (mode 0600).
pub fn kubeconfig_path(hearth_data_dir: &Path) -> PathBuf {
    data_dir(hearth_data_dir).join("kubeconfig.yaml")
}
