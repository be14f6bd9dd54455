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

/// The web page's login page and the assets it loads: answered with or without
/// credentials (`/` shows the login page to a caller without a live session and the
/// dashboard to one with), so that a browser never meets a 401 and its password
/// prompt. Credentials presented here are still checked, and a handler that needs a
/// caller takes `Option<Caller>` and refuses without one.
pub const PAGE_PATHS: &[&str] = &["/", "/ui/login.js", "/ui/app.css", "/ui/favicon.svg"];

/// The request header that a cookie-authenticated, state-changing request must carry
/// (any value). A page of another origin cannot set it without a CORS preflight,
/// which this daemon never grants: the CSRF defence beside `SameSite=Strict` and the
/// `Origin` check (OWASP CSRF cheat sheet, "custom request headers").
pub const CSRF_HEADER: &str = "x-hearth-csrf";

/// Whether a method can change state (RFC 9110 §9.2.1: all but the safe ones).
fn unsafe_method(method: &actix_web::http::Method) -> bool {
    !matches!(method.as_str(), "GET" | "HEAD" | "OPTIONS")
}

/// Whether `Origin`, when the browser sent one, names this very host: a
/// state-changing request that another site's page made is refused whatever its
/// credentials. Clients that are not browsers send no `Origin`.
fn same_origin(req: &ServiceRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let Ok(origin) = origin.to_str() else {
        return false;
    };
    let Some(host) = req.headers().get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return false;
    };
    let authority = origin
        .strip_prefix("https://")
        .or_else(|| origin.strip_prefix("http://"))
        .unwrap_or("");
    authority.eq_ignore_ascii_case(host)
}

/// The token from `Authorization: Bearer <t>`, or the password of `Basic` (how a
/// browser sends it after the prompt that a 401 triggers).
fn presented_token(req: &ServiceRequest) -> Option<String> {
    token_in(req.headers())
}

/// The token of a request's `Authorization` header, as [`authenticate`] reads it.
pub fn token_in(headers: &header::HeaderMap) -> Option<String> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?.trim();
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
    let page = PAGE_PATHS.contains(&path);
    let state = req.app_data::<web::Data<AppState>>().cloned();
    let metrics_public =
        path == "/metrics" && state.as_ref().map(|s| s.config.metrics.public).unwrap_or(false);
    if unsafe_method(req.method()) && !same_origin(&req) {
        let error = ApiError::Forbidden(
            "the request's Origin is not this server: a state-changing call from another site's page is refused"
                .into(),
        );
        return Ok(req.into_response(error.error_response()));
    }
    if !open && !metrics_public {
        let mut by_cookie = false;
        let outcome = match state {
            Some(state) => match presented_token(&req) {
                Some(token) => state.auth.authenticate(Some(&token)).map_err(ApiError::from),
                // No credentials in headers: a browser's session cookie, if any.
                None => match super::session::cookie_value(req.headers()) {
                    Some(secret) => {
                        by_cookie = true;
                        state.sessions.principal(&state, Some(&secret)).ok_or_else(|| {
                            ApiError::Unauthorized("the session expired or was logged out".into())
                        })
                    }
                    None => state.auth.authenticate(None).map_err(ApiError::from),
                },
            },
            None => Err(ApiError::Internal("application state missing".into())),
        };
        // JupyterLab behind the notebook proxy cannot add the header; Jupyter's own
        // `_xsrf` check, `SameSite=Strict` and the `Origin` check above guard it.
        let needs_csrf_header = by_cookie
            && unsafe_method(req.method())
            && !path.starts_with("/notebook/")
            && !req.headers().contains_key(CSRF_HEADER);
        match outcome {
            Ok(_) if needs_csrf_header => {
                let error = ApiError::Forbidden(format!(
                    "a state-changing call authenticated by the session cookie must carry the {CSRF_HEADER} header"
                ));
                return Ok(req.into_response(error.error_response()));
            }
            Ok(principal) => {
                req.extensions_mut().insert(principal);
            }
            // The login page, for a browser without a (live) session.
            Err(_) if page => {}
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
