//! Kubernetes `batch/v1` Jobs: the document schema (for the generic paths of
//! `crate::kube`) and Hearth's own extras under `/hearth/v1/namespaces/{namespace}/jobs`
//! (events and logs, which Kubernetes serves through Pods).

use actix_web::{get, web, HttpResponse};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::errors::ApiError;
use super::scope::NamespacedItem;
use super::AppState;
use crate::jobs::JobError;
use crate::model::strict::FieldError;
use crate::store::EventRecord;

impl From<FieldError> for ApiError {
    fn from(e: FieldError) -> ApiError {
        match e {
            FieldError::Unsupported { path, detail } => ApiError::unsupported(path, detail),
            FieldError::Invalid { path, detail } => ApiError::invalid(path, detail),
        }
    }
}

impl From<JobError> for ApiError {
    fn from(e: JobError) -> ApiError {
        match e {
            JobError::Field(f) => f.into(),
            JobError::NotFound { .. } | JobError::NoAttempt(_) => ApiError::NotFound(e.to_string()),
            JobError::Unschedulable(message) => {
                ApiError::invalid("spec.template.spec.containers[0].resources", message)
            }
            JobError::Store(s) => s.into(),
            JobError::Scheduler(s) => s.into(),
        }
    }
}

/// A Kubernetes `batch/v1` Job document (see the Kubernetes API reference); `status`
/// is Hearth's, in the upstream shape, with Hearth's queue view under `status.hearth`.
/// The schema types the fields Hearth bounds, with the bounds it enforces; Hearth checks
/// the rest of the document beyond it and answers 422 naming the field.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[schema(example = json!({
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
    "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3.11", "command": ["python", "-c", "print('hi')"],
         "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}
}))]
#[allow(
    dead_code,
    reason = "documents the document shape for OpenAPI; bodies are handled as JSON values"
)]
pub struct JobDocument {
    #[schema(example = "batch/v1")]
    api_version: String,
    #[schema(example = "Job")]
    kind: String,
    #[schema(value_type = Object)]
    metadata: Value,
    spec: JobSpecSchema,
}

/// The bounded fields of a `batch/v1` `JobSpec` (`crate::jobs::spec` has them all).
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    dead_code,
    reason = "documents the document shape for OpenAPI; bodies are handled as JSON values"
)]
pub struct JobSpecSchema {
    /// The pod template: one container, `restartPolicy` Never or OnFailure.
    #[schema(value_type = Object)]
    template: Value,
    #[schema(minimum = 0, maximum = 100000)]
    completions: Option<u32>,
    #[schema(minimum = 0, maximum = 100000)]
    parallelism: Option<u32>,
    /// `NonIndexed` (the default) or `Indexed`.
    completion_mode: Option<String>,
    suspend: Option<bool>,
    #[schema(minimum = 0, maximum = 2147483647)]
    backoff_limit: Option<u32>,
    #[schema(minimum = 0, maximum = 2147483647)]
    backoff_limit_per_index: Option<u32>,
    /// At most `completions`.
    #[schema(minimum = 0, maximum = 100000)]
    max_failed_indexes: Option<u32>,
    /// Seconds, from `status.startTime`.
    #[schema(minimum = 0, maximum = 2147483647)]
    active_deadline_seconds: Option<u32>,
    #[schema(minimum = 0, maximum = 2147483647)]
    ttl_seconds_after_finished: Option<u32>,
    #[schema(value_type = Option<Object>)]
    pod_failure_policy: Option<Value>,
    #[schema(value_type = Option<Object>)]
    success_policy: Option<Value>,
    /// Only `Failed`.
    pod_replacement_policy: Option<String>,
    /// Only `kubernetes.io/job-controller`.
    managed_by: Option<String>,
}

#[derive(serde::Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventRecord>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct LogQuery {
    /// Keep the connection open and stream new output until the attempt ends.
    follow: Option<bool>,
    /// Only the last N lines.
    #[param(maximum = 100000000)]
    tail: Option<usize>,
    /// Which attempt (0-based); the latest by default.
    #[param(maximum = 1000000)]
    attempt: Option<usize>,
}

/// The largest `tail` and `attempt` a log request may ask for (as documented on
/// [`LogQuery`]).
const MAX_TAIL: u64 = 100_000_000;
const MAX_ATTEMPT: u64 = 1_000_000;

/// Reads [`LogQuery`] from the raw query so that a bad value is a 400 naming its
/// parameter and the range, not serde's bare "invalid digit found in string".
fn log_query(raw: &std::collections::BTreeMap<String, String>) -> Result<LogQuery, ApiError> {
    let bad = |key: &str, detail: String| ApiError::BadRequest(format!("query parameter {key}: {detail}"));
    let number = |key: &str, max: u64| -> Result<Option<usize>, ApiError> {
        let Some(text) = raw.get(key) else { return Ok(None) };
        text.parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .and_then(|n| usize::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be an integer from 0 to {max}, not {text:?}")))
    };
    if let Some(key) = raw
        .keys()
        .find(|k| !["follow", "tail", "attempt"].contains(&k.as_str()))
    {
        return Err(bad(key, "is not known (follow, tail, attempt)".into()));
    }
    let follow = match raw.get("follow").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(other) => return Err(bad("follow", format!("must be true or false, not {other:?}"))),
    };
    Ok(LogQuery {
        follow: Some(follow),
        tail: number("tail", MAX_TAIL)?,
        attempt: number("attempt", MAX_ATTEMPT)?,
    })
}

/// Events of a job, as `kubectl describe` lists them.
#[utoipa::path(operation_id = "list_job_events", tag = "jobs", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = EventList)))]
#[get("/hearth/v1/namespaces/{namespace}/jobs/{name}/events")]
async fn job_events(
    path: NamespacedItem,
    state: web::Data<AppState>,
) -> Result<web::Json<EventList>, ApiError> {
    Ok(web::Json(EventList {
        items: state.jobs.events(&path.namespace, &path.name).await?,
    }))
}

/// The job's output (stdout and stderr interleaved); `follow=true` streams it.
#[utoipa::path(operation_id = "read_job_logs", 
    tag = "jobs",
    params(("namespace" = String, Path), ("name" = String, Path), LogQuery),
    responses((status = 200, description = "Log text", body = String, content_type = "text/plain"))
)]
#[get("/hearth/v1/namespaces/{namespace}/jobs/{name}/logs")]
async fn job_logs(
    path: NamespacedItem,
    state: web::Data<AppState>,
    raw: web::Query<std::collections::BTreeMap<String, String>>,
) -> Result<HttpResponse, ApiError> {
    let query = log_query(&raw)?;
    let log = state.jobs.log(&path.namespace, &path.name, query.attempt).await?;
    let jobs = state.jobs.clone();
    let (namespace, name, attempt) = (path.namespace.clone(), path.name.clone(), query.attempt);
    let refresh = move || {
        let (jobs, namespace, name) = (jobs.clone(), namespace.clone(), name.clone());
        async move { jobs.log(&namespace, &name, attempt).await.ok() }
    };
    Ok(super::logs::respond(
        HttpResponse::Ok(),
        log,
        query.tail,
        query.follow.unwrap_or(false),
        refresh,
    )
    .await)
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(job_events).service(job_logs);
}
