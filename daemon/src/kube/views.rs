//! Read-only kinds computed from Hearth's own state rather than stored as objects:
//! core/v1 `Namespace` (the caller's namespaces), `Pod` (every workload: Job attempt,
//! pipeline step, serving replica), `Node` (this host) and KServe's
//! `ClusterServingRuntime` (the runtime table). They are served by the same handlers
//! as stored kinds (get, list, watch, selectors, `limit`/`continue`); the shapes
//! follow the Kubernetes API reference (core/v1) and KServe's `v1alpha1` types.
//!
//! A view has no change log, so its watch compares successive snapshots: it is woken
//! by every store commit and, since the workload queue is written outside the change
//! log, by a short tick (`SNAPSHOT_EVERY`).

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::handlers::ResourceList;
use super::kinds::KindDef;
use super::params::ListOptions;
use crate::auth::Principal;
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::runtime::Owner;
use crate::scheduler::{WorkloadPhase, WorkloadRecord};
use crate::store::resources::{self, Cursor};
use crate::store::{access, workloads, StoreError};

/// Which computed kind a [`KindDef`] serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    Namespace,
    Pod,
    Node,
    Event,
    ClusterServingRuntime,
}

/// How often a watch on a view looks again without a store commit to wake it.
const SNAPSHOT_EVERY: Duration = Duration::from_millis(500);
/// How long a watch runs without `timeoutSeconds` (as stored kinds' watches).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);

/// What the views are computed from: shared handles taken from [`AppState`], so a
/// watch's task can keep them.
#[derive(Clone)]
struct Sources {
    store: crate::store::Store,
    gpus: crate::gpu::GpuProbe,
    config: std::sync::Arc<crate::config::Config>,
    runtimes: std::sync::Arc<crate::serving::runtimes::RuntimeTable>,
}

impl Sources {
    fn of(state: &AppState) -> Sources {
        Sources {
            store: state.store.clone(),
            gpus: state.gpus.clone(),
            config: state.config.clone(),
            runtimes: state.serving.runtimes.clone(),
        }
    }
}

/// The order of a view's items and the key of its `continue` token:
/// namespace, then name.
fn key_of(document: &Value) -> String {
    let meta = |k: &str| {
        document
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    format!("{}/{}", meta("namespace"), meta("name"))
}

/// Every object of the view (in `namespace`, or all), ordered by [`key_of`], before
/// access checks and selectors.
async fn snapshot(view: View, state: &Sources, namespace: Option<&str>) -> Result<Vec<Value>, ApiError> {
    let mut items = match view {
        View::Namespace => {
            let rows = state.store.call(|conn| access::list_namespaces(conn)).await?;
            rows.iter().map(namespace_object).collect()
        }
        View::Pod => {
            let ns = namespace.map(str::to_string);
            let records = state
                .store
                .call(move |conn| workloads::in_namespace(conn, ns.as_deref()))
                .await?;
            let node = crate::node::hostname();
            records.iter().map(|r| pod(r, &node)).collect()
        }
        View::Node => {
            let since = state
                .store
                .call(|conn| access::list_namespaces(conn))
                .await?
                .iter()
                .map(|n| n.created_at.clone())
                .min()
                .unwrap_or_else(crate::store::now_rfc3339);
            vec![node(state, &since)]
        }
        View::Event => {
            let ns = namespace.map(str::to_string);
            let events = state
                .store
                .call(move |conn| resources::events_in(conn, ns.as_deref()))
                .await?;
            let host = crate::node::hostname();
            events.iter().map(|e| event(e, &host)).collect()
        }
        View::ClusterServingRuntime => state.runtimes.all().iter().map(serving_runtime).collect(),
    };
    items.sort_by_key(key_of);
    Ok(items)
}

/// Whether the caller may see the object: a namespaced object by its namespace, a
/// `Namespace` by its name; cluster-scoped views by every caller.
fn visible(kind: &KindDef, view: View, caller: &Principal, document: &Value) -> bool {
    let field = |k: &str| {
        document
            .pointer(&format!("/metadata/{k}"))
            .and_then(Value::as_str)
            .unwrap_or("")
    };
    match view {
        View::Namespace => caller.can_access(field("name")),
        View::Pod | View::Node | View::Event | View::ClusterServingRuntime => {
            !kind.namespaced || caller.can_access(field("namespace"))
        }
    }
}

fn keeps(kind: &KindDef, view: View, caller: &Principal, options: &ListOptions, document: &Value) -> bool {
    visible(kind, view, caller, document)
        && options.labels.matches(document)
        && options.fields.matches(document)
}

/// One page of a view, as [`super::handlers::list`] answers stored kinds.
pub async fn list(
    kind: &'static KindDef,
    view: View,
    state: &AppState,
    namespace: Option<String>,
    caller: Principal,
    options: ListOptions,
) -> Result<HttpResponse, ApiError> {
    if options.watch {
        return watch(kind, view, state, namespace, caller, options).await;
    }
    let version = state.store.call(|conn| resources::latest_version(conn)).await?;
    let after = options.after.as_ref().map(|c| c.key().to_string());
    let limit = options.limit.unwrap_or(usize::MAX);
    let mut items: Vec<Value> = snapshot(view, &Sources::of(state), namespace.as_deref())
        .await?
        .into_iter()
        .filter(|d| after.as_deref().is_none_or(|a| key_of(d).as_str() > a))
        .filter(|d| keeps(kind, view, &caller, &options, d))
        .take(limit.saturating_add(1))
        .collect();
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(|d| Cursor::after_key(&key_of(d)).encode())
    } else {
        None
    };
    let items = items
        .iter()
        .map(serde_json::value::to_raw_value)
        .collect::<Result<Vec<_>, _>>()
        .map_err(StoreError::from)?;
    Ok(HttpResponse::Ok().json(ResourceList::of(kind, version, next, items)))
}

