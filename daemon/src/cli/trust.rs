//! Which server certificates the CLI accepts for an `https://` URL, as kubectl decides:
//! the CA a kubeconfig or `--certificate-authority` names (only that CA, as with
//! kubectl's `certificate-authority`), else the host's trusted roots; or, asked for
//! by name with `--insecure-skip-tls-verify`, none at all, with a warning each time.
//!
//! Hearth serves its HTTPS listener (`tls_listen`) with a certificate from its own CA
//! (`<data-dir>/tls/ca.crt`, see `crate::tls`), so a teammate on another machine gives
//! that CA: as a file, or inside the kubeconfig Hearth wrote (`hearth login
//! --from-kubeconfig`); `hearth login` stores it with the login.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use base64::Engine;
use clap::Args;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::DigitallySignedStruct;

use super::CliError;

/// The TLS flags of every command that talks to a server (kubectl's names).
#[derive(Args, Clone, Debug, Default)]
pub struct TlsFlags {
    /// A PEM file of the CA to trust for an https:// URL (Hearth's own is
    /// `<data-dir>/tls/ca.crt`) [default: the CA `hearth login` stored, else the
    /// host's trusted roots]
    #[arg(
        long,
        value_name = "FILE",
        env = "HEARTH_CERTIFICATE_AUTHORITY",
        global = true
    )]
    pub certificate_authority: Option<PathBuf>,
    /// Do not check the server's certificate: anyone on the network path can then read
    /// the token. Insecure; for a first look only.
    #[arg(long, global = true)]
    pub insecure_skip_tls_verify: bool,
}

/// What an https:// connection trusts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Trust {
    /// The host's trusted roots (a server behind a publicly trusted certificate).
    System,
    /// Only this CA, PEM (one or more certificates).
    Ca(String),
    /// No verification (`--insecure-skip-tls-verify`).
    Insecure,
}

impl TlsFlags {
    /// The trust these flags ask for, or `None` when they ask for nothing (the login's
    /// stored trust, else the host's roots, applies).
    pub fn trust(&self) -> Result<Option<Trust>, CliError> {
        if self.insecure_skip_tls_verify && self.certificate_authority.is_some() {
            return Err(CliError::Input(
                "--certificate-authority and --insecure-skip-tls-verify exclude each other (kubectl refuses the pair too)"
                    .into(),
            ));
        }
        if self.insecure_skip_tls_verify {
            return Ok(Some(Trust::Insecure));
        }
        match &self.certificate_authority {
            Some(path) => Ok(Some(Trust::Ca(read_ca_file(path)?))),
            None => Ok(None),
        }
    }
}

/// Reads a PEM CA file, refusing one that holds no certificate.
pub fn read_ca_file(path: &Path) -> Result<String, CliError> {
    let pem = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    certificates(&pem).map_err(|detail| CliError::Config {
        path: path.to_path_buf(),
        detail,
    })?;
    Ok(pem)
}

/// The certificates of a PEM text; an error when it has none.
fn certificates(pem: &str) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem.as_bytes())
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate: {e}"))?;
    if certs.is_empty() {
        return Err("holds no PEM certificate (-----BEGIN CERTIFICATE-----)".into());
    }
    Ok(certs)
}

/// Warns on stderr that `url`'s certificate is not checked.
pub fn warn_insecure(url: &str) {
    eprintln!(
        "hearth: warning: TLS verification is off (--insecure-skip-tls-verify): {url}'s certificate is not checked, and whoever answers there gets the token"
    );
}

/// The rustls client settings for `trust` (ring, as the rest of Hearth).
pub fn client_config(trust: &Trust) -> Result<rustls::ClientConfig, CliError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(Arc::clone(&provider))
        .with_safe_default_protocol_versions()
        .map_err(|e| CliError::Input(format!("TLS settings: {e}")))?;
    let config = match trust {
        Trust::Insecure => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(AnyCertificate(provider)))
            .with_no_client_auth(),
        Trust::Ca(pem) => {
            let mut roots = rustls::RootCertStore::empty();
            for cert in certificates(pem).map_err(|e| CliError::Input(format!("the stored CA {e}")))? {
                roots
                    .add(cert)
                    .map_err(|e| CliError::Input(format!("the CA certificate: {e}")))?;
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
        Trust::System => {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            for cert in rustls_native_certs::load_native_certs().certs {
                // One the host has but rustls cannot parse is skipped, as other rustls
                // clients do.
                let _ = roots.add(cert);
            }
            builder.with_root_certificates(roots).with_no_client_auth()
        }
    };
    Ok(config)
}

/// A failed connection's hint when the cause is the certificate: how to give the CA.
pub fn certificate_hint(detail: &str) -> Option<&'static str> {
    let lower = detail.to_ascii_lowercase();
    (lower.contains("certificate") || lower.contains("unknownissuer")).then_some(
        "give the server's CA with --certificate-authority FILE (Hearth's is <data-dir>/tls/ca.crt) or log in with `hearth login --from-kubeconfig FILE`",
    )
}

