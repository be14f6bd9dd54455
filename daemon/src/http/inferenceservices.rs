//! KServe `InferenceService` documents at Kubernetes-style paths. Thin handlers:
//! parse, authorize, call `serving::service`, map the error.

use actix_web::{delete, get, patch, post, put, web, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::body::Document;
use super::errors::ApiError;
use super::scope::{Namespaced, NamespacedItem};
use super::AppState;
use crate::serving::isvc::IsvcError;
use crate::serving::service::{Component, Replica, ReplicaSelector, ServingError};

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
            ServingError::Scheduler(inner) => inner.into(),
            ServingError::PatchNotObject => ApiError::BadRequest(e.to_string()),
            ServingError::NoReplica(message) => ApiError::NotFound(message),
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

#[derive(Serialize, ToSchema)]
pub struct ReplicaList {
    pub items: Vec<Replica>,
}

/// The replicas of an InferenceService, running and ended (`kubectl get pods` for it).
#[utoipa::path(tag = "serving", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = ReplicaList)), security(("bearer" = [])))]
#[get("/api/v1/namespaces/{namespace}/inferenceservices/{name}/replicas")]
async fn replicas(
    item: NamespacedItem,
    state: web::Data<AppState>,
) -> Result<web::Json<ReplicaList>, ApiError> {
    let NamespacedItem { namespace, name } = item;
    Ok(web::Json(ReplicaList {
        items: state.serving.replicas(&namespace, &name).await?,
    }))
}

#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ReplicaLogQuery {
    /// `predictor` (the default) or `transformer`.
    component: Option<Component>,
    /// Only replicas of this revision (e.g. `iris-predictor-00002`).
    revision: Option<String>,
    /// This replica (a name from `.../replicas`); else the newest running one.
    replica: Option<String>,
    /// Keep the connection open and stream new output until the replica ends.
    #[serde(default)]
    follow: bool,
    /// Only the last N lines.
    #[param(maximum = 100000000)]
    tail: Option<usize>,
}

/// A replica's output, stdout and stderr interleaved (`kubectl logs` for it); the
/// replica's name is in `x-hearth-replica`.
#[utoipa::path(
    tag = "serving",
    params(("namespace" = String, Path), ("name" = String, Path), ReplicaLogQuery),
    responses((status = 200, description = "Log text", body = String, content_type = "text/plain")),
    security(("bearer" = []))
)]
#[get("/api/v1/namespaces/{namespace}/inferenceservices/{name}/logs")]
async fn replica_logs(
    item: NamespacedItem,
    state: web::Data<AppState>,
    query: web::Query<ReplicaLogQuery>,
) -> Result<HttpResponse, ApiError> {
    let NamespacedItem { namespace, name } = item;
    let query = query.into_inner();
    let select = ReplicaSelector {
        component: query.component.unwrap_or_default(),
        revision: query.revision,
        replica: query.replica,
    };
    let (replica, log) = state.serving.replica_log(&namespace, &name, &select).await?;
    let mut builder = HttpResponse::Ok();
    builder.insert_header(("x-hearth-replica", replica.clone()));
    // Following sticks to the replica chosen now, as `kubectl logs -f` does.
    let services = state.serving.clone();
    let refresh = move || {
        let (services, namespace, name) = (services.clone(), namespace.clone(), name.clone());
        let select = ReplicaSelector {
            component: select.component,
            revision: None,
            replica: Some(replica.clone()),
        };
        async move {
            services
                .replica_log(&namespace, &name, &select)
                .await
                .ok()
                .map(|(_, log)| Some(log))
        }
    };
    Ok(super::logs::respond(builder, Some(log), query.tail, query.follow, refresh).await)
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(create)
        .service(list)
        .service(read)
        .service(replace)
        .service(merge)
        .service(remove)
        .service(replicas)
        .service(replica_logs);
}
