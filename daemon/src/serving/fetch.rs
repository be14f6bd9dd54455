//! Remote model storage (`http(s)://`, `s3://`, public `gs://`) fetched by the daemon's
//! own HTTP client into a revision's cache directory. Bodies stream to disk chunk by
//! chunk (a model can be tens of GiB), redirects are followed, a stalled transfer
//! times out, and transient failures (connection errors, 5xx, 429, a body cut short)
//! are retried. S3 requests carry SigV4 `Authorization` headers made by AWS's own
//! `aws-sigv4` with the configured or `AWS_*` credentials (none: anonymous), and are
//! addressed path-style so that MinIO and other S3-compatible servers work; listings
//! are ListObjectsV2 pages, followed through continuation tokens and read with an XML
//! parser (`quick-xml`). Every object key becomes a path
//! under the cache directory only after it is checked not to climb out of it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures_util::StreamExt;
use percent_encoding::{utf8_percent_encode, AsciiSet, NON_ALPHANUMERIC};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use url::Url;

use super::isvc::Storage;
use crate::config::ServingConfig;

/// Largest model fetched (all files together), as for local copies: a typo'd bucket
/// root must not fill the disk.
pub const MAX_MODEL_BYTES: u64 = 64 << 30;
/// Most objects fetched for one model.
pub const MAX_MODEL_FILES: usize = 100_000;

/// Attempts per request; transient failures wait 1 s, then 2 s, ... between them.
const ATTEMPTS: u32 = 4;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);
/// Until the response head arrives.
const RESPONSE_TIMEOUT: Duration = Duration::from_secs(120);
/// A body that sends nothing for this long is dropped (and retried); there is no
/// overall limit, since large models legitimately take long.
const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Largest listing page or error body read into memory.
const MAX_SMALL_BODY: usize = 16 << 20;
/// What S3 leaves unescaped in a canonical URI or query value (RFC 3986 unreserved).
const S3_ESCAPE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The server answered, with an error status. `detail` is the S3/GCS error code
    /// and message when the body has them.
    #[error("{what}: HTTP {status}{detail}")]
    Status {
        what: String,
        status: u16,
        detail: String,
    },
    /// Connection, timeout or a body cut short.
    #[error("{what}: {message}")]
    Transport { what: String, message: String },
    /// The server's certificate (or its TLS) was refused: no retry changes that.
    #[error("{what}: TLS: {message}")]
    Tls { what: String, message: String },
    #[error("{what}: the listing is not understood: {message}")]
    Listing { what: String, message: String },
    #[error("writing {path}: {source}")]
    Io { path: PathBuf, source: std::io::Error },
    #[error("refusing object name {key:?}: it would be written outside the model directory")]
    UnsafeKey { key: String },
    #[error("{what}: more than {limit}")]
    TooLarge { what: String, limit: String },
    #[error("{0}")]
    Config(String),
}

impl FetchError {
    /// Worth another attempt: the same request may well succeed in a moment.
    pub fn transient(&self) -> bool {
        match self {
            FetchError::Status { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            FetchError::Transport { .. } => true,
            FetchError::Tls { .. }
            | FetchError::Listing { .. }
            | FetchError::Io { .. }
            | FetchError::UnsafeKey { .. }
            | FetchError::TooLarge { .. }
            | FetchError::Config(_) => false,
        }
    }
}

/// The TLS settings, built once: the Mozilla roots bundled with `webpki-roots` plus
/// the host's own store (an S3-compatible server behind a company CA).
fn tls_config() -> Arc<rustls::ClientConfig> {
    static CONFIG: OnceLock<Arc<rustls::ClientConfig>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
            let native = rustls_native_certs::load_native_certs();
            for cert in native.certs {
                // A certificate the host has but rustls cannot parse is skipped, as
                // every other rustls client does.
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            let mut config = match rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
            {
                Ok(builder) => builder.with_root_certificates(roots).with_no_client_auth(),
                // ring supports the default versions; this arm is never taken, and
                // falling back to the process default keeps start-up free of panics.
                Err(_) => rustls::ClientConfig::builder()
                    .with_root_certificates(rustls::RootCertStore::empty())
                    .with_no_client_auth(),
            };
            config.alpn_protocols = vec![b"http/1.1".to_vec()];
            Arc::new(config)
        })
        .clone()
}

