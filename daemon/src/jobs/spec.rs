//! A Kubernetes `batch/v1` Job, as far as one host honours it. Every field is either
//! used or refused by name.

use serde_json::Value;

use crate::model::quantity;
use crate::model::strict::{object, only_keys, opt_string, opt_u64, string_list, FieldError};
use crate::runtime::identity::SecurityContext;
use crate::runtime::ResourceRequest;

pub const API_VERSION: &str = "batch/v1";
pub const KIND: &str = "Job";

const NOT_IN_PROCESS_MODE: &str =
    "Hearth's process runtime cannot honour it; remove it, or use a runtime that can";

#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub image: Option<String>,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub resources: ResourceRequest,
    pub backoff_limit: u64,
    pub active_deadline_seconds: Option<u64>,
    pub ttl_seconds_after_finished: Option<u64>,
    pub termination_grace_seconds: u64,
    pub restart_policy: String,
    /// The pod's and container's `securityContext`, merged (see `runtime::identity`).
    pub security_context: Option<SecurityContext>,
}

fn resources(container: &Value, path: &str) -> Result<ResourceRequest, FieldError> {
    let Some(resources) = container.get("resources") else {
        return Ok(ResourceRequest::default());
    };
    let path = format!("{path}.resources");
    only_keys(
        resources,
        &path,
        &["limits", "requests"],
        "only limits and requests are honoured",
    )?;
    let mut request = ResourceRequest::default();
    let mut gpu_limit = None;
    let mut gpu_request = None;
    for section in ["requests", "limits"] {
        let Some(values) = resources.get(section) else {
            continue;
        };
        let section_path = format!("{path}.{section}");
        for (name, value) in object(values, &section_path)? {
            let field = format!("{section_path}.{name}");
            let text = match value {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                _ => return Err(FieldError::invalid(&field, "must be a quantity")),
            };
            match name.as_str() {
                // Requests decide admission; a limit alone counts as the request, as in
                // Kubernetes.
                "cpu" => {
                    let v = quantity::cpu_millis(&text, &field)?;
                    if section == "requests" || request.cpu_millis == 0 {
                        request.cpu_millis = v;
                    }
                }
                "memory" => {
                    let v = quantity::bytes(&text, &field)?;
                    if section == "requests" || request.memory_bytes == 0 {
                        request.memory_bytes = v;
                    }
                }
                "nvidia.com/gpu" => {
                    let v = quantity::count(&text, &field)?;
                    if section == "limits" {
                        gpu_limit = Some(v);
                    } else {
                        gpu_request = Some(v);
                    }
                }
                "ephemeral-storage" => {
                    quantity::bytes(&text, &field)?;
                }
                other => {
                    return Err(FieldError::unsupported(
                        &field,
                        format!(
                            "the resource {other:?} is not known to Hearth (cpu, memory, nvidia.com/gpu)"
                        ),
                    ))
                }
            }
        }
    }
    if let (Some(l), Some(r)) = (gpu_limit, gpu_request) {
        if l != r {
            return Err(FieldError::invalid(
                format!("{path}.requests.nvidia.com/gpu"),
                "must equal the limit (GPUs cannot be overcommitted)",
            ));
        }
    }
    request.gpus = gpu_limit.or(gpu_request).unwrap_or(0);
    Ok(request)
}

fn env(container: &Value, path: &str) -> Result<Vec<(String, String)>, FieldError> {
    let Some(list) = container.get("env") else {
        return Ok(Vec::new());
    };
    let items = list
        .as_array()
        .ok_or_else(|| FieldError::invalid(format!("{path}.env"), "must be a list"))?;
    let mut out = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let item_path = format!("{path}.env[{i}]");
        only_keys(
            item,
            &item_path,
            &["name", "value"],
            "only literal values are honoured (valueFrom needs a Kubernetes API server)",
        )?;
        let name = opt_string(item, "name", &item_path)?
            .ok_or_else(|| FieldError::invalid(format!("{item_path}.name"), "is required"))?;
        let value = match item.get("value") {
            None | Some(Value::Null) => String::new(),
            Some(Value::String(s)) => s.clone(),
            Some(other) => other.to_string(),
        };
        out.push((name, value));
    }
    Ok(out)
}

