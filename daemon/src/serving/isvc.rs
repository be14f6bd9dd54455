//! The `serving.kserve.io/v1beta1` `InferenceService` as Hearth understands it. The
//! user's document is stored as written; `validate` reads it into a `ServiceSpec`
//! and refuses, by name, every field Hearth would otherwise have to ignore.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::runtimes::{RuntimeTable, Selection};
use crate::config::ServingConfig;
use crate::model::strict;

pub const API_VERSION: &str = "serving.kserve.io/v1beta1";
pub const KIND: &str = "InferenceService";

/// Opt-in response cache: `"true"` or a TTL in seconds.
pub const CACHE_ANNOTATION: &str = "serving.hearth.dev/response-cache";
/// Entries the response cache keeps per service.
pub const CACHE_SIZE_ANNOTATION: &str = "serving.hearth.dev/response-cache-size";
/// `"true"`: the data plane requires a Hearth token that may access the namespace.
pub const AUTH_ANNOTATION: &str = "serving.hearth.dev/require-token";

#[derive(Debug, thiserror::Error, PartialEq)]
pub enum IsvcError {
    #[error("apiVersion {0} is retired; send serving.kserve.io/v1beta1")]
    RetiredApiVersion(String),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{feature}: {detail}")]
    Unsupported { feature: String, detail: String },
}

fn invalid(field: impl Into<String>, detail: impl Into<String>) -> IsvcError {
    IsvcError::Invalid {
        field: field.into(),
        detail: detail.into(),
    }
}

fn unsupported(feature: impl Into<String>, detail: impl Into<String>) -> IsvcError {
    IsvcError::Unsupported {
        feature: feature.into(),
        detail: detail.into(),
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    V1,
    V2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScaleMetric {
    Concurrency,
    Rps,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "scheme", rename_all = "lowercase")]
pub enum Storage {
    /// `file://` or an absolute path.
    File {
        path: String,
    },
    Http {
        url: String,
    },
    S3 {
        bucket: String,
        key: String,
    },
    /// Public Google Cloud Storage objects, read anonymously as KServe's storage
    /// initializer does for public buckets.
    Gcs {
        bucket: String,
        key: String,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
}

/// What runs in each replica of a component.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Workload {
    /// A model served by a runtime from the table.
    Model {
        format: String,
        format_version: Option<String>,
        runtime: String,
        runtime_version: Option<String>,
        storage: Storage,
        args: Vec<String>,
        env: Vec<(String, String)>,
    },
    /// The user's own server: `command` + `args`, listening on `port` (from
    /// `ports[0].containerPort`, else 8080, exported as `PORT`).
    Custom {
        image: Option<String>,
        command: Vec<String>,
        env: Vec<(String, String)>,
        port: u16,
        working_dir: Option<String>,
        storage: Option<Storage>,
    },
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaling {
    pub min_replicas: u32,
    pub max_replicas: u32,
    pub metric: ScaleMetric,
    /// Target per replica: concurrent requests or requests per second.
    pub target: f64,
    /// Hard limit of concurrent requests per replica; 0 = unlimited.
    pub container_concurrency: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Component {
    pub workload: Workload,
    pub protocol: Protocol,
    pub resources: Resources,
    pub scaling: Scaling,
    pub timeout_seconds: u64,
}

impl Component {
    /// The component with every number within the bounds validation applies now: a
    /// revision stored by an older Hearth (or edited in the database) is read through
    /// this, so that no stored value can start a thousand replicas or overflow a
    /// deadline.
    pub fn within_bounds(mut self) -> Component {
        let s = &mut self.scaling;
        let replicas = bounds::REPLICAS as u32;
        s.min_replicas = s.min_replicas.min(replicas);
        s.max_replicas = s.max_replicas.clamp(s.min_replicas, replicas.max(s.min_replicas));
        s.container_concurrency = s.container_concurrency.min(bounds::CONTAINER_CONCURRENCY as u32);
        s.target = if s.target.is_nan() {
            bounds::SCALE_TARGET_MIN
        } else {
            s.target
                .clamp(bounds::SCALE_TARGET_MIN, bounds::SCALE_TARGET as f64)
        };
        self.timeout_seconds = self.timeout_seconds.clamp(1, bounds::TIMEOUT_SECONDS);
        self.resources.gpus = self.resources.gpus.min(bounds::GPUS as u32);
        self.resources.cpu_millis = self.resources.cpu_millis.min(bounds::CPU_MILLIS);
        self.resources.memory_bytes = self.resources.memory_bytes.min(bounds::MEMORY_BYTES);
        self
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CacheSpec {
    pub ttl_seconds: u64,
    pub max_entries: usize,
}

/// The parts of an InferenceService that Hearth acts on. Everything in it but
/// `canary_percent` belongs to a revision: a change makes a new one.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ServiceSpec {
    pub predictor: Component,
    pub transformer: Option<Component>,
    pub canary_percent: Option<u8>,
    pub cache: Option<CacheSpec>,
    pub require_token: bool,
}

/// A Kubernetes object's identity as sent.
#[derive(Debug, Clone, PartialEq)]
pub struct Parsed {
    pub name: String,
    pub metadata: Value,
    pub spec: Value,
    pub service: ServiceSpec,
}

type Obj = Map<String, Value>;

fn object<'a>(value: &'a Value, field: &str) -> Result<&'a Obj, IsvcError> {
    value
        .as_object()
        .ok_or_else(|| invalid(field, "must be an object"))
}

/// Refuses every key of `obj` outside `known`; `refused` names the KServe features
/// that exist upstream but that Hearth does not honour, with why.
fn check_keys(obj: &Obj, path: &str, known: &[&str], refused: &[(&str, &str)]) -> Result<(), IsvcError> {
    for key in obj.keys() {
        if known.contains(&key.as_str()) {
            continue;
        }
        let field = format!("{path}.{key}");
        if let Some((_, why)) = refused.iter().find(|(k, _)| k == key) {
            return Err(unsupported(field, *why));
        }
        return Err(unsupported(
            field,
            "this field is not part of the InferenceService subset Hearth serves",
        ));
    }
    Ok(())
}

fn string(obj: &Obj, key: &str, path: &str) -> Result<Option<String>, IsvcError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => Err(invalid(format!("{path}.{key}"), "must be a string")),
    }
}

