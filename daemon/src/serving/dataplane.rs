//! The data plane: its own listener speaking KServe V1 and V2. A request is routed
//! to a service by `Host: {name}.{namespace}.{domain}` or, when the model name is
//! unique on the node, by path alone; then to a revision by the traffic split; then
//! to the least busy ready replica (the activator holds it while none is ready). V1
//! requests to V2-only runtimes and V2 binary tensors to runtimes without the
//! extension are translated here, and answered in the form the client asked for.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, LazyLock, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Either, Full, Limited};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use memchr::memmem::Finder;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::json;

use super::cache::{self, Cached, ResponseCache};
use super::pool::{AcquireError, Lease, RevisionPool};
use super::protocol::{self, BinaryOutputs, HEADER_LENGTH};
use super::upstream::{self, UpstreamBody};
use crate::auth::Auth;
use crate::config::ServingConfig;

pub const REVISION_HEADER: &str = "x-hearth-revision";
/// The same name, parsed once rather than on every answer.
const REVISION_HEADER_NAME: HeaderName = HeaderName::from_static(REVISION_HEADER);
/// Built at compile time rather than parsed on every answer.
const APPLICATION_JSON: HeaderValue = HeaderValue::from_static("application/json");
/// `Inference-Header-Content-Length`, as a name built once rather than parsed on every lookup.
const HEADER_LENGTH_NAME: HeaderName = HeaderName::from_static(HEADER_LENGTH);

/// Searchers for the byte strings every V2 JSON body is checked for, built once
/// (`memmem::find` builds one on every call).
static BINARY_DATA: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"binary_data"));
static MODEL_NAME: LazyLock<Finder<'static>> = LazyLock::new(|| Finder::new(b"\"model_name\""));

