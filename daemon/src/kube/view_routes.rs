//! The paths of the read-only views ([`super::views`]): core/v1 namespaces, pods
//! (with `pods/{name}/log`) and nodes, and KServe's `clusterservingruntimes`. Lists
//! and watches go through the generic [`handlers::list`]; operation ids are the
//! Kubernetes API's own.

use actix_web::{get, web, HttpResponse};
use serde::Deserialize;
use utoipa::IntoParams;

use super::handlers::{self, Raw, ResourceList};
use super::kinds::{KindDef, CLUSTER_SERVING_RUNTIME, EVENT, NAMESPACE, NODE, POD};
use super::params::ListParams;
use super::views::{self, View};
use crate::http::auth::Caller;
use crate::http::errors::ApiError;
use crate::http::scope::Namespaced;
use crate::http::AppState;

async fn read(
    kind: &'static KindDef,
    view: View,
    state: &AppState,
    namespace: Option<&str>,
    name: &str,
    caller: &crate::auth::Principal,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(views::read(kind, view, state, namespace, name, caller).await?))
}

/// List (or watch) the caller's namespaces (every namespace for an admin).
#[utoipa::path(tag = "kubernetes", operation_id = "listNamespace", params(ListParams),
    responses((status = 200, body = ResourceList)))]
#[get("/api/v1/namespaces")]
async fn list_namespaces(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&NAMESPACE, &state, None, caller.0, &raw).await
}

/// Read a namespace.
#[utoipa::path(tag = "kubernetes", operation_id = "readNamespace", params(("name" = String, Path)),
    responses((status = 200, description = "Namespace", body = crate::kube::upstream_schema::V1Namespace)))]
#[get("/api/v1/namespaces/{name}")]
async fn read_namespace(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    read(&NAMESPACE, View::Namespace, &state, None, &name, &caller.0).await
}

/// List (or watch) the namespace's pods: one per workload (Job attempt, pipeline
/// step, serving replica).
#[utoipa::path(tag = "kubernetes", operation_id = "listNamespacedPod",
    params(("namespace" = String, Path), ListParams), responses((status = 200, body = ResourceList)))]
#[get("/api/v1/namespaces/{namespace}/pods")]
async fn list_pods(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&POD, &state, Some(scope.namespace), caller.0, &raw).await
}

/// List (or watch) the pods of every namespace the caller may see.
#[utoipa::path(tag = "kubernetes", operation_id = "listPodForAllNamespaces", params(ListParams),
    responses((status = 200, body = ResourceList)))]
#[get("/api/v1/pods")]
async fn list_all_pods(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&POD, &state, None, caller.0, &raw).await
}

/// Read a pod.
#[utoipa::path(tag = "kubernetes", operation_id = "readNamespacedPod",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "Pod", body = crate::kube::upstream_schema::V1Pod)))]
#[get("/api/v1/namespaces/{namespace}/pods/{name}")]
async fn read_pod(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    read(
        &POD,
        View::Pod,
        &state,
        Some(&scope.namespace),
        &path.1,
        &caller.0,
    )
    .await
}

/// `PodLogOptions` as documented for OpenAPI; read from the raw query.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the parameters for OpenAPI; they are read from the raw query"
)]
pub struct PodLogParams {
    /// The container (each pod has one, `main`).
    container: Option<String>,
    /// Stream the log until the workload ends.
    follow: Option<bool>,
    /// Only the last lines.
    #[serde(rename = "tailLines")]
    #[param(rename = "tailLines", minimum = 0, maximum = 100000000)]
    tail_lines: Option<u64>,
    /// Each line prefixed with the time it was written (RFC3339Nano) and a space.
    timestamps: Option<bool>,
    /// Only lines written in the last this many seconds.
    #[serde(rename = "sinceSeconds")]
    #[param(rename = "sinceSeconds", minimum = 1, maximum = 2147483647)]
    since_seconds: Option<u64>,
    /// Only lines written at or after this RFC 3339 time (not with `sinceSeconds`).
    #[serde(rename = "sinceTime")]
    #[param(rename = "sinceTime", format = DateTime)]
    since_time: Option<String>,
    /// At most this many bytes of output (the last line may be cut).
    #[serde(rename = "limitBytes")]
    #[param(rename = "limitBytes", minimum = 1, maximum = 9223372036854775807_u64)]
    limit_bytes: Option<u64>,
    /// The log of the previous attempt in the same pod (a Job's restart under
    /// `restartPolicy: OnFailure`, a pipeline task's retry).
    previous: Option<bool>,
    /// Accepted and without effect.
    pretty: Option<String>,
}

/// The pod's output (stdout and stderr interleaved), as the kubelet answers
/// `pods/{name}/log`; `follow=true` streams it until the workload ends. Line times
/// are those the workload's shim recorded as it wrote them; a log written by an
/// earlier Hearth without them refuses `timestamps` and the since options.
#[utoipa::path(tag = "kubernetes", operation_id = "readNamespacedPodLog",
    params(("namespace" = String, Path), ("name" = String, Path), PodLogParams),
    responses((status = 200, description = "Log text", body = String, content_type = "text/plain")))]