/// An integer field within `min..=max`, checked by `model::strict::opt_u64_in` so that
/// every kind words its range errors alike.
fn integer(obj: &Obj, key: &str, path: &str, min: u64, max: u64) -> Result<Option<u64>, IsvcError> {
    let Some(raw) = obj.get(key) else {
        return Ok(None);
    };
    let single = Value::Object(Map::from_iter([(key.to_string(), raw.clone())]));
    Ok(strict::opt_u64_in(&single, key, path, min, max)?)
}

impl From<strict::FieldError> for IsvcError {
    fn from(e: strict::FieldError) -> IsvcError {
        match e {
            strict::FieldError::Invalid { path, detail } => invalid(path, detail),
            strict::FieldError::Unsupported { path, detail } => unsupported(path, detail),
        }
    }
}

/// The largest value of each bounded field, shared by validation and by
/// `Component::within_bounds`, which applies them to revisions stored before them.
pub mod bounds {
    /// minReplicas, maxReplicas and `autoscaling.knative.dev/min-scale`.
    pub const REPLICAS: u64 = 1000;
    pub const CONTAINER_CONCURRENCY: u64 = 100_000;
    /// scaleTarget and `autoscaling.knative.dev/target` (concurrency or rps).
    pub const SCALE_TARGET: u64 = 1_000_000;
    /// The smallest `autoscaling.knative.dev/target`, as Knative's `TargetMin`.
    pub const SCALE_TARGET_MIN: f64 = 0.01;
    /// A request's timeout, seconds.
    pub const TIMEOUT_SECONDS: u64 = 86_400;
    /// Response cache entries per service.
    pub const CACHE_ENTRIES: u64 = 1_000_000;
    /// CPU, millicores (one million cores).
    pub const CPU_MILLIS: u64 = 1_000_000_000;
    /// Memory, bytes (1 PiB).
    pub const MEMORY_BYTES: u64 = 1 << 50;
    pub const GPUS: u64 = 1024;
}

fn strings(obj: &Obj, key: &str, path: &str) -> Result<Vec<String>, IsvcError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(Vec::new()),
        Some(Value::Array(items)) => items
            .iter()
            .enumerate()
            .map(|(i, v)| match v {
                Value::String(s) => Ok(s.clone()),
                // YAML lists of numbers (`args: [--port, 8080]`) are common; Kubernetes
                // would refuse them, and so does Hearth, naming the item.
                _ => Err(invalid(format!("{path}.{key}[{i}]"), "must be a string")),
            })
            .collect(),
        Some(_) => Err(invalid(format!("{path}.{key}"), "must be a list of strings")),
    }
}

fn env(obj: &Obj, path: &str) -> Result<Vec<(String, String)>, IsvcError> {
    let Some(list) = obj.get("env") else {
        return Ok(Vec::new());
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid(format!("{path}.env"), "must be a list"))?;
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}.env[{i}]");
        let item = object(item, &p)?;
        check_keys(
            item,
            &p,
            &["name", "value"],
            &[(
                "valueFrom",
                "values from secrets, config maps or fields need Kubernetes",
            )],
        )?;
        let name = string(item, "name", &p)?.ok_or_else(|| invalid(format!("{p}.name"), "is required"))?;
        out.push((name, string(item, "value", &p)?.unwrap_or_default()));
    }
    Ok(out)
}

/// Kubernetes quantities: `500m`, `2`, `1.5`; memory `2Gi`, `512M`, `1e9`. The result
/// is millicores when `cpu`, else units (bytes, devices), at most `max`.
pub fn parse_quantity(raw: &Value, field: &str, cpu: bool, max: u64) -> Result<u64, IsvcError> {
    let text = match raw {
        Value::String(s) => s.trim().to_string(),
        Value::Number(n) => n.to_string(),
        _ => return Err(invalid(field, "must be a quantity such as 500m, 2 or 4Gi")),
    };
    let bad = || {
        invalid(
            field,
            format!("{text:?} is not a quantity such as 500m, 2 or 4Gi"),
        )
    };
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == 'E' || c == '+' || c == '-'))
        .unwrap_or(text.len());
    let (number, suffix) = text.split_at(split);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "m" => 0.001,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0f64.powi(4),
        _ => return Err(bad()),
    };
    let value = (number * factor * if cpu { 1000.0 } else { 1.0 }).round();
    if !value.is_finite() || value < 0.0 {
        return Err(bad());
    }
    // Compared as f64 before the cast: `as u64` would saturate 1e300 silently.
    if value > max as f64 {
        let unit = if cpu { "millicores" } else { "" };
        return Err(invalid(
            field,
            format!("{text:?} is more than the most allowed ({max}{unit})"),
        ));
    }
    Ok(value as u64)
}

fn resources(obj: &Obj, path: &str) -> Result<Resources, IsvcError> {
    let Some(value) = obj.get("resources") else {
        return Ok(Resources::default());
    };
    let p = format!("{path}.resources");
    let res = object(value, &p)?;
    check_keys(
        res,
        &p,
        &["limits", "requests"],
        &[("claims", "dynamic resource claims need Kubernetes")],
    )?;
    let mut out = Resources::default();
    // Requests are what the scheduler admits on; a limit alone counts as the request,
    // as Kubernetes defaults it.
    for section in ["limits", "requests"] {
        let Some(values) = res.get(section) else { continue };
        let sp = format!("{p}.{section}");
        for (key, raw) in object(values, &sp)? {
            let field = format!("{sp}.{key}");
            match key.as_str() {
                "cpu" => out.cpu_millis = parse_quantity(raw, &field, true, bounds::CPU_MILLIS)?,
                "memory" => out.memory_bytes = parse_quantity(raw, &field, false, bounds::MEMORY_BYTES)?,
                "nvidia.com/gpu" => {
                    let n = parse_quantity(raw, &field, false, bounds::GPUS)?;
                    out.gpus = u32::try_from(n).map_err(|_| invalid(&field, "too many GPUs"))?;
                }
                other => {
                    return Err(unsupported(
                        field.clone(),
                        format!(
                        "resource {other} is not schedulable on this node (cpu, memory, nvidia.com/gpu are)"
                    ),
                    ))
                }
            }
        }
    }
    Ok(out)
}

