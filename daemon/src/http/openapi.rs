//! The OpenAPI document: collected from the route declarations, then completed with
//! what every operation shares (bearer security and the problem+json error answers),
//! so each handler declares only its own success responses.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityRequirement, SecurityScheme};
use utoipa::openapi::{ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder};
use utoipa::OpenApi as _;
use utoipa_actix_web::AppExt;

use actix_web::ResponseError;

use super::errors::Problem;

#[derive(utoipa::OpenApi)]
#[openapi(
    info(
        title = "Hearth",
        description = "One daemon that turns a GPU workstation into a small MLOps platform: pipelines, tuning, notebooks and model serving.",
        license(name = "Apache-2.0")
    ),
    components(schemas(
        Problem,
        crate::kube::status::Status,
        crate::kube::status::StatusDetails,
        crate::kube::status::StatusCause
    ))
)]
struct BaseDoc;

const OPEN_PATHS: &[&str] = &["/healthz", "/readyz", "/version", "/hearth/v1/session"];

/// An error answer: problem+json on Hearth's own paths, a Kubernetes `Status` on the
/// Kubernetes API's (see `crate::kube::status`).
fn problem_response(path: &str, description: &str) -> RefOr<utoipa::openapi::Response> {
    let (content_type, schema) = if crate::kube::status::is_kubernetes_path(path) {
        ("application/json", "Status")
    } else {
        (super::errors::PROBLEM_JSON, "Problem")
    };
    RefOr::T(
        ResponseBuilder::new()
            .description(description)
            .content(
                content_type,
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name(schema)))
                    .build(),
            )
            .build(),
    )
}

/// Every response object needs a `description` (OpenAPI 3.1 §4.8.17.1); generators such
/// as openapi-python-client refuse a document without. A declaration that gave none gets
/// the status's reason phrase.
fn describe_responses(op: &mut utoipa::openapi::path::Operation) {
    for (status, response) in op.responses.responses.iter_mut() {
        if let RefOr::T(response) = response {
            if response.description.is_empty() {
                let reason = status
                    .parse::<u16>()
                    .ok()
                    .and_then(|code| actix_web::http::StatusCode::from_u16(code).ok())
                    .and_then(|code| code.canonical_reason())
                    .unwrap_or("Success");
                response.description = reason.to_string();
            }
        }
    }
}

fn complete(mut doc: OpenApi) -> OpenApi {
    doc.info.version = env!("CARGO_PKG_VERSION").to_string();
    let components = doc.components.get_or_insert_with(Default::default);
    components.add_security_scheme(
        "bearer",
        SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
    );
    for (path, item) in doc.paths.paths.iter_mut() {
        let open = OPEN_PATHS.contains(&path.as_str());
        // The login route takes no bearer token, but answers 401 to a bad one in its body.
        let login = path == "/hearth/v1/session";
        let has_path_params = path.contains('{');
        // (operation, has a body, deletes)
        let ops = [
            (&mut item.get, false, false),
            (&mut item.put, true, false),
            (&mut item.post, true, false),
            (&mut item.delete, false, true),
            (&mut item.patch, true, false),
        ];
        for (op, writes, deletes) in ops {
            let Some(op) = op.as_mut() else { continue };
            let mut errors: Vec<(&str, &str)> = vec![
                ("500", "Internal error"),
                ("503", "Not ready, or the store is unavailable"),
            ];
            if !open {
                op.security = Some(vec![SecurityRequirement::new("bearer", Vec::<String>::new())]);
                errors.push(("401", "Missing, unknown or expired token"));
                errors.push((
                    "403",
                    "The token may not do this, or the namespace is another user's",
                ));
                errors.push(("400", "Bad request: bad path or query parameters"));
            }
            if has_path_params {
                errors.push(("404", "No such resource"));
                errors.push(("422", "A path parameter is not a valid name"));
            }
            if deletes {
                errors.push((
                    "409",
                    "The resource may not be deleted now, or changed concurrently",
                ));
            }
            if writes || op.request_body.is_some() {
                errors.push(("400", "Malformed body (the detail has line and column)"));
                errors.push(("409", "Already exists, or changed concurrently"));
                errors.push(("413", "Body larger than the configured limit"));
                errors.push(("415", "Unsupported content type"));
                errors.push(("422", "A field is invalid or names an unsupported feature"));
            }
            if login {
                errors.push(("401", "The token is not valid"));
            }
            name_patterns(op);
            describe_responses(op);
            for (status, description) in errors {
                op.responses
                    .responses
                    .entry(status.to_string())
                    .or_insert_with(|| problem_response(path, description));
            }
        }
    }
    doc
}

/// Names and namespaces in paths follow DNS-1123 labels everywhere; saying so once
/// here keeps every area's routes honest about what they accept.
pub const NAME_PATTERN: &str = "^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$";

fn name_patterns(op: &mut utoipa::openapi::path::Operation) {
    use utoipa::openapi::path::ParameterIn;
    use utoipa::openapi::schema::Schema;
    for param in op.parameters.iter_mut().flatten() {
        let RefOr::T(param) = param else { continue };
        if param.parameter_in != ParameterIn::Path || !matches!(param.name.as_str(), "namespace" | "name") {
            continue;
        }
        if let Some(RefOr::T(Schema::Object(object))) = param.schema.as_mut() {
            object.pattern.get_or_insert_with(|| NAME_PATTERN.to_string());
        }
    }
}

/// The document `hearth openapi` prints and `/openapi.json` serves.
pub fn document() -> OpenApi {
    let (_, doc) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(BaseDoc::openapi())
        .configure(|cfg| super::routes(&mut super::routing::Routes::Document(cfg)))
        .split_for_parts();
    complete(doc)
}

/// `GET /openapi.json`: the document as compact JSON. Built on the first request and
/// kept as bytes (about 250 KB), not as the `OpenApi` tree (megabytes): an idle daemon
/// that nobody asks for its document does not hold it, and no worker holds a copy.
pub async fn serve_json() -> actix_web::HttpResponse {
    static JSON: std::sync::OnceLock<bytes::Bytes> = std::sync::OnceLock::new();
    let body = match JSON.get() {
        Some(body) => body.clone(),
        // Building takes milliseconds of CPU: off the worker's async thread.
        None => match actix_web::web::block(|| {
            JSON.get_or_init(|| serde_json::to_vec(&document()).unwrap_or_default().into())
                .clone()
        })
        .await
        {
            Ok(body) => body,
            Err(e) => {
                return super::errors::ApiError::Unavailable(format!("building the OpenAPI document: {e}"))
                    .error_response()
            }
        },
    };
    actix_web::HttpResponse::Ok()
        .content_type("application/json")
        .body(body)
}

pub fn to_pretty_json(doc: &OpenApi) -> String {
    let mut text = doc
        .to_pretty_json()
        .unwrap_or_else(|e| format!("{{\"error\": \"{e}\"}}"));
    text.push('\n');
    text
}
