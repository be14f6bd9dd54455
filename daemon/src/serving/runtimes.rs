//! The serving runtime table, Hearth's `ClusterServingRuntime`s: which model formats
//! (and protocol versions) a runtime serves, how to start it for one model, and how
//! to tell that it is ready. Built-in MLServer for sklearn/xgboost/lightgbm; the
//! `[serving] runtimes` config adds to it or replaces an entry by name.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SupportedFormat {
    /// `sklearn`, `xgboost`, ... as in `predictor.model.modelFormat.name`.
    pub name: String,
    /// Major version served; absent: any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Picked for a model that names no `runtime` (KServe's `autoSelect`).
    #[serde(default = "yes")]
    pub auto_select: bool,
    /// Higher wins among auto-selectable runtimes.
    #[serde(default)]
    pub priority: i32,
}

fn yes() -> bool {
    true
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ServingRuntime {
    pub name: String,
    /// Other names a document may give in `predictor.model.runtime` (upstream runtimes
    /// whose role this one plays, e.g. `kserve-sklearnserver`).
    #[serde(default)]
    pub aliases: Vec<String>,
    pub supported_model_formats: Vec<SupportedFormat>,
    /// `v1` and/or `v2`. The proxy translates V1 requests for a V2-only runtime.
    pub protocol_versions: Vec<String>,
    /// argv with placeholders `{model_name}`, `{model_dir}` (the fetched model files),
    /// `{port}` (the replica's HTTP port), `{work_dir}` (a private scratch dir).
    pub command: Vec<String>,
    /// Environment with the same placeholders, as `[name, value]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub env: Vec<(String, String)>,
    /// HTTP path that answers 200 once the model is loaded (placeholders allowed).
    pub readiness_path: String,
    /// Whether the runtime speaks the V2 binary tensor extension itself; when false
    /// the proxy converts binary requests to JSON.
    #[serde(default)]
    pub binary_tensors: bool,
    /// MLServer's `model-settings.json` `implementation`, per model format, as
    /// `[format, implementation]` pairs.
    #[serde(default)]
    #[schema(value_type = Vec<Vec<String>>)]
    pub implementations: Vec<(String, String)>,
}

impl ServingRuntime {
    pub fn speaks(&self, protocol: &str) -> bool {
        self.protocol_versions.iter().any(|p| p == protocol)
    }

    pub fn implementation(&self, format: &str) -> Option<&str> {
        self.implementations
            .iter()
            .find(|(f, _)| f == format)
            .map(|(_, i)| i.as_str())
    }

    fn serves(&self, format: &str, version: Option<&str>) -> Option<&SupportedFormat> {
        self.supported_model_formats.iter().find(|f| {
            f.name == format
                && match (&f.version, version) {
                    (Some(have), Some(want)) => major(have) == major(want),
                    _ => true,
                }
        })
    }
}

fn major(version: &str) -> &str {
    version.split('.').next().unwrap_or(version)
}

/// MLServer, configured through its `MLSERVER_*` environment (as KServe's
/// `kserve-mlserver` runtime does). Parallel workers are off: MLServer 1.7.1 with the
/// current uvloop crashes them, and one replica per process is what Hearth scales.
fn mlserver() -> ServingRuntime {
    let format = |name: &str, version: &str| SupportedFormat {
        name: name.into(),
        version: Some(version.into()),
        auto_select: true,
        priority: 2,
    };
    let env = |k: &str, v: &str| (k.to_string(), v.to_string());
    ServingRuntime {
        name: "kserve-mlserver".into(),
        // KServe's own sklearn/xgboost/lightgbm servers speak V1 and V2; MLServer plus
        // the proxy's V1 translation answers both for the same model files.
        aliases: vec![
            "mlserver".into(),
            "kserve-sklearnserver".into(),
            "kserve-xgbserver".into(),
            "kserve-lgbserver".into(),
        ],
        supported_model_formats: vec![
            format("sklearn", "0"),
            format("sklearn", "1"),
            format("xgboost", "1"),
            format("xgboost", "2"),
            format("lightgbm", "3"),
            format("lightgbm", "4"),
        ],
        protocol_versions: vec!["v2".into()],
        command: vec!["mlserver".into(), "start".into(), "{work_dir}".into()],
        env: vec![
            env("MLSERVER_HTTP_PORT", "{port}"),
            // Port 0 lets the OS pick: replicas must not collide on gRPC or metrics.
            env("MLSERVER_GRPC_PORT", "0"),
            env("MLSERVER_METRICS_PORT", "0"),
            env("MLSERVER_METRICS_ENDPOINT", ""),
            env("MLSERVER_PARALLEL_WORKERS", "0"),
            env("MLSERVER_HOST", "127.0.0.1"),
            env("MLSERVER_MODEL_NAME", "{model_name}"),
            env("MLSERVER_MODEL_URI", "{model_dir}"),
            env("MLSERVER_MODEL_IMPLEMENTATION", "{implementation}"),
        ],
        readiness_path: "/v2/models/{model_name}/ready".into(),
        binary_tensors: false,
        implementations: vec![
            ("sklearn".into(), "mlserver_sklearn.SKLearnModel".into()),
            ("xgboost".into(), "mlserver_xgboost.XGBoostModel".into()),
            ("lightgbm".into(), "mlserver_lightgbm.LightGBMModel".into()),
        ],
    }
}

#[derive(Debug, Clone)]
pub struct RuntimeTable {
    runtimes: Vec<ServingRuntime>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Selection<'a> {
    Found(&'a ServingRuntime),
    /// The named runtime does not exist.
    UnknownRuntime,
    /// The named runtime does not serve this format.
    FormatNotServed(&'a ServingRuntime),
    /// No auto-selectable runtime serves this format (and version).
    NoRuntimeForFormat,
}

impl RuntimeTable {
    pub fn new(extra: &[ServingRuntime]) -> RuntimeTable {
        let mut runtimes = vec![mlserver()];
        for runtime in extra {
            match runtimes.iter_mut().find(|r| r.name == runtime.name) {
                Some(existing) => *existing = runtime.clone(),
                None => runtimes.push(runtime.clone()),
            }
        }
        RuntimeTable { runtimes }
    }

    pub fn all(&self) -> &[ServingRuntime] {
        &self.runtimes
    }

    pub fn get(&self, name: &str) -> Option<&ServingRuntime> {
        self.runtimes
            .iter()
            .find(|r| r.name == name)
            .or_else(|| self.runtimes.iter().find(|r| r.aliases.iter().any(|a| a == name)))
    }

    /// KServe's rule: a named runtime must serve the format; otherwise the
    /// auto-selectable runtime with the highest priority that serves it.
    pub fn select(&self, runtime: Option<&str>, format: &str, version: Option<&str>) -> Selection<'_> {
        if let Some(name) = runtime {
            return match self.get(name) {
                None => Selection::UnknownRuntime,
                Some(r) if r.serves(format, version).is_some() => Selection::Found(r),
                Some(r) => Selection::FormatNotServed(r),
            };
        }
        self.runtimes
            .iter()
            .filter_map(|r| {
                r.serves(format, version)
                    .filter(|f| f.auto_select)
                    .map(|f| (r, f.priority))
            })
            .max_by_key(|(_, priority)| *priority)
            .map(|(r, _)| Selection::Found(r))
            .unwrap_or(Selection::NoRuntimeForFormat)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sklearn_selects_mlserver_and_config_can_add_runtimes() {
        let table = RuntimeTable::new(&[]);
        assert!(
            matches!(table.select(None, "sklearn", Some("1")), Selection::Found(r) if r.name == "kserve-mlserver")
        );
        assert_eq!(
            table.select(None, "tensorflow", None),
            Selection::NoRuntimeForFormat
        );
        assert_eq!(
            table.select(Some("nope"), "sklearn", None),
            Selection::UnknownRuntime
        );
        let mut custom = mlserver();
        custom.name = "my-tf".into();
        custom.supported_model_formats[0].name = "tensorflow".into();
        let table = RuntimeTable::new(&[custom]);
        assert!(
            matches!(table.select(None, "tensorflow", Some("0")), Selection::Found(r) if r.name == "my-tf")
        );
        assert!(matches!(
            table.select(Some("my-tf"), "xgboost", Some("3")),
            Selection::FormatNotServed(_)
        ));
    }
}