/// One object of a view; `NotFound` as for stored kinds.
pub async fn read(
    kind: &'static KindDef,
    view: View,
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    caller: &Principal,
) -> Result<Value, ApiError> {
    snapshot(view, &Sources::of(state), namespace)
        .await?
        .into_iter()
        .find(|d| {
            d.pointer("/metadata/name").and_then(Value::as_str) == Some(name)
                && visible(kind, view, caller, d)
        })
        .ok_or_else(|| match namespace {
            Some(ns) => ApiError::NotFound(format!("{} {ns}/{name} not found", kind.kind)),
            None => ApiError::NotFound(format!("{} {name} not found", kind.kind)),
        })
}

fn line(event_type: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{event_type}\",\"object\":{object}}}\n"))
}

/// `watch=true` on a view: the current objects as `ADDED` (unless a
/// `resourceVersion` says the client has listed them), then `ADDED`, `MODIFIED` and
/// `DELETED` as successive snapshots differ.
async fn watch(
    kind: &'static KindDef,
    view: View,
    state: &AppState,
    namespace: Option<String>,
    caller: Principal,
    options: ListOptions,
) -> Result<HttpResponse, ApiError> {
    let timeout = match options.timeout_seconds {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(seconds) => Duration::from_secs(seconds),
    };
    let mut changes = state.store.changes();
    let state = Sources::of(state);
    let listed = options.resource_version.is_some_and(|v| v > 0);
    let seen = move |items: Vec<Value>| -> BTreeMap<String, Value> {
        items
            .into_iter()
            .filter(|d| keeps(kind, view, &caller, &options, d))
            .map(|d| (key_of(&d), d))
            .collect()
    };
    let mut last = seen(snapshot(view, &state, namespace.as_deref()).await?);
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    let first: Vec<Bytes> = if listed {
        Vec::new()
    } else {
        last.values().map(|d| line("ADDED", d)).collect()
    };
    tokio::spawn(async move {
        for event in first {
            if tx.send(event).await.is_err() {
                return;
            }
        }
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            tokio::select! {
                changed = changes.changed() => if changed.is_err() { return },
                _ = tokio::time::sleep(SNAPSHOT_EVERY) => {}
                _ = tokio::time::sleep_until(deadline) => return,
                _ = tx.closed() => return,
            }
            let now = match snapshot(view, &state, namespace.as_deref()).await {
                Ok(items) => seen(items),
                Err(e) => {
                    tracing::warn!(error = %e, "watch of a view ended by a store error");
                    return;
                }
            };
            let mut events = Vec::new();
            for (key, document) in &now {
                match last.get(key) {
                    None => events.push(line("ADDED", document)),
                    Some(before) if before != document => events.push(line("MODIFIED", document)),
                    Some(_) => {}
                }
            }
            for (key, document) in &last {
                if !now.contains_key(key) {
                    events.push(line("DELETED", document));
                }
            }
            for event in events {
                if tx.send(event).await.is_err() {
                    return;
                }
            }
            last = now;
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache, private"))
        .streaming(body))
}

/// core/v1 `Namespace`; every Hearth namespace is `Active`.
fn namespace_object(row: &access::NamespaceRow) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {
            "name": row.name,
            "uid": format!("namespace-{}", row.name),
            "creationTimestamp": row.created_at,
            "labels": {"kubernetes.io/metadata.name": row.name},
        },
        "spec": {"finalizers": ["kubernetes"]},
        "status": {"phase": "Active"},
    })
}

