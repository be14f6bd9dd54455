//! Hearth's own certificate authority and the API's TLS server certificate, made the way
//! k3s makes its own: on first start a CA (ECDSA P-256, ten years) and a server
//! certificate it signs (one year; SANs `localhost`, `127.0.0.1`, `::1`, the host name
//! and `tls_sans`), kept under `<data-dir>/tls/` with the keys at mode 0600.
//!
//! On every start the CA is reused as it is (kubeconfigs handed out carry it), and the
//! server certificate is re-issued when the wanted SANs differ from those it was issued
//! for, when it no longer chains to the CA, or when it has less than `RENEW_BEFORE` left
//! (k3s renews 90 days before expiry too).
//!
//! Files: `ca.crt`, `ca.key`, `server.crt`, `server.key` (PEM), and `server.sans`, the
//! SANs the server certificate was issued for, one a line.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use sha2::{Digest, Sha256};

/// The CA's lifetime (k3s: ten years).
const CA_LIFETIME: Duration = Duration::from_secs(10 * 365 * 24 * 3600);
/// The server certificate's lifetime (k3s: one year).
const SERVER_LIFETIME: Duration = Duration::from_secs(365 * 24 * 3600);
/// A server certificate with less than this left is re-issued at start.
pub const RENEW_BEFORE: Duration = Duration::from_secs(90 * 24 * 3600);
/// `not_before` is set this far back, so a client whose clock is a little behind
/// still accepts a certificate issued a moment ago.
const BACKDATE: Duration = Duration::from_secs(3600);

