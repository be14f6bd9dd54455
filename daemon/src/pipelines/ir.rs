//! KFP v2 pipeline IR: parsing (YAML single or multi-document with a platform spec,
//! JSON), the typed model the controller executes, and validation. Validation walks the
//! document as written: an unknown key where the IR has a fixed shape is either a broken
//! file (top level: 4xx naming the field) or an IR feature Hearth does not provide (4xx
//! naming the feature). Nothing is silently ignored.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;
use serde_json::Value;

use super::cel;
use super::protojson::{duration_in, int_in, number_in};
use crate::model::strict::{FieldError, MAX_SECONDS};

#[derive(Debug, thiserror::Error)]
pub enum IrError {
    #[error("the pipeline package holds no document")]
    Empty,
    #[error("malformed {format}: {detail}")]
    Malformed {
        format: &'static str,
        detail: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{feature}: {detail}")]
    Unsupported { feature: String, detail: String },
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> IrError {
    IrError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

fn unsupported(feature: impl Into<String>, detail: impl Into<String>) -> IrError {
    IrError::Unsupported {
        feature: feature.into(),
        detail: detail.into(),
    }
}

/// A pipeline as uploaded: the IR and, when the file had a second document, the
/// platform spec. Both are kept exactly as written.
#[derive(Debug, Clone, PartialEq)]
pub struct Package {
    pub spec: Value,
    pub platform: Option<Value>,
}

impl Package {
    /// The form the v2beta1 API returns in `pipeline_spec`: the bare IR, or the nested
    /// `{pipeline_spec, platform_spec}` when there is a platform spec (as the SDK sends).
    pub fn to_api(&self) -> Value {
        match &self.platform {
            None => self.spec.clone(),
            Some(p) => serde_json::json!({"pipeline_spec": self.spec, "platform_spec": p}),
        }
    }
}

/// Parses an uploaded file: JSON, YAML, or YAML with a second `platforms` document.
pub fn parse_package(bytes: &[u8]) -> Result<Package, IrError> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
        let value = <Value as Deserialize>::deserialize(document).map_err(|e| {
            let location = e.location();
            IrError::Malformed {
                format: "YAML",
                detail: e.to_string(),
                line: location.as_ref().map(|l| l.line()),
                column: location.as_ref().map(|l| l.column()),
            }
        })?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    let mut spec = None;
    let mut platform = None;
    for (i, doc) in documents.into_iter().enumerate() {
        let Some(obj) = doc.as_object() else {
            return Err(invalid(format!("document {}", i + 1), "is not a mapping"));
        };
        if obj.contains_key("platforms") && obj.len() == 1 {
            if platform.replace(doc).is_some() {
                return Err(invalid("platforms", "more than one platform spec document"));
            }
        } else if obj.contains_key("pipeline_spec") || obj.contains_key("pipelineSpec") {
            // A JSON file in the API's nested form.
            return from_api(&doc);
        } else if spec.replace(doc).is_some() {
            return Err(invalid(
                format!("document {}", i + 1),
                "a pipeline package holds one pipeline spec (and at most one platform spec)",
            ));
        }
    }
    match spec {
        Some(spec) => Ok(Package { spec, platform }),
        None if platform.is_some() => Err(invalid("pipelineInfo", "the file holds only a platform spec")),
        None => Err(IrError::Empty),
    }
}

/// The `pipeline_spec` of a run or recurring run body: the bare IR, or the nested form.
pub fn from_api(value: &Value) -> Result<Package, IrError> {
    let Some(obj) = value.as_object() else {
        return Err(invalid("pipeline_spec", "must be an object"));
    };
    let nested = obj.get("pipeline_spec").or_else(|| obj.get("pipelineSpec"));
    match nested {
        Some(spec) => {
            let platform = obj
                .get("platform_spec")
                .or_else(|| obj.get("platformSpec"))
                .filter(|p| !p.is_null())
                .cloned();
            for key in obj.keys() {
                if !["pipeline_spec", "pipelineSpec", "platform_spec", "platformSpec"].contains(&key.as_str())
                {
                    return Err(invalid(
                        format!("pipeline_spec.{key}"),
                        "unknown field in the nested form",
                    ));
                }
            }
            Ok(Package {
                spec: spec.clone(),
                platform,
            })
        }
        None => Ok(Package {
            spec: value.clone(),
            platform: None,
        }),
    }
}

// ---------------------------------------------------------------------------------
// Typed model. Lenient on purpose: `validate` has already refused unknown keys.

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineSpec {
    pub pipeline_info: PipelineInfo,
    pub root: ComponentSpec,
    #[serde(default)]
    pub components: BTreeMap<String, ComponentSpec>,
    #[serde(default)]
    pub deployment_spec: DeploymentSpec,
    #[serde(default)]
    pub schema_version: Option<String>,
    #[serde(default)]
    pub default_pipeline_root: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PipelineInfo {
    #[serde(default)]
    pub name: String,
    #[serde(default)]
    pub description: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ComponentSpec {
    #[serde(default)]
    pub input_definitions: Interface,
    #[serde(default)]
    pub output_definitions: Interface,
    #[serde(default)]
    pub dag: Option<Dag>,
    #[serde(default)]
    pub executor_label: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Interface {
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamDef>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactDef>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamDef {
    #[serde(default)]
    pub parameter_type: String,
    #[serde(default)]
    pub default_value: Option<Value>,
    #[serde(default)]
    pub is_optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactDef {
    #[serde(default)]
    pub artifact_type: TypeSchema,
    #[serde(default)]
    pub is_optional: bool,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TypeSchema {
    #[serde(default)]
    pub schema_title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schema_version: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Dag {
    #[serde(default)]
    pub tasks: BTreeMap<String, Task>,
    #[serde(default)]
    pub outputs: DagOutputs,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    #[serde(default)]
    pub task_info: TaskInfo,
    pub component_ref: ComponentRef,
    #[serde(default)]
    pub inputs: TaskInputs,
    #[serde(default)]
    pub dependent_tasks: Vec<String>,
    #[serde(default)]
    pub caching_options: CachingOptions,
    #[serde(default)]
    pub trigger_policy: TriggerPolicy,
    #[serde(default)]
    pub parameter_iterator: Option<ParameterIterator>,
    #[serde(default)]
    pub artifact_iterator: Option<ArtifactIterator>,
    #[serde(default)]
    pub iterator_policy: IteratorPolicy,
    #[serde(default)]
    pub retry_policy: Option<RetryPolicy>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct TaskInfo {
    #[serde(default)]
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct ComponentRef {
    pub name: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CachingOptions {
    /// Absent means off: the SDK's `enable_caching=False` is expressed as `{}`.
    #[serde(default)]
    pub enable_cache: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TriggerPolicy {
    #[serde(default)]
    pub condition: Option<String>,
    /// `ALL_UPSTREAM_TASKS_SUCCEEDED` (default) or `ALL_UPSTREAM_TASKS_COMPLETED`.
    #[serde(default)]
    pub strategy: Option<String>,
}

impl TriggerPolicy {
    pub fn runs_after_failure(&self) -> bool {
        self.strategy.as_deref() == Some("ALL_UPSTREAM_TASKS_COMPLETED")
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskInputs {
    #[serde(default)]
    pub parameters: BTreeMap<String, ParamInput>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, ArtifactInput>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParamInput {
    #[serde(default)]
    pub component_input_parameter: Option<String>,
    #[serde(default)]
    pub task_output_parameter: Option<TaskOutputParameter>,
    #[serde(default)]
    pub runtime_value: Option<RuntimeValue>,
    #[serde(default)]
    pub task_final_status: Option<TaskFinalStatus>,
    #[serde(default)]
    pub parameter_expression_selector: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutputParameter {
    pub producer_task: String,
    pub output_parameter_key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct RuntimeValue {
    #[serde(default)]
    pub constant: Value,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskFinalStatus {
    pub producer_task: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactInput {
    #[serde(default)]
    pub task_output_artifact: Option<TaskOutputArtifact>,
    #[serde(default)]
    pub component_input_artifact: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TaskOutputArtifact {
    pub producer_task: String,
    pub output_artifact_key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterIterator {
    pub items: IteratorItems,
    pub item_input: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IteratorItems {
    #[serde(default)]
    pub raw: Option<String>,
    #[serde(default)]
    pub input_parameter: Option<String>,
    #[serde(default)]
    pub input_artifact: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactIterator {
    pub items: IteratorItems,
    pub item_input: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct IteratorPolicy {
    /// 0 or absent: no limit.
    #[serde(default)]
    pub parallelism_limit: u32,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RetryPolicy {
    #[serde(default)]
    pub max_retry_count: u32,
    #[serde(default)]
    pub backoff_duration: Option<String>,
    #[serde(default)]
    pub backoff_factor: Option<f64>,
    #[serde(default)]
    pub backoff_max_duration: Option<String>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputs {
    #[serde(default)]
    pub parameters: BTreeMap<String, DagOutputParameter>,
    #[serde(default)]
    pub artifacts: BTreeMap<String, DagOutputArtifact>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputParameter {
    #[serde(default)]
    pub value_from_parameter: Option<ParameterSelector>,
    #[serde(default)]
    pub value_from_oneof: Option<OneOf>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OneOf {
    #[serde(default)]
    pub parameter_selectors: Vec<ParameterSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ParameterSelector {
    pub producer_subtask: String,
    pub output_parameter_key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DagOutputArtifact {
    #[serde(default)]
    pub artifact_selectors: Vec<ArtifactSelector>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactSelector {
    pub producer_subtask: String,
    pub output_artifact_key: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct DeploymentSpec {
    #[serde(default)]
    pub executors: BTreeMap<String, Executor>,
}

#[derive(Debug, Clone, Default, Deserialize)]
pub struct Executor {
    #[serde(default)]
    pub container: Option<Container>,
    #[serde(default)]
    pub importer: Option<Importer>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct Container {
    #[serde(default)]
    pub image: String,
    #[serde(default)]
    pub command: Vec<String>,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: Vec<EnvVar>,
    #[serde(default)]
    pub resources: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize, serde::Serialize)]
pub struct EnvVar {
    pub name: String,
    #[serde(default)]
    pub value: String,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Importer {
    pub artifact_uri: ArtifactUri,
    #[serde(default)]
    pub type_schema: TypeSchema,
    #[serde(default)]
    pub metadata: Option<Value>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ArtifactUri {
    #[serde(default)]
    pub constant: Option<Value>,
    #[serde(default)]
    pub runtime_parameter: Option<String>,
}

impl PipelineSpec {
    pub fn component(&self, name: &str) -> Option<&ComponentSpec> {
        self.components.get(name)
    }
    pub fn executor(&self, label: &str) -> Option<&Executor> {
        self.deployment_spec.executors.get(label)
    }
}

impl Task {
    /// Sibling tasks this task waits for: `dependentTasks` plus every data edge.
    pub fn upstream(&self) -> BTreeSet<String> {
        let mut up: BTreeSet<String> = self.dependent_tasks.iter().cloned().collect();
        for p in self.inputs.parameters.values() {
            if let Some(t) = &p.task_output_parameter {
                up.insert(t.producer_task.clone());
            }
            if let Some(t) = &p.task_final_status {
                up.insert(t.producer_task.clone());
            }
        }
        for a in self.inputs.artifacts.values() {
            if let Some(t) = &a.task_output_artifact {
                up.insert(t.producer_task.clone());
            }
        }
        up
    }
}

// ---------------------------------------------------------------------------------
// Validation.

/// What validation learned, for the API and the upload summary.
#[derive(Debug, Clone)]
pub struct Validated {
    pub spec: PipelineSpec,
    pub name: String,
    pub description: Option<String>,
    /// Per executor label: what the platform spec asks that Hearth honours.
    pub platform: BTreeMap<String, PlatformExecutor>,
}

#[derive(Debug, Clone, Default)]
pub struct PlatformExecutor {
    pub active_deadline_seconds: Option<u64>,
    pub labels: BTreeMap<String, String>,
}

const TOP_KEYS: &[&str] = &[
    "pipelineInfo",
    "root",
    "components",
    "deploymentSpec",
    "schemaVersion",
    "sdkVersion",
    "defaultPipelineRoot",
];
const REQUIRED_TOP: &[&str] = &["pipelineInfo", "root", "deploymentSpec"];
const TASK_KEYS: &[&str] = &[
    "taskInfo",
    "componentRef",
    "inputs",
    "dependentTasks",
    "cachingOptions",
    "triggerPolicy",
    "parameterIterator",
    "artifactIterator",
    "iteratorPolicy",
    "retryPolicy",
];
const COMPONENT_KEYS: &[&str] = &["inputDefinitions", "outputDefinitions", "dag", "executorLabel"];
const CONTAINER_KEYS: &[&str] = &["image", "command", "args", "env", "resources"];
const RESOURCE_KEYS: &[&str] = &[
    "cpuLimit",
    "memoryLimit",
    "cpuRequest",
    "memoryRequest",
    "resourceCpuLimit",
    "resourceMemoryLimit",
    "resourceCpuRequest",
    "resourceMemoryRequest",
    "accelerator",
];
const IMPORTER_KEYS: &[&str] = &["artifactUri", "typeSchema", "metadata", "reimport"];
const PARAMETER_TYPES: &[&str] = &[
    "STRING",
    "NUMBER_INTEGER",
    "NUMBER_DOUBLE",
    "BOOLEAN",
    "LIST",
    "STRUCT",
    "TASK_FINAL_STATUS",
];
/// URI schemes of object stores Hearth has no client for.
const REMOTE_SCHEMES: &[&str] = &[
    "gs://", "s3://", "minio://", "https://", "http://", "oci://", "hf://",
];

fn check_keys(obj: &Value, allowed: &[&str], path: &str, feature_prefix: &str) -> Result<(), IrError> {
    if let Some(map) = obj.as_object() {
        for key in map.keys() {
            if !allowed.contains(&key.as_str()) {
                return Err(unsupported(
                    format!("{feature_prefix}{key}"),
                    format!("{path}.{key} is not an IR feature Hearth runs"),
                ));
            }
        }
    }
    Ok(())
}

fn check_artifact_type(schema: &TypeSchema, path: &str) -> Result<(), IrError> {
    let title = schema.schema_title.as_str();
    if title.starts_with("system.") {
        return Ok(());
    }
    let feature = if title.starts_with("google.") {
        format!("Google Cloud artifact type {title}")
    } else {
        format!("artifact type {title}")
    };
    Err(unsupported(
        feature,
        format!("{path}: only the system.* artifact types are provided on this host"),
    ))
}

fn check_interface(iface: &Interface, path: &str) -> Result<(), IrError> {
    for (name, p) in &iface.parameters {
        if !PARAMETER_TYPES.contains(&p.parameter_type.as_str()) {
            return Err(invalid(
                format!("{path}.parameters.{name}.parameterType"),
                format!("unknown parameter type {:?}", p.parameter_type),
            ));
        }
    }
    for (name, a) in &iface.artifacts {
        check_artifact_type(&a.artifact_type, &format!("{path}.artifacts.{name}"))?;
    }
    Ok(())
}

impl From<FieldError> for IrError {
    fn from(e: FieldError) -> IrError {
        match e {
            FieldError::Invalid { path, detail } => invalid(path, detail),
            FieldError::Unsupported { path, detail } => unsupported(path, detail),
        }
    }
}

/// The largest count a task's `maxRetryCount` or `parallelismLimit` may hold: both are
/// `int32` in pipeline_spec.proto.
pub const MAX_COUNT: u64 = i32::MAX as u64;

/// The most iterations one `ParallelFor` may fan out to (each is a task with its own
/// record and, for a container, its own process). KFP itself sets no number, but its
/// Argo workflow object stops updating well before this many nodes (etcd's request
/// size limit; kubeflow/pipelines#12131), so a wider loop would not run there either.
/// A literal list over it is refused at submission; a list that an upstream task
/// produces fails the loop task, naming this limit.
pub const MAX_LOOP_ITEMS: usize = 10_000;

/// The largest `backoffFactor`: past it every retry after the first waits the
/// `backoffMaxDuration` anyway.
pub const MAX_BACKOFF_FACTOR: f64 = 1000.0;

/// Bounds every number of every task as written, before the typed model reads them,
/// so that a bad value is refused naming its field (not as a shapeless parse error).
fn check_task_numbers(spec: &Value) -> Result<(), IrError> {
    let mut dags: Vec<(String, &Value)> = vec![("root".into(), &spec["root"])];
    if let Some(map) = spec.get("components").and_then(Value::as_object) {
        dags.extend(map.iter().map(|(k, v)| (format!("components.{k}"), v)));
    }
    for (path, comp) in dags {
        let Some(tasks) = comp.pointer("/dag/tasks").and_then(Value::as_object) else {
            continue;
        };
        for (name, task) in tasks {
            let tpath = format!("{path}.dag.tasks.{name}");
            if let Some(r) = task.get("retryPolicy").filter(|r| !r.is_null()) {
                let rpath = format!("{tpath}.retryPolicy");
                int_in(r, "maxRetryCount", &rpath, 0, MAX_COUNT)?;
                duration_in(r, "backoffDuration", &rpath)?;
                duration_in(r, "backoffMaxDuration", &rpath)?;
                number_in(r, "backoffFactor", &rpath, 0.0, MAX_BACKOFF_FACTOR)?;
            }
            if let Some(p) = task.get("iteratorPolicy").filter(|p| !p.is_null()) {
                int_in(
                    p,
                    "parallelismLimit",
                    &format!("{tpath}.iteratorPolicy"),
                    0,
                    MAX_COUNT,
                )?;
            }
        }
    }
    Ok(())
}

/// Validates a package and returns the typed spec, or the first problem found.
pub fn validate(pkg: &Package) -> Result<Validated, IrError> {
    let Some(top) = pkg.spec.as_object() else {
        return Err(invalid("pipeline_spec", "must be a mapping"));
    };
    for key in top.keys() {
        if !TOP_KEYS.contains(&key.as_str()) {
            return Err(invalid(key.clone(), "unknown top-level field of a pipeline spec"));
        }
    }
    for key in REQUIRED_TOP {
        if !top.contains_key(*key) {
            return Err(invalid(*key, "required field is missing"));
        }
    }
    match pkg.spec.pointer("/pipelineInfo/name") {
        Some(Value::String(s)) if !s.trim().is_empty() => {}
        _ => return Err(invalid("pipelineInfo.name", "must be a non-empty string")),
    }
    check_task_numbers(&pkg.spec)?;
    let spec: PipelineSpec =
        serde_json::from_value(pkg.spec.clone()).map_err(|e| invalid("pipeline_spec", e.to_string()))?;
    if spec.pipeline_info.name.trim().is_empty() {
        return Err(invalid("pipelineInfo.name", "must not be empty"));
    }
    if let Some(root) = &spec.default_pipeline_root {
        if REMOTE_SCHEMES.iter().any(|s| root.starts_with(s)) {
            return Err(unsupported(
                "defaultPipelineRoot (remote object store)",
                format!("{root}: Hearth keeps artifacts under its data dir; remove the pipeline root"),
            ));
        }
    }
    if let Some(v) = &spec.schema_version {
        if !v.starts_with("2.") {
            return Err(invalid(
                "schemaVersion",
                format!("{v}: Hearth reads IR schema 2.x"),
            ));
        }
    }

    // Executors.
    let executors = pkg
        .spec
        .pointer("/deploymentSpec/executors")
        .cloned()
        .unwrap_or(Value::Null);
    if let Some(map) = executors.as_object() {
        for (label, raw) in map {
            let path = format!("deploymentSpec.executors.{label}");
            check_keys(raw, &["container", "importer"], &path, "executor.")?;
            if let Some(c) = raw.get("container") {
                check_keys(c, CONTAINER_KEYS, &format!("{path}.container"), "container.")?;
                if let Some(r) = c.get("resources") {
                    check_keys(
                        r,
                        RESOURCE_KEYS,
                        &format!("{path}.container.resources"),
                        "resources.",
                    )?;
                    check_accelerator(r, &path)?;
                }
            }
            if let Some(i) = raw.get("importer") {
                if i.get("downloadToWorkspace").and_then(Value::as_bool) == Some(true) {
                    return Err(unsupported(
                        "importer.downloadToWorkspace",
                        format!("{path}: the pipeline workspace volume is a Kubernetes feature"),
                    ));
                }
                let mut keys = IMPORTER_KEYS.to_vec();
                keys.push("downloadToWorkspace");
                check_keys(i, &keys, &format!("{path}.importer"), "importer.")?;
            }
        }
    }
    for (label, ex) in &spec.deployment_spec.executors {
        let path = format!("deploymentSpec.executors.{label}");
        match (&ex.container, &ex.importer) {
            (Some(c), None) => {
                if c.command.is_empty() && c.args.is_empty() {
                    // kfp-kubernetes' CreatePVC/DeletePVC compile to stub images that the
                    // KFP backend intercepts; any other bare image relies on its entrypoint.
                    let feature = match c.image.as_str() {
                        "argostub/createpvc" => "kubernetes.CreatePVC".to_string(),
                        "argostub/deletepvc" => "kubernetes.DeletePVC".to_string(),
                        _ => "container image entrypoint".to_string(),
                    };
                    return Err(unsupported(
                        feature,
                        format!("{path}: the step has no command; the process runtime runs commands, not image entrypoints"),
                    ));
                }
            }
            (None, Some(imp)) => {
                check_artifact_type(&imp.type_schema, &format!("{path}.importer.typeSchema"))?;
                if let Some(Value::String(uri)) = &imp.artifact_uri.constant {
                    check_import_uri(uri, &path)?;
                }
                if imp.artifact_uri.constant.is_none() && imp.artifact_uri.runtime_parameter.is_none() {
                    return Err(invalid(
                        format!("{path}.importer.artifactUri"),
                        "needs constant or runtimeParameter",
                    ));
                }
            }
            (None, None) => return Err(invalid(path, "has neither container nor importer")),
            (Some(_), Some(_)) => return Err(invalid(path, "has both container and importer")),
        }
    }

    // Components and DAGs.
    let raw_components = pkg.spec.get("components").cloned().unwrap_or(Value::Null);
    if let Some(map) = raw_components.as_object() {
        for (name, raw) in map {
            check_keys(raw, COMPONENT_KEYS, &format!("components.{name}"), "component.")?;
        }
    }
    check_keys(&pkg.spec["root"], COMPONENT_KEYS, "root", "component.")?;
    check_component(&spec, &spec.root, &pkg.spec["root"], "root")?;
    for (name, comp) in &spec.components {
        check_component(
            &spec,
            comp,
            &pkg.spec["components"][name],
            &format!("components.{name}"),
        )?;
    }
    check_nesting(&spec, &spec.root, &mut Vec::new())?;

    let platform = validate_platform(pkg.platform.as_ref(), &spec)?;
    Ok(Validated {
        name: spec.pipeline_info.name.clone(),
        description: spec.pipeline_info.description.clone(),
        spec,
        platform,
    })
}

fn check_import_uri(uri: &str, path: &str) -> Result<(), IrError> {
    if let Some(scheme) = REMOTE_SCHEMES.iter().find(|s| uri.starts_with(**s)) {
        let what = scheme.trim_end_matches("://");
        return Err(unsupported(
            format!("importer {what}:// URI"),
            format!("{path}: {uri}: Hearth imports local files only"),
        ));
    }
    Ok(())
}

/// The most accelerators one step may ask for.
const MAX_ACCELERATORS: f64 = 1024.0;

fn check_accelerator(resources: &Value, path: &str) -> Result<(), IrError> {
    let Some(acc) = resources.get("accelerator") else {
        return Ok(());
    };
    check_keys(
        acc,
        &["type", "count", "resourceType", "resourceCount"],
        &format!("{path}.container.resources.accelerator"),
        "accelerator.",
    )?;
    for key in ["count", "resourceCount"] {
        let whole = |f: f64| f.fract() == 0.0 && (0.0..=MAX_ACCELERATORS).contains(&f);
        let ok = match acc.get(key) {
            None | Some(Value::Null) => true,
            // Placeholders are checked again when the step is about to run.
            Some(Value::String(t)) if t.starts_with("{{$") => true,
            Some(Value::String(t)) => t.trim().parse::<f64>().is_ok_and(whole),
            Some(Value::Number(n)) => n.as_f64().is_some_and(whole),
            Some(_) => false,
        };
        if !ok {
            return Err(invalid(
                format!("{path}.container.resources.accelerator.{key}"),
                format!(
                    "must be a whole number from 0 to {MAX_ACCELERATORS}, not {}",
                    acc[key]
                ),
            ));
        }
    }
    for key in ["type", "resourceType"] {
        if let Some(Value::String(t)) = acc.get(key) {
            // Placeholders are checked again when the step is about to run.
            let gpu = t.starts_with("{{$") || t == "nvidia.com/gpu" || t.starts_with("NVIDIA_") || t == "GPU";
            if !gpu {
                return Err(unsupported(
                    format!("accelerator type {t}"),
                    format!("{path}: only NVIDIA GPUs are scheduled on this host"),
                ));
            }
        }
    }
    Ok(())
}

fn check_component(
    spec: &PipelineSpec,
    comp: &ComponentSpec,
    raw: &Value,
    path: &str,
) -> Result<(), IrError> {
    check_interface(&comp.input_definitions, &format!("{path}.inputDefinitions"))?;
    check_interface(&comp.output_definitions, &format!("{path}.outputDefinitions"))?;
    match (&comp.dag, &comp.executor_label) {
        (Some(dag), None) => check_dag(spec, comp, dag, &raw["dag"], path),
        (None, Some(label)) => {
            if spec.executor(label).is_none() {
                return Err(invalid(
                    format!("{path}.executorLabel"),
                    format!("executor {label:?} is not in deploymentSpec.executors"),
                ));
            }
            Ok(())
        }
        (None, None) => Err(invalid(path, "a component needs a dag or an executorLabel")),
        (Some(_), Some(_)) => Err(invalid(
            path,
            "a component has a dag or an executorLabel, not both",
        )),
    }
}

fn check_dag(
    spec: &PipelineSpec,
    comp: &ComponentSpec,
    dag: &Dag,
    raw: &Value,
    path: &str,
) -> Result<(), IrError> {
    for (name, task) in &dag.tasks {
        let tpath = format!("{path}.dag.tasks.{name}");
        check_keys(&raw["tasks"][name], TASK_KEYS, &tpath, "task.")?;
        if spec.component(&task.component_ref.name).is_none() {
            return Err(invalid(
                format!("{tpath}.componentRef.name"),
                format!("component {:?} is not defined", task.component_ref.name),
            ));
        }
        for up in task.upstream() {
            if !dag.tasks.contains_key(&up) {
                return Err(invalid(
                    format!("{tpath}.dependentTasks"),
                    format!("task {up:?} is not in the same DAG"),
                ));
            }
        }
        for (pname, p) in &task.inputs.parameters {
            let ppath = format!("{tpath}.inputs.parameters.{pname}");
            let sources = [
                p.component_input_parameter.is_some(),
                p.task_output_parameter.is_some(),
                p.runtime_value.is_some(),
                p.task_final_status.is_some(),
            ];
            if sources.iter().filter(|s| **s).count() != 1 {
                return Err(invalid(ppath, "needs exactly one value source"));
            }
            if let Some(src) = &p.component_input_parameter {
                if !comp.input_definitions.parameters.contains_key(src) && !is_iterator_input(dag, src) {
                    return Err(invalid(
                        ppath,
                        format!("{src:?} is not an input of the enclosing component"),
                    ));
                }
            }
            if let Some(sel) = &p.parameter_expression_selector {
                cel::parse(sel).map_err(|e| {
                    unsupported("parameterExpressionSelector", format!("{ppath}: {sel:?}: {e}"))
                })?;
            }
        }
        for (aname, a) in &task.inputs.artifacts {
            let apath = format!("{tpath}.inputs.artifacts.{aname}");
            if a.task_output_artifact.is_some() == a.component_input_artifact.is_some() {
                return Err(invalid(
                    apath,
                    "needs exactly one of taskOutputArtifact, componentInputArtifact",
                ));
            }
        }
        if let Some(cond) = &task.trigger_policy.condition {
            cel::parse_checked(cond).map_err(|e| match e {
                cel::CelError::Syntax(e) => invalid(
                    format!("{tpath}.triggerPolicy.condition"),
                    format!("{cond:?} does not parse: {e}"),
                ),
                cel::CelError::Unsupported(e) => {
                    unsupported("triggerPolicy.condition", format!("{tpath}: {cond:?}: {e}"))
                }
            })?;
        }
        if let Some(s) = &task.trigger_policy.strategy {
            if s != "ALL_UPSTREAM_TASKS_SUCCEEDED" && s != "ALL_UPSTREAM_TASKS_COMPLETED" {
                return Err(unsupported(format!("triggerPolicy.strategy {s}"), tpath));
            }
        }
        if let Some(it) = &task.parameter_iterator {
            if it.items.raw.is_none() == it.items.input_parameter.is_none() {
                return Err(invalid(
                    format!("{tpath}.parameterIterator.items"),
                    "needs raw or inputParameter",
                ));
            }
            if let Some(raw) = &it.items.raw {
                let parsed: Result<Value, _> = serde_json::from_str(raw);
                match parsed {
                    Ok(Value::Array(items)) if items.len() > MAX_LOOP_ITEMS => {
                        return Err(invalid(
                            format!("{tpath}.parameterIterator.items.raw"),
                            format!(
                                "has {} items; a ParallelFor may have at most {MAX_LOOP_ITEMS}",
                                items.len()
                            ),
                        ));
                    }
                    Ok(Value::Array(_)) => {}
                    _ => {
                        return Err(invalid(
                            format!("{tpath}.parameterIterator.items.raw"),
                            "is not a JSON list",
                        ));
                    }
                }
            }
        }
        if let Some(it) = &task.artifact_iterator {
            if it.items.input_artifact.is_none() {
                return Err(invalid(
                    format!("{tpath}.artifactIterator.items"),
                    "needs inputArtifact",
                ));
            }
        }
    }
    if let Some(cycle) = find_cycle(dag) {
        return Err(invalid(
            format!("{path}.dag"),
            format!("dependency cycle: {}", cycle.join(" -> ")),
        ));
    }
    for (k, o) in &dag.outputs.parameters {
        let sels: Vec<&ParameterSelector> = match (&o.value_from_parameter, &o.value_from_oneof) {
            (Some(s), None) => vec![s],
            (None, Some(one)) => one.parameter_selectors.iter().collect(),
            _ => {
                return Err(invalid(
                    format!("{path}.dag.outputs.parameters.{k}"),
                    "needs one value source",
                ))
            }
        };
        for s in sels {
            if !dag.tasks.contains_key(&s.producer_subtask) {
                return Err(invalid(
                    format!("{path}.dag.outputs.parameters.{k}"),
                    format!("producer {:?} is not a task of this DAG", s.producer_subtask),
                ));
            }
        }
    }
    for (k, o) in &dag.outputs.artifacts {
        for s in &o.artifact_selectors {
            if !dag.tasks.contains_key(&s.producer_subtask) {
                return Err(invalid(
                    format!("{path}.dag.outputs.artifacts.{k}"),
                    format!("producer {:?} is not a task of this DAG", s.producer_subtask),
                ));
            }
        }
    }
    Ok(())
}

/// Loop-item inputs (`pipelinechannel--x-loop-item`) are defined by the loop's iterator
/// on the task that runs the sub-DAG, and the compiler also declares them as inputs; a
/// few older files only name them in the iterator.
fn is_iterator_input(_dag: &Dag, name: &str) -> bool {
    name.contains("-loop-item")
}

/// A component that contains itself, directly or through sub-DAGs, would never end.
fn check_nesting(spec: &PipelineSpec, comp: &ComponentSpec, stack: &mut Vec<String>) -> Result<(), IrError> {
    let Some(dag) = &comp.dag else { return Ok(()) };
    for task in dag.tasks.values() {
        let name = &task.component_ref.name;
        if stack.contains(name) {
            return Err(invalid(
                format!("components.{name}"),
                "the component contains itself",
            ));
        }
        if let Some(child) = spec.component(name) {
            stack.push(name.clone());
            check_nesting(spec, child, stack)?;
            stack.pop();
        }
    }
    Ok(())
}

/// A cycle among a DAG's tasks, if any (Kahn's algorithm; what remains is cyclic).
pub fn find_cycle(dag: &Dag) -> Option<Vec<String>> {
    let mut indeg: BTreeMap<&str, usize> = dag.tasks.keys().map(|k| (k.as_str(), 0)).collect();
    let ups: BTreeMap<&str, BTreeSet<String>> = dag
        .tasks
        .iter()
        .map(|(k, t)| (k.as_str(), t.upstream()))
        .collect();
    for (k, up) in &ups {
        if let Some(d) = indeg.get_mut(k) {
            *d = up.iter().filter(|u| dag.tasks.contains_key(*u)).count();
        }
    }
    let mut ready: Vec<&str> = indeg.iter().filter(|(_, d)| **d == 0).map(|(k, _)| *k).collect();
    let mut done = BTreeSet::new();
    while let Some(n) = ready.pop() {
        done.insert(n);
        for (k, up) in &ups {
            if up.contains(n) {
                if let Some(d) = indeg.get_mut(k) {
                    *d -= 1;
                    if *d == 0 {
                        ready.push(k);
                    }
                }
            }
        }
    }
    let rest: Vec<String> = dag
        .tasks
        .keys()
        .filter(|k| !done.contains(k.as_str()))
        .cloned()
        .collect();
    (!rest.is_empty()).then_some(rest)
}

/// Platform keys Hearth honours on the process runtime; every other key is refused.
const PLATFORM_HONOURED: &[&str] = &["activeDeadlineSeconds", "podMetadata"];

fn validate_platform(
    platform: Option<&Value>,
    spec: &PipelineSpec,
) -> Result<BTreeMap<String, PlatformExecutor>, IrError> {
    let mut out = BTreeMap::new();
    let Some(platform) = platform else {
        return Ok(out);
    };
    let Some(platforms) = platform.get("platforms").and_then(Value::as_object) else {
        return Err(invalid(
            "platforms",
            "the platform spec document has no platforms mapping",
        ));
    };
    for (name, body) in platforms {
        if name != "kubernetes" {
            return Err(unsupported(
                format!("platforms.{name}"),
                "only the kubernetes platform spec is read",
            ));
        }
        let Some(k8s) = body.as_object() else {
            return Err(invalid("platforms.kubernetes", "must be a mapping"));
        };
        for key in k8s.keys() {
            match key.as_str() {
                "deploymentSpec" => {}
                "pipelineConfig" => {
                    let inner = k8s[key]
                        .as_object()
                        .map(|m| m.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default();
                    let first = inner.first().cloned().unwrap_or_default();
                    return Err(unsupported(
                        format!("platforms.kubernetes.pipelineConfig.{first}"),
                        "pipeline-level Kubernetes configuration (workspace volumes) needs a cluster",
                    ));
                }
                other => {
                    return Err(unsupported(
                        format!("platforms.kubernetes.{other}"),
                        "unknown platform key",
                    ))
                }
            }
        }
        let executors = k8s
            .get("deploymentSpec")
            .and_then(|d| d.get("executors"))
            .and_then(Value::as_object)
            .cloned()
            .unwrap_or_default();
        for (label, cfg) in executors {
            if spec.executor(&label).is_none() {
                return Err(invalid(
                    format!("platforms.kubernetes.deploymentSpec.executors.{label}"),
                    "names an executor the pipeline spec does not have",
                ));
            }
            let Some(cfg) = cfg.as_object() else { continue };
            let mut px = PlatformExecutor::default();
            for (key, v) in cfg {
                if !PLATFORM_HONOURED.contains(&key.as_str()) {
                    return Err(unsupported(
                        format!("platforms.kubernetes.{key}"),
                        format!(
                            "executor {label}: Hearth's process runtime cannot provide {key}; \
                             honoured platform keys are {}",
                            PLATFORM_HONOURED.join(", ")
                        ),
                    ));
                }
                match key.as_str() {
                    "activeDeadlineSeconds" => {
                        // int64 in kubernetes_executor_config.proto; 0 (proto3's
                        // default) means no deadline.
                        px.active_deadline_seconds = int_in(
                            &Value::Object(cfg.clone()),
                            key,
                            &format!("platforms.kubernetes.deploymentSpec.executors.{label}"),
                            0,
                            MAX_SECONDS,
                        )?
                        .filter(|s| *s > 0);
                    }
                    _ => {
                        // podMetadata: labels and annotations become workload labels.
                        for part in ["labels", "annotations"] {
                            if let Some(m) = v.get(part).and_then(Value::as_object) {
                                for (k, val) in m {
                                    px.labels
                                        .insert(k.clone(), val.as_str().unwrap_or_default().to_string());
                                }
                            }
                        }
                    }
                }
            }
            out.insert(label, px);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TWO_STEP: &str = r#"
pipelineInfo: {name: two}
root:
  inputDefinitions: {parameters: {a: {parameterType: NUMBER_INTEGER, defaultValue: 1.0}}}
  dag:
    tasks:
      first:
        taskInfo: {name: first}
        componentRef: {name: comp-x}
        inputs: {parameters: {a: {componentInputParameter: a}}}
      second:
        taskInfo: {name: second}
        componentRef: {name: comp-x}
        inputs: {parameters: {a: {taskOutputParameter: {producerTask: first, outputParameterKey: Output}}}}
components:
  comp-x:
    executorLabel: exec-x
    inputDefinitions: {parameters: {a: {parameterType: NUMBER_INTEGER}}}
    outputDefinitions: {parameters: {Output: {parameterType: NUMBER_INTEGER}}}
deploymentSpec:
  executors:
    exec-x: {container: {image: python:3.11, command: [echo], args: ["{{$.inputs.parameters['a']}}"]}}
schemaVersion: 2.1.0
sdkVersion: kfp-2.17.0
"#;

    #[test]
    fn accepts_a_two_step_pipeline() {
        let pkg = parse_package(TWO_STEP.as_bytes()).unwrap();
        let v = validate(&pkg).unwrap();
        assert_eq!(v.name, "two");
        assert_eq!(
            v.spec.root.dag.as_ref().unwrap().tasks["second"]
                .upstream()
                .into_iter()
                .collect::<Vec<_>>(),
            vec!["first".to_string()]
        );
    }

    #[test]
    fn refuses_cycles_and_unknown_fields() {
        let cyclic = TWO_STEP.replace(
            "        componentRef: {name: comp-x}\n        inputs: {parameters: {a: {componentInputParameter: a}}}",
            "        componentRef: {name: comp-x}\n        dependentTasks: [second]\n        inputs: {parameters: {a: {componentInputParameter: a}}}",
        );
        let err = validate(&parse_package(cyclic.as_bytes()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("cycle"), "{err}");
        let unknown = TWO_STEP.replace("components:", "components_1:");
        let err = validate(&parse_package(unknown.as_bytes()).unwrap()).unwrap_err();
        assert!(err.to_string().contains("components_1"), "{err}");
        assert!(matches!(parse_package(b"# nothing\n"), Err(IrError::Empty)));
    }

    #[test]
    fn refuses_platform_features_by_name() {
        let two_docs = format!(
            "{TWO_STEP}---\nplatforms:\n  kubernetes:\n    deploymentSpec:\n      executors:\n        exec-x:\n          secretAsEnv: []\n"
        );
        let pkg = parse_package(two_docs.as_bytes()).unwrap();
        assert!(pkg.platform.is_some());
        match validate(&pkg).unwrap_err() {
            IrError::Unsupported { feature, .. } => assert_eq!(feature, "platforms.kubernetes.secretAsEnv"),
            other => panic!("{other:?}"),
        }
    }
}

#[cfg(test)]
mod corpus {
    use super::*;
    use std::path::{Path, PathBuf};

    fn files(dir: &Path, out: &mut Vec<PathBuf>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                files(&p, out);
            } else if matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                out.push(p);
            }
        }
    }

    /// Every upstream KFP file: accepted, or refused with a named feature; the
    /// `invalid/` ones refused as invalid. The HTTP-level test does the same through
    /// upload; this one pins the classification close to the code.
    #[test]
    fn upstream_corpus_is_classified() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared/fixtures/kfp");
        if !root.exists() {
            eprintln!("NOTICE: {} is absent; corpus test skipped", root.display());
            return;
        }
        let mut all = Vec::new();
        files(&root, &mut all);
        all.sort();
        let mut accepted = 0;
        let mut refused: BTreeMap<String, usize> = BTreeMap::new();
        for f in &all {
            let bytes = std::fs::read(f).unwrap();
            let outcome = parse_package(&bytes).and_then(|p| validate(&p).map(|_| ()));
            let is_invalid = f.to_string_lossy().contains("/invalid/");
            match outcome {
                Ok(()) => {
                    assert!(!is_invalid, "{} must be refused", f.display());
                    accepted += 1;
                }
                Err(IrError::Unsupported { feature, detail }) => {
                    assert!(!is_invalid, "{}: {feature}: {detail}", f.display());
                    *refused.entry(feature).or_default() += 1;
                }
                Err(e) => {
                    assert!(is_invalid, "{} refused as invalid: {e}", f.display());
                }
            }
        }
        eprintln!(
            "corpus: {} files, {accepted} accepted, refused by feature: {refused:?}",
            all.len()
        );
        assert!(all.len() >= 170);
    }
}
