//! The notebook proxy at `/notebook/{namespace}/{name}/...` on the API listener
//! (Kubeflow's URL of a notebook). The caller authenticates to Hearth only (a bearer
//! token, or the session cookie of `crate::http::session`); the proxy checks the
//! namespace is theirs, takes Hearth's credentials out (the `Authorization` header and
//! the session cookie), adds the Jupyter server's own token, and forwards to the
//! server on 127.0.0.1:
//! - HTTP both ways as streams: an upload is handed on as it arrives, never held whole,
//!   and so is the answer;
//! - websockets (kernel channels, terminals): the handshake is actix-http's
//!   (`ws::handshake`) towards the browser and awc's client towards Jupyter, and
//!   messages are relayed frame by frame, subprotocol included.
//!
//! Cross-site requests are refused: a browser's `Origin` must name the host it sent the
//! request to (a page of another site cannot open a websocket with the user's cookie;
//! `SameSite=Strict` already keeps the cookie off other sites' requests). Upstream, the
//! request's `Host` and `Origin` become the server's own loopback address, so Jupyter's
//! host and origin checks see a local client.

use std::time::Duration;

use actix_http::ws::{self, Codec, Frame, Message};
use actix_web::http::header::{self, HeaderMap, HeaderName, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse};
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use tokio_util::codec::{Decoder, Encoder};

use super::Upstream;
use crate::auth::Principal;
use crate::http::errors::ApiError;
use crate::http::AppState;

/// The proxy's path pattern (for the route table's 404/405 logic).
pub const ROUTE: &str = "/notebook/{namespace}/{name}/{tail}*";
/// The largest websocket message relayed (kernel outputs with images can be large).
const MAX_FRAME: usize = 64 * 1024 * 1024;

/// One awc client per worker (awc clients live on one thread), with no timeout (long
/// polls, large uploads), no redirects followed and no headers of its own.
struct ProxyClient(awc::Client);

pub fn routes(cfg: &mut web::ServiceConfig) {
    let client = awc::Client::builder()
        .disable_timeout()
        .disable_redirects()
        .no_default_headers()
        .connector(awc::Connector::new().conn_keep_alive(Duration::from_secs(60)))
        .finish();
    cfg.app_data(web::Data::new(ProxyClient(client))).service(
        web::resource([
            "/notebook/{namespace}/{name}",
            "/notebook/{namespace}/{name}/{tail:.*}",
        ])
        .to(proxy),
    );
}

/// Hop-by-hop headers, and those the proxy sets itself.
fn not_forwarded(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authorization"
            | "transfer-encoding"
            | "upgrade"
            | "te"
            | "trailer"
            | "expect"
            | "host"
            | "authorization"
            | "cookie"
            | "origin"
            | "referer"
            | "sec-websocket-key"
            | "sec-websocket-version"
            | "sec-websocket-extensions"
            | "sec-websocket-accept"
            | "sec-websocket-protocol"
    )
}

/// The `Cookie` header without Hearth's session cookie (Jupyter's own, `_xsrf` and
/// the like, go on).
fn forwarded_cookies(headers: &HeaderMap) -> Option<String> {
    let kept: Vec<&str> = headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|pair| {
            !pair.is_empty() && pair.split('=').next().map(str::trim) != Some(crate::http::session::COOKIE)
        })
        .collect();
    (!kept.is_empty()).then(|| kept.join("; "))
}

/// Whether a browser's `Origin` names the host the request was sent to. No `Origin`
/// (curl, Python clients) is no cross-site request.
fn same_origin(req: &HttpRequest) -> bool {
    let mut origins = req.headers().get_all(header::ORIGIN);
    let Some(origin) = origins.next() else {
        return true;
    };
    // One origin per request (RFC 6454 §7.3); several is no answer.
    let (None, Ok(origin)) = (origins.next(), origin.to_str()) else {
        return false;
    };
    let Ok(origin) = url::Url::parse(origin) else {
        return false;
    };
    let Some(origin_host) = origin.host_str() else {
        return false;
    };
    // The Host the browser sent (HTTP/2: the authority), never `X-Forwarded-Host`,
    // which a client may set.
    let Some(host) = req
        .headers()
        .get(header::HOST)
        .and_then(|v| v.to_str().ok())
        .or_else(|| req.uri().authority().map(|a| a.as_str()))
    else {
        return false;
    };
    let origin_authority = match origin.port() {
        Some(port) => format!("{origin_host}:{port}"),
        None => origin_host.to_string(),
    };
    let default_port = match origin.scheme() {
        "https" => ":443",
        _ => ":80",
    };
    host.eq_ignore_ascii_case(&origin_authority)
        || host.eq_ignore_ascii_case(&format!("{origin_authority}{default_port}"))
}