/// One service as routed now. Replaced whole by the controller on every change.
pub struct ServiceRoute {
    pub namespace: String,
    pub name: String,
    /// (pool, percent); percents add up to 100 when any revision is routable.
    pub targets: Vec<(Arc<RevisionPool>, u32)>,
    /// The runtime speaks V2 only: V1 requests are translated.
    pub runtime_v2_only: bool,
    /// The runtime speaks the binary tensor extension itself.
    pub runtime_binary: bool,
    pub timeout: Duration,
    pub cache: Option<Arc<ResponseCache>>,
    pub require_token: bool,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
    pub code: u16,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RevisionLabels {
    pub namespace: String,
    pub service: String,
    pub revision: String,
}

impl RevisionLabels {
    fn with_code(&self, code: u16) -> RequestLabels {
        RequestLabels {
            namespace: self.namespace.clone(),
            service: self.service.clone(),
            revision: self.revision.clone(),
            code,
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ServiceLabels {
    pub namespace: String,
    pub service: String,
}

/// Per-service and per-revision metrics, registered in the daemon's `/metrics`.
pub struct ServingMetrics {
    pub requests: Family<RequestLabels, Counter>,
    pub latency: Family<RevisionLabels, Histogram, fn() -> Histogram>,
    pub in_flight: Family<RevisionLabels, Gauge>,
    pub replicas_desired: Family<RevisionLabels, Gauge>,
    pub replicas_ready: Family<RevisionLabels, Gauge>,
    pub cold_starts: Family<RevisionLabels, Counter>,
    pub cold_start_seconds: Family<RevisionLabels, Histogram, fn() -> Histogram>,
    pub cache_hits: Family<ServiceLabels, Counter>,
    pub cache_misses: Family<ServiceLabels, Counter>,
}

/// One revision's series, looked up once when its pool is made: the per-request path
/// then touches atomics only.
#[derive(Debug)]
pub struct RevisionMetrics {
    pub labels: RevisionLabels,
    pub latency: Histogram,
    pub in_flight: Gauge,
    /// `requests{code="200"}`, the common case; other codes go through the family.
    pub succeeded: Counter,
    /// The `x-hearth-revision` value.
    pub header: HeaderValue,
}

fn seconds_histogram() -> Histogram {
    Histogram::new([
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
    ])
}

impl ServingMetrics {
    pub fn new() -> ServingMetrics {
        ServingMetrics {
            requests: Family::default(),
            latency: Family::new_with_constructor(seconds_histogram),
            in_flight: Family::default(),
            replicas_desired: Family::default(),
            replicas_ready: Family::default(),
            cold_starts: Family::default(),
            cold_start_seconds: Family::new_with_constructor(seconds_histogram),
            cache_hits: Family::default(),
            cache_misses: Family::default(),
        }
    }

    pub fn for_revision(&self, namespace: &str, service: &str, revision: &str) -> RevisionMetrics {
        let labels = RevisionLabels {
            namespace: namespace.to_string(),
            service: service.to_string(),
            revision: revision.to_string(),
        };
        let succeeded = self.requests.get_or_create(&labels.with_code(200)).clone();
        RevisionMetrics {
            latency: self.latency.get_or_create(&labels).clone(),
            in_flight: self.in_flight.get_or_create(&labels).clone(),
            succeeded,
            header: HeaderValue::from_str(revision).unwrap_or_else(|_| HeaderValue::from_static("invalid")),
            labels,
        }
    }

    /// Removes every series of one revision, so that revisions that come and go leave
    /// no label sets behind in `/metrics`.
    pub fn forget_revision(&self, labels: &RevisionLabels) {
        // Request series are kept by status code; the proxy answers with upstream's
        // codes, so every HTTP code is tried (once per revision, not per request).
        for code in 100..600 {
            self.requests.remove(&labels.with_code(code));
        }
        self.latency.remove(labels);
        self.in_flight.remove(labels);
        self.replicas_desired.remove(labels);
        self.replicas_ready.remove(labels);
        self.cold_starts.remove(labels);
        self.cold_start_seconds.remove(labels);
    }

    /// Removes the per-service series of a deleted service.
    pub fn forget_service(&self, namespace: &str, service: &str) {
        let labels = ServiceLabels {
            namespace: namespace.to_string(),
            service: service.to_string(),
        };
        self.cache_hits.remove(&labels);
        self.cache_misses.remove(&labels);
    }

    pub fn register(&self, metrics: &crate::metrics::Metrics) {
        metrics.register(
            "hearth_serving_requests",
            "Inference requests by code",
            self.requests.clone(),
        );
        metrics.register(
            "hearth_serving_request_seconds",
            "Inference latency through the proxy",
            self.latency.clone(),
        );
        metrics.register(
            "hearth_serving_in_flight",
            "Requests inside replicas",
            self.in_flight.clone(),
        );
        metrics.register(
            "hearth_serving_replicas_desired",
            "Replicas the autoscaler wants",
            self.replicas_desired.clone(),
        );
        metrics.register(
            "hearth_serving_replicas_ready",
            "Replicas taking requests",
            self.replicas_ready.clone(),
        );
        metrics.register(
            "hearth_serving_cold_starts",
            "Requests that waited for a replica from zero",
            self.cold_starts.clone(),
        );
        metrics.register(
            "hearth_serving_cold_start_seconds",
            "How long those requests waited",
            self.cold_start_seconds.clone(),
        );
        metrics.register(
            "hearth_serving_cache_hits",
            "Response cache hits",
            self.cache_hits.clone(),
        );
        metrics.register(
            "hearth_serving_cache_misses",
            "Response cache misses",
            self.cache_misses.clone(),
        );
    }
}

/// Shared by every data-plane worker and the controller.
pub struct DataPlane {
    pub config: Arc<ServingConfig>,
    /// By `{name}.{namespace}`, the host's prefix before the domain (names and
    /// namespaces are DNS labels, without dots): a request is resolved without
    /// building a key.
    routes: RwLock<HashMap<String, Arc<ServiceRoute>>>,
    /// Predictors behind a transformer, at `/_hearth/{namespace}/{revision}/...`.
    internal: RwLock<HashMap<(String, String), Arc<ServiceRoute>>>,
    /// The listener's address, once bound (transformers are told to call it).
    address: std::sync::OnceLock<std::net::SocketAddr>,
    pub auth: Option<Auth>,
    pub metrics: ServingMetrics,
}

impl DataPlane {
    pub fn new(config: Arc<ServingConfig>, auth: Option<Auth>) -> Arc<DataPlane> {
        Arc::new(DataPlane {
            config,
            routes: RwLock::new(HashMap::new()),
            internal: RwLock::new(HashMap::new()),
            address: std::sync::OnceLock::new(),
            auth,
            metrics: ServingMetrics::new(),
        })
    }

    pub fn set_route(&self, route: ServiceRoute) {
        let key = format!("{}.{}", route.name, route.namespace);
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.insert(key, Arc::new(route));
    }

    pub fn remove_route(&self, namespace: &str, name: &str) {
        let mut routes = self.routes.write().unwrap_or_else(|p| p.into_inner());
        routes.remove(&format!("{name}.{namespace}"));
        let mut internal = self.internal.write().unwrap_or_else(|p| p.into_inner());
        internal.retain(|(ns, _), route| !(ns == namespace && route.name == name));
    }

    pub fn set_internal(&self, namespace: &str, revision: &str, route: ServiceRoute) {
        let mut internal = self.internal.write().unwrap_or_else(|p| p.into_inner());
        internal.insert((namespace.to_string(), revision.to_string()), Arc::new(route));
    }

    pub fn remove_internal(&self, namespace: &str, revision: &str) {
        let mut internal = self.internal.write().unwrap_or_else(|p| p.into_inner());
        internal.remove(&(namespace.to_string(), revision.to_string()));
    }

    pub fn set_address(&self, address: std::net::SocketAddr) {
        let _ = self.address.set(address);
    }

    pub fn address(&self) -> Option<std::net::SocketAddr> {
        self.address.get().copied()
    }

    /// `/_hearth/{ns}/{revision}/v1/...`: the route and the protocol path.
    fn resolve_internal(&self, path: &str) -> Option<(Arc<ServiceRoute>, String)> {
        let rest = path.strip_prefix("/_hearth/")?;
        let mut parts = rest.splitn(3, '/');
        let (ns, revision, tail) = (parts.next()?, parts.next()?, parts.next()?);
        let internal = self.internal.read().unwrap_or_else(|p| p.into_inner());
        let route = internal.get(&(ns.to_string(), revision.to_string()))?;
        Some((Arc::clone(route), format!("/{tail}")))
    }

    /// `Host: {name}.{ns}.{domain}` first; else the model name when unique.
    fn resolve(&self, host: Option<&str>, model: &str) -> Result<Arc<ServiceRoute>, String> {
        let routes = self.routes.read().unwrap_or_else(|p| p.into_inner());
        if let Some(host) = host {
            let host = host.split(':').next().unwrap_or(host);
            let prefix = host
                .strip_suffix(self.config.domain.as_str())
                .and_then(|h| h.strip_suffix('.'));
            if let Some(prefix) = prefix {
                if let Some((name, ns)) = prefix.split_once('.') {
                    return routes
                        .get(prefix)
                        .cloned()
                        .ok_or_else(|| format!("no InferenceService {ns}/{name} is served here"));
                }
            }
        }
        let matches: Vec<&Arc<ServiceRoute>> = routes.values().filter(|r| r.name == model).collect();
        match matches.as_slice() {
            [one] => Ok(Arc::clone(one)),
            [] => Err(format!("no model named {model} is served here")),
            many => Err(format!(
                "{} InferenceServices are named {model}; address one with Host: {model}.<namespace>.{}",
                many.len(),
                self.config.domain
            )),
        }
    }
}

/// What the data plane answers with: a body built here, or a replica's streamed through.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type BoxError = Box<dyn std::error::Error + Send + Sync>;

fn full(body: impl Into<Bytes>) -> ProxyBody {
    Full::new(body.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

fn json_response(status: StatusCode, doc: serde_json::Value) -> Response<ProxyBody> {
    let mut response = Response::new(full(doc.to_string()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, APPLICATION_JSON);
    response
}

/// The problem body every client reads: KServe and tritonclient take `error`.
fn error(status: StatusCode, message: impl Into<String>, revision: Option<&str>) -> Response<ProxyBody> {
    let message = message.into();
    let mut response = json_response(status, json!({"error": message, "code": status.as_u16()}));
    if let Some(value) = revision.and_then(|r| HeaderValue::from_str(r).ok()) {
        response.headers_mut().insert(REVISION_HEADER_NAME, value);
    }
    response
}

/// The server-level endpoints (KServe V1 root, V2 health and metadata); `None` for
/// every other path.
fn server_endpoint(method: &Method, path: &str) -> Option<Response<ProxyBody>> {
    let doc = match path {
        "/v2/health/live" => json!({"live": true}),
        "/v2/health/ready" => json!({"ready": true}),
        "/" => json!({"status": "alive"}),
        "/v2" => json!({
            "name": "hearth",
            "version": env!("CARGO_PKG_VERSION"),
            "extensions": ["binary_tensor_data"]
        }),
        _ => return None,
    };
    if method != Method::GET && method != Method::HEAD {
        let mut refused = error(
            StatusCode::METHOD_NOT_ALLOWED,
            format!("{path} answers GET only"),
            None,
        );
        refused
            .headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
        return Some(refused);
    }
    Some(json_response(StatusCode::OK, doc))
}

/// What one data-plane request asks for.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Call {
    V1Ready,
    V1Predict,
    V2Metadata,
    V2Ready,
    V2Infer,
}

fn parse_path(path: &str) -> Option<(String, Call)> {
    if let Some(rest) = path.strip_prefix("/v1/models/") {
        if let Some(name) = rest.strip_suffix(":predict") {
            return Some((name.to_string(), Call::V1Predict));
        }
        if !rest.contains('/') && !rest.contains(':') && !rest.is_empty() {
            return Some((rest.to_string(), Call::V1Ready));
        }
        return None;
    }
    let rest = path.strip_prefix("/v2/models/")?;
    let (name, mut tail) = rest.split_once('/').unwrap_or((rest, ""));
    if name.is_empty() {
        return None;
    }
    // `/versions/{v}` is accepted and not told apart: a revision serves one version.
    if let Some(versioned) = tail.strip_prefix("versions/") {
        let (version, after) = versioned.split_once('/').unwrap_or((versioned, ""));
        if version.is_empty() {
            return None;
        }
        tail = after;
    }
    let call = match tail {
        "" => Call::V2Metadata,
        "ready" => Call::V2Ready,
        "infer" => Call::V2Infer,
        _ => return None,
    };
    Some((name.to_string(), call))
}

fn pick_target(route: &ServiceRoute) -> Option<Arc<RevisionPool>> {
    // One revision at 100 %, the common case, needs no random draw.
    if let [(pool, percent)] = route.targets.as_slice() {
        return (*percent > 0).then(|| Arc::clone(pool));
    }
    let total: u32 = route.targets.iter().map(|(_, p)| *p).sum();
    if total == 0 {
        return None;
    }
    let mut roll = rand::random_range(0..total);
    for (pool, percent) in &route.targets {
        if roll < *percent {
            return Some(Arc::clone(pool));
        }
        roll -= percent;
    }
    route.targets.last().map(|(p, _)| Arc::clone(p))
}

fn authorized(plane: &DataPlane, route: &ServiceRoute, headers: &HeaderMap) -> bool {
    if !route.require_token {
        return true;
    }
    let Some(auth) = &plane.auth else { return false };
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(presented_token);
    auth.authenticate(token.as_deref())
        .map(|p| p.can_access(&route.namespace))
        .unwrap_or(false)
}

/// Keeps Hearth's credentials from the replica, which runs the namespace owner's code:
/// a token stays only when it is that owner's own (a transformer may pass it on to a
/// predictor that requires it); an admin's or anyone else's is removed, as is the web
/// page's session cookie (browsers send it to every port of this host). A header that
/// is no Hearth credential (a model's own scheme) goes on untouched.
fn withhold_credentials(plane: &DataPlane, namespace: &str, headers: &mut HeaderMap) {
    let foreign = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(presented_token)
        .and_then(|token| plane.auth.as_ref()?.authenticate(Some(&token)).ok())
        .is_some_and(|p| p.admin || p.user != namespace);
    if foreign {
        headers.remove(header::AUTHORIZATION);
    }
    if headers.contains_key(header::COOKIE) {
        let kept: Vec<String> = headers
            .get_all(header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .map(str::trim)
            .filter(|pair| {
                !pair.is_empty()
                    && pair.split_once('=').map(|(n, _)| n.trim()) != Some(crate::http::session::COOKIE)
            })
            .map(str::to_string)
            .collect();
        headers.remove(header::COOKIE);
        if let Ok(value) = HeaderValue::from_str(&kept.join("; ")) {
            if !kept.is_empty() {
                headers.insert(header::COOKIE, value);
            }
        }
    }
}

/// The token of `Bearer <t>`, or the password of `Basic` (what a browser logged in to
/// the web page sends), as the API accepts them.
fn presented_token(value: &str) -> Option<String> {
    let (scheme, rest) = value.trim().split_once(' ')?;
    if scheme.eq_ignore_ascii_case("bearer") {
        return Some(rest.trim().to_string());
    }
    if scheme.eq_ignore_ascii_case("basic") {
        use base64::Engine;
        let decoded = base64::engine::general_purpose::STANDARD
            .decode(rest.trim())
            .ok()?;
        let (_, password) = String::from_utf8(decoded)
            .ok()?
            .split_once(':')
            .map(|(u, p)| (u.to_string(), p.to_string()))?;
        return Some(password);
    }
    None
}

/// Headers copied to and from replicas; hop-by-hop ones are the proxy's own (RFC 9110
/// section 7.6.1, and `Host` and `Content-Length`, which the proxy sets itself).
const HOP_BY_HOP: [HeaderName; 9] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::HOST,
    header::CONTENT_LENGTH,
];

fn hop_by_hop(name: &HeaderName) -> bool {
    HOP_BY_HOP.contains(name)
}

struct Prepared {
    path: String,
    body: RequestBody,
    content_type: &'static str,
    /// How to turn the replica's answer into the client's.
    answer: Answer,
}

/// The client's request body: read whole only when the proxy must look inside it
/// (translation, the response cache); otherwise handed to the replica as it arrives,
/// sized as the client sized it (a `Content-Length` body stays one, not chunked).
enum RequestBody {
    Full(Bytes),
    Streamed(Incoming),
}

#[derive(Debug, Clone, PartialEq)]
enum Answer {
    /// Pass through as is (streamed).
    Raw,
    /// V2 JSON back to the client's binary/JSON request form, `model_name` set.
    V2(BinaryOutputs),
    /// V2 JSON to V1 predictions.
    V1,
}

/// Why a request body was refused before anything reached a replica.
#[derive(Debug, thiserror::Error)]
enum BodyError {
    #[error("the request body is larger than the {0} bytes allowed (max_body_bytes)")]
    TooLarge(usize),
    #[error("reading the request body: {0}")]
    Read(String),
    #[error("{0}")]
    Invalid(String),
}

impl BodyError {
    fn status(&self) -> StatusCode {
        match self {
            BodyError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            BodyError::Read(_) | BodyError::Invalid(_) => StatusCode::BAD_REQUEST,
        }
    }
}

fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse().ok())
}

/// Whether `e` (or what caused it) is a body that went past its `Limited` size.
fn over_limit(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cause = Some(e);
    while let Some(e) = cause {
        if e.is::<http_body_util::LengthLimitError>() {
            return true;
        }
        cause = e.source();
    }
    false
}

async fn read_whole(body: Incoming, limit: usize) -> Result<Bytes, BodyError> {
    match Limited::new(body, limit).collect().await {
        Ok(collected) => Ok(collected.to_bytes()),
        Err(e) if over_limit(e.as_ref()) => Err(BodyError::TooLarge(limit)),
        Err(e) => Err(BodyError::Read(e.to_string())),
    }
}

/// What is sent to the replica for `call`, reading the body only when it must.
async fn prepare(
    (call, path): (Call, &str),
    model: &str,
    headers: &HeaderMap,
    body: Incoming,
    route: &ServiceRoute,
    max_body: usize,
) -> Result<Prepared, BodyError> {
    let declared = declared_length(headers);
    if declared.is_some_and(|n| n > max_body as u64) {
        return Err(BodyError::TooLarge(max_body));
    }
    let cached = route.cache.is_some() && matches!(call, Call::V1Predict | Call::V2Infer);
    // HTTP/1.1: a request without Content-Length or Transfer-Encoding has no body; the
    // replica gets none either (not an empty chunked one on a GET).
    let has_body = declared.is_some_and(|n| n > 0) || headers.contains_key(header::TRANSFER_ENCODING);
    let pass_through = |body: Incoming, content_type| async move {
        let body = if cached {
            RequestBody::Full(read_whole(body, max_body).await?)
        } else if !has_body {
            RequestBody::Full(Bytes::new())
        } else {
            RequestBody::Streamed(body)
        };
        Ok::<_, BodyError>(Prepared {
            path: path.to_string(),
            body,
            content_type,
            answer: Answer::Raw,
        })
    };
    match call {
        Call::V1Predict if route.runtime_v2_only => {
            let body = read_whole(body, max_body).await?;
            let doc = protocol::v1_to_v2(&body).map_err(|e| BodyError::Invalid(e.to_string()))?;
            Ok(Prepared {
                path: format!("/v2/models/{model}/infer"),
                body: RequestBody::Full(serde_json::to_vec(&doc).unwrap_or_default().into()),
                content_type: "application/json",
                answer: Answer::V1,
            })
        }
        Call::V2Infer => {
            let header_len = headers
                .get(HEADER_LENGTH_NAME)
                .map(|v| {
                    v.to_str()
                        .ok()
                        .and_then(|s| s.trim().parse::<usize>().ok())
                        .ok_or_else(|| BodyError::Invalid("bad Inference-Header-Content-Length".into()))
                })
                .transpose()?;
            if route.runtime_binary {
                return pass_through(body, "application/octet-stream").await;
            }
            let body = read_whole(body, max_body).await?;
            if header_len.is_none() && BINARY_DATA.find(&body).is_none() {
                // Plain JSON asking for no binary outputs: nothing to translate, so the
                // body goes as it came (the runtime judges it) and the answer is only
                // checked for `model_name`.
                return Ok(Prepared {
                    path: format!("/v2/models/{model}/infer"),
                    body: RequestBody::Full(body),
                    content_type: "application/json",
                    answer: Answer::V2(BinaryOutputs::default()),
                });
            }
            let (doc, wanted) = protocol::request_to_json(&body, header_len)
                .map_err(|e| BodyError::Invalid(e.to_string()))?;
            Ok(Prepared {
                path: format!("/v2/models/{model}/infer"),
                body: RequestBody::Full(serde_json::to_vec(&doc).unwrap_or_default().into()),
                content_type: "application/json",
                answer: Answer::V2(wanted),
            })
        }
        Call::V1Ready if route.runtime_v2_only => {
            let mut prepared = pass_through(body, "application/json").await?;
            prepared.path = format!("/v2/models/{model}/ready");
            Ok(prepared)
        }
        _ => pass_through(body, "application/json").await,
    }
}

/// Answers one data-plane request. `peer` tells transformer calls (from this host)
/// from outside ones; `max_body` bounds the client's body.
pub async fn handle(
    plane: &DataPlane,
    request: Request<Incoming>,
    peer: SocketAddr,
    max_body: usize,
) -> Response<ProxyBody> {
    let begun = Instant::now();
    if let Some(answer) = server_endpoint(request.method(), request.uri().path()) {
        return answer;
    }
    // A transformer calling its predictor: only from this host.
    let internal = if request.uri().path().starts_with("/_hearth/") {
        match plane.resolve_internal(request.uri().path()) {
            Some(found) if peer.ip().is_loopback() => Some(found),
            _ => {
                return error(
                    StatusCode::NOT_FOUND,
                    format!("no route for {}", request.uri().path()),
                    None,
                )
            }
        }
    } else {
        None
    };
    let path = internal
        .as_ref()
        .map(|(_, p)| p.clone())
        .unwrap_or_else(|| request.uri().path().to_string());
    let Some((model, call)) = parse_path(&path) else {
        return error(StatusCode::NOT_FOUND, format!("no route for {path}"), None);
    };
    let route = match internal {
        Some((route, _)) => route,
        None => {
            let host = request.headers().get(header::HOST).and_then(|h| h.to_str().ok());
            match plane.resolve(host, &model) {
                Ok(route) => route,
                Err(message) => return error(StatusCode::NOT_FOUND, message, None),
            }
        }
    };
    if !authorized(plane, &route, request.headers()) {
        return error(
            StatusCode::UNAUTHORIZED,
            "this InferenceService needs a bearer token for its namespace",
            None,
        );
    }
    let Some(pool) = pick_target(&route) else {
        let message = format!(
            "InferenceService {}/{} has no ready revision yet",
            route.namespace, route.name
        );
        return match call {
            // The kserve client reads 503 as "not ready" and needs a JSON body.
            Call::V1Ready | Call::V2Ready => json_response(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"name": model, "ready": false, "error": message}),
            ),
            _ => error(StatusCode::SERVICE_UNAVAILABLE, message, None),
        };
    };
    if matches!(call, Call::V1Ready | Call::V2Ready) {
        // A routed revision is ready by construction (it passed its readiness check);
        // at zero replicas the activator starts one on the first request, so the
        // model still counts as ready, as behind Knative's activator.
        let mut ready = json_response(StatusCode::OK, json!({"name": model, "ready": true}));
        ready
            .headers_mut()
            .insert(REVISION_HEADER_NAME, pool.metrics.header.clone());
        return ready;
    }
    let response = forward(plane, &route, &pool, (call, &path), &model, request, max_body).await;
    let metrics = &pool.metrics;
    match response.status().as_u16() {
        200 => metrics.succeeded.inc(),
        code => plane
            .metrics
            .requests
            .get_or_create(&metrics.labels.with_code(code))
            .inc(),
    };
    metrics.latency.observe(begun.elapsed().as_secs_f64());
    response
}

async fn forward(
    plane: &DataPlane,
    route: &ServiceRoute,
    pool: &Arc<RevisionPool>,
    (call, path): (Call, &str),
    model: &str,
    request: Request<Incoming>,
    max_body: usize,
) -> Response<ProxyBody> {
    let revision = pool.revision.as_str();
    let (parts, body) = request.into_parts();
    let prepared = match prepare((call, path), model, &parts.headers, body, route, max_body).await {
        Ok(p) => p,
        Err(e) => return error(e.status(), e.to_string(), Some(revision)),
    };
    let cache_key = match (&route.cache, call, &prepared.body) {
        (Some(_), Call::V1Predict | Call::V2Infer, RequestBody::Full(body)) => {
            Some(cache::key(revision, path, body))
        }
        _ => None,
    };
    if let (Some(cache), Some(key)) = (&route.cache, &cache_key) {
        let service_labels = ServiceLabels {
            namespace: route.namespace.clone(),
            service: route.name.clone(),
        };
        if let Some(hit) = cache.get(key) {
            plane.metrics.cache_hits.get_or_create(&service_labels).inc();
            return cached_response(hit, &pool.metrics.header);
        }
        plane.metrics.cache_misses.get_or_create(&service_labels).inc();
    }

    let waited_from_zero = pool.serving() == 0;
    let wait_began = Instant::now();
    let timeout = super::seconds(plane.config.activator_timeout_seconds);
    let lease = match pool.acquire(plane.config.activator_queue, timeout).await {
        Ok(lease) => lease,
        Err(e @ AcquireError::QueueFull(..)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), Some(revision))
        }
        Err(e @ AcquireError::Timeout(..)) => {
            return error(StatusCode::SERVICE_UNAVAILABLE, e.to_string(), Some(revision))
        }
    };
    if waited_from_zero {
        let labels = &pool.metrics.labels;
        plane.metrics.cold_starts.get_or_create(labels).inc();
        plane
            .metrics
            .cold_start_seconds
            .get_or_create(labels)
            .observe(wait_began.elapsed().as_secs_f64());
    }
    pool.metrics.in_flight.inc();
    let in_flight_pool = Arc::clone(pool);
    let _dec = scopeguard(move || {
        in_flight_pool.metrics.in_flight.dec();
    });

