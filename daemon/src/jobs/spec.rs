//! A Kubernetes `batch/v1` Job, as far as one host honours it. Every field is either
//! used or refused by name, with the reason it cannot be honoured here. Every number is
//! bounded, so that nothing stored can overflow the controller's arithmetic.
//!
//! Field semantics and limits follow the Kubernetes Job API reference
//! (`k8s.io/api/batch/v1` `JobSpec`) and its validation
//! (`pkg/apis/batch/validation`).

use serde_json::Value;

use crate::model::quantity;
use crate::model::strict::{object, only_keys, opt_string, opt_u64_in, string_list, FieldError, MAX_SECONDS};
use crate::runtime::identity::SecurityContext;
use crate::runtime::ResourceRequest;

pub const API_VERSION: &str = "batch/v1";
pub const KIND: &str = "Job";

/// The largest `completions` (and `parallelism`) Hearth takes: Kubernetes' own limit for
/// Indexed Jobs with per-index backoff (`completionsSoftLimit`), applied to every Job
/// because one host keeps one workload record per attempt.
pub const MAX_COMPLETIONS: u64 = 100_000;
/// Kubernetes' `int32` count fields (`backoffLimit`, `backoffLimitPerIndex`).
pub const MAX_COUNT: u64 = i32::MAX as u64;
/// Kubernetes allows at most 20 success-policy rules and 20 pod-failure-policy rules.
const MAX_RULES: usize = 20;
/// Kubernetes allows at most 255 exit codes in one `onExitCodes`.
const MAX_EXIT_CODES: usize = 255;

/// Job fields Hearth honours. Anything else is refused by [`spec_field_reason`].
pub(crate) const JOB_FIELDS: &[&str] = &[
    "template",
    "backoffLimit",
    "activeDeadlineSeconds",
    "ttlSecondsAfterFinished",
    "completions",
    "parallelism",
    "completionMode",
    "suspend",
    "podFailurePolicy",
    "backoffLimitPerIndex",
    "maxFailedIndexes",
    "successPolicy",
    "podReplacementPolicy",
    "managedBy",
];

pub(crate) const POD_FIELDS: &[&str] = &[
    "containers",
    "restartPolicy",
    "terminationGracePeriodSeconds",
    "activeDeadlineSeconds",
    "tolerations",
    "securityContext",
];

pub(crate) const CONTAINER_FIELDS: &[&str] = &[
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
];

/// Why a Job spec field outside [`JOB_FIELDS`] is refused.
pub fn spec_field_reason(key: &str) -> &'static str {
    match key {
        "selector" | "manualSelector" => {
            "Hearth finds a Job's attempts by their owner, not by a label selector; there are no free-standing pods to select"
        }
        _ => "not a batch/v1 JobSpec field Hearth knows",
    }
}

/// Why a pod template `spec` field outside [`POD_FIELDS`] is refused.
pub fn pod_field_reason(key: &str) -> &'static str {
    match key {
        "volumes" => {
            "the process runtime (Hearth's only runtime today) runs commands in the host's filesystem and mounts no volumes; use host paths"
        }
        "initContainers" | "ephemeralContainers" => {
            "Hearth runs one process per attempt; running several in order within an attempt is not built"
        }
        "nodeSelector" | "nodeName" | "affinity" | "schedulerName" | "topologySpreadConstraints"
        | "schedulingGates" | "priority" | "priorityClassName" | "preemptionPolicy" | "overhead"
        | "runtimeClassName" => {
            "Hearth places work on its one host through its own queue (batch priority); there is no node choice or preemption to configure"
        }
        "serviceAccountName" | "serviceAccount" | "automountServiceAccountToken" | "imagePullSecrets" => {
            "the process runtime neither pulls images nor mounts Kubernetes credentials; a workload runs as its namespace's user"
        }
        "hostUsers" | "os" => {
            "the process runtime chooses the Unix user itself (the namespace's user) and has no container security settings"
        }
        "hostNetwork" | "hostPID" | "hostIPC" | "shareProcessNamespace" | "dnsPolicy" | "dnsConfig"
        | "hostname" | "subdomain" | "setHostnameAsFQDN" | "hostAliases" | "enableServiceLinks" => {
            "the process runtime has no network or process namespaces to configure: a workload always shares the host's"
        }
        "readinessGates" | "resourceClaims" | "resources" => {
            "not built: readiness gates, dynamic resource claims and pod-level resources need a Kubernetes node; give resources on the container"
        }
        _ => "not a pod spec field Hearth knows",
    }
}

