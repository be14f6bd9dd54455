//! The Docker backend (`--runtime docker`): each workload is one container of the image
//! its spec names, made through the Engine API over the Unix socket (`bollard`).
//!
//! Docker holds the state: a container is named `hearth-<workload id>` and labelled
//! `hearth.*` (workload id, owner, deadline, grace), so a restarted daemon finds and
//! re-adopts every container by name or label and never starts one twice. What Hearth
//! keeps beside it, in `<data-dir>/workloads/<id>/` as the process backend does: the
//! log (`output.log` and its `output.times`, copied from `docker logs` as it is
//! written, so that every log reader works unchanged and the log outlives the
//! container), `stop` and `deadline` (why Hearth ended it) and `exit.json` (the end,
//! written before the finished container is removed).
//!
//! Containers see only what Hearth mounts (`Workload.mounts`, bind mounts), publish
//! `Workload.ports` on 127.0.0.1 only (the same port number inside and out; none with
//! `network = "host"`, where the workload binds the host's port itself), get CPU and
//! memory as `NanoCpus` and `Memory` and GPUs as a `DeviceRequest` naming the
//! allocated UUIDs (with the `nvidia` runtime when Docker has it).
//!
//! The socket may be missing or Docker down: `probe` records that, the scheduler admits
//! nothing meanwhile (each waiting workload says why), and watchers of running
//! containers retry until Docker answers again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bollard::errors::Error as DockerError;
use bollard::models::{
    ContainerCreateBody, ContainerInspectResponse, DeviceRequest, HostConfig, PortBinding,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, ListContainersOptionsBuilder,
    LogsOptionsBuilder, RemoveContainerOptionsBuilder, StopContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use bollard::Docker;
use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::log_times::{split_timestamp, LogWriter, TIMES, TIMES_ROTATED};
use super::shim::{write_atomic, LOG, LOG_ROTATED, STOP};
use super::workdir::{io_err, log_files, read_exit, write_exit};
use super::{
    Availability, Capabilities, ExitInfo, GpuMode, LogFiles, RunState, Runtime, RuntimeError, Workload,
};

/// `[docker]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DockerConfig {
    /// The Engine API socket: `unix:///var/run/docker.sock` (Docker's default).
    pub host: String,
    /// The network containers join: `bridge` (Docker's default; ports are published on
    /// 127.0.0.1), a user-defined network (likewise), `host` (the container shares the
    /// host's network: nothing to publish, and it reaches Hearth's loopback API) or
    /// `none`.
    pub network: String,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig {
            host: "unix:///var/run/docker.sock".into(),
            network: "bridge".into(),
        }
    }
}

/// Label keys on every container Hearth makes.
pub const LABEL_WORKLOAD: &str = "hearth.workload";
pub const LABEL_OWNER_KIND: &str = "hearth.owner-kind";
pub const LABEL_OWNER_NAMESPACE: &str = "hearth.owner-namespace";
pub const LABEL_OWNER_NAME: &str = "hearth.owner-name";
pub const LABEL_OWNER_UID: &str = "hearth.owner-uid";
const LABEL_DEADLINE: &str = "hearth.active-deadline-seconds";
const LABEL_GRACE: &str = "hearth.termination-grace-seconds";
/// Prefix of the workload's own labels (`job-name`, `task`, ...).
const LABEL_PREFIX: &str = "hearth.label.";

/// Written when Hearth stopped the container for its deadline.
const DEADLINE: &str = "deadline";
/// Written once the container's whole log is in `output.log`.
const LOGS_DONE: &str = "logs.done";
/// The reason a workload ends with when its image cannot be had (Kubernetes' word).
pub const IMAGE_PULL_BACK_OFF: &str = "ImagePullBackOff";

/// How long one Engine API call may take to answer (pulls and waits stream after).
const API_TIMEOUT_SECONDS: u64 = 60;
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `wait` gives the log copy to drain after the container ended.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// The container of a workload.
pub fn container_name(id: &str) -> String {
    format!("hearth-{id}")
}

pub struct DockerRuntime {
    root: PathBuf,
    log_max_bytes: u64,
    config: DockerConfig,
    /// Made on first use: bollard refuses a socket path that does not exist yet.
    client: tokio::sync::Mutex<Option<Docker>>,
    /// Whether Docker has the `nvidia` runtime (read at connection).
    nvidia: AtomicBool,
    /// Whether the containers of ended workloads left by an earlier daemon were looked
    /// for (once, at the first probe that reaches Docker).
    swept: AtomicBool,
    available: Mutex<Availability>,
    /// Log copies running in this daemon, by workload id; the receiver turns `true`
    /// once the whole log is copied.
    followers: Mutex<HashMap<String, watch::Receiver<bool>>>,
}