/// The Pod name of a workload: the owner's name, the workload's own suffix (a Job's
/// attempt number, a replica's or step's id) and five characters of the owner's uid,
/// as Kubernetes names a Job's pods `<job>-<random>`; stable across restarts.
pub fn pod_name(record: &WorkloadRecord) -> String {
    let owner = &record.owner;
    let suffix = record
        .id
        .split_once(owner.uid.as_str())
        .map(|(_, rest)| rest.trim_start_matches('-'))
        .unwrap_or(record.id.as_str());
    let suffix: String = suffix
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    let uid: String = owner
        .uid
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .take(5)
        .collect::<String>()
        .to_ascii_lowercase();
    let mut parts = vec![owner.name.clone()];
    if !suffix.is_empty() {
        parts.push(suffix);
    }
    parts.push(uid);
    parts.join("-")
}

/// The `apiVersion` of an owner kind, for `ownerReferences`.
fn owner_api_version(owner: &Owner) -> &'static str {
    match owner.kind.as_str() {
        "Job" => "batch/v1",
        "InferenceService" => "serving.kserve.io/v1beta1",
        _ => "hearth.dev/v1",
    }
}

/// The labels Kubernetes (the Job controller), KServe or KFP put on such a pod.
fn pod_labels(record: &WorkloadRecord) -> Map<String, Value> {
    let owner = &record.owner;
    let mut labels = Map::new();
    let mut put = |k: &str, v: &str| {
        labels.insert(k.to_string(), Value::String(v.to_string()));
    };
    match owner.kind.as_str() {
        "Job" => {
            put("job-name", &owner.name);
            put("batch.kubernetes.io/job-name", &owner.name);
            put("controller-uid", &owner.uid);
            put("batch.kubernetes.io/controller-uid", &owner.uid);
            if let Some(index) = record.workload.labels.get("index") {
                put("batch.kubernetes.io/job-completion-index", index);
            }
        }
        "InferenceService" => {
            put("serving.kserve.io/inferenceservice", &owner.name);
            put("component", "predictor");
        }
        "PipelineRun" => {
            put("pipeline/runid", &owner.uid);
            put("pipelines.kubeflow.org/v2_component", "true");
        }
        _ => {}
    }
    put("hearth.dev/workload", &record.id);
    labels
}

