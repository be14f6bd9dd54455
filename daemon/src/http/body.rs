//! Request bodies: read under the configured size limit, then parsed as JSON or YAML
//! with the position of any syntax error. Resource endpoints take either format, as
//! `kubectl` users expect; the small control endpoints take JSON.

use std::future::Future;
use std::pin::Pin;

use actix_web::http::header;
use actix_web::{dev::Payload, web, FromRequest, HttpRequest};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::errors::ApiError;
use super::AppState;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    Json,
    Yaml,
}

fn media_type(req: &HttpRequest) -> Option<String> {
    req.headers()
        .get(header::CONTENT_TYPE)
        .map(|v| {
            v.to_str()
                .unwrap_or("invalid")
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|m| !m.is_empty())
}

fn is_json(media: &str) -> bool {
    media == "application/json" || (media.starts_with("application/") && media.ends_with("+json"))
}

fn is_yaml(media: &str) -> bool {
    matches!(
        media,
        "application/yaml" | "application/x-yaml" | "text/yaml" | "text/x-yaml"
    )
}

/// Reads the whole body, refusing it with 413 as soon as it passes `limit`.
pub async fn read_limited(
    req: &HttpRequest,
    payload: &mut Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    if let Some(length) = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
    {
        if length > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
    }
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::BadRequest(format!("reading the request body failed: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::PayloadTooLarge { limit });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn body_limit(req: &HttpRequest) -> usize {
    req.app_data::<web::Data<AppState>>()
        .map(|s| s.config.max_body_bytes)
        .unwrap_or(64 * 1024 * 1024)
}

pub fn json_error(e: &serde_json::Error) -> ApiError {
    ApiError::MalformedBody {
        format: "JSON",
        detail: e.to_string(),
        line: Some(e.line()),
        column: Some(e.column()),
    }
}

pub fn yaml_error(e: &serde_yaml_ng::Error) -> ApiError {
    let location = e.location();
    ApiError::MalformedBody {
        format: "YAML",
        detail: e.to_string(),
        line: location.as_ref().map(|l| l.line()),
        column: location.as_ref().map(|l| l.column()),
    }
}

/// Parses every YAML document in `bytes` (JSON is YAML too). Empty documents, such as a
/// file of comments, are left out.
pub fn parse_yaml_documents(bytes: &[u8]) -> Result<Vec<Value>, ApiError> {
    let mut documents = Vec::new();
    for document in serde_yaml_ng::Deserializer::from_slice(bytes) {
        let value = <Value as serde::Deserialize>::deserialize(document).map_err(|e| yaml_error(&e))?;
        if !value.is_null() {
            documents.push(value);
        }
    }
    Ok(documents)
}

/// A resource document sent as JSON or YAML (several YAML documents allowed; the
/// endpoint decides what it accepts).
#[derive(Debug)]
#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
pub struct Document {
    pub format: BodyFormat,
    pub documents: Vec<Value>,
}

#[allow(
    dead_code,
    reason = "shared core API: the jobs, pipelines, serving and notebooks areas build on it"
)]
impl Document {
    /// The one document of the body; several, or none, is a 400.
    pub fn single(self) -> Result<Value, ApiError> {
        let mut docs = self.documents;
        match docs.len() {
            0 => Err(ApiError::BadRequest("the request body holds no document".into())),
            1 => Ok(docs.remove(0)),
            n => Err(ApiError::BadRequest(format!(
                "the request body holds {n} YAML documents; send one per request"
            ))),
        }
    }
}

impl FromRequest for Document {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let format = match media_type(&req).as_deref() {
                Some(m) if is_json(m) => BodyFormat::Json,
                Some(m) if is_yaml(m) => BodyFormat::Yaml,
                // curl --data-binary @file.yaml sends this; sniffing YAML is safe because
                // JSON is a subset of it.
                None
                | Some("application/x-www-form-urlencoded")
                | Some("text/plain")
                | Some("application/octet-stream") => BodyFormat::Yaml,
                Some(other) => {
                    return Err(ApiError::UnsupportedMediaType {
                        got: other.to_string(),
                        expected: "application/json or application/yaml",
                    })
                }
            };
            let bytes = read_limited(&req, &mut payload, body_limit(&req)).await?;
            let documents = match format {
                BodyFormat::Json => {
                    let value: Value = serde_json::from_slice(&bytes).map_err(|e| json_error(&e))?;
                    vec![value]
                }
                BodyFormat::Yaml => parse_yaml_documents(&bytes)?,
            };
            Ok(Document { format, documents })
        })
    }
}

/// A JSON body of a typed request; unknown fields are refused where the type says so.
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned + 'static> FromRequest for JsonBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            match media_type(&req).as_deref() {
                Some(m) if is_json(m) => {}
                None => {}
                Some(other) => {
                    return Err(ApiError::UnsupportedMediaType {
                        got: other.to_string(),
                        expected: "application/json",
                    })
                }
            }
            let bytes = read_limited(&req, &mut payload, body_limit(&req)).await?;
            if bytes.iter().all(|b| b.is_ascii_whitespace()) {
                return Err(ApiError::BadRequest(
                    "the request body is empty; send a JSON object".into(),
                ));
            }
            serde_json::from_slice(&bytes).map(JsonBody).map_err(|e| {
                if e.is_data() {
                    ApiError::invalid("body", e.to_string())
                } else {
                    json_error(&e)
                }
            })
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn yaml_errors_carry_line_and_column() {
        let err = parse_yaml_documents(b"a: 1\nb: [1, 2\nc: 3\n").unwrap_err();
        match &err {
            ApiError::MalformedBody { line, column, .. } => {
                assert!(line.is_some() && column.is_some());
            }
            other => panic!("unexpected {other:?}"),
        }
        // A tab where YAML wants spaces, on line 3: the problem names that line.
        let err = parse_yaml_documents(b"kind: Job\nspec:\n\tbad: 1\n").unwrap_err();
        let problem = err.problem();
        assert_eq!(problem.code, "malformed_body");
        assert_eq!(problem.status, 400);
        assert_eq!(problem.line, Some(3), "{problem:?}");
        assert_eq!(problem.column, Some(1), "{problem:?}");
        assert!(problem.detail.contains("YAML"), "{problem:?}");
        // The second document's error is reported at its own line in the stream.
        let err = parse_yaml_documents(b"a: 1\n---\nb: {x: 1\n")
            .unwrap_err()
            .problem();
        assert!(err.line.is_some_and(|l| l >= 3), "{err:?}");
    }

    #[test]
    fn comment_only_yaml_has_no_documents() {
        assert!(parse_yaml_documents(b"# nothing\n# here\n").unwrap().is_empty());
        assert_eq!(parse_yaml_documents(b"a: 1\n---\nb: 2\n").unwrap().len(), 2);
    }
}