/// Why a container field outside [`CONTAINER_FIELDS`] is refused.
pub fn container_field_reason(key: &str) -> &'static str {
    match key {
        "volumeMounts" | "volumeDevices" => {
            "the process runtime mounts nothing; the command sees the host's filesystem"
        }
        "livenessProbe" | "readinessProbe" | "startupProbe" | "lifecycle" => {
            "not built: Hearth runs no probes or lifecycle hooks for Job attempts"
        }
        "stdin" | "stdinOnce" | "tty" => "Job attempts run detached, with no terminal or stdin to attach",
        "envFrom" => {
            "envFrom reads ConfigMaps and Secrets, which need a Kubernetes API server; give env values"
        }
        "resizePolicy" | "restartPolicy" => {
            "not built: in-place resize and sidecar containers need a Kubernetes node"
        }
        _ => "not a container field Hearth knows",
    }
}

/// How a Job's attempts are numbered: `NonIndexed` (any `completions` successes) or
/// `Indexed` (each index `0..completions` must succeed once).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompletionMode {
    NonIndexed,
    Indexed,
}

/// `restartPolicy` of the pod template: with `OnFailure` a failed attempt is restarted
/// in place (a container restart in Kubernetes' terms, not a failed pod).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RestartPolicy {
    Never,
    OnFailure,
}

/// `podFailurePolicy.rules[].action`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureAction {
    FailJob,
    FailIndex,
    Ignore,
    Count,
}

/// One `podFailurePolicy` rule on exit codes: matches when the attempt's exit code is
/// (`In`) or is not (`NotIn`) one of `values`. A signal counts as `128 + signal`, as
/// container runtimes report it; an exit code of 0 never matches, as upstream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureRule {
    pub action: FailureAction,
    pub not_in: bool,
    pub values: Vec<i64>,
}

impl FailureRule {
    pub fn matches(&self, exit_code: i64) -> bool {
        exit_code != 0 && (self.values.contains(&exit_code) != self.not_in)
    }
}

/// One `successPolicy` rule: the indexes that must all have succeeded
/// (`succeededIndexes`, as closed ranges), and/or how many of them must have
/// (`succeededCount`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SuccessRule {
    pub succeeded_indexes: Option<Vec<(u64, u64)>>,
    pub succeeded_count: Option<u64>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JobSpec {
    pub image: Option<String>,
    pub container_name: String,
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub working_dir: Option<String>,
    pub resources: ResourceRequest,
    /// `None`: any one success completes the Job (the work-queue pattern).
    pub completions: Option<u64>,
    pub parallelism: u64,
    pub completion_mode: CompletionMode,
    pub suspend: bool,
    pub backoff_limit: u64,
    pub backoff_limit_per_index: Option<u64>,
    pub max_failed_indexes: Option<u64>,
    pub pod_failure_policy: Vec<FailureRule>,
    pub success_policy: Vec<SuccessRule>,
    /// The whole Job's deadline, counted from `status.startTime` (seconds).
    pub active_deadline_seconds: Option<u64>,
    pub ttl_seconds_after_finished: Option<u64>,
    /// Each attempt's own deadline (the pod template's `activeDeadlineSeconds`).
    pub attempt_deadline_seconds: Option<u64>,
    pub termination_grace_seconds: u64,
    pub restart_policy: RestartPolicy,
    /// The pod's and container's `securityContext`, merged (see `runtime::identity`).
    pub security_context: Option<SecurityContext>,
}

