//! The CLI's connection to a Hearth API: where it is and which token to present
//! (`HEARTH_URL`/`HEARTH_TOKEN`, else the file `hearth login` wrote), and JSON requests
//! whose failures become one readable line.

use std::path::{Path, PathBuf};
use std::time::Duration;

use reqwest::blocking::RequestBuilder;
use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::trust::{self, TlsFlags, Trust};

/// Every way a CLI command fails; `main` prints it as one line and exits 1.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error("not logged in: run `hearth login URL --token TOKEN`, or set HEARTH_URL and HEARTH_TOKEN")]
    NotLoggedIn,
    #[error("{0}")]
    Input(String),
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {detail}")]
    Config { path: PathBuf, detail: String },
    #[error("cannot reach {url}: {detail}")]
    Connect { url: String, detail: String },
    /// The server refused: its problem+json `detail`, Kubernetes Status `message` or
    /// KFP `error`, with the HTTP status.
    #[error("{message} (HTTP {status})")]
    Server { status: u16, message: String },
    #[error("{0}")]
    Output(String),
}

/// The file `hearth login` writes: `$XDG_CONFIG_HOME/hearth/cli.toml` (else
/// `~/.config/hearth/cli.toml`), mode 0600 since it holds the token.
#[derive(Debug, Serialize, Deserialize)]
pub struct LoginConfig {
    /// The API's base URL: `http://127.0.0.1:8470` on the daemon's host, its
    /// `https://` address (`tls_listen`) from elsewhere.
    pub url: String,
    pub token: String,
    /// The kubeconfig `hearth login` wrote, for `hearth kubeconfig` to name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kubeconfig: Option<PathBuf>,
    /// The CA (PEM) an `https://` URL is verified with; absent: the host's roots.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub certificate_authority: Option<String>,
    /// The login was made with `--insecure-skip-tls-verify`: every command warns.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub insecure_skip_tls_verify: bool,
}

/// `$XDG_CONFIG_HOME/hearth`, else `$HOME/.config/hearth`.
pub fn config_dir() -> Result<PathBuf, CliError> {
    if let Some(dir) = std::env::var_os("XDG_CONFIG_HOME").filter(|d| !d.is_empty()) {
        return Ok(PathBuf::from(dir).join("hearth"));
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(home) => Ok(PathBuf::from(home).join(".config").join("hearth")),
        None => Err(CliError::Input(
            "neither XDG_CONFIG_HOME nor HOME is set: cannot place the CLI config".into(),
        )),
    }
}

pub fn config_path() -> Result<PathBuf, CliError> {
    Ok(config_dir()?.join("cli.toml"))
}

impl LoginConfig {
    /// The trust the login was made with.
    pub fn trust(&self) -> Trust {
        match (&self.certificate_authority, self.insecure_skip_tls_verify) {
            (_, true) => Trust::Insecure,
            (Some(pem), false) => Trust::Ca(pem.clone()),
            (None, false) => Trust::System,
        }
    }

