//! Where workloads actually run. A `Workload` is the runtime-neutral description of
//! one process (a job attempt, a pipeline step, a model replica, a notebook server);
//! a `Runtime` backend starts, watches, logs and stops it. `from_config` picks the
//! backend: `process` runs the command on the host under `hearth shim`; `docker` runs
//! it as a container of the spec's image (`docker.rs`); `k3s` and `kube` run it as a
//! Kubernetes pod (`kube.rs`).
//!
//! What a backend owes its callers (all three fit it: the host process, the Docker
//! container and the Kubernetes pod):
//! - `start` is idempotent on `Workload.id` and adopts what an earlier daemon started
//!   (find it by name or label, never start it twice); `status` and `wait` work for a
//!   workload started by another daemon process. No pid or host port leaks out:
//!   `RunState::Running` carries only the start time.
//! - The log is host files (`logs`), oldest first, with `output.times` beside them
//!   (`log_times`) when per-line times are known: a backend whose log lives elsewhere
//!   copies it there as it is written (the Docker backend follows `docker logs`), so
//!   that the log outlives the container or pod and every reader works unchanged.
//! - `forget` frees the backend's side (the container, the pod) once the end is
//!   recorded and the log kept; `remove` deletes the log too.
//! - `Workload.mounts` name host paths at the paths the workload was given (pipeline
//!   step files, artifacts, models, workspaces); `Workload.ports` are loopback ports the
//!   callers chose, reachable at `127.0.0.1:<port>` on the host however the backend
//!   gets them there: Docker publishes them, the kube backend relays them to the pod IP
//!   (`Capabilities::own_network` says whether the server inside must listen on all
//!   its interfaces).
//! - `availability` (cheap, read on every admission pass) and `probe` (asks the
//!   backend; the daemon calls it every 2 s and puts it in `/readyz`): while a backend
//!   is unavailable nothing is admitted, each waiting workload says why, and a call
//!   that cannot reach it returns `RuntimeError::Unavailable` (nothing changed).
//! - `capabilities` tells callers what they must not assume (images, mounts, GPU mode,
//!   whether Hearth's scheduler admits or the backend's own does).

pub mod cgroups;
pub mod docker;
pub mod identity;
pub mod kube;
pub mod log_times;
pub mod process;
pub mod proctree;
pub mod shim;
pub mod workdir;

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkloadsConfig {
    /// Size at which a workload's log is rotated (one older file is kept).
    pub log_max_bytes: u64,
    /// Directories put in front of `PATH` for every process workload, e.g. a venv's
    /// `bin` so that pipeline steps find the Python and packages they need.
    pub path_prefix: Option<String>,
    /// How often ended workloads of deleted owners (their rows, directories and logs)
    /// are removed.
    pub gc_interval_seconds: u64,
}

impl Default for WorkloadsConfig {
    fn default() -> Self {
        WorkloadsConfig {
            log_max_bytes: 32 * 1024 * 1024,
            path_prefix: None,
            gc_interval_seconds: 60,
        }
    }
}

/// Who a workload belongs to; the scheduler and `list` select by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Owner {
    /// `Job`, `PipelineRun`, `InferenceService`, `Notebook`, ...
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// The owning resource's uid.
    pub uid: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Mount {
    pub source: PathBuf,
    pub target: PathBuf,
    #[serde(default)]
    pub read_only: bool,
}

/// Requests as the scheduler counts them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequest {
    /// CPU in thousandths of a core (Kubernetes' `m`).
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Workload {
    /// Unique and stable across restarts: `<owner kind>-<owner uid>-<suffix>`.
    pub id: String,
    pub owner: Owner,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Recorded by the process backend, pulled and run by container backends.
    #[serde(default)]
    pub image: Option<String>,
    /// argv[0..]: the container's `command` followed by its `args`.
    pub command: Vec<String>,
    #[serde(default)]
    pub env: Vec<(String, String)>,
    #[serde(default)]
    pub working_dir: Option<PathBuf>,
    #[serde(default)]
    pub mounts: Vec<Mount>,
    #[serde(default)]
    pub ports: Vec<u16>,
    #[serde(default)]
    pub resources: ResourceRequest,
    /// Filled in by the scheduler at admission.
    #[serde(default)]
    pub gpu_uuids: Vec<String>,
    /// Wall-clock limit from start; the runtime kills the workload past it.
    #[serde(default)]
    pub active_deadline_seconds: Option<u64>,
    /// SIGTERM to SIGKILL.
    #[serde(default = "default_grace")]
    pub termination_grace_seconds: u64,
    /// The `securityContext` the spec asked for; the runtime runs the workload as its
    /// namespace's user with it applied (`identity::Identities::for_workload`).
    #[serde(default)]
    pub security_context: Option<identity::SecurityContext>,
}

fn default_grace() -> u64 {
    10
}

/// How a workload ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitInfo {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `DeadlineExceeded`, `Stopped`, `StartError`, `Lost`.
    pub reason: String,
    pub message: String,
    pub started_at: Option<String>,
    pub finished_at: String,
}

impl ExitInfo {
    pub fn succeeded(&self) -> bool {
        self.exit_code == Some(0) && self.reason == "Completed"
    }
}

/// What a runtime reports of a workload. No pid or host port: a container or pod has
/// neither on the host, so callers never see one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunState {
    /// `started_at`: RFC 3339, when the command started (or, for one adopted before it
    /// reported, when it was seen running).
    Running {
        started_at: String,
    },
    Exited(ExitInfo),
}