#[derive(Debug, thiserror::Error)]
pub enum TlsError {
    #[error("{path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("{path}: {message} (remove the tls directory's files to start a new CA; kubeconfigs made with the old one stop working)")]
    Unreadable { path: PathBuf, message: String },
    #[error("tls_sans: {0:?} is neither an IP address nor a DNS name")]
    BadSan(String),
    #[error("making a certificate: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("reading PEM: {0}")]
    Pem(#[from] rustls::pki_types::pem::Error),
    #[error("time {0}")]
    Time(String),
}

/// What `ensure` leaves ready: the CA (for kubeconfigs) and the server's TLS config.
pub struct Tls {
    /// The CA certificate, PEM: what clients trust (`certificate-authority-data`).
    pub ca_pem: String,
    pub server_config: rustls::ServerConfig,
}

/// The directory under the data dir that holds the CA and the server certificate.
pub fn dir(data_dir: &Path) -> PathBuf {
    data_dir.join("tls")
}

/// The SANs the server certificate must carry: the loopback names, this host's name and
/// the configured extras, without duplicates, in a stable order.
pub fn wanted_sans(extra: &[String]) -> Vec<String> {
    let mut sans: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
    if let Ok(host) = nix::unistd::gethostname() {
        if let Some(host) = host.to_str().filter(|h| !h.is_empty()) {
            sans.push(host.to_ascii_lowercase());
        }
    }
    for name in extra {
        let name = name.trim().to_ascii_lowercase();
        if !name.is_empty() {
            sans.push(name);
        }
    }
    let mut seen = std::collections::HashSet::new();
    sans.retain(|s| seen.insert(s.clone()));
    sans
}

/// Loads or makes the CA and the server certificate under `dir` for `sans`, at `now`.
pub fn ensure(dir: &Path, sans: &[String], now: SystemTime) -> Result<Tls, TlsError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| TlsError::Io { path, source }
    };
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(io(dir))?;
    for san in sans {
        if san.parse::<IpAddr>().is_err() && ServerName::try_from(san.as_str()).is_err() {
            return Err(TlsError::BadSan(san.clone()));
        }
    }

    // Files are replaced one by one (each write is atomic), so a set is made in an order
    // a crash cannot leave looking complete: the old files go first, the one that marks
    // the set complete (`ca.crt`, `server.sans`) comes last.
    let (ca_crt, ca_key) = (dir.join("ca.crt"), dir.join("ca.key"));
    let (ca_pem, ca_key_pair) = match (read_optional(&ca_crt)?, read_optional(&ca_key)?) {
        (Some(pem), Some(key)) => {
            let key = KeyPair::from_pem(&key).map_err(|e| unreadable(&ca_key, e))?;
            (pem, key)
        }
        _ => {
            remove_optional(&ca_crt)?;
            let key = KeyPair::generate()?;
            let cert = ca_params(&key, now)?.self_signed(&key)?;
            crate::auth::write_private_file(&ca_key, &key.serialize_pem()).map_err(io(&ca_key))?;
            crate::auth::write_private_file(&ca_crt, &cert.pem()).map_err(io(&ca_crt))?;
            tracing::info!(path = %ca_crt.display(), "made a new certificate authority");
            (cert.pem(), key)
        }
    };
    let ca_der = CertificateDer::from_pem_slice(ca_pem.as_bytes()).map_err(|e| unreadable(&ca_crt, e))?;

    let (crt, key, sans_file) = (
        dir.join("server.crt"),
        dir.join("server.key"),
        dir.join("server.sans"),
    );
    let wanted = sans.join("\n") + "\n";
    let stored = match (
        read_optional(&crt)?,
        read_optional(&key)?,
        read_optional(&sans_file)?,
    ) {
        (Some(crt_pem), Some(key_pem), Some(issued_for))
            if issued_for == wanted && server_still_good(&ca_der, &crt_pem, sans, now) =>
        {
            // A key that does not match its certificate is re-issued, not fatal.
            server_config(&crt_pem, &key_pem).ok()
        }
        _ => None,
    };
    let server_config = match stored {
        Some(config) => config,
        None => {
            remove_optional(&sans_file)?;
            let server_key = KeyPair::generate()?;
            let issuer = Issuer::new(ca_params(&ca_key_pair, now)?, &ca_key_pair);
            let cert = server_params(sans, now)?.signed_by(&server_key, &issuer)?;
            // A CA key that is not the one in ca.crt signs certificates nobody trusts.
            if let Err(e) = verify_at(&ca_der, cert.der(), "localhost", now) {
                return Err(unreadable(
                    &ca_key,
                    format!("does not sign certificates that ca.crt verifies ({e})"),
                ));
            }
            crate::auth::write_private_file(&key, &server_key.serialize_pem()).map_err(io(&key))?;
            crate::auth::write_private_file(&crt, &cert.pem()).map_err(io(&crt))?;
            crate::auth::write_private_file(&sans_file, &wanted).map_err(io(&sans_file))?;
            tracing::info!(path = %crt.display(), sans = %sans.join(","), "issued the API's TLS certificate");
            server_config(&cert.pem(), &server_key.serialize_pem())?
        }
    };
    Ok(Tls {
        ca_pem,
        server_config,
    })
}

/// The TLS configuration serving this certificate and key (PEM); rustls refuses a key
/// that is not the certificate's.
fn server_config(crt_pem: &str, key_pem: &str) -> Result<rustls::ServerConfig, TlsError> {
    let crt = CertificateDer::from_pem_slice(crt_pem.as_bytes())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    let key = PrivateKeyDer::from_pem_slice(key_pem.as_bytes())
        .map_err(|e| TlsError::Rustls(rustls::Error::General(e.to_string())))?;
    Ok(rustls::ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(vec![crt], key)?)
}

