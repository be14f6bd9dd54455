//! Browser sessions: a login (`POST /hearth/v1/session` with a Hearth token) sets a
//! cookie naming a server-side session, so a browser (the web page, JupyterLab through
//! the notebook proxy) never keeps the token itself. The cookie is `HttpOnly` (no script
//! reads it), `SameSite=Strict` (no other site's page sends it: the CSRF defence) and
//! `Secure` when the login came over TLS. Sessions live in memory only: they expire
//! (`session_ttl_seconds` after the login, 12 h by default), end at logout
//! (`DELETE /hearth/v1/session`) and at a daemon restart, and a session whose token was
//! revoked or expired stops working at once, since each request re-checks the token
//! behind it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::header;
use actix_web::{delete, post, web, HttpRequest, HttpResponse};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::body::JsonBody;
use super::errors::ApiError;
use super::AppState;
use crate::auth::{hash_token, Principal};

/// The cookie's name.
pub const COOKIE: &str = "hearth_session";
/// Sessions kept at once; the oldest goes first beyond it.
const MAX_SESSIONS: usize = 10_000;

struct Session {
    /// The SHA-256 of the token logged in with: re-checked on every use.
    token_hash: [u8; 32],
    /// The token itself, kept in memory only, for the calls the daemon makes as this
    /// user to a listener that authenticates by token: the serving try-it route
    /// (`crate::serving::invoke`) presents it to the data plane, so that the request is
    /// authorized as this user and no one else.
    token: String,
    expires: Instant,
}

/// The server-side sessions, keyed by the SHA-256 of the cookie's secret.
#[derive(Clone)]
pub struct Sessions {
    inner: Arc<Mutex<HashMap<[u8; 32], Session>>>,
    /// How long a session lasts from its login (`session_ttl_seconds`).
    ttl: Duration,
}

fn new_secret() -> String {
    use rand::RngCore;
    let mut bytes = [0u8; 32];
    rand::rng().fill_bytes(&mut bytes);
    hex::encode(bytes)
}

impl Sessions {
    /// No sessions yet; each will last `ttl` from its login.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            inner: Arc::default(),
            ttl,
        }
    }

    /// How long a session lasts from its login.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Opens a session for an already checked token; answers the cookie's secret.
    fn open(&self, token: &str) -> String {
        let secret = new_secret();
        let now = Instant::now();
        let mut sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        sessions.retain(|_, s| s.expires > now);
        if sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = sessions.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                sessions.remove(&oldest);
            }
        }
        sessions.insert(
            hash_token(&secret),
            Session {
                token_hash: hash_token(token),
                token: token.to_string(),
                expires: now + self.ttl,
            },
        );
        secret
    }

    fn close(&self, secret: &str) {
        self.inner
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&hash_token(secret));
    }

    /// The token hash behind a live session.
    fn token_hash(&self, secret: &str) -> Option<[u8; 32]> {
        let mut sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        let key = hash_token(secret);
        match sessions.get(&key) {
            Some(s) if s.expires > Instant::now() => Some(s.token_hash),
            Some(_) => {
                sessions.remove(&key);
                None
            }
            None => None,
        }
    }

    /// The token behind a live session (see `Session::token`).
    pub fn token(&self, secret: &str) -> Option<String> {
        let sessions = self.inner.lock().unwrap_or_else(PoisonError::into_inner);
        sessions
            .get(&hash_token(secret))
            .filter(|s| s.expires > Instant::now())
            .map(|s| s.token.clone())
    }

    /// The caller a request's session cookie names, if it names a live session whose
    /// token is still valid.
    pub fn principal(&self, state: &AppState, req_cookie: Option<&str>) -> Option<Principal> {
        let secret = req_cookie?;
        let hash = self.token_hash(secret)?;
        state.auth.authenticate_hash(&hash).ok()
    }
}

/// The session cookie's value in a request's `Cookie` headers (RFC 6265 §4.2:
/// `name=value` pairs separated by `; `).
pub fn cookie_value(headers: &header::HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == COOKIE)
        .map(|(_, value)| value.trim_matches('"').to_string())
}