/// core/v1 `Pod` of a workload: phase and one container's status as the kubelet
/// reports them.
fn pod(record: &WorkloadRecord, node: &str) -> Value {
    let owner = &record.owner;
    let workload = &record.workload;
    let container = CONTAINER;
    let (phase, ready) = match record.phase {
        WorkloadPhase::Queued | WorkloadPhase::Starting => ("Pending", false),
        WorkloadPhase::Running => ("Running", true),
        WorkloadPhase::Succeeded => ("Succeeded", false),
        WorkloadPhase::Failed | WorkloadPhase::Stopped => ("Failed", false),
    };
    let state = match (record.phase, &record.exit) {
        (_, Some(exit)) => {
            let mut terminated = json!({
                "exitCode": exit.exit_code.unwrap_or(if exit.succeeded() { 0 } else { 137 }),
                "reason": exit.reason,
                "finishedAt": exit.finished_at,
            });
            if let Some(started) = exit.started_at.as_ref().or(record.started_at.as_ref()) {
                terminated["startedAt"] = json!(started);
            }
            if !exit.message.is_empty() {
                terminated["message"] = json!(exit.message);
            }
            if let Some(signal) = exit.signal {
                terminated["signal"] = json!(signal);
            }
            json!({"terminated": terminated})
        }
        (WorkloadPhase::Running, None) => json!({"running": {"startedAt": record.started_at}}),
        (_, None) => json!({"waiting": {
            "reason": if record.phase == WorkloadPhase::Starting { "ContainerCreating" } else { "Pending" },
            "message": record.pending_reason.clone().unwrap_or_default(),
        }}),
    };
    let truth = |b: bool| if b { "True" } else { "False" };
    let scheduled = record.phase != WorkloadPhase::Queued;
    let transition = record
        .started_at
        .clone()
        .unwrap_or_else(|| record.created_at.clone());
    let mut conditions = vec![
        json!({"type": "PodScheduled", "status": truth(scheduled), "lastTransitionTime": record.created_at}),
    ];
    if !scheduled {
        conditions[0]["reason"] = json!("Unschedulable");
        conditions[0]["message"] = json!(record.pending_reason.clone().unwrap_or_default());
    }
    for kind in ["Initialized", "ContainersReady", "Ready"] {
        let status = if kind == "Initialized" { scheduled } else { ready };
        conditions.push(json!({"type": kind, "status": truth(status), "lastTransitionTime": transition}));
    }
    let mut limits = Map::new();
    if workload.resources.gpus > 0 {
        limits.insert(
            "nvidia.com/gpu".into(),
            json!(workload.resources.gpus.to_string()),
        );
    }
    let mut status = json!({
        "phase": phase,
        "conditions": conditions,
        "hostIP": "127.0.0.1",
        "containerStatuses": [{
            "name": container,
            "image": workload.image.clone().unwrap_or_default(),
            "imageID": "",
            "ready": ready,
            "started": record.phase == WorkloadPhase::Running,
            "restartCount": 0,
            "state": state,
        }],
        "qosClass": "BestEffort",
    });
    if let Some(started) = &record.started_at {
        status["startTime"] = json!(started);
    }
    let mut annotations = Map::new();
    if !record.gpu_uuids.is_empty() {
        // Which GPUs the pod holds (UUIDs, comma-separated, as `NVIDIA_VISIBLE_DEVICES`
        // names them): the web page's "held by" for each GPU.
        annotations.insert("hearth.dev/gpu-uuids".into(), json!(record.gpu_uuids.join(",")));
    }
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": pod_name(record),
            "namespace": owner.namespace,
            "uid": record.id,
            "creationTimestamp": record.created_at,
            "labels": pod_labels(record),
            "annotations": annotations,
            "ownerReferences": [{
                "apiVersion": owner_api_version(owner),
                "kind": owner.kind,
                "name": owner.name,
                "uid": owner.uid,
                "controller": true,
                "blockOwnerDeletion": true,
            }],
        },
        "spec": {
            "containers": [{
                "name": container,
                "image": workload.image.clone().unwrap_or_default(),
                "command": workload.command,
                "resources": {"limits": limits},
            }],
            "restartPolicy": "Never",
            "nodeName": node,
        },
        "status": status,
    })
}

/// Kubernetes' names for the architectures Rust names otherwise (`GOARCH`).
fn goarch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

fn os_image() -> String {
    std::fs::read_to_string("/etc/os-release")
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|l| l.strip_prefix("PRETTY_NAME="))
                .map(|v| v.trim_matches('"').to_string())
        })
        .unwrap_or_else(|| "Linux".into())
}

