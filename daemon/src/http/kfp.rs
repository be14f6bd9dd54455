//! The KFP v2beta1 REST API (`/apis/v2beta1/...`) that `kfp.Client` speaks, plus
//! Hearth's routes for what each task produced. Handlers only parse, authorize through
//! the core functions in `crate::pipelines::api`, and map errors.

use actix_web::{delete, get, post, web, HttpResponse};
use futures_util::StreamExt;
use serde::Deserialize;
use serde_json::Value;

use super::auth::Caller;
use super::body::json_error;
use super::errors::ApiError;
use super::AppState;
use crate::pipelines::api::{self, ListQuery, NewPipeline, PipelineError};
use crate::pipelines::ir::{self, IrError};
use crate::pipelines::schema;

impl From<PipelineError> for ApiError {
    fn from(e: PipelineError) -> ApiError {
        match e {
            PipelineError::Ir(IrError::Empty) => ApiError::invalid(
                "pipeline_spec",
                "the pipeline package holds no document (empty file)",
            ),
            PipelineError::Ir(IrError::Malformed {
                format,
                detail,
                line,
                column,
            }) => ApiError::MalformedBody {
                format,
                detail,
                line,
                column,
            },
            PipelineError::Ir(IrError::Invalid { field, detail }) => ApiError::invalid(field, detail),
            PipelineError::Ir(IrError::Unsupported { feature, detail }) => {
                ApiError::unsupported(feature, detail)
            }
            PipelineError::NotFound(m) => ApiError::NotFound(m),
            PipelineError::Invalid { field, detail } => ApiError::invalid(field, detail),
            PipelineError::Conflict(m) => ApiError::Conflict(m),
            PipelineError::Auth(e) => e.into(),
            PipelineError::Store(e) => e.into(),
            PipelineError::Scheduler(e) => e.into(),
        }
    }
}

type Reply = Result<HttpResponse, ApiError>;

fn ok(v: Value) -> Reply {
    Ok(HttpResponse::Ok().json(v))
}

fn core(state: &AppState) -> Result<&api::Pipelines, ApiError> {
    Ok(&state.pipelines)
}

/// Reads the whole body up to the configured limit.
async fn read_body(state: &AppState, mut payload: web::Payload) -> Result<Vec<u8>, ApiError> {
    let limit = state.config.max_body_bytes;
    let mut out = Vec::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("reading the body: {e}")))?;
        if out.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

/// A JSON object body; `allow_empty` for the verbs the client sends with no body.
async fn json_object(state: &AppState, payload: web::Payload, allow_empty: bool) -> Result<Value, ApiError> {
    let bytes = read_body(state, payload).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        if allow_empty {
            return Ok(Value::Object(Default::default()));
        }
        return Err(ApiError::BadRequest(
            "the request body is empty; send a JSON object".into(),
        ));
    }
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?;
    if !v.is_object() {
        return Err(ApiError::invalid("body", "must be a JSON object"));
    }
    Ok(v)
}

#[utoipa::path(tag = "kfp", operation_id = "get_kfp_healthz", responses((status = 200, body = schema::V2beta1GetHealthzResponse)), security(("bearer" = [])))]
#[get("/apis/v2beta1/healthz")]
async fn healthz(_caller: Caller) -> Reply {
    // Hearth has namespaces, but `multi_user: true` makes the SDK look for an in-pod
    // namespace file; callers pass `namespace=` and Hearth scopes by token instead.
    ok(serde_json::json!({"multi_user": false, "pipeline_store": "sqlite"}))
}

// ----------------------------------------------------------------------------- pipelines

#[utoipa::path(tag = "kfp", request_body = schema::V2beta1Pipeline, responses((status = 200, body = schema::V2beta1Pipeline)), security(("bearer" = [])))]
#[post("/apis/v2beta1/pipelines")]
async fn create_pipeline(caller: Caller, state: web::Data<AppState>, payload: web::Payload) -> Reply {
    let body = json_object(&state, payload, false).await?;
    schema::check_pipeline(&body).map_err(PipelineError::from)?;
    let req = NewPipeline {
        display_name: body["display_name"]
            .as_str()
            .or(body["name"].as_str())
            .map(str::to_string),
        description: body["description"].as_str().map(str::to_string),
        namespace: body["namespace"].as_str().map(str::to_string),
    };
    ok(api::create_pipeline(core(&state)?, &caller.0, req, None).await?)
}

