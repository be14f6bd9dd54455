//! Kubernetes `Status` errors (`meta/v1` `Status`, as the API server answers any
//! failure), so `kubectl` prints `Error from server (Invalid): ...` and clients read
//! `reason`, `code` and `details.causes[].field`.
//!
//! Handlers on Kubernetes paths return the same `ApiError` as the rest of Hearth; one
//! middleware ([`kubernetes_errors`]) turns every problem+json answer on those paths
//! (the handler's, the authentication layer's, the router's) into a `Status`, naming
//! the kind and object from the path. Hearth's own API keeps problem+json.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::kinds::{self, KindDef};
use crate::http::errors::{Problem, PROBLEM_JSON};

/// A `meta/v1` `Status` (Kubernetes API reference, "Status"): `status` is `Failure`
/// for errors and `Success` for a delete that removed the object outright.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    #[schema(example = "Status")]
    pub kind: String,
    #[schema(example = "v1")]
    pub api_version: String,
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// `Success` or `Failure`.
    pub status: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub message: String,
    /// `NotFound`, `AlreadyExists`, `Invalid`, `Forbidden`, `Conflict`, `BadRequest`,
    /// `Unauthorized`, `MethodNotAllowed`, `UnsupportedMediaType`,
    /// `RequestEntityTooLarge`, `Expired`, `ServiceUnavailable`, `InternalError`.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub reason: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub details: Option<StatusDetails>,
    /// The HTTP status code.
    pub code: u16,
}

/// `StatusDetails`: which object, and for `Invalid` the field of each cause.
#[derive(Debug, Default, Serialize, Deserialize, ToSchema)]
pub struct StatusDetails {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    /// The resource (plural), as the API server names it here.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub kind: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub uid: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub causes: Vec<StatusCause>,
}

/// `StatusCause`: `reason` is `FieldValueInvalid` or `FieldValueNotSupported`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct StatusCause {
    pub reason: String,
    pub message: String,
    pub field: String,
}

impl Status {
    /// The `Success` answer to a delete that removed the object, as the API server
    /// gives it for built-in kinds such as Jobs.
    pub fn deleted(kind: &KindDef, name: &str, uid: &str) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::json!({}),
            status: "Success".into(),
            message: String::new(),
            reason: String::new(),
            details: Some(StatusDetails {
                name: name.into(),
                group: kind.group.into(),
                kind: kind.plural.into(),
                uid: uid.into(),
                causes: Vec::new(),
            }),
            code: 200,
        }
    }

    /// A `Failure` with this code and reason.
    pub fn failure(code: u16, reason: &str, message: String, details: Option<StatusDetails>) -> Status {
        Status {
            kind: "Status".into(),
            api_version: "v1".into(),
            metadata: serde_json::json!({}),
            status: "Failure".into(),
            message,
            reason: reason.into(),
            details,
            code,
        }
    }
}

/// The object a Kubernetes path names: its kind and, for an item path, its name.
struct Target {
    kind: Option<&'static KindDef>,
    name: String,
}

/// The name of the object a create was about, left on its error answer for
/// [`kubernetes_errors`] (a create's path has no name).
#[derive(Debug, Clone)]
pub struct ObjectName(pub String);

fn target(path: &str) -> Target {
    let parts: Vec<&str> = path.trim_matches('/').split('/').collect();
    let kind = kinds::for_path(&parts);
    let name = kind
        .and_then(|k| {
            let at = parts.iter().position(|p| *p == k.plural)?;
            parts.get(at + 1).map(|n| n.to_string())
        })
        .unwrap_or_default();
    Target { kind, name }
}

/// `jobs.batch "x"`, as Kubernetes names an object in messages.
fn qualified(target: &Target) -> String {
    match target.kind {
        Some(k) if k.group.is_empty() && target.name.is_empty() => k.plural.to_string(),
        Some(k) if k.group.is_empty() => format!("{} {:?}", k.plural, target.name),
        Some(k) if target.name.is_empty() => format!("{}.{}", k.plural, k.group),
        Some(k) => format!("{}.{} {:?}", k.plural, k.group, target.name),
        None => "the resource".into(),
    }
}

