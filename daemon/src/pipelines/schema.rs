//! The OpenAPI shapes of the KFP v2beta1 request bodies (kubeflow/pipelines
//! `backend/api/v2beta1/*.proto` and their swagger: `V2beta1Run`, `V2beta1RecurringRun`,
//! `V2beta1Trigger`, `V2beta1Experiment`, `V2beta1Pipeline`, `V2beta1PipelineVersion`,
//! `V2beta1RuntimeConfig`), typed with the bounds the daemon enforces, and the type
//! checks that hold every body to the shape its schema declares.
//!
//! Bodies are still read as JSON values, as the SDK writes them (proto3 JSON: `int64` as
//! a decimal string or, from `kfp.Client`, a plain number; times as RFC 3339). The
//! structs here only document; `check_*` refuse a declared field of the wrong type (a
//! 422 naming it), and the numbers and times are bounded where they are read
//! (`protojson`, `schedule`). Output-only fields (ids, states, times the server sets)
//! are `readOnly`: ignored on input, listed because the same schemas describe the
//! answers, as in KFP's own swagger (one `V2beta1Run` for both directions).

#![allow(
    dead_code,
    reason = "the structs document the body shapes for OpenAPI; bodies are handled as JSON values"
)]

use serde_json::Value;
use utoipa::openapi::schema::{KnownFormat, ObjectBuilder, OneOfBuilder, SchemaFormat, Type};
use utoipa::openapi::{RefOr, Schema};
use utoipa::ToSchema;

use super::schedule::MAX_CONCURRENCY;
use crate::model::strict::{FieldError, MAX_SECONDS};

/// A proto3 `int64` from `min` to `max`: a decimal string (proto3 JSON) or a JSON number
/// (what `kfp.Client` sends).
fn int64_in(min: u64, max: u64, description: &str) -> OneOfBuilder {
    OneOfBuilder::new()
        .item(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .pattern(Some(r"^[0-9]{1,19}$"))
                .description(Some(format!("{description} As a decimal string.")))
                .examples([Value::String(min.to_string())]),
        )
        .item(
            ObjectBuilder::new()
                .schema_type(Type::Integer)
                .format(Some(SchemaFormat::KnownFormat(KnownFormat::Int64)))
                .minimum(Some(min as f64))
                .maximum(Some(max as f64))
                .description(Some(format!("{description} From {min} to {max}."))),
        )
        .description(Some(format!("{description} From {min} to {max}.")))
}

fn interval_second() -> RefOr<Schema> {
    int64_in(1, MAX_SECONDS, "Seconds between fires.").into()
}

fn max_concurrency() -> RefOr<Schema> {
    int64_in(
        1,
        MAX_CONCURRENCY,
        "Runs of this recurring run that may be active at once.",
    )
    .item(ObjectBuilder::new().schema_type(Type::Null))
    .into()
}

/// `V2beta1RuntimeConfig`: the run's input parameter values.
#[derive(ToSchema)]
pub struct V2beta1RuntimeConfig {
    /// Input parameter name to value (plain JSON values, as `kfp.Client` sends them);
    /// each is checked against the pipeline's declared type.
    #[schema(value_type = Option<Object>)]
    parameters: Option<Value>,
    /// Refused when set: Hearth keeps artifacts under its data dir.
    pipeline_root: Option<String>,
}

/// `V2beta1PipelineVersionReference`: run a stored pipeline version instead of an
/// inline `pipeline_spec`; without `pipeline_version_id`, the pipeline's newest.
#[derive(ToSchema)]
pub struct V2beta1PipelineVersionReference {
    pipeline_id: Option<String>,
    pipeline_version_id: Option<String>,
}