#[derive(Deserialize, utoipa::IntoParams)]
struct UploadQuery {
    name: Option<String>,
    display_name: Option<String>,
    description: Option<String>,
    namespace: Option<String>,
    /// `upload_version` only: the pipeline the version belongs to (KFP spells it so).
    pipelineid: Option<String>,
}

/// The bytes of the `uploadfile` part of a multipart upload.
async fn upload_file(state: &AppState, mut form: actix_multipart::Multipart) -> Result<Vec<u8>, ApiError> {
    let limit = state.config.max_body_bytes;
    let mut file = None;
    while let Some(field) = form.next().await {
        let mut field = field.map_err(|e| ApiError::BadRequest(format!("multipart body: {e}")))?;
        let name = field
            .content_disposition()
            .and_then(|d| d.get_name())
            .unwrap_or("")
            .to_string();
        let mut bytes = Vec::new();
        while let Some(chunk) = field.next().await {
            let chunk = chunk.map_err(|e| ApiError::BadRequest(format!("multipart body: {e}")))?;
            if bytes.len() + chunk.len() > limit {
                return Err(ApiError::PayloadTooLarge { limit });
            }
            bytes.extend_from_slice(&chunk);
        }
        if name == "uploadfile" {
            file = Some(bytes);
        }
    }
    file.ok_or_else(|| ApiError::invalid("uploadfile", "the multipart body has no part named uploadfile"))
}

#[utoipa::path(tag = "kfp", params(UploadQuery), responses((status = 200, body = schema::V2beta1Pipeline)), security(("bearer" = [])))]
#[post("/apis/v2beta1/pipelines/upload")]
async fn upload_pipeline(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<UploadQuery>,
    form: actix_multipart::Multipart,
) -> Reply {
    let bytes = upload_file(&state, form).await?;
    let pkg = ir::parse_package(&bytes).map_err(PipelineError::from)?;
    let q = query.into_inner();
    let req = NewPipeline {
        display_name: q.display_name.or(q.name),
        description: q.description,
        namespace: q.namespace,
    };
    ok(api::create_pipeline(core(&state)?, &caller.0, req, Some(pkg)).await?)
}

#[utoipa::path(tag = "kfp", params(UploadQuery), responses((status = 200, body = schema::V2beta1PipelineVersion)), security(("bearer" = [])))]
#[post("/apis/v2beta1/pipelines/upload_version")]
async fn upload_version(
    caller: Caller,
    state: web::Data<AppState>,
    query: web::Query<UploadQuery>,
    form: actix_multipart::Multipart,
) -> Reply {
    let q = query.into_inner();
    let pipeline_id = q
        .pipelineid
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::invalid("pipelineid", "the query needs pipelineid"))?;
    let bytes = upload_file(&state, form).await?;
    let pkg = ir::parse_package(&bytes).map_err(PipelineError::from)?;
    let name = q.display_name.or(q.name);
    ok(api::create_version(core(&state)?, &caller.0, &pipeline_id, name, q.description, pkg).await?)
}

#[utoipa::path(tag = "kfp", params(ListQuery), responses((status = 200, body = schema::V2beta1ListPipelinesResponse), (status = 404, description = "The experiment the query names does not exist", content_type = "application/problem+json", body = super::errors::Problem), (status = 422, description = "A query parameter is invalid: a page_token this server did not issue, a filter that is not KFP filter JSON, a namespace that is not a valid name (the detail names it)", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[get("/apis/v2beta1/pipelines")]
async fn list_pipelines(caller: Caller, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Reply {
    ok(api::list_pipelines(core(&state)?, &caller.0, &q).await?)
}

#[utoipa::path(tag = "kfp", params(("name" = String, Path), ("namespace" = Option<String>, Query)), responses((status = 200, body = schema::V2beta1Pipeline)), security(("bearer" = [])))]
#[get("/apis/v2beta1/pipelines/names/{name}")]
async fn get_pipeline_by_name(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Reply {
    ok(api::get_pipeline_by_name(core(&state)?, &caller.0, q.namespace.as_deref(), &name).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path)), responses((status = 200, body = schema::V2beta1Pipeline)), security(("bearer" = [])))]