/// The `Status` for a problem answered on a Kubernetes path.
fn from_problem(problem: &Problem, target: &Target) -> Status {
    let details = || StatusDetails {
        name: target.name.clone(),
        group: target.kind.map(|k| k.group.to_string()).unwrap_or_default(),
        kind: target.kind.map(|k| k.plural.to_string()).unwrap_or_default(),
        uid: String::new(),
        causes: Vec::new(),
    };
    let reason = match (problem.status, problem.code.as_str()) {
        (409, "already_exists") => "AlreadyExists",
        (409, _) => "Conflict",
        (400, _) => "BadRequest",
        (401, _) => "Unauthorized",
        (403, _) => "Forbidden",
        (404, _) => "NotFound",
        (405, _) => "MethodNotAllowed",
        (406, _) => "NotAcceptable",
        (410, _) => "Expired",
        (413, _) => "RequestEntityTooLarge",
        (415, _) => "UnsupportedMediaType",
        (422, _) => "Invalid",
        (429, _) => "TooManyRequests",
        (503, _) => "ServiceUnavailable",
        (504, _) => "Timeout",
        _ => "InternalError",
    };
    let object = qualified(target);
    match reason {
        "Invalid" => {
            let (field, cause_reason, text) = match (&problem.field, &problem.feature) {
                (Some(field), _) => (field.clone(), "FieldValueInvalid", "Invalid value"),
                (None, Some(feature)) => (feature.clone(), "FieldValueNotSupported", "Unsupported value"),
                (None, None) => (String::new(), "FieldValueInvalid", "Invalid value"),
            };
            let detail = problem
                .detail
                .strip_prefix(&format!("{field}: "))
                .unwrap_or(&problem.detail)
                .to_string();
            let kind = target
                .kind
                .map(|k| format!("{}.{}", k.kind, k.group))
                .unwrap_or_else(|| "object".into());
            let named = if target.name.is_empty() {
                kind
            } else {
                format!("{kind} {:?}", target.name)
            };
            let mut details = details();
            details.kind = target.kind.map(|k| k.kind.to_string()).unwrap_or_default();
            details.causes.push(StatusCause {
                reason: cause_reason.into(),
                message: format!("{text}: {detail}"),
                field: field.clone(),
            });
            Status::failure(
                422,
                reason,
                format!("{named} is invalid: {field}: {text}: {detail}"),
                Some(details),
            )
        }
        "NotFound" if target.kind.is_some() && problem.code == "not_found" => {
            Status::failure(404, reason, format!("{object} not found"), Some(details()))
        }
        "AlreadyExists" => Status::failure(409, reason, format!("{object} already exists"), Some(details())),
        "Conflict" => Status::failure(
            409,
            reason,
            format!("Operation cannot be fulfilled on {object}: {}", problem.detail),
            Some(details()),
        ),
        "Forbidden" => Status::failure(
            403,
            reason,
            format!("{object} is forbidden: {}", problem.detail),
            Some(details()),
        ),
        _ => Status::failure(
            problem.status,
            reason,
            problem.detail.clone(),
            target.kind.map(|_| details()),
        ),
    }
}

/// True for the paths that belong to the Kubernetes API: the core group (`/api`) and
/// API groups under `/apis` (the kind registry's, and any dotted group name such as
/// `authentication.k8s.io`), not KFP's `/apis/v2beta1`.
pub fn is_kubernetes_path(path: &str) -> bool {
    if path == "/api" || path.starts_with("/api/") || path == "/apis" || path == "/apis/" {
        return true;
    }
    let Some(rest) = path.strip_prefix("/apis/") else {
        return false;
    };
    let group = rest.split('/').next().unwrap_or("");
    group.contains('.') || kinds::groups().any(|g| g == group)
}

/// Answers a `Status` in place of every problem+json on a Kubernetes path.
pub async fn kubernetes_errors(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let kubernetes = is_kubernetes_path(req.path());
    let path = req.path().to_string();
    let res = next.call(req).await?.map_into_boxed_body();
    let is_problem = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(PROBLEM_JSON.as_bytes()));
    if !kubernetes || !is_problem {
        return Ok(res);
    }
    let named = res.response().extensions().get::<ObjectName>().cloned();
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let Ok(problem) = serde_json::from_slice::<Problem>(&bytes) else {
        return Ok(ServiceResponse::new(req, head.set_body(BoxBody::new(bytes))));
    };
    let mut target = target(&path);
    if let Some(ObjectName(name)) = named {
        target.name = name;
    }
    let status = from_problem(&problem, &target);
    let mut answer = HttpResponse::build(head.status());
    for (name, value) in head.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.append_header((name.clone(), value.clone()));
        }
    }
    answer.insert_header((header::CONTENT_TYPE, HeaderValue::from_static("application/json")));
    Ok(ServiceResponse::new(req, answer.json(status)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problem(status: u16, code: &str, detail: &str, field: Option<&str>) -> Problem {
        Problem {
            problem_type: String::new(),
            title: String::new(),
            status,
            detail: detail.into(),
            code: code.into(),
            field: field.map(str::to_string),
            feature: None,
            line: None,
            column: None,
        }
    }

    #[test]
    fn problems_become_kubernetes_statuses() {
        let item = target("/apis/batch/v1/namespaces/team/jobs/train");
        let s = from_problem(
            &problem(404, "not_found", "job team/train not found", None),
            &item,
        );
        assert_eq!((s.code, s.reason.as_str()), (404, "NotFound"));
        assert_eq!(s.message, "jobs.batch \"train\" not found");
        let s = from_problem(
            &problem(
                422,
                "invalid_field",
                "spec.completions: must be at most 10",
                Some("spec.completions"),
            ),
            &item,
        );
        assert_eq!(s.reason, "Invalid");
        let details = s.details.unwrap();
        assert_eq!(details.causes[0].field, "spec.completions");
        assert_eq!(details.kind, "Job");
        assert!(
            s.message
                .starts_with("Job.batch \"train\" is invalid: spec.completions"),
            "{}",
            s.message
        );
        let s = from_problem(&problem(409, "already_exists", "x", None), &item);
        assert_eq!(s.reason, "AlreadyExists");
        assert!(is_kubernetes_path(
            "/apis/serving.kserve.io/v1beta1/namespaces/a/inferenceservices"
        ));
        assert!(is_kubernetes_path("/api/v1/namespaces"));
        assert!(!is_kubernetes_path("/apis/v2beta1/runs"));
        assert!(!is_kubernetes_path("/hearth/v1/users"));
    }
}
