//! The one error type of the HTTP layer. Every core error maps onto it variant by
//! variant (no catch-all arms), and every variant renders as RFC 9457
//! `application/problem+json` with a stable `code`.

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use utoipa::ToSchema;

use crate::auth::AuthError;
use crate::store::StoreError;

pub const PROBLEM_JSON: &str = "application/problem+json";

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("{0}")]
    Unauthorized(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    #[error("no route for {path}")]
    RouteNotFound { path: String },
    #[error("{method} is not allowed here; allowed: {}", allowed.join(", "))]
    MethodNotAllowed { method: String, allowed: Vec<String> },
    #[error("{0}")]
    AlreadyExists(String),
    #[error("{0}")]
    Conflict(String),
    #[error("the request body is larger than the limit of {limit} bytes")]
    PayloadTooLarge { limit: usize },
    #[error("content type {got:?} is not accepted here; send {expected}")]
    UnsupportedMediaType { got: String, expected: &'static str },
    #[error("malformed {format}: {detail}")]
    MalformedBody {
        format: &'static str,
        detail: String,
        line: Option<usize>,
        column: Option<usize>,
    },
    #[error("{0}")]
    BadRequest(String),
    #[error("{field}: {detail}")]
    InvalidField { field: String, detail: String },
    #[error("{feature} is not supported by Hearth: {detail}")]
    Unsupported { feature: String, detail: String },
    #[error("{0}")]
    Unavailable(String),
    #[error("internal error: {0}")]
    Internal(String),
}

/// An RFC 9457 problem document. Extension members carry what a program needs to
/// react: the stable `code`, and the offending `field`, `feature` or position.
#[derive(Debug, Serialize, serde::Deserialize, ToSchema)]
pub struct Problem {
    #[serde(rename = "type")]
    pub problem_type: String,
    pub title: String,
    pub status: u16,
    pub detail: String,
    /// Stable machine-readable error code, e.g. `unauthorized`, `malformed_body`.
    pub code: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub field: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub feature: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub line: Option<usize>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub column: Option<usize>,
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            ApiError::Unauthorized(_) => "unauthorized",
            ApiError::Forbidden(_) => "forbidden",
            ApiError::NotFound(_) => "not_found",
            ApiError::RouteNotFound { .. } => "route_not_found",
            ApiError::MethodNotAllowed { .. } => "method_not_allowed",
            ApiError::AlreadyExists(_) => "already_exists",
            ApiError::Conflict(_) => "conflict",
            ApiError::PayloadTooLarge { .. } => "payload_too_large",
            ApiError::UnsupportedMediaType { .. } => "unsupported_media_type",
            ApiError::MalformedBody { .. } => "malformed_body",
            ApiError::BadRequest(_) => "bad_request",
            ApiError::InvalidField { .. } => "invalid_field",
            ApiError::Unsupported { .. } => "unsupported_feature",
            ApiError::Unavailable(_) => "unavailable",
            ApiError::Internal(_) => "internal",
        }
    }

    pub fn invalid(field: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::InvalidField {
            field: field.into(),
            detail: detail.into(),
        }
    }

    #[allow(
        dead_code,
        reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
    )]
    pub fn unsupported(feature: impl Into<String>, detail: impl Into<String>) -> ApiError {
        ApiError::Unsupported {
            feature: feature.into(),
            detail: detail.into(),
        }
    }

    pub fn problem(&self) -> Problem {
        let status = self.status_code();
        let (field, feature, line, column) = match self {
            ApiError::InvalidField { field, .. } => (Some(field.clone()), None, None, None),
            ApiError::Unsupported { feature, .. } => (None, Some(feature.clone()), None, None),
            ApiError::MalformedBody { line, column, .. } => (None, None, *line, *column),
            _ => (None, None, None, None),
        };
        Problem {
            problem_type: format!("urn:hearth:problem:{}", self.code()),
            title: status.canonical_reason().unwrap_or("Error").to_string(),
            status: status.as_u16(),
            detail: self.to_string(),
            code: self.code().to_string(),
            field,
            feature,
            line,
            column,
        }
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            ApiError::Forbidden(_) => StatusCode::FORBIDDEN,
            ApiError::NotFound(_) | ApiError::RouteNotFound { .. } => StatusCode::NOT_FOUND,
            ApiError::MethodNotAllowed { .. } => StatusCode::METHOD_NOT_ALLOWED,
            ApiError::AlreadyExists(_) | ApiError::Conflict(_) => StatusCode::CONFLICT,
            ApiError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            ApiError::UnsupportedMediaType { .. } => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            ApiError::MalformedBody { .. } | ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::InvalidField { .. } | ApiError::Unsupported { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            ApiError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Internal(detail) = self {
            tracing::error!(%detail, "internal error");
        }
        let mut response = HttpResponse::build(self.status_code());
        response.insert_header((header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON)));
        match self {
            ApiError::Unauthorized(_) => {
                // Bearer only: a `Basic` challenge would make a browser pop up its
                // password prompt over the web page's own login page (Basic
                // credentials are still accepted, as from `curl -u`).
                response.append_header((header::WWW_AUTHENTICATE, "Bearer realm=\"hearth\""));
            }
            ApiError::MethodNotAllowed { allowed, .. } => {
                response.insert_header((header::ALLOW, allowed.join(", ")));
            }
            _ => {}
        }
        response.body(serde_json::to_vec(&self.problem()).unwrap_or_default())
    }
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> ApiError {
        match e {
            AuthError::MissingToken | AuthError::InvalidToken | AuthError::ExpiredToken(_) => {
                ApiError::Unauthorized(e.to_string())
            }
            AuthError::ForbiddenNamespace { .. } | AuthError::AdminOnly => ApiError::Forbidden(e.to_string()),
            AuthError::InvalidName { field, message } => ApiError::invalid(field, message),
            AuthError::CannotDeleteAdmin(_) => ApiError::Conflict(e.to_string()),
            AuthError::Store(inner) => inner.into(),
        }
    }
}