fn remove_optional(path: &Path) -> Result<(), TlsError> {
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(TlsError::Io {
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn read_optional(path: &Path) -> Result<Option<String>, TlsError> {
    match std::fs::read_to_string(path) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(TlsError::Io {
            path: path.to_path_buf(),
            source,
        }),
    }
}

fn unreadable(path: &Path, e: impl std::fmt::Display) -> TlsError {
    TlsError::Unreadable {
        path: path.to_path_buf(),
        message: e.to_string(),
    }
}

fn offset(time: SystemTime) -> time::OffsetDateTime {
    time::OffsetDateTime::from(time)
}

fn window(
    now: SystemTime,
    lifetime: Duration,
) -> Result<(time::OffsetDateTime, time::OffsetDateTime), TlsError> {
    let start = now
        .checked_sub(BACKDATE)
        .ok_or_else(|| TlsError::Time("before the epoch".into()))?;
    let end = now
        .checked_add(lifetime)
        .ok_or_else(|| TlsError::Time("out of range".into()))?;
    Ok((offset(start), offset(end)))
}

/// The CA's parameters. They are derived from its key alone, so the same `Issuer` can be
/// rebuilt on a later start without parsing the stored certificate: the subject carries
/// a digest of the public key, which keeps two installations' CAs apart (k3s puts a
/// timestamp there for the same reason).
fn ca_params(key: &KeyPair, now: SystemTime) -> Result<CertificateParams, TlsError> {
    let digest = hex::encode(&Sha256::digest(rcgen::PublicKeyData::der_bytes(key))[..6]);
    let mut params = CertificateParams::default();
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "hearth");
    name.push(DnType::CommonName, format!("hearth-server-ca@{digest}"));
    params.distinguished_name = name;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    (params.not_before, params.not_after) = window(now, CA_LIFETIME)?;
    Ok(params)
}

fn server_params(sans: &[String], now: SystemTime) -> Result<CertificateParams, TlsError> {
    let mut params = CertificateParams::new(sans.to_vec())?;
    let mut name = DistinguishedName::new();
    name.push(DnType::OrganizationName, "hearth");
    name.push(DnType::CommonName, "hearth");
    params.distinguished_name = name;
    params.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyEncipherment,
    ];
    params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    params.use_authority_key_identifier_extension = true;
    (params.not_before, params.not_after) = window(now, SERVER_LIFETIME)?;
    Ok(params)
}

/// Whether the stored server certificate chains to the CA and is valid for every SAN
/// both now and `RENEW_BEFORE` from now (a client's own verifier does the checking).
fn server_still_good(ca: &CertificateDer<'static>, crt_pem: &str, sans: &[String], now: SystemTime) -> bool {
    let Ok(crt) = CertificateDer::from_pem_slice(crt_pem.as_bytes()) else {
        return false;
    };
    let Some(later) = now.checked_add(RENEW_BEFORE) else {
        return false;
    };
    [now, later]
        .into_iter()
        .all(|at| sans.iter().all(|san| verify_at(ca, &crt, san, at).is_ok()))
}

