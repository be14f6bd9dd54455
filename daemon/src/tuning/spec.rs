//! Katib `kubeflow.org/v1beta1` `ExperimentSpec`: parsing, Katib's defaults (its
//! mutating webhook) and Katib's validation (its validating webhook,
//! `pkg/webhook/v1beta1/experiment/validator`), each error naming the field. What
//! Hearth does not run (NAS, PBT, non-Job trials and the other collectors in this
//! slice) is refused by name, never ignored.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::model::strict::{self, FieldError};

pub const API_VERSION: &str = "kubeflow.org/v1beta1";
pub const EXPERIMENT_KIND: &str = "Experiment";
pub const TRIAL_KIND: &str = "Trial";
pub const SUGGESTION_KIND: &str = "Suggestion";

/// The most trials one experiment may run, in all and at once: bounds the trial list
/// the controller reads and the status it writes.
pub const MAX_TRIALS: u64 = 10_000;
/// Katib's default `parallelTrialCount`.
pub const DEFAULT_PARALLEL: u64 = 3;

/// `ExperimentSpec` fields Hearth honours (the schema's properties).
pub const SPEC_FIELDS: &[&str] = &[
    "parameters",
    "objective",
    "algorithm",
    "trialTemplate",
    "parallelTrialCount",
    "maxTrialCount",
    "maxFailedTrialCount",
    "metricsCollectorSpec",
    "resumePolicy",
    "earlyStopping",
];
pub const OBJECTIVE_FIELDS: &[&str] = &[
    "type",
    "goal",
    "objectiveMetricName",
    "additionalMetricNames",
    "metricStrategies",
];
pub const ALGORITHM_FIELDS: &[&str] = &["algorithmName", "algorithmSettings"];
pub const PARAMETER_FIELDS: &[&str] = &["name", "parameterType", "feasibleSpace"];
pub const FEASIBLE_SPACE_FIELDS: &[&str] = &["min", "max", "list", "step", "distribution"];
pub const TRIAL_TEMPLATE_FIELDS: &[&str] =
    &["retain", "trialSpec", "trialParameters", "primaryContainerName"];
pub const TRIAL_PARAMETER_FIELDS: &[&str] = &["name", "description", "reference"];
pub const COLLECTOR_SPEC_FIELDS: &[&str] = &["source", "collector"];

/// Algorithms Hearth runs ([`super::algorithms`]).
pub const SUPPORTED_ALGORITHMS: &[&str] = super::algorithms::NAMES;
/// Katib's other HP algorithms that Hearth will run natively; refused until then.
pub const PLANNED_ALGORITHMS: &[&str] = &[];
/// Katib algorithms Hearth does not run: neural architecture search and PBT need a
/// suggestion service's own state and checkpoints.
pub const REFUSED_ALGORITHMS: &[&str] = &["enas", "darts", "pbt"];

/// Katib's default StdOut filter (`DefaultFilter`): `name=value` pairs.
pub const DEFAULT_METRICS_FORMAT: &str = r"([\w|-]+)\s*=\s*([+-]?\d*(\.\d+)?([Ee][+-]?\d+)?)";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ObjectiveType {
    Minimize,
    Maximize,
}

/// Which value of a metric's series counts (Katib's `metricStrategies`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetricStrategy {
    Min,
    Max,
    Latest,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Objective {
    pub objective_type: ObjectiveType,
    pub goal: Option<f64>,
    pub metric_name: String,
    pub additional_metric_names: Vec<String>,
    /// One per metric (objective first), defaulted as Katib does: the objective's
    /// direction for each metric without one.
    pub strategies: Vec<(String, MetricStrategy)>,
}

impl Objective {
    pub fn strategy_of(&self, metric: &str) -> MetricStrategy {
        self.strategies
            .iter()
            .find(|(name, _)| name == metric)
            .map_or(MetricStrategy::Latest, |(_, s)| *s)
    }