#[get("/apis/v2beta1/pipelines/{pipeline_id}")]
async fn get_pipeline(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::get_pipeline(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[delete("/apis/v2beta1/pipelines/{pipeline_id}")]
async fn delete_pipeline(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::delete_pipeline(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path)), request_body = schema::V2beta1PipelineVersion, responses((status = 200, body = schema::V2beta1PipelineVersion)), security(("bearer" = [])))]
#[post("/apis/v2beta1/pipelines/{pipeline_id}/versions")]
async fn create_version(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    payload: web::Payload,
) -> Reply {
    let body = json_object(&state, payload, false).await?;
    schema::check_pipeline_version(&body).map_err(PipelineError::from)?;
    let spec = body
        .get("pipeline_spec")
        .filter(|v| !v.is_null())
        .ok_or_else(|| ApiError::invalid("pipeline_spec", "a version needs pipeline_spec"))?;
    let pkg = ir::from_api(spec).map_err(PipelineError::from)?;
    let name = body["display_name"]
        .as_str()
        .or(body["name"].as_str())
        .map(str::to_string);
    let description = body["description"].as_str().map(str::to_string);
    ok(api::create_version(core(&state)?, &caller.0, &id, name, description, pkg).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path), ListQuery), responses((status = 200, body = schema::V2beta1ListPipelineVersionsResponse)), security(("bearer" = [])))]
#[get("/apis/v2beta1/pipelines/{pipeline_id}/versions")]
async fn list_versions(
    caller: Caller,
    state: web::Data<AppState>,
    id: web::Path<String>,
    q: web::Query<ListQuery>,
) -> Reply {
    ok(api::list_versions(core(&state)?, &caller.0, &id, &q).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path), ("pipeline_version_id" = String, Path)), responses((status = 200, body = schema::V2beta1PipelineVersion)), security(("bearer" = [])))]
#[get("/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}")]
async fn get_version(caller: Caller, state: web::Data<AppState>, path: web::Path<(String, String)>) -> Reply {
    let (p, v) = path.into_inner();
    ok(api::get_version(core(&state)?, &caller.0, &p, &v).await?)
}

#[utoipa::path(tag = "kfp", params(("pipeline_id" = String, Path), ("pipeline_version_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[delete("/apis/v2beta1/pipelines/{pipeline_id}/versions/{pipeline_version_id}")]
async fn delete_version(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (p, v) = path.into_inner();
    ok(api::delete_version(core(&state)?, &caller.0, &p, &v).await?)
}

// --------------------------------------------------------------------------- experiments

#[utoipa::path(tag = "kfp", request_body = schema::V2beta1Experiment, responses((status = 200, body = schema::V2beta1Experiment)), security(("bearer" = [])))]
#[post("/apis/v2beta1/experiments")]
async fn create_experiment(caller: Caller, state: web::Data<AppState>, payload: web::Payload) -> Reply {
    let body = json_object(&state, payload, false).await?;
    ok(api::create_experiment(core(&state)?, &caller.0, &body).await?)
}