    pub fn read(path: &Path) -> Result<Option<LoginConfig>, CliError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(CliError::Io {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        toml::from_str(&text).map(Some).map_err(|e| CliError::Config {
            path: path.to_path_buf(),
            detail: e.message().to_string(),
        })
    }

    pub fn write(&self, path: &Path) -> Result<(), CliError> {
        let io = |source| CliError::Io {
            path: path.to_path_buf(),
            source,
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let text = toml::to_string(self).map_err(|e| CliError::Output(e.to_string()))?;
        crate::auth::write_private_file(path, &text).map_err(io)
    }
}

/// A Hearth API endpoint and the token to present to it.
pub struct Client {
    base: String,
    token: String,
    trust: Trust,
    http: reqwest::blocking::Client,
}

impl Client {
    /// A client for `url` (`http://` on loopback only: elsewhere the token would cross
    /// the network in clear text; `https://` verified as `trust` says).
    pub fn new(url: &str, token: &str, trust: Trust) -> Result<Client, CliError> {
        let base = url.trim_end_matches('/').to_string();
        let parsed = url::Url::parse(&base).map_err(|e| CliError::Input(format!("URL {url:?}: {e}")))?;
        // reqwest (built without a provider of its own) wants the process default even
        // for plain HTTP; ring, as the rest of Hearth. An error only says one is set.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let mut builder = reqwest::blocking::Client::builder().timeout(Duration::from_secs(60));
        match parsed.scheme() {
            "http" if is_loopback(&parsed) => {}
            "http" => {
                return Err(CliError::Input(format!(
                    "URL {url:?}: plain HTTP would send the token across the network in clear text; give the server's https:// address (tls_listen, port 8472 by default)"
                )))
            }
            "https" => {
                if trust == Trust::Insecure {
                    trust::warn_insecure(&base);
                }
                builder = builder.tls_backend_preconfigured(trust::client_config(&trust)?);
            }
            _ => {
                return Err(CliError::Input(format!(
                    "URL {url:?}: give the API's https:// address (e.g. https://gpu-box:8472), or http://127.0.0.1:8470 on the daemon's host"
                )))
            }
        }
        let http = builder.build().map_err(|e| CliError::Connect {
            url: base.clone(),
            detail: chain(&e),
        })?;
        Ok(Client {
            base,
            token: token.trim().to_string(),
            trust,
            http,
        })
    }

    /// `HEARTH_URL` and `HEARTH_TOKEN` when set, else the login file; TLS trust from
    /// `flags`, else the login's own when the URL is the login's.
    pub fn from_environment(flags: &TlsFlags) -> Result<Client, CliError> {
        let env = |name| std::env::var(name).ok().filter(|v: &String| !v.is_empty());
        let saved = LoginConfig::read(&config_path()?)?;
        let url = env("HEARTH_URL").or_else(|| saved.as_ref().map(|c| c.url.clone()));
        let token = env("HEARTH_TOKEN").or_else(|| saved.as_ref().map(|c| c.token.clone()));
        let (Some(url), Some(token)) = (url, token) else {
            return Err(CliError::NotLoggedIn);
        };
        let trust = match flags.trust()? {
            Some(trust) => trust,
            None => saved
                .as_ref()
                .filter(|c| c.url.trim_end_matches('/') == url.trim_end_matches('/'))
                .map_or(Trust::System, LoginConfig::trust),
        };
        Client::new(&url, &token, trust)
    }

    /// What this client verifies the server's certificate with.
    pub fn trust(&self) -> &Trust {
        &self.trust
    }

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn token(&self) -> &str {
        &self.token
    }

    fn request(&self, method: Method, path: &str) -> RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.base))
            .bearer_auth(&self.token)
    }

    /// Sends `builder` and reads a JSON reply (`null` for an empty body).
    pub fn send(&self, builder: RequestBuilder) -> Result<Value, CliError> {
        let reply = builder.send().map_err(|e| {
            let mut detail = chain(&e);
            if let Some(hint) = trust::certificate_hint(&detail) {
                detail = format!("{detail} ({hint})");
            }
            CliError::Connect {
                url: self.base.clone(),
                detail,
            }
        })?;
        let status = reply.status();
        let text = reply.text().map_err(|e| CliError::Connect {
            url: self.base.clone(),
            detail: chain(&e),
        })?;
        if !status.is_success() {
            return Err(CliError::Server {
                status: status.as_u16(),
                message: error_message(&text, status.canonical_reason().unwrap_or("error")),
            });
        }
        if text.trim().is_empty() {
            return Ok(Value::Null);
        }
        serde_json::from_str(&text).map_err(|e| CliError::Server {
            status: status.as_u16(),
            message: format!("the reply is not JSON: {e}"),
        })
    }

    pub fn get(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(Method::GET, path))
    }

    pub fn delete(&self, path: &str) -> Result<Value, CliError> {
        self.send(self.request(Method::DELETE, path))
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, CliError> {
        self.send(self.request(Method::POST, path).json(body))
    }
}

/// Whether `url` names this host (`localhost` or a loopback address).
fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(name)) => name.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// The one line a failed reply says: problem+json `detail` (with its `field`), a
/// Kubernetes Status `message`, KFP's `error`/`message`, else the body's first line.
pub fn error_message(body: &str, reason: &str) -> String {
    let Ok(doc) = serde_json::from_str::<Value>(body) else {
        let line = body.lines().find(|l| !l.trim().is_empty()).unwrap_or(reason);
        return line.trim().to_string();
    };
    let text = |key: &str| doc[key].as_str().filter(|s| !s.is_empty());
    let message = text("detail")
        .or_else(|| text("message"))
        .or_else(|| text("error"))
        .or_else(|| text("title"))
        .unwrap_or(reason);
    let one_line = message.split_whitespace().collect::<Vec<_>>().join(" ");
    match text("field") {
        Some(field) if !one_line.contains(field) => format!("{field}: {one_line}"),
        _ => one_line,
    }
}

/// An error and its causes on one line (reqwest's own message omits the cause).
fn chain(error: &dyn std::error::Error) -> String {
    let mut out = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        out.push_str(": ");
        out.push_str(&cause.to_string());
        source = cause.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_lines_come_from_each_error_shape() {
        let problem = r#"{"type":"about:blank","title":"Bad Request","status":400,"detail":"must be a DNS label","field":"name"}"#;
        assert_eq!(error_message(problem, "x"), "name: must be a DNS label");
        let status =
            r#"{"kind":"Status","status":"Failure","message":"jobs.batch \"x\" not found\n","code":404}"#;
        assert_eq!(error_message(status, "x"), r#"jobs.batch "x" not found"#);
        let kfp = r#"{"error":"run r not found","code":5}"#;
        assert_eq!(error_message(kfp, "x"), "run r not found");
        assert_eq!(error_message("", "Bad Gateway"), "Bad Gateway");
        assert_eq!(error_message("oops\nmore", "x"), "oops");
    }
}
