//! Data-plane routes. Server-level health answers with JSON bodies (the `kserve`
//! client reads them); model routes answer 404 problem+json for models that are not
//! served.

use actix_web::{web, App, HttpRequest, HttpResponse, ResponseError};
use serde_json::json;

use crate::http::errors::ApiError;

async fn live() -> HttpResponse {
    HttpResponse::Ok().json(json!({"live": true}))
}

async fn ready() -> HttpResponse {
    HttpResponse::Ok().json(json!({"ready": true}))
}

async fn server_metadata() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "name": "hearth",
        "version": env!("CARGO_PKG_VERSION"),
        "extensions": ["binary_tensor_data"]
    }))
}

async fn unknown_model(req: HttpRequest) -> HttpResponse {
    ApiError::NotFound(format!("no model is served at {}", req.path())).error_response()
}

pub fn app() -> App<
    impl actix_web::dev::ServiceFactory<
        actix_web::dev::ServiceRequest,
        Config = (),
        Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
        Error = actix_web::Error,
        InitError = (),
    >,
> {
    App::new()
        .route("/v2/health/live", web::get().to(live))
        .route("/v2/health/ready", web::get().to(ready))
        .route("/v2", web::get().to(server_metadata))
        .route("/", web::get().to(live))
        .default_service(web::to(unknown_model))
}
