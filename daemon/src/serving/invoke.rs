//! One inference call made from the control-plane API for its caller: the web page's
//! try-it form. The page may call its own origin only (its CSP is
//! `connect-src 'self'`) and the data plane listens on another port, so
//! `POST /hearth/v1/namespaces/{namespace}/inferenceservices/{name}/inference` sends one
//! KServe V1 or V2 request to the data plane, over loopback, and answers what the data
//! plane answered (status, revision, time, body) as one JSON document.
//!
//! The request is the caller's own: a service with `serving.hearth.dev/require-token`
//! gets the caller's token (the one presented to the API, or the one behind the
//! caller's web session), so the data plane authorizes it exactly as it would the
//! caller calling it directly, never as the daemon or an admin. A service without the
//! annotation gets no token, as a direct caller need not send one, and its replica so
//! never sees the caller's credential.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::header::{self, HeaderValue};
use hyper::{Method, Request};
use hyper_util::rt::TokioIo;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use super::dataplane::{DataPlane, REVISION_HEADER};
use super::isvc::AUTH_ANNOTATION;
use super::service::{Services, ServingError};

/// Which data-plane endpoint to call, named for KServe's V1 and V2 (Open Inference)
/// protocols; `{model}` is the InferenceService's name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum InferenceCall {
    /// `POST /v1/models/{model}:predict` (V1; translated for V2-only runtimes).
    V1Predict,
    /// `POST /v1/models/{model}:explain`: refused, Hearth serves no explainer.
    V1Explain,
    /// `GET /v1/models/{model}`: whether the model is ready.
    V1Ready,
    /// `POST /v2/models/{model}/infer` (V2, JSON tensors).
    V2Infer,
    /// `GET /v2/models/{model}`: the model's metadata (inputs, outputs, platform).
    V2Metadata,
    /// `GET /v2/models/{model}/ready`.
    V2Ready,
}

impl InferenceCall {
    /// The method and data-plane path of this call, or why it cannot be made.
    fn target(self, model: &str) -> Result<(Method, String), InvokeError> {
        Ok(match self {
            InferenceCall::V1Predict => (Method::POST, format!("/v1/models/{model}:predict")),
            InferenceCall::V1Explain => return Err(InvokeError::Explainer),
            InferenceCall::V1Ready => (Method::GET, format!("/v1/models/{model}")),
            InferenceCall::V2Infer => (Method::POST, format!("/v2/models/{model}/infer")),
            InferenceCall::V2Metadata => (Method::GET, format!("/v2/models/{model}")),
            InferenceCall::V2Ready => (Method::GET, format!("/v2/models/{model}/ready")),
        })
    }
}

/// One call: which endpoint, and the JSON body for the ones that take one (the V1
/// `{"instances": [...]}` or V2 `{"inputs": [...]}` document, sent as it is).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InferenceRequest {
    pub call: InferenceCall,
    /// Required for `v1_predict` and `v2_infer`; refused for the reads.
    #[serde(default)]
    pub body: Option<Value>,
}

/// The data plane's answer, whatever its status: a model's own refusal (400, 422) and
/// the data plane's (401 without a token the service requires, 503 while no revision is
/// ready) come back here too, for the caller to read.
#[derive(Debug, Serialize, ToSchema)]
pub struct InferenceAnswer {
    /// The data plane's HTTP status.
    pub status: u16,
    /// The method and path called on the data plane, e.g. `POST /v1/models/iris:predict`.
    pub request: String,
    /// The revision that answered (`x-hearth-revision`), when one did.
    pub revision: Option<String>,
    /// Milliseconds from sending the request to the answer's last byte.
    pub elapsed_ms: f64,
    /// The answer's `Content-Type`.
    pub content_type: Option<String>,
    /// The answer: its JSON, or its text when it is not JSON.
    pub body: Value,
}

/// Why a call was not made or got no answer.
#[derive(Debug, thiserror::Error)]
pub enum InvokeError {
    #[error(transparent)]
    Serving(#[from] ServingError),
    #[error("{call:?} sends a body: give one (a JSON document of the protocol)")]
    BodyRequired { call: InferenceCall },
    #[error("{call:?} is a read and sends no body")]
    BodyNotAllowed { call: InferenceCall },
    #[error(
        "Hearth serves no explainer component (spec.explainer is refused), so there is no :explain endpoint"
    )]
    Explainer,
    #[error("{0}")]
    Path(String),
    #[error("the serving data plane is not listening yet")]
    NotListening,
    #[error("the serving data plane at {addr} cannot be reached: {source}")]
    Connect {
        addr: SocketAddr,
        source: std::io::Error,
    },
    #[error("the serving data plane failed: {0}")]
    Http(#[from] hyper::Error),
    #[error("the answer is larger than the limit of {limit} bytes (max_body_bytes)")]
    AnswerTooLarge { limit: usize },
}