/// `storageUri` schemes Hearth fetches; anything else is refused by scheme.
pub fn parse_storage(uri: &str, field: &str, config: &ServingConfig) -> Result<Storage, IsvcError> {
    if let Some(path) = uri.strip_prefix("file://") {
        if !path.starts_with('/') {
            return Err(invalid(
                field,
                "file:// URIs need an absolute path (file:///models/iris)",
            ));
        }
        return Ok(Storage::File {
            path: path.to_string(),
        });
    }
    if uri.starts_with('/') {
        return Ok(Storage::File {
            path: uri.to_string(),
        });
    }
    if uri.starts_with("http://") || uri.starts_with("https://") {
        return Ok(Storage::Http { url: uri.to_string() });
    }
    if let Some(rest) = uri.strip_prefix("s3://") {
        if config.s3_endpoint.is_empty() {
            return Err(unsupported(
                "storageUri.s3",
                "s3:// needs an S3-compatible endpoint: set [serving] s3_endpoint",
            ));
        }
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(field, "s3:// URIs need a bucket (s3://bucket/path)"));
        }
        return Ok(Storage::S3 {
            bucket: bucket.to_string(),
            key: key.trim_end_matches('/').to_string(),
        });
    }
    if let Some(rest) = uri.strip_prefix("gs://") {
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(invalid(field, "gs:// URIs need a bucket (gs://bucket/path)"));
        }
        return Ok(Storage::Gcs {
            bucket: bucket.to_string(),
            key: key.trim_end_matches('/').to_string(),
        });
    }
    let scheme = uri.split_once("://").map(|(s, _)| s).unwrap_or("");
    if scheme.is_empty() {
        return Err(invalid(
            field,
            format!("{uri:?} is neither an absolute path nor a URI with a scheme"),
        ));
    }
    Err(unsupported(
        format!("storageUri.{scheme}"),
        format!("{scheme}:// storage is not fetched by Hearth (file://, absolute paths, http(s)://, s3:// and public gs:// are)"),
    ))
}

/// Model frameworks of the pre-`model` schema (`predictor.sklearn: {...}`); each is
/// read as `model` with `modelFormat.name` set, as KServe does.
pub(crate) const FRAMEWORKS: &[&str] = &[
    "sklearn",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "paddle",
    "huggingface",
];

/// Fields of a component (predictor or transformer) refused with the reason.
const COMPONENT_REFUSED: &[(&str, &str)] = &[
    ("logger", "request/response logging to a sink is not implemented"),
    ("batcher", "server-side request batching is not implemented"),
    (
        "autoScaling",
        "KEDA/HPA metric autoscaling is not implemented; use scaleMetric concurrency or rps",
    ),
    (
        "deploymentStrategy",
        "rolling-update tuning needs Kubernetes; Hearth rolls out by revision",
    ),
    ("nodeSelector", "a single node has nothing to select"),
    ("affinity", "a single node has nothing to select"),
    ("tolerations", "taints are only used with --runtime k3s"),
    (
        "serviceAccountName",
        "Kubernetes service accounts do not exist on the process runtime",
    ),
    (
        "serviceAccount",
        "Kubernetes service accounts do not exist on the process runtime",
    ),
    ("volumes", "pod volumes are not mounted by the process runtime"),
    ("imagePullSecrets", "images are not pulled by the process runtime"),
    ("workerSpec", "multi-node serving needs several nodes"),
    (
        "storage",
        "storageSpec needs a storage-config secret; use storageUri",
    ),
    ("initContainers", "init containers are not run"),
    ("securityContext", "pod security contexts need Kubernetes"),
    (
        "priorityClassName",
        "Hearth ranks serving above notebooks and batch itself",
    ),
    ("hostNetwork", "replicas always listen on loopback"),
    ("dnsPolicy", "pod DNS needs Kubernetes"),
    ("labels", "component labels need Kubernetes pods"),
    ("annotations", "component annotations need Kubernetes pods"),
];

/// Fields of a component (predictor or transformer) Hearth honours.
pub(crate) const COMPONENT_KNOWN: &[&str] = &[
    "model",
    "containers",
    "minReplicas",
    "maxReplicas",
    "scaleTarget",
    "scaleMetric",
    "containerConcurrency",
    "timeout",
    "canaryTrafficPercent",
    "sklearn",
    "xgboost",
    "lightgbm",
    "tensorflow",
    "pytorch",
    "triton",
    "onnx",
    "pmml",
    "paddle",
    "huggingface",
];

/// Fields of an InferenceService `spec` Hearth honours.
pub(crate) const SPEC_FIELDS: &[&str] = &["predictor", "transformer"];

/// Fields of a component's `model` (KServe's ModelSpec) Hearth honours.
pub(crate) const MODEL_FIELDS: &[&str] = &[
    "modelFormat",
    "storageUri",
    "protocolVersion",
    "runtime",
    "runtimeVersion",
    "resources",
    "args",
    "env",
    "ports",
    "name",
    "image",
    "imagePullPolicy",
];

/// Fields of a component's one custom container Hearth honours.
pub(crate) const CUSTOM_CONTAINER_FIELDS: &[&str] = &[
    "name",
    "image",
    "imagePullPolicy",
    "command",
    "args",
    "env",
    "ports",
    "resources",
    "workingDir",
    "storageUri",
];

const CONTAINER_REFUSED: &[(&str, &str)] = &[
    (
        "livenessProbe",
        "custom probes are not run; Hearth checks the runtime's readiness path",
    ),
    (
        "readinessProbe",
        "custom probes are not run; Hearth checks the runtime's readiness path",
    ),
    (
        "startupProbe",
        "custom probes are not run; Hearth checks the runtime's readiness path",
    ),
    (
        "volumeMounts",
        "pod volumes are not mounted by the process runtime",
    ),
    ("envFrom", "secrets and config maps need Kubernetes"),
    ("securityContext", "container security contexts need Kubernetes"),
    ("lifecycle", "container lifecycle hooks are not run"),
    (
        "storage",
        "storageSpec needs a storage-config secret; use storageUri",
    ),
];

