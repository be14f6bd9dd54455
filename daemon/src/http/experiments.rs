//! Katib `kubeflow.org/v1beta1`: the Experiment document schema (for the generic
//! paths of `crate::kube`), the read-only paths of Trials and Suggestions (made by
//! Hearth's experiment controller), and the mapping of tuning errors onto the API's.

use actix_web::{get, web, HttpResponse};
use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::ApiError;
use super::scope::{Namespaced, NamespacedItem};
use super::AppState;
use crate::kube::handlers::{self, Raw, ResourceList};
use crate::kube::kinds::{KindDef, SUGGESTION, TRIAL};
use crate::kube::params::ListParams;
use crate::tuning::TuningError;

impl From<TuningError> for ApiError {
    fn from(e: TuningError) -> ApiError {
        match e {
            TuningError::Field(f) => f.into(),
            TuningError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            TuningError::Store(s) => s.into(),
            TuningError::Job(j) => j.into(),
        }
    }
}

/// A Katib `kubeflow.org/v1beta1` Experiment (JSON or YAML), answered with `metadata`
/// completed, the spec as Katib's webhook defaults it, and `status` in Katib's shape.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Experiment(pub Value);

/// A Katib Trial or Suggestion, made by Hearth.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct KatibObject(pub Value);

async fn list(
    kind: &'static KindDef,
    state: &AppState,
    namespace: Option<String>,
    caller: Caller,
    raw: &Raw,
) -> Result<HttpResponse, ApiError> {
    handlers::list(kind, state, namespace, caller.0, raw).await
}

/// List (or watch) the namespace's Trials.
#[utoipa::path(tag = "tuning", operation_id = "listNamespacedTrial",
    params(("namespace" = String, Path), ListParams), responses((status = 200, body = ResourceList)))]
#[get("/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials")]
async fn list_trials(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    list(&TRIAL, &state, Some(scope.namespace), caller, &raw).await
}

/// List (or watch) the Trials of every namespace the caller may see.
#[utoipa::path(tag = "tuning", operation_id = "listTrialForAllNamespaces",
    params(ListParams), responses((status = 200, body = ResourceList)))]
#[get("/apis/kubeflow.org/v1beta1/trials")]
async fn list_all_trials(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    list(&TRIAL, &state, None, caller, &raw).await
}

/// Read a Trial.
#[utoipa::path(tag = "tuning", operation_id = "readNamespacedTrial",
    params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = KatibObject)))]
#[get("/apis/kubeflow.org/v1beta1/namespaces/{namespace}/trials/{name}")]
async fn read_trial(item: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    handlers::read(&TRIAL, &state, &item.namespace, &item.name).await
}

/// List (or watch) the namespace's Suggestions.
#[utoipa::path(tag = "tuning", operation_id = "listNamespacedSuggestion",
    params(("namespace" = String, Path), ListParams), responses((status = 200, body = ResourceList)))]
#[get("/apis/kubeflow.org/v1beta1/namespaces/{namespace}/suggestions")]
async fn list_suggestions(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    list(&SUGGESTION, &state, Some(scope.namespace), caller, &raw).await
}

/// List (or watch) the Suggestions of every namespace the caller may see.
#[utoipa::path(tag = "tuning", operation_id = "listSuggestionForAllNamespaces",
    params(ListParams), responses((status = 200, body = ResourceList)))]
#[get("/apis/kubeflow.org/v1beta1/suggestions")]
async fn list_all_suggestions(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    list(&SUGGESTION, &state, None, caller, &raw).await
}

/// Read a Suggestion.
#[utoipa::path(tag = "tuning", operation_id = "readNamespacedSuggestion",
    params(("namespace" = String, Path), ("name" = String, Path)), responses((status = 200, body = KatibObject)))]
#[get("/apis/kubeflow.org/v1beta1/namespaces/{namespace}/suggestions/{name}")]
async fn read_suggestion(item: NamespacedItem, state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    handlers::read(&SUGGESTION, &state, &item.namespace, &item.name).await
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(list_trials)
        .service(list_all_trials)
        .service(read_trial)
        .service(list_suggestions)
        .service(list_all_suggestions)
        .service(read_suggestion);
}