/// `V2beta1Run` as a create request (`POST /apis/v2beta1/runs`). Give `pipeline_spec`
/// or `pipeline_version_reference`, not both.
#[derive(ToSchema)]
#[schema(example = json!({
    "display_name": "train", "experiment_id": "6f1c...",
    "pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "schemaVersion": "2.1.0"},
    "runtime_config": {"parameters": {"a": 1}}
}))]
pub struct V2beta1Run {
    /// The experiment; the namespace's `Default` experiment when unset.
    experiment_id: Option<String>,
    /// `run` when unset.
    display_name: Option<String>,
    description: Option<String>,
    /// The compiled pipeline (KFP IR `PipelineSpec`, camelCase as compiled), or
    /// `{"pipeline_spec": ..., "platform_spec": ...}`. Checked in full: tasks' retry
    /// policies, iterator policies and loop lists are bounded (see README).
    #[schema(value_type = Option<Object>)]
    pipeline_spec: Option<Value>,
    pipeline_version_reference: Option<V2beta1PipelineVersionReference>,
    runtime_config: Option<V2beta1RuntimeConfig>,
    /// Kept and shown; Hearth runs steps as the daemon's step user.
    service_account: Option<String>,
    /// Hearth: the namespace, when there is no `experiment_id` to take it from.
    namespace: Option<String>,
    #[schema(read_only)]
    run_id: Option<String>,
    /// `V2beta1RuntimeState`: `PENDING`, `RUNNING`, `SUCCEEDED`, `SKIPPED`, `FAILED`,
    /// `CANCELING`, `CANCELED`, `PAUSED`.
    #[schema(read_only)]
    state: Option<String>,
    /// `AVAILABLE` or `ARCHIVED`.
    #[schema(read_only)]
    storage_state: Option<String>,
    #[schema(read_only, format = DateTime)]
    created_at: Option<String>,
    #[schema(read_only, format = DateTime)]
    scheduled_at: Option<String>,
    #[schema(read_only, format = DateTime)]
    finished_at: Option<String>,
    #[schema(read_only)]
    state_history: Option<Vec<V2beta1RuntimeStatus>>,
    /// Why the run failed.
    #[schema(read_only)]
    error: Option<GooglerpcStatus>,
    /// `GET /apis/v2beta1/runs/{run_id}` only: the tasks.
    #[schema(read_only)]
    run_details: Option<V2beta1RunDetails>,
    /// The recurring run that started this run.
    #[schema(read_only)]
    recurring_run_id: Option<String>,
}

/// `GooglerpcStatus`: an error, as KFP's answers carry it (`code` 2 is UNKNOWN).
#[derive(ToSchema)]
pub struct GooglerpcStatus {
    code: Option<i32>,
    message: Option<String>,
}

/// `V2beta1RuntimeStatus`: one state a run or task passed through, and when.
#[derive(ToSchema)]
pub struct V2beta1RuntimeStatus {
    #[schema(format = DateTime)]
    update_time: Option<String>,
    state: Option<String>,
}

/// `V2beta1RunDetails`: the run's tasks.
#[derive(ToSchema)]
pub struct V2beta1RunDetails {
    task_details: Option<Vec<V2beta1PipelineTaskDetail>>,
}

/// `PipelineTaskDetailChildTask`: a task a DAG task started.
#[derive(ToSchema)]
pub struct PipelineTaskDetailChildTask {
    task_id: Option<String>,
}

/// `V2beta1PipelineTaskDetail`: one task of a run. Hearth adds `hearth_*` members
/// (the task's path in the DAG, kind, cache hit, attempts, workload, why it waits).
#[derive(ToSchema)]
pub struct V2beta1PipelineTaskDetail {
    run_id: Option<String>,
    task_id: Option<String>,
    display_name: Option<String>,
    #[schema(format = DateTime)]
    create_time: Option<String>,
    #[schema(format = DateTime)]
    start_time: Option<String>,
    #[schema(format = DateTime)]
    end_time: Option<String>,
    /// `V2beta1RuntimeState`, as for the run.
    state: Option<String>,
    error: Option<GooglerpcStatus>,
    parent_task_id: Option<String>,
    child_tasks: Option<Vec<PipelineTaskDetailChildTask>>,
}

/// `V2beta1ListRunsResponse`.
#[derive(ToSchema)]
pub struct V2beta1ListRunsResponse {
    runs: Option<Vec<V2beta1Run>>,
    total_size: Option<i32>,
    /// Pass as `page_token` for the next page; absent on the last.
    next_page_token: Option<String>,
}

/// `V2beta1ListExperimentsResponse`.
#[derive(ToSchema)]
pub struct V2beta1ListExperimentsResponse {
    experiments: Option<Vec<V2beta1Experiment>>,
    total_size: Option<i32>,
    next_page_token: Option<String>,
}

/// `V2beta1ListPipelinesResponse`.
#[derive(ToSchema)]
pub struct V2beta1ListPipelinesResponse {
    pipelines: Option<Vec<V2beta1Pipeline>>,
    total_size: Option<i32>,
    next_page_token: Option<String>,
}

/// `V2beta1ListPipelineVersionsResponse`.
#[derive(ToSchema)]
pub struct V2beta1ListPipelineVersionsResponse {
    pipeline_versions: Option<Vec<V2beta1PipelineVersion>>,
    total_size: Option<i32>,
    next_page_token: Option<String>,
}