fn ports(obj: &Obj, path: &str) -> Result<Option<u16>, IsvcError> {
    let Some(list) = obj.get("ports") else {
        return Ok(None);
    };
    let list = list
        .as_array()
        .ok_or_else(|| invalid(format!("{path}.ports"), "must be a list"))?;
    let mut http = None;
    for (i, item) in list.iter().enumerate() {
        let p = format!("{path}.ports[{i}]");
        let port = object(item, &p)?;
        check_keys(port, &p, &["containerPort", "name", "protocol"], &[])?;
        let number = integer(port, "containerPort", &p, 1, 65535)?
            .ok_or_else(|| invalid(format!("{p}.containerPort"), "is required"))?;
        let name = string(port, "name", &p)?.unwrap_or_default();
        if let Some(protocol) = string(port, "protocol", &p)? {
            if protocol != "TCP" {
                return Err(unsupported(
                    format!("{p}.protocol"),
                    format!("{protocol} ports are not proxied"),
                ));
            }
        }
        // Knative names the port's protocol: h2c is gRPC, which the data plane
        // does not proxy.
        if name == "h2c" || name.contains("grpc") {
            return Err(unsupported(
                "ports.grpc",
                format!("{p} ({name}) is a gRPC port; the data plane proxies HTTP/1.1 REST"),
            ));
        }
        if http.is_some() {
            return Err(unsupported(
                p.clone(),
                "only one serving port per container is proxied",
            ));
        }
        http = Some(number as u16);
    }
    Ok(http)
}

struct Context<'a> {
    runtimes: &'a RuntimeTable,
    config: &'a ServingConfig,
    annotations: &'a BTreeMap<String, String>,
}

fn model_workload(
    model: &Obj,
    path: &str,
    ctx: &Context<'_>,
    framework: Option<&str>,
) -> Result<(Workload, Protocol, Resources), IsvcError> {
    check_keys(model, path, MODEL_FIELDS, CONTAINER_REFUSED)?;
    let (format, version) = match framework {
        Some(f) => (f.to_string(), None),
        None => {
            let mf = model
                .get("modelFormat")
                .ok_or_else(|| invalid(format!("{path}.modelFormat"), "is required"))?;
            let mfp = format!("{path}.modelFormat");
            let mf = object(mf, &mfp)?;
            check_keys(mf, &mfp, &["name", "version"], &[])?;
            let name =
                string(mf, "name", &mfp)?.ok_or_else(|| invalid(format!("{mfp}.name"), "is required"))?;
            (name, string(mf, "version", &mfp)?)
        }
    };
    let protocol = match string(model, "protocolVersion", path)?.as_deref() {
        None | Some("v1") => Protocol::V1,
        Some("v2") => Protocol::V2,
        Some("grpc-v2") | Some("grpc-v1") => {
            return Err(unsupported(
                "protocolVersion.grpc",
                "gRPC inference is not proxied; use protocolVersion v1 or v2 (REST)",
            ))
        }
        Some(other) => {
            return Err(invalid(
                format!("{path}.protocolVersion"),
                format!("{other:?} is not a protocol version (v1, v2)"),
            ))
        }
    };
    let runtime_name = string(model, "runtime", path)?;
    let runtime = match ctx.runtimes.select(runtime_name.as_deref(), &format, version.as_deref()) {
        Selection::Found(r) => r,
        Selection::UnknownRuntime => {
            return Err(unsupported(
                format!("runtime.{}", runtime_name.unwrap_or_default()),
                "no such serving runtime; GET /hearth/v1/servingruntimes lists them (add one under [serving] runtimes)",
            ))
        }
        Selection::FormatNotServed(r) => {
            return Err(invalid(
                format!("{path}.runtime"),
                format!("runtime {} does not serve modelFormat {format}", r.name),
            ))
        }
        Selection::NoRuntimeForFormat => {
            return Err(unsupported(
                format!("modelFormat.{format}"),
                format!(
                    "no serving runtime serves {format}{}; GET /hearth/v1/servingruntimes lists them (add one under [serving] runtimes)",
                    version.as_ref().map(|v| format!(" version {v}")).unwrap_or_default()
                ),
            ))
        }
    };
    // A V1 request to a V2-only runtime is translated by the proxy, so v1 services
    // work on MLServer; the reverse is not needed by any shipped runtime.
    if protocol == Protocol::V2 && !runtime.speaks("v2") {
        return Err(unsupported(
            "protocolVersion.v2",
            format!(
                "runtime {} speaks {} only",
                runtime.name,
                runtime.protocol_versions.join(", ")
            ),
        ));
    }
    if ports(model, path)?.is_some() {
        return Err(unsupported(
            format!("{path}.ports"),
            "a runtime's port is chosen by Hearth; ports are only for custom containers",
        ));
    }
    // A model without a storageUri is KServe's multi-model server, loaded later by
    // TrainedModel resources.
    let uri = string(model, "storageUri", path)?.ok_or_else(|| {
        unsupported(
            "multiModelServing",
            format!("{path} has no storageUri; TrainedModel multi-model serving is not implemented"),
        )
    })?;
    let storage = parse_storage(&uri, &format!("{path}.storageUri"), ctx.config)?;
    Ok((
        Workload::Model {
            format,
            format_version: version,
            runtime: runtime.name.clone(),
            runtime_version: string(model, "runtimeVersion", path)?,
            storage,
            args: strings(model, "args", path)?,
            env: env(model, path)?,
        },
        protocol,
        resources(model, path)?,
    ))
}

