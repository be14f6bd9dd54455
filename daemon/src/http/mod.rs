//! The actix application. Routes are declared once, with `utoipa-actix-web`, and the
//! same declaration yields the router and the OpenAPI document.

pub mod access;
pub mod auth;
pub mod body;
pub mod errors;
pub mod experiments;
pub mod inferenceservices;
pub mod jobs;
pub mod kfp;
pub mod kube_auth;
pub mod kube_protobuf;
pub mod logs;
pub mod middleware;
pub mod notebooks;
pub mod openapi;
pub mod scope;
pub mod servingruntimes;
pub mod session;
pub mod system;
pub mod web;

use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::ResourceDef;
use actix_web::http::Method;
use actix_web::{App, HttpRequest, HttpResponse, ResponseError};
use utoipa_actix_web::AppExt;

use crate::auth::Auth;
use crate::config::Config;
use crate::gpu::GpuProbe;
use crate::health::Health;
use crate::metrics::Metrics;
use crate::store::Store;
use errors::ApiError;

/// Everything a handler may reach. Cheap to clone: all fields are shared handles.
pub struct AppState {
    pub config: Arc<Config>,
    pub store: Store,
    pub auth: Auth,
    pub gpus: GpuProbe,
    pub health: Health,
    pub metrics: Arc<Metrics>,
    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    pub started: Instant,
    pub routes: Arc<RouteTable>,
    pub serving: crate::serving::service::Services,
    pub pipelines: crate::pipelines::api::Pipelines,
    pub scheduler: crate::scheduler::Scheduler,
    pub jobs: crate::jobs::Jobs,
    pub tuning: crate::tuning::Tuning,
    pub notebooks: crate::notebooks::Notebooks,
    pub sessions: session::Sessions,
    /// The serving data plane, for the try-it route that forwards to it.
    pub data_plane: Arc<crate::serving::dataplane::DataPlane>,
    /// The k3s supervisor's state with `--runtime k3s`.
    pub k3s: Option<crate::k3s::supervisor::StatusHandle>,
}

/// Every route pattern with its methods, to tell 405 from 404.
pub struct RouteTable {
    entries: Vec<(ResourceDef, Vec<Method>)>,
}

impl RouteTable {
    pub fn from_openapi(doc: &utoipa::openapi::OpenApi) -> RouteTable {
        let mut entries = Vec::new();
        for (path, item) in &doc.paths.paths {
            let mut methods = Vec::new();
            let ops = [
                (&item.get, Method::GET),
                (&item.put, Method::PUT),
                (&item.post, Method::POST),
                (&item.delete, Method::DELETE),
                (&item.patch, Method::PATCH),
                (&item.head, Method::HEAD),
            ];
            for (op, method) in ops {
                if op.is_some() {
                    methods.push(method);
                }
            }
            entries.push((ResourceDef::new(path.as_str()), methods));
        }
        entries.push((ResourceDef::new("/openapi.json"), vec![Method::GET]));
        entries.push((ResourceDef::new("/swagger-ui/{tail}*"), vec![Method::GET]));
        for path in web::ROUTES {
            entries.push((ResourceDef::new(*path), vec![Method::GET]));
        }
        // The notebook proxy takes every method; Jupyter answers for its own paths.
        entries.push((
            ResourceDef::new(crate::notebooks::proxy::ROUTE),
            [
                Method::GET,
                Method::PUT,
                Method::POST,
                Method::DELETE,
                Method::PATCH,
                Method::HEAD,
            ]
            .into(),
        ));
        RouteTable { entries }
    }

    /// Methods of the most specific pattern matching `path`: `/runs/{id}:terminate`
    /// beats `/runs/{id}`, whose `{id}` would also match `x:terminate`.
    fn allowed(&self, path: &str) -> Option<Vec<String>> {
        let literal = |def: &ResourceDef| def.pattern().map(literal_len).unwrap_or(0);
        let best = self
            .entries
            .iter()
            .filter(|(def, _)| def.is_match(path))
            .map(|(def, _)| literal(def))
            .max()?;
        let mut allowed: Vec<String> = self
            .entries
            .iter()
            .filter(|(def, _)| def.is_match(path) && literal(def) == best)
            .flat_map(|(_, methods)| methods.iter().map(|m| m.to_string()))
            .collect();
        allowed.sort();
        allowed.dedup();
        Some(allowed)
    }
}

/// Characters of a route pattern outside its `{...}` parameters.
fn literal_len(pattern: &str) -> usize {
    let mut depth = 0usize;
    pattern
        .chars()
        .filter(|c| {
            match c {
                '{' => depth += 1,
                '}' => depth = depth.saturating_sub(1),
                _ => return depth == 0,
            }
            false
        })
        .count()
}

async fn no_route(req: HttpRequest, state: actix_web::web::Data<AppState>) -> HttpResponse {
    let error = match state.routes.allowed(req.path()) {
        Some(allowed) => ApiError::MethodNotAllowed {
            method: req.method().to_string(),
            allowed,
        },
        None => ApiError::RouteNotFound {
            path: req.path().to_string(),
        },
    };
    error.error_response()
}

fn path_error(err: actix_web::error::PathError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad path parameter: {err}")).into()
}

fn query_error(err: actix_web::error::QueryPayloadError, _: &HttpRequest) -> actix_web::Error {
    ApiError::BadRequest(format!("bad query string: {err}")).into()
}

/// All API routes; `openapi` builds the document from the same function.
pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    system::routes(cfg);
    access::routes(cfg);
    inferenceservices::routes(cfg);
    servingruntimes::routes(cfg);
    kfp::routes(cfg);
    jobs::routes(cfg);
    experiments::routes(cfg);
    crate::kube::routes::routes(cfg);
    kube_auth::routes(cfg);
    session::routes(cfg);
}

/// Builds the application for one worker.
pub fn app(
    state: actix_web::web::Data<AppState>,
) -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .app_data(state)
        .app_data(actix_web::web::PathConfig::default().error_handler(path_error))
        .app_data(actix_web::web::QueryConfig::default().error_handler(query_error))
        .wrap(actix_web::middleware::from_fn(auth::authenticate))
        .wrap(actix_web::middleware::from_fn(middleware::observe))
        .wrap(actix_web::middleware::from_fn(crate::kube::table::tables))
        // Outermost: every problem+json on a Kubernetes path, the last-resort ones of
        // `observe` included, leaves as a Kubernetes `Status`.
        .wrap(actix_web::middleware::from_fn(
            crate::kube::status::kubernetes_errors,
        ))
        .into_utoipa_app()
        .configure(routes)
        // Swagger UI loads the document from `/openapi.json`, served once for all
        // workers by `openapi::serve_json`; the tree each worker collects is dropped.
        .openapi_service(|_| {
            utoipa_swagger_ui::SwaggerUi::new("/swagger-ui/{_:.*}")
                .config(utoipa_swagger_ui::Config::from("/openapi.json"))
        })
        .default_service(actix_web::web::to(no_route))
        .into_app()
        .route("/openapi.json", actix_web::web::get().to(openapi::serve_json))
        .configure(web::routes)
        .configure(crate::notebooks::proxy::routes)
}