/// `V2beta1ListRecurringRunsResponse`.
#[derive(ToSchema)]
pub struct V2beta1ListRecurringRunsResponse {
    recurring_runs: Option<Vec<V2beta1RecurringRun>>,
    total_size: Option<i32>,
    next_page_token: Option<String>,
}

/// `V2beta1GetHealthzResponse`, with Hearth's `pipeline_store`.
#[derive(ToSchema)]
pub struct V2beta1GetHealthzResponse {
    /// Always false: Hearth scopes by token, not by an in-pod namespace file.
    multi_user: bool,
    pipeline_store: Option<String>,
}

/// `google.protobuf.Empty`: what delete, archive, terminate and the like answer (`{}`).
#[derive(ToSchema)]
pub struct ProtobufEmpty {}

/// Hearth: what one task took and produced
/// (`GET /hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/outputs`).
#[derive(ToSchema)]
pub struct TaskOutputs {
    task_id: String,
    display_name: Option<String>,
    /// `V2beta1RuntimeState`, as for the run.
    state: Option<String>,
    /// Whether the result came from the cache instead of a new execution.
    cached: Option<bool>,
    attempts: Option<i64>,
    /// Input parameter and artifact values, by name.
    #[schema(value_type = Option<Object>)]
    inputs: Option<Value>,
    /// Output parameter values and artifacts (with metadata), by name.
    #[schema(value_type = Option<Object>)]
    outputs: Option<Value>,
}

/// `V2beta1CronSchedule`: a robfig/cron line, 6 fields with seconds first (a 5-field
/// line fires at second 0).
#[derive(ToSchema)]
pub struct V2beta1CronSchedule {
    #[schema(example = "0 */5 * * * *")]
    cron: String,
    #[schema(format = DateTime)]
    start_time: Option<String>,
    #[schema(format = DateTime)]
    end_time: Option<String>,
}

/// `V2beta1PeriodicSchedule`: a fire every `interval_second` seconds.
#[derive(ToSchema)]
pub struct V2beta1PeriodicSchedule {
    #[schema(schema_with = interval_second)]
    interval_second: Value,
    #[schema(format = DateTime)]
    start_time: Option<String>,
    #[schema(format = DateTime)]
    end_time: Option<String>,
}

/// `V2beta1Trigger`: exactly one of `cron_schedule` and `periodic_schedule`.
#[derive(ToSchema)]
pub struct V2beta1Trigger {
    cron_schedule: Option<V2beta1CronSchedule>,
    periodic_schedule: Option<V2beta1PeriodicSchedule>,
}

/// The recurring run's mode (`V2beta1RecurringRunMode`); unset means `ENABLE`.
#[derive(ToSchema)]
#[allow(
    non_camel_case_types,
    clippy::upper_case_acronyms,
    reason = "KFP's enum value names"
)]
pub enum RecurringRunMode {
    MODE_UNSPECIFIED,
    ENABLE,
    DISABLE,
}

/// `V2beta1RecurringRun` as a create request (`POST /apis/v2beta1/recurringruns`).
#[derive(ToSchema)]
#[schema(example = json!({
    "display_name": "nightly", "experiment_id": "6f1c...",
    "pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "schemaVersion": "2.1.0"},
    "runtime_config": {"parameters": {}}, "max_concurrency": 1, "mode": "ENABLE",
    "trigger": {"cron_schedule": {"cron": "0 0 3 * * *"}}
}))]
pub struct V2beta1RecurringRun {
    #[schema(min_length = 1)]
    display_name: String,
    description: Option<String>,
    experiment_id: Option<String>,
    #[schema(value_type = Option<Object>)]
    pipeline_spec: Option<Value>,
    pipeline_version_reference: Option<V2beta1PipelineVersionReference>,
    runtime_config: Option<V2beta1RuntimeConfig>,
    service_account: Option<String>,
    trigger: V2beta1Trigger,
    /// 1 when unset.
    #[schema(schema_with = max_concurrency)]
    max_concurrency: Option<Value>,
    no_catchup: Option<bool>,
    mode: Option<RecurringRunMode>,
    /// Hearth: the namespace, when there is no `experiment_id` to take it from.
    namespace: Option<String>,
    /// Taken when the trigger's schedule has no `start_time`.
    #[schema(format = DateTime)]
    start_time: Option<String>,
    /// Taken when the trigger's schedule has no `end_time`.
    #[schema(format = DateTime)]
    end_time: Option<String>,
    #[schema(read_only)]
    recurring_run_id: Option<String>,
    #[schema(read_only, format = DateTime)]
    created_at: Option<String>,
    #[schema(read_only, format = DateTime)]
    updated_at: Option<String>,
    /// `ENABLED` or `DISABLED`.
    #[schema(read_only)]
    status: Option<String>,
    /// Why the last fire could not start a run.
    #[schema(read_only)]
    error: Option<String>,
}