#[get("/api/v1/namespaces/{namespace}/pods/{name}/log")]
async fn pod_log(
    scope: Namespaced,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    let options = views::LogOptions::parse(&raw)?;
    let mut record = views::workload_of(&state, &scope.namespace, &path.1).await?;
    if options.previous {
        record = views::previous_of(&state, &record, &path.1).await?;
    }
    let log = state.scheduler.log_of(&record).await;
    let scheduler = state.scheduler.clone();
    let id = record.id.clone();
    let refresh = move || {
        let (scheduler, id) = (scheduler.clone(), id.clone());
        async move {
            match scheduler.get(&id).await {
                Ok(Some(record)) => Some(Some(scheduler.log_of(&record).await)),
                Ok(None) | Err(_) => None,
            }
        }
    };
    if options.per_line() {
        let lines = options.lines(crate::runtime::log_times::now_nanos());
        return super::pod_log::respond(log, lines, refresh).await;
    }
    Ok(crate::http::logs::respond(
        HttpResponse::Ok(),
        Some(log),
        options.tail_lines,
        options.follow,
        refresh,
    )
    .await)
}

/// List (or watch) the namespace's events (`fieldSelector` on `involvedObject.*`
/// finds one object's, as `kubectl describe` does).
#[utoipa::path(tag = "kubernetes", operation_id = "listNamespacedEvent",
    params(("namespace" = String, Path), ListParams), responses((status = 200, body = ResourceList)))]
#[get("/api/v1/namespaces/{namespace}/events")]
async fn list_events(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&EVENT, &state, Some(scope.namespace), caller.0, &raw).await
}

/// List (or watch) the events of every namespace the caller may see.
#[utoipa::path(tag = "kubernetes", operation_id = "listEventForAllNamespaces", params(ListParams),
    responses((status = 200, body = ResourceList)))]
#[get("/api/v1/events")]
async fn list_all_events(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&EVENT, &state, None, caller.0, &raw).await
}

/// Read an event.
#[utoipa::path(tag = "kubernetes", operation_id = "readNamespacedEvent",
    params(("namespace" = String, Path), ("name" = String, Path)),
    responses((status = 200, description = "Event", body = crate::kube::upstream_schema::CoreV1Event)))]
#[get("/api/v1/namespaces/{namespace}/events/{name}")]
async fn read_event(
    scope: Namespaced,
    caller: Caller,
    state: web::Data<AppState>,
    path: web::Path<(String, String)>,
) -> Result<HttpResponse, ApiError> {
    read(
        &EVENT,
        View::Event,
        &state,
        Some(&scope.namespace),
        &path.1,
        &caller.0,
    )
    .await
}

/// List (or watch) the nodes: this host.
#[utoipa::path(tag = "kubernetes", operation_id = "listNode", params(ListParams),
    responses((status = 200, body = ResourceList)))]
#[get("/api/v1/nodes")]
async fn list_nodes(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&NODE, &state, None, caller.0, &raw).await
}

/// Read a node.
#[utoipa::path(tag = "kubernetes", operation_id = "readNode", params(("name" = String, Path)),
    responses((status = 200, description = "Node", body = crate::kube::upstream_schema::V1Node)))]
#[get("/api/v1/nodes/{name}")]
async fn read_node(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    read(&NODE, View::Node, &state, None, &name, &caller.0).await
}

/// List (or watch) the serving runtimes as KServe `ClusterServingRuntime`s.
#[utoipa::path(tag = "serving", operation_id = "listClusterServingRuntime", params(ListParams),
    responses((status = 200, body = ResourceList)))]
#[get("/apis/serving.kserve.io/v1alpha1/clusterservingruntimes")]
async fn list_runtimes(
    caller: Caller,
    state: web::Data<AppState>,
    raw: web::Query<Raw>,
) -> Result<HttpResponse, ApiError> {
    handlers::list(&CLUSTER_SERVING_RUNTIME, &state, None, caller.0, &raw).await
}

/// Read a `ClusterServingRuntime`.
#[utoipa::path(tag = "serving", operation_id = "readClusterServingRuntime", params(("name" = String, Path)),
    responses((status = 200, description = "ClusterServingRuntime", body = crate::kube::upstream_schema::V1alpha1ClusterServingRuntime)))]
#[get("/apis/serving.kserve.io/v1alpha1/clusterservingruntimes/{name}")]
async fn read_runtime(
    caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    read(
        &CLUSTER_SERVING_RUNTIME,
        View::ClusterServingRuntime,
        &state,
        None,
        &name,
        &caller.0,
    )
    .await
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(list_namespaces)
        .service(read_namespace)
        .service(list_pods)
        .service(list_all_pods)
        .service(read_pod)
        .service(pod_log)
        .service(list_events)
        .service(list_all_events)
        .service(read_event)
        .service(list_nodes)
        .service(read_node)
        .service(list_runtimes)
        .service(read_runtime);
}
