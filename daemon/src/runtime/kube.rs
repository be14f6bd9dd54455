//! The Kubernetes backend (`--runtime k3s`, where Hearth supervises k3s, and `runtime =
//! "kube"` for a cluster it does not run): each workload is one Pod, made, watched,
//! logged and deleted through the API server (kube-rs, k8s-openapi's 1.33 types).
//!
//! The cluster holds the state: a pod is named `pod_name(id)` (the workload id made a
//! DNS label, with a hash of the id so that two ids never share a name), in the
//! `[kube] namespace` (`hearth`, made at first connection), labelled
//! `app.kubernetes.io/managed-by=hearth` and `hearth.dev/owner-uid`, and annotated
//! with the whole workload id, its owner and its own labels (label values are limited
//! to 63 characters; annotations are not). A restarted daemon finds each pod by name
//! (`start`, `status`, `wait`) or by label (`list`, the sweep) and adopts it: it is
//! never made twice. What Hearth keeps beside it, in `<data-dir>/workloads/<id>/` as
//! the other backends do: the log (`output.log` and `output.times`, copied from the
//! pod's log with `follow=true&timestamps=true` as it is written, so that every log
//! reader works unchanged and the log outlives the pod), `stop` (why Hearth ended it)
//! and `exit.json` (the end, written before the ended pod is deleted).
//!
//! Mapping (`pod_manifest`): `restartPolicy: Never` for every workload: a job attempt,
//! a pipeline step and a trial run once; a model replica or a notebook that ends is
//! replaced or restarted by its controller (serving's replacement, the notebook
//! backoff), as with the other backends, so the end must be seen, not hidden by the
//! kubelet's restarts. `activeDeadlineSeconds` and `terminationGracePeriodSeconds` are
//! the pod's own. CPU and memory are the container's requests and limits (equal);
//! GPUs are `nvidia.com/gpu` limits with `runtimeClassName: nvidia` and the
//! `nvidia.com/gpu=present:NoSchedule` toleration (`crate::k3s::gpu_rules`), and the
//! device plugin picks the devices (`GpuMode::Delegated`: the UUIDs Hearth's ledger
//! chose are not passed). A pod without GPUs gets `NVIDIA_VISIBLE_DEVICES=void`: with
//! containerd's default runtime `nvidia` (k3s mode) an image's own `=all` would
//! otherwise hand it every GPU. `Workload.mounts` are `hostPath` volumes, and a pod
//! with any is pinned (`nodeSelector` `kubernetes.io/hostname`) to Hearth's own node,
//! the only one where those paths exist. No service-account token and no service
//! environment variables are given to workloads.
//!
//! Ports: callers reach `Workload.ports` at `127.0.0.1:<port>` (the runtime contract).
//! The pod listens on its own IP (`own_network`), and the backend keeps a loopback
//! listener per port that relays each connection to `<pod IP>:<port>`, as Docker's
//! `docker-proxy` does for published ports. So neither `hostNetwork` (a port clash
//! with the host, and pods tied to one node) nor a Service (a cluster IP only
//! kube-proxy's rules reach, and one more object to keep) is needed; the pod IP is
//! reachable from the server node on any node of the cluster (the CNI's routes).
//!
//! When the API server cannot be reached (k3s still starting, the cluster away), or
//! its kubeconfig is not written yet, calls return `RuntimeError::Unavailable`,
//! `probe` records it (`/readyz`), and the scheduler admits nothing meanwhile, exactly
//! as with Docker.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use ::kube::api::{Api, DeleteParams, ListParams, LogParams, PostParams, WatchEvent, WatchParams};
use ::kube::Client;
use futures_util::{AsyncBufReadExt, StreamExt};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvVar, HostPathVolumeSource, Namespace, Pod, PodSecurityContext, PodSpec,
    ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::sync::watch;

use super::docker::IMAGE_PULL_BACK_OFF;
use super::log_times::{split_timestamp, LogWriter, TIMES, TIMES_ROTATED};
use super::shim::{write_atomic, EXIT, LOG, LOG_ROTATED, STOP};
use super::{
    Availability, Capabilities, ExitInfo, GpuMode, LogFiles, RunState, Runtime, RuntimeError, Workload,
};

/// `[kube]` in the config.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KubeConfig {
    /// The cluster's kubeconfig (`runtime = "kube"`: required; k3s mode uses the one
    /// k3s writes, `<data-dir>/k3s/kubeconfig.yaml`). Its current context is used.
    pub kubeconfig: Option<PathBuf>,
    /// The namespace Hearth's pods live in, made at first connection if missing.
    pub namespace: String,
    /// The node that holds Hearth's data dir: pods with mounts are pinned to it. `None`:
    /// this host's name (k3s's node name by default).
    pub node_name: Option<String>,
}

impl Default for KubeConfig {
    fn default() -> Self {
        KubeConfig {
            kubeconfig: None,
            namespace: "hearth".into(),
            node_name: None,
        }
    }
}

/// Label keys and values on every pod Hearth makes.
pub const LABEL_MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hearth");
pub const LABEL_OWNER_UID: &str = "hearth.dev/owner-uid";
/// Annotations: the whole workload id and owner (label values stop at 63 characters).
pub const ANNOTATION_WORKLOAD: &str = "hearth.dev/workload";
pub const ANNOTATION_OWNER_KIND: &str = "hearth.dev/owner-kind";
pub const ANNOTATION_OWNER_NAMESPACE: &str = "hearth.dev/owner-namespace";
pub const ANNOTATION_OWNER_NAME: &str = "hearth.dev/owner-name";
pub const ANNOTATION_OWNER_UID: &str = "hearth.dev/owner-uid";
/// The workload's own labels (`job-name`, `task`, ...), as a JSON object.
pub const ANNOTATION_LABELS: &str = "hearth.dev/labels";
/// The loopback ports relayed to the pod, comma-separated (read back on adoption).
pub const ANNOTATION_PORTS: &str = "hearth.dev/ports";
/// The one container of a workload's pod.
pub const CONTAINER: &str = "workload";
/// `runtimeClassName` of GPU pods: the RuntimeClass k3s mode applies.
pub const RUNTIME_CLASS: &str = "nvidia";
/// The node label the scheduler pins pods with mounts by.
const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Written once the pod's whole log is in `output.log`.
const LOGS_DONE: &str = "logs.done";
const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `wait` gives the log copy to drain after the pod ended.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// A watch is re-opened (after a fresh GET) this often, as client-go's reflector does.
const WATCH_TIMEOUT_SECONDS: u32 = 290;
/// How often the log copy asks again while the container has not started.
const LOG_RETRY: Duration = Duration::from_secs(1);
/// Waiting reasons after which the container will not start without a change to the
/// pod: the workload ends with them, as Docker's does at a failed pull.
const PULL_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
const START_FAILURES: &[&str] = &[
    "CreateContainerConfigError",
    "CreateContainerError",
    "RunContainerError",
];

/// Whether `name` is a Kubernetes namespace name (an RFC 1123 label).
pub fn valid_namespace(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-')
}

/// The pod of a workload: `hearth-<id lowercased, other characters as '-', at most 40>-<8
/// hex of the id's SHA-256>`, a valid DNS label (63 at most) that is stable for the id.
pub fn pod_name(id: &str) -> String {
    let mut clean = String::with_capacity(id.len());
    for c in id.chars() {
        let c = c.to_ascii_lowercase();
        let c = if c.is_ascii_lowercase() || c.is_ascii_digit() {
            c
        } else {
            '-'
        };
        if !(c == '-' && clean.ends_with('-')) {
            clean.push(c);
        }
        if clean.len() >= 40 {
            break;
        }
    }
    let clean = clean.trim_matches('-');
    let hash = hex::encode(&Sha256::digest(id.as_bytes())[..4]);
    if clean.is_empty() {
        format!("hearth-{hash}")
    } else {
        format!("hearth-{clean}-{hash}")
    }
}

/// A label value for an owner uid: the characters a label value allows, at most 63,
/// starting and ending with a letter or digit (a uuid is kept as it is).
fn label_value(v: &str) -> String {
    let kept: String = v
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        .take(63)
        .collect();
    kept.trim_matches(|c: char| !c.is_ascii_alphanumeric())
        .to_string()
}

/// Who the pod runs as: the spec's `securityContext`, or in isolated mode the
/// namespace's user (`identity::Identities::for_workload`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodUser {
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub fs_group: Option<u32>,
    pub groups: Vec<u32>,
    pub run_as_non_root: Option<bool>,
}

impl PodUser {
    pub fn from_spec(workload: &Workload) -> PodUser {
        workload
            .security_context
            .as_ref()
            .map(|sc| PodUser {
                uid: sc.run_as_user,
                gid: sc.run_as_group,
                fs_group: sc.fs_group,
                groups: Vec::new(),
                run_as_non_root: sc.run_as_non_root,
            })
            .unwrap_or_default()
    }
}

fn quantity(v: impl ToString) -> Quantity {
    Quantity(v.to_string())
}