/// How a backend hands GPUs to a workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub enum GpuMode {
    /// `CUDA_VISIBLE_DEVICES`/`NVIDIA_VISIBLE_DEVICES` with the allocated UUIDs.
    Environment,
    /// Docker `DeviceRequests` naming the allocated UUIDs.
    DeviceRequests,
    /// `nvidia.com/gpu` limits: the cluster's device plugin picks the devices (the
    /// UUIDs the ledger chose are not passed).
    Delegated,
}

/// What a backend can do, for validation and callers that must not assume process
/// mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
pub struct Capabilities {
    /// Each workload runs in its spec's image (so an image is required).
    pub runs_images: bool,
    /// A workload needs a command (no image entrypoint to fall back on).
    pub needs_command: bool,
    /// `Workload.mounts` are honoured (bind mounts, volumes); without it the workload
    /// sees host paths as they are.
    pub mounts: bool,
    pub gpu_mode: GpuMode,
    /// The workload has a network namespace of its own: a server in it must listen on
    /// all its interfaces, and the runtime publishes `Workload.ports` on the host's
    /// loopback. False: it shares the host's network and must bind 127.0.0.1 itself.
    pub own_network: bool,
    /// Hearth's scheduler admits workloads (CPU, memory, GPU ledger); false when the
    /// backend's own scheduler does.
    pub local_admission: bool,
}

/// Whether a backend can take workloads now (`Err`: why not, e.g. the Docker socket is
/// missing), as last probed.
pub type Availability = Result<(), String>;

#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    #[error("workload {0} is not known to the runtime")]
    NotFound(String),
    #[error("cannot start workload {id}: {message}")]
    Start { id: String, message: String },
    #[error("runtime I/O on {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("workload {0} is still running")]
    StillRunning(String),
    /// The backend itself cannot be reached (the Docker socket is gone, the API server
    /// is down): nothing is known about the workload, and nothing of it was changed.
    #[error("the {runtime} runtime is unavailable: {reason}")]
    Unavailable { runtime: &'static str, reason: String },
}

/// The log of a workload: both streams interleaved, oldest rotated file first.
#[derive(Debug, Clone)]
pub struct LogFiles {
    pub files: Vec<PathBuf>,
}

#[async_trait::async_trait]
pub trait Runtime: Send + Sync {
    fn name(&self) -> &'static str;
    /// Starts the workload; returns once it runs (or failed to start).
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError>;
    /// Current state. `Exited` is final and survives daemon restarts.
    async fn status(&self, id: &str) -> Result<RunState, RuntimeError>;
    /// Waits until the workload exits (a daemon restart ends the wait; call again).
    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError>;
    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError>;
    /// Ends the workload: SIGTERM (to the whole process tree, the container, the pod's
    /// containers), SIGKILL after its grace period. Recorded first, so that a workload
    /// still being started never runs; its end then reads `Stopped`.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError>;
    /// Ids of the workloads this runtime holds for an owner uid (all with `None`).
    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError>;
    /// Frees what the runtime keeps for a finished workload (logs excepted).
    async fn forget(&self, id: &str) -> Result<(), RuntimeError>;
    /// Deletes everything left of an ended workload, its logs included. Idempotent.
    async fn remove(&self, id: &str) -> Result<(), RuntimeError>;
    /// One line about limits enforcement, for `/hearth/v1/node` and status.
    fn limits_note(&self) -> String;
    fn capabilities(&self) -> Capabilities;
    /// Whether the backend can take workloads, as of the last `probe` (cheap: read on
    /// every admission pass).
    fn availability(&self) -> Availability {
        Ok(())
    }
    /// Asks the backend whether it is reachable now and records the answer for
    /// `availability`.
    async fn probe(&self) -> Availability {
        Ok(())
    }
}

/// The backend `config.runtime` names. `k3s` and `kube` make no connection here: the
/// kube backend reads its kubeconfig at first use (k3s writes it once started).
pub fn from_config(config: &crate::config::Config) -> Result<std::sync::Arc<dyn Runtime>, RuntimeError> {
    use crate::config::RuntimeKind;
    let root = config.data_dir.join("workloads");
    Ok(match config.runtime {
        RuntimeKind::Process => {
            let mut extra_env = Vec::new();
            if let Some(prefix) = &config.workloads.path_prefix {
                let path = std::env::var("PATH").unwrap_or_default();
                extra_env.push(("PATH".to_string(), format!("{prefix}:{path}")));
            }
            std::sync::Arc::new(process::ProcessRuntime::new(
                root,
                config.workloads.log_max_bytes,
                extra_env,
            )?)
        }
        RuntimeKind::Docker => std::sync::Arc::new(docker::DockerRuntime::new(
            root,
            config.workloads.log_max_bytes,
            config.docker.clone(),
        )?),
        // Workloads are pods of the k3s Hearth supervises, through the kubeconfig k3s
        // writes under the data dir.
        RuntimeKind::K3s => std::sync::Arc::new(self::kube::KubeRuntime::new(
            root,
            config.workloads.log_max_bytes,
            self::kube::KubeConfig {
                kubeconfig: Some(crate::k3s::kubeconfig_path(&config.data_dir)),
                ..config.kube.clone()
            },
            "k3s",
        )?),
        RuntimeKind::Kube => std::sync::Arc::new(self::kube::KubeRuntime::new(
            root,
            config.workloads.log_max_bytes,
            config.kube.clone(),
            "kube",
        )?),
    })
}
