//! Probes, version, node facts and metrics.

use actix_web::{get, web, HttpMessage, HttpRequest, HttpResponse};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;
use crate::gpu::GpuInventory;
use crate::health::ComponentStatus;
use crate::node::HostFacts;

#[derive(Serialize, ToSchema)]
pub struct Liveness {
    pub status: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct Readiness {
    pub ready: bool,
    pub components: Vec<ComponentStatus>,
}

/// Hearth's own version (`GET /hearth/v1/version`). Not `VersionInfo`: that name is
/// Kubernetes' `version.Info` at `/version`, and OpenAPI schemas share one namespace.
#[derive(Serialize, ToSchema)]
pub struct HearthVersion {
    pub version: &'static str,
    pub git_commit: &'static str,
    pub api_version: &'static str,
}

#[derive(Serialize, ToSchema)]
pub struct K3sState {
    /// `disabled` unless the daemon runs with `--runtime k3s`; then the supervisor's
    /// phase: `starting`, `waiting-for-api`, `waiting-for-node`, `waiting-for-gpus`,
    /// `ready`, `restarting` or `stopped`.
    pub state: String,
    pub detail: String,
    /// How k3s last died or failed to start, if it has.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
    /// Times k3s was restarted since the daemon started.
    pub restarts: u32,
}

#[derive(Serialize, ToSchema)]
pub struct NodeInfo {
    #[serde(flatten)]
    pub host: HostFacts,
    pub data_dir: String,
    /// The workload runtime backend: `process`, `docker` or `k3s`.
    pub runtime: String,
    /// Whether CPU/memory limits are enforced, and if not, why.
    pub limits: String,
    /// Whether the runtime can take workloads now (the Docker socket answers, ...).
    pub runtime_available: bool,
    /// Why it cannot, when it cannot: workloads stay pending with this reason.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub runtime_reason: Option<String>,
    pub runtime_capabilities: crate::runtime::Capabilities,
    pub gpus: GpuInventory,
    pub k3s: K3sState,
    pub isolation: IsolationState,
}

/// Whether namespaces' workloads run as Unix users of their own (see README,
/// "Isolation and security").
#[derive(Serialize, ToSchema)]
pub struct IsolationState {
    /// `true` when the daemon runs as root and each namespace has its own Unix user;
    /// `false` in single-user mode, where namespaces share one user and are not
    /// isolated from each other.
    pub isolated: bool,
    pub detail: String,
}

/// Alive: the process answers HTTP.
#[utoipa::path(operation_id = "get_liveness", tag = "system", responses((status = 200, description = "The daemon is alive", body = Liveness)))]
#[get("/healthz")]
async fn healthz() -> web::Json<Liveness> {
    web::Json(Liveness { status: "ok" })
}

/// Ready: the store answers and every controller and the runtime are up.
#[utoipa::path(operation_id = "get_readiness", 
    tag = "system",
    responses(
        (status = 200, description = "Ready", body = Readiness),
        (status = 503, description = "Not ready; `detail` lists why", body = super::errors::Problem, content_type = "application/problem+json")
    )
)]
#[get("/readyz")]
async fn readyz(state: web::Data<AppState>) -> Result<web::Json<Readiness>, ApiError> {
    match state.store.ping().await {
        Ok(()) => state.health.set("store", true, "open"),
        Err(e) => state.health.set("store", false, e.to_string()),
    }
    let components = state.health.components();
    if state.health.all_ready() {
        return Ok(web::Json(Readiness {
            ready: true,
            components,
        }));
    }
    let reasons: Vec<String> = components
        .iter()
        .filter(|c| !c.ready)
        .map(|c| format!("{}: {}", c.name, c.detail))
        .collect();
    Err(ApiError::Unavailable(format!(
        "not ready: {}",
        reasons.join("; ")
    )))
}

#[utoipa::path(tag = "system", operation_id = "get_hearth_version", responses((status = 200, body = HearthVersion)), security(("bearer" = [])))]
#[get("/hearth/v1/version")]
async fn version(_caller: Caller) -> web::Json<HearthVersion> {
    web::Json(HearthVersion {
        version: env!("CARGO_PKG_VERSION"),
        git_commit: env!("HEARTH_GIT_COMMIT"),
        api_version: "v1",
    })
}