/// Ceilings for resource quantities, far above any host but low enough that sums over
/// every workload cannot overflow.
const MAX_CPU_MILLIS: u64 = 1_000_000_000; // a million cores
const MAX_BYTES: u64 = 1 << 60; // 1 EiB
const MAX_GPUS: u32 = 1024;

fn bounded(value: u64, max: u64, field: &str, text: &str, unit: &str) -> Result<u64, FieldError> {
    if value > max {
        return Err(FieldError::invalid(
            field,
            format!("{text:?} is beyond what Hearth accepts (at most {max} {unit})"),
        ));
    }
    Ok(value)
}

pub(crate) fn resources(container: &Value, path: &str) -> Result<ResourceRequest, FieldError> {
    let Some(resources) = container.get("resources") else {
        return Ok(ResourceRequest::default());
    };
    let path = format!("{path}.resources");
    only_keys(
        resources,
        &path,
        &["limits", "requests"],
        "only limits and requests are honoured (claims need Kubernetes' dynamic resource allocation)",
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
                    let v = bounded(
                        quantity::cpu_millis(&text, &field)?,
                        MAX_CPU_MILLIS,
                        &field,
                        &text,
                        "millicores",
                    )?;
                    if section == "requests" || request.cpu_millis == 0 {
                        request.cpu_millis = v;
                    }
                }
                "memory" => {
                    let v = bounded(quantity::bytes(&text, &field)?, MAX_BYTES, &field, &text, "bytes")?;
                    if section == "requests" || request.memory_bytes == 0 {
                        request.memory_bytes = v;
                    }
                }
                "nvidia.com/gpu" => {
                    let v = quantity::count(&text, &field)?;
                    bounded(u64::from(v), u64::from(MAX_GPUS), &field, &text, "GPUs")?;
                    if section == "limits" {
                        gpu_limit = Some(v);
                    } else {
                        gpu_request = Some(v);
                    }
                }
                "ephemeral-storage" => {
                    bounded(quantity::bytes(&text, &field)?, MAX_BYTES, &field, &text, "bytes")?;
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

pub(crate) fn env(container: &Value, path: &str) -> Result<Vec<(String, String)>, FieldError> {
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

fn opt_bool(value: &Value, key: &str, path: &str) -> Result<Option<bool>, FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(other) => Err(FieldError::invalid(
            format!("{path}.{key}"),
            format!("must be true or false, not {other}"),
        )),
    }
}

/// Parses an index set as Kubernetes writes it (`"1,3-5,7"`): sorted, non-overlapping
/// closed ranges, each index below `completions`.
pub fn parse_index_set(text: &str, completions: u64, field: &str) -> Result<Vec<(u64, u64)>, FieldError> {
    let bad = |why: String| FieldError::invalid(field, format!("{text:?}: {why}"));
    let mut ranges: Vec<(u64, u64)> = Vec::new();
    if text.len() > 64 * 1024 {
        return Err(bad("longer than 64 KiB".into()));
    }
    for part in text.split(',') {
        let (first, last) = match part.split_once('-') {
            Some((a, b)) => (a, b),
            None => (part, part),
        };
        let number = |s: &str| {
            s.parse::<u64>()
                .map_err(|_| bad(format!("{part:?} is not an index or a range like 2-4")))
        };
        let (first, last) = (number(first)?, number(last)?);
        if first > last {
            return Err(bad(format!("the range {part:?} runs backwards")));
        }
        if last >= completions {
            return Err(bad(format!(
                "index {last} is not below completions ({completions})"
            )));
        }
        if ranges.last().is_some_and(|&(_, prev)| first <= prev) {
            return Err(bad("ranges must be sorted and must not overlap".into()));
        }
        ranges.push((first, last));
    }
    Ok(ranges)
}

/// The `rules` list of `spec.<key>` (`podFailurePolicy`, `successPolicy`: objects whose
/// only field is `rules`); `None` when the policy is absent.
fn policy_rules<'a>(spec: &'a Value, key: &str) -> Result<Option<&'a Vec<Value>>, FieldError> {
    let Some(policy) = spec.get(key).filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let path = format!("spec.{key}");
    only_keys(policy, &path, &["rules"], &format!("not a {key} field"))?;
    policy
        .get("rules")
        .and_then(Value::as_array)
        .map(Some)
        .ok_or_else(|| FieldError::invalid(format!("{path}.rules"), "is required (a list of rules)"))
}