fn custom_workload(
    containers: &Value,
    path: &str,
    ctx: &Context<'_>,
) -> Result<(Workload, Resources), IsvcError> {
    let p = format!("{path}.containers");
    let list = containers
        .as_array()
        .ok_or_else(|| invalid(&p, "must be a list"))?;
    match list.len() {
        0 => return Err(invalid(&p, "needs one container")),
        1 => {}
        _ => {
            return Err(unsupported(
                "containers.multiple",
                format!(
                    "{p} has {} containers; collocated sidecars are not run (use spec.transformer)",
                    list.len()
                ),
            ))
        }
    }
    let cp = format!("{p}[0]");
    let container = object(&list[0], &cp)?;
    check_keys(container, &cp, CUSTOM_CONTAINER_FIELDS, CONTAINER_REFUSED)?;
    let mut command = strings(container, "command", &cp)?;
    if command.is_empty() {
        // `args` alone are arguments to the image's entrypoint, which the process
        // runtime does not know.
        return Err(unsupported(
            "containers.imageEntrypoint",
            format!("{cp} has no command; the process runtime runs command + args on the host and cannot run an image's entrypoint"),
        ));
    }
    command.extend(strings(container, "args", &cp)?);
    let storage = match string(container, "storageUri", &cp)? {
        Some(uri) => Some(parse_storage(&uri, &format!("{cp}.storageUri"), ctx.config)?),
        None => None,
    };
    Ok((
        Workload::Custom {
            image: string(container, "image", &cp)?,
            command,
            env: env(container, &cp)?,
            port: ports(container, &cp)?.unwrap_or(8080),
            working_dir: string(container, "workingDir", &cp)?,
            storage,
        },
        resources(container, &cp)?,
    ))
}

/// A number annotation within `min..=max` (annotations are strings: `"10"`, `"0.5"`).
fn annotation_f64(ctx: &Context<'_>, key: &str, min: f64, max: f64) -> Result<Option<f64>, IsvcError> {
    let Some(raw) = ctx.annotations.get(key) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite() && (min..=max).contains(v))
        .map(Some)
        .ok_or_else(|| {
            invalid(
                format!("metadata.annotations.{key}"),
                format!("must be a number from {min} to {max}, not {raw:?}"),
            )
        })
}

/// A whole-number annotation within `min..=max`.
fn annotation_u64(ctx: &Context<'_>, key: &str, min: u64, max: u64) -> Result<Option<u64>, IsvcError> {
    let Some(raw) = ctx.annotations.get(key) else {
        return Ok(None);
    };
    raw.trim()
        .parse::<u64>()
        .ok()
        .filter(|v| (min..=max).contains(v))
        .map(Some)
        .ok_or_else(|| {
            invalid(
                format!("metadata.annotations.{key}"),
                format!("must be an integer from {min} to {max}, not {raw:?}"),
            )
        })
}

fn component(
    value: &Value,
    path: &str,
    ctx: &Context<'_>,
    is_predictor: bool,
) -> Result<(Component, Option<u8>), IsvcError> {
    let obj = object(value, path)?;
    let mut refused: Vec<(&str, &str)> = COMPONENT_REFUSED.to_vec();
    if !is_predictor {
        refused.push(("canaryTrafficPercent", "canary traffic is split on the predictor"));
    }
    let known: Vec<&str> = COMPONENT_KNOWN
        .iter()
        .copied()
        .filter(|k| {
            is_predictor || (*k != "canaryTrafficPercent" && *k != "model" && !FRAMEWORKS.contains(k))
        })
        .collect();
    check_keys(obj, path, &known, &refused)?;

    let mut specs: Vec<&str> = Vec::new();
    if obj.contains_key("model") {
        specs.push("model");
    }
    if obj.contains_key("containers") {
        specs.push("containers");
    }
    for f in FRAMEWORKS {
        if obj.contains_key(*f) {
            specs.push(f);
        }
    }
    let (workload, protocol, resources) = match specs.as_slice() {
        [] => {
            return Err(invalid(
                path,
                if is_predictor {
                    "needs model, a framework (sklearn, xgboost, ...) or containers"
                } else {
                    "needs containers"
                },
            ))
        }
        ["containers"] => {
            let (w, r) = custom_workload(&obj["containers"], path, ctx)?;
            (w, Protocol::V1, r)
        }
        ["model"] => {
            let mp = format!("{path}.model");
            model_workload(object(&obj["model"], &mp)?, &mp, ctx, None)?
        }
        [framework] => {
            let fp = format!("{path}.{framework}");
            model_workload(object(&obj[*framework], &fp)?, &fp, ctx, Some(framework))?
        }
        // KServe allows `model` + `containers` when the extra containers are sidecars.
        many => {
            return Err(unsupported(
                "containers.multiple",
                format!(
                    "{path} sets {}; one model or one container per component is run",
                    many.join(" and ")
                ),
            ))
        }
    };

    let min = integer(obj, "minReplicas", path, 0, bounds::REPLICAS)?;
    let max = integer(obj, "maxReplicas", path, 0, bounds::REPLICAS)?;
    let min_scale = annotation_u64(ctx, "autoscaling.knative.dev/min-scale", 0, bounds::REPLICAS)?;
    // Bounded above, so the narrowing cannot truncate.
    let min_replicas = min.or(min_scale).unwrap_or(1) as u32;
    // KServe: maxReplicas 0 means "no limit"; on one node the CPU count bounds it.
    let max_replicas = match max.unwrap_or(0) {
        0 => (crate::node::cpu_count() as u32).max(min_replicas).max(1),
        m => m as u32,
    };
    if max_replicas < min_replicas {
        return Err(invalid(
            format!("{path}.maxReplicas"),
            format!("{max_replicas} is less than minReplicas {min_replicas}"),
        ));
    }
    let container_concurrency = integer(
        obj,
        "containerConcurrency",
        path,
        0,
        bounds::CONTAINER_CONCURRENCY,
    )?
    .unwrap_or(0) as u32;
    let metric_annotation = ctx.annotations.get("autoscaling.knative.dev/metric").cloned();
    let metric = match string(obj, "scaleMetric", path)?.or(metric_annotation).as_deref() {
        None | Some("concurrency") => ScaleMetric::Concurrency,
        Some("rps") | Some("qps") => ScaleMetric::Rps,
        Some(other @ ("cpu" | "memory")) => {
            return Err(unsupported(
                format!("scaleMetric.{other}"),
                "resource-utilisation autoscaling (HPA) is not implemented; use concurrency or rps",
            ))
        }
        Some(other) => {
            return Err(unsupported(
                format!("scaleMetric.{other}"),
                "the autoscaler scales on concurrency or rps",
            ))
        }
    };
    let target = match integer(obj, "scaleTarget", path, 1, bounds::SCALE_TARGET)? {
        Some(t) => t as f64,
        None => match annotation_f64(
            ctx,
            "autoscaling.knative.dev/target",
            bounds::SCALE_TARGET_MIN,
            bounds::SCALE_TARGET as f64,
        )? {
            Some(t) => t,
            // Knative: the soft target defaults to containerConcurrency when set, else 100
            // (concurrency) or 200 (rps).
            None if container_concurrency > 0 && metric == ScaleMetric::Concurrency => {
                container_concurrency as f64
            }
            None => match metric {
                ScaleMetric::Concurrency => 100.0,
                ScaleMetric::Rps => 200.0,
            },
        },
    };
    let timeout_seconds = integer(obj, "timeout", path, 1, bounds::TIMEOUT_SECONDS)?
        .unwrap_or(ctx.config.default_timeout_seconds);
    let canary = if is_predictor {
        integer(obj, "canaryTrafficPercent", path, 0, 100)?.map(|p| p as u8)
    } else {
        None
    };
    Ok((
        Component {
            workload,
            protocol,
            resources,
            scaling: Scaling {
                min_replicas,
                max_replicas,
                metric,
                target,
                container_concurrency,
            },
            timeout_seconds,
        },
        canary,
    ))
}

