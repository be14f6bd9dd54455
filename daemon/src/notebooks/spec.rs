//! A Kubeflow `Notebook` (`kubeflow.org/v1`, `v1beta1`), as far as one host honours it
//! in process mode. The spec is a pod template (Kubeflow's `NotebookSpec.template`,
//! see the CRD `kubeflow.org_notebooks.yaml` of kubeflow/notebooks); every field is
//! either used or refused by name with the reason, as Jobs are.
//!
//! What the fields become here:
//! - `containers[0].image`: recorded (run by the container runtimes); process mode runs
//!   the Jupyter server of `[notebooks] command` instead of the image's entrypoint.
//! - `containers[0].resources`: the scheduler's CPU, memory and `nvidia.com/gpu` request.
//! - `containers[0].env`: the server's environment (after `NB_PREFIX`, which Kubeflow's
//!   controller also sets, so a user value wins as it would in a pod).
//! - `volumes[].persistentVolumeClaim.claimName` mounted by `volumeMounts`: the
//!   persistent workspace directory `<data-dir>/workspaces/<namespace>/<claimName>`,
//!   the server's root dir. It outlives the notebook (as a PVC outlives its pod).
//! - an `emptyDir` with `medium: Memory` at `/dev/shm` (Kubeflow's "shm" option): the
//!   host's own `/dev/shm`, which a process already has.

use serde_json::Value;

use crate::jobs::spec::{env, resources};
use crate::model::strict::{only_keys, opt_string, FieldError};
use crate::runtime::identity::SecurityContext;
use crate::runtime::ResourceRequest;

pub const KIND: &str = "Notebook";
pub const API_VERSION: &str = "kubeflow.org/v1";
pub const API_VERSION_BETA: &str = "kubeflow.org/v1beta1";
/// Versions a document may name; `v1alpha1` is refused by name (its schema is v1's,
/// but upstream no longer serves it).
pub const API_VERSIONS: &[&str] = &[API_VERSION, API_VERSION_BETA];

/// Kubeflow's stop annotation: present (any value, Kubeflow writes a timestamp) means
/// the server is stopped; its workspace stays.
pub const STOPPED_ANNOTATION: &str = "kubeflow-resource-stopped";
/// Kubeflow's culler records the last activity it saw here (RFC 3339).
pub const LAST_ACTIVITY_ANNOTATION: &str = "notebooks.kubeflow.org/last-activity";
/// Hearth's: `"true"` on a notebook being deleted removes its workspace directories too
/// (`kubectl annotate notebook x hearth.dev/purge-workspace=true` before the delete).
pub const PURGE_ANNOTATION: &str = "hearth.dev/purge-workspace";

pub const SPEC_FIELDS: &[&str] = &["template"];
/// Kubeflow's CRD declares only `spec` in the template (its API server would prune a
/// `metadata`): refused here rather than dropped.
pub const TEMPLATE_FIELDS: &[&str] = &["spec"];
pub const POD_FIELDS: &[&str] = &[
    "containers",
    "volumes",
    "serviceAccountName",
    "tolerations",
    "securityContext",
    "terminationGracePeriodSeconds",
];
pub const CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "env",
    "resources",
    "volumeMounts",
    "ports",
    "securityContext",
    "terminationMessagePolicy",
    "terminationMessagePath",
];
pub const VOLUME_FIELDS: &[&str] = &["name", "persistentVolumeClaim", "emptyDir"];
pub const VOLUME_MOUNT_FIELDS: &[&str] = &["name", "mountPath", "readOnly"];

fn pod_field_reason(key: &str) -> &'static str {
    match key {
        "initContainers" | "ephemeralContainers" => {
            "Hearth runs one Jupyter server process per notebook; init and sidecar containers are not built"
        }
        "nodeSelector" | "nodeName" | "affinity" | "schedulerName" | "topologySpreadConstraints"
        | "priority" | "priorityClassName" | "preemptionPolicy" | "runtimeClassName" => {
            "Hearth places notebooks on its one host through its own queue (notebook priority); there is no node choice"
        }
        "hostNetwork" | "hostPID" | "hostIPC" | "dnsPolicy" | "dnsConfig" | "hostAliases" | "hostname"
        | "subdomain" | "enableServiceLinks" | "shareProcessNamespace" => {
            "the process runtime has no network or process namespaces: the server listens on 127.0.0.1 behind Hearth's proxy"
        }
        "imagePullSecrets" | "automountServiceAccountToken" | "serviceAccount" => {
            "the process runtime neither pulls images nor mounts Kubernetes credentials"
        }
        _ => "not a pod spec field Hearth knows",
    }
}