impl From<crate::scheduler::SchedulerError> for ApiError {
    fn from(e: crate::scheduler::SchedulerError) -> ApiError {
        use crate::runtime::RuntimeError;
        use crate::scheduler::SchedulerError;
        match e {
            SchedulerError::Unsatisfiable(message) => ApiError::invalid("resources", message),
            SchedulerError::Invalid(message) => ApiError::BadRequest(message),
            SchedulerError::NotFound(_) => ApiError::NotFound(e.to_string()),
            SchedulerError::Store(inner) => inner.into(),
            SchedulerError::Runtime(inner) => match inner {
                RuntimeError::NotFound(_) => ApiError::NotFound(inner.to_string()),
                RuntimeError::StillRunning(_) => ApiError::Conflict(inner.to_string()),
                RuntimeError::Start { .. } | RuntimeError::Io { .. } => ApiError::Internal(inner.to_string()),
                RuntimeError::Unavailable { .. } => ApiError::Unavailable(inner.to_string()),
            },
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> ApiError {
        match e {
            StoreError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            StoreError::AlreadyExists { .. } => ApiError::AlreadyExists(e.to_string()),
            StoreError::Conflict(message) => ApiError::Conflict(message),
            StoreError::Worker(message) => ApiError::Unavailable(message),
            StoreError::Sqlite(_) | StoreError::TooNew { .. } | StoreError::Json(_) => {
                ApiError::Internal(e.to_string())
            }
        }
    }
}

/// For any error response that some layer produced without a problem body (actix's
/// own rejections), build the problem document from the status alone.
pub fn problem_for_status(status: StatusCode, detail: String) -> Problem {
    let code = match status.as_u16() {
        400 => "bad_request",
        401 => "unauthorized",
        403 => "forbidden",
        404 => "not_found",
        405 => "method_not_allowed",
        408 => "request_timeout",
        413 => "payload_too_large",
        415 => "unsupported_media_type",
        422 => "invalid_field",
        431 => "headers_too_large",
        503 => "unavailable",
        s if s >= 500 => "internal",
        _ => "error",
    };
    Problem {
        problem_type: format!("urn:hearth:problem:{code}"),
        title: status.canonical_reason().unwrap_or("Error").to_string(),
        status: status.as_u16(),
        detail,
        code: code.to_string(),
        field: None,
        feature: None,
        line: None,
        column: None,
    }
}