/// `V2beta1Experiment` as a create request (`POST /apis/v2beta1/experiments`).
#[derive(ToSchema)]
#[schema(example = json!({"display_name": "tuning", "namespace": "alice"}))]
pub struct V2beta1Experiment {
    /// Unique within the namespace.
    #[schema(min_length = 1)]
    display_name: String,
    description: Option<String>,
    /// The caller's own namespace when unset (`default` for an admin).
    namespace: Option<String>,
    #[schema(read_only)]
    experiment_id: Option<String>,
    #[schema(read_only, format = DateTime)]
    created_at: Option<String>,
    /// `AVAILABLE` or `ARCHIVED`.
    #[schema(read_only)]
    storage_state: Option<String>,
}

/// `V2beta1Pipeline` as a create request (`POST /apis/v2beta1/pipelines`); versions
/// come from `upload_version` or `POST .../versions`.
#[derive(ToSchema)]
#[schema(example = json!({"display_name": "train", "description": "trains"}))]
pub struct V2beta1Pipeline {
    /// Unique within the namespace (`name` is taken when this is unset).
    #[schema(min_length = 1)]
    display_name: String,
    description: Option<String>,
    namespace: Option<String>,
    #[schema(read_only)]
    pipeline_id: Option<String>,
    /// The display name again (KFP v1 clients read `name`).
    #[schema(read_only)]
    name: Option<String>,
    #[schema(read_only, format = DateTime)]
    created_at: Option<String>,
}

/// `V2beta1PipelineVersion` as a create request
/// (`POST /apis/v2beta1/pipelines/{pipeline_id}/versions`).
#[derive(ToSchema)]
#[schema(example = json!({
    "display_name": "v2",
    "pipeline_spec": {"pipelineInfo": {"name": "p"}, "root": {"dag": {"tasks": {}}}, "schemaVersion": "2.1.0"}
}))]
pub struct V2beta1PipelineVersion {
    /// Unique within the pipeline; the pipeline's name and a counter when unset.
    display_name: Option<String>,
    description: Option<String>,
    /// The compiled pipeline (KFP IR), checked as for a run.
    #[schema(value_type = Object)]
    pipeline_spec: Value,
    #[schema(read_only)]
    pipeline_id: Option<String>,
    #[schema(read_only)]
    pipeline_version_id: Option<String>,
    #[schema(read_only)]
    name: Option<String>,
    #[schema(read_only, format = DateTime)]
    created_at: Option<String>,
}

/// The JSON type a declared field must have; `null` always means unset.
#[derive(Clone, Copy)]
enum Kind {
    String,
    Object,
    Bool,
    OneOf(&'static [&'static str]),
}

fn check(body: &Value, path: &str, fields: &[(&str, Kind)]) -> Result<(), FieldError> {
    let Some(map) = body.as_object() else {
        let at = if path.is_empty() { "body" } else { path };
        return Err(FieldError::invalid(at, "must be a JSON object"));
    };
    for (key, kind) in fields {
        let Some(v) = map.get(*key).filter(|v| !v.is_null()) else {
            continue;
        };
        let full = if path.is_empty() {
            (*key).to_string()
        } else {
            format!("{path}.{key}")
        };
        let ok = match kind {
            Kind::String => v.is_string(),
            Kind::Object => v.is_object(),
            Kind::Bool => v.is_boolean(),
            Kind::OneOf(values) => v.as_str().is_some_and(|s| values.contains(&s)),
        };
        if !ok {
            let want = match kind {
                Kind::String => "a string".to_string(),
                Kind::Object => "an object".to_string(),
                Kind::Bool => "true or false".to_string(),
                Kind::OneOf(values) => format!("one of {}", values.join(", ")),
            };
            return Err(FieldError::invalid(full, format!("must be {want}, not {v}")));
        }
    }
    Ok(())
}

/// The fields a run and a recurring run share (the run template).
const RUN_FIELDS: &[(&str, Kind)] = &[
    ("experiment_id", Kind::String),
    ("display_name", Kind::String),
    ("description", Kind::String),
    ("pipeline_spec", Kind::Object),
    ("pipeline_version_reference", Kind::Object),
    ("runtime_config", Kind::Object),
    ("service_account", Kind::String),
    ("namespace", Kind::String),
];