fn container_field_reason(key: &str) -> &'static str {
    match key {
        "command" | "args" | "workingDir" => {
            "process mode runs the Jupyter server of [notebooks] command in config.toml, with the workspace as its root dir, not the image's entrypoint"
        }
        "livenessProbe" | "readinessProbe" | "startupProbe" | "lifecycle" => {
            "Hearth probes the Jupyter server's /api/status itself; custom probes and hooks are not built"
        }
        "envFrom" => "envFrom reads ConfigMaps and Secrets, which need a Kubernetes API server; give env values",
        "volumeDevices" | "resizePolicy" | "restartPolicy" | "stdin" | "stdinOnce" | "tty" => {
            "not built for notebook servers in process mode"
        }
        _ => "not a container field Hearth knows",
    }
}

fn volume_source_reason(key: &str) -> &'static str {
    match key {
        "configMap" | "secret" | "projected" | "downwardAPI" => {
            "ConfigMaps, Secrets and projected volumes need a Kubernetes API server"
        }
        "hostPath" => "the process runtime already sees the host's filesystem; give the path in the notebook instead",
        _ => "only persistentVolumeClaim (a workspace directory) and emptyDir (Memory, at /dev/shm) volumes are honoured",
    }
}

/// A persistent workspace: the directory a PVC name maps to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Workspace {
    /// `persistentVolumeClaim.claimName`: the directory's name in the namespace.
    pub claim_name: String,
    /// Where the pod would mount it (`/home/jovyan` in Kubeflow's spawner).
    pub mount_path: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NotebookSpec {
    pub image: Option<String>,
    pub container_name: String,
    pub env: Vec<(String, String)>,
    pub resources: ResourceRequest,
    /// The root dir's volume; `None`: a scratch directory that goes with the notebook.
    pub workspace: Option<Workspace>,
    pub termination_grace_seconds: u64,
    pub security_context: Option<SecurityContext>,
}

/// Kubernetes' DNS-1123 subdomain rule for a claim name, which also keeps it a safe
/// single path component.
fn claim_name_ok(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 253
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && name.starts_with(|c: char| c.is_ascii_alphanumeric())
        && name.ends_with(|c: char| c.is_ascii_alphanumeric())
}

enum Volume {
    Claim(String),
    Memory,
}

fn volumes(pod: &Value) -> Result<Vec<(String, Volume)>, FieldError> {
    let Some(list) = pod.get("volumes").filter(|v| !v.is_null()) else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| FieldError::invalid("spec.template.spec.volumes", "must be a list"))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let path = format!("spec.template.spec.volumes[{i}]");
        let Some(fields) = item.as_object() else {
            return Err(FieldError::invalid(path, "must be an object"));
        };
        if let Some(key) = fields.keys().find(|k| !VOLUME_FIELDS.contains(&k.as_str())) {
            return Err(FieldError::unsupported(
                format!("{path}.{key}"),
                volume_source_reason(key),
            ));
        }
        let name = opt_string(item, "name", &path)?
            .ok_or_else(|| FieldError::invalid(format!("{path}.name"), "is required"))?;
        if out.iter().any(|(n, _)| *n == name) {
            return Err(FieldError::invalid(
                format!("{path}.name"),
                format!("{name:?} is used by another volume"),
            ));
        }
        let volume = match (item.get("persistentVolumeClaim"), item.get("emptyDir")) {
            (Some(claim), None) => {
                let claim_path = format!("{path}.persistentVolumeClaim");
                only_keys(
                    claim,
                    &claim_path,
                    &["claimName", "readOnly"],
                    "not a persistentVolumeClaim field",
                )?;
                if claim.get("readOnly") == Some(&Value::Bool(true)) {
                    return Err(FieldError::unsupported(
                        format!("{claim_path}.readOnly"),
                        "a read-only workspace cannot be a Jupyter server's root dir",
                    ));
                }
                let claim_name = opt_string(claim, "claimName", &claim_path)?
                    .ok_or_else(|| FieldError::invalid(format!("{claim_path}.claimName"), "is required"))?;
                if !claim_name_ok(&claim_name) {
                    return Err(FieldError::invalid(
                        format!("{claim_path}.claimName"),
                        format!("{claim_name:?} is not a valid claim name (a DNS-1123 subdomain)"),
                    ));
                }
                Volume::Claim(claim_name)
            }
            (None, Some(empty)) => {
                let empty_path = format!("{path}.emptyDir");
                only_keys(
                    empty,
                    &empty_path,
                    &["medium", "sizeLimit"],
                    "not an emptyDir field",
                )?;
                match opt_string(empty, "medium", &empty_path)?.as_deref() {
                    Some("Memory") => Volume::Memory,
                    _ => {
                        return Err(FieldError::unsupported(
                            format!("{empty_path}.medium"),
                            "only a memory-backed emptyDir (medium: Memory, mounted at /dev/shm) is honoured: the host's /dev/shm",
                        ))
                    }
                }
            }
            (Some(_), Some(_)) => {
                return Err(FieldError::invalid(path, "names two volume sources; give one"));
            }
            (None, None) => {
                return Err(FieldError::invalid(
                    path,
                    "needs a source: persistentVolumeClaim or emptyDir",
                ))
            }
        };
        out.push((name, volume));
    }
    Ok(out)
}