fn pod_failure_policy(
    spec: &Value,
    container_name: &str,
    indexed_backoff: bool,
) -> Result<Vec<FailureRule>, FieldError> {
    let path = "spec.podFailurePolicy";
    let Some(rules) = policy_rules(spec, "podFailurePolicy")? else {
        return Ok(Vec::new());
    };
    if rules.len() > MAX_RULES {
        return Err(FieldError::invalid(
            format!("{path}.rules"),
            format!("has {} rules; at most {MAX_RULES} are allowed", rules.len()),
        ));
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{i}]");
        only_keys(
            rule,
            &rule_path,
            &["action", "onExitCodes", "onPodConditions"],
            "not a podFailurePolicy rule field",
        )?;
        let action = match opt_string(rule, "action", &rule_path)?.as_deref() {
            Some("FailJob") => FailureAction::FailJob,
            Some("Ignore") => FailureAction::Ignore,
            Some("Count") => FailureAction::Count,
            Some("FailIndex") if indexed_backoff => FailureAction::FailIndex,
            Some("FailIndex") => {
                return Err(FieldError::invalid(
                    format!("{rule_path}.action"),
                    "FailIndex needs spec.backoffLimitPerIndex",
                ))
            }
            Some(other) => {
                return Err(FieldError::invalid(
                    format!("{rule_path}.action"),
                    format!("{other:?}: must be FailJob, FailIndex, Ignore or Count"),
                ))
            }
            None => return Err(FieldError::invalid(format!("{rule_path}.action"), "is required")),
        };
        if rule
            .get("onPodConditions")
            .and_then(Value::as_array)
            .is_some_and(|c| !c.is_empty())
        {
            return Err(FieldError::unsupported(
                format!("{rule_path}.onPodConditions"),
                "the process runtime reports no pod conditions (there is no eviction, preemption or node \
                 drain to raise DisruptionTarget); match on onExitCodes",
            ));
        }
        let Some(codes) = rule.get("onExitCodes").filter(|v| !v.is_null()) else {
            return Err(FieldError::invalid(
                format!("{rule_path}.onExitCodes"),
                "is required: Hearth's rules match on exit codes",
            ));
        };
        let codes_path = format!("{rule_path}.onExitCodes");
        only_keys(
            codes,
            &codes_path,
            &["containerName", "operator", "values"],
            "not an onExitCodes field",
        )?;
        if let Some(name) = opt_string(codes, "containerName", &codes_path)? {
            if name != container_name {
                return Err(FieldError::invalid(
                    format!("{codes_path}.containerName"),
                    format!("{name:?} is not the name of the pod template's container ({container_name:?})"),
                ));
            }
        }
        let not_in = match opt_string(codes, "operator", &codes_path)?.as_deref() {
            Some("In") => false,
            Some("NotIn") => true,
            Some(other) => {
                return Err(FieldError::invalid(
                    format!("{codes_path}.operator"),
                    format!("{other:?}: must be In or NotIn"),
                ))
            }
            None => {
                return Err(FieldError::invalid(
                    format!("{codes_path}.operator"),
                    "is required",
                ))
            }
        };
        let values = codes.get("values").and_then(Value::as_array).ok_or_else(|| {
            FieldError::invalid(
                format!("{codes_path}.values"),
                "is required (a list of exit codes)",
            )
        })?;
        if values.is_empty() || values.len() > MAX_EXIT_CODES {
            return Err(FieldError::invalid(
                format!("{codes_path}.values"),
                format!("must list 1 to {MAX_EXIT_CODES} exit codes"),
            ));
        }
        let mut parsed = Vec::new();
        for (j, v) in values.iter().enumerate() {
            let field = format!("{codes_path}.values[{j}]");
            let code = v
                .as_i64()
                .filter(|c| (i64::from(i32::MIN)..=i64::from(i32::MAX)).contains(c))
                .ok_or_else(|| {
                    FieldError::invalid(&field, format!("must be a 32-bit integer exit code, not {v}"))
                })?;
            if code == 0 && !not_in {
                return Err(FieldError::invalid(
                    &field,
                    "0 cannot be used with the In operator",
                ));
            }
            if parsed.contains(&code) {
                return Err(FieldError::invalid(&field, format!("{code} is listed twice")));
            }
            parsed.push(code);
        }
        out.push(FailureRule {
            action,
            not_in,
            values: parsed,
        });
    }
    Ok(out)
}