/// Where to reach a listener bound to `addr` from this host: its own address, or
/// loopback when it is bound to every address.
fn reachable(addr: SocketAddr) -> SocketAddr {
    let ip = match addr.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, addr.port())
}

/// Sends `request` to InferenceService `namespace/name` through the data plane, as the
/// holder of `credential` (a Hearth token), reading at most `limit` bytes of answer.
/// The caller must already be authorized for `namespace`.
///
/// Errors: the service does not exist (`Serving`, not found), a body missing or
/// given where it does not belong, `:explain`, and the data plane unreachable or its
/// answer past `limit`. The data plane's own error answers are not errors here.
pub async fn invoke(
    services: &Services,
    plane: &DataPlane,
    (namespace, name): (&str, &str),
    request: InferenceRequest,
    credential: Option<&str>,
    limit: usize,
) -> Result<InferenceAnswer, InvokeError> {
    let service = services.get_resource(namespace, name).await?;
    let (method, path) = request.call.target(name)?;
    let body = match (method == Method::POST, request.body) {
        (true, Some(Value::Null) | None) => return Err(InvokeError::BodyRequired { call: request.call }),
        (true, Some(doc)) => Bytes::from(serde_json::to_vec(&doc).unwrap_or_default()),
        (false, Some(Value::Null) | None) => Bytes::new(),
        (false, Some(_)) => return Err(InvokeError::BodyNotAllowed { call: request.call }),
    };
    let requires_token = service.metadata["annotations"][AUTH_ANNOTATION].as_str() == Some("true");
    let addr = reachable(plane.address().ok_or(InvokeError::NotListening)?);

    let mut outgoing = Request::new(Full::new(body));
    *outgoing.method_mut() = method.clone();
    *outgoing.uri_mut() = path
        .parse()
        .map_err(|e| InvokeError::Path(format!("{path} is not a request path: {e}")))?;
    let headers = outgoing.headers_mut();
    // The data plane routes by `Host: {name}.{namespace}.{domain}`.
    let host = format!("{name}.{namespace}.{}", plane.config.domain);
    if let Ok(value) = HeaderValue::from_str(&host) {
        headers.insert(header::HOST, value);
    }
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    if let Some(token) = credential.filter(|_| requires_token) {
        if let Ok(value) = HeaderValue::from_str(&format!("Bearer {token}")) {
            headers.insert(header::AUTHORIZATION, value);
        }
    }

    let begun = Instant::now();
    let stream = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|source| InvokeError::Connect { addr, source })?;
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    // One request per connection: the connection ends when `sender` is dropped.
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "try-it connection to the data plane ended");
        }
    });
    let answer = sender.send_request(outgoing).await?;
    let (head, body) = answer.into_parts();
    let bytes = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => {
            return Err(InvokeError::AnswerTooLarge { limit })
        }
        Err(e) => match e.downcast::<hyper::Error>() {
            Ok(e) => return Err(InvokeError::Http(*e)),
            Err(_) => return Err(InvokeError::AnswerTooLarge { limit }),
        },
    };
    let elapsed_ms = begun.elapsed().as_secs_f64() * 1000.0;
    let text = |name: &str| {
        head.headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string)
    };
    Ok(InferenceAnswer {
        status: head.status.as_u16(),
        request: format!("{method} {path}"),
        revision: text(REVISION_HEADER),
        elapsed_ms,
        content_type: text(header::CONTENT_TYPE.as_str()),
        body: serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned())),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_call_names_its_data_plane_endpoint() {
        let target = |call: InferenceCall| call.target("iris").map(|(m, p)| format!("{m} {p}")).ok();
        assert_eq!(
            target(InferenceCall::V1Predict).as_deref(),
            Some("POST /v1/models/iris:predict")
        );
        assert_eq!(
            target(InferenceCall::V1Ready).as_deref(),
            Some("GET /v1/models/iris")
        );
        assert_eq!(
            target(InferenceCall::V2Infer).as_deref(),
            Some("POST /v2/models/iris/infer")
        );
        assert_eq!(
            target(InferenceCall::V2Metadata).as_deref(),
            Some("GET /v2/models/iris")
        );
        assert_eq!(
            target(InferenceCall::V2Ready).as_deref(),
            Some("GET /v2/models/iris/ready")
        );
        assert_eq!(target(InferenceCall::V1Explain), None);
    }

    #[test]
    fn a_wildcard_listener_is_reached_on_loopback() {
        let any: SocketAddr = "0.0.0.0:8471".parse().unwrap();
        assert_eq!(reachable(any), "127.0.0.1:8471".parse().unwrap());
        let any6: SocketAddr = "[::]:8471".parse().unwrap();
        assert_eq!(reachable(any6), "[::1]:8471".parse().unwrap());
        let one: SocketAddr = "127.0.0.2:9".parse().unwrap();
        assert_eq!(reachable(one), one);
    }
}