    /// All metric names, the objective first.
    pub fn metric_names(&self) -> Vec<String> {
        std::iter::once(self.metric_name.clone())
            .chain(self.additional_metric_names.iter().cloned())
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParameterType {
    Double,
    Int,
    Discrete,
    Categorical,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Distribution {
    Uniform,
    LogUniform,
    Normal,
    LogNormal,
}

/// A search-space dimension: `min`/`max`/`step` for double and int, `list` for
/// discrete and categorical (values as Katib keeps them: strings).
#[derive(Debug, Clone, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub parameter_type: ParameterType,
    pub min: f64,
    pub max: f64,
    pub step: Option<f64>,
    pub list: Vec<String>,
    pub distribution: Distribution,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialParameter {
    pub name: String,
    pub reference: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TrialTemplate {
    pub primary_container_name: String,
    pub trial_parameters: Vec<TrialParameter>,
    /// The batch/v1 Job, with `${trialParameters.x}` placeholders.
    pub trial_spec: Value,
    pub retain: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileFormat {
    Text,
    Json,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Collector {
    /// Metrics from the primary container's output, matched by `formats`.
    StdOut { formats: Vec<String> },
    /// Metrics from a file the trial writes.
    File {
        path: String,
        format: FileFormat,
        formats: Vec<String>,
    },
    /// Values the trial reports itself, with the katib SDK's `report_metrics`
    /// (`super::push`).
    Push,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ExperimentSpec {
    pub objective: Objective,
    pub algorithm_name: String,
    pub algorithm_settings: Vec<(String, String)>,
    pub parameters: Vec<Parameter>,
    pub parallel_trial_count: u64,
    pub max_trial_count: Option<u64>,
    pub max_failed_trial_count: Option<u64>,
    pub trial_template: TrialTemplate,
    pub collector: Collector,
    pub resume_policy: ResumePolicy,
    /// `earlyStopping` (Katib's only algorithm, `medianstop`), if set.
    pub early_stopping: Option<MedianStop>,
}

/// Katib's `medianstop` early stopping (`pkg/earlystopping/v1beta1/medianstop`): once
/// `min_trials_required` trials have succeeded, a trial whose best objective value
/// from its `start_step`-th report on is worse than the median of the succeeded
/// trials' averages over their first `start_step` reports is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MedianStop {
    /// Katib's default 3; at least 1.
    pub min_trials_required: u64,
    /// Katib's default 4; at least 1.
    pub start_step: u64,
}

/// `EarlyStoppingSpec` fields.
pub const EARLY_STOPPING_FIELDS: &[&str] = &["algorithmName", "algorithmSettings"];

/// Parses `spec.earlyStopping` as Katib's medianstop service validates its settings.
fn early_stopping(spec: &Value) -> Result<Option<MedianStop>, FieldError> {
    let Some(value) = spec.get("earlyStopping").filter(|v| !v.is_null()) else {
        return Ok(None);
    };
    let path = "spec.earlyStopping";
    strict::only_keys(
        value,
        path,
        EARLY_STOPPING_FIELDS,
        "not part of Katib's EarlyStoppingSpec",
    )?;
    let name = required_string(value, "algorithmName", path)?;
    if name != "medianstop" {
        return Err(FieldError::invalid(
            format!("{path}.algorithmName"),
            format!("unknown early stopping algorithm {name:?}; Katib's is medianstop"),
        ));
    }
    let mut stop = MedianStop {
        min_trials_required: 3,
        start_step: 4,
    };
    for (i, item) in array(value, "algorithmSettings", path)?.iter().enumerate() {
        let at = format!("{path}.algorithmSettings[{i}]");
        strict::only_keys(
            item,
            &at,
            &["name", "value"],
            "not part of Katib's EarlyStoppingSetting",
        )?;
        let setting = required_string(item, "name", &at)?;
        let raw = strict::opt_string(item, "value", &at)?.unwrap_or_default();
        let parsed = raw.trim().parse::<u64>().ok();
        match (setting.as_str(), parsed) {
            ("min_trials_required", Some(n)) if (1..=MAX_TRIALS).contains(&n) => stop.min_trials_required = n,
            ("min_trials_required", _) => {
                return Err(FieldError::invalid(
                    format!("{at}.value"),
                    "min_trials_required must be greater than zero (>0)",
                ))
            }
            ("start_step", Some(n)) if (1..=1_000_000).contains(&n) => stop.start_step = n,
            ("start_step", _) => {
                return Err(FieldError::invalid(
                    format!("{at}.value"),
                    "start_step must be greater or equal than one (>=1)",
                ))
            }
            (other, _) => {
                return Err(FieldError::invalid(
                    format!("{at}.name"),
                    format!("unknown setting {other} for algorithm medianstop"),
                ))
            }
        }
    }
    Ok(Some(stop))
}

/// Katib's `resumePolicy` values Hearth runs (`FromVolume` is refused by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResumePolicy {
    /// The default: a finished experiment is never restarted.
    Never,
    /// Raising `maxTrialCount` on one that ended with `ExperimentMaxTrialsReached`
    /// restarts it.
    LongRunning,
}

fn field(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_string()
    } else {
        format!("{path}.{key}")
    }
}

fn required_string(value: &Value, key: &str, path: &str) -> Result<String, FieldError> {
    match strict::opt_string(value, key, path)? {
        Some(s) if !s.is_empty() => Ok(s),
        _ => Err(FieldError::invalid(field(path, key), "is required")),
    }
}

fn array<'a>(value: &'a Value, key: &str, path: &str) -> Result<&'a [Value], FieldError> {
    match value.get(key) {
        None | Some(Value::Null) => Ok(&[]),
        Some(Value::Array(items)) => Ok(items),
        Some(_) => Err(FieldError::invalid(field(path, key), "must be a list")),
    }
}

/// A number Katib writes as a string (`"0.01"`); a bare number is taken too.
fn number(value: &Value, path: &str, integer: bool) -> Result<f64, FieldError> {
    let parsed = match value {
        Value::String(s) if integer => s.trim().parse::<i64>().ok().map(|n| n as f64),
        Value::String(s) => s.trim().parse::<f64>().ok(),
        Value::Number(n) if integer => n.as_i64().map(|n| n as f64),
        Value::Number(n) => n.as_f64(),
        _ => None,
    };
    match parsed {
        Some(n) if n.is_finite() && n.abs() <= 1e300 => Ok(n),
        _ => Err(FieldError::invalid(
            path,
            format!(
                "must be {} written as a string, not {value}",
                if integer { "an integer" } else { "a finite number" }
            ),
        )),
    }
}

fn objective(spec: &Value) -> Result<Objective, FieldError> {
    let value = spec
        .get("objective")
        .ok_or_else(|| FieldError::invalid("spec.objective", "is required"))?;
    strict::only_keys(
        value,
        "spec.objective",
        OBJECTIVE_FIELDS,
        "not part of Katib's ObjectiveSpec",
    )?;
    let objective_type = match required_string(value, "type", "spec.objective")?.as_str() {
        "minimize" => ObjectiveType::Minimize,
        "maximize" => ObjectiveType::Maximize,
        other => {
            return Err(FieldError::invalid(
                "spec.objective.type",
                format!("{other:?} is neither minimize nor maximize"),
            ))
        }
    };
    let goal = match value.get("goal") {
        None | Some(Value::Null) => None,
        Some(g) => Some(number(g, "spec.objective.goal", false)?),
    };
    let metric_name = required_string(value, "objectiveMetricName", "spec.objective")?;
    let additional_metric_names = strict::string_list(value, "additionalMetricNames", "spec.objective")?;
    if additional_metric_names.contains(&metric_name) {
        return Err(FieldError::invalid(
            "spec.objective.additionalMetricNames",
            "must not contain the objective metric name",
        ));
    }
    let direction = match objective_type {
        ObjectiveType::Minimize => MetricStrategy::Min,
        ObjectiveType::Maximize => MetricStrategy::Max,
    };
    let names: Vec<String> = std::iter::once(metric_name.clone())
        .chain(additional_metric_names.iter().cloned())
        .collect();
    let mut strategies: Vec<(String, MetricStrategy)> = Vec::new();
    for (i, item) in array(value, "metricStrategies", "spec.objective")?
        .iter()
        .enumerate()
    {
        let path = format!("spec.objective.metricStrategies[{i}]");
        strict::only_keys(
            item,
            &path,
            &["name", "value"],
            "not part of Katib's MetricStrategy",
        )?;
        let name = required_string(item, "name", &path)?;
        if !names.contains(&name) {
            return Err(FieldError::invalid(
                format!("{path}.name"),
                format!("{name:?} is neither the objective nor an additional metric"),
            ));
        }
        let strategy = match required_string(item, "value", &path)?.as_str() {
            "min" => MetricStrategy::Min,
            "max" => MetricStrategy::Max,
            "latest" => MetricStrategy::Latest,
            other => {
                return Err(FieldError::invalid(
                    format!("{path}.value"),
                    format!("{other:?} is not min, max or latest"),
                ))
            }
        };
        strategies.push((name, strategy));
    }
    for name in &names {
        if !strategies.iter().any(|(n, _)| n == name) {
            strategies.push((name.clone(), direction));
        }
    }
    Ok(Objective {
        objective_type,
        goal,
        metric_name,
        additional_metric_names,
        strategies,
    })
}

fn algorithm(spec: &Value) -> Result<(String, Vec<(String, String)>), FieldError> {
    let value = spec
        .get("algorithm")
        .ok_or_else(|| FieldError::invalid("spec.algorithm", "is required"))?;
    strict::only_keys(
        value,
        "spec.algorithm",
        ALGORITHM_FIELDS,
        "not part of Katib's AlgorithmSpec",
    )?;
    let name = required_string(value, "algorithmName", "spec.algorithm")?;
    let at = "spec.algorithm.algorithmName";
    if REFUSED_ALGORITHMS.contains(&name.as_str()) {
        return Err(FieldError::unsupported(
            at,
            format!("{name} is not supported by Hearth (neural architecture search and population-based training are not run)"),
        ));
    }
    if PLANNED_ALGORITHMS.contains(&name.as_str()) {
        return Err(FieldError::unsupported(
            at,
            format!(
                "{name} is not yet supported by Hearth; supported: {}",
                SUPPORTED_ALGORITHMS.join(", ")
            ),
        ));
    }
    if !SUPPORTED_ALGORITHMS.contains(&name.as_str()) {
        return Err(FieldError::invalid(
            at,
            format!(
                "unknown algorithm {name:?}; supported: {}",
                SUPPORTED_ALGORITHMS.join(", ")
            ),
        ));
    }
    let mut settings = Vec::new();
    for (i, item) in array(value, "algorithmSettings", "spec.algorithm")?
        .iter()
        .enumerate()
    {
        let path = format!("spec.algorithm.algorithmSettings[{i}]");
        strict::only_keys(
            item,
            &path,
            &["name", "value"],
            "not part of Katib's AlgorithmSetting",
        )?;
        let key = required_string(item, "name", &path)?;
        let text = match item.get("value") {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Number(n)) => n.to_string(),
            _ => return Err(FieldError::invalid(format!("{path}.value"), "must be a string")),
        };
        super::algorithms::check_setting(&name, &key, &text, &path)?;
        settings.push((key, text));
    }
    Ok((name, settings))
}

fn parameter(item: &Value, path: &str, seen: &mut BTreeSet<String>) -> Result<Parameter, FieldError> {
    strict::only_keys(item, path, PARAMETER_FIELDS, "not part of Katib's ParameterSpec")?;
    let name = required_string(item, "name", path)?;
    if !seen.insert(name.clone()) {
        return Err(FieldError::invalid(
            format!("{path}.name"),
            format!("{name:?} is named twice"),
        ));
    }
    let parameter_type = match required_string(item, "parameterType", path)?.as_str() {
        "double" => ParameterType::Double,
        "int" => ParameterType::Int,
        "discrete" => ParameterType::Discrete,
        "categorical" => ParameterType::Categorical,
        other => {
            return Err(FieldError::invalid(
                format!("{path}.parameterType"),
                format!("{other:?} is not double, int, discrete or categorical"),
            ))
        }
    };
    let space_path = format!("{path}.feasibleSpace");
    let space = item
        .get("feasibleSpace")
        .ok_or_else(|| FieldError::invalid(&space_path, "is required"))?;
    strict::only_keys(
        space,
        &space_path,
        FEASIBLE_SPACE_FIELDS,
        "not part of Katib's FeasibleSpace",
    )?;
    let list = strict::string_list(space, "list", &space_path)?;
    let distribution = match strict::opt_string(space, "distribution", &space_path)?.as_deref() {
        None | Some("") | Some("uniform") => Distribution::Uniform,
        Some("logUniform") => Distribution::LogUniform,
        Some("normal") => Distribution::Normal,
        Some("logNormal") => Distribution::LogNormal,
        Some(other) => {
            return Err(FieldError::invalid(
                format!("{space_path}.distribution"),
                format!("{other:?} is not uniform, logUniform, normal or logNormal"),
            ))
        }
    };
    match parameter_type {
        ParameterType::Double | ParameterType::Int => {
            let integer = parameter_type == ParameterType::Int;
            if !list.is_empty() {
                return Err(FieldError::invalid(
                    format!("{space_path}.list"),
                    "is for discrete and categorical parameters; give min and max",
                ));
            }
            let bound = |key: &str| -> Result<f64, FieldError> {
                let v = space
                    .get(key)
                    .filter(|v| !v.is_null())
                    .ok_or_else(|| FieldError::invalid(format!("{space_path}.{key}"), "is required"))?;
                number(v, &format!("{space_path}.{key}"), integer)
            };
            let (min, max) = (bound("min")?, bound("max")?);
            if min > max {
                return Err(FieldError::invalid(
                    format!("{space_path}.max"),
                    format!("must be at least min ({min})"),
                ));
            }
            let step = match space.get("step") {
                None | Some(Value::Null) => None,
                Some(Value::String(s)) if s.is_empty() => None,
                Some(v) => {
                    let step = number(v, &format!("{space_path}.step"), integer)?;
                    if step <= 0.0 {
                        return Err(FieldError::invalid(
                            format!("{space_path}.step"),
                            "must be positive",
                        ));
                    }
                    Some(step)
                }
            };
            if matches!(distribution, Distribution::LogUniform | Distribution::LogNormal) && min <= 0.0 {
                return Err(FieldError::invalid(
                    format!("{space_path}.min"),
                    "must be positive for a logarithmic distribution",
                ));
            }
            Ok(Parameter {
                name,
                parameter_type,
                min,
                max,
                step,
                list,
                distribution,
            })
        }
        ParameterType::Discrete | ParameterType::Categorical => {
            for key in ["min", "max", "step"] {
                if space.get(key).is_some_and(|v| !v.is_null()) {
                    return Err(FieldError::invalid(
                        format!("{space_path}.{key}"),
                        "is for double and int parameters; give list",
                    ));
                }
            }
            if list.is_empty() {
                return Err(FieldError::invalid(
                    format!("{space_path}.list"),
                    "is required and must not be empty",
                ));
            }
            if parameter_type == ParameterType::Discrete {
                for (i, v) in list.iter().enumerate() {
                    number(
                        &Value::String(v.clone()),
                        &format!("{space_path}.list[{i}]"),
                        false,
                    )?;
                }
            }
            Ok(Parameter {
                name,
                parameter_type,
                min: 0.0,
                max: 0.0,
                step: None,
                list,
                distribution,
            })
        }
    }
}

/// Katib's `${trialSpec.*}` metadata references a trial parameter may name.
fn is_metadata_reference(reference: &str) -> bool {
    matches!(
        reference,
        "${trialSpec.Name}" | "${trialSpec.Namespace}" | "${trialSpec.Kind}" | "${trialSpec.APIVersion}"
    ) || (reference.starts_with("${trialSpec.Labels[") || reference.starts_with("${trialSpec.Annotations["))
        && reference.ends_with("]}")
}

/// The `${trialParameters.x}` names in `text`.
pub fn placeholders(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("${trialParameters.") {
        rest = &rest[at + "${trialParameters.".len()..];
        if let Some(end) = rest.find('}') {
            names.insert(rest[..end].to_string());
            rest = &rest[end..];
        }
    }
    names
}

fn trial_template(spec: &Value, parameters: &[Parameter]) -> Result<TrialTemplate, FieldError> {
    let path = "spec.trialTemplate";
    let value = spec
        .get("trialTemplate")
        .ok_or_else(|| FieldError::invalid(path, "is required"))?;
    if value.get("configMap").is_some() {
        return Err(FieldError::unsupported(
            "spec.trialTemplate.configMap",
            "Hearth has no ConfigMaps; give trialSpec inline",
        ));
    }
    for key in ["successCondition", "failureCondition"] {
        if value.get(key).is_some_and(|v| !v.is_null()) {
            return Err(FieldError::unsupported(
                format!("{path}.{key}"),
                "not yet supported by Hearth: a trial's Job succeeds or fails by its Complete and Failed conditions, Katib's default",
            ));
        }
    }
    if value.get("primaryPodLabels").is_some_and(|v| !v.is_null()) {
        return Err(FieldError::unsupported(
            "spec.trialTemplate.primaryPodLabels",
            "is for multi-pod trial kinds; a batch/v1 Job trial has one pod",
        ));
    }
    strict::only_keys(
        value,
        path,
        TRIAL_TEMPLATE_FIELDS,
        "not part of Katib's TrialTemplate",
    )?;
    let trial_spec = value
        .get("trialSpec")
        .filter(|v| !v.is_null())
        .cloned()
        .ok_or_else(|| FieldError::invalid("spec.trialTemplate.trialSpec", "is required"))?;
    let api_version = trial_spec.get("apiVersion").and_then(Value::as_str).unwrap_or("");
    let kind = trial_spec.get("kind").and_then(Value::as_str).unwrap_or("");
    if (api_version, kind) != (crate::jobs::spec::API_VERSION, crate::jobs::spec::KIND) {
        return Err(FieldError::unsupported(
            "spec.trialTemplate.trialSpec.kind",
            format!(
                "trials of kind {api_version}/{kind} are not supported by Hearth; a trial is a batch/v1 Job"
            ),
        ));
    }
    let primary_container_name = required_string(value, "primaryContainerName", path)?;
    let containers = trial_spec
        .pointer("/spec/template/spec/containers")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[]);
    if !containers
        .iter()
        .any(|c| c.get("name").and_then(Value::as_str) == Some(primary_container_name.as_str()))
    {
        return Err(FieldError::invalid(
            "spec.trialTemplate.primaryContainerName",
            format!("no container of trialSpec is named {primary_container_name:?}"),
        ));
    }
    let retain = match value.get("retain") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => {
            return Err(FieldError::invalid(
                "spec.trialTemplate.retain",
                "must be a boolean",
            ))
        }
    };
    let mut names = BTreeSet::new();
    let mut trial_parameters = Vec::new();
    for (i, item) in array(value, "trialParameters", path)?.iter().enumerate() {
        let at = format!("{path}.trialParameters[{i}]");
        strict::only_keys(
            item,
            &at,
            TRIAL_PARAMETER_FIELDS,
            "not part of Katib's TrialParameterSpec",
        )?;
        let name = required_string(item, "name", &at)?;
        let reference = required_string(item, "reference", &at)?;
        if !names.insert(name.clone()) {
            return Err(FieldError::invalid(
                format!("{at}.name"),
                format!("{name:?} is named twice"),
            ));
        }
        if !parameters.iter().any(|p| p.name == reference) && !is_metadata_reference(&reference) {
            return Err(FieldError::invalid(
                format!("{at}.reference"),
                format!("{reference:?} is neither a parameter of spec.parameters nor a ${{trialSpec.*}} metadata reference"),
            ));
        }
        trial_parameters.push(TrialParameter { name, reference });
    }
    let text = trial_spec.to_string();
    let used = placeholders(&text);
    for name in &used {
        if !names.contains(name) {
            return Err(FieldError::invalid(
                "spec.trialTemplate.trialSpec",
                format!("${{trialParameters.{name}}} is not defined in spec.trialTemplate.trialParameters"),
            ));
        }
    }
    for name in &names {
        if !used.contains(name) {
            return Err(FieldError::invalid(
                "spec.trialTemplate.trialParameters",
                format!("{name:?} is not used in trialSpec (${{trialParameters.{name}}})"),
            ));
        }
    }
    Ok(TrialTemplate {
        primary_container_name,
        trial_parameters,
        trial_spec,
        retain,
    })
}

