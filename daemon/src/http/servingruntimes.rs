//! The serving runtime table (Hearth's `ClusterServingRuntime`s), read-only: it is
//! built in and extended by the `[serving] runtimes` config.

use actix_web::{get, web};
use serde::Serialize;
use utoipa::ToSchema;

use super::auth::Caller;
use super::errors::ApiError;
use super::AppState;
use crate::serving::runtimes::ServingRuntime;

#[derive(Serialize, ToSchema)]
pub struct ServingRuntimeList {
    pub items: Vec<ServingRuntime>,
}

/// List the serving runtimes and the model formats and protocols each serves.
#[utoipa::path(operation_id = "list_serving_runtimes", tag = "serving", responses((status = 200, body = ServingRuntimeList)), security(("bearer" = [])))]
#[get("/hearth/v1/servingruntimes")]
async fn list(_caller: Caller, state: web::Data<AppState>) -> web::Json<ServingRuntimeList> {
    web::Json(ServingRuntimeList {
        items: state.serving.runtimes.all().to_vec(),
    })
}

/// Read one serving runtime.
#[utoipa::path(operation_id = "get_serving_runtime", tag = "serving", params(("name" = String, Path)), responses((status = 200, body = ServingRuntime)), security(("bearer" = [])))]
#[get("/hearth/v1/servingruntimes/{name}")]
async fn read(
    _caller: Caller,
    state: web::Data<AppState>,
    name: web::Path<String>,
) -> Result<web::Json<ServingRuntime>, ApiError> {
    state
        .serving
        .runtimes
        .get(&name)
        .cloned()
        .map(web::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no serving runtime named {name}")))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(list).service(read);
}