    // The client's headers go on, less the hop-by-hop ones (the replica's `Host` is its
    // own address, as a client calling it directly would send).
    let mut headers = parts.headers;
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    withhold_credentials(plane, &route.namespace, &mut headers);
    if prepared.answer != Answer::Raw {
        headers.remove(HEADER_LENGTH_NAME);
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static(prepared.content_type),
        );
    }
    headers.insert(header::HOST, lease.replica.host.clone());
    let body: UpstreamBody = match prepared.body {
        RequestBody::Full(bytes) => {
            if !bytes.is_empty() || parts.method != Method::GET {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(bytes.len()));
            }
            Either::Left(Full::new(bytes))
        }
        // hyper sizes it from the client's `Content-Length` (chunked without one).
        RequestBody::Streamed(incoming) => Either::Right(Limited::new(incoming, max_body)),
    };
    let mut upstream_request = Request::new(body);
    *upstream_request.method_mut() = parts.method;
    // The client's own URI when the replica is sent the same path (no parse, no copy).
    let same_uri = parts.uri.query().is_none() && parts.uri.path() == prepared.path;
    *upstream_request.uri_mut() = match if same_uri {
        Ok(parts.uri)
    } else {
        prepared.path.parse()
    } {
        Ok(uri) => uri,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                format!("the request path cannot be sent on: {e}"),
                Some(revision),
            )
        }
    };
    *upstream_request.headers_mut() = headers;

    let sent = tokio::time::timeout(
        route.timeout,
        upstream::send(lease.replica.addr, upstream_request),
    )
    .await;
    let (upstream_response, connection) = match sent {
        Ok(Ok(answered)) => answered,
        Ok(Err(upstream::UpstreamError::Http(e))) if over_limit(&e) => {
            let e = BodyError::TooLarge(max_body);
            return error(e.status(), e.to_string(), Some(revision));
        }
        Ok(Err(e)) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("the replica failed: {e}"),
                Some(revision),
            )
        }
        Err(_) => {
            return error(
                StatusCode::GATEWAY_TIMEOUT,
                format!("the replica did not answer within {:?}", route.timeout),
                Some(revision),
            )
        }
    };
    let (head, upstream_body) = upstream_response.into_parts();
    let status = head.status;
    if prepared.answer == Answer::Raw && cache_key.is_none() {
        let mut response = Response::new(
            LeasedBody {
                inner: upstream_body,
                held: Some((lease, connection)),
            }
            .boxed_unsync(),
        );
        *response.status_mut() = status;
        copy_headers(&head.headers, response.headers_mut());
        response
            .headers_mut()
            .insert(REVISION_HEADER_NAME, pool.metrics.header.clone());
        return response;
    }
    let bytes = match Limited::new(upstream_body, plane_limit()).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) => {
            return error(
                StatusCode::BAD_GATEWAY,
                format!("reading the replica's answer: {e}"),
                Some(revision),
            )
        }
    };
    connection.release();
    drop(lease);
    if !status.is_success() {
        let mut response = Response::new(full(bytes));
        *response.status_mut() = status;
        copy_headers(&head.headers, response.headers_mut());
        response
            .headers_mut()
            .insert(REVISION_HEADER_NAME, pool.metrics.header.clone());
        return response;
    }
    let converted = match &prepared.answer {
        Answer::Raw => Cached {
            body: bytes,
            header_len: head
                .headers
                .get(HEADER_LENGTH_NAME)
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok()),
            content_type: head
                .headers
                .get(header::CONTENT_TYPE)
                .cloned()
                .unwrap_or(APPLICATION_JSON),
        },
        Answer::V1 => match protocol::v2_to_v1(&bytes) {
            Ok(doc) => Cached {
                body: serde_json::to_vec(&doc).unwrap_or_default().into(),
                header_len: None,
                content_type: APPLICATION_JSON,
            },
            Err(e) => {
                return error(
                    StatusCode::BAD_GATEWAY,
                    format!("translating the V2 answer to V1: {e}"),
                    Some(revision),
                )
            }
        },
        Answer::V2(wanted) if !wanted.any() && MODEL_NAME.find(&bytes).is_some() => Cached {
            body: bytes,
            header_len: None,
            content_type: APPLICATION_JSON,
        },
        Answer::V2(wanted) => {
            let doc = match serde_json::from_slice(&bytes) {
                Ok(doc) => doc,
                Err(e) => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        format!("the replica's answer is not JSON: {e}"),
                        Some(revision),
                    )
                }
            };
            match protocol::response_from_json(doc, model, wanted) {
                Ok((body, header_len)) => Cached {
                    body: body.into(),
                    header_len,
                    content_type: if header_len.is_some() {
                        HeaderValue::from_static("application/octet-stream")
                    } else {
                        APPLICATION_JSON
                    },
                },
                Err(e) => {
                    return error(
                        StatusCode::BAD_GATEWAY,
                        format!("encoding binary outputs: {e}"),
                        Some(revision),
                    )
                }
            }
        }
    };
    if let (Some(cache), Some(key)) = (&route.cache, cache_key) {
        cache.put(key, converted.clone());
    }
    cached_response(converted, &pool.metrics.header)
}