/// core/v1 `Node`: this host. GPUs from the inventory as the NVIDIA device plugin
/// and GPU feature discovery report them (`nvidia.com/gpu`, `nvidia.com/gpu.present`);
/// simulated GPUs (`[gpu] simulate = N`) carry `hearth.dev/gpu.simulated: "true"`.
fn node(state: &Sources, created: &str) -> Value {
    let host = crate::node::host_facts(&state.config.data_dir);
    let gpus = state.gpus.snapshot();
    let arch = goarch();
    let mut labels = json!({
        "kubernetes.io/hostname": host.hostname,
        "kubernetes.io/os": "linux",
        "kubernetes.io/arch": arch,
        "beta.kubernetes.io/os": "linux",
        "beta.kubernetes.io/arch": arch,
        "node-role.kubernetes.io/control-plane": "",
    });
    let mut annotations = json!({});
    if gpus.count() > 0 {
        labels["nvidia.com/gpu.present"] = json!("true");
        labels["nvidia.com/gpu.count"] = json!(gpus.count().to_string());
        if let Some(first) = gpus.devices.first() {
            labels["nvidia.com/gpu.product"] = json!(first.name.replace(' ', "-"));
        }
    }
    if gpus.simulated {
        labels["hearth.dev/gpu.simulated"] = json!("true");
        annotations["hearth.dev/gpu.simulated"] = json!("true");
    }
    if !gpus.devices.is_empty() {
        // Each GPU's last sample (`GpuDevice`: index, uuid, utilization, memory,
        // temperature, power, simulated) as JSON, so that a watch on the node streams
        // them as they change: what the web page's live GPU charts read. Kubernetes
        // has no field for it (GPU metrics go through DCGM there).
        annotations["hearth.dev/gpus"] = json!(serde_json::to_string(&gpus.devices).unwrap_or_default());
    }
    let resources = json!({
        "cpu": host.cpus.to_string(),
        "memory": format!("{}Ki", host.memory_total_bytes / 1024),
        "ephemeral-storage": format!("{}Ki", host.disk_total_bytes / 1024),
        "nvidia.com/gpu": gpus.count().to_string(),
        "pods": "110",
    });
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_default();
    json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": {
            "name": host.hostname,
            "uid": format!("node-{}", host.hostname),
            "creationTimestamp": created,
            "labels": labels,
            "annotations": annotations,
        },
        "spec": {},
        "status": {
            "capacity": resources,
            "allocatable": resources,
            "conditions": [{
                "type": "Ready",
                "status": "True",
                "reason": "KubeletReady",
                "message": "hearth is serving",
                "lastHeartbeatTime": created,
                "lastTransitionTime": created,
            }],
            "addresses": [
                {"type": "InternalIP", "address": "127.0.0.1"},
                {"type": "Hostname", "address": host.hostname},
            ],
            "nodeInfo": {
                "kernelVersion": kernel,
                "osImage": os_image(),
                "operatingSystem": "linux",
                "architecture": arch,
                "containerRuntimeVersion": "hearth-process://",
                "kubeletVersion": concat!("v", env!("CARGO_PKG_VERSION"), "-hearth"),
                "kubeProxyVersion": "",
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
            },
        },
    })
}

/// core/v1 `Event` of a recorded event, about the object it was recorded for.
fn event(e: &resources::ObjectEvent, host: &str) -> Value {
    let api_version = super::kinds::KINDS
        .iter()
        .find(|k| k.store_kind == e.kind && !k.store_kind.is_empty())
        .map(|k| k.api_version())
        .unwrap_or_else(|| "hearth.dev/v1".into());
    json!({
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {
            // As the API server names them: the object's name and a unique suffix.
            "name": format!("{}.{:016x}", e.name, e.id),
            "namespace": e.namespace,
            "uid": format!("event-{}", e.id),
            "creationTimestamp": e.event.first_timestamp,
        },
        "involvedObject": {
            "apiVersion": api_version,
            "kind": e.kind,
            "name": e.name,
            "namespace": e.namespace,
            "uid": e.uid,
        },
        "reason": e.event.reason,
        "message": e.event.message,
        "type": e.event.event_type,
        "count": e.event.count,
        "firstTimestamp": e.event.first_timestamp,
        "lastTimestamp": e.event.last_timestamp,
        "source": {"component": "hearth", "host": host},
        "reportingComponent": "hearth",
        "reportingInstance": host,
    })
}