fn not_found(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 404, .. })
}

fn conflict(e: &DockerError) -> bool {
    matches!(e, DockerError::DockerResponseServerError { status_code: 409, .. })
}

/// A server's answer (4xx/5xx) is about the request; anything else means Docker could
/// not be reached.
fn unreachable(e: &DockerError) -> bool {
    !matches!(
        e,
        DockerError::DockerResponseServerError { .. }
            | DockerError::DockerStreamError { .. }
            | DockerError::DockerContainerWaitError { .. }
            | DockerError::JsonDataError { .. }
            | DockerError::JsonSerdeError { .. }
    )
}

/// Docker's zero time (`0001-01-01T00:00:00Z`) means "never".
fn docker_time(t: Option<&str>) -> Option<String> {
    t.filter(|t| !t.starts_with("0001-")).map(str::to_string)
}

fn parse_nanos(t: &str) -> Option<i64> {
    chrono::DateTime::parse_from_rfc3339(t)
        .ok()
        .and_then(|d| d.timestamp_nanos_opt())
}

/// What to create for a workload: pure, so that its shape is tested without Docker.
pub fn container_body(workload: &Workload, network: &str, nvidia_runtime: bool) -> ContainerCreateBody {
    let mut labels: HashMap<String, String> = [
        (LABEL_WORKLOAD, workload.id.clone()),
        (LABEL_OWNER_KIND, workload.owner.kind.clone()),
        (LABEL_OWNER_NAMESPACE, workload.owner.namespace.clone()),
        (LABEL_OWNER_NAME, workload.owner.name.clone()),
        (LABEL_OWNER_UID, workload.owner.uid.clone()),
        (LABEL_GRACE, workload.termination_grace_seconds.to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if let Some(deadline) = workload.active_deadline_seconds {
        labels.insert(LABEL_DEADLINE.into(), deadline.to_string());
    }
    for (k, v) in &workload.labels {
        labels.insert(format!("{LABEL_PREFIX}{k}"), v.clone());
    }
    let mut env: Vec<String> = workload.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    // A workload sees exactly the GPUs it was given: with Docker's `default-runtime:
    // nvidia`, an image's own `NVIDIA_VISIBLE_DEVICES=all` would otherwise hand it every
    // GPU on the node.
    let visible = workload.gpu_uuids.join(",");
    env.push(format!(
        "NVIDIA_VISIBLE_DEVICES={}",
        if visible.is_empty() { "void" } else { &visible }
    ));
    env.push(format!("HEARTH_WORKLOAD_ID={}", workload.id));
    env.push(format!("HEARTH_OWNER_UID={}", workload.owner.uid));
    let binds: Vec<String> = workload
        .mounts
        .iter()
        .map(|m| {
            format!(
                "{}:{}{}",
                m.source.display(),
                m.target.display(),
                if m.read_only { ":ro" } else { "" }
            )
        })
        .collect();
    let publish = !matches!(network, "host" | "none");
    let (exposed, bindings) = if publish && !workload.ports.is_empty() {
        let exposed: Vec<String> = workload.ports.iter().map(|p| format!("{p}/tcp")).collect();
        let bindings = workload
            .ports
            .iter()
            .map(|p| {
                (
                    format!("{p}/tcp"),
                    Some(vec![PortBinding {
                        host_ip: Some("127.0.0.1".into()),
                        host_port: Some(p.to_string()),
                    }]),
                )
            })
            .collect();
        (Some(exposed), Some(bindings))
    } else {
        (None, None)
    };
    let device_requests = (!workload.gpu_uuids.is_empty()).then(|| {
        vec![DeviceRequest {
            driver: Some("nvidia".into()),
            device_ids: Some(workload.gpu_uuids.clone()),
            capabilities: Some(vec![vec!["gpu".into()]]),
            ..Default::default()
        }]
    });
    let user = workload.security_context.as_ref().and_then(|sc| {
        sc.run_as_user.map(|uid| match sc.run_as_group {
            Some(gid) => format!("{uid}:{gid}"),
            None => uid.to_string(),
        })
    });
    let group_add = workload
        .security_context
        .as_ref()
        .and_then(|sc| sc.fs_group)
        .map(|g| vec![g.to_string()]);
    let resources = workload.resources;
    ContainerCreateBody {
        image: workload.image.clone(),
        // As Kubernetes does: `command` replaces the image's entrypoint (and drops its
        // CMD); no command keeps both.
        entrypoint: workload.command.first().map(|c| vec![c.clone()]),
        cmd: (!workload.command.is_empty()).then(|| workload.command[1..].to_vec()),
        env: Some(env),
        working_dir: workload.working_dir.as_ref().map(|d| d.display().to_string()),
        labels: Some(labels),
        user,
        exposed_ports: exposed,
        stop_timeout: i64::try_from(workload.termination_grace_seconds).ok(),
        host_config: Some(HostConfig {
            binds: (!binds.is_empty()).then_some(binds),
            network_mode: Some(network.to_string()),
            port_bindings: bindings,
            nano_cpus: (resources.cpu_millis > 0)
                .then(|| i64::try_from(resources.cpu_millis.saturating_mul(1_000_000)).unwrap_or(i64::MAX)),
            memory: (resources.memory_bytes > 0)
                .then(|| i64::try_from(resources.memory_bytes).unwrap_or(i64::MAX)),
            device_requests,
            runtime: (nvidia_runtime && !workload.gpu_uuids.is_empty()).then(|| "nvidia".to_string()),
            group_add,
            // Reaps what the command leaves and forwards SIGTERM to it, as the shim
            // does for process workloads.
            init: Some(true),
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// How a container ended, from its inspected state and Hearth's own records.
fn exit_from(dir: &Path, inspect: &ContainerInspectResponse) -> ExitInfo {
    let state = inspect.state.clone().unwrap_or_default();
    let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
    let started_at = docker_time(state.started_at.as_deref());
    let finished_at = docker_time(state.finished_at.as_deref()).unwrap_or_else(crate::store::now_rfc3339);
    let error = state.error.unwrap_or_default();
    let (reason, message) = if dir.join(DEADLINE).exists() {
        let seconds = inspect
            .config
            .as_ref()
            .and_then(|c| c.labels.as_ref())
            .and_then(|l| l.get(LABEL_DEADLINE).cloned())
            .unwrap_or_default();
        (
            "DeadlineExceeded".to_string(),
            format!("ran longer than activeDeadlineSeconds ({seconds}s)"),
        )
    } else if dir.join(STOP).exists() {
        ("Stopped".to_string(), "stopped on request".to_string())
    } else if state.oom_killed == Some(true) {
        (
            "OOMKilled".to_string(),
            format!(
                "killed for exceeding its memory limit (exit code {})",
                code.unwrap_or(137)
            ),
        )
    } else if !error.is_empty() {
        ("StartError".to_string(), error)
    } else {
        match code {
            Some(0) => ("Completed".to_string(), String::new()),
            Some(c) => ("Error".to_string(), format!("exited with code {c}")),
            None => ("Error".to_string(), "ended without a status".to_string()),
        }
    };
    ExitInfo {
        exit_code: code,
        signal: None,
        reason,
        message,
        started_at,
        finished_at,
    }
}

fn is_running(inspect: &ContainerInspectResponse) -> bool {
    use bollard::models::ContainerStateStatusEnum as S;
    matches!(
        inspect.state.as_ref().and_then(|s| s.status),
        Some(S::RUNNING | S::PAUSED | S::RESTARTING | S::REMOVING)
    )
}

fn is_created(inspect: &ContainerInspectResponse) -> bool {
    use bollard::models::ContainerStateStatusEnum as S;
    matches!(inspect.state.as_ref().and_then(|s| s.status), Some(S::CREATED))
}

fn started_at(inspect: &ContainerInspectResponse) -> String {
    docker_time(inspect.state.as_ref().and_then(|s| s.started_at.as_deref()))
        .unwrap_or_else(crate::store::now_rfc3339)
}

fn label_u64(inspect: &ContainerInspectResponse, key: &str) -> Option<u64> {
    inspect
        .config
        .as_ref()
        .and_then(|c| c.labels.as_ref())
        .and_then(|l| l.get(key))
        .and_then(|v| v.parse().ok())
}

impl DockerRuntime {
    pub fn new(
        root: PathBuf,
        log_max_bytes: u64,
        config: DockerConfig,
    ) -> Result<DockerRuntime, RuntimeError> {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        Ok(DockerRuntime {
            root,
            log_max_bytes,
            client: tokio::sync::Mutex::new(None),
            nvidia: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            available: Mutex::new(Err(format!("Docker at {} has not been asked yet", config.host))),
            followers: Mutex::new(HashMap::new()),
            config,
        })
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn unavailable(&self, reason: String) -> RuntimeError {
        *self.available.lock().unwrap_or_else(PoisonError::into_inner) = Err(reason.clone());
        RuntimeError::Unavailable {
            runtime: "docker",
            reason,
        }
    }

    fn api_error(&self, id: &str, what: &str, e: DockerError) -> RuntimeError {
        if unreachable(&e) {
            self.unavailable(format!("Docker at {} does not answer: {e}", self.config.host))
        } else {
            RuntimeError::Start {
                id: id.to_string(),
                message: format!("{what}: {e}"),
            }
        }
    }

    /// The client, connected (and its API version agreed) on first use.
    async fn client(&self) -> Result<Docker, RuntimeError> {
        let mut slot = self.client.lock().await;
        if let Some(docker) = slot.as_ref() {
            return Ok(docker.clone());
        }
        let path = self.config.host.trim_start_matches("unix://");
        if !Path::new(path).exists() {
            return Err(self.unavailable(format!(
                "the Docker socket {path} does not exist (is dockerd running? see [docker] host)"
            )));
        }
        let docker = Docker::connect_with_unix(
            &self.config.host,
            API_TIMEOUT_SECONDS,
            bollard::API_DEFAULT_VERSION,
        )
        .map_err(|e| self.unavailable(format!("cannot use the Docker socket {path}: {e}")))?;
        let docker = match tokio::time::timeout(PROBE_TIMEOUT, docker.negotiate_version()).await {
            Ok(Ok(docker)) => docker,
            Ok(Err(e)) => return Err(self.unavailable(format!("Docker at {path} does not answer: {e}"))),
            Err(_) => {
                return Err(self.unavailable(format!(
                    "Docker at {path} did not answer within {} s",
                    PROBE_TIMEOUT.as_secs()
                )))
            }
        };
        if let Ok(info) = docker.info().await {
            let nvidia = info.runtimes.is_some_and(|r| r.contains_key("nvidia"));
            self.nvidia.store(nvidia, Ordering::Relaxed);
        }
        *slot = Some(docker.clone());
        Ok(docker)
    }

    async fn inspect(
        &self,
        docker: &Docker,
        id: &str,
    ) -> Result<Option<ContainerInspectResponse>, RuntimeError> {
        match docker.inspect_container(&container_name(id), None).await {
            Ok(c) => Ok(Some(c)),
            Err(e) if not_found(&e) => Ok(None),
            Err(e) => Err(self.api_error(id, "inspecting its container", e)),
        }
    }

    /// Pulls the image when Docker does not have it. `Err(message)`: it cannot be had.
    async fn ensure_image(
        &self,
        docker: &Docker,
        id: &str,
        image: &str,
    ) -> Result<Result<(), String>, RuntimeError> {
        match docker.inspect_image(image).await {
            Ok(_) => return Ok(Ok(())),
            Err(e) if not_found(&e) => {}
            Err(e) => return Err(self.api_error(id, "inspecting its image", e)),
        }
        tracing::info!(workload = %id, image, "pulling an image");
        let options = CreateImageOptionsBuilder::default().from_image(image).build();
        let mut pull = docker.create_image(Some(options), None, None);
        while let Some(step) = pull.next().await {
            if let Err(e) = step {
                if unreachable(&e) {
                    return Err(self.api_error(id, "pulling its image", e));
                }
                return Ok(Err(format!("Back-off pulling image \"{image}\": {e}")));
            }
        }
        // A pull can end without an error and without the image (a registry that
        // answers with nothing): look again.
        match docker.inspect_image(image).await {
            Ok(_) => Ok(Ok(())),
            Err(e) if not_found(&e) => Ok(Err(format!(
                "Back-off pulling image \"{image}\": the pull ended without the image"
            ))),
            Err(e) => Err(self.api_error(id, "inspecting its image", e)),
        }
    }

    /// Ends a workload that never ran (`reason`, `message`) and records it.
    fn ended_before_start(
        &self,
        dir: &Path,
        reason: &str,
        message: String,
    ) -> Result<RunState, RuntimeError> {
        let exit = ExitInfo {
            exit_code: None,
            signal: None,
            reason: reason.into(),
            message,
            started_at: None,
            finished_at: crate::store::now_rfc3339(),
        };
        write_exit(dir, &exit)?;
        Ok(RunState::Exited(exit))
    }

    /// Starts copying the container's log into `output.log`, unless a copy runs already.
    /// A new copy starts from the container's first byte (Docker keeps the whole log
    /// until the container is removed), so one begun after a restart loses nothing.
    fn follow(&self, docker: &Docker, id: &str) -> watch::Receiver<bool> {
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = followers.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        followers.insert(id.to_string(), rx.clone());
        drop(followers);
        let (docker, dir, name, max) = (
            docker.clone(),
            self.dir(id),
            container_name(id),
            self.log_max_bytes,
        );
        let id = id.to_string();
        tokio::spawn(async move {
            let (chunks, mut rx_chunks) = tokio::sync::mpsc::channel::<bytes::Bytes>(256);
            let writer_dir = dir.clone();
            // File writes on the blocking pool, in order.
            let writer = tokio::task::spawn_blocking(move || -> std::io::Result<()> {
                for f in [LOG, LOG_ROTATED, TIMES, TIMES_ROTATED, LOGS_DONE] {
                    match std::fs::remove_file(writer_dir.join(f)) {
                        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                        _ => {}
                    }
                }
                let mut log = LogWriter::open(&writer_dir, max)?;
                while let Some(chunk) = rx_chunks.blocking_recv() {
                    let (at, bytes) = split_timestamp(&chunk);
                    log.write(bytes, at.unwrap_or_else(super::log_times::now_nanos))?;
                }
                Ok(())
            });
            let options = LogsOptionsBuilder::default()
                .follow(true)
                .stdout(true)
                .stderr(true)
                .timestamps(true)
                .build();
            let mut stream = docker.logs(&name, Some(options));
            let mut complete = true;
            while let Some(item) = stream.next().await {
                match item {
                    Ok(output) => {
                        if chunks.send(output.into_bytes()).await.is_err() {
                            complete = false;
                            break;
                        }
                    }
                    Err(e) => {
                        tracing::warn!(workload = %id, error = %e, "copying a container's log");
                        complete = false;
                        break;
                    }
                }
            }
            drop(chunks);
            let written = matches!(writer.await, Ok(Ok(())));
            if complete && written {
                let _ = tokio::task::spawn_blocking(move || write_atomic(&dir.join(LOGS_DONE), b"")).await;
            }
            // Done, whole or not: a later `follow` may start over.
            let _ = tx.send(true);
        });
        rx
    }

    /// Waits until the container's log is in `output.log` (after it ended).
    async fn drain_logs(&self, docker: &Docker, id: &str) {
        if self.dir(id).join(LOGS_DONE).exists() {
            return;
        }
        let mut rx = self.follow(docker, id);
        let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, rx.wait_for(|done| *done)).await;
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        followers.remove(id);
    }

    async fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let docker = self.client().await?;
        match self.inspect(&docker, id).await? {
            None => Err(RuntimeError::NotFound(id.to_string())),
            Some(c) if is_running(&c) || is_created(&c) => Ok(RunState::Running {
                started_at: started_at(&c),
            }),
            Some(c) => Ok(RunState::Exited(exit_from(&dir, &c))),
        }
    }

    /// Removes the containers whose end is recorded (`exit.json`) but which were not
    /// removed: their daemon died, or Docker was away, between the two.
    async fn sweep(&self) {
        let ids = match self.list(None).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "looking for containers of ended workloads");
                return;
            }
        };
        for id in ids {
            if read_exit(&self.dir(&id)).is_some() {
                if let Err(e) = self.forget(&id).await {
                    tracing::warn!(workload = %id, error = %e, "removing the container of an ended workload");
                }
            }
        }
    }

    /// Stops the container: SIGTERM, SIGKILL after the grace period (Docker's stop).
    /// Runs in the background: the caller only asks.
    fn stop_container(&self, docker: &Docker, id: &str, grace: u64) {
        let (docker, name, id) = (docker.clone(), container_name(id), id.to_string());
        tokio::spawn(async move {
            let options = StopContainerOptionsBuilder::default()
                .t(i32::try_from(grace).unwrap_or(i32::MAX))
                .build();
            match docker.stop_container(&name, Some(options)).await {
                Ok(()) => {}
                Err(e) if not_found(&e) => {}
                Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => {}
                Err(e) => tracing::warn!(workload = %id, error = %e, "stopping a container"),
            }
        });
    }
}

#[async_trait::async_trait]
impl Runtime for DockerRuntime {
    fn name(&self) -> &'static str {
        "docker"
    }

    /// Idempotent: a container that exists (from before a crash or restart) is adopted,
    /// never made twice; one stopped before it started never starts.
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError> {
        let id = workload.id.as_str();
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let docker = self.client().await?;
        let existing = self.inspect(&docker, id).await?;
        let created = match existing {
            Some(c) if is_running(&c) => {
                self.follow(&docker, id);
                return Ok(RunState::Running {
                    started_at: started_at(&c),
                });
            }
            Some(c) if !is_created(&c) => return Ok(RunState::Exited(exit_from(&dir, &c))),
            Some(_) => true,
            None => false,
        };
        if dir.join(STOP).exists() {
            if created {
                let _ = docker
                    .remove_container(
                        &container_name(id),
                        Some(RemoveContainerOptionsBuilder::default().force(true).build()),
                    )
                    .await;
            }
            return self.ended_before_start(&dir, "Stopped", "stopped before it started".into());
        }
        if !created {
            let Some(image) = workload.image.as_deref().filter(|i| !i.is_empty()) else {
                return self.ended_before_start(
                    &dir,
                    "StartError",
                    "the docker runtime runs each workload in its image, and this one names none (set the container's image)".into(),
                );
            };
            if let Err(message) = self.ensure_image(&docker, id, image).await? {
                return self.ended_before_start(&dir, IMAGE_PULL_BACK_OFF, message);
            }
            let mut body = container_body(
                workload,
                &self.config.network,
                self.nvidia.load(Ordering::Relaxed),
            );
            // Isolated mode: the container runs as its namespace's user, as a process
            // workload does (the directories it is given are that user's).
            if super::identity::global().isolated() {
                let (namespace, sc) = (
                    workload.owner.namespace.clone(),
                    workload.security_context.clone(),
                );
                let run_as = tokio::task::spawn_blocking(move || {
                    super::identity::global().for_workload(&namespace, sc.as_ref())
                })
                .await
                .map_err(|e| RuntimeError::Start {
                    id: id.to_string(),
                    message: e.to_string(),
                })?;
                match run_as {
                    Ok(run_as) => {
                        body.user = Some(format!("{}:{}", run_as.uid, run_as.gid));
                        if let Some(host) = body.host_config.as_mut() {
                            host.group_add = Some(run_as.groups.iter().map(u32::to_string).collect());
                        }
                    }
                    Err(e) => return self.ended_before_start(&dir, "StartError", e.to_string()),
                }
            }
            let options = CreateContainerOptionsBuilder::default()
                .name(&container_name(id))
                .build();
            match docker.create_container(Some(options), body).await {
                Ok(_) => {}
                // Made meanwhile by another start of the same workload: adopt it.
                Err(e) if conflict(&e) => return Box::pin(self.start(workload)).await,
                Err(e) if unreachable(&e) => return Err(self.api_error(id, "creating its container", e)),
                Err(e) => {
                    return self.ended_before_start(
                        &dir,
                        "StartError",
                        format!("Docker refused the container: {e}"),
                    )
                }
            }
            // Stopped while it was being made.
            if dir.join(STOP).exists() {
                return Box::pin(self.start(workload)).await;
            }
        }
        match docker.start_container(&container_name(id), None).await {
            Ok(()) => {}
            Err(DockerError::DockerResponseServerError { status_code: 304, .. }) => {}
            Err(e) if unreachable(&e) => return Err(self.api_error(id, "starting its container", e)),
            Err(e) => {
                // The container exists but its command cannot run (no such executable,
                // a bad working directory): keep its state as the exit.
                let exit = match self.inspect(&docker, id).await? {
                    Some(c) => {
                        let mut exit = exit_from(&dir, &c);
                        exit.reason = "StartError".into();
                        exit.message = format!("Docker could not start the container: {e}");
                        exit
                    }
                    None => ExitInfo {
                        exit_code: None,
                        signal: None,
                        reason: "StartError".into(),
                        message: format!("Docker could not start the container: {e}"),
                        started_at: None,
                        finished_at: crate::store::now_rfc3339(),
                    },
                };
                write_exit(&dir, &exit)?;
                return Ok(RunState::Exited(exit));
            }
        }
        self.follow(&docker, id);
        match self.inspect(&docker, id).await? {
            Some(c) if is_running(&c) || is_created(&c) => Ok(RunState::Running {
                started_at: started_at(&c),
            }),
            // Already ended (a command that exits at once): the watcher records it.
            Some(c) => Ok(RunState::Running {
                started_at: docker_time(c.state.as_ref().and_then(|s| s.started_at.as_deref()))
                    .unwrap_or_else(crate::store::now_rfc3339),
            }),
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    async fn status(&self, id: &str) -> Result<RunState, RuntimeError> {
        self.observe(id).await
    }

    /// Waits for the container to end, stopping it at its `activeDeadlineSeconds`
    /// (from its labels, so a restarted daemon enforces it too), then for its log.
    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        loop {
            if let Some(exit) = read_exit(&dir) {
                return Ok(exit);
            }
            let docker = self.client().await?;
            let Some(container) = self.inspect(&docker, id).await? else {
                return Err(RuntimeError::NotFound(id.to_string()));
            };
            if !is_running(&container) && !is_created(&container) {
                self.drain_logs(&docker, id).await;
                let exit = exit_from(&dir, &container);
                write_exit(&dir, &exit)?;
                return Ok(exit);
            }
            self.follow(&docker, id);
            let deadline = label_u64(&container, LABEL_DEADLINE).map(|seconds| {
                let started =
                    parse_nanos(&started_at(&container)).unwrap_or_else(super::log_times::now_nanos);
                let left = started.saturating_add(
                    i64::try_from(seconds)
                        .unwrap_or(i64::MAX)
                        .saturating_mul(1_000_000_000),
                ) - super::log_times::now_nanos();
                Duration::from_nanos(u64::try_from(left).unwrap_or(0))
            });
            let options = WaitContainerOptionsBuilder::default()
                .condition("not-running")
                .build();
            let name = container_name(id);
            let mut ended = docker.wait_container(&name, Some(options));
            let until_deadline = async {
                match deadline {
                    Some(d) => tokio::time::sleep(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                outcome = ended.next() => match outcome {
                    // An exit code other than 0 comes as an error: the end all the same.
                    Some(Ok(_)) | Some(Err(DockerError::DockerContainerWaitError { .. })) | None => {}
                    Some(Err(e)) if not_found(&e) => {}
                    Some(Err(e)) => return Err(self.api_error(id, "waiting for its container", e)),
                },
                () = until_deadline => {
                    let marker = dir.join(DEADLINE);
                    if !marker.exists() && !dir.join(STOP).exists() {
                        write_atomic(&marker, crate::store::now_rfc3339().as_bytes()).map_err(io_err(&dir))?;
                        let grace = label_u64(&container, LABEL_GRACE).unwrap_or(10);
                        self.stop_container(&docker, id, grace);
                    }
                    // Wait for the stop to take.
                    let _ = ended.next().await;
                }
            }
        }
    }

    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        let (dir, owned) = (self.dir(id), id.to_string());
        tokio::task::spawn_blocking(move || log_files(&dir, &owned))
            .await
            .map_err(|e| RuntimeError::Io {
                path: self.dir(id),
                source: std::io::Error::other(e),
            })?
    }

    /// Recorded first (`<dir>/stop`), so that a container still being made never
    /// starts; a running one gets Docker's stop (SIGTERM, SIGKILL after its grace).
    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        let stop = dir.join(STOP);
        if !stop.exists() && !dir.join(DEADLINE).exists() {
            write_atomic(&stop, crate::store::now_rfc3339().as_bytes()).map_err(io_err(&dir))?;
        }
        if read_exit(&dir).is_some() {
            return Ok(());
        }
        let docker = self.client().await?;
        if let Some(c) = self.inspect(&docker, id).await? {
            if is_running(&c) || is_created(&c) {
                let grace = label_u64(&c, LABEL_GRACE).unwrap_or(10);
                self.stop_container(&docker, id, grace);
            }
        }
        Ok(())
    }

    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
        let docker = self.client().await?;
        let label = match owner_uid {
            Some(uid) => format!("{LABEL_OWNER_UID}={uid}"),
            None => LABEL_WORKLOAD.to_string(),
        };
        let filters: HashMap<&str, Vec<&str>> = [("label", vec![label.as_str()])].into();
        let options = ListContainersOptionsBuilder::default()
            .all(true)
            .filters(&filters)
            .build();
        let containers = docker
            .list_containers(Some(options))
            .await
            .map_err(|e| self.api_error("", "listing containers", e))?;
        let mut ids: Vec<String> = containers
            .into_iter()
            .filter_map(|c| c.labels.and_then(|mut l| l.remove(LABEL_WORKLOAD)))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Once the end is recorded: the log is copied whole, the end kept in `exit.json`,
    /// then the container removed.
    async fn forget(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        let docker = self.client().await?;
        let Some(container) = self.inspect(&docker, id).await? else {
            return Ok(());
        };
        if is_running(&container) {
            return Err(RuntimeError::StillRunning(id.to_string()));
        }
        self.drain_logs(&docker, id).await;
        if read_exit(&dir).is_none() {
            write_exit(&dir, &exit_from(&dir, &container))?;
        }
        let options = RemoveContainerOptionsBuilder::default().force(true).build();
        match docker.remove_container(&container_name(id), Some(options)).await {
            Ok(()) => Ok(()),
            Err(e) if not_found(&e) => Ok(()),
            Err(e) => Err(self.api_error(id, "removing its container", e)),
        }
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.observe(id).await {
            Ok(RunState::Running { .. }) => return Err(RuntimeError::StillRunning(id.to_string())),
            Ok(RunState::Exited(_)) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.forget(id).await?;
        {
            let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
            followers.remove(id);
        }
        let dir = self.dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }

    fn limits_note(&self) -> String {
        format!(
            "Docker at {} (network {}): CPU as NanoCpus and memory as Memory per container; GPUs as DeviceRequests{}",
            self.config.host,
            self.config.network,
            if self.nvidia.load(Ordering::Relaxed) {
                " with the nvidia runtime"
            } else {
                ""
            }
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_images: true,
            needs_command: false,
            mounts: true,
            gpu_mode: GpuMode::DeviceRequests,
            own_network: !matches!(self.config.network.as_str(), "host" | "none"),
            local_admission: true,
        }
    }

    fn availability(&self) -> Availability {
        self.available
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    async fn probe(&self) -> Availability {
        let outcome = match self.client().await {
            Ok(docker) => match tokio::time::timeout(PROBE_TIMEOUT, docker.ping()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("Docker at {} does not answer: {e}", self.config.host)),
                Err(_) => Err(format!(
                    "Docker at {} did not answer within {} s",
                    self.config.host,
                    PROBE_TIMEOUT.as_secs()
                )),
            },
            Err(RuntimeError::Unavailable { reason, .. }) => Err(reason),
            Err(e) => Err(e.to_string()),
        };
        *self.available.lock().unwrap_or_else(PoisonError::into_inner) = outcome.clone();
        if outcome.is_ok() && !self.swept.swap(true, Ordering::Relaxed) {
            self.sweep().await;
        }
        outcome
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::{Mount, Owner, ResourceRequest};

    fn workload() -> Workload {
        Workload {
            id: "Job-u1-0".into(),
            owner: Owner {
                kind: "Job".into(),
                namespace: "team".into(),
                name: "train".into(),
                uid: "u1".into(),
            },
            image: Some("busybox:1".into()),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "1".into())],
            mounts: vec![Mount {
                source: "/data/x".into(),
                target: "/mnt/x".into(),
                read_only: true,
            }],
            ports: vec![8080],
            resources: ResourceRequest {
                cpu_millis: 500,
                memory_bytes: 64 << 20,
                gpus: 1,
            },
            gpu_uuids: vec!["GPU-aaa".into()],
            active_deadline_seconds: Some(30),
            termination_grace_seconds: 5,
            ..Default::default()
        }
    }

    #[test]
    fn body_carries_command_limits_gpus_ports_and_labels() {
        let body = container_body(&workload(), "bridge", true);
        assert_eq!(body.entrypoint, Some(vec!["sh".to_string()]));
        assert_eq!(body.cmd, Some(vec!["-c".to_string(), "echo hi".to_string()]));
        let env = body.env.unwrap();
        assert!(env.contains(&"A=1".to_string()));
        assert!(env.contains(&"NVIDIA_VISIBLE_DEVICES=GPU-aaa".to_string()));
        let labels = body.labels.unwrap();
        assert_eq!(labels[LABEL_WORKLOAD], "Job-u1-0");
        assert_eq!(labels[LABEL_OWNER_UID], "u1");
        assert_eq!(labels[LABEL_DEADLINE], "30");
        let host = body.host_config.unwrap();
        assert_eq!(host.nano_cpus, Some(500_000_000));
        assert_eq!(host.memory, Some(64 << 20));
        assert_eq!(host.binds, Some(vec!["/data/x:/mnt/x:ro".to_string()]));
        assert_eq!(host.runtime.as_deref(), Some("nvidia"));
        let requests = host.device_requests.unwrap();
        assert_eq!(requests[0].device_ids, Some(vec!["GPU-aaa".to_string()]));
        assert_eq!(requests[0].capabilities, Some(vec![vec!["gpu".to_string()]]));
        let bindings = host.port_bindings.unwrap();
        let binding = &bindings["8080/tcp"].as_ref().unwrap()[0];
        assert_eq!(binding.host_ip.as_deref(), Some("127.0.0.1"));
        assert_eq!(binding.host_port.as_deref(), Some("8080"));
    }

    #[test]
    fn host_network_publishes_nothing_and_no_gpu_hides_all() {
        let mut w = workload();
        w.gpu_uuids.clear();
        let body = container_body(&w, "host", true);
        let host = body.host_config.unwrap();
        assert!(host.port_bindings.is_none());
        assert!(host.device_requests.is_none());
        assert!(host.runtime.is_none());
        assert!(body
            .env
            .unwrap()
            .contains(&"NVIDIA_VISIBLE_DEVICES=void".to_string()));
    }
}