fn plane_limit() -> usize {
    256 * 1024 * 1024
}

fn copy_headers(from: &HeaderMap, to: &mut HeaderMap) {
    for (name, value) in from {
        if !hop_by_hop(name) {
            to.append(name.clone(), value.clone());
        }
    }
}

fn cached_response(value: Cached, revision: &HeaderValue) -> Response<ProxyBody> {
    let mut response = Response::new(full(value.body));
    let headers = response.headers_mut();
    headers.insert(REVISION_HEADER_NAME, revision.clone());
    headers.insert(header::CONTENT_TYPE, value.content_type);
    if let Some(len) = value.header_len {
        headers.insert(HEADER_LENGTH_NAME, HeaderValue::from(len));
    }
    response
}

/// The replica's body streamed to the client, holding the replica's lease (and its
/// connection) until the last byte: then the connection goes back to the idle set.
/// Dropped before the end (the client went away), the connection is closed.
struct LeasedBody {
    inner: Incoming,
    held: Option<(Lease, upstream::Connection)>,
}

impl Body for LeasedBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let polled = std::pin::Pin::new(&mut self.inner).poll_frame(cx);
        if let std::task::Poll::Ready(None) = &polled {
            if let Some((lease, connection)) = self.held.take() {
                connection.release();
                drop(lease);
            }
        }
        polled.map(|frame| frame.map(|r| r.map_err(BoxError::from)))
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

struct Guard<F: FnOnce()>(Option<F>);

impl<F: FnOnce()> Drop for Guard<F> {
    fn drop(&mut self) {
        if let Some(f) = self.0.take() {
            f();
        }
    }
}

fn scopeguard<F: FnOnce()>(f: F) -> Guard<F> {
    Guard(Some(f))
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            parse_path("/v1/models/iris:predict"),
            Some(("iris".into(), Call::V1Predict))
        );
        assert_eq!(
            parse_path("/v1/models/iris"),
            Some(("iris".into(), Call::V1Ready))
        );
        assert_eq!(
            parse_path("/v2/models/iris/infer"),
            Some(("iris".into(), Call::V2Infer))
        );
        assert_eq!(
            parse_path("/v2/models/iris/versions/3/infer"),
            Some(("iris".into(), Call::V2Infer))
        );
        assert_eq!(
            parse_path("/v2/models/iris/ready"),
            Some(("iris".into(), Call::V2Ready))
        );
        assert_eq!(
            parse_path("/v2/models/iris"),
            Some(("iris".into(), Call::V2Metadata))
        );
        assert_eq!(parse_path("/v2/models/iris/bogus"), None);
    }
}