fn success_policy(spec: &Value, completions: u64) -> Result<Vec<SuccessRule>, FieldError> {
    let path = "spec.successPolicy";
    let Some(rules) = policy_rules(spec, "successPolicy")? else {
        return Ok(Vec::new());
    };
    if rules.is_empty() || rules.len() > MAX_RULES {
        return Err(FieldError::invalid(
            format!("{path}.rules"),
            format!("must have 1 to {MAX_RULES} rules"),
        ));
    }
    let mut out = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let rule_path = format!("{path}.rules[{i}]");
        only_keys(
            rule,
            &rule_path,
            &["succeededIndexes", "succeededCount"],
            "not a successPolicy rule field",
        )?;
        let succeeded_indexes = opt_string(rule, "succeededIndexes", &rule_path)?
            .map(|text| parse_index_set(&text, completions, &format!("{rule_path}.succeededIndexes")))
            .transpose()?;
        let succeeded_count = opt_u64_in(rule, "succeededCount", &rule_path, 1, completions.max(1))?;
        if succeeded_indexes.is_none() && succeeded_count.is_none() {
            return Err(FieldError::invalid(
                &rule_path,
                "needs succeededIndexes, succeededCount or both",
            ));
        }
        if let (Some(ranges), Some(count)) = (&succeeded_indexes, succeeded_count) {
            let size: u64 = ranges.iter().map(|(a, b)| b - a + 1).sum();
            if count > size {
                return Err(FieldError::invalid(
                    format!("{rule_path}.succeededCount"),
                    format!("{count} is more than the {size} indexes in succeededIndexes"),
                ));
            }
        }
        out.push(SuccessRule {
            succeeded_indexes,
            succeeded_count,
        });
    }
    Ok(out)
}

/// A Job's spec as the process runtime takes it: `command` is required (there is no
/// image entrypoint on the host).
#[cfg(test)]
pub fn parse(spec: &Value) -> Result<JobSpec, FieldError> {
    parse_for(spec, false)
}