fn check_format(pattern: &str, path: &str) -> Result<(), FieldError> {
    let regex = super::metrics::go_regex(pattern)
        .map_err(|e| FieldError::invalid(path, format!("is not a valid regular expression: {e}")))?;
    if regex.captures_len() < 3 {
        return Err(FieldError::invalid(
            path,
            "must have two subexpressions: the metric's name and its value",
        ));
    }
    Ok(())
}

fn collector(spec: &Value) -> Result<Collector, FieldError> {
    let path = "spec.metricsCollectorSpec";
    let Some(value) = spec.get("metricsCollectorSpec").filter(|v| !v.is_null()) else {
        return Ok(Collector::StdOut {
            formats: vec![DEFAULT_METRICS_FORMAT.into()],
        });
    };
    strict::only_keys(
        value,
        path,
        COLLECTOR_SPEC_FIELDS,
        "not part of Katib's MetricsCollectorSpec",
    )?;
    let kind = value
        .pointer("/collector/kind")
        .and_then(Value::as_str)
        .unwrap_or("StdOut");
    if let Some(c) = value.get("collector") {
        strict::only_keys(
            c,
            &format!("{path}.collector"),
            &["kind"],
            "not honoured by Hearth (custom collectors are not run)",
        )?;
    }
    let empty = Value::Null;
    let source = value.get("source").unwrap_or(&empty);
    if !source.is_null() {
        strict::only_keys(
            source,
            &format!("{path}.source"),
            &["fileSystemPath", "filter"],
            "not honoured by Hearth (HTTP and TCP sources belong to collectors it does not run)",
        )?;
    }
    let mut formats = Vec::new();
    if let Some(filter) = source.get("filter").filter(|v| !v.is_null()) {
        let at = format!("{path}.source.filter");
        strict::only_keys(filter, &at, &["metricsFormat"], "not part of Katib's FilterSpec")?;
        for (i, f) in strict::string_list(filter, "metricsFormat", &at)?
            .into_iter()
            .enumerate()
        {
            check_format(&f, &format!("{at}.metricsFormat[{i}]"))?;
            formats.push(f);
        }
    }
    if formats.is_empty() {
        formats.push(DEFAULT_METRICS_FORMAT.into());
    }
    match kind {
        "StdOut" => {
            if source.get("fileSystemPath").is_some_and(|v| !v.is_null()) {
                return Err(FieldError::invalid(
                    format!("{path}.source.fileSystemPath"),
                    "is for the File collector; StdOut reads the primary container's output",
                ));
            }
            Ok(Collector::StdOut { formats })
        }
        "File" => {
            let at = format!("{path}.source.fileSystemPath");
            let fs = source
                .get("fileSystemPath")
                .filter(|v| !v.is_null())
                .ok_or_else(|| FieldError::invalid(&at, "is required for the File collector"))?;
            strict::only_keys(
                fs,
                &at,
                &["path", "kind", "format"],
                "not part of Katib's FileSystemPath",
            )?;
            let file = required_string(fs, "path", &at)?;
            if !file.starts_with('/') {
                return Err(FieldError::invalid(
                    format!("{at}.path"),
                    "must be an absolute path",
                ));
            }
            if let Some(k) = strict::opt_string(fs, "kind", &at)? {
                if k != "File" {
                    return Err(FieldError::invalid(
                        format!("{at}.kind"),
                        "must be File for the File collector",
                    ));
                }
            }
            let format = match strict::opt_string(fs, "format", &at)?.as_deref() {
                None | Some("") | Some("TEXT") => FileFormat::Text,
                Some("JSON") => FileFormat::Json,
                Some(other) => {
                    return Err(FieldError::invalid(
                        format!("{at}.format"),
                        format!("{other:?} is neither TEXT nor JSON"),
                    ))
                }
            };
            if format == FileFormat::Json && source.get("filter").is_some_and(|v| !v.is_null()) {
                return Err(FieldError::invalid(
                    format!("{path}.source.filter"),
                    "is for TEXT files; a JSON file's keys are the metric names",
                ));
            }
            Ok(Collector::File {
                path: file,
                format,
                formats,
            })
        }
        "Push" => {
            if source.get("fileSystemPath").is_some_and(|v| !v.is_null()) {
                return Err(FieldError::invalid(
                    format!("{path}.source.fileSystemPath"),
                    "is for the File collector; a Push trial reports with the katib SDK's report_metrics",
                ));
            }
            Ok(Collector::Push)
        }
        "TensorFlowEvent" | "PrometheusMetric" | "Custom" | "None" => Err(FieldError::unsupported(
            format!("{path}.collector.kind"),
            format!("the {kind} metrics collector is not supported by Hearth; use StdOut, File or Push"),
        )),
        other => Err(FieldError::invalid(
            format!("{path}.collector.kind"),
            format!("unknown collector kind {other:?}"),
        )),
    }
}