fn is_websocket(req: &HttpRequest) -> bool {
    req.headers()
        .get(header::UPGRADE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
}

async fn proxy(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
    client: web::Data<ProxyClient>,
) -> Result<HttpResponse, ApiError> {
    let principal = req
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| ApiError::Unauthorized("log in first".into()))?;
    let namespace = req.match_info().get("namespace").unwrap_or_default().to_string();
    let name = req.match_info().get("name").unwrap_or_default().to_string();
    if !principal.can_access(&namespace) {
        return Err(ApiError::Forbidden(format!(
            "namespace {namespace} belongs to another user"
        )));
    }
    if !same_origin(&req) {
        return Err(ApiError::Forbidden(
            "cross-origin request refused: Origin does not name this host".into(),
        ));
    }
    if req.match_info().get("tail").is_none() {
        // The server lives under `{base_url}`, with its slash.
        let query = req.query_string();
        let location = if query.is_empty() {
            format!("{}/", req.path())
        } else {
            format!("{}/?{query}", req.path())
        };
        return Ok(HttpResponse::TemporaryRedirect()
            .insert_header((header::LOCATION, location))
            .finish());
    }
    let upstream = state.notebooks.upstream(&namespace, &name).ok_or_else(|| {
        ApiError::Unavailable(format!(
            "notebook {namespace}/{name} has no ready server (it may be starting, stopped, or not exist)"
        ))
    })?;
    if is_websocket(&req) {
        return websocket(req, payload, &client.0, &upstream).await;
    }
    forward(req, payload, &client.0, &upstream).await
}

fn target(req: &HttpRequest, upstream: &Upstream, scheme: &str) -> String {
    let path_and_query = req.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/");
    format!("{scheme}://127.0.0.1:{}{path_and_query}", upstream.port)
}

/// The headers that go to Jupyter: the client's, less Hearth's credentials and the
/// hop-by-hop ones, with the server's token and its own origin.
fn upstream_headers(req: &HttpRequest, upstream: &Upstream) -> Vec<(HeaderName, HeaderValue)> {
    let mut out: Vec<(HeaderName, HeaderValue)> = req
        .headers()
        .iter()
        .filter(|(name, _)| !not_forwarded(name))
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    let origin = format!("http://127.0.0.1:{}", upstream.port);
    if let Ok(value) = HeaderValue::from_str(&format!("token {}", upstream.token)) {
        out.push((header::AUTHORIZATION, value));
    }
    if let Some(cookies) = forwarded_cookies(req.headers()).and_then(|c| HeaderValue::from_str(&c).ok()) {
        out.push((header::COOKIE, cookies));
    }
    if req.headers().contains_key(header::ORIGIN) {
        if let Ok(value) = HeaderValue::from_str(&origin) {
            out.push((header::ORIGIN, value));
        }
    }
    if let Some(referer) = req.headers().get(header::REFERER).and_then(|v| v.to_str().ok()) {
        // Same path, the server's own origin.
        let path = url::Url::parse(referer)
            .map(|u| u[url::Position::BeforePath..].to_string())
            .unwrap_or_else(|_| "/".into());
        if let Ok(value) = HeaderValue::from_str(&format!("{origin}{path}")) {
            out.push((header::REFERER, value));
        }
    }
    out
}

async fn forward(
    req: HttpRequest,
    payload: web::Payload,
    client: &awc::Client,
    upstream: &Upstream,
) -> Result<HttpResponse, ApiError> {
    let mut request = client.request(req.method().clone(), target(&req, upstream, "http"));
    for (name, value) in upstream_headers(&req, upstream) {
        request = request.append_header((name, value));
    }
    let length = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let chunked = req.headers().contains_key(header::TRANSFER_ENCODING);
    let sent = match (length, chunked) {
        (Some(n), _) if n > 0 => {
            request
                .send_body(actix_web::body::SizedStream::new(n, payload))
                .await
        }
        (_, true) => request.send_stream(payload).await,
        _ => request.send().await,
    };
    let answer =
        sent.map_err(|e| ApiError::Unavailable(format!("the notebook server did not answer: {e}")))?;
    let mut builder = HttpResponse::build(answer.status());
    for (name, value) in answer.headers() {
        if !matches!(
            name.as_str(),
            "connection"
                | "keep-alive"
                | "transfer-encoding"
                | "content-length"
                | "upgrade"
                | "te"
                | "trailer"
        ) {
            builder.append_header((name.clone(), value.clone()));
        }
    }
    if answer.status() == StatusCode::NO_CONTENT || answer.status() == StatusCode::NOT_MODIFIED {
        return Ok(builder.finish());
    }
    Ok(builder.streaming(answer))
}

/// A frame read from one side as the message to write to the other.
fn relay(frame: Frame) -> Option<Message> {
    Some(match frame {
        Frame::Text(b) => match bytestring_of(b) {
            Some(s) => s,
            None => Message::Close(Some(ws::CloseCode::Invalid.into())),
        },
        Frame::Binary(b) => Message::Binary(b),
        Frame::Continuation(item) => Message::Continuation(item),
        Frame::Ping(b) => Message::Ping(b),
        Frame::Pong(b) => Message::Pong(b),
        Frame::Close(reason) => Message::Close(reason),
    })
}

fn bytestring_of(bytes: Bytes) -> Option<Message> {
    bytes.try_into().ok().map(Message::Text)
}