/// This machine: CPUs, memory, disk of the data dir, runtime, GPUs and k3s.
#[utoipa::path(operation_id = "get_node", tag = "system", responses((status = 200, body = NodeInfo)), security(("bearer" = [])))]
#[get("/hearth/v1/node")]
async fn node(_caller: Caller, state: web::Data<AppState>) -> web::Json<NodeInfo> {
    let data_dir = state.config.data_dir.clone();
    let host = web::block(move || crate::node::host_facts(&data_dir))
        .await
        .unwrap_or_else(|_| crate::node::host_facts(std::path::Path::new("/")));
    let k3s = match &state.k3s {
        Some(handle) => {
            let status = handle.get();
            K3sState {
                state: serde_json::to_value(status.phase)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_string))
                    .unwrap_or_default(),
                detail: status.detail,
                last_error: status.last_error,
                restarts: status.restarts,
            }
        }
        None => K3sState {
            state: "disabled".into(),
            detail: "not used: the runtime is not k3s".into(),
            last_error: None,
            restarts: 0,
        },
    };
    web::Json(NodeInfo {
        host,
        data_dir: state.config.data_dir.display().to_string(),
        runtime: state.config.runtime.as_str().to_string(),
        limits: state.scheduler.runtime().limits_note(),
        runtime_available: state.scheduler.runtime().availability().is_ok(),
        runtime_reason: state.scheduler.runtime().availability().err(),
        runtime_capabilities: state.scheduler.runtime().capabilities(),
        gpus: state.gpus.snapshot(),
        k3s,
        isolation: IsolationState {
            isolated: crate::runtime::identity::global().isolated(),
            detail: crate::runtime::identity::global().describe(),
        },
    })
}

/// How a Kubernetes client reaches this daemon's HTTPS API: what `hearth login` puts in
/// the kubeconfig it writes (the token is the caller's own).
#[derive(Serialize, ToSchema)]
pub struct ClusterInfo {
    /// `https://host:port` of the TLS listener as seen on this host.
    pub server: String,
    /// The TLS listener's port, for a client that reaches this host by another name.
    pub tls_port: u16,
    /// Hearth's CA certificate, PEM: what `certificate-authority-data` holds.
    pub certificate_authority: String,
}

/// The HTTPS address and CA a kubeconfig for this daemon needs.
#[utoipa::path(
    tag = "system",
    operation_id = "get_cluster_info",
    responses((status = 200, body = ClusterInfo)),
    security(("bearer" = []))
)]
#[get("/hearth/v1/cluster")]
async fn cluster(_caller: Caller, state: web::Data<AppState>) -> Result<web::Json<ClusterInfo>, ApiError> {
    let data_dir = state.config.data_dir.clone();
    let configured = state.config.tls_listen;
    let read = web::block(move || {
        let ca = std::fs::read_to_string(crate::tls::dir(&data_dir).join("ca.crt"));
        // The bound address (port 0 in tests) is in the address file, written once
        // every listener is bound.
        let bound = std::fs::read_to_string(data_dir.join("hearth.addr"))
            .ok()
            .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
            .and_then(|addr| {
                addr["tls"]
                    .as_str()
                    .and_then(|a| a.parse::<std::net::SocketAddr>().ok())
            });
        (ca, bound)
    })
    .await
    .map_err(|e| ApiError::Internal(format!("reading the CA: {e}")))?;
    let (ca, bound) = read;
    let ca = ca.map_err(|e| ApiError::Unavailable(format!("the CA is not readable yet: {e}")))?;
    let addr = bound.unwrap_or(configured);
    Ok(web::Json(ClusterInfo {
        server: crate::kubeconfig::server_url(addr),
        tls_port: addr.port(),
        certificate_authority: ca,
    }))
}

/// Prometheus metrics in the OpenMetrics text format. A user sees the node-wide series
/// and those of their own namespace; an admin, or anyone when `metrics.public` is set
/// (a Prometheus scraping this host), sees every namespace's.
#[utoipa::path(operation_id = "get_metrics", 
    tag = "system",
    responses((status = 200, description = "OpenMetrics text", body = String, content_type = "application/openmetrics-text")),
    security(("bearer" = []))
)]
#[get("/metrics")]
async fn metrics(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    // No principal only when `metrics.public` let the request through unauthenticated.
    let caller = req.extensions().get::<crate::auth::Principal>().cloned();
    let text = match caller {
        Some(caller) => state.metrics.render_for(|namespace| caller.can_access(namespace)),
        None => state.metrics.render(),
    };
    HttpResponse::Ok()
        .content_type("application/openmetrics-text; version=1.0.0; charset=utf-8")
        .body(text)
}

/// The workload queue: what runs, what waits and why, and the node's capacity.
/// Users see only their own namespace's entries.
#[utoipa::path(operation_id = "get_queue", tag = "system", responses((status = 200, body = crate::scheduler::QueueSummary)))]
#[get("/hearth/v1/queue")]
async fn queue(
    caller: Caller,
    state: web::Data<AppState>,
) -> Result<web::Json<crate::scheduler::QueueSummary>, ApiError> {
    let mut summary = state.scheduler.summary().await?;
    summary.items.retain(|item| caller.0.can_access(&item.namespace));
    Ok(web::Json(summary))
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(healthz)
        .service(readyz)
        .service(version)
        .service(node)
        .service(cluster)
        .service(metrics)
        .service(queue);
}