/// Parses and checks an Experiment's `spec` as Katib's webhooks default and validate it.
pub fn parse(spec: &Value) -> Result<ExperimentSpec, FieldError> {
    strict::object(spec, "spec")?;
    for (key, why) in [(
        "nasConfig",
        "neural architecture search is not supported by Hearth",
    )] {
        if spec.get(key).is_some_and(|v| !v.is_null()) {
            return Err(FieldError::unsupported(format!("spec.{key}"), why));
        }
    }
    strict::only_keys(spec, "spec", SPEC_FIELDS, "not part of Katib's ExperimentSpec")?;
    let objective = objective(spec)?;
    let (algorithm_name, algorithm_settings) = algorithm(spec)?;
    let resume_policy = match strict::opt_string(spec, "resumePolicy", "spec")?.as_deref() {
        None | Some("") | Some("Never") => ResumePolicy::Never,
        Some("LongRunning") => ResumePolicy::LongRunning,
        Some("FromVolume") => {
            return Err(FieldError::unsupported(
                "spec.resumePolicy",
                "FromVolume keeps a suggestion volume Hearth does not have; use Never or LongRunning",
            ))
        }
        Some(other) => {
            return Err(FieldError::invalid(
                "spec.resumePolicy",
                format!("{other:?} is not Never, LongRunning or FromVolume"),
            ))
        }
    };
    let mut seen = BTreeSet::new();
    let parameters = array(spec, "parameters", "spec")?
        .iter()
        .enumerate()
        .map(|(i, p)| parameter(p, &format!("spec.parameters[{i}]"), &mut seen))
        .collect::<Result<Vec<_>, _>>()?;
    if parameters.is_empty() {
        return Err(FieldError::invalid(
            "spec.parameters",
            "is required and must not be empty",
        ));
    }
    let max_trial_count = strict::opt_u64_in(spec, "maxTrialCount", "spec", 1, MAX_TRIALS)?;
    let parallel_trial_count =
        strict::opt_u64_in(spec, "parallelTrialCount", "spec", 1, MAX_TRIALS)?.unwrap_or(DEFAULT_PARALLEL);
    let max_failed_trial_count = strict::opt_u64_in(spec, "maxFailedTrialCount", "spec", 0, MAX_TRIALS)?;
    if let Some(max) = max_trial_count {
        if parallel_trial_count > max {
            return Err(FieldError::invalid(
                "spec.parallelTrialCount",
                format!("must not exceed maxTrialCount ({max})"),
            ));
        }
        if max_failed_trial_count.is_some_and(|f| f > max) {
            return Err(FieldError::invalid(
                "spec.maxFailedTrialCount",
                format!("must not exceed maxTrialCount ({max})"),
            ));
        }
    }
    super::algorithms::check_space(&algorithm_name, &algorithm_settings, &parameters)?;
    let trial_template = trial_template(spec, &parameters)?;
    let collector = collector(spec)?;
    let early_stopping = early_stopping(spec)?;
    Ok(ExperimentSpec {
        objective,
        algorithm_name,
        algorithm_settings,
        parameters,
        parallel_trial_count,
        max_trial_count,
        max_failed_trial_count,
        trial_template,
        collector,
        resume_policy,
        early_stopping,
    })
}

