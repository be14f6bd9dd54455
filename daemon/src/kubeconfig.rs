//! kubeconfig files for Hearth's API, in the shape kubectl and the Kubernetes clients
//! read (`clientcmd/api/v1` `Config`), as k3s writes `/etc/rancher/k3s/k3s.yaml`: one
//! cluster `hearth` (the HTTPS address and Hearth's CA inline as
//! `certificate-authority-data`), one user with a bearer token, and one context `hearth`
//! whose namespace is the user's own.
//!
//! The daemon writes `<data-dir>/kubeconfig` (mode 0600, the admin's) at every start;
//! `hearth kubeconfig` prints one for any token.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};

use base64::Engine;
use serde_json::json;

/// The cluster, context and (by default) user entry name.
pub const CLUSTER: &str = "hearth";

#[derive(Debug, thiserror::Error)]
pub enum KubeconfigError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("rendering the kubeconfig: {0}")]
    Yaml(#[from] serde_yaml_ng::Error),
    #[error("{0}")]
    Token(String),
}

/// What goes into one kubeconfig.
pub struct Kubeconfig<'a> {
    /// `https://host:port` of the TLS listener.
    pub server: &'a str,
    /// The CA certificate, PEM; empty for none (a server whose certificate the host's
    /// roots trust).
    pub ca_pem: &'a str,
    /// `insecure-skip-tls-verify: true` instead of a CA (kubectl refuses both at once).
    pub insecure_skip_tls_verify: bool,
    /// The Hearth user the token belongs to (the kubeconfig's user entry name).
    pub user: &'a str,
    pub token: &'a str,
    /// The context's default namespace.
    pub namespace: &'a str,
}

impl Kubeconfig<'_> {
    pub fn render(&self) -> Result<String, KubeconfigError> {
        let mut cluster = json!({"server": self.server});
        if self.insecure_skip_tls_verify {
            cluster["insecure-skip-tls-verify"] = json!(true);
        } else if !self.ca_pem.is_empty() {
            cluster["certificate-authority-data"] =
                json!(base64::engine::general_purpose::STANDARD.encode(self.ca_pem.as_bytes()));
        }
        let doc = json!({
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CLUSTER, "cluster": cluster}],
            "users": [{"name": self.user, "user": {"token": self.token}}],
            "contexts": [{"name": CLUSTER, "context": {
                "cluster": CLUSTER,
                "user": self.user,
                "namespace": self.namespace,
            }}],
            "current-context": CLUSTER,
            "preferences": {},
        });
        Ok(serde_yaml_ng::to_string(&doc)?)
    }

    /// Writes the kubeconfig to `path` at mode 0600 (it holds a token).
    pub fn write(&self, path: &Path) -> Result<(), KubeconfigError> {
        let text = self.render()?;
        crate::auth::write_private_file(path, &text).map_err(|source| KubeconfigError::Io {
            path: path.to_path_buf(),
            source,
        })
    }
}

/// Where the daemon writes the admin's kubeconfig.
pub fn path(data_dir: &Path) -> PathBuf {
    data_dir.join("kubeconfig")
}

/// The `server:` URL for a TLS listener bound to `addr`, as seen from this host: an
/// unspecified or loopback address becomes the matching loopback one (the certificate
/// names both), any other its own address.
pub fn server_url(addr: SocketAddr) -> String {
    let ip = match addr.ip() {
        IpAddr::V4(v4) if v4.is_unspecified() || v4.is_loopback() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        // `[::]` accepts IPv4 too on Linux; 127.0.0.1 is what k3s writes.
        IpAddr::V6(v6) if v6.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        other => other,
    };
    format!("https://{}", SocketAddr::new(ip, addr.port()))
}

/// The Hearth user a token belongs to, read from the database of `data_dir` without
/// changing it; errors name what is wrong (unknown token, expired, unreadable store).
pub fn token_user(data_dir: &Path, token: &str) -> Result<String, KubeconfigError> {
    use rusqlite::OpenFlags;
    let db = data_dir.join("hearth.db");
    let conn = rusqlite::Connection::open_with_flags(&db, OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| KubeconfigError::Token(format!("cannot read {}: {e}", db.display())))?;
    let tokens = crate::store::access::list_tokens(&conn, None)
        .map_err(|e| KubeconfigError::Token(format!("cannot read {}: {e}", db.display())))?;
    let hash = crate::auth::hash_token(token);
    let row = tokens
        .into_iter()
        .find(|t| t.hash.as_slice() == hash.as_slice())
        .ok_or_else(|| {
            KubeconfigError::Token(format!(
                "the token is not one this Hearth issued (data dir {})",
                data_dir.display()
            ))
        })?;
    if let Some(expiry) = &row.expires_at {
        let expired = chrono::DateTime::parse_from_rfc3339(expiry)
            .map(|at| at <= chrono::Utc::now())
            .unwrap_or(false);
        if expired {
            return Err(KubeconfigError::Token(format!("the token expired at {expiry}")));
        }
    }
    Ok(row.user_name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn server_url_points_at_this_host() {
        let url = |s: &str| server_url(s.parse().unwrap());
        assert_eq!(url("127.0.0.1:8472"), "https://127.0.0.1:8472");
        assert_eq!(url("0.0.0.0:8472"), "https://127.0.0.1:8472");
        assert_eq!(url("[::]:8472"), "https://127.0.0.1:8472");
        assert_eq!(url("[::1]:8472"), "https://[::1]:8472");
        assert_eq!(url("10.0.0.5:8472"), "https://10.0.0.5:8472");
    }

    #[test]
    fn renders_the_clientcmd_shape() {
        let text = Kubeconfig {
            server: "https://127.0.0.1:1",
            ca_pem: "PEM",
            insecure_skip_tls_verify: false,
            user: "alice",
            token: "hth_x",
            namespace: "alice",
        }
        .render()
        .unwrap();
        let doc: serde_json::Value = serde_yaml_ng::from_str(&text).unwrap();
        assert_eq!(doc["current-context"], "hearth");
        assert_eq!(
            doc["clusters"][0]["cluster"]["certificate-authority-data"],
            "UEVN"
        );
        assert_eq!(doc["users"][0]["user"]["token"], "hth_x");
        assert_eq!(doc["contexts"][0]["context"]["namespace"], "alice");
        assert_eq!(doc["contexts"][0]["context"]["user"], "alice");
    }
}