fn workspace(
    container: &Value,
    path: &str,
    declared: &[(String, Volume)],
) -> Result<Option<Workspace>, FieldError> {
    let Some(list) = container.get("volumeMounts").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let items = list
        .as_array()
        .ok_or_else(|| FieldError::invalid(format!("{path}.volumeMounts"), "must be a list"))?;
    let mut found: Option<Workspace> = None;
    for (i, item) in items.iter().enumerate() {
        let mount_path = format!("{path}.volumeMounts[{i}]");
        let Some(fields) = item.as_object() else {
            return Err(FieldError::invalid(mount_path, "must be an object"));
        };
        if let Some(key) = fields.keys().find(|k| !VOLUME_MOUNT_FIELDS.contains(&k.as_str())) {
            return Err(FieldError::unsupported(
                format!("{mount_path}.{key}"),
                "process mode maps a whole claim to the server's root dir; subPath and mount propagation are not built",
            ));
        }
        let name = opt_string(item, "name", &mount_path)?
            .ok_or_else(|| FieldError::invalid(format!("{mount_path}.name"), "is required"))?;
        let target = opt_string(item, "mountPath", &mount_path)?
            .ok_or_else(|| FieldError::invalid(format!("{mount_path}.mountPath"), "is required"))?;
        let Some((_, volume)) = declared.iter().find(|(n, _)| *n == name) else {
            return Err(FieldError::invalid(
                format!("{mount_path}.name"),
                format!("{name:?} is not one of spec.template.spec.volumes"),
            ));
        };
        match volume {
            Volume::Memory if target == "/dev/shm" => {}
            Volume::Memory => {
                return Err(FieldError::unsupported(
                    format!("{mount_path}.mountPath"),
                    format!("{target:?}: process mode cannot mount a memory-backed emptyDir anywhere but /dev/shm (the host's)"),
                ))
            }
            Volume::Claim(claim) => {
                if item.get("readOnly") == Some(&Value::Bool(true)) {
                    return Err(FieldError::unsupported(
                        format!("{mount_path}.readOnly"),
                        "a read-only workspace cannot be a Jupyter server's root dir",
                    ));
                }
                if found.is_some() {
                    return Err(FieldError::unsupported(
                        mount_path,
                        "process mode has one workspace per notebook (the server's root dir); mount one persistentVolumeClaim",
                    ));
                }
                found = Some(Workspace {
                    claim_name: claim.clone(),
                    mount_path: target,
                });
            }
        }
    }
    Ok(found)
}