#[utoipa::path(tag = "kfp", params(ListQuery), responses((status = 200, body = schema::V2beta1ListExperimentsResponse), (status = 404, description = "The experiment the query names does not exist", content_type = "application/problem+json", body = super::errors::Problem), (status = 422, description = "A query parameter is invalid: a page_token this server did not issue, a filter that is not KFP filter JSON, a namespace that is not a valid name (the detail names it)", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[get("/apis/v2beta1/experiments")]
async fn list_experiments(caller: Caller, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Reply {
    ok(api::list_experiments(core(&state)?, &caller.0, &q).await?)
}

#[utoipa::path(tag = "kfp", params(("experiment_id" = String, Path)), responses((status = 200, body = schema::V2beta1Experiment)), security(("bearer" = [])))]
#[get("/apis/v2beta1/experiments/{experiment_id}")]
async fn get_experiment(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::get_experiment(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("experiment_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[delete("/apis/v2beta1/experiments/{experiment_id}")]
async fn delete_experiment(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::delete_experiment(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("experiment_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/experiments/{experiment_id}:archive")]
async fn archive_experiment(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_experiment_storage(core(&state)?, &caller.0, &id, true).await?)
}

#[utoipa::path(tag = "kfp", params(("experiment_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/experiments/{experiment_id}:unarchive")]
async fn unarchive_experiment(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_experiment_storage(core(&state)?, &caller.0, &id, false).await?)
}

// ---------------------------------------------------------------------------------- runs

#[utoipa::path(tag = "kfp", request_body = schema::V2beta1Run, responses((status = 200, body = schema::V2beta1Run), (status = 404, description = "The experiment or pipeline version the body names does not exist", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[post("/apis/v2beta1/runs")]
async fn create_run(caller: Caller, state: web::Data<AppState>, payload: web::Payload) -> Reply {
    let body = json_object(&state, payload, false).await?;
    ok(api::create_run(core(&state)?, &caller.0, &body).await?)
}

#[utoipa::path(tag = "kfp", params(ListQuery), responses((status = 200, body = schema::V2beta1ListRunsResponse), (status = 404, description = "The experiment the query names does not exist", content_type = "application/problem+json", body = super::errors::Problem), (status = 422, description = "A query parameter is invalid: a page_token this server did not issue, a filter that is not KFP filter JSON, a namespace that is not a valid name (the detail names it)", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[get("/apis/v2beta1/runs")]
async fn list_runs(caller: Caller, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Reply {
    ok(api::list_runs(core(&state)?, &caller.0, &q).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::V2beta1Run)), security(("bearer" = [])))]
#[get("/apis/v2beta1/runs/{run_id}")]
async fn get_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::get_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[delete("/apis/v2beta1/runs/{run_id}")]
async fn delete_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::delete_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/runs/{run_id}:terminate")]
async fn terminate_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::terminate_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/runs/{run_id}:retry")]
async fn retry_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::retry_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/runs/{run_id}:archive")]
async fn archive_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_run_storage(core(&state)?, &caller.0, &id, true).await?)
}

#[utoipa::path(tag = "kfp", params(("run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/runs/{run_id}:unarchive")]
async fn unarchive_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_run_storage(core(&state)?, &caller.0, &id, false).await?)
}

// ------------------------------------------------------------------------ recurring runs

#[utoipa::path(tag = "kfp", request_body = schema::V2beta1RecurringRun, responses((status = 200, body = schema::V2beta1RecurringRun), (status = 404, description = "The experiment or pipeline version the body names does not exist", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[post("/apis/v2beta1/recurringruns")]
async fn create_recurring_run(caller: Caller, state: web::Data<AppState>, payload: web::Payload) -> Reply {
    let body = json_object(&state, payload, false).await?;
    ok(api::create_recurring_run(core(&state)?, &caller.0, &body).await?)
}

#[utoipa::path(tag = "kfp", params(ListQuery), responses((status = 200, body = schema::V2beta1ListRecurringRunsResponse), (status = 404, description = "The experiment the query names does not exist", content_type = "application/problem+json", body = super::errors::Problem), (status = 422, description = "A query parameter is invalid: a page_token this server did not issue, a filter that is not KFP filter JSON, a namespace that is not a valid name (the detail names it)", content_type = "application/problem+json", body = super::errors::Problem)), security(("bearer" = [])))]
#[get("/apis/v2beta1/recurringruns")]
async fn list_recurring_runs(caller: Caller, state: web::Data<AppState>, q: web::Query<ListQuery>) -> Reply {
    ok(api::list_recurring_runs(core(&state)?, &caller.0, &q).await?)
}

#[utoipa::path(tag = "kfp", params(("recurring_run_id" = String, Path)), responses((status = 200, body = schema::V2beta1RecurringRun)), security(("bearer" = [])))]
#[get("/apis/v2beta1/recurringruns/{recurring_run_id}")]
async fn get_recurring_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::get_recurring_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("recurring_run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[delete("/apis/v2beta1/recurringruns/{recurring_run_id}")]
async fn delete_recurring_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::delete_recurring_run(core(&state)?, &caller.0, &id).await?)
}