/// Spec fields a replace may change, as Katib's webhook allows (`maxTrialCount`,
/// `parallelTrialCount`, `maxFailedTrialCount`); the rest are immutable.
pub const MUTABLE_FIELDS: &[&str] = &["maxTrialCount", "parallelTrialCount", "maxFailedTrialCount"];

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn experiment() -> Value {
        json!({
            "objective": {"type": "maximize", "goal": 0.9, "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "maxTrialCount": 4,
            "parameters": [
                {"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.01", "max": "0.1"}},
                {"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": ["sgd", "adam"]}}
            ],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "lr", "reference": "lr"}, {"name": "opt", "reference": "opt"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "containers": [{"name": "main", "command": ["echo", "${trialParameters.lr}", "${trialParameters.opt}"]}],
                    "restartPolicy": "Never"}}}}
            }
        })
    }

    fn refused(change: impl Fn(&mut Value)) -> String {
        let mut spec = experiment();
        change(&mut spec);
        match parse(&spec) {
            Err(FieldError::Invalid { path, .. } | FieldError::Unsupported { path, .. }) => path,
            Ok(_) => panic!("accepted"),
        }
    }

    #[test]
    fn defaults_are_katibs() {
        let parsed = parse(&experiment()).unwrap();
        assert_eq!(parsed.parallel_trial_count, 3);
        assert_eq!(parsed.objective.strategy_of("accuracy"), MetricStrategy::Max);
        assert_eq!(
            parsed.collector,
            Collector::StdOut {
                formats: vec![DEFAULT_METRICS_FORMAT.into()]
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        assert_eq!(
            refused(|s| s["objective"]["type"] = json!("up")),
            "spec.objective.type"
        );
        assert_eq!(
            refused(|s| s["algorithm"]["algorithmName"] = json!("enas")),
            "spec.algorithm.algorithmName"
        );
        assert_eq!(
            refused(|s| s["parallelTrialCount"] = json!(5)),
            "spec.parallelTrialCount"
        );
        assert_eq!(refused(|s| s["nasConfig"] = json!({})), "spec.nasConfig");
        assert_eq!(
            refused(|s| s["parameters"][0]["feasibleSpace"]["min"] = json!("x")),
            "spec.parameters[0].feasibleSpace.min"
        );
        assert_eq!(
            refused(|s| s["trialTemplate"]["trialParameters"][0]["reference"] = json!("nope")),
            "spec.trialTemplate.trialParameters[0].reference"
        );
        assert_eq!(
            refused(|s| s["trialTemplate"]["trialSpec"]["kind"] = json!("TFJob")),
            "spec.trialTemplate.trialSpec.kind"
        );
        assert_eq!(
            refused(|s| s["metricsCollectorSpec"] = json!({"collector": {"kind": "TensorFlowEvent"}})),
            "spec.metricsCollectorSpec.collector.kind"
        );
        assert_eq!(
            refused(
                |s| s["trialTemplate"]["trialSpec"]["spec"]["template"]["spec"]["containers"][0]["args"] =
                    json!(["${trialParameters.other}"])
            ),
            "spec.trialTemplate.trialSpec"
        );
        assert_eq!(
            refused(|s| s["metricsCollectorSpec"] =
                json!({"source": {"filter": {"metricsFormat": ["(unclosed"]}}})),
            "spec.metricsCollectorSpec.source.filter.metricsFormat[0]"
        );
    }

    #[test]
    fn placeholders_are_found() {
        let names = placeholders("--lr=${trialParameters.lr} ${trialParameters.m}x");
        assert_eq!(names.into_iter().collect::<Vec<_>>(), ["lr", "m"]);
    }
}