/// One client per fetch: awc clients are tied to the thread that made them, and
/// fetches are rare (once per revision).
fn client() -> awc::Client {
    awc::Client::builder()
        .connector(
            awc::Connector::new()
                .timeout(CONNECT_TIMEOUT)
                .rustls_0_23(tls_config()),
        )
        .timeout(RESPONSE_TIMEOUT)
        .max_redirects(10)
        .finish()
}

/// S3 credentials and region: `[serving] s3_*` keys first, else the daemon's standard
/// `AWS_*` environment; no key at all means anonymous (public buckets).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Auth {
    pub credentials: Option<(String, String, Option<String>)>,
    pub region: String,
}

pub fn s3_auth(config: &ServingConfig, env: &dyn Fn(&str) -> Option<String>) -> Result<S3Auth, FetchError> {
    let get = |name: &str| env(name).filter(|v| !v.is_empty());
    let credentials = match (
        config.s3_access_key_id.is_empty(),
        config.s3_secret_access_key.is_empty(),
    ) {
        (false, false) => Some((
            config.s3_access_key_id.clone(),
            config.s3_secret_access_key.clone(),
            None,
        )),
        // Config validation refuses one key without the other.
        (false, true) | (true, false) => {
            return Err(FetchError::Config(
                "[serving] s3_access_key_id and s3_secret_access_key go together".into(),
            ))
        }
        (true, true) => match (get("AWS_ACCESS_KEY_ID"), get("AWS_SECRET_ACCESS_KEY")) {
            (Some(key), Some(secret)) => Some((key, secret, get("AWS_SESSION_TOKEN"))),
            (None, None) => None,
            _ => {
                return Err(FetchError::Config(
                    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY are set one without the other".into(),
                ))
            }
        },
    };
    let region = Some(config.s3_region.clone())
        .filter(|r| !r.is_empty())
        .or_else(|| get("AWS_REGION"))
        .or_else(|| get("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_string());
    Ok(S3Auth { credentials, region })
}

/// Fetches `storage` into `dir` (which exists and is empty). `File` storage is the
/// controller's own copy and not handled here.
pub async fn fetch(storage: &Storage, config: &ServingConfig, dir: &Path) -> Result<(), FetchError> {
    let client = client();
    let mut budget = Budget::default();
    match storage {
        Storage::File { path } => Err(FetchError::Config(format!(
            "{path}: local paths are copied, not fetched"
        ))),
        Storage::Http { url } => {
            let name = url
                .split(['?', '#'])
                .next()
                .and_then(|u| u.rsplit('/').next())
                .filter(|n| safe_relative(n))
                .unwrap_or("model");
            download(&client, None, url, url, &dir.join(name), &mut budget).await
        }
        Storage::S3 { bucket, key } => {
            let auth = s3_auth(config, &|name| std::env::var(name).ok())?;
            let s3 = S3::new(&config.s3_endpoint, bucket, auth)?;
            let prefix = dir_prefix(key);
            let keys = s3.list(&client, &prefix).await?;
            fetch_objects(
                &client,
                bucket,
                key,
                &prefix,
                keys,
                dir,
                &mut budget,
                "s3",
                Some(&s3),
                |k| Ok(s3.object_url(k)),
            )
            .await
        }
        Storage::Gcs { bucket, key } => {
            let base = config.gcs_endpoint.trim_end_matches('/');
            let prefix = dir_prefix(key);
            let keys = gcs_list(&client, base, bucket, &prefix).await?;
            fetch_objects(
                &client,
                bucket,
                key,
                &prefix,
                keys,
                dir,
                &mut budget,
                "gs",
                None,
                |k| gcs_object_url(base, bucket, k),
            )
            .await
        }
    }
}

/// `models/iris` lists `models/iris/`; an empty key (the bucket root) lists everything.
fn dir_prefix(key: &str) -> String {
    let key = key.trim_end_matches('/');
    if key.is_empty() {
        String::new()
    } else {
        format!("{key}/")
    }
}

/// A bucket path is a directory when objects lie under it (as in KServe's storage
/// initializer), else the object of that name.
#[allow(clippy::too_many_arguments)]
async fn fetch_objects(
    client: &awc::Client,
    bucket: &str,
    key: &str,
    prefix: &str,
    keys: Vec<String>,
    dir: &Path,
    budget: &mut Budget,
    scheme: &str,
    signer: Option<&S3>,
    url_of: impl Fn(&str) -> Result<String, FetchError>,
) -> Result<(), FetchError> {
    let under: Vec<&String> = keys.iter().filter(|k| !k.ends_with('/')).collect();
    if under.is_empty() {
        let name = key.rsplit('/').next().filter(|n| safe_relative(n));
        let Some(name) = name else {
            return Err(FetchError::Status {
                what: format!("{scheme}://{bucket}/{prefix}"),
                status: 404,
                detail: ": no objects there".into(),
            });
        };
        let what = format!("{scheme}://{bucket}/{key}");
        return download(client, signer, &url_of(key)?, &what, &dir.join(name), budget).await;
    }
    if under.len() > MAX_MODEL_FILES {
        return Err(FetchError::TooLarge {
            what: format!("{scheme}://{bucket}/{prefix}"),
            limit: format!("{MAX_MODEL_FILES} objects"),
        });
    }
    // Every name is checked before the first byte is written: a listing with one bad
    // key fetches nothing.
    for object in &under {
        if !safe_relative(&object[prefix.len()..]) {
            return Err(FetchError::UnsafeKey {
                key: (*object).clone(),
            });
        }
    }
    for object in under {
        let relative = &object[prefix.len()..];
        let what = format!("{scheme}://{bucket}/{object}");
        download(
            client,
            signer,
            &url_of(object)?,
            &what,
            &dir.join(relative),
            budget,
        )
        .await?;
    }
    Ok(())
}

/// A relative path that stays below the directory it is joined to: no `..`, no `.`,
/// no empty segment (which would make it absolute or collapse), no backslash or NUL.
pub fn safe_relative(relative: &str) -> bool {
    !relative.is_empty()
        && !relative.contains(['\\', '\0'])
        && relative
            .split('/')
            .all(|part| !part.is_empty() && part != "." && part != "..")
}

#[derive(Default)]
struct Budget {
    bytes: u64,
}

/// GET `url` into `target`, retrying transient failures. `what` names the object in
/// messages.
async fn download(
    client: &awc::Client,
    signer: Option<&S3>,
    url: &str,
    what: &str,
    target: &Path,
    budget: &mut Budget,
) -> Result<(), FetchError> {
    if let Some(parent) = target.parent() {
        tokio::fs::create_dir_all(parent)
            .await
            .map_err(|source| FetchError::Io {
                path: parent.to_path_buf(),
                source,
            })?;
    }
    let used = budget.bytes;
    budget.bytes += retrying(what, || download_once(client, signer, url, what, target, used)).await?;
    Ok(())
}

/// `op` again after a transient failure, up to `ATTEMPTS` times in all, waiting 1 s,
/// 2 s, 4 s, ... in between.
async fn retrying<T, F, Fut>(what: &str, op: F) -> Result<T, FetchError>
where
    F: Fn() -> Fut,
    Fut: std::future::Future<Output = Result<T, FetchError>>,
{
    let mut attempt = 1;
    loop {
        match op().await {
            Err(e) if e.transient() && attempt < ATTEMPTS => {
                tracing::info!(object = %what, attempt, error = %e, "fetching failed; retrying");
                tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
                attempt += 1;
            }
            other => return other,
        }
    }
}

/// The next piece of a response body; `None` at its end.
async fn next_chunk<S>(
    response: &mut awc::ClientResponse<S>,
    what: &str,
) -> Result<Option<bytes::Bytes>, FetchError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let chunk = tokio::time::timeout(IDLE_TIMEOUT, response.next())
        .await
        .map_err(|_| FetchError::Transport {
            what: what.to_string(),
            message: format!("no data for {} s", IDLE_TIMEOUT.as_secs()),
        })?;
    chunk.transpose().map_err(|e| FetchError::Transport {
        what: what.to_string(),
        message: format!("reading the body: {e}"),
    })
}

async fn download_once(
    client: &awc::Client,
    signer: Option<&S3>,
    url: &str,
    what: &str,
    target: &Path,
    used: u64,
) -> Result<u64, FetchError> {
    let mut response = send(client, signer, url, what).await?;
    let expected = response
        .headers()
        .get(awc::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    let io = |source| FetchError::Io {
        path: target.to_path_buf(),
        source,
    };
    let mut file = tokio::fs::File::create(target).await.map_err(io)?;
    let mut written: u64 = 0;
    loop {
        let Some(chunk) = next_chunk(&mut response, what).await? else {
            break;
        };
        written += chunk.len() as u64;
        if used + written > MAX_MODEL_BYTES {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                limit: format!("{MAX_MODEL_BYTES} bytes in all"),
            });
        }
        file.write_all(&chunk).await.map_err(io)?;
    }
    file.flush().await.map_err(io)?;
    if let Some(expected) = expected.filter(|e| *e != written) {
        return Err(FetchError::Transport {
            what: what.to_string(),
            message: format!("the body ended after {written} of {expected} bytes"),
        });
    }
    Ok(written)
}