/// Annotations in KServe's and Knative's domains that Hearth honours; the others in
/// those domains are refused by name. Annotations of other tools (Istio, Prometheus)
/// are metadata Hearth keeps but has no use for.
fn check_annotations(annotations: &BTreeMap<String, String>) -> Result<(), IsvcError> {
    for (key, value) in annotations {
        let field = || format!("metadata.annotations.{key}");
        match key.as_str() {
            "autoscaling.knative.dev/target"
            | "autoscaling.knative.dev/metric"
            | "autoscaling.knative.dev/min-scale"
            | CACHE_ANNOTATION
            | CACHE_SIZE_ANNOTATION
            | AUTH_ANNOTATION => {}
            "autoscaling.knative.dev/class" if value.contains("kpa") => {}
            "serving.kserve.io/deploymentMode" if value == "Serverless" => {}
            "serving.kserve.io/autoscalerClass" if value == "none" => {}
            // Hearth always exports per-service metrics at /metrics.
            "serving.kserve.io/enable-prometheus-scraping"
            | "serving.kserve.io/enable-metric-aggregation" => {}
            "serving.kserve.io/deploymentMode" => {
                return Err(unsupported(
                    format!("deploymentMode.{value}"),
                    "Hearth serves in its own Serverless mode (revisions, KPA autoscaling, scale to zero)",
                ))
            }
            "serving.kserve.io/autoscalerClass" => {
                return Err(unsupported(
                    format!("autoscalerClass.{value}"),
                    "Hearth's autoscaler follows Knative KPA; HPA and KEDA are not run",
                ))
            }
            _ if key.starts_with("serving.kserve.io/")
                || key.starts_with("autoscaling.knative.dev/")
                || key.starts_with("serving.knative.dev/")
                || key.starts_with("serving.hearth.dev/") =>
            {
                return Err(unsupported(field(), "this annotation is not honoured by Hearth"))
            }
            _ => {}
        }
    }
    Ok(())
}

fn cache_spec(annotations: &BTreeMap<String, String>) -> Result<Option<CacheSpec>, IsvcError> {
    let Some(raw) = annotations.get(CACHE_ANNOTATION) else {
        return Ok(None);
    };
    let field = format!("metadata.annotations.{CACHE_ANNOTATION}");
    let ttl_seconds = match raw.trim() {
        "false" => return Ok(None),
        "true" => 300,
        other => other
            .parse::<u64>()
            .ok()
            .filter(|t| (1..=strict::MAX_SECONDS).contains(t))
            .ok_or_else(|| {
                invalid(
                    &field,
                    format!(
                        "must be \"true\", \"false\" or a TTL in seconds from 1 to {}, not {raw:?}",
                        strict::MAX_SECONDS
                    ),
                )
            })?,
    };
    let max_entries = match annotations.get(CACHE_SIZE_ANNOTATION) {
        None => 1024,
        Some(raw) => raw
            .trim()
            .parse::<u64>()
            .ok()
            .filter(|n| (1..=bounds::CACHE_ENTRIES).contains(n))
            .map(|n| n as usize)
            .ok_or_else(|| {
                invalid(
                    format!("metadata.annotations.{CACHE_SIZE_ANNOTATION}"),
                    format!(
                        "must be an integer from 1 to {}, not {raw:?}",
                        bounds::CACHE_ENTRIES
                    ),
                )
            })?,
    };
    Ok(Some(CacheSpec {
        ttl_seconds,
        max_entries,
    }))
}

fn label_map(metadata: &Obj, key: &str) -> Result<BTreeMap<String, String>, IsvcError> {
    let mut out = BTreeMap::new();
    if let Some(value) = metadata.get(key) {
        let field = format!("metadata.{key}");
        for (k, v) in object(value, &field)? {
            let v = match v {
                Value::String(s) => s.clone(),
                // YAML turns `"true"` without quotes into a boolean; Kubernetes refuses
                // that, Hearth reads it as the string the user meant.
                Value::Bool(b) => b.to_string(),
                Value::Number(n) => n.to_string(),
                _ => return Err(invalid(format!("{field}.{k}"), "must be a string")),
            };
            out.insert(k.clone(), v);
        }
    }
    Ok(out)
}