/// What `hearth login --from-kubeconfig` takes from a kubeconfig: its current
/// context's cluster `server`, CA (`certificate-authority-data`, else the file
/// `certificate-authority` names) or `insecure-skip-tls-verify`, and user `token`.
#[derive(Debug, Default)]
pub struct FromKubeconfig {
    pub server: Option<String>,
    pub trust: Option<Trust>,
    pub token: Option<String>,
}

/// Reads `path` (kubeconfig v1, `clientcmd/api/v1` `Config`).
pub fn read_kubeconfig(path: &Path) -> Result<FromKubeconfig, CliError> {
    let bad = |detail: String| CliError::Config {
        path: path.to_path_buf(),
        detail,
    };
    let text = std::fs::read_to_string(path).map_err(|source| CliError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    let doc: serde_json::Value = serde_yaml_ng::from_str(&text)
        .map_err(|e| bad(format!("not a kubeconfig: {}", one_line(&e.to_string()))))?;
    let named = |list: &str, name: &str| {
        doc[list]
            .as_array()
            .and_then(|items| items.iter().find(|i| i["name"] == name))
            .cloned()
    };
    let context_name = doc["current-context"]
        .as_str()
        .filter(|c| !c.is_empty())
        .ok_or_else(|| bad("has no current-context".into()))?;
    let context = named("contexts", context_name)
        .ok_or_else(|| bad(format!("has no context {context_name:?} (its current-context)")))?;
    let cluster_name = context["context"]["cluster"].as_str().unwrap_or_default();
    let cluster = named("clusters", cluster_name).ok_or_else(|| {
        bad(format!(
            "has no cluster {cluster_name:?} (context {context_name:?})"
        ))
    })?;
    let cluster = &cluster["cluster"];
    let trust = if let Some(data) = cluster["certificate-authority-data"].as_str() {
        let pem = base64::engine::general_purpose::STANDARD
            .decode(data.trim())
            .ok()
            .and_then(|bytes| String::from_utf8(bytes).ok())
            .ok_or_else(|| bad("certificate-authority-data is not base64 of a PEM certificate".into()))?;
        certificates(&pem).map_err(|e| bad(format!("certificate-authority-data {e}")))?;
        Some(Trust::Ca(pem))
    } else if let Some(file) = cluster["certificate-authority"].as_str() {
        // Relative to the kubeconfig, as clientcmd resolves it.
        let file = path.parent().unwrap_or(Path::new(".")).join(file);
        Some(Trust::Ca(read_ca_file(&file)?))
    } else if cluster["insecure-skip-tls-verify"] == true {
        Some(Trust::Insecure)
    } else {
        None
    };
    let user_name = context["context"]["user"].as_str().unwrap_or_default();
    let token = named("users", user_name).and_then(|u| u["user"]["token"].as_str().map(str::to_string));
    Ok(FromKubeconfig {
        server: cluster["server"].as_str().map(str::to_string),
        trust,
        token,
    })
}

fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `--insecure-skip-tls-verify`: any certificate is accepted; the handshake's
/// signatures are still checked (a broken handshake still fails).
#[derive(Debug)]
struct AnyCertificate(Arc<rustls::crypto::CryptoProvider>);

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_kubeconfig_gives_server_ca_and_token() {
        let dir = tempfile::tempdir().unwrap();
        let ca = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let text = crate::kubeconfig::Kubeconfig {
            server: "https://gpu-box:8472",
            ca_pem: &ca.cert.pem(),
            insecure_skip_tls_verify: false,
            user: "alice",
            token: "hth_x",
            namespace: "alice",
        }
        .render()
        .unwrap();
        let path = dir.path().join("config");
        std::fs::write(&path, text).unwrap();
        let read = read_kubeconfig(&path).unwrap();
        assert_eq!(read.server.as_deref(), Some("https://gpu-box:8472"));
        assert_eq!(read.token.as_deref(), Some("hth_x"));
        assert_eq!(read.trust, Some(Trust::Ca(ca.cert.pem())));
        client_config(read.trust.as_ref().unwrap()).unwrap();

        std::fs::write(&path, "apiVersion: v1\nkind: Config\n").unwrap();
        let err = read_kubeconfig(&path).unwrap_err().to_string();
        assert!(err.contains("current-context"), "{err}");
    }

    #[test]
    fn a_ca_file_without_a_certificate_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ca.crt");
        std::fs::write(&path, "hello\n").unwrap();
        let err = read_ca_file(&path).unwrap_err().to_string();
        assert!(err.contains("ca.crt") && err.contains("PEM"), "{err}");
    }
}