/// A GET whose answer is a success, else the status with what the body says. S3
/// requests are signed here, per attempt, since a signature is only valid for minutes.
async fn send(
    client: &awc::Client,
    signer: Option<&S3>,
    url: &str,
    what: &str,
) -> Result<
    awc::ClientResponse<
        impl futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
    >,
    FetchError,
> {
    let mut request = client.get(url);
    if let Some(s3) = signer {
        for (name, value) in s3.sign_get(url)? {
            request = request.insert_header((name, value));
        }
    }
    let response = request.send().await.map_err(|e| match tls_failure(&e) {
        Some(tls) => FetchError::Tls {
            what: what.to_string(),
            message: tls.to_string(),
        },
        None => FetchError::Transport {
            what: what.to_string(),
            message: match e {
                awc::error::SendRequestError::Timeout => {
                    format!("no answer in {} s", RESPONSE_TIMEOUT.as_secs())
                }
                other => other.to_string(),
            },
        },
    })?;
    if response.status().is_success() {
        return Ok(response);
    }
    let status = response.status();
    let body = read_small(response, what).await.unwrap_or_default();
    Err(FetchError::Status {
        what: what.to_string(),
        status: status.as_u16(),
        detail: error_detail(status, &body),
    })
}

/// The rustls error under a failed connection (an unknown issuer, a name mismatch,
/// an expired certificate), if that is what failed.
fn tls_failure(e: &awc::error::SendRequestError) -> Option<&rustls::Error> {
    match e {
        awc::error::SendRequestError::Connect(awc::error::ConnectError::Io(io)) => {
            io.get_ref()?.downcast_ref::<rustls::Error>()
        }
        _ => None,
    }
}