/// The Pod for a workload: pure, so that its shape is tested (and checked with
/// `kubernetes-validate`) without a cluster. `node`: where pods with mounts must run.
pub fn pod_manifest(workload: &Workload, namespace: &str, node: Option<&str>, user: &PodUser) -> Pod {
    let labels: BTreeMap<String, String> = [
        (LABEL_MANAGED_BY.0.to_string(), LABEL_MANAGED_BY.1.to_string()),
        (LABEL_OWNER_UID.to_string(), label_value(&workload.owner.uid)),
    ]
    .into();
    let mut annotations: BTreeMap<String, String> = [
        (ANNOTATION_WORKLOAD, workload.id.clone()),
        (ANNOTATION_OWNER_KIND, workload.owner.kind.clone()),
        (ANNOTATION_OWNER_NAMESPACE, workload.owner.namespace.clone()),
        (ANNOTATION_OWNER_NAME, workload.owner.name.clone()),
        (ANNOTATION_OWNER_UID, workload.owner.uid.clone()),
        (
            ANNOTATION_LABELS,
            serde_json::to_string(&workload.labels).unwrap_or_else(|_| "{}".into()),
        ),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    if !workload.ports.is_empty() {
        let ports: Vec<String> = workload.ports.iter().map(u16::to_string).collect();
        annotations.insert(ANNOTATION_PORTS.into(), ports.join(","));
    }
    let gpus = workload.resources.gpus;
    let mut env: Vec<EnvVar> = workload
        .env
        .iter()
        .map(|(k, v)| EnvVar {
            name: k.clone(),
            value: Some(v.clone()),
            ..Default::default()
        })
        .collect();
    if gpus == 0 {
        env.push(EnvVar {
            name: "NVIDIA_VISIBLE_DEVICES".into(),
            value: Some("void".into()),
            ..Default::default()
        });
    }
    for (k, v) in [
        ("HEARTH_WORKLOAD_ID", &workload.id),
        ("HEARTH_OWNER_UID", &workload.owner.uid),
    ] {
        env.push(EnvVar {
            name: k.into(),
            value: Some(v.clone()),
            ..Default::default()
        });
    }
    let resources = workload.resources;
    let mut amounts: BTreeMap<String, Quantity> = BTreeMap::new();
    if resources.cpu_millis > 0 {
        amounts.insert("cpu".into(), quantity(format!("{}m", resources.cpu_millis)));
    }
    if resources.memory_bytes > 0 {
        amounts.insert("memory".into(), quantity(resources.memory_bytes));
    }
    let requests = amounts.clone();
    if gpus > 0 {
        // Extended resources are limits only (Kubernetes copies them to requests).
        amounts.insert(crate::k3s::manifests::GPU_RESOURCE.into(), quantity(gpus));
    }
    let (volumes, volume_mounts): (Vec<Volume>, Vec<VolumeMount>) = workload
        .mounts
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let name = format!("mount-{i}");
            (
                Volume {
                    name: name.clone(),
                    host_path: Some(HostPathVolumeSource {
                        path: m.source.display().to_string(),
                        type_: None,
                    }),
                    ..Default::default()
                },
                VolumeMount {
                    name,
                    mount_path: m.target.display().to_string(),
                    read_only: m.read_only.then_some(true),
                    ..Default::default()
                },
            )
        })
        .unzip();
    let container = Container {
        name: CONTAINER.into(),
        image: workload.image.clone(),
        // As Kubernetes defines them: `command` replaces the image's entrypoint, `args`
        // its CMD; no command keeps both.
        command: workload.command.first().map(|c| vec![c.clone()]),
        args: (workload.command.len() > 1).then(|| workload.command[1..].to_vec()),
        env: Some(env),
        working_dir: workload.working_dir.as_ref().map(|d| d.display().to_string()),
        ports: (!workload.ports.is_empty()).then(|| {
            workload
                .ports
                .iter()
                .map(|p| ContainerPort {
                    container_port: i32::from(*p),
                    protocol: Some("TCP".into()),
                    ..Default::default()
                })
                .collect()
        }),
        resources: (!amounts.is_empty()).then(|| ResourceRequirements {
            limits: Some(amounts),
            requests: (!requests.is_empty()).then_some(requests),
            ..Default::default()
        }),
        volume_mounts: (!volume_mounts.is_empty()).then_some(volume_mounts),
        ..Default::default()
    };
    let security_context = (user != &PodUser::default()).then(|| PodSecurityContext {
        run_as_user: user.uid.map(i64::from),
        run_as_group: user.gid.map(i64::from),
        fs_group: user.fs_group.map(i64::from),
        supplemental_groups: (!user.groups.is_empty())
            .then(|| user.groups.iter().map(|g| i64::from(*g)).collect()),
        run_as_non_root: user.run_as_non_root,
        ..Default::default()
    });
    let node_selector = match node {
        Some(node) if !workload.mounts.is_empty() => {
            Some([(HOSTNAME_LABEL.to_string(), node.to_string())].into())
        }
        _ => None,
    };
    Pod {
        metadata: ObjectMeta {
            name: Some(pod_name(&workload.id)),
            namespace: Some(namespace.to_string()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![container],
            restart_policy: Some("Never".into()),
            active_deadline_seconds: workload
                .active_deadline_seconds
                .map(|s| i64::try_from(s).unwrap_or(i64::MAX)),
            termination_grace_period_seconds: Some(
                i64::try_from(workload.termination_grace_seconds).unwrap_or(i64::MAX),
            ),
            runtime_class_name: (gpus > 0).then(|| RUNTIME_CLASS.to_string()),
            tolerations: (gpus > 0).then(|| {
                vec![Toleration {
                    key: Some(crate::k3s::manifests::GPU_RESOURCE.into()),
                    operator: Some("Equal".into()),
                    value: Some("present".into()),
                    effect: Some("NoSchedule".into()),
                    ..Default::default()
                }]
            }),
            node_selector,
            security_context,
            volumes: (!volumes.is_empty()).then_some(volumes),
            automount_service_account_token: Some(false),
            enable_service_links: Some(false),
            ..Default::default()
        }),
        status: None,
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The API server answered (a status about the request); anything else means it could
/// not be reached.
fn unreachable(e: &::kube::Error) -> bool {
    !matches!(
        e,
        ::kube::Error::Api(_) | ::kube::Error::SerdeError(_) | ::kube::Error::BuildRequest(_)
    )
}

fn status_code(e: &::kube::Error) -> Option<u16> {
    match e {
        ::kube::Error::Api(status) => Some(status.code),
        _ => None,
    }
}

fn read_exit(dir: &Path) -> Option<ExitInfo> {
    std::fs::read(dir.join(EXIT))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

fn write_exit(dir: &Path, exit: &ExitInfo) -> Result<(), RuntimeError> {
    let json = serde_json::to_vec(exit).map_err(|e| RuntimeError::Io {
        path: dir.join(EXIT),
        source: std::io::Error::other(e),
    })?;
    write_atomic(&dir.join(EXIT), &json).map_err(io_err(dir))
}

fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

fn container_status(pod: &Pod) -> Option<&k8s_openapi::api::core::v1::ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
}

/// The waiting reason and message of a container that will not start as things are.
fn failed_start(pod: &Pod) -> Option<(&str, String)> {
    let waiting = container_status(pod)?.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    (PULL_FAILURES.contains(&reason) || START_FAILURES.contains(&reason))
        .then(|| (reason, waiting.message.clone().unwrap_or_default()))
}

/// Whether the pod is over: it succeeded or failed, or its container cannot start.
fn ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) || failed_start(pod).is_some()
}

/// When the command started: the container's start, else the pod's, else now.
fn started_at(pod: &Pod) -> String {
    container_status(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| {
            s.running
                .as_ref()
                .and_then(|r| r.started_at.as_ref())
                .or_else(|| s.terminated.as_ref().and_then(|t| t.started_at.as_ref()))
        })
        .or_else(|| pod.status.as_ref().and_then(|s| s.start_time.as_ref()))
        .map(|t| t.0.to_string())
        .unwrap_or_else(crate::store::now_rfc3339)
}

/// How a pod ended, from its status and Hearth's own records.
fn exit_from(dir: &Path, pod: &Pod) -> ExitInfo {
    let terminated = container_status(pod)
        .and_then(|c| c.state.as_ref())
        .and_then(|s| s.terminated.as_ref());
    let code = terminated.map(|t| t.exit_code);
    let started_at = terminated
        .and_then(|t| t.started_at.as_ref())
        .map(|t| t.0.to_string());
    let finished_at = terminated
        .and_then(|t| t.finished_at.as_ref())
        .map(|t| t.0.to_string())
        .unwrap_or_else(crate::store::now_rfc3339);
    let pod_reason = pod.status.as_ref().and_then(|s| s.reason.as_deref());
    let (reason, message) = if dir.join(STOP).exists() {
        ("Stopped".to_string(), "stopped on request".to_string())
    } else if pod_reason == Some("DeadlineExceeded") {
        let seconds = pod
            .spec
            .as_ref()
            .and_then(|s| s.active_deadline_seconds)
            .map(|s| s.to_string())
            .unwrap_or_default();
        (
            "DeadlineExceeded".to_string(),
            format!("ran longer than activeDeadlineSeconds ({seconds}s)"),
        )
    } else if let Some((waiting, message)) = failed_start(pod) {
        if PULL_FAILURES.contains(&waiting) {
            (IMAGE_PULL_BACK_OFF.to_string(), message)
        } else {
            ("StartError".to_string(), format!("{waiting}: {message}"))
        }
    } else if terminated.and_then(|t| t.reason.as_deref()) == Some("OOMKilled") {
        (
            "OOMKilled".to_string(),
            format!(
                "killed for exceeding its memory limit (exit code {})",
                code.unwrap_or(137)
            ),
        )
    } else if matches!(
        terminated.and_then(|t| t.reason.as_deref()),
        Some("ContainerCannotRun" | "StartError")
    ) {
        (
            "StartError".to_string(),
            terminated.and_then(|t| t.message.clone()).unwrap_or_default(),
        )
    } else {
        match code {
            Some(0) => ("Completed".to_string(), String::new()),
            Some(c) => ("Error".to_string(), format!("exited with code {c}")),
            None => (
                "Error".to_string(),
                pod.status
                    .as_ref()
                    .and_then(|s| s.message.clone())
                    .unwrap_or_else(|| "ended without a status".to_string()),
            ),
        }
    };
    ExitInfo {
        exit_code: code,
        signal: None,
        reason,
        message,
        started_at: started_at.or_else(|| {
            pod.status
                .as_ref()
                .and_then(|s| s.start_time.as_ref())
                .map(|t| t.0.to_string())
        }),
        finished_at,
    }
}