fn check_run_template(body: &Value) -> Result<(), FieldError> {
    check(body, "", RUN_FIELDS)?;
    if let Some(rc) = body.get("runtime_config").filter(|v| !v.is_null()) {
        check(
            rc,
            "runtime_config",
            &[("parameters", Kind::Object), ("pipeline_root", Kind::String)],
        )?;
    }
    if let Some(r) = body.get("pipeline_version_reference").filter(|v| !v.is_null()) {
        check(
            r,
            "pipeline_version_reference",
            &[
                ("pipeline_id", Kind::String),
                ("pipeline_version_id", Kind::String),
            ],
        )?;
    }
    Ok(())
}

/// Holds a `V2beta1Run` body to its schema's types.
pub fn check_run(body: &Value) -> Result<(), FieldError> {
    check_run_template(body)
}

/// Holds a `V2beta1RecurringRun` body to its schema's types (the numbers and times
/// are bounded where they are read).
pub fn check_recurring_run(body: &Value) -> Result<(), FieldError> {
    check_run_template(body)?;
    check(
        body,
        "",
        &[
            ("trigger", Kind::Object),
            ("no_catchup", Kind::Bool),
            ("mode", Kind::OneOf(&["MODE_UNSPECIFIED", "ENABLE", "DISABLE"])),
            ("start_time", Kind::String),
            ("end_time", Kind::String),
        ],
    )?;
    let trigger = &body["trigger"];
    let times = [("start_time", Kind::String), ("end_time", Kind::String)];
    let cron = trigger.get("cron_schedule").filter(|v| !v.is_null());
    let periodic = trigger.get("periodic_schedule").filter(|v| !v.is_null());
    if cron.is_some() && periodic.is_some() {
        return Err(FieldError::invalid(
            "trigger",
            "give cron_schedule or periodic_schedule, not both",
        ));
    }
    if let Some(c) = cron {
        check(c, "trigger.cron_schedule", &times)?;
        check(c, "trigger.cron_schedule", &[("cron", Kind::String)])?;
    }
    if let Some(p) = periodic {
        check(p, "trigger.periodic_schedule", &times)?;
    }
    Ok(())
}

/// Holds a `V2beta1Experiment` body to its schema's types.
pub fn check_experiment(body: &Value) -> Result<(), FieldError> {
    check(
        body,
        "",
        &[
            ("display_name", Kind::String),
            ("name", Kind::String),
            ("description", Kind::String),
            ("namespace", Kind::String),
        ],
    )
}

/// Holds a `V2beta1Pipeline` body to its schema's types.
pub fn check_pipeline(body: &Value) -> Result<(), FieldError> {
    check_experiment(body)
}

/// Holds a `V2beta1PipelineVersion` body to its schema's types.
pub fn check_pipeline_version(body: &Value) -> Result<(), FieldError> {
    check(
        body,
        "",
        &[
            ("display_name", Kind::String),
            ("name", Kind::String),
            ("description", Kind::String),
            ("pipeline_spec", Kind::Object),
        ],
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn declared_fields_of_the_wrong_type_are_named() {
        let e = check_run(&json!({"display_name": 5})).unwrap_err();
        assert!(e.to_string().starts_with("display_name: must be a string"), "{e}");
        let e = check_run(&json!({"runtime_config": {"parameters": []}})).unwrap_err();
        assert!(e.to_string().starts_with("runtime_config.parameters:"), "{e}");
        let e = check_recurring_run(&json!({"trigger": {}, "mode": "ON"})).unwrap_err();
        assert!(
            e.to_string().contains("one of MODE_UNSPECIFIED, ENABLE, DISABLE"),
            "{e}"
        );
        let e = check_recurring_run(&json!({"trigger": {"cron_schedule": {"cron": "* * * * * *"},
            "periodic_schedule": {"interval_second": "60"}}}))
        .unwrap_err();
        assert!(e.to_string().starts_with("trigger:"), "{e}");
        let e = check_recurring_run(&json!({"trigger": {}, "no_catchup": "yes"})).unwrap_err();
        assert!(e.to_string().starts_with("no_catchup:"), "{e}");
    }

    #[test]
    fn what_kfp_client_sends_passes() {
        check_run(
            &json!({"experiment_id": "e", "display_name": "r", "pipeline_spec": {},
            "runtime_config": {"parameters": {"a": 1}}}),
        )
        .unwrap();
        check_recurring_run(&json!({"display_name": "job", "pipeline_spec": {},
            "runtime_config": {"parameters": {}}, "max_concurrency": 1,
            "trigger": {"periodic_schedule": {"interval_second": 60}}, "mode": "ENABLE",
            "experiment_id": "e", "no_catchup": null}))
        .unwrap();
        check_experiment(&json!({"display_name": "e", "namespace": "ns"})).unwrap();
    }
}