/// A whole small body (a listing page, an error document).
async fn read_small<S>(mut response: awc::ClientResponse<S>, what: &str) -> Result<String, FetchError>
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, awc::error::PayloadError>> + Unpin,
{
    let mut body = Vec::new();
    loop {
        let Some(chunk) = next_chunk(&mut response, what).await? else {
            break;
        };
        if body.len() + chunk.len() > MAX_SMALL_BODY {
            return Err(FetchError::TooLarge {
                what: what.to_string(),
                limit: format!("{MAX_SMALL_BODY} bytes in one listing page"),
            });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn get_small(
    client: &awc::Client,
    signer: Option<&S3>,
    url: &str,
    what: &str,
) -> Result<String, FetchError> {
    retrying(what, || async {
        let response = send(client, signer, url, what).await?;
        read_small(response, what).await
    })
    .await
}

/// The S3 error document (`<Error><Code>AccessDenied</Code><Message>...`).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct S3ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

/// The GCS JSON API error document.
#[derive(Debug, Deserialize)]
struct GcsErrorBody {
    error: GcsError,
}
#[derive(Debug, Deserialize)]
struct GcsError {
    message: Option<String>,
}

/// ` Forbidden: InvalidAccessKeyId: The AWS Access Key Id ...` from a status and body.
fn error_detail(status: awc::http::StatusCode, body: &str) -> String {
    let mut out = String::new();
    if let Some(reason) = status.canonical_reason() {
        out.push(' ');
        out.push_str(reason);
    }
    let s3 = quick_xml::de::from_str::<S3ErrorBody>(body.trim()).ok();
    let said = if let Some(e) = s3.filter(|e| e.code.is_some()) {
        [e.code, e.message]
            .into_iter()
            .flatten()
            .filter(|s| !s.is_empty())
            .collect::<Vec<_>>()
            .join(": ")
    } else if let Ok(e) = serde_json::from_str::<GcsErrorBody>(body) {
        e.error.message.unwrap_or_default()
    } else {
        String::new()
    };
    if !said.is_empty() {
        out.push_str(": ");
        out.push_str(&said);
    }
    out
}

/// A ListObjectsV2 page; other elements are ignored.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListBucketResult {
    #[serde(default)]
    contents: Vec<ListedObject>,
    #[serde(default)]
    is_truncated: bool,
    next_continuation_token: Option<String>,
}
#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListedObject {
    key: String,
}

/// One bucket on the configured endpoint, addressed path-style
/// (`{endpoint}/{bucket}/{key}`), which every S3-compatible server and AWS accept.
struct S3 {
    base: String,
    name: String,
    auth: S3Auth,
}

impl S3 {
    fn new(endpoint: &str, name: &str, auth: S3Auth) -> Result<S3, FetchError> {
        let parsed = Url::parse(endpoint).map_err(|e| {
            FetchError::Config(format!("[serving] s3_endpoint {endpoint:?} is not a URL: {e}"))
        })?;
        if parsed.query().is_some() || parsed.cannot_be_a_base() {
            return Err(FetchError::Config(format!(
                "[serving] s3_endpoint {endpoint:?} is not a base URL"
            )));
        }
        Ok(S3 {
            base: endpoint.trim_end_matches('/').to_string(),
            name: name.to_string(),
            auth,
        })
    }

    fn object_url(&self, key: &str) -> String {
        let path: Vec<String> = key
            .split('/')
            .map(|part| utf8_percent_encode(part, S3_ESCAPE).to_string())
            .collect();
        format!(
            "{}/{}/{}",
            self.base,
            utf8_percent_encode(&self.name, S3_ESCAPE),
            path.join("/")
        )
    }

    /// The SigV4 headers for a GET of `url` (none when anonymous). The payload hash
    /// header is one S3 requires on every signed request.
    fn sign_get(&self, url: &str) -> Result<Vec<(String, String)>, FetchError> {
        use aws_sigv4::http_request::{
            sign, PayloadChecksumKind, PercentEncodingMode, SignableBody, SignableRequest, SigningSettings,
            UriPathNormalizationMode,
        };
        let Some((key, secret, token)) = &self.auth.credentials else {
            return Ok(Vec::new());
        };
        let failed = |e: &dyn std::fmt::Display| FetchError::Config(format!("signing the S3 request: {e}"));
        let identity = aws_credential_types::Credentials::new(
            key.clone(),
            secret.clone(),
            token.clone(),
            None,
            "hearth",
        )
        .into();
        let mut settings = SigningSettings::default();
        // S3 signs the path as sent: encoded once, never normalized.
        settings.percent_encoding_mode = PercentEncodingMode::Single;
        settings.uri_path_normalization_mode = UriPathNormalizationMode::Disabled;
        settings.payload_checksum_kind = PayloadChecksumKind::XAmzSha256;
        let params = aws_sigv4::sign::v4::SigningParams::builder()
            .identity(&identity)
            .region(&self.auth.region)
            .name("s3")
            .time(std::time::SystemTime::now())
            .settings(settings)
            .build()
            .map_err(|e| failed(&e))?
            .into();
        let request = SignableRequest::new("GET", url, std::iter::empty(), SignableBody::Bytes(&[]))
            .map_err(|e| failed(&e))?;
        let (instructions, _) = sign(request, &params).map_err(|e| failed(&e))?.into_parts();
        let (headers, _) = instructions.into_parts();
        Ok(headers
            .into_iter()
            .map(|h| (h.name().to_string(), h.value().to_string()))
            .collect())
    }

    /// Every key under `prefix`, following continuation tokens.
    async fn list(&self, client: &awc::Client, prefix: &str) -> Result<Vec<String>, FetchError> {
        let what = format!("s3://{}/{prefix}: listing objects", self.name);
        let mut keys = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut url = format!(
                "{}/{}?list-type=2&prefix={}",
                self.base,
                utf8_percent_encode(&self.name, S3_ESCAPE),
                utf8_percent_encode(prefix, S3_ESCAPE)
            );
            if let Some(token) = &token {
                url.push_str("&continuation-token=");
                url.push_str(&utf8_percent_encode(token, S3_ESCAPE).to_string());
            }
            let body = get_small(client, Some(self), &url, &what).await?;
            let page: ListBucketResult = quick_xml::de::from_str(&body).map_err(|e| FetchError::Listing {
                what: what.clone(),
                message: e.to_string(),
            })?;
            keys.extend(page.contents.into_iter().map(|c| c.key));
            if keys.len() > MAX_MODEL_FILES {
                return Err(FetchError::TooLarge {
                    what,
                    limit: format!("{MAX_MODEL_FILES} objects"),
                });
            }
            let next = page.next_continuation_token.filter(|t| !t.is_empty());
            match (page.is_truncated, next) {
                (false, _) => return Ok(keys),
                // A server that hands back the token it was given would loop forever.
                (true, Some(next)) if token.as_deref() != Some(next.as_str()) => token = Some(next),
                (true, _) => {
                    return Err(FetchError::Listing {
                        what,
                        message: "a truncated page without a new continuation token".into(),
                    })
                }
            }
        }
    }
}