#[utoipa::path(tag = "kfp", params(("recurring_run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/recurringruns/{recurring_run_id}:enable")]
async fn enable_recurring_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_recurring_mode(core(&state)?, &caller.0, &id, true).await?)
}

#[utoipa::path(tag = "kfp", params(("recurring_run_id" = String, Path)), responses((status = 200, body = schema::ProtobufEmpty)), security(("bearer" = [])))]
#[post("/apis/v2beta1/recurringruns/{recurring_run_id}:disable")]
async fn disable_recurring_run(caller: Caller, state: web::Data<AppState>, id: web::Path<String>) -> Reply {
    ok(api::set_recurring_mode(core(&state)?, &caller.0, &id, false).await?)
}

// ------------------------------------------------------------- Hearth: what tasks produced

#[utoipa::path(operation_id = "get_task_outputs", tag = "pipelines", params(("run_id" = String, Path), ("task_id" = String, Path)), responses((status = 200, body = schema::TaskOutputs, description = "The task's input and output parameter values and artifacts (with metadata)")), security(("bearer" = [])))]
#[get("/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/outputs")]
async fn task_outputs(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Reply {
    let (run, task) = path.into_inner();
    ok(api::task_outputs(core(&state)?, &caller.0, &run, &task).await?)
}

#[utoipa::path(operation_id = "read_task_logs", tag = "pipelines", params(("run_id" = String, Path), ("task_id" = String, Path)), responses((status = 200, content_type = "text/plain", body = String)), security(("bearer" = [])))]
#[get("/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/logs")]
async fn task_logs(caller: Caller, state: web::Data<AppState>, path: web::Path<(String, String)>) -> Reply {
    let (run, task) = path.into_inner();
    let bytes = api::task_log(core(&state)?, &caller.0, &run, &task).await?;
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .body(bytes))
}

#[derive(Deserialize, utoipa::IntoParams)]
struct ArtifactQuery {
    /// A file inside a directory artifact, relative to it.
    path: Option<String>,
}

#[utoipa::path(tag = "pipelines", params(("run_id" = String, Path), ("task_id" = String, Path), ("name" = String, Path), ArtifactQuery), responses((status = 200, content_type = "application/octet-stream", body = Vec<u8>)), security(("bearer" = [])))]
#[get("/hearth/v1/pipelines/runs/{run_id}/tasks/{task_id}/artifacts/{name}")]
async fn download_artifact(
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String, String)>,
    q: web::Query<ArtifactQuery>,
) -> Reply {
    let (run, task, name) = path.into_inner();
    let file = api::artifact_file(core(&state)?, &caller.0, &run, &task, &name, q.path.as_deref()).await?;
    let bytes = std::fs::read(&file).map_err(|e| ApiError::NotFound(format!("artifact file: {e}")))?;
    Ok(HttpResponse::Ok()
        .content_type("application/octet-stream")
        .body(bytes))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(healthz)
        .service(upload_pipeline)
        .service(upload_version)
        .service(create_pipeline)
        .service(list_pipelines)
        .service(get_pipeline_by_name)
        .service(get_pipeline)
        .service(delete_pipeline)
        .service(create_version)
        .service(list_versions)
        .service(get_version)
        .service(delete_version)
        .service(create_experiment)
        .service(list_experiments)
        .service(archive_experiment)
        .service(unarchive_experiment)
        .service(get_experiment)
        .service(delete_experiment)
        .service(create_run)
        .service(list_runs)
        .service(terminate_run)
        .service(retry_run)
        .service(archive_run)
        .service(unarchive_run)
        .service(get_run)
        .service(delete_run)
        .service(create_recurring_run)
        .service(list_recurring_runs)
        .service(enable_recurring_run)
        .service(disable_recurring_run)
        .service(get_recurring_run)
        .service(delete_recurring_run)
        .service(task_outputs)
        .service(task_logs)
        .service(download_artifact);
}
