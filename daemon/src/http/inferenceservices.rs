//! KServe `InferenceService`: the document schema (for the generic paths of
//! `crate::kube`) and Hearth's own extras under
//! `/hearth/v1/namespaces/{namespace}/inferenceservices` (replicas and their logs).

use actix_web::{get, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::body::JsonBody;
use super::errors::ApiError;
use super::scope::NamespacedItem;
use super::AppState;
use crate::serving::invoke::{InferenceAnswer, InferenceRequest, InvokeError};
use crate::serving::isvc::IsvcError;
use crate::serving::service::{Component, Replica, ReplicaSelector, ServingError};

/// A `serving.kserve.io/v1beta1` InferenceService (JSON or YAML), answered with
/// `metadata` completed and `status` in KServe's shape.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct InferenceService(pub Value);

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
            ServingError::NoReplica(message) => ApiError::NotFound(message),
        }
    }
}

impl From<InvokeError> for ApiError {
    fn from(e: InvokeError) -> ApiError {
        match e {
            InvokeError::Serving(inner) => inner.into(),
            InvokeError::BodyRequired { .. } | InvokeError::BodyNotAllowed { .. } => {
                ApiError::invalid("body", e.to_string())
            }
            InvokeError::Explainer => ApiError::unsupported("explainer (:explain)", e.to_string()),
            InvokeError::Path(message) => ApiError::BadRequest(message),
            InvokeError::NotListening
            | InvokeError::Connect { .. }
            | InvokeError::Http(_)
            | InvokeError::AnswerTooLarge { .. } => ApiError::Unavailable(e.to_string()),
        }
    }
}

#[derive(Serialize, ToSchema)]
pub struct ReplicaList {
    pub items: Vec<Replica>,
}

/// The replicas of an InferenceService, running and ended (`kubectl get pods` for it).
#[utoipa::path(operation_id = "list_inference_service_replicas", tag = "serving", params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = ReplicaList)), security(("bearer" = [])))]
#[get("/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/replicas")]
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
#[utoipa::path(operation_id = "read_inference_service_logs", 
    tag = "serving",
    params(("namespace" = String, Path), ("name" = String, Path), ReplicaLogQuery),
    responses((status = 200, description = "Log text", body = String, content_type = "text/plain")),
    security(("bearer" = []))
)]
#[get("/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/logs")]
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

/// One KServe V1 or V2 call to the service through the data plane, made as the caller
/// (the web page's try-it form: its CSP lets it call this origin only). The answer
/// carries the data plane's status, revision, time and body; a model's or the data
/// plane's own error is such an answer, not an error of this route.
#[utoipa::path(operation_id = "call_inference_service",
    tag = "serving",
    params(("namespace" = String, Path), ("name" = String, Path)),
    request_body = InferenceRequest,
    responses((status = 200, body = InferenceAnswer)),
    security(("bearer" = []))
)]
#[post("/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/inference")]
async fn inference(
    req: HttpRequest,
    item: NamespacedItem,
    state: web::Data<AppState>,
    body: JsonBody<InferenceRequest>,
) -> Result<web::Json<InferenceAnswer>, ApiError> {
    // The caller's own token: presented with this request, or behind its session.
    let credential = super::auth::token_in(req.headers()).or_else(|| {
        super::session::cookie_value(req.headers()).and_then(|secret| state.sessions.token(&secret))
    });
    let answer = crate::serving::invoke::invoke(
        &state.serving,
        &state.data_plane,
        (&item.namespace, &item.name),
        body.0,
        credential.as_deref(),
        state.config.max_body_bytes,
    )
    .await?;
    Ok(web::Json(answer))
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(replicas).service(replica_logs).service(inference);
}
