//! The Pod a workload becomes (`pod_manifest`), and what Hearth reads back from a pod's
//! status: whether it ended, when it started, how it ended (`exit_from`), its ports
//! and IP. Pure functions of the workload or the pod, so that their shapes are tested,
//! and checked with `kubernetes-validate`, without a cluster.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::Path;

use k8s_openapi::api::core::v1::{
    Container, ContainerPort, ContainerStatus, EnvVar, HostPathVolumeSource, Pod, PodSecurityContext,
    PodSpec, ResourceRequirements, Toleration, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::runtime::docker::IMAGE_PULL_BACK_OFF;
use crate::runtime::shim::STOP;
use crate::runtime::{ExitInfo, Workload};

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
pub(super) const HOSTNAME_LABEL: &str = "kubernetes.io/hostname";

/// Waiting reasons after which the container will not start without a change to the
/// pod: the workload ends with them, as Docker's does at a failed pull.
pub(super) const PULL_FAILURES: &[&str] = &[
    "ErrImagePull",
    "ImagePullBackOff",
    "InvalidImageName",
    "ErrImageNeverPull",
];
pub(super) const START_FAILURES: &[&str] = &[
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
pub(super) fn label_value(v: &str) -> String {
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

pub(super) fn quantity(v: impl ToString) -> Quantity {
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

pub(super) fn annotation<'a>(pod: &'a Pod, key: &str) -> Option<&'a str> {
    pod.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

pub(super) fn container_status(pod: &Pod) -> Option<&ContainerStatus> {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .and_then(|c| c.iter().find(|c| c.name == CONTAINER))
}

/// The waiting reason and message of a container that will not start as things are.
pub(super) fn failed_start(pod: &Pod) -> Option<(&str, String)> {
    let waiting = container_status(pod)?.state.as_ref()?.waiting.as_ref()?;
    let reason = waiting.reason.as_deref()?;
    (PULL_FAILURES.contains(&reason) || START_FAILURES.contains(&reason))
        .then(|| (reason, waiting.message.clone().unwrap_or_default()))
}

/// Whether the pod is over: it succeeded or failed, or its container cannot start.
pub(super) fn ended(pod: &Pod) -> bool {
    matches!(
        pod.status.as_ref().and_then(|s| s.phase.as_deref()),
        Some("Succeeded" | "Failed")
    ) || failed_start(pod).is_some()
}

/// When the command started: the container's start, else the pod's, else now.
pub(super) fn started_at(pod: &Pod) -> String {
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
pub(super) fn exit_from(dir: &Path, pod: &Pod) -> ExitInfo {
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

pub(super) fn pod_ports(pod: &Pod) -> Vec<u16> {
    annotation(pod, ANNOTATION_PORTS)
        .map(|p| p.split(',').filter_map(|p| p.parse().ok()).collect())
        .unwrap_or_default()
}

pub(super) fn pod_ip(pod: &Pod) -> Option<IpAddr> {
    pod.status
        .as_ref()
        .and_then(|s| s.pod_ip.as_deref())
        .and_then(|ip| ip.parse().ok())
}