/// KServe `serving.kserve.io/v1alpha1` `ClusterServingRuntime` of a runtime-table
/// entry (`spec.supportedModelFormats`, `protocolVersions`, one container with the
/// runtime's argv).
fn serving_runtime(runtime: &crate::serving::runtimes::ServingRuntime) -> Value {
    let formats: Vec<Value> = runtime
        .supported_model_formats
        .iter()
        .map(|f| {
            let mut format = json!({"name": f.name, "autoSelect": f.auto_select, "priority": f.priority});
            if let Some(version) = &f.version {
                format["version"] = json!(version);
            }
            format
        })
        .collect();
    let env: Vec<Value> = runtime
        .env
        .iter()
        .map(|(name, value)| json!({"name": name, "value": value}))
        .collect();
    json!({
        "apiVersion": "serving.kserve.io/v1alpha1",
        "kind": "ClusterServingRuntime",
        "metadata": {
            "name": runtime.name,
            "uid": format!("clusterservingruntime-{}", runtime.name),
            "annotations": {"hearth.dev/aliases": runtime.aliases.join(",")},
        },
        "spec": {
            "supportedModelFormats": formats,
            "protocolVersions": runtime.protocol_versions,
            "containers": [{"name": "kserve-container", "command": runtime.command, "env": env}],
        },
    })
}

/// The workload a pod name stands for.
pub async fn workload_of(state: &AppState, namespace: &str, name: &str) -> Result<WorkloadRecord, ApiError> {
    let ns = namespace.to_string();
    let records = state
        .store
        .call(move |conn| workloads::in_namespace(conn, Some(&ns)))
        .await?;
    records
        .into_iter()
        .find(|r| pod_name(r) == name)
        .ok_or_else(|| ApiError::NotFound(format!("Pod {namespace}/{name} not found")))
}

/// The container every pod has.
const CONTAINER: &str = "main";
/// The most lines `tailLines` may ask for.
const MAX_TAIL_LINES: u64 = 100_000_000;

/// The largest `limitBytes` (Kubernetes' field is an int64).
const MAX_LIMIT_BYTES: u64 = i64::MAX as u64;

/// core/v1 `PodLogOptions` (all of its fields but `insecureSkipTLSVerifyBackend`,
/// which concerns a kubelet Hearth does not have), checked as the API server checks
/// them: `sinceSeconds` and `limitBytes` at least 1, at most one of `sinceSeconds` and
/// `sinceTime`.
#[derive(Debug, Default)]
pub struct LogOptions {
    pub follow: bool,
    pub tail_lines: Option<usize>,
    pub timestamps: bool,
    /// The log of the attempt before this one (the previous container instance).
    pub previous: bool,
    /// Seconds before now.
    pub since_seconds: Option<u64>,
    pub since_time: Option<chrono::DateTime<chrono::Utc>>,
    pub limit_bytes: Option<u64>,
}

fn flag(key: &str, value: &str) -> Result<bool, ApiError> {
    match value {
        "true" | "1" => Ok(true),
        "false" | "0" | "" => Ok(false),
        other => Err(ApiError::BadRequest(format!(
            "query parameter {key}: must be true or false, not {other:?}"
        ))),
    }
}

fn integer_in(key: &str, value: &str, min: u64, max: u64) -> Result<u64, ApiError> {
    value
        .parse::<u64>()
        .ok()
        .filter(|n| (min..=max).contains(n))
        .ok_or_else(|| {
            ApiError::BadRequest(format!(
                "query parameter {key}: must be an integer from {min} to {max}, not {value:?}"
            ))
        })
}