async fn websocket(
    req: HttpRequest,
    payload: web::Payload,
    client: &awc::Client,
    upstream: &Upstream,
) -> Result<HttpResponse, ApiError> {
    ws::verify_handshake(req.head())
        .map_err(|e| ApiError::BadRequest(format!("websocket handshake: {e}")))?;
    let accept = req
        .headers()
        .get(header::SEC_WEBSOCKET_KEY)
        .map(|key| ws::hash_key(key.as_bytes()))
        .ok_or_else(|| ApiError::BadRequest("websocket handshake: no Sec-WebSocket-Key".into()))?;
    let mut handshake = HttpResponse::build(StatusCode::SWITCHING_PROTOCOLS);
    handshake.upgrade("websocket").insert_header((
        header::SEC_WEBSOCKET_ACCEPT,
        HeaderValue::from_bytes(&accept).map_err(|e| ApiError::Internal(e.to_string()))?,
    ));
    let mut connect = client.ws(target(&req, upstream, "ws")).max_frame_size(MAX_FRAME);
    for (name, value) in upstream_headers(&req, upstream) {
        connect = connect.set_header(name, value);
    }
    let protocols: Vec<String> = req
        .headers()
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty())
        .collect();
    if !protocols.is_empty() {
        connect = connect.protocols(protocols);
    }
    let (answer, mut server) = connect
        .connect()
        .await
        .map_err(|e| ApiError::Unavailable(format!("the notebook server refused the websocket: {e}")))?;
    if let Some(chosen) = answer.headers().get(header::SEC_WEBSOCKET_PROTOCOL) {
        handshake.insert_header((header::SEC_WEBSOCKET_PROTOCOL, chosen.clone()));
    }
    let (to_browser, from_server) = tokio::sync::mpsc::channel::<Bytes>(64);
    actix_web::rt::spawn(async move {
        let mut payload = payload;
        // Towards the browser: the server side of the protocol (unmasked frames); from
        // it, masked frames.
        let mut browser_codec = Codec::new().max_size(MAX_FRAME);
        let mut incoming = BytesMut::new();
        loop {
            tokio::select! {
                chunk = payload.next() => {
                    let Some(Ok(chunk)) = chunk else {
                        let _ = server.send(Message::Close(None)).await;
                        break;
                    };
                    incoming.extend_from_slice(&chunk);
                    loop {
                        match browser_codec.decode(&mut incoming) {
                            Ok(Some(frame)) => {
                                let closing = matches!(frame, Frame::Close(_));
                                if let Some(message) = relay(frame) {
                                    if server.send(message).await.is_err() {
                                        return;
                                    }
                                }
                                if closing {
                                    break;
                                }
                            }
                            Ok(None) => break,
                            Err(_) => {
                                let _ = server.send(Message::Close(Some(ws::CloseCode::Protocol.into()))).await;
                                return;
                            }
                        }
                    }
                }
                frame = server.next() => {
                    let Some(Ok(frame)) = frame else { break };
                    let closing = matches!(frame, Frame::Close(_));
                    let Some(message) = relay(frame) else { continue };
                    let mut out = BytesMut::new();
                    if browser_codec.encode(message, &mut out).is_err() {
                        break;
                    }
                    if to_browser.send(out.freeze()).await.is_err() {
                        break;
                    }
                    if closing {
                        break;
                    }
                }
            }
        }
    });
    let body = futures_util::stream::unfold(from_server, |mut rx| async move {
        rx.recv()
            .await
            .map(|bytes| (Ok::<Bytes, actix_web::Error>(bytes), rx))
    });
    Ok(handshake.streaming(body))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hearths_cookie_is_taken_out_and_jupyters_kept() {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "_xsrf=abc; hearth_session=secret; a=b".parse().unwrap(),
        );
        assert_eq!(forwarded_cookies(&headers).as_deref(), Some("_xsrf=abc; a=b"));
        let mut only = HeaderMap::new();
        only.insert(header::COOKIE, "hearth_session=secret".parse().unwrap());
        assert_eq!(forwarded_cookies(&only), None);
    }

    #[test]
    fn credentials_and_hop_by_hop_headers_are_not_forwarded() {
        for name in ["authorization", "cookie", "host", "upgrade", "origin"] {
            assert!(not_forwarded(&HeaderName::from_static(name)), "{name}");
        }
        assert!(!not_forwarded(&HeaderName::from_static("content-type")));
        assert!(!not_forwarded(&HeaderName::from_static("x-xsrftoken")));
    }

    #[actix_web::test]
    async fn a_foreign_origin_is_cross_site() {
        let same = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8470"))
            .insert_header((header::ORIGIN, "http://127.0.0.1:8470"))
            .to_http_request();
        assert!(same_origin(&same));
        let foreign = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8470"))
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!same_origin(&foreign));
        let none = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8470"))
            .to_http_request();
        assert!(same_origin(&none));
        let forwarded = actix_web::test::TestRequest::default()
            .insert_header((header::HOST, "127.0.0.1:8470"))
            .insert_header(("x-forwarded-host", "evil.example"))
            .insert_header((header::ORIGIN, "http://evil.example"))
            .to_http_request();
        assert!(!same_origin(&forwarded));
    }
}