pub fn parse(spec: &Value) -> Result<JobSpec, FieldError> {
    only_keys(
        spec,
        "spec",
        &[
            "template",
            "backoffLimit",
            "activeDeadlineSeconds",
            "ttlSecondsAfterFinished",
            "completions",
            "parallelism",
            "completionMode",
            "suspend",
        ],
        NOT_IN_PROCESS_MODE,
    )?;
    for key in ["completions", "parallelism"] {
        if let Some(n) = opt_u64(spec, key, "spec")? {
            if n != 1 {
                return Err(FieldError::unsupported(
                    format!("spec.{key}"),
                    "only 1 is supported (one pod per job)",
                ));
            }
        }
    }
    if let Some(mode) = opt_string(spec, "completionMode", "spec")? {
        if mode != "NonIndexed" {
            return Err(FieldError::unsupported(
                "spec.completionMode",
                format!("{mode:?}: only NonIndexed is supported"),
            ));
        }
    }
    if spec.get("suspend").and_then(Value::as_bool) == Some(true) {
        return Err(FieldError::unsupported(
            "spec.suspend",
            "suspended jobs are not supported",
        ));
    }
    let template = spec
        .get("template")
        .ok_or_else(|| FieldError::invalid("spec.template", "is required"))?;
    only_keys(
        template,
        "spec.template",
        &["metadata", "spec"],
        NOT_IN_PROCESS_MODE,
    )?;
    let pod = template
        .get("spec")
        .ok_or_else(|| FieldError::invalid("spec.template.spec", "is required"))?;
    only_keys(
        pod,
        "spec.template.spec",
        &[
            "containers",
            "restartPolicy",
            "terminationGracePeriodSeconds",
            "tolerations",
            "securityContext",
        ],
        NOT_IN_PROCESS_MODE,
    )?;
    let restart_policy =
        opt_string(pod, "restartPolicy", "spec.template.spec")?.unwrap_or_else(|| "Never".into());
    if restart_policy != "Never" && restart_policy != "OnFailure" {
        return Err(FieldError::invalid(
            "spec.template.spec.restartPolicy",
            format!("{restart_policy:?}: a Job's pods use Never or OnFailure"),
        ));
    }
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
                format!("{n} containers: Hearth runs one primary container per job"),
            ))
        }
    }
    let path = "spec.template.spec.containers[0]";
    let container = &containers[0];
    only_keys(
        container,
        path,
        &[
            "name",
            "image",
            "command",
            "args",
            "env",
            "workingDir",
            "resources",
            "imagePullPolicy",
            "ports",
            "terminationMessagePolicy",
            "terminationMessagePath",
            "securityContext",
        ],
        NOT_IN_PROCESS_MODE,
    )?;
    let mut command = string_list(container, "command", path)?;
    if command.is_empty() {
        return Err(FieldError::invalid(
            format!("{path}.command"),
            "is required in process mode: the image's entrypoint is not available on the host",
        ));
    }
    command.extend(string_list(container, "args", path)?);
    let backoff_limit = opt_u64(spec, "backoffLimit", "spec")?.unwrap_or(6);
    Ok(JobSpec {
        image: opt_string(container, "image", path)?,
        command,
        env: env(container, path)?,
        working_dir: opt_string(container, "workingDir", path)?,
        resources: resources(container, path)?,
        backoff_limit,
        active_deadline_seconds: opt_u64(spec, "activeDeadlineSeconds", "spec")?,
        ttl_seconds_after_finished: opt_u64(spec, "ttlSecondsAfterFinished", "spec")?,
        termination_grace_seconds: opt_u64(pod, "terminationGracePeriodSeconds", "spec.template.spec")?
            .unwrap_or(30),
        restart_policy,
        security_context: SecurityContext::parse(pod, "spec.template.spec", container, path)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn job(container: Value) -> Value {
        json!({"template": {"spec": {"containers": [container], "restartPolicy": "Never"}}})
    }

    #[test]
    fn a_gpu_job_parses() {
        let spec = parse(&job(json!({
            "name": "train", "image": "pytorch", "command": ["python", "train.py"], "args": ["--epochs", 3],
            "env": [{"name": "A", "value": "1"}],
            "resources": {"limits": {"nvidia.com/gpu": 1, "memory": "1Gi"}, "requests": {"cpu": "500m"}}
        })))
        .unwrap();
        assert_eq!(spec.command, vec!["python", "train.py", "--epochs", "3"]);
        assert_eq!(
            spec.resources,
            ResourceRequest {
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                gpus: 1
            }
        );
        assert_eq!(spec.backoff_limit, 6);
    }

    #[test]
    fn unhonoured_fields_are_refused_by_name() {
        let mut doc = job(json!({"command": ["true"]}));
        doc["template"]["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            parse(&doc).unwrap_err(),
            FieldError::unsupported("spec.template.spec.hostNetwork", NOT_IN_PROCESS_MODE)
        );
        let mut doc = job(json!({"command": ["true"]}));
        doc["template"]["spec"]["initContainers"] = json!([]);
        assert!(
            matches!(parse(&doc), Err(FieldError::Unsupported { path, .. }) if path == "spec.template.spec.initContainers")
        );
        let doc = job(json!({"command": ["true"], "env": [{"name": "X", "valueFrom": {}}]}));
        assert!(
            matches!(parse(&doc), Err(FieldError::Unsupported { path, .. }) if path.ends_with("env[0].valueFrom"))
        );
        let two = json!({"template": {"spec": {"containers": [{"command": ["a"]}, {"command": ["b"]}]}}});
        assert!(
            matches!(parse(&two), Err(FieldError::Unsupported { path, .. }) if path.ends_with("containers[1]"))
        );
        assert!(matches!(
            parse(&job(json!({"image": "x"}))),
            Err(FieldError::Invalid { .. })
        ));
    }
}