#[derive(Debug, Deserialize)]
struct GcsPage {
    #[serde(default)]
    items: Vec<GcsItem>,
    #[serde(rename = "nextPageToken")]
    next_page_token: Option<String>,
}
#[derive(Debug, Deserialize)]
struct GcsItem {
    name: String,
}

/// Anonymous JSON API listing of a public bucket, page by page.
async fn gcs_list(
    client: &awc::Client,
    base: &str,
    bucket: &str,
    prefix: &str,
) -> Result<Vec<String>, FetchError> {
    let what = format!("gs://{bucket}/{prefix}: listing objects");
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut url = Url::parse(&format!("{base}/storage/v1/b/"))
            .map_err(|e| FetchError::Config(format!("[serving] gcs_endpoint {base:?} is not a URL: {e}")))?;
        url.path_segments_mut()
            .map_err(|_| FetchError::Config(format!("[serving] gcs_endpoint {base:?} is not a URL")))?
            .pop_if_empty()
            .extend([bucket, "o"]);
        url.query_pairs_mut()
            .append_pair("prefix", prefix)
            .append_pair("fields", "items(name),nextPageToken");
        if let Some(token) = &token {
            url.query_pairs_mut().append_pair("pageToken", token);
        }
        let body = get_small(client, None, url.as_str(), &what).await?;
        let page: GcsPage = serde_json::from_str(&body).map_err(|e| FetchError::Listing {
            what: what.clone(),
            message: e.to_string(),
        })?;
        keys.extend(page.items.into_iter().map(|i| i.name));
        if keys.len() > MAX_MODEL_FILES {
            return Err(FetchError::TooLarge {
                what,
                limit: format!("{MAX_MODEL_FILES} objects"),
            });
        }
        match page.next_page_token.filter(|t| !t.is_empty()) {
            Some(next) if token.as_deref() != Some(next.as_str()) => token = Some(next),
            Some(_) => {
                return Err(FetchError::Listing {
                    what,
                    message: "the page token did not advance".into(),
                })
            }
            None => return Ok(keys),
        }
    }
}