/// Reads a whole document. `path_name` is the item's name in the URL (PUT/PATCH);
/// `metadata.namespace` is not read here: the path's namespace wins.
pub fn validate(
    doc: &Value,
    path_name: Option<&str>,
    runtimes: &RuntimeTable,
    config: &ServingConfig,
) -> Result<Parsed, IsvcError> {
    let root = object(doc, "body")?;
    let api_version = string(root, "apiVersion", "")?.ok_or_else(|| invalid("apiVersion", "is required"))?;
    if api_version != API_VERSION {
        if api_version.starts_with("serving.kubeflow.org/") || api_version.starts_with("serving.kserve.io/") {
            return Err(IsvcError::RetiredApiVersion(api_version));
        }
        return Err(invalid(
            "apiVersion",
            format!("{api_version:?} is not {API_VERSION}"),
        ));
    }
    match string(root, "kind", "")?.as_deref() {
        Some(KIND) => {}
        Some(other) => return Err(invalid("kind", format!("{other:?} is not {KIND}"))),
        None => return Err(invalid("kind", "is required")),
    }
    for key in root.keys() {
        if !matches!(
            key.as_str(),
            "apiVersion" | "kind" | "metadata" | "spec" | "status"
        ) {
            return Err(invalid(key.as_str(), "is not a field of an InferenceService"));
        }
    }
    let empty = Value::Object(Map::new());
    let metadata_value = root.get("metadata").unwrap_or(&empty);
    let metadata = object(metadata_value, "metadata")?;
    let name = match (string(metadata, "name", "metadata")?, path_name) {
        (Some(n), Some(p)) if n != p => {
            return Err(invalid(
                "metadata.name",
                format!("{n:?} does not match {p:?} in the path"),
            ))
        }
        (Some(n), _) => n,
        (None, Some(p)) => p.to_string(),
        (None, None) => {
            if metadata.contains_key("generateName") {
                return Err(unsupported("metadata.generateName", "name the InferenceService"));
            }
            return Err(invalid("metadata.name", "is required"));
        }
    };
    validate_name(&name)?;
    let annotations = label_map(metadata, "annotations")?;
    label_map(metadata, "labels")?;
    check_annotations(&annotations)?;

    let spec = root.get("spec").ok_or_else(|| invalid("spec", "is required"))?;
    let spec_obj = object(spec, "spec")?;
    check_keys(
        spec_obj,
        "spec",
        SPEC_FIELDS,
        &[
            ("explainer", "explainers are not run by Hearth"),
            (
                "default",
                "the v1alpha2 default/canary layout is retired; use spec.predictor",
            ),
            (
                "canary",
                "the v1alpha2 default/canary layout is retired; use canaryTrafficPercent",
            ),
        ],
    )?;
    let ctx = Context {
        runtimes,
        config,
        annotations: &annotations,
    };
    let predictor = spec_obj
        .get("predictor")
        .ok_or_else(|| invalid("spec.predictor", "is required"))?;
    let (predictor, canary_percent) = component(predictor, "spec.predictor", &ctx, true)?;
    let transformer = match spec_obj.get("transformer") {
        Some(t) => Some(component(t, "spec.transformer", &ctx, false)?.0),
        None => None,
    };

    let mut metadata_out = metadata.clone();
    metadata_out.remove("namespace");
    metadata_out.insert("name".into(), Value::String(name.clone()));
    Ok(Parsed {
        name,
        metadata: Value::Object(metadata_out),
        spec: spec.clone(),
        service: ServiceSpec {
            predictor,
            transformer,
            canary_percent,
            cache: cache_spec(&annotations)?,
            require_token: annotations.get(AUTH_ANNOTATION).is_some_and(|v| v == "true"),
        },
    })
}

