//! Authentication of every request but the open probes, before routing reaches a
//! handler; handlers take the `Caller` it leaves behind.

use std::future::{ready, Ready};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header;
use actix_web::middleware::Next;
use actix_web::{web, FromRequest, HttpMessage, HttpRequest, ResponseError};

use super::errors::ApiError;
use super::AppState;
use crate::auth::Principal;

/// Paths anyone may call: liveness and readiness probes, and Kubernetes' `/version`
/// (open there too, through `system:public-info-viewer`).
/// The session route logs in with a token in its body (and logs out by cookie).
const OPEN_PATHS: &[&str] = &[
    "/healthz",
    "/readyz",
    "/version",
    "/version/",
    "/hearth/v1/session",
];

/// The token from `Authorization: Bearer <t>`, or the password of `Basic` (how a
/// browser sends it after the prompt that a 401 triggers).
fn presented_token(req: &ServiceRequest) -> Option<String> {
    let value = req.headers().get(header::AUTHORIZATION)?.to_str().ok()?.trim();
    let (scheme, rest) = value.split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let decoded = String::from_utf8(decoded).ok()?;
        let (_, password) = decoded.split_once(':')?;
        return Some(password.to_string());
    }
    None
}

pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let path = req.path();
    let open = OPEN_PATHS.contains(&path);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics_public =
        path == "/metrics" && state.as_ref().map(|s| s.config.metrics.public).unwrap_or(false);
    if !open && !metrics_public {
        let outcome = match state {
            Some(state) => match presented_token(&req) {
                Some(token) => state.auth.authenticate(Some(&token)).map_err(ApiError::from),
                // No credentials in headers: a browser's session cookie, if any.
                None => match super::session::cookie_value(req.headers()) {
                    Some(secret) => state.sessions.principal(&state, Some(&secret)).ok_or_else(|| {
                        ApiError::Unauthorized("the session expired or was logged out".into())
                    }),
                    None => state.auth.authenticate(None).map_err(ApiError::from),
                },
            },
            None => Err(ApiError::Internal("application state missing".into())),
        };
        match outcome {
            Ok(principal) => {
                req.extensions_mut().insert(principal);
            }
            Err(error) => return Ok(req.into_response(error.error_response())),
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_boxed_body)
}

/// The authenticated caller; present on every route but the open probes.
pub struct Caller(pub Principal);

impl FromRequest for Caller {
    type Error = ApiError;
    type Future = Ready<Result<Self, Self::Error>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        ready(
            req.extensions()
                .get::<Principal>()
                .cloned()
                .map(Caller)
                .ok_or_else(|| ApiError::Unauthorized("missing bearer token".into())),
        )
    }
}