/// Checks a Notebook spec; every field is used or refused naming its path.
pub fn parse(spec: &Value) -> Result<NotebookSpec, FieldError> {
    let Some(fields) = spec.as_object() else {
        return Err(FieldError::invalid("spec", "must be an object"));
    };
    if let Some(key) = fields.keys().find(|k| !SPEC_FIELDS.contains(&k.as_str())) {
        return Err(FieldError::unsupported(
            format!("spec.{key}"),
            "not a Kubeflow NotebookSpec field (it has only template)",
        ));
    }
    let template = spec
        .get("template")
        .ok_or_else(|| FieldError::invalid("spec.template", "is required"))?;
    only_keys(
        template,
        "spec.template",
        TEMPLATE_FIELDS,
        "not a pod template field",
    )?;
    let pod = template
        .get("spec")
        .ok_or_else(|| FieldError::invalid("spec.template.spec", "is required"))?;
    let Some(pod_fields) = pod.as_object() else {
        return Err(FieldError::invalid("spec.template.spec", "must be an object"));
    };
    if let Some(key) = pod_fields.keys().find(|k| !POD_FIELDS.contains(&k.as_str())) {
        return Err(FieldError::unsupported(
            format!("spec.template.spec.{key}"),
            pod_field_reason(key),
        ));
    }
    // `serviceAccountName` (Kubeflow's `default-editor`) is taken: the server runs as
    // the namespace's own user, which is what that account grants in Kubeflow.
    opt_string(pod, "serviceAccountName", "spec.template.spec")?;
    let containers = pod.get("containers").and_then(Value::as_array).ok_or_else(|| {
        FieldError::invalid(
            "spec.template.spec.containers",
            "is required (a list with one container)",
        )
    })?;
    match containers.len() {
        0 => {
            return Err(FieldError::invalid(
                "spec.template.spec.containers",
                "needs one container",
            ))
        }
        1 => {}
        n => {
            return Err(FieldError::unsupported(
                "spec.template.spec.containers[1]",
                format!("{n} containers: Hearth runs one Jupyter server process per notebook"),
            ))
        }
    }
    let path = "spec.template.spec.containers[0]";
    let container = &containers[0];
    let Some(container_fields) = container.as_object() else {
        return Err(FieldError::invalid(path, "must be an object"));
    };
    if let Some(key) = container_fields
        .keys()
        .find(|k| !CONTAINER_FIELDS.contains(&k.as_str()))
    {
        return Err(FieldError::unsupported(
            format!("{path}.{key}"),
            container_field_reason(key),
        ));
    }
    let declared = volumes(pod)?;
    let termination_grace_seconds = match pod.get("terminationGracePeriodSeconds") {
        None | Some(Value::Null) => 30,
        Some(v) => v.as_u64().filter(|s| *s <= 3600).ok_or_else(|| {
            FieldError::invalid(
                "spec.template.spec.terminationGracePeriodSeconds",
                "must be a whole number of seconds, 0 to 3600",
            )
        })?,
    };
    Ok(NotebookSpec {
        image: opt_string(container, "image", path)?.filter(|i| !i.is_empty()),
        container_name: opt_string(container, "name", path)?.unwrap_or_else(|| "notebook".into()),
        env: env(container, path)?,
        resources: resources(container, path)?,
        workspace: workspace(container, path, &declared)?,
        termination_grace_seconds,
        security_context: SecurityContext::parse(pod, "spec.template.spec", container, path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse_pod(pod: Value) -> Result<NotebookSpec, FieldError> {
        parse(&json!({"template": {"spec": pod}}))
    }

    #[test]
    fn a_kubeflow_spawner_notebook_is_read_with_its_workspace() {
        let spec = parse_pod(json!({
            "serviceAccountName": "default-editor",
            "containers": [{"name": "nb", "image": "jupyter-scipy",
                "resources": {"requests": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1},
                              "limits": {"nvidia.com/gpu": 1}},
                "env": [{"name": "A", "value": "b"}],
                "volumeMounts": [{"name": "ws", "mountPath": "/home/jovyan"},
                                 {"name": "dshm", "mountPath": "/dev/shm"}]}],
            "volumes": [{"name": "ws", "persistentVolumeClaim": {"claimName": "nb-workspace"}},
                        {"name": "dshm", "emptyDir": {"medium": "Memory"}}],
        }))
        .unwrap();
        assert_eq!(spec.resources.gpus, 1);
        assert_eq!(spec.resources.cpu_millis, 500);
        assert_eq!(spec.env, vec![("A".to_string(), "b".to_string())]);
        assert_eq!(
            spec.workspace,
            Some(Workspace {
                claim_name: "nb-workspace".into(),
                mount_path: "/home/jovyan".into()
            })
        );
    }

    #[test]
    fn what_process_mode_cannot_honour_is_refused_by_name() {
        let refused = |pod: Value| match parse_pod(pod) {
            Err(FieldError::Unsupported { path, .. } | FieldError::Invalid { path, .. }) => path,
            Ok(_) => panic!("accepted"),
        };
        assert_eq!(
            refused(json!({"containers": [{"name": "a", "command": ["x"]}]})),
            "spec.template.spec.containers[0].command"
        );
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a"}], "volumes": [{"name": "c", "configMap": {"name": "x"}}]})
            ),
            "spec.template.spec.volumes[0].configMap"
        );
        assert_eq!(
            refused(json!({"containers": [{"name": "a"}], "affinity": {}})),
            "spec.template.spec.affinity"
        );
        assert_eq!(
            refused(
                json!({"containers": [{"name": "a", "volumeMounts": [{"name": "nope", "mountPath": "/x"}]}]})
            ),
            "spec.template.spec.containers[0].volumeMounts[0].name"
        );
        assert_eq!(
            refused(json!({"containers": [{"name": "a"}],
                "volumes": [{"name": "c", "persistentVolumeClaim": {"claimName": "../etc"}}]})),
            "spec.template.spec.volumes[0].persistentVolumeClaim.claimName"
        );
        assert_eq!(
            refused(json!({"containers": [{"name": "a"}, {"name": "b"}]})),
            "spec.template.spec.containers[1]"
        );
    }
}
