//! `/api/v1/namespaces/{namespace}/jobs`: Kubernetes `batch/v1` Jobs.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::Deserialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::body::Document;
use super::errors::ApiError;
use super::scope::{Namespaced, NamespacedItem};
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
#[derive(ToSchema)]
#[schema(value_type = Object, example = json!({
    "apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "train"},
    "spec": {"backoffLimit": 2, "template": {"spec": {"restartPolicy": "Never", "containers": [
        {"name": "main", "image": "python:3.11", "command": ["python", "-c", "print('hi')"],
         "resources": {"limits": {"nvidia.com/gpu": 1}}}]}}}
}))]
#[allow(
    dead_code,
    reason = "documents the document shape for OpenAPI; bodies are handled as JSON values"
)]
pub struct JobDocument(Value);

/// A `JobList`, as `kubectl get jobs -o json` shows it.
#[derive(serde::Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobList {
    #[schema(example = "batch/v1")]
    pub api_version: &'static str,
    #[schema(example = "JobList")]
    pub kind: &'static str,
    pub metadata: ListMeta,
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

/// Kubernetes `ListMeta`: `continue` is set when more items follow this page.
#[derive(serde::Serialize, ToSchema, Default)]
pub struct ListMeta {
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// Kubernetes list paging.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// At most this many items (1 to 100000); `metadata.continue` then names the next
    /// page. Without it, every item.
    limit: Option<String>,
    /// The `metadata.continue` of the previous page.
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    continue_token: Option<String>,
}

/// The page `ListQuery` asks for: (limit, cursor), or a 400 naming the parameter.
fn page(query: &ListQuery) -> Result<Option<(usize, Option<crate::store::resources::Cursor>)>, ApiError> {
    let after = match query.continue_token.as_deref().filter(|t| !t.is_empty()) {
        None => None,
        Some(token) => Some(crate::store::resources::Cursor::decode(token).ok_or_else(|| {
            ApiError::BadRequest("continue: not a continue token from this server's metadata.continue".into())
        })?),
    };
    let limit = match query.limit.as_deref() {
        None => None,
        Some(text) => match text.parse::<usize>() {
            Ok(n) if (1..=100_000).contains(&n) => Some(n),
            _ => {
                return Err(ApiError::BadRequest(format!(
                    "limit: must be an integer from 1 to 100000, not {text:?}"
                )))
            }
        },
    };
    Ok(match (limit, after) {
        (None, None) => None,
        (limit, after) => Some((limit.unwrap_or(100_000), after)),
    })
}

#[derive(serde::Serialize, ToSchema)]
pub struct EventList {
    pub items: Vec<EventRecord>,
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct LogQuery {
    /// Keep the connection open and stream new output until the attempt ends.
    #[serde(default)]
    follow: bool,
    /// Only the last N lines.
    #[param(maximum = 100000000)]
    tail: Option<usize>,
    /// Which attempt (0-based); the latest by default.
    #[param(maximum = 1000000)]
    attempt: Option<usize>,
}

fn list_json(items: Vec<Value>, continue_token: Option<String>) -> HttpResponse {
    HttpResponse::Ok().json(JobList {
        api_version: crate::jobs::spec::API_VERSION,
        kind: "JobList",
        metadata: ListMeta { continue_token },
        items,
    })
}

/// Create a job from a `batch/v1` Job document (JSON or YAML).
#[utoipa::path(
    tag = "jobs",
    params(("namespace" = String, Path)),
    request_body(content = JobDocument, content_type = "application/yaml"),
    responses((status = 201, body = JobDocument))
)]
#[post("/api/v1/namespaces/{namespace}/jobs")]
async fn create_job(
    scope: Namespaced,
    state: web::Data<AppState>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let created = state.jobs.create(&scope.namespace, body.single()?).await?;
    Ok(HttpResponse::Created().json(created))
}