/// Verifies `crt` for the name or address `san` against `ca` at `at`, as a client does.
pub fn verify_at(
    ca: &CertificateDer<'static>,
    crt: &CertificateDer<'_>,
    san: &str,
    at: SystemTime,
) -> Result<(), String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca.clone()).map_err(|e| e.to_string())?;
    let verifier = rustls::client::WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| e.to_string())?;
    let name = match san.parse::<IpAddr>() {
        Ok(ip) => ServerName::from(ip),
        Err(_) => ServerName::try_from(san.to_string()).map_err(|e| e.to_string())?,
    };
    let since_epoch = at
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    use rustls::client::danger::ServerCertVerifier;
    verifier
        .verify_server_cert(crt, &[], &name, &[], UnixTime::since_unix_epoch(since_epoch))
        .map(|_| ())
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn sans(extra: &[&str]) -> Vec<String> {
        let mut s: Vec<String> = ["localhost", "127.0.0.1", "::1"].map(String::from).to_vec();
        s.extend(extra.iter().map(|e| e.to_string()));
        s
    }

    fn server_der(dir: &Path) -> CertificateDer<'static> {
        let pem = std::fs::read(dir.join("server.crt")).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    fn ca_der(dir: &Path) -> CertificateDer<'static> {
        let pem = std::fs::read(dir.join("ca.crt")).unwrap();
        CertificateDer::from_pem_slice(&pem).unwrap()
    }

    #[test]
    fn first_start_makes_a_ca_and_a_server_certificate_for_every_san() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let now = SystemTime::now();
        let tls = ensure(&dir, &sans(&["hearth.example", "10.1.2.3"]), now).unwrap();
        assert_eq!(tls.ca_pem, std::fs::read_to_string(dir.join("ca.crt")).unwrap());
        for key in ["ca.key", "server.key"] {
            let mode = std::fs::metadata(dir.join(key)).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600, "{key}");
        }
        for san in ["localhost", "127.0.0.1", "::1", "hearth.example", "10.1.2.3"] {
            verify_at(&ca_der(&dir), &server_der(&dir), san, now).unwrap_or_else(|e| panic!("{san}: {e}"));
        }
        assert!(verify_at(&ca_der(&dir), &server_der(&dir), "other.example", now).is_err());
        // The CA is no server certificate.
        assert!(verify_at(&ca_der(&dir), &ca_der(&dir), "localhost", now).is_err());
    }

    #[test]
    fn a_restart_reuses_both_and_a_san_change_reissues_only_the_server_certificate() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let now = SystemTime::now();
        ensure(&dir, &sans(&[]), now).unwrap();
        let (ca, server) = (ca_der(&dir), server_der(&dir));
        ensure(&dir, &sans(&[]), now).unwrap();
        assert_eq!(ca_der(&dir), ca);
        assert_eq!(server_der(&dir), server);

        ensure(&dir, &sans(&["gpu-box.lan"]), now).unwrap();
        assert_eq!(ca_der(&dir), ca, "the CA must survive a SAN change");
        assert_ne!(server_der(&dir), server);
        verify_at(&ca, &server_der(&dir), "gpu-box.lan", now).unwrap();
    }

    #[test]
    fn a_certificate_near_expiry_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        let issued_at = SystemTime::now();
        ensure(&dir, &sans(&[]), issued_at).unwrap();
        let old = server_der(&dir);
        // 300 days on, 65 days are left: under RENEW_BEFORE.
        let later = issued_at + Duration::from_secs(300 * 24 * 3600);
        ensure(&dir, &sans(&[]), later).unwrap();
        assert_ne!(server_der(&dir), old);
        verify_at(
            &ca_der(&dir),
            &server_der(&dir),
            "localhost",
            later + RENEW_BEFORE,
        )
        .unwrap();
    }

    #[test]
    fn a_corrupt_ca_is_refused_by_name_not_replaced() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        std::fs::write(dir.join("ca.key"), "not a key").unwrap();
        let err = ensure(&dir, &sans(&[]), SystemTime::now())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.key"), "{err}");
    }

    #[test]
    fn a_server_key_that_is_not_its_certificates_is_reissued() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        let old = server_der(&dir);
        let stranger = KeyPair::generate().unwrap();
        std::fs::write(dir.join("server.key"), stranger.serialize_pem()).unwrap();
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        assert_ne!(server_der(&dir), old);
    }

    #[test]
    fn a_ca_key_that_is_not_the_cas_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        std::fs::write(dir.join("ca.key"), KeyPair::generate().unwrap().serialize_pem()).unwrap();
        std::fs::remove_file(dir.join("server.sans")).unwrap();
        let err = ensure(&dir, &sans(&[]), SystemTime::now())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("ca.key"), "{err}");
    }

    #[test]
    fn a_crash_while_issuing_leaves_a_set_that_is_issued_again() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("tls");
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        let ca = ca_der(&dir);
        // As if killed after the new key was written, before the certificate.
        std::fs::remove_file(dir.join("server.sans")).unwrap();
        std::fs::write(
            dir.join("server.key"),
            KeyPair::generate().unwrap().serialize_pem(),
        )
        .unwrap();
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        verify_at(&ca, &server_der(&dir), "localhost", SystemTime::now()).unwrap();
        // And after the CA key was written, before its certificate.
        std::fs::remove_file(dir.join("ca.crt")).unwrap();
        ensure(&dir, &sans(&[]), SystemTime::now()).unwrap();
        assert_ne!(ca_der(&dir), ca);
        verify_at(&ca_der(&dir), &server_der(&dir), "localhost", SystemTime::now()).unwrap();
    }

    #[test]
    fn a_bad_san_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        let err = ensure(&tmp.path().join("tls"), &sans(&["bad name!"]), SystemTime::now())
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad name!"), "{err}");
    }
}