/// KServe names become host labels (`{name}-predictor.{ns}...`): DNS-1035, at most 45
/// characters so that the revision suffix still fits a label.
fn validate_name(name: &str) -> Result<(), IsvcError> {
    let ok = !name.is_empty()
        && name.len() <= 45
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(invalid(
            "metadata.name",
            format!("{name:?} must be a DNS-1035 label of at most 45 characters (a-z, 0-9, -; starting with a letter)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(doc: Value) -> Result<Parsed, IsvcError> {
        validate(&doc, None, &RuntimeTable::new(&[]), &ServingConfig::default())
    }

    fn sklearn(predictor: Value) -> Value {
        json!({"apiVersion": API_VERSION, "kind": KIND, "metadata": {"name": "iris", "namespace": "kubeflow"}, "spec": {"predictor": predictor}})
    }

    #[test]
    fn modern_and_framework_forms_read_alike() {
        let a = check(sklearn(
            json!({"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "file:///m"}}),
        ))
        .unwrap();
        let b = check(sklearn(json!({"sklearn": {"storageUri": "/m"}}))).unwrap();
        assert_eq!(a.service.predictor, b.service.predictor);
        assert_eq!(a.service.predictor.scaling.min_replicas, 1);
        assert!(a.metadata.get("namespace").is_none(), "the path namespace wins");
    }

    #[test]
    fn refusals_name_the_feature() {
        let err = check(sklearn(
            json!({"model": {"modelFormat": {"name": "sklearn"}, "storageUri": "pvc://claim/m"}}),
        ))
        .unwrap_err();
        assert!(
            matches!(err, IsvcError::Unsupported { ref feature, .. } if feature == "storageUri.pvc"),
            "{err}"
        );
        let err = check(sklearn(
            json!({"sklearn": {"storageUri": "/m"}, "logger": {"mode": "all"}}),
        ))
        .unwrap_err();
        assert!(
            matches!(err, IsvcError::Unsupported { ref feature, .. } if feature == "spec.predictor.logger"),
            "{err}"
        );
        let err = check(sklearn(json!({"tensorflow": {"storageUri": "/m"}}))).unwrap_err();
        assert!(
            matches!(err, IsvcError::Unsupported { ref feature, .. } if feature == "modelFormat.tensorflow"),
            "{err}"
        );
        let err = check(sklearn(
            json!({"sklearn": {"storageUri": "/m"}, "scaleMetric": "cpu"}),
        ))
        .unwrap_err();
        assert!(
            matches!(err, IsvcError::Unsupported { ref feature, .. } if feature == "scaleMetric.cpu"),
            "{err}"
        );
    }

    #[test]
    fn retired_api_versions_and_bad_values() {
        let mut doc = sklearn(json!({"sklearn": {"storageUri": "/m"}}));
        doc["apiVersion"] = json!("serving.kubeflow.org/v1beta1");
        assert!(matches!(check(doc.clone()), Err(IsvcError::RetiredApiVersion(_))));
        doc["apiVersion"] = json!("serving.kserve.io/v1alpha2");
        assert!(matches!(check(doc), Err(IsvcError::RetiredApiVersion(_))));
        let err = check(sklearn(
            json!({"sklearn": {"storageUri": "/m"}, "minReplicas": 3, "maxReplicas": 2}),
        ))
        .unwrap_err();
        assert!(matches!(err, IsvcError::Invalid { ref field, .. } if field == "spec.predictor.maxReplicas"));
        let err = check(sklearn(
            json!({"sklearn": {"storageUri": "/m"}, "canaryTrafficPercent": 140}),
        ))
        .unwrap_err();
        assert!(
            matches!(err, IsvcError::Invalid { ref field, .. } if field == "spec.predictor.canaryTrafficPercent")
        );
    }

    #[test]
    fn scaling_and_quantities() {
        let p = check(sklearn(json!({"sklearn": {"storageUri": "/m", "resources": {"limits": {"cpu": "500m", "memory": "1Gi", "nvidia.com/gpu": 1}}},
            "minReplicas": 0, "maxReplicas": 4, "scaleMetric": "rps", "scaleTarget": 5, "canaryTrafficPercent": 10})))
        .unwrap();
        let c = &p.service.predictor;
        assert_eq!(
            c.resources,
            Resources {
                cpu_millis: 500,
                memory_bytes: 1 << 30,
                gpus: 1
            }
        );
        assert_eq!(
            (c.scaling.min_replicas, c.scaling.max_replicas, c.scaling.target),
            (0, 4, 5.0)
        );
        assert_eq!(c.scaling.metric, ScaleMetric::Rps);
        assert_eq!(p.service.canary_percent, Some(10));
    }

    #[test]
    fn every_number_is_bounded_and_named() {
        let fields = [
            "minReplicas",
            "maxReplicas",
            "scaleTarget",
            "containerConcurrency",
            "timeout",
            "canaryTrafficPercent",
        ];
        let bad = [
            json!(-1),
            json!(9_223_372_036_854_775_807u64),
            json!(1e300),
            json!("NaN"),
            json!("12x"),
            json!(1.5),
        ];
        for field in fields {
            for value in &bad {
                let mut predictor = json!({"sklearn": {"storageUri": "/m"}});
                predictor[field] = value.clone();
                let err = check(sklearn(predictor)).unwrap_err();
                let name = format!("spec.predictor.{field}");
                assert!(
                    matches!(&err, IsvcError::Invalid { field, detail } if *field == name && detail.contains(" to ")),
                    "{field} = {value}: {err}"
                );
            }
        }
        for quantity in ["-1", "1e300", "NaN", "12x", "inf", "9223372036854775807"] {
            for resource in ["cpu", "memory", "nvidia.com/gpu"] {
                let err = check(sklearn(
                    json!({"sklearn": {"storageUri": "/m", "resources": {"limits": {resource: quantity}}}}),
                ))
                .unwrap_err();
                assert!(
                    err.to_string().contains(&format!("limits.{resource}")),
                    "{resource} = {quantity}: {err}"
                );
            }
        }
        for (key, value) in [
            ("autoscaling.knative.dev/min-scale", "-1"),
            ("autoscaling.knative.dev/min-scale", "99999999999"),
            ("autoscaling.knative.dev/min-scale", "x"),
            ("autoscaling.knative.dev/target", "1e300"),
            ("autoscaling.knative.dev/target", "NaN"),
            ("autoscaling.knative.dev/target", "0"),
            (CACHE_ANNOTATION, "9223372036854775807"),
            (CACHE_ANNOTATION, "-1"),
            (CACHE_SIZE_ANNOTATION, "1e300"),
        ] {
            let mut doc = sklearn(json!({"sklearn": {"storageUri": "/m"}}));
            doc["metadata"]["annotations"] = json!({key: value, CACHE_ANNOTATION: "true"});
            if key == CACHE_ANNOTATION {
                doc["metadata"]["annotations"] = json!({key: value});
            }
            let err = check(doc).unwrap_err();
            assert!(
                matches!(&err, IsvcError::Invalid { field, .. } if *field == format!("metadata.annotations.{key}")),
                "{key} = {value}: {err}"
            );
        }
    }

    #[test]
    fn stored_components_are_read_within_the_bounds() {
        let mut c = check(sklearn(json!({"sklearn": {"storageUri": "/m"}})))
            .unwrap()
            .service
            .predictor;
        c.scaling.min_replicas = u32::MAX;
        c.scaling.max_replicas = 3;
        c.scaling.target = f64::NAN;
        c.timeout_seconds = u64::MAX;
        c.resources.memory_bytes = u64::MAX;
        let c = c.within_bounds();
        assert_eq!((c.scaling.min_replicas, c.scaling.max_replicas), (1000, 1000));
        assert_eq!(c.scaling.target, bounds::SCALE_TARGET_MIN);
        assert_eq!(c.timeout_seconds, bounds::TIMEOUT_SECONDS);
        assert_eq!(c.resources.memory_bytes, bounds::MEMORY_BYTES);
    }

    #[test]
    fn custom_containers_take_command_and_port() {
        let p = check(sklearn(json!({"containers": [{"name": "kserve-container", "image": "x", "command": ["python", "-m", "srv"], "args": ["--p"],
            "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 9000, "protocol": "TCP"}]}]})))
        .unwrap();
        match p.service.predictor.workload {
            Workload::Custom {
                command, port, env, ..
            } => {
                assert_eq!(command, vec!["python", "-m", "srv", "--p"]);
                assert_eq!(port, 9000);
                assert_eq!(env, vec![("A".to_string(), "1".to_string())]);
            }
            other => panic!("{other:?}"),
        }
    }
}