#[utoipa::path(tag = "jobs", params(("namespace" = String, Path), ListQuery), responses((status = 200, body = JobList)))]
#[get("/api/v1/namespaces/{namespace}/jobs")]
async fn list_jobs(
    scope: Namespaced,
    query: web::Query<ListQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    match page(&query)? {
        None => Ok(list_json(state.jobs.list(&scope.namespace).await?, None)),
        Some((limit, after)) => {
            let (items, next) = state.jobs.list_page(&scope.namespace, limit, after).await?;
            Ok(list_json(items, next.map(|c| c.encode())))
        }
    }
}

#[utoipa::path(tag = "jobs", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = JobDocument)))]
#[get("/api/v1/namespaces/{namespace}/jobs/{name}")]
async fn get_job(path: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(state.jobs.get(&path.namespace, &path.name).await?))
}

/// Replace a job. The pod template is immutable, as in Kubernetes.
#[utoipa::path(
    tag = "jobs",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body(content = JobDocument, content_type = "application/yaml"),
    responses((status = 200, body = JobDocument))
)]
#[put("/api/v1/namespaces/{namespace}/jobs/{name}")]
async fn replace_job(
    path: NamespacedItem,
    state: web::Data<AppState>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .jobs
            .replace(&path.namespace, &path.name, body.single()?)
            .await?,
    ))
}

/// Change a job with a JSON merge patch (RFC 7396).
#[utoipa::path(
    tag = "jobs",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body(content = Object, content_type = "application/merge-patch+json"),
    responses((status = 200, body = JobDocument))
)]
#[patch("/api/v1/namespaces/{namespace}/jobs/{name}")]
async fn patch_job(
    path: NamespacedItem,
    state: web::Data<AppState>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(
        state
            .jobs
            .patch(&path.namespace, &path.name, body.single()?)
            .await?,
    ))
}

/// Delete a job: running attempts are stopped (SIGTERM, then SIGKILL after the grace period).
#[utoipa::path(tag = "jobs", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 202, description = "Deletion started")))]
#[delete("/api/v1/namespaces/{namespace}/jobs/{name}")]
async fn delete_job(path: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    state.jobs.delete(&path.namespace, &path.name).await?;
    Ok(HttpResponse::Accepted().json(serde_json::json!({"kind": "Status", "status": "Success", "details": {"name": path.name, "kind": "jobs"}})))
}

/// Events of a job, as `kubectl describe` lists them.
#[utoipa::path(tag = "jobs", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = EventList)))]
#[get("/api/v1/namespaces/{namespace}/jobs/{name}/events")]
async fn job_events(
    path: NamespacedItem,
    state: web::Data<AppState>,
) -> Result<web::Json<EventList>, ApiError> {
    Ok(web::Json(EventList {
        items: state.jobs.events(&path.namespace, &path.name).await?,
    }))
}

/// The job's output (stdout and stderr interleaved); `follow=true` streams it.
#[utoipa::path(
    tag = "jobs",
    params(("namespace" = String, Path), ("name" = String, Path), LogQuery),
    responses((status = 200, description = "Log text", body = String, content_type = "text/plain"))
)]
#[get("/api/v1/namespaces/{namespace}/jobs/{name}/logs")]
async fn job_logs(
    path: NamespacedItem,
    state: web::Data<AppState>,
    query: web::Query<LogQuery>,
) -> Result<HttpResponse, ApiError> {
    let log = state.jobs.log(&path.namespace, &path.name, query.attempt).await?;
    let jobs = state.jobs.clone();
    let (namespace, name, attempt) = (path.namespace.clone(), path.name.clone(), query.attempt);
    let refresh = move || {
        let (jobs, namespace, name) = (jobs.clone(), namespace.clone(), name.clone());
        async move { jobs.log(&namespace, &name, attempt).await.ok() }
    };
    Ok(super::logs::respond(HttpResponse::Ok(), log, query.tail, query.follow, refresh).await)
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create_job)
        .service(list_jobs)
        .service(get_job)
        .service(replace_job)
        .service(patch_job)
        .service(delete_job)
        .service(job_events)
        .service(job_logs);
}