/// `{base}/{bucket}/{object}`, the object's segments percent-encoded.
fn gcs_object_url(base: &str, bucket: &str, object: &str) -> Result<String, FetchError> {
    let mut url = Url::parse(&format!("{base}/"))
        .map_err(|e| FetchError::Config(format!("[serving] gcs_endpoint {base:?} is not a URL: {e}")))?;
    url.path_segments_mut()
        .map_err(|_| FetchError::Config(format!("[serving] gcs_endpoint {base:?} is not a URL")))?
        .pop_if_empty()
        .push(bucket)
        .extend(object.split('/'));
    Ok(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn object_names_that_leave_the_directory_are_refused() {
        for bad in [
            "",
            "..",
            "a/../b",
            "../etc/passwd",
            "a//b",
            "/abs",
            "a/./b",
            "a\\..\\b",
            "a/",
        ] {
            assert!(!safe_relative(bad), "{bad:?} accepted");
        }
        for good in ["model.joblib", "sub/dir/model.bst", "..hidden", "a..b/c"] {
            assert!(safe_relative(good), "{good:?} refused");
        }
    }

    #[test]
    fn a_bucket_root_lists_everything() {
        assert_eq!(dir_prefix(""), "");
        assert_eq!(dir_prefix("models/iris/"), "models/iris/");
        assert_eq!(dir_prefix("models/iris"), "models/iris/");
    }

    #[test]
    fn s3_error_documents_are_named_in_the_message() {
        let body = r#"<?xml version="1.0" encoding="UTF-8"?>
<Error><Code>InvalidAccessKeyId</Code><Message>The AWS Access Key Id you provided does not exist in our records.</Message><RequestId>1</RequestId></Error>"#;
        assert_eq!(
            error_detail(awc::http::StatusCode::FORBIDDEN, body),
            " Forbidden: InvalidAccessKeyId: The AWS Access Key Id you provided does not exist in our records."
        );
        let gcs = r#"{"error": {"code": 404, "message": "The specified bucket does not exist."}}"#;
        assert_eq!(
            error_detail(awc::http::StatusCode::NOT_FOUND, gcs),
            " Not Found: The specified bucket does not exist."
        );
        assert_eq!(
            error_detail(awc::http::StatusCode::BAD_GATEWAY, "<html>"),
            " Bad Gateway"
        );
    }

    #[test]
    fn credentials_come_from_config_first_then_the_aws_environment() {
        let env = |name: &str| match name {
            "AWS_ACCESS_KEY_ID" => Some("envkey".to_string()),
            "AWS_SECRET_ACCESS_KEY" => Some("envsecret".to_string()),
            "AWS_SESSION_TOKEN" => Some("tok".to_string()),
            "AWS_REGION" => Some("eu-west-1".to_string()),
            _ => None,
        };
        let mut config = ServingConfig::default();
        let auth = s3_auth(&config, &env).expect("env credentials");
        assert_eq!(
            auth.credentials,
            Some(("envkey".into(), "envsecret".into(), Some("tok".into())))
        );
        assert_eq!(auth.region, "eu-west-1");

        config.s3_access_key_id = "cfgkey".into();
        config.s3_secret_access_key = "cfgsecret".into();
        config.s3_region = "auto".into();
        let auth = s3_auth(&config, &env).expect("config credentials");
        assert_eq!(
            auth.credentials,
            Some(("cfgkey".into(), "cfgsecret".into(), None))
        );
        assert_eq!(auth.region, "auto");

        let anonymous = s3_auth(&ServingConfig::default(), &|_| None).expect("anonymous");
        assert_eq!(anonymous.credentials, None);
        assert_eq!(anonymous.region, "us-east-1");

        let half = |name: &str| (name == "AWS_ACCESS_KEY_ID").then(|| "k".to_string());
        assert!(matches!(
            s3_auth(&ServingConfig::default(), &half),
            Err(FetchError::Config(_))
        ));
    }

    #[test]
    fn transient_failures_are_retried_and_client_errors_are_not() {
        let status = |status| FetchError::Status {
            what: "x".into(),
            status,
            detail: String::new(),
        };
        assert!(status(503).transient());
        assert!(status(429).transient());
        assert!(!status(403).transient());
        assert!(!status(404).transient());
        assert!(!FetchError::UnsafeKey { key: "../x".into() }.transient());
        let transport = FetchError::Transport {
            what: "x".into(),
            message: "connection refused".into(),
        };
        assert!(transport.transient());
        let tls = FetchError::Tls {
            what: "x".into(),
            message: "invalid peer certificate: UnknownIssuer".into(),
        };
        assert!(!tls.transient());
    }

    #[test]
    fn gcs_object_urls_encode_each_segment() {
        assert_eq!(
            gcs_object_url("https://storage.googleapis.com", "b", "m/a b#c").expect("url"),
            "https://storage.googleapis.com/b/m/a%20b%23c"
        );
    }
}