/// `runs_images`: the runtime runs the container's image (`Capabilities::runs_images`),
/// so `image` is required and `command` may be left to the image's entrypoint.
pub fn parse_for(spec: &Value, runs_images: bool) -> Result<JobSpec, FieldError> {
    let Some(fields) = spec.as_object() else {
        return Err(FieldError::invalid("spec", "must be an object"));
    };
    if let Some(key) = fields.keys().find(|k| !JOB_FIELDS.contains(&k.as_str())) {
        return Err(FieldError::unsupported(
            format!("spec.{key}"),
            spec_field_reason(key),
        ));
    }
    if let Some(manager) = opt_string(spec, "managedBy", "spec")? {
        if manager != "kubernetes.io/job-controller" {
            return Err(FieldError::unsupported(
                "spec.managedBy",
                format!("{manager:?}: only Hearth's own Job controller (kubernetes.io/job-controller) runs Jobs here"),
            ));
        }
    }
    if let Some(policy) = opt_string(spec, "podReplacementPolicy", "spec")? {
        match policy.as_str() {
            // Hearth starts a replacement only once the previous attempt's process has
            // ended, which is what `Failed` asks for.
            "Failed" => {}
            "TerminatingOrFailed" => {
                return Err(FieldError::unsupported(
                    "spec.podReplacementPolicy",
                    "TerminatingOrFailed: Hearth starts a replacement only once the previous attempt's \
                     process has ended (the Failed policy), so that two never hold the same GPUs",
                ))
            }
            other => {
                return Err(FieldError::invalid(
                    "spec.podReplacementPolicy",
                    format!("{other:?}: must be Failed or TerminatingOrFailed"),
                ))
            }
        }
    }
    let completion_mode = match opt_string(spec, "completionMode", "spec")?.as_deref() {
        None | Some("NonIndexed") => CompletionMode::NonIndexed,
        Some("Indexed") => CompletionMode::Indexed,
        Some(other) => {
            return Err(FieldError::invalid(
                "spec.completionMode",
                format!("{other:?}: must be NonIndexed or Indexed"),
            ))
        }
    };
    let completions = opt_u64_in(spec, "completions", "spec", 0, MAX_COMPLETIONS)?;
    let parallelism = opt_u64_in(spec, "parallelism", "spec", 0, MAX_COMPLETIONS)?.unwrap_or(1);
    if completion_mode == CompletionMode::Indexed && completions.is_none() {
        return Err(FieldError::invalid(
            "spec.completions",
            "is required when completionMode is Indexed",
        ));
    }
    let indexed = completion_mode == CompletionMode::Indexed;
    let backoff_limit_per_index = opt_u64_in(spec, "backoffLimitPerIndex", "spec", 0, MAX_COUNT)?;
    if backoff_limit_per_index.is_some() && !indexed {
        return Err(FieldError::invalid(
            "spec.backoffLimitPerIndex",
            "needs completionMode: Indexed",
        ));
    }
    let max_failed_indexes = opt_u64_in(spec, "maxFailedIndexes", "spec", 0, MAX_COMPLETIONS)?;
    if let Some(max) = max_failed_indexes.filter(|m| *m > completions.unwrap_or(0)) {
        return Err(FieldError::invalid(
            "spec.maxFailedIndexes",
            format!(
                "{max} is more than spec.completions ({})",
                completions.unwrap_or(0)
            ),
        ));
    }
    if max_failed_indexes.is_some() && backoff_limit_per_index.is_none() {
        return Err(FieldError::invalid(
            "spec.maxFailedIndexes",
            "needs spec.backoffLimitPerIndex",
        ));
    }
    // With per-index backoff the Job-wide limit is off unless given, as upstream.
    let default_backoff = if backoff_limit_per_index.is_some() {
        MAX_COUNT
    } else {
        6
    };
    let backoff_limit = opt_u64_in(spec, "backoffLimit", "spec", 0, MAX_COUNT)?.unwrap_or(default_backoff);
    let suspend = opt_bool(spec, "suspend", "spec")?.unwrap_or(false);

    let template = spec
        .get("template")
        .ok_or_else(|| FieldError::invalid("spec.template", "is required"))?;
    only_keys(
        template,
        "spec.template",
        &["metadata", "spec"],
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
    let restart_policy = match opt_string(pod, "restartPolicy", "spec.template.spec")?.as_deref() {
        None | Some("Never") => RestartPolicy::Never,
        Some("OnFailure") => RestartPolicy::OnFailure,
        Some(other) => {
            return Err(FieldError::invalid(
                "spec.template.spec.restartPolicy",
                format!("{other:?}: a Job's pods use Never or OnFailure"),
            ))
        }
    };
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
                format!("{n} containers: Hearth runs one process per attempt, so one container per Job"),
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
    let container_name = opt_string(container, "name", path)?.unwrap_or_else(|| "main".into());
    let mut command = string_list(container, "command", path)?;
    let args = string_list(container, "args", path)?;
    let image = opt_string(container, "image", path)?.filter(|i| !i.is_empty());
    if runs_images && image.is_none() {
        return Err(FieldError::invalid(
            format!("{path}.image"),
            "is required: the docker runtime runs each attempt in its container's image",
        ));
    }
    if command.is_empty() && !runs_images {
        return Err(FieldError::invalid(
            format!("{path}.command"),
            "is required in process mode: the image's entrypoint is not available on the host",
        ));
    }
    if command.is_empty() && !args.is_empty() {
        return Err(FieldError::unsupported(
            format!("{path}.args"),
            "args without command: Hearth does not read the image's entrypoint to put them after; give command too",
        ));
    }
    command.extend(args);

    let pod_failure_policy = pod_failure_policy(spec, &container_name, backoff_limit_per_index.is_some())?;
    if !pod_failure_policy.is_empty() && restart_policy != RestartPolicy::Never {
        return Err(FieldError::invalid(
            "spec.podFailurePolicy",
            "needs spec.template.spec.restartPolicy: Never, as in Kubernetes",
        ));
    }
    let success_policy = success_policy(spec, completions.unwrap_or(0))?;
    if !success_policy.is_empty() && !indexed {
        return Err(FieldError::invalid(
            "spec.successPolicy",
            "needs completionMode: Indexed",
        ));
    }
    if backoff_limit_per_index.is_some() && restart_policy != RestartPolicy::Never {
        return Err(FieldError::invalid(
            "spec.backoffLimitPerIndex",
            "needs spec.template.spec.restartPolicy: Never, as in Kubernetes",
        ));
    }
    Ok(JobSpec {
        image,
        container_name,
        command,
        env: env(container, path)?,
        working_dir: opt_string(container, "workingDir", path)?,
        resources: resources(container, path)?,
        completions,
        parallelism,
        completion_mode,
        suspend,
        backoff_limit,
        backoff_limit_per_index,
        max_failed_indexes,
        pod_failure_policy,
        success_policy,
        active_deadline_seconds: opt_u64_in(spec, "activeDeadlineSeconds", "spec", 0, MAX_SECONDS)?,
        ttl_seconds_after_finished: opt_u64_in(spec, "ttlSecondsAfterFinished", "spec", 0, MAX_SECONDS)?,
        attempt_deadline_seconds: opt_u64_in(
            pod,
            "activeDeadlineSeconds",
            "spec.template.spec",
            1,
            MAX_SECONDS,
        )?,
        termination_grace_seconds: opt_u64_in(
            pod,
            "terminationGracePeriodSeconds",
            "spec.template.spec",
            0,
            MAX_SECONDS,
        )?
        .unwrap_or(30),
        restart_policy,
        security_context: SecurityContext::parse(pod, "spec.template.spec", container, path)?,
    })
}

/// The spec fields Kubernetes does not let a PUT or PATCH change once a Job exists.
pub const IMMUTABLE_FIELDS: &[&str] = &[
    "template",
    "completions",
    "completionMode",
    "podFailurePolicy",
    "backoffLimitPerIndex",
    "successPolicy",
    "podReplacementPolicy",
    "managedBy",
];

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
        assert_eq!(spec.parallelism, 1);
        assert_eq!(spec.completions, None);
    }

    #[test]
    fn unhonoured_fields_are_refused_by_name() {
        let mut doc = job(json!({"command": ["true"]}));
        doc["template"]["spec"]["hostNetwork"] = json!(true);
        assert_eq!(
            parse(&doc).unwrap_err(),
            FieldError::unsupported("spec.template.spec.hostNetwork", pod_field_reason("hostNetwork"))
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

    #[test]
    fn every_number_is_bounded() {
        let cases: &[(&str, Value)] = &[
            ("activeDeadlineSeconds", json!(10_000_000_000_000u64)),
            ("ttlSecondsAfterFinished", json!(-1)),
            ("backoffLimit", json!(1e300)),
            ("completions", json!(9_223_372_036_854_775_807u64)),
            ("parallelism", json!("NaN")),
        ];
        for (key, value) in cases {
            let mut doc = job(json!({"command": ["true"]}));
            doc[*key] = value.clone();
            let err = parse(&doc).unwrap_err();
            assert!(
                matches!(&err, FieldError::Invalid { path, detail } if path == &format!("spec.{key}") && detail.contains("must be an integer from")),
                "{key}: {err}"
            );
        }
        let mut doc = job(json!({"command": ["true"], "resources": {"limits": {"cpu": "1e300"}}}));
        assert!(parse(&doc).is_err());
        doc = job(json!({"command": ["true"], "resources": {"limits": {"nvidia.com/gpu": "100000"}}}));
        assert!(parse(&doc).is_err());
    }

    #[test]
    fn index_sets_parse_as_kubernetes_writes_them() {
        assert_eq!(
            parse_index_set("0,2-4,7", 8, "f").unwrap(),
            vec![(0, 0), (2, 4), (7, 7)]
        );
        for bad in ["", "1,1", "3-1", "8", "a", "1-", "2,1"] {
            assert!(parse_index_set(bad, 8, "f").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn policies_are_checked_as_kubernetes_checks_them() {
        let with = |extra: Value| {
            let mut doc = job(json!({"name": "main", "command": ["true"]}));
            for (k, v) in extra.as_object().unwrap() {
                doc[k] = v.clone();
            }
            parse(&doc)
        };
        let rule = |action: &str, operator: &str, values: Value| json!({"podFailurePolicy": {"rules": [{"action": action, "onExitCodes": {"operator": operator, "values": values}}]}});
        let field = |r: Result<JobSpec, FieldError>| match r {
            Err(FieldError::Invalid { path, .. } | FieldError::Unsupported { path, .. }) => path,
            Ok(_) => "accepted".into(),
        };
        assert_eq!(
            field(with(rule("FailJob", "In", json!([0])))),
            "spec.podFailurePolicy.rules[0].onExitCodes.values[0]"
        );
        assert_eq!(
            field(with(rule("FailJob", "In", json!([3, 3])))),
            "spec.podFailurePolicy.rules[0].onExitCodes.values[1]"
        );
        assert_eq!(
            field(with(rule("FailIndex", "In", json!([3])))),
            "spec.podFailurePolicy.rules[0].action"
        );
        assert_eq!(field(with(rule("Count", "NotIn", json!([0, 1])))), "accepted");
        assert_eq!(
            field(with(json!({"successPolicy": {"rules": [{"succeededCount": 1}]}}))),
            "spec.successPolicy"
        );
        assert_eq!(
            field(with(json!({"completionMode": "Indexed"}))),
            "spec.completions"
        );
        assert_eq!(
            field(with(
                json!({"completionMode": "Indexed", "completions": 3, "successPolicy": {"rules": [{"succeededIndexes": "0-3"}]}})
            )),
            "spec.successPolicy.rules[0].succeededIndexes"
        );
        assert_eq!(
            field(with(json!({"maxFailedIndexes": 1}))),
            "spec.maxFailedIndexes"
        );
        let mut on_failure = job(json!({"command": ["true"]}));
        on_failure["template"]["spec"]["restartPolicy"] = json!("OnFailure");
        on_failure["podFailurePolicy"] = rule("FailJob", "In", json!([1]))["podFailurePolicy"].clone();
        assert_eq!(field(parse(&on_failure)), "spec.podFailurePolicy");
        let spec =
            with(json!({"completionMode": "Indexed", "completions": 4, "backoffLimitPerIndex": 1})).unwrap();
        assert_eq!(
            spec.backoff_limit, MAX_COUNT,
            "per-index backoff turns the Job-wide limit off"
        );
    }

    #[test]
    fn failure_rules_match_exit_codes() {
        let rule = FailureRule {
            action: FailureAction::FailJob,
            not_in: false,
            values: vec![42],
        };
        assert!(rule.matches(42) && !rule.matches(1));
        let not_in = FailureRule {
            action: FailureAction::Count,
            not_in: true,
            values: vec![1],
        };
        assert!(not_in.matches(2) && !not_in.matches(1) && !not_in.matches(0));
    }
}