fn pod_ports(pod: &Pod) -> Vec<u16> {
    annotation(pod, ANNOTATION_PORTS)
        .map(|p| p.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
}

/// The loopback listeners of one workload and the pod IP they relay to (known once the
/// pod runs).
struct Relay {
    tasks: Vec<tokio::task::AbortHandle>,
    target: Arc<Mutex<Option<IpAddr>>>,
}

pub struct KubeRuntime {
    root: PathBuf,
    log_max_bytes: u64,
    config: KubeConfig,
    /// `k3s` or `kube`: the mode, for messages.
    mode: &'static str,
    /// This host's node name (pods with mounts are pinned to it).
    node: Option<String>,
    /// Made on first use (the kubeconfig may not be written yet) or given (tests).
    client: tokio::sync::Mutex<Option<Client>>,
    /// The API server, for messages (`https://127.0.0.1:6443`).
    server: Mutex<String>,
    /// Whether the namespace was made (or found).
    namespace_ready: AtomicBool,
    /// Whether the pods of ended workloads left by an earlier daemon were looked for
    /// (once, at the first probe that reaches the API server).
    swept: AtomicBool,
    available: Mutex<Availability>,
    /// Log copies running in this daemon, by workload id; the receiver turns `true`
    /// once the whole log is copied.
    followers: Mutex<HashMap<String, watch::Receiver<bool>>>,
    relays: Mutex<HashMap<String, Relay>>,
}

impl KubeRuntime {
    /// `mode`: `k3s` (the kubeconfig k3s writes) or `kube`. Nothing is read or
    /// connected here: the first call does.
    pub fn new(
        root: PathBuf,
        log_max_bytes: u64,
        config: KubeConfig,
        mode: &'static str,
    ) -> Result<KubeRuntime, RuntimeError> {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        let node = config
            .node_name
            .clone()
            .or_else(|| nix::unistd::gethostname().ok().and_then(|h| h.into_string().ok()));
        let server = match &config.kubeconfig {
            Some(path) => format!("the cluster of {}", path.display()),
            None => "the cluster".to_string(),
        };
        Ok(KubeRuntime {
            root,
            log_max_bytes,
            available: Mutex::new(Err(format!("{server} has not been asked yet"))),
            server: Mutex::new(server),
            config,
            mode,
            node,
            client: tokio::sync::Mutex::new(None),
            namespace_ready: AtomicBool::new(false),
            swept: AtomicBool::new(false),
            followers: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
        })
    }

    /// With a client made elsewhere (a recorded API in tests).
    #[cfg(test)]
    pub fn with_client(
        root: PathBuf,
        log_max_bytes: u64,
        config: KubeConfig,
        client: Client,
    ) -> Result<KubeRuntime, RuntimeError> {
        let runtime = KubeRuntime::new(root, log_max_bytes, config, "kube")?;
        *runtime.client.try_lock().map_err(|e| RuntimeError::Start {
            id: String::new(),
            message: e.to_string(),
        })? = Some(client);
        Ok(runtime)
    }

    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn server(&self) -> String {
        self.server.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    fn unavailable(&self, reason: String) -> RuntimeError {
        *self.available.lock().unwrap_or_else(PoisonError::into_inner) = Err(reason.clone());
        RuntimeError::Unavailable {
            runtime: self.mode,
            reason,
        }
    }

    fn api_error(&self, id: &str, what: &str, e: ::kube::Error) -> RuntimeError {
        if unreachable(&e) {
            self.unavailable(format!(
                "the API server at {} does not answer: {e}",
                self.server()
            ))
        } else {
            RuntimeError::Start {
                id: id.to_string(),
                message: format!("{what}: {e}"),
            }
        }
    }

    /// The client, made from the kubeconfig on first use, and the namespace made.
    async fn client(&self) -> Result<Client, RuntimeError> {
        let client = {
            let mut slot = self.client.lock().await;
            match slot.as_ref() {
                Some(client) => client.clone(),
                None => {
                    let client = self.connect().await?;
                    *slot = Some(client.clone());
                    client
                }
            }
        };
        if !self.namespace_ready.load(Ordering::Relaxed) {
            self.ensure_namespace(&client).await?;
        }
        Ok(client)
    }

    async fn connect(&self) -> Result<Client, RuntimeError> {
        let Some(path) = self.config.kubeconfig.clone() else {
            return Err(self.unavailable("no kubeconfig is configured ([kube] kubeconfig)".into()));
        };
        if !path.exists() {
            return Err(self.unavailable(match self.mode {
                "k3s" => format!(
                    "k3s has not written its kubeconfig {} yet (k3s is starting)",
                    path.display()
                ),
                _ => format!(
                    "the kubeconfig {} does not exist ([kube] kubeconfig)",
                    path.display()
                ),
            }));
        }
        // kube-rs builds its TLS client from rustls' process-wide provider: ring, as
        // everywhere in Hearth.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let kubeconfig = ::kube::config::Kubeconfig::read_from(&path)
            .map_err(|e| self.unavailable(format!("cannot read the kubeconfig {}: {e}", path.display())))?;
        let config = ::kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
            .await
            .map_err(|e| self.unavailable(format!("cannot use the kubeconfig {}: {e}", path.display())))?;
        *self.server.lock().unwrap_or_else(PoisonError::into_inner) = config.cluster_url.to_string();
        Client::try_from(config)
            .map_err(|e| self.unavailable(format!("cannot make a client for {}: {e}", path.display())))
    }

    /// Makes the namespace Hearth's pods live in; one that exists, or a refusal to
    /// make it (a cluster where Hearth may only use its namespace), is left as it is.
    async fn ensure_namespace(&self, client: &Client) -> Result<(), RuntimeError> {
        let namespaces: Api<Namespace> = Api::all(client.clone());
        let namespace = Namespace {
            metadata: ObjectMeta {
                name: Some(self.config.namespace.clone()),
                labels: Some([(LABEL_MANAGED_BY.0.to_string(), LABEL_MANAGED_BY.1.to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        match namespaces.create(&PostParams::default(), &namespace).await {
            Ok(_) => {}
            Err(e) if status_code(&e) == Some(409) => {}
            Err(e) if status_code(&e) == Some(403) => {
                tracing::warn!(namespace = %self.config.namespace, error = %e, "may not make the pods' namespace; using it as it is");
            }
            Err(e) => return Err(self.api_error("", "making the pods' namespace", e)),
        }
        self.namespace_ready.store(true, Ordering::Relaxed);
        Ok(())
    }

    fn pods(&self, client: &Client) -> Api<Pod> {
        Api::namespaced(client.clone(), &self.config.namespace)
    }

    async fn get(&self, client: &Client, id: &str) -> Result<Option<Pod>, RuntimeError> {
        self.pods(client)
            .get_opt(&pod_name(id))
            .await
            .map_err(|e| self.api_error(id, "reading its pod", e))
    }

    async fn delete(&self, client: &Client, id: &str) -> Result<(), RuntimeError> {
        match self
            .pods(client)
            .delete(&pod_name(id), &DeleteParams::default())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if status_code(&e) == Some(404) => Ok(()),
            Err(e) => Err(self.api_error(id, "deleting its pod", e)),
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

    /// Who the pod runs as: in isolated mode its namespace's user, as a process
    /// workload does (the directories it is given are that user's).
    async fn user(&self, workload: &Workload) -> Result<Result<PodUser, String>, RuntimeError> {
        let mut user = PodUser::from_spec(workload);
        if !super::identity::global().isolated() {
            return Ok(Ok(user));
        }
        let (namespace, sc) = (
            workload.owner.namespace.clone(),
            workload.security_context.clone(),
        );
        let run_as = tokio::task::spawn_blocking(move || {
            super::identity::global().for_workload(&namespace, sc.as_ref())
        })
        .await
        .map_err(|e| RuntimeError::Start {
            id: workload.id.clone(),
            message: e.to_string(),
        })?;
        Ok(match run_as {
            Ok(run_as) => {
                user.uid = Some(run_as.uid);
                user.gid = Some(run_as.gid);
                user.groups = run_as.groups;
                Ok(user)
            }
            Err(e) => Err(e.to_string()),
        })
    }

    /// Starts copying the pod's log into `output.log`, unless a copy runs already. A
    /// new copy starts from the first byte the kubelet kept, so one begun after a
    /// restart loses nothing that is still there.
    fn follow(&self, client: &Client, id: &str) -> watch::Receiver<bool> {
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(rx) = followers.get(id) {
            return rx.clone();
        }
        let (tx, rx) = watch::channel(false);
        followers.insert(id.to_string(), rx.clone());
        drop(followers);
        let (pods, dir, name, max) = (self.pods(client), self.dir(id), pod_name(id), self.log_max_bytes);
        let id = id.to_string();
        tokio::spawn(async move {
            let (chunks, mut rx_chunks) = tokio::sync::mpsc::channel::<Vec<u8>>(256);
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
            let params = LogParams {
                container: Some(CONTAINER.into()),
                follow: true,
                timestamps: true,
                ..Default::default()
            };
            let complete = loop {
                match pods.log_stream(&name, &params).await {
                    Ok(stream) => {
                        let mut stream = std::pin::pin!(stream);
                        let mut whole = true;
                        loop {
                            let mut line = Vec::new();
                            match stream.read_until(b'\n', &mut line).await {
                                Ok(0) => break,
                                Ok(_) => {
                                    if chunks.send(line).await.is_err() {
                                        whole = false;
                                        break;
                                    }
                                }
                                Err(e) => {
                                    tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                                    whole = false;
                                    break;
                                }
                            }
                        }
                        break whole;
                    }
                    // 400: the container has not started (being made, pulling); ask
                    // again until it runs, or until the pod ended without running.
                    Err(e) if status_code(&e) == Some(400) => match pods.get_opt(&name).await {
                        Ok(Some(pod)) if !ended(&pod) => tokio::time::sleep(LOG_RETRY).await,
                        Ok(_) => break true,
                        Err(e) => {
                            tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                            break false;
                        }
                    },
                    Err(e) if status_code(&e) == Some(404) => break true,
                    Err(e) => {
                        tracing::warn!(workload = %id, error = %e, "copying a pod's log");
                        break false;
                    }
                }
            };
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

    /// Waits until the pod's log is in `output.log` (after it ended).
    async fn drain_logs(&self, client: &Client, id: &str) {
        if self.dir(id).join(LOGS_DONE).exists() {
            return;
        }
        let mut rx = self.follow(client, id);
        let _ = tokio::time::timeout(LOG_DRAIN_TIMEOUT, rx.wait_for(|done| *done)).await;
        let mut followers = self.followers.lock().unwrap_or_else(PoisonError::into_inner);
        followers.remove(id);
    }

    /// Relays `127.0.0.1:<port>` to `<pod IP>:<port>` for each of the pod's ports,
    /// unless it is done already; the pod IP is learnt from `pod` or, at the first
    /// connection, from the API.
    fn relay(&self, client: &Client, id: &str, pod: &Pod) {
        let ports = pod_ports(pod);
        let mut relays = self.relays.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(relay) = relays.get(id) {
            if let Some(ip) = pod_ip(pod) {
                *relay.target.lock().unwrap_or_else(PoisonError::into_inner) = Some(ip);
            }
            return;
        }
        if ports.is_empty() {
            return;
        }
        let target = Arc::new(Mutex::new(pod_ip(pod)));
        let mut tasks = Vec::new();
        for port in ports {
            let (target, pods, name, id) = (
                Arc::clone(&target),
                self.pods(client),
                pod_name(id),
                id.to_string(),
            );
            let task = tokio::spawn(async move {
                let listener = match tokio::net::TcpListener::bind((std::net::Ipv4Addr::LOCALHOST, port))
                    .await
                {
                    Ok(l) => l,
                    Err(e) => {
                        tracing::warn!(workload = %id, port, error = %e, "cannot listen on the workload's loopback port");
                        return;
                    }
                };
                loop {
                    let Ok((mut inbound, _)) = listener.accept().await else {
                        continue;
                    };
                    let known = *target.lock().unwrap_or_else(PoisonError::into_inner);
                    let ip = match known {
                        Some(ip) => Some(ip),
                        None => match pods.get_opt(&name).await {
                            Ok(Some(pod)) => {
                                let ip = pod_ip(&pod);
                                *target.lock().unwrap_or_else(PoisonError::into_inner) = ip;
                                ip
                            }
                            _ => None,
                        },
                    };
                    // Not running yet: the connection is refused, as a process that
                    // does not listen yet refuses it.
                    let Some(ip) = ip else { continue };
                    tokio::spawn(async move {
                        if let Ok(mut outbound) =
                            tokio::net::TcpStream::connect(SocketAddr::new(ip, port)).await
                        {
                            let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                }
            });
            tasks.push(task.abort_handle());
        }
        relays.insert(id.to_string(), Relay { tasks, target });
    }

    fn end_relay(&self, id: &str) {
        let relay = self
            .relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(relay) = relay {
            for task in relay.tasks {
                task.abort();
            }
        }
    }

    /// Records the end of an ended pod (its log drained first) and returns it.
    async fn finish(&self, client: &Client, id: &str, pod: &Pod) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = read_exit(&dir) {
            return Ok(exit);
        }
        // An adopted pod whose directory is gone (a data dir restored without it).
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        self.drain_logs(client, id).await;
        let exit = exit_from(&dir, pod);
        write_exit(&dir, &exit)?;
        self.end_relay(id);
        Ok(exit)
    }

    /// The end of a workload whose pod is gone: stopped by Hearth (deleted), or lost.
    fn gone(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        if !dir.join(STOP).exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        self.end_relay(id);
        let exit = ExitInfo {
            exit_code: None,
            signal: None,
            reason: "Stopped".into(),
            message: "stopped on request".into(),
            started_at: None,
            finished_at: crate::store::now_rfc3339(),
        };
        write_exit(&dir, &exit)?;
        Ok(exit)
    }

    async fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let client = self.client().await?;
        match self.get(&client, id).await? {
            None if dir.join(STOP).exists() => Ok(RunState::Exited(self.gone(id)?)),
            None => Err(RuntimeError::NotFound(id.to_string())),
            Some(p) if ended(&p) => Ok(RunState::Exited(exit_from(&dir, &p))),
            Some(p) => Ok(RunState::Running {
                started_at: started_at(&p),
            }),
        }
    }

    /// Deletes the pods whose end is recorded (`exit.json`) but which were not
    /// deleted: their daemon died, or the API server was away, between the two.
    async fn sweep(&self) {
        let ids = match self.list(None).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "looking for pods of ended workloads");
                return;
            }
        };
        for id in ids {
            if read_exit(&self.dir(&id)).is_some() {
                if let Err(e) = self.forget(&id).await {
                    tracing::warn!(workload = %id, error = %e, "deleting the pod of an ended workload");
                }
            }
        }
    }
}

#[async_trait::async_trait]
impl Runtime for KubeRuntime {
    fn name(&self) -> &'static str {
        self.mode
    }

    /// Idempotent: a pod that exists (from before a crash or restart) is adopted, never
    /// made twice; one stopped before it started never starts.
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError> {
        let id = workload.id.as_str();
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        if let Some(exit) = read_exit(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let client = self.client().await?;
        if let Some(pod) = self.get(&client, id).await? {
            if ended(&pod) {
                return Ok(RunState::Exited(exit_from(&dir, &pod)));
            }
            self.follow(&client, id);
            self.relay(&client, id, &pod);
            return Ok(RunState::Running {
                started_at: started_at(&pod),
            });
        }
        if dir.join(STOP).exists() {
            return self.ended_before_start(&dir, "Stopped", "stopped before it started".into());
        }
        if workload.image.as_deref().is_none_or(str::is_empty) {
            return self.ended_before_start(
                &dir,
                "StartError",
                format!(
                    "the {} runtime runs each workload in its image, and this one names none (set the container's image)",
                    self.mode
                ),
            );
        }
        let user = match self.user(workload).await? {
            Ok(user) => user,
            Err(message) => return self.ended_before_start(&dir, "StartError", message),
        };
        let manifest = pod_manifest(workload, &self.config.namespace, self.node.as_deref(), &user);
        let pod = match self.pods(&client).create(&PostParams::default(), &manifest).await {
            Ok(pod) => pod,
            // Made meanwhile by another start of the same workload: adopt it.
            Err(e) if status_code(&e) == Some(409) => return Box::pin(self.start(workload)).await,
            Err(e) if unreachable(&e) => return Err(self.api_error(id, "creating its pod", e)),
            Err(e) => {
                return self.ended_before_start(
                    &dir,
                    "StartError",
                    format!("the API server refused the pod: {e}"),
                );
            }
        };
        // Stopped while it was being made.
        if dir.join(STOP).exists() {
            self.delete(&client, id).await?;
            return self.ended_before_start(&dir, "Stopped", "stopped before it started".into());
        }
        self.follow(&client, id);
        self.relay(&client, id, &pod);
        Ok(RunState::Running {
            started_at: started_at(&pod),
        })
    }

    async fn status(&self, id: &str) -> Result<RunState, RuntimeError> {
        self.observe(id).await
    }

    /// Watches the pod (a watch on its name, from the resource version read) until it
    /// ends, then waits for its log. The deadline is the pod's own
    /// `activeDeadlineSeconds`, so a restarted daemon needs to enforce nothing.
    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        loop {
            if let Some(exit) = read_exit(&dir) {
                return Ok(exit);
            }
            let client = self.client().await?;
            let Some(pod) = self.get(&client, id).await? else {
                return self.gone(id);
            };
            if ended(&pod) {
                return self.finish(&client, id, &pod).await;
            }
            self.follow(&client, id);
            self.relay(&client, id, &pod);
            let version = pod
                .metadata
                .resource_version
                .clone()
                .unwrap_or_else(|| "0".into());
            let params = WatchParams::default()
                .fields(&format!("metadata.name={}", pod_name(id)))
                .timeout(WATCH_TIMEOUT_SECONDS);
            let stream = self
                .pods(&client)
                .watch(&params, &version)
                .await
                .map_err(|e| self.api_error(id, "watching its pod", e))?;
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Added(pod) | WatchEvent::Modified(pod)) => {
                        self.relay(&client, id, &pod);
                        if ended(&pod) {
                            return self.finish(&client, id, &pod).await;
                        }
                    }
                    Ok(WatchEvent::Deleted(pod)) => {
                        if ended(&pod) {
                            return self.finish(&client, id, &pod).await;
                        }
                        return self.gone(id);
                    }
                    Ok(WatchEvent::Bookmark(_)) => {}
                    // 410 Gone (the version is too old) and the like: read it again.
                    Ok(WatchEvent::Error(_)) => break,
                    Err(e) if unreachable(&e) => return Err(self.api_error(id, "watching its pod", e)),
                    Err(_) => break,
                }
            }
        }
    }

    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        let (dir, owned) = (self.dir(id), id.to_string());
        tokio::task::spawn_blocking(move || {
            if !dir.exists() {
                return Err(RuntimeError::NotFound(owned));
            }
            let files = [LOG_ROTATED, LOG]
                .iter()
                .map(|f| dir.join(f))
                .filter(|p| p.exists())
                .collect();
            Ok(LogFiles { files })
        })
        .await
        .map_err(|e| RuntimeError::Io {
            path: self.dir(id),
            source: std::io::Error::other(e),
        })?
    }

    /// Recorded first (`<dir>/stop`), so that a pod still being made never runs; an
    /// existing one is deleted (SIGTERM, SIGKILL after its grace period, by the
    /// kubelet).
    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        tokio::fs::create_dir_all(&dir).await.map_err(io_err(&dir))?;
        let stop = dir.join(STOP);
        if !stop.exists() {
            write_atomic(&stop, crate::store::now_rfc3339().as_bytes()).map_err(io_err(&dir))?;
        }
        if read_exit(&dir).is_some() {
            return Ok(());
        }
        let client = self.client().await?;
        self.delete(&client, id).await
    }

    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
        let client = self.client().await?;
        let selector = match owner_uid {
            Some(uid) => format!("{LABEL_OWNER_UID}={}", label_value(uid)),
            None => format!("{}={}", LABEL_MANAGED_BY.0, LABEL_MANAGED_BY.1),
        };
        let pods = self
            .pods(&client)
            .list(&ListParams::default().labels(&selector))
            .await
            .map_err(|e| self.api_error("", "listing pods", e))?;
        let mut ids: Vec<String> = pods
            .items
            .iter()
            .filter(|p| owner_uid.is_none_or(|uid| annotation(p, ANNOTATION_OWNER_UID) == Some(uid)))
            .filter_map(|p| annotation(p, ANNOTATION_WORKLOAD).map(str::to_string))
            .collect();
        ids.sort();
        Ok(ids)
    }

    /// Once the end is recorded: the log is copied whole, the end kept in `exit.json`,
    /// then the pod deleted.
    async fn forget(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        let client = self.client().await?;
        let Some(pod) = self.get(&client, id).await? else {
            self.end_relay(id);
            return Ok(());
        };
        if !ended(&pod) && !dir.join(STOP).exists() {
            return Err(RuntimeError::StillRunning(id.to_string()));
        }
        if ended(&pod) {
            self.finish(&client, id, &pod).await?;
        }
        self.end_relay(id);
        self.delete(&client, id).await
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
            "pods in namespace {} of {}: CPU and memory as container requests and limits; GPUs as {} limits with runtimeClassName {RUNTIME_CLASS}, placed by the device plugin; ports relayed from 127.0.0.1 to the pod IP",
            self.config.namespace,
            self.server(),
            crate::k3s::manifests::GPU_RESOURCE,
        )
    }

    fn capabilities(&self) -> Capabilities {
        Capabilities {
            runs_images: true,
            needs_command: false,
            mounts: true,
            gpu_mode: GpuMode::Delegated,
            own_network: true,
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
            Ok(client) => match tokio::time::timeout(PROBE_TIMEOUT, client.apiserver_version()).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!(
                    "the API server at {} does not answer: {e}",
                    self.server()
                )),
                Err(_) => Err(format!(
                    "the API server at {} did not answer within {} s",
                    self.server(),
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
    //! The backend against a recorded API server: kube-rs's client over `tower-test`'s
    //! mock service, answered from the responses a 1.33 API server gives (status
    //! objects, pods, a pod log, a watch stream), every request recorded and asserted.
    //! This is not a k3s or Kubernetes integration test: no API server runs.

    use super::*;
    use crate::runtime::{Mount, Owner, ResourceRequest};
    use ::kube::client::Body;
    use http_body_util::BodyExt;
    use serde_json::{json, Value};

    /// One request the backend made.
    #[derive(Debug, Clone)]
    struct Call {
        method: String,
        path: String,
        query: BTreeMap<String, String>,
        body: Value,
    }

    impl Call {
        fn is(&self, method: &str, path: &str) -> bool {
            self.method == method && self.path == path
        }
    }

    /// An answer: HTTP status and body, or `None` for a connection that fails.
    type Answer = Option<(u16, String)>;

    type Calls = Arc<Mutex<Vec<Call>>>;

    /// A client whose every request is recorded and answered by `answer`.
    fn recorded_api(answer: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> (Client, Calls) {
        let (service, mut handle) = tower_test::mock::pair::<hyper::Request<Body>, hyper::Response<Body>>();
        let calls: Calls = Arc::default();
        let recorded = Arc::clone(&calls);
        tokio::spawn(async move {
            while let Some((request, respond)) = handle.next_request().await {
                let (parts, body) = request.into_parts();
                let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                let call = Call {
                    method: parts.method.to_string(),
                    path: parts.uri.path().to_string(),
                    query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                        .into_owned()
                        .collect(),
                    body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
                };
                let reply = answer(&call);
                recorded.lock().unwrap().push(call);
                match reply {
                    Some((status, body)) => respond.send_response(
                        hyper::Response::builder()
                            .status(status)
                            .header("content-type", "application/json")
                            .body(Body::from(body.into_bytes()))
                            .unwrap(),
                    ),
                    None => respond.send_error(std::io::Error::new(
                        std::io::ErrorKind::ConnectionRefused,
                        "connection refused",
                    )),
                }
            }
        });
        (Client::new(service, "default"), calls)
    }

    fn status(code: u16, reason: &str, message: &str) -> Answer {
        Some((
            code,
            json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
                   "message": message, "reason": reason, "code": code})
            .to_string(),
        ))
    }

    fn ok(value: &Value) -> Answer {
        Some((200, value.to_string()))
    }

    fn workload() -> Workload {
        Workload {
            id: "Job-u1-0".into(),
            owner: Owner {
                kind: "Job".into(),
                namespace: "team".into(),
                name: "train".into(),
                uid: "u1".into(),
            },
            labels: [("job-name".to_string(), "train".to_string())].into(),
            image: Some("busybox:1.36".into()),
            command: vec!["sh".into(), "-c".into(), "echo hi".into()],
            env: vec![("A".into(), "1".into())],
            mounts: vec![Mount {
                source: "/var/lib/hearth/artifacts/x".into(),
                target: "/mnt/x".into(),
                read_only: true,
            }],
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

    fn config() -> KubeConfig {
        KubeConfig {
            kubeconfig: None,
            namespace: "hearth".into(),
            node_name: Some("ws".into()),
        }
    }

    const POD_PATH: &str = "/api/v1/namespaces/hearth/pods";

    fn pod_path(id: &str) -> String {
        format!("{POD_PATH}/{}", pod_name(id))
    }

    /// The manifest as the API server returns it, with a status.
    fn with_status(manifest: &Value, version: &str, status: Value) -> Value {
        let mut pod = manifest.clone();
        pod["metadata"]["resourceVersion"] = json!(version);
        pod["metadata"]["uid"] = json!("0b6a7c1e-1111-4f0e-9d3c-2a4b5c6d7e8f");
        pod["status"] = status;
        pod
    }

    fn running(ip: &str) -> Value {
        json!({
            "phase": "Running",
            "podIP": ip,
            "startTime": "2026-12-02T10:00:00Z",
            "containerStatuses": [{
                "name": CONTAINER, "image": "busybox:1.36", "imageID": "", "ready": true,
                "restartCount": 0,
                "state": {"running": {"startedAt": "2026-12-02T10:00:01Z"}},
            }],
        })
    }

    fn terminated(phase: &str, code: i32, reason: &str) -> Value {
        json!({
            "phase": phase,
            "podIP": "10.42.0.9",
            "startTime": "2026-12-02T10:00:00Z",
            "containerStatuses": [{
                "name": CONTAINER, "image": "busybox:1.36", "imageID": "", "ready": false,
                "restartCount": 0,
                "state": {"terminated": {"exitCode": code, "reason": reason,
                    "startedAt": "2026-12-02T10:00:01Z", "finishedAt": "2026-12-02T10:00:09Z"}},
            }],
        })
    }

    fn manifest_json(w: &Workload) -> Value {
        serde_json::to_value(pod_manifest(w, "hearth", Some("ws"), &PodUser::default())).unwrap()
    }

    const LOG_BODY: &str = "2026-12-02T10:00:02.000000001Z hello\n2026-12-02T10:00:03.000000002Z world\n";

    fn log_query() -> BTreeMap<String, String> {
        [
            ("container", CONTAINER),
            ("follow", "true"),
            ("timestamps", "true"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    fn without_logs(calls: &Calls) -> Vec<Call> {
        calls
            .lock()
            .unwrap()
            .iter()
            .filter(|c| !c.path.ends_with("/log"))
            .cloned()
            .collect()
    }

    /// create: namespace, the pod looked for by name, then made (its body checked);
    /// logs: followed with times into `output.log`; watch: from the version read, on
    /// the pod's name, until it succeeded; the end comes from the recorded status.
    #[tokio::test]
    async fn start_creates_the_pod_copies_its_log_and_wait_watches_it_end() {
        let dir = tempfile::tempdir().unwrap();
        let w = workload();
        let created: Arc<Mutex<Option<Value>>> = Arc::default();
        let state = Arc::clone(&created);
        let name = pod_name(&w.id);
        let (client, calls) = recorded_api(move |call| {
            let mut created = state.lock().unwrap();
            match (call.method.as_str(), call.path.as_str()) {
                ("POST", "/api/v1/namespaces") => {
                    status(409, "AlreadyExists", "namespaces \"hearth\" already exists")
                }
                ("POST", POD_PATH) => {
                    let pod = with_status(&call.body, "5", json!({"phase": "Pending"}));
                    *created = Some(pod.clone());
                    Some((201, pod.to_string()))
                }
                ("GET", p) if p == pod_path("Job-u1-0") => match created.as_ref() {
                    None => status(
                        404,
                        "NotFound",
                        &format!("pods \"{}\" not found", pod_name("Job-u1-0")),
                    ),
                    Some(pod) => ok(&with_status(pod, "7", running("10.42.0.9"))),
                },
                ("GET", p) if p == format!("{}/log", pod_path("Job-u1-0")) => Some((200, LOG_BODY.into())),
                ("GET", POD_PATH) if call.query.get("watch").map(String::as_str) == Some("true") => {
                    let pod = created.as_ref().unwrap();
                    let event = json!({"type": "MODIFIED", "object": with_status(pod, "8", terminated("Succeeded", 0, "Completed"))});
                    Some((200, format!("{event}\n")))
                }
                _ => status(404, "NotFound", "not recorded"),
            }
        });
        let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();

        // Pending, not started: seen running from now.
        assert!(matches!(rt.start(&w).await.unwrap(), RunState::Running { .. }));
        let exit = rt.wait(&w.id).await.unwrap();
        assert_eq!(exit.reason, "Completed");
        assert_eq!(exit.exit_code, Some(0));
        assert_eq!(exit.started_at.as_deref(), Some("2026-12-02T10:00:01Z"));
        assert_eq!(exit.finished_at, "2026-12-02T10:00:09Z");
        // Kept: a second wait and status read it from disk, asking nothing.
        let asked = calls.lock().unwrap().len();
        assert_eq!(rt.wait(&w.id).await.unwrap(), exit);
        assert_eq!(rt.status(&w.id).await.unwrap(), RunState::Exited(exit));
        assert_eq!(calls.lock().unwrap().len(), asked);

        // The log, copied with its times.
        let files = rt.logs(&w.id).await.unwrap().files;
        assert_eq!(
            std::fs::read_to_string(files.last().unwrap()).unwrap(),
            "hello\nworld\n"
        );
        let times = crate::runtime::log_times::LineTimes::of(files.last().unwrap())
            .unwrap()
            .unwrap();
        assert_eq!(times.at(0), Some(1_796_205_602_000_000_001));
        assert_eq!(times.at(6), Some(1_796_205_603_000_000_002));

        let all = calls.lock().unwrap().clone();
        let logs: Vec<&Call> = all.iter().filter(|c| c.path.ends_with("/log")).collect();
        assert_eq!(logs.len(), 1, "{all:#?}");
        assert_eq!(logs[0].method, "GET");
        assert_eq!(logs[0].path, format!("{}/log", pod_path(&w.id)));
        assert_eq!(logs[0].query, log_query());

        let calls = without_logs(&calls);
        let shape: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (c.method.as_str(), c.path.as_str()))
            .collect();
        let pod = pod_path(&w.id);
        assert_eq!(
            shape,
            [
                ("POST", "/api/v1/namespaces"),
                ("GET", pod.as_str()),
                ("POST", POD_PATH),
                ("GET", pod.as_str()),
                ("GET", POD_PATH),
            ],
            "{calls:#?}"
        );
        assert_eq!(calls[0].body["metadata"]["name"], "hearth");
        // The create: the pod's name, labels, owner, command, limits, GPU wiring.
        let body = &calls[2].body;
        assert!(calls[2].query.is_empty(), "{:?}", calls[2].query);
        assert_eq!(body["metadata"]["name"], name);
        assert_eq!(body["metadata"]["namespace"], "hearth");
        assert_eq!(body["metadata"]["labels"][LABEL_MANAGED_BY.0], "hearth");
        assert_eq!(body["metadata"]["labels"][LABEL_OWNER_UID], "u1");
        assert_eq!(body["metadata"]["annotations"][ANNOTATION_WORKLOAD], "Job-u1-0");
        assert_eq!(
            body["metadata"]["annotations"][ANNOTATION_LABELS],
            r#"{"job-name":"train"}"#
        );
        let spec = &body["spec"];
        assert_eq!(spec["restartPolicy"], "Never");
        assert_eq!(spec["activeDeadlineSeconds"], 30);
        assert_eq!(spec["terminationGracePeriodSeconds"], 5);
        assert_eq!(spec["runtimeClassName"], "nvidia");
        assert_eq!(
            spec["tolerations"],
            json!([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}])
        );
        assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/hostname": "ws"}));
        assert_eq!(spec["automountServiceAccountToken"], false);
        let c = &spec["containers"][0];
        assert_eq!(c["name"], CONTAINER);
        assert_eq!(c["image"], "busybox:1.36");
        assert_eq!(c["command"], json!(["sh"]));
        assert_eq!(c["args"], json!(["-c", "echo hi"]));
        assert_eq!(
            c["resources"]["limits"],
            json!({"cpu": "500m", "memory": "67108864", "nvidia.com/gpu": "1"})
        );
        assert_eq!(
            c["resources"]["requests"],
            json!({"cpu": "500m", "memory": "67108864"})
        );
        assert_eq!(
            c["volumeMounts"],
            json!([{"name": "mount-0", "mountPath": "/mnt/x", "readOnly": true}])
        );
        assert_eq!(
            spec["volumes"][0]["hostPath"]["path"],
            "/var/lib/hearth/artifacts/x"
        );
        let env = c["env"].as_array().unwrap();
        assert!(env.contains(&json!({"name": "A", "value": "1"})));
        assert!(env.contains(&json!({"name": "HEARTH_WORKLOAD_ID", "value": "Job-u1-0"})));
        // The device plugin sets the GPUs' variable; a GPU pod must not override it.
        assert!(
            !env.iter().any(|e| e["name"] == "NVIDIA_VISIBLE_DEVICES"),
            "{env:?}"
        );
        // The watch: on the pod's name, from the version the GET read.
        let expected: BTreeMap<String, String> = [
            ("watch", "true"),
            ("timeoutSeconds", "290"),
            ("fieldSelector", format!("metadata.name={name}").as_str()),
            ("allowWatchBookmarks", "true"),
            ("resourceVersion", "7"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        assert_eq!(calls[4].query, expected);
    }

    /// Re-adoption after a daemon restart: a new backend with an empty data dir finds
    /// the running pod by name and makes nothing; `list` finds pods by label; the
    /// loopback port is relayed to the pod IP.
    #[tokio::test]
    async fn a_restarted_daemon_adopts_the_running_pod_and_relays_its_port() {
        let dir = tempfile::tempdir().unwrap();
        // The pod listens on its own IP (127.0.0.2 stands for it), the relay on
        // 127.0.0.1, both at the workload's port.
        let upstream = tokio::net::TcpListener::bind("127.0.0.2:0").await.unwrap();
        let port = upstream.local_addr().unwrap().port();
        let mut w = workload();
        w.id = "InferenceService-u2-r1".into();
        w.owner.uid = "u2".into();
        w.ports = vec![port];
        w.resources.gpus = 0;
        w.mounts.clear();
        let pod = with_status(&manifest_json(&w), "41", running("127.0.0.2"));
        let mut other = with_status(&manifest_json(&workload()), "42", running("10.42.0.10"));
        other["metadata"]["annotations"][ANNOTATION_OWNER_UID] = json!("u2-other");
        let (for_api, id) = (pod.clone(), w.id.clone());
        let (client, calls) = recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v1/namespaces") => Some((
                201,
                json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hearth"}}).to_string(),
            )),
            ("GET", p) if p == pod_path(&id) => ok(&for_api),
            ("GET", p) if p == format!("{}/log", pod_path(&id)) => Some((200, LOG_BODY.into())),
            ("GET", POD_PATH) => ok(
                &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "50"},
                                           "items": [for_api, other]}),
            ),
            _ => status(404, "NotFound", "not recorded"),
        });
        let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();

        let state = rt.start(&w).await.unwrap();
        assert_eq!(
            state,
            RunState::Running {
                started_at: "2026-12-02T10:00:01Z".into()
            }
        );
        assert_eq!(rt.status(&w.id).await.unwrap(), state);
        assert!(
            !calls.lock().unwrap().iter().any(|c| c.is("POST", POD_PATH)),
            "adopting must not make a pod"
        );

        // list by owner: the label selector, and only that owner's ids.
        assert_eq!(rt.list(Some("u2")).await.unwrap(), vec![w.id.clone()]);
        assert_eq!(
            rt.list(None).await.unwrap(),
            vec![w.id.clone(), "Job-u1-0".to_string()]
        );
        let lists: Vec<Call> = without_logs(&calls)
            .into_iter()
            .filter(|c| c.is("GET", POD_PATH))
            .collect();
        assert_eq!(lists.len(), 2);
        assert_eq!(
            lists[0].query,
            [("labelSelector".to_string(), "hearth.dev/owner-uid=u2".to_string())].into()
        );
        assert_eq!(
            lists[1].query,
            [(
                "labelSelector".to_string(),
                "app.kubernetes.io/managed-by=hearth".to_string()
            )]
            .into()
        );

        // The relay: 127.0.0.1:<port> reaches the pod's IP.
        let server = tokio::spawn(async move {
            let (mut s, _) = upstream.accept().await.unwrap();
            let mut buf = [0u8; 4];
            tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
                .await
                .unwrap();
            tokio::io::AsyncWriteExt::write_all(&mut s, b"pong")
                .await
                .unwrap();
            buf
        });
        let mut conn = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"ping")
            .await
            .unwrap();
        let mut reply = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut reply)
            .await
            .unwrap();
        assert_eq!(&reply, b"pong");
        assert_eq!(&server.await.unwrap(), b"ping");
    }

    /// stop: recorded, then the pod deleted (its own grace period applies); the watch
    /// sees it go, and the end is `Stopped`. forget then deletes nothing more.
    #[tokio::test]
    async fn stop_deletes_the_pod_and_the_end_is_stopped() {
        let dir = tempfile::tempdir().unwrap();
        let w = workload();
        let deleted = Arc::new(AtomicBool::new(false));
        let gone = Arc::clone(&deleted);
        let pod = with_status(&manifest_json(&w), "7", running("10.42.0.9"));
        let (client, calls) = recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v1/namespaces") => status(409, "AlreadyExists", "exists"),
            ("GET", p) if p == pod_path("Job-u1-0") && gone.load(Ordering::SeqCst) => {
                status(404, "NotFound", "gone")
            }
            ("GET", p) if p == pod_path("Job-u1-0") => ok(&pod),
            ("DELETE", p) if p == pod_path("Job-u1-0") => {
                gone.store(true, Ordering::SeqCst);
                let mut terminating = pod.clone();
                terminating["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:01:00Z");
                ok(&terminating)
            }
            ("GET", p) if p == format!("{}/log", pod_path("Job-u1-0")) => Some((200, LOG_BODY.into())),
            _ => status(404, "NotFound", "not recorded"),
        });
        let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
        assert!(matches!(rt.start(&w).await.unwrap(), RunState::Running { .. }));
        rt.stop(&w.id).await.unwrap();
        assert!(deleted.load(Ordering::SeqCst));
        let exit = rt.wait(&w.id).await.unwrap();
        assert_eq!(exit.reason, "Stopped");
        rt.forget(&w.id).await.unwrap();
        let calls = without_logs(&calls);
        let deletes: Vec<&Call> = calls.iter().filter(|c| c.method == "DELETE").collect();
        assert_eq!(deletes.len(), 1, "{calls:#?}");
        assert_eq!(deletes[0].path, pod_path(&w.id));
        assert!(deletes[0].query.is_empty(), "{:?}", deletes[0].query);
        // No grace period of Hearth's: the pod's terminationGracePeriodSeconds holds.
        assert!(
            deletes[0].body.get("gracePeriodSeconds").is_none(),
            "{:?}",
            deletes[0].body
        );
    }

    /// forget on an ended pod: the log drained, the end recorded from its status
    /// (exit code, OOM, deadline, image pull), then the pod deleted.
    #[tokio::test]
    async fn forget_records_how_the_pod_ended_then_deletes_it() {
        let w = workload();
        let cases = [
            (
                terminated("Failed", 3, "Error"),
                "Error",
                Some(3),
                "exited with code 3",
            ),
            (
                terminated("Failed", 137, "OOMKilled"),
                "OOMKilled",
                Some(137),
                "killed for exceeding its memory limit (exit code 137)",
            ),
            (
                {
                    let mut s = terminated("Failed", 137, "Error");
                    s["reason"] = json!("DeadlineExceeded");
                    s["message"] = json!("Pod was active on the node longer than the specified deadline");
                    s
                },
                "DeadlineExceeded",
                Some(137),
                "ran longer than activeDeadlineSeconds (30s)",
            ),
            (
                json!({"phase": "Pending", "containerStatuses": [{"name": CONTAINER, "image": "busybox:nope",
                    "imageID": "", "ready": false, "restartCount": 0,
                    "state": {"waiting": {"reason": "ImagePullBackOff",
                        "message": "Back-off pulling image \"busybox:nope\""}}}]}),
                IMAGE_PULL_BACK_OFF,
                None,
                "Back-off pulling image \"busybox:nope\"",
            ),
        ];
        for (pod_status, reason, code, message) in cases {
            let dir = tempfile::tempdir().unwrap();
            let pod = with_status(&manifest_json(&w), "9", pod_status);
            let (client, calls) =
                recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
                    ("POST", "/api/v1/namespaces") => status(409, "AlreadyExists", "exists"),
                    ("GET", p) if p == pod_path("Job-u1-0") => ok(&pod),
                    ("GET", p) if p.ends_with("/log") && pod["status"]["phase"] == "Pending" => status(
                        400,
                        "BadRequest",
                        "container \"workload\" in pod is waiting to start: trying and failing to pull image",
                    ),
                    ("GET", p) if p.ends_with("/log") => Some((200, LOG_BODY.into())),
                    ("DELETE", p) if p == pod_path("Job-u1-0") => ok(&pod),
                    _ => status(404, "NotFound", "not recorded"),
                });
            let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
            let RunState::Exited(seen) = rt.status(&w.id).await.unwrap() else {
                panic!("{reason}: the pod ended")
            };
            rt.forget(&w.id).await.unwrap();
            let exit = read_exit(&dir.path().join(&w.id)).unwrap();
            // Never ran: it ended when seen, by status and by forget alike.
            assert_eq!(
                ExitInfo {
                    finished_at: String::new(),
                    ..exit.clone()
                },
                ExitInfo {
                    finished_at: String::new(),
                    ..seen
                },
                "{reason}"
            );
            assert_eq!(
                (exit.reason.as_str(), exit.exit_code, exit.message.as_str()),
                (reason, code, message)
            );
            let calls = without_logs(&calls);
            let shape: Vec<(&str, &str)> = calls
                .iter()
                .map(|c| (c.method.as_str(), c.path.as_str()))
                .collect();
            let path = pod_path(&w.id);
            let mut expected = vec![
                ("POST", "/api/v1/namespaces"),
                ("GET", path.as_str()),
                ("GET", path.as_str()),
            ];
            // The log copy asks for the log, is told the container never started (400),
            // and reads the pod to see that it ended.
            if reason == IMAGE_PULL_BACK_OFF {
                expected.push(("GET", path.as_str()));
            }
            expected.push(("DELETE", path.as_str()));
            assert_eq!(shape, expected, "{reason}");
        }
    }

    /// An API server that cannot be reached: nothing changes, the call says why, and
    /// the availability follows (the scheduler admits nothing meanwhile).
    #[tokio::test]
    async fn an_unreachable_api_server_makes_the_backend_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let (client, calls) = recorded_api(|_| None);
        let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
        match rt.start(&workload()).await {
            Err(RuntimeError::Unavailable {
                runtime: "kube",
                reason,
            }) => {
                assert!(reason.contains("does not answer"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        assert!(rt.availability().is_err());
        assert!(read_exit(&dir.path().join("Job-u1-0")).is_none());
        let probe = rt.probe().await.unwrap_err();
        assert!(probe.contains("does not answer"), "{probe}");
        assert!(!calls
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.method == "POST" && c.path == POD_PATH));
    }

    /// A k3s whose kubeconfig is not written yet: unavailable, naming it.
    #[tokio::test]
    async fn k3s_mode_waits_for_the_kubeconfig() {
        let dir = tempfile::tempdir().unwrap();
        let kubeconfig = dir.path().join("k3s/kubeconfig.yaml");
        let rt = KubeRuntime::new(
            dir.path().join("workloads"),
            1 << 20,
            KubeConfig {
                kubeconfig: Some(kubeconfig.clone()),
                ..config()
            },
            "k3s",
        )
        .unwrap();
        let reason = rt.probe().await.unwrap_err();
        assert!(reason.contains("k3s has not written its kubeconfig"), "{reason}");
        assert!(reason.contains(&kubeconfig.display().to_string()), "{reason}");
        match rt.status("x").await {
            Err(RuntimeError::Unavailable { runtime: "k3s", .. }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn pod_names_are_dns_labels_stable_and_distinct() {
        let long = format!(
            "PipelineRun-{}-Step_With.Odd--Chars",
            "0b6a7c1e-1111-4f0e-9d3c-2a4b5c6d7e8f"
        );
        for id in ["Job-u1-0", long.as_str(), "___", "job-u1-0"] {
            let name = pod_name(id);
            assert!(valid_namespace(&name), "{name}");
            assert_eq!(name, pod_name(id));
        }
        assert_ne!(pod_name("Job-u1-0"), pod_name("job-u1-0"));
        assert!(pod_name(&long).len() <= 63);
    }

    /// One workload of each kind as its controller makes it (the fields that shape the
    /// pod), with and without GPUs.
    fn workloads_of_each_kind() -> Vec<(String, Workload)> {
        let owner = |kind: &str| Owner {
            kind: kind.into(),
            namespace: "team".into(),
            name: format!("{}-x", kind.to_lowercase()),
            uid: "8d4f7a0e-5b7e-4c1e-9f7a-3c2b1a0d9e8f".into(),
        };
        let base = |kind: &str, suffix: &str| Workload {
            id: format!("{kind}-8d4f7a0e-5b7e-4c1e-9f7a-3c2b1a0d9e8f-{suffix}"),
            owner: owner(kind),
            image: Some("python:3.12-slim".into()),
            termination_grace_seconds: 10,
            resources: ResourceRequest {
                cpu_millis: 1000,
                memory_bytes: 1 << 30,
                gpus: 0,
            },
            ..Default::default()
        };
        let job = Workload {
            labels: [
                ("job-name".to_string(), "job-x".to_string()),
                (
                    "batch.kubernetes.io/job-completion-index".to_string(),
                    "0".to_string(),
                ),
            ]
            .into(),
            command: vec!["python".into(), "train.py".into()],
            active_deadline_seconds: Some(3600),
            ..base("Job", "0-0")
        };
        let step = Workload {
            labels: [(
                "pipelines.kubeflow.org/task".to_string(),
                "preprocess".to_string(),
            )]
            .into(),
            command: vec!["sh".into(), "-c".into(), "python -m kfp.dsl.executor_main".into()],
            working_dir: Some("/kfp/step".into()),
            mounts: vec![
                Mount {
                    source: "/var/lib/hearth/pipelines/run/step".into(),
                    target: "/kfp/step".into(),
                    read_only: false,
                },
                Mount {
                    source: "/var/lib/hearth/artifacts".into(),
                    target: "/kfp/artifacts".into(),
                    read_only: true,
                },
            ],
            env: vec![("KFP_POD_NAME".into(), "preprocess".into())],
            ..base("PipelineRun", "preprocess")
        };
        let trial = Workload {
            labels: [("katib.kubeflow.org/trial".to_string(), "exp-abc".to_string())].into(),
            command: vec!["python".into(), "train.py".into(), "--lr=0.01".into()],
            ..base("Trial", "0")
        };
        let replica = Workload {
            ports: vec![39001],
            command: vec!["mlserver".into(), "start".into(), "/mnt/models".into()],
            mounts: vec![Mount {
                source: "/var/lib/hearth/models/m".into(),
                target: "/mnt/models".into(),
                read_only: true,
            }],
            env: vec![("MLSERVER_HTTP_PORT".into(), "39001".into())],
            ..base("InferenceService", "predictor-1")
        };
        let notebook = Workload {
            ports: vec![39002],
            image: Some("kubeflownotebookswg/jupyter-scipy:v1.10.0".into()),
            command: Vec::new(),
            mounts: vec![Mount {
                source: "/var/lib/hearth/workspaces/team/nb".into(),
                target: "/home/jovyan".into(),
                read_only: false,
            }],
            security_context: Some(crate::runtime::identity::SecurityContext {
                run_as_user: Some(1000),
                run_as_group: Some(100),
                fs_group: Some(100),
                run_as_non_root: Some(true),
                path: "spec.template.spec.securityContext".into(),
            }),
            ..base("Notebook", "0")
        };
        let mut all = Vec::new();
        for (kind, w) in [
            ("job-attempt", job),
            ("pipeline-step", step),
            ("trial", trial),
            ("model-replica", replica),
            ("notebook", notebook),
        ] {
            let mut gpu = w.clone();
            gpu.id.push_str("-gpu");
            gpu.resources.gpus = 2;
            gpu.gpu_uuids = vec!["GPU-a".into(), "GPU-b".into()];
            all.push((kind.to_string(), w));
            all.push((format!("{kind}-gpu"), gpu));
        }
        all
    }

    #[test]
    fn every_kind_maps_to_a_pod_that_runs_once_with_its_gpus() {
        for (kind, w) in workloads_of_each_kind() {
            let pod = serde_json::to_value(pod_manifest(&w, "hearth", Some("ws"), &PodUser::from_spec(&w)))
                .unwrap();
            let spec = &pod["spec"];
            assert_eq!(spec["restartPolicy"], "Never", "{kind}");
            let limits = &spec["containers"][0]["resources"]["limits"];
            if kind.ends_with("-gpu") {
                assert_eq!(limits["nvidia.com/gpu"], "2", "{kind}");
                assert_eq!(spec["runtimeClassName"], "nvidia", "{kind}");
                assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu", "{kind}");
            } else {
                assert!(limits.get("nvidia.com/gpu").is_none(), "{kind}");
                assert!(spec.get("runtimeClassName").is_none(), "{kind}");
                assert!(spec.get("tolerations").is_none(), "{kind}");
                assert!(spec["containers"][0]["env"]
                    .as_array()
                    .unwrap()
                    .contains(&json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})));
            }
            assert_eq!(spec["nodeSelector"].is_object(), !w.mounts.is_empty(), "{kind}");
            let ports: Vec<u16> = w.ports.clone();
            let declared: Vec<u16> = spec["containers"][0]["ports"]
                .as_array()
                .map(|p| {
                    p.iter()
                        .map(|p| p["containerPort"].as_u64().unwrap() as u16)
                        .collect()
                })
                .unwrap_or_default();
            assert_eq!(declared, ports, "{kind}");
        }
        let notebook = workloads_of_each_kind()
            .into_iter()
            .find(|(k, _)| k == "notebook")
            .unwrap()
            .1;
        let pod = serde_json::to_value(pod_manifest(
            &notebook,
            "hearth",
            None,
            &PodUser::from_spec(&notebook),
        ))
        .unwrap();
        assert_eq!(
            pod["spec"]["securityContext"],
            json!({"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "runAsNonRoot": true})
        );
        // No command: the image's entrypoint and CMD run.
        assert!(pod["spec"]["containers"][0].get("command").is_none());
        assert!(pod["spec"]["containers"][0].get("args").is_none());
        assert!(
            pod["spec"].get("nodeSelector").is_none(),
            "no node known: not pinned"
        );
    }

    /// `kubernetes-validate` from the venv `scripts/test` builds from
    /// tests/requirements-k3s.txt (`$HEARTH_KUBERNETES_VALIDATE` overrides), as
    /// tests/tests/k3s_layer.rs finds it.
    fn kubernetes_validate() -> PathBuf {
        let path = match std::env::var_os("HEARTH_KUBERNETES_VALIDATE") {
            Some(p) => PathBuf::from(p),
            None => Path::new(env!("CARGO_MANIFEST_DIR"))
                .parent()
                .unwrap()
                .join(".venv-k3s/bin/kubernetes-validate"),
        };
        assert!(
            path.exists(),
            "{} is missing: `python3 -m venv .venv-k3s && .venv-k3s/bin/pip install -r tests/requirements-k3s.txt` (scripts/test does this)",
            path.display()
        );
        path
    }

    /// Every pod the backend makes, each workload kind with and without GPUs, passes
    /// `kubernetes-validate --strict` against the Kubernetes 1.33 schemas.
    #[test]
    fn pod_manifests_pass_kubernetes_validate_strict() {
        let dir = tempfile::tempdir().unwrap();
        let mut files = Vec::new();
        let user = PodUser {
            uid: Some(61000),
            gid: Some(61000),
            fs_group: None,
            groups: vec![44, 109],
            run_as_non_root: None,
        };
        for (kind, w) in workloads_of_each_kind() {
            for (suffix, user) in [("", PodUser::from_spec(&w)), ("-isolated", user.clone())] {
                let path = dir.path().join(format!("{kind}{suffix}.json"));
                let pod = pod_manifest(&w, "hearth", Some("ws"), &user);
                // As the API server is sent it (k8s-openapi writes apiVersion and kind).
                let value = serde_json::to_value(&pod).unwrap();
                assert_eq!(
                    (&value["apiVersion"], &value["kind"]),
                    (&json!("v1"), &json!("Pod"))
                );
                std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
                files.push(path);
            }
        }
        let out = std::process::Command::new(kubernetes_validate())
            .args(["--strict", "--kubernetes-version", "1.33.0"])
            .args(&files)
            .output()
            .unwrap();
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{text}");
        assert_eq!(
            text.matches(" passed for resource ").count(),
            files.len(),
            "{text}"
        );
        assert_eq!(files.len(), 20);
    }
}