/// A login: a Hearth token (an API token of the user).
#[derive(Deserialize, ToSchema)]
pub struct Login {
    /// A token issued by `POST /hearth/v1/tokens` or `POST /hearth/v1/users`.
    pub token: String,
}

/// The session opened.
#[derive(Serialize, ToSchema)]
pub struct SessionInfo {
    pub user: String,
    pub admin: bool,
    /// Seconds until the session expires.
    pub expires_in_seconds: u64,
}

/// The `Set-Cookie` value (RFC 6265 §4.1): the secret is hex, so it needs no quoting.
fn session_cookie(req: &HttpRequest, value: &str, max_age: Duration) -> String {
    // The listener's own TLS, not a client's `X-Forwarded-Proto`.
    let secure = if req.app_config().secure() { "; Secure" } else { "" };
    format!(
        "{COOKIE}={value}; Path=/; Max-Age={}; HttpOnly; SameSite=Strict{secure}",
        max_age.as_secs()
    )
}

/// Log in: checks the token and sets the session cookie (`HttpOnly`,
/// `SameSite=Strict`, `Secure` over TLS). No bearer header is needed on this route.
#[utoipa::path(tag = "access", request_body = Login,
    responses((status = 201, body = SessionInfo)))]
#[post("/hearth/v1/session")]
async fn login(
    req: HttpRequest,
    state: web::Data<AppState>,
    body: JsonBody<Login>,
) -> Result<HttpResponse, ApiError> {
    let token = body.0.token.trim();
    let principal = state.auth.authenticate(Some(token))?;
    let secret = state.sessions.open(token);
    let ttl = state.sessions.ttl();
    Ok(HttpResponse::Created()
        .insert_header((header::SET_COOKIE, session_cookie(&req, &secret, ttl)))
        .json(SessionInfo {
            user: principal.user,
            admin: principal.admin,
            expires_in_seconds: ttl.as_secs(),
        }))
}

/// Log out: ends the session of the request's cookie and clears the cookie.
#[utoipa::path(tag = "access", responses((status = 204, description = "Logged out")))]
#[delete("/hearth/v1/session")]
async fn logout(req: HttpRequest, state: web::Data<AppState>) -> HttpResponse {
    if let Some(secret) = cookie_value(req.headers()) {
        state.sessions.close(&secret);
    }
    HttpResponse::NoContent()
        .insert_header((header::SET_COOKIE, session_cookie(&req, "", Duration::ZERO)))
        .finish()
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    cfg.service(login).service(logout);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_names_its_token_until_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let secret = sessions.open("hth_abc");
        assert_eq!(sessions.token_hash(&secret), Some(hash_token("hth_abc")));
        assert_eq!(sessions.token_hash("other"), None);
        assert_eq!(sessions.token(&secret).as_deref(), Some("hth_abc"));
        assert_eq!(sessions.token("other"), None);
        sessions.close(&secret);
        assert_eq!(sessions.token_hash(&secret), None);
        assert_eq!(sessions.token(&secret), None);
    }

    #[test]
    fn an_expired_session_names_nothing_and_is_dropped() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let secret = sessions.open("hth_abc");
        {
            let mut inner = sessions.inner.lock().unwrap();
            let session = inner.get_mut(&hash_token(&secret)).unwrap();
            session.expires = Instant::now() - Duration::from_secs(1);
        }
        assert_eq!(sessions.token_hash(&secret), None);
        assert!(sessions.inner.lock().unwrap().is_empty());
    }

    #[test]
    fn the_cookie_is_found_among_others() {
        let mut headers = header::HeaderMap::new();
        headers.insert(
            header::COOKIE,
            "_xsrf=1; hearth_session=s3cret; x=y".parse().unwrap(),
        );
        assert_eq!(cookie_value(&headers).as_deref(), Some("s3cret"));
    }
}
