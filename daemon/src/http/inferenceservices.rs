//! KServe `InferenceService` documents at Kubernetes-style paths. Thin handlers:
//! parse, authorize, call `serving::service`, map the error.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::body::Document;
use super::errors::ApiError;
use super::scope::{Namespaced, NamespacedItem};
use super::AppState;
use crate::serving::isvc::IsvcError;
use crate::serving::service::ServingError;

/// A `serving.kserve.io/v1beta1` InferenceService (JSON or YAML), answered with
/// `metadata` completed and `status` in KServe's shape.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct InferenceService(pub Value);

#[derive(Serialize, ToSchema)]
pub struct InferenceServiceList {
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Value>,
}

impl From<ServingError> for ApiError {
    fn from(e: ServingError) -> ApiError {
        match e {
            ServingError::Isvc(IsvcError::RetiredApiVersion(version)) => ApiError::invalid(
                "apiVersion",
                format!("{version} is a retired apiVersion; send serving.kserve.io/v1beta1"),
            ),
            ServingError::Isvc(IsvcError::Invalid { field, detail }) => ApiError::invalid(field, detail),
            ServingError::Isvc(IsvcError::Unsupported { feature, detail }) => {
                ApiError::unsupported(feature, detail)
            }
            ServingError::Store(inner) => inner.into(),
            ServingError::PatchNotObject => ApiError::BadRequest(e.to_string()),
        }
    }
}

const PROBLEMS: &str = "application/problem+json";

/// Create an InferenceService. The path's namespace wins over `metadata.namespace`.
#[utoipa::path(
    tag = "serving",
    params(("namespace" = String, Path)),
    request_body(content((InferenceService = "application/json"), (InferenceService = "application/yaml"))),
    responses(
        (status = 201, body = InferenceService),
        (status = 422, description = "An invalid field, or a KServe feature Hearth does not serve (named in `feature`)", body = super::errors::Problem, content_type = PROBLEMS),
        (status = 409, description = "The name is taken", body = super::errors::Problem, content_type = PROBLEMS)
    ),
    security(("bearer" = []))
)]
#[post("/api/v1/namespaces/{namespace}/inferenceservices")]
async fn create(
    scope: Namespaced,
    state: web::Data<AppState>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let namespace = scope.namespace;
    let doc = state.serving.create(&namespace, body.single()?).await?;
    Ok(HttpResponse::Created().json(doc))
}

/// List the InferenceServices of a namespace.
#[utoipa::path(tag = "serving", params(("namespace" = String, Path)), responses((status = 200, body = InferenceServiceList)), security(("bearer" = [])))]
#[get("/api/v1/namespaces/{namespace}/inferenceservices")]
async fn list(
    scope: Namespaced,
    state: web::Data<AppState>,
) -> Result<web::Json<InferenceServiceList>, ApiError> {
    let namespace = scope.namespace;
    Ok(web::Json(InferenceServiceList {
        items: state.serving.list(&namespace).await?,
    }))
}

/// Read one InferenceService with its status.
#[utoipa::path(tag = "serving", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = InferenceService)), security(("bearer" = [])))]
#[get("/api/v1/namespaces/{namespace}/inferenceservices/{name}")]
async fn read(item: NamespacedItem, state: web::Data<AppState>) -> Result<web::Json<Value>, ApiError> {
    let NamespacedItem { namespace, name } = item;
    Ok(web::Json(state.serving.get(&namespace, &name).await?))
}

/// Replace the spec (and labels/annotations); a changed spec makes a new revision.
#[utoipa::path(
    tag = "serving",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body(content((InferenceService = "application/json"), (InferenceService = "application/yaml"))),
    responses((status = 200, body = InferenceService)),
    security(("bearer" = []))
)]
#[put("/api/v1/namespaces/{namespace}/inferenceservices/{name}")]
async fn replace(
    item: NamespacedItem,
    state: web::Data<AppState>,
    body: Document,
) -> Result<web::Json<Value>, ApiError> {
    let NamespacedItem { namespace, name } = item;
    Ok(web::Json(
        state.serving.replace(&namespace, &name, body.single()?).await?,
    ))
}

/// Change an InferenceService with a JSON merge patch (RFC 7386), e.g.
/// `{"spec": {"predictor": {"canaryTrafficPercent": null}}}` to promote a canary.
#[utoipa::path(
    tag = "serving",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body(content((Object = "application/merge-patch+json"), (Object = "application/json"))),
    responses((status = 200, body = InferenceService)),
    security(("bearer" = []))
)]
#[patch("/api/v1/namespaces/{namespace}/inferenceservices/{name}")]
async fn merge(
    item: NamespacedItem,
    state: web::Data<AppState>,
    body: Document,
) -> Result<web::Json<Value>, ApiError> {
    let NamespacedItem { namespace, name } = item;
    Ok(web::Json(
        state.serving.patch(&namespace, &name, body.single()?).await?,
    ))
}

/// Delete an InferenceService: its replicas are drained and stopped, then it is gone.
#[utoipa::path(tag = "serving", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = InferenceService)), security(("bearer" = [])))]
#[delete("/api/v1/namespaces/{namespace}/inferenceservices/{name}")]
async fn remove(item: NamespacedItem, state: web::Data<AppState>) -> Result<web::Json<Value>, ApiError> {
    let NamespacedItem { namespace, name } = item;
    Ok(web::Json(state.serving.delete(&namespace, &name).await?))
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(read)
        .service(replace)
        .service(merge)
        .service(remove);
}
