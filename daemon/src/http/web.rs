//! The web page: one HTML document and its assets, embedded in the binary so that the
//! daemon needs no files beside itself. They are not API, so they stay out of the
//! OpenAPI document, but they are in the `RouteTable` (see `ROUTES`) so that a wrong
//! method is a 405 and a missing asset a 404 problem, as everywhere else.
//!
//! `/` answers the dashboard to a caller with credentials (the session cookie that a
//! login sets, or a bearer token) and the login page to one without: a browser never
//! meets a 401 and its password prompt. The login page posts the token to
//! `POST /hearth/v1/session` once, and from then on the browser sends the `HttpOnly`
//! cookie on every same-origin `fetch`: the page itself never keeps the token. Only
//! the login page's own assets ([`super::auth::PAGE_PATHS`]) are served without
//! credentials; the dashboard's script and libraries are not.
//!
//! Charts (uPlot) and graph layout (dagre) are vendored under `web/vendor/`, with their
//! licenses, exactly as the npm packages that `tests/browser/package-lock.json` pins
//! ship them (`tests/browser/vendored.mjs` compares the bytes).

use std::sync::OnceLock;

use actix_web::http::header::{self, HeaderValue};
use actix_web::{get, web, HttpRequest, HttpResponse};
use sha2::{Digest, Sha256};

use super::auth::Caller;
use super::errors::ApiError;

/// Route patterns served here, for the 405/404 logic of `RouteTable`.
pub const ROUTES: &[&str] = &["/", "/ui/{file}"];

/// Only this origin: no CDN, no inline script or style, no framing.
const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
                   connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

/// The assets change with every release, while their URLs do not (no fingerprints, no
/// build step), so a browser must revalidate each time; the ETag makes that a 304.
/// `private`: the answer needed credentials, so no shared cache may keep it.
const CACHE_CONTROL: &str = "no-cache, private";

struct Asset {
    /// The name under `/ui/`, or "" for the page itself at `/`.
    name: &'static str,
    content_type: &'static str,
    body: &'static [u8],
}

const INDEX: usize = 0;
/// The login page, answered at `/` to a caller without credentials.
const LOGIN: usize = 1;

const ASSETS: &[Asset] = &[
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../web/index.html"),
    },
    Asset {
        name: "",
        content_type: "text/html; charset=utf-8",
        body: include_bytes!("../../../web/login.html"),
    },
    Asset {
        name: "login.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/login.js"),
    },
    Asset {
        name: "charts.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/charts.js"),
    },
    Asset {
        name: "dag.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/dag.js"),
    },
    Asset {
        name: "uPlot.iife.min.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/vendor/uPlot.iife.min.js"),
    },
    Asset {
        name: "uPlot.min.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/vendor/uPlot.min.css"),
    },
    Asset {
        name: "dagre.esm.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/vendor/dagre.esm.js"),
    },
    Asset {
        name: "LICENSE.uplot",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../../web/vendor/LICENSE.uplot"),
    },
    Asset {
        name: "LICENSE.dagre",
        content_type: "text/plain; charset=utf-8",
        body: include_bytes!("../../../web/vendor/LICENSE.dagre"),
    },
    Asset {
        name: "app.js",
        content_type: "text/javascript; charset=utf-8",
        body: include_bytes!("../../../web/app.js"),
    },
    Asset {
        name: "app.css",
        content_type: "text/css; charset=utf-8",
        body: include_bytes!("../../../web/app.css"),
    },
    Asset {
        name: "favicon.svg",
        content_type: "image/svg+xml",
        body: include_bytes!("../../../web/favicon.svg"),
    },
];

/// A strong ETag per asset, computed once: the bodies are constants of the binary.
fn etag(index: usize) -> &'static str {
    static ETAGS: OnceLock<Vec<String>> = OnceLock::new();
    let etags = ETAGS.get_or_init(|| {
        ASSETS
            .iter()
            .map(|a| format!("\"{}\"", hex::encode(&Sha256::digest(a.body)[..12])))
            .collect()
    });
    etags.get(index).map(String::as_str).unwrap_or("\"\"")
}

/// Whether `If-None-Match` names this ETag (or `*`); weak validators compare equal,
/// as RFC 9110 asks for this header.
fn not_modified(req: &HttpRequest, etag: &str) -> bool {
    req.headers()
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim())
        .any(|t| t == "*" || t.trim_start_matches("W/") == etag)
}

fn serve(req: &HttpRequest, index: usize) -> HttpResponse {
    let etag = etag(index);
    let mut response = if not_modified(req, etag) {
        HttpResponse::NotModified().finish()
    } else {
        match ASSETS.get(index) {
            Some(asset) => HttpResponse::Ok()
                .content_type(asset.content_type)
                .body(asset.body),
            None => HttpResponse::NotFound().finish(),
        }
    };
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(CSP));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static(CACHE_CONTROL));
    if let Ok(value) = HeaderValue::from_str(etag) {
        headers.insert(header::ETAG, value);
    }
    response
}

/// The dashboard to a caller, the login page to anyone else (no credentials, a bad
/// token, or a session that expired or was logged out).
#[get("/")]
async fn page(caller: Option<Caller>, req: HttpRequest) -> HttpResponse {
    let mut response = match caller {
        Some(_) => serve(&req, INDEX),
        None => serve(&req, LOGIN),
    };
    // One URL, two documents: a cache must tell them apart by the credentials.
    response
        .headers_mut()
        .insert(header::VARY, HeaderValue::from_static("Cookie, Authorization"));
    response
}

/// An asset; only the login page's own (`PAGE_PATHS`) without credentials.
#[get("/ui/{file}")]
async fn ui_asset(
    caller: Option<Caller>,
    req: HttpRequest,
    file: web::Path<String>,
) -> Result<HttpResponse, ApiError> {
    let file = file.into_inner();
    let index = ASSETS
        .iter()
        .position(|a| !a.name.is_empty() && a.name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no web asset named {file:?}")))?;
    if caller.is_none() && !super::auth::PAGE_PATHS.contains(&req.path()) {
        return Err(ApiError::Unauthorized(
            "log in first: only the login page is served without a session".into(),
        ));
    }
    Ok(serve(&req, index))
}

/// Plain actix services (not `utoipa` ones): these are not part of the API. `#[get]`
/// guards the resource itself, so another method falls through to the app's default
/// service, which answers 405 with `Allow` from the `RouteTable`.
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(page).service(ui_asset);
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn etags_are_distinct_and_quoted() {
        let tags: Vec<&str> = (0..ASSETS.len()).map(etag).collect();
        for t in &tags {
            assert!(t.starts_with('"') && t.ends_with('"') && t.len() > 10, "{t}");
        }
        let mut unique = tags.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), tags.len());
    }

    #[test]
    fn if_none_match_accepts_lists_weak_tags_and_star() {
        let tag = etag(INDEX);
        let list = format!("\"other\", W/{tag}");
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, list.as_str()))
            .to_http_request();
        assert!(not_modified(&req, tag));
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "*"))
            .to_http_request();
        assert!(not_modified(&req, tag));
        let req = TestRequest::default()
            .insert_header((header::IF_NONE_MATCH, "\"other\""))
            .to_http_request();
        assert!(!not_modified(&req, tag));
        assert!(!not_modified(&TestRequest::default().to_http_request(), tag));
    }
}