impl LogOptions {
    pub fn parse(raw: &BTreeMap<String, String>) -> Result<LogOptions, ApiError> {
        let mut options = LogOptions::default();
        for (key, value) in raw {
            match key.as_str() {
                "pretty" => {}
                "container" if value.is_empty() || value == CONTAINER => {}
                "container" => {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter container: {value:?} is not a container of this pod (it has one: {CONTAINER})"
                    )))
                }
                "follow" => options.follow = flag(key, value)?,
                "timestamps" => options.timestamps = flag(key, value)?,
                "previous" => options.previous = flag(key, value)?,
                "tailLines" => {
                    let lines = integer_in(key, value, 0, MAX_TAIL_LINES)?;
                    options.tail_lines = Some(usize::try_from(lines).unwrap_or(usize::MAX));
                }
                "sinceSeconds" => {
                    options.since_seconds = Some(integer_in(key, value, 1, crate::model::strict::MAX_SECONDS)?)
                }
                "sinceTime" => {
                    let at = chrono::DateTime::parse_from_rfc3339(value).map_err(|e| {
                        ApiError::BadRequest(format!(
                            "query parameter sinceTime: must be an RFC 3339 time such as 2026-01-02T15:04:05Z, not {value:?} ({e})"
                        ))
                    })?;
                    options.since_time = Some(at.with_timezone(&chrono::Utc));
                }
                "limitBytes" => options.limit_bytes = Some(integer_in(key, value, 1, MAX_LIMIT_BYTES)?),
                other => {
                    return Err(ApiError::BadRequest(format!(
                        "query parameter {other}: is not known here (container, follow, previous, sinceSeconds, sinceTime, timestamps, tailLines, limitBytes, pretty)"
                    )))
                }
            }
        }
        if options.since_seconds.is_some() && options.since_time.is_some() {
            return Err(ApiError::BadRequest(
                "query parameters sinceSeconds and sinceTime: at most one of sinceTime or sinceSeconds may be specified".into(),
            ));
        }
        Ok(options)
    }

    /// Whether a line-by-line read is needed (else the log's bytes are sent as they
    /// are).
    pub fn per_line(&self) -> bool {
        self.timestamps
            || self.since_seconds.is_some()
            || self.since_time.is_some()
            || self.limit_bytes.is_some()
    }

    /// The line options, with the since time taken from `now` (ns since the epoch).
    pub fn lines(&self, now: i64) -> super::pod_log::LineOptions {
        const NANOS: i64 = 1_000_000_000;
        let since = match (self.since_seconds, self.since_time) {
            (Some(seconds), _) => Some(
                i64::try_from(seconds)
                    .ok()
                    .and_then(|s| s.checked_mul(NANOS))
                    .and_then(|back| now.checked_sub(back))
                    .unwrap_or(i64::MIN),
            ),
            (None, Some(at)) => Some(at.timestamp_nanos_opt().unwrap_or(i64::MIN)),
            (None, None) => None,
        };
        let needs_times = if self.timestamps {
            Some("timestamps")
        } else if self.since_seconds.is_some() {
            Some("sinceSeconds")
        } else if self.since_time.is_some() {
            Some("sinceTime")
        } else {
            None
        };
        super::pod_log::LineOptions {
            timestamps: self.timestamps,
            since,
            limit_bytes: self.limit_bytes,
            tail_lines: self.tail_lines,
            follow: self.follow,
            needs_times,
        }
    }
}

/// The workload that ran before `record` in the same place, of the same owner: the
/// same Job pod (its `pod` label, kept by a restart under `restartPolicy: OnFailure`)
/// and completion index, or the same pipeline task. That is the previous container
/// instance of its pod, as `previous=true` asks. A serving replica has none (one that
/// ends is replaced by a new pod, as a Deployment's is). `BadRequest` as the kubelet
/// answers when there is none.
pub async fn previous_of(
    state: &AppState,
    record: &WorkloadRecord,
    pod: &str,
) -> Result<WorkloadRecord, ApiError> {
    let slot = |r: &WorkloadRecord| {
        let label = |k: &str| r.workload.labels.get(k).cloned();
        (label("index"), label("task"), label("pod"))
    };
    let not_found = || {
        ApiError::BadRequest(format!(
            "previous terminated container \"{CONTAINER}\" in pod \"{pod}\" not found"
        ))
    };
    let mine = slot(record);
    if mine.1.is_none() && mine.2.is_none() {
        return Err(not_found());
    }
    let records = state.scheduler.list_by_owner(&record.owner.uid).await?;
    records
        .into_iter()
        .filter(|r| r.seq < record.seq && r.phase.is_final() && slot(r) == mine)
        .max_by_key(|r| r.seq)
        .ok_or_else(not_found)
}
