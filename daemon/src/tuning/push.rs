//! Katib's `Push` metrics collector: a trial reports with the katib SDK's
//! `report_metrics` (kubeflow-katib 0.19), which sends a gRPC
//! `api.v1.beta1.DBManager/ReportObservationLog` to `katib-db-manager.kubeflow:6789`
//! (its default address) with the trial name from `KATIB_TRIAL_NAME`.
//!
//! Hearth serves that call on a loopback port (kept in `<data-dir>/katib-push.addr`)
//! and points a Push trial's process at it with gRPC's own proxy setting: the trial's
//! environment gets `grpc_proxy=http://<namespace>:<token>@127.0.0.1:<port>`, so the
//! SDK's gRPC channel sends `CONNECT katib-db-manager.kubeflow:6789` with the
//! credential as `Proxy-Authorization: Basic`, and the tunnel it gets is this server
//! (HTTP/2 with prior knowledge, as gRPC speaks it). The token is an HMAC (SHA-256,
//! key in `<data-dir>/katib-push.key`, mode 0600) over the namespace, the Job's name
//! and the Job's uid: it is made when the process starts and is in neither the Trial
//! nor the Job document. A report is taken only for the trial of that Job, in that
//! namespace, while the trial runs; another trial's token, or another namespace's,
//! is refused (`PERMISSION_DENIED`).
//!
//! Messages follow Katib's `api.proto`: `ReportObservationLogRequest { trial_name = 1;
//! observation_log = 2 }`, `ObservationLog { repeated metric_logs = 1 }`,
//! `MetricLog { time_stamp = 1; metric = 2 }`, `Metric { name = 1; value = 2 }`.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;

use base64::Engine;
use bytes::Bytes;
use ring::hmac;
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::controller::TRIAL_LABEL;
use super::metrics::{self, MetricLog};
use super::spec;
use super::Tuning;
use crate::store::resources::{self, Resource};
use crate::store::{observation_logs, StoreError};

/// The gRPC method served.
pub const REPORT_PATH: &str = "/api.v1.beta1.DBManager/ReportObservationLog";
/// The annotation the controller puts on a Push trial's Job: its process gets the
/// environment [`Push::environment`] makes.
pub const PUSH_ANNOTATION: &str = "hearth.dev/katib-push";
/// The largest CONNECT request head and gRPC message read.
const MAX_HEAD: usize = 8 << 10;
const MAX_MESSAGE: usize = 4 << 20;

/// The push endpoint: where it listens, and the key its tokens are made with.
#[derive(Clone)]
pub struct Push {
    addr: SocketAddr,
    key: Arc<hmac::Key>,
}

#[derive(Debug)]
struct Status {
    /// gRPC status code (`google.rpc.Code`).
    code: u8,
    message: String,
}

impl Status {
    fn new(code: u8, message: impl Into<String>) -> Status {
        Status {
            code,
            message: message.into(),
        }
    }
}

const INVALID_ARGUMENT: u8 = 3;
const PERMISSION_DENIED: u8 = 7;
const RESOURCE_EXHAUSTED: u8 = 8;
const FAILED_PRECONDITION: u8 = 9;
const UNIMPLEMENTED: u8 = 12;
const INTERNAL: u8 = 13;
const UNAUTHENTICATED: u8 = 16;

fn load_key(data_dir: &Path) -> std::io::Result<hmac::Key> {
    let path = data_dir.join("katib-push.key");
    let bytes = match std::fs::read(&path) {
        Ok(b) if b.len() == 32 => b,
        _ => {
            use rand::RngCore;
            use std::os::unix::fs::OpenOptionsExt;
            let mut b = vec![0u8; 32];
            rand::rng().fill_bytes(&mut b);
            let tmp = data_dir.join("katib-push.key.tmp");
            let mut file = std::fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut file, &b)?;
            file.sync_all()?;
            std::fs::rename(&tmp, &path)?;
            b
        }
    };
    Ok(hmac::Key::new(hmac::HMAC_SHA256, &bytes))
}

fn signed(namespace: &str, job: &str, job_uid: &str) -> Vec<u8> {
    format!("{namespace}\0{job}\0{job_uid}").into_bytes()
}

impl Push {
    /// Binds the loopback port, records it in `<data-dir>/katib-push.addr` and serves
    /// reports for `tuning` on the current runtime.
    pub async fn start(data_dir: &Path, tuning: Tuning) -> std::io::Result<Push> {
        let key = load_key(data_dir)?;
        // The port of the last run if it is free: trials that outlived a restart keep
        // reporting to the address in their environment.
        let previous = std::fs::read_to_string(data_dir.join("katib-push.addr"))
            .ok()
            .and_then(|a| a.trim().parse::<SocketAddr>().ok())
            .filter(|a| a.ip().is_loopback());
        let listener = match previous {
            Some(addr) => match TcpListener::bind(addr).await {
                Ok(l) => l,
                Err(_) => TcpListener::bind(("127.0.0.1", 0)).await?,
            },
            None => TcpListener::bind(("127.0.0.1", 0)).await?,
        };
        let addr = listener.local_addr()?;
        std::fs::write(data_dir.join("katib-push.addr"), addr.to_string())?;
        let push = Push {
            addr,
            key: Arc::new(key),
        };
        let serving = push.clone();
        tokio::spawn(async move {
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        let (push, tuning) = (serving.clone(), tuning.clone());
                        tokio::spawn(async move {
                            if let Err(e) = push.connection(stream, tuning).await {
                                tracing::debug!(error = %e, "katib push connection ended");
                            }
                        });
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "katib push endpoint: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(push)
    }

    fn token(&self, namespace: &str, job: &str, job_uid: &str) -> String {
        hex::encode(hmac::sign(&self.key, &signed(namespace, job, job_uid)).as_ref())
    }

    /// The environment of a Push trial's process (a Job the controller annotated with
    /// [`PUSH_ANNOTATION`], owned by its Trial): `KATIB_TRIAL_NAME`, as Katib sets it,
    /// and `grpc_proxy` carrying this Job's credential. Empty for any other Job. Every
    /// gRPC channel of the trial goes to this endpoint unless the trial lists its host
    /// in `no_grpc_proxy` (gRPC's own exclusion list); only `ReportObservationLog` is
    /// served, anything else is `UNIMPLEMENTED`, naming the method.
    pub fn environment(&self, job: &Resource) -> Vec<(String, String)> {
        let annotated = job
            .metadata
            .pointer("/annotations")
            .and_then(|a| a.get(PUSH_ANNOTATION))
            .is_some();
        let labelled = job
            .metadata
            .pointer("/labels")
            .and_then(|l| l.get(TRIAL_LABEL))
            .and_then(Value::as_str)
            == Some(job.name.as_str());
        if !annotated || !labelled {
            return Vec::new();
        }
        let token = self.token(&job.namespace, &job.name, &job.uid);
        vec![
            ("KATIB_TRIAL_NAME".into(), job.name.clone()),
            (
                "grpc_proxy".into(),
                format!("http://{}:{token}@{}", job.namespace, self.addr),
            ),
        ]
    }

    /// One connection: the CONNECT handshake (its credential read), then HTTP/2.
    async fn connection(&self, mut stream: TcpStream, tuning: Tuning) -> Result<(), String> {
        let mut head = Vec::new();
        let mut byte = [0u8; 1];
        // Byte by byte: what follows the head is the tunnel's, and the client sends it
        // only after the 200.
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() >= MAX_HEAD || stream.read(&mut byte).await.map_err(|e| e.to_string())? == 0 {
                return Err("the CONNECT request ended early".into());
            }
            head.push(byte[0]);
        }
        let text = String::from_utf8_lossy(&head);
        let credential = text.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            if !name.trim().eq_ignore_ascii_case("proxy-authorization") {
                return None;
            }
            let encoded = value.trim().strip_prefix("Basic ")?;
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(encoded.trim())
                .ok()?;
            let decoded = String::from_utf8(decoded).ok()?;
            let (namespace, token) = decoded.split_once(':')?;
            Some((namespace.to_string(), token.to_string()))
        });
        if !text.starts_with("CONNECT ") {
            let _ = stream
                .write_all(b"HTTP/1.1 405 Method Not Allowed\r\nContent-Length: 0\r\n\r\n")
                .await;
            return Err("not a CONNECT request".into());
        }
        let Some(credential) = credential else {
            let _ = stream
                .write_all(b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=\"katib\"\r\nContent-Length: 0\r\n\r\n")
                .await;
            return Err("no Proxy-Authorization".into());
        };
        stream
            .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
            .await
            .map_err(|e| e.to_string())?;
        let credential = Arc::new(credential);
        let mut connection = h2::server::handshake(stream).await.map_err(|e| e.to_string())?;
        while let Some(request) = connection.accept().await {
            let (request, respond) = request.map_err(|e| e.to_string())?;
            let (push, tuning, credential) = (self.clone(), tuning.clone(), Arc::clone(&credential));
            tokio::spawn(async move {
                push.call(request, respond, &credential, &tuning).await;
            });
        }
        Ok(())
    }

    async fn call(
        &self,
        request: http02::Request<h2::RecvStream>,
        mut respond: h2::server::SendResponse<Bytes>,
        credential: &(String, String),
        tuning: &Tuning,
    ) {
        let outcome = if request.uri().path() == REPORT_PATH {
            match read_message(request.into_body()).await {
                Ok(message) => self.report(&message, credential, tuning).await,
                Err(status) => Err(status),
            }
        } else {
            Err(Status::new(
                UNIMPLEMENTED,
                format!(
                    "{} is not served by Hearth; only ReportObservationLog",
                    request.uri().path()
                ),
            ))
        };
        let (code, message) = match &outcome {
            Ok(()) => (0, String::new()),
            Err(s) => (s.code, s.message.clone()),
        };
        let mut builder = http02::Response::builder()
            .status(200)
            .header("content-type", "application/grpc");
        if code != 0 {
            // Trailers-only: the status in the headers, nothing after.
            builder = builder
                .header("grpc-status", code.to_string())
                .header("grpc-message", percent_encode(&message));
            if let Ok(response) = builder.body(()) {
                let _ = respond.send_response(response, true);
            }
            return;
        }
        let Ok(response) = builder.body(()) else { return };
        let Ok(mut send) = respond.send_response(response, false) else {
            return;
        };
        // An empty `ReportObservationLogReply`: uncompressed, length 0.
        let _ = send.send_data(Bytes::from_static(&[0, 0, 0, 0, 0]), false);
        let mut trailers = http02::HeaderMap::new();
        trailers.insert("grpc-status", http02::HeaderValue::from_static("0"));
        let _ = send.send_trailers(trailers);
    }

    /// Checks the caller may write the named trial's log and appends the values.
    async fn report(
        &self,
        message: &[u8],
        credential: &(String, String),
        tuning: &Tuning,
    ) -> Result<(), Status> {
        let request = decode_request(message).map_err(|e| Status::new(INVALID_ARGUMENT, e))?;
        let (namespace, token) = credential;
        let (ns, name) = (namespace.clone(), request.trial_name.clone());
        let found = tuning
            .store
            .call(move |conn| {
                let trial = match resources::get(conn, spec::TRIAL_KIND, &ns, &name) {
                    Ok(t) => t,
                    Err(StoreError::NotFound { .. }) => return Ok(None),
                    Err(e) => return Err(e),
                };
                let job = match resources::get(conn, crate::jobs::spec::KIND, &ns, &name) {
                    Ok(j) => Some(j),
                    Err(StoreError::NotFound { .. }) => None,
                    Err(e) => return Err(e),
                };
                Ok(Some((trial, job)))
            })
            .await
            .map_err(|e| Status::new(INTERNAL, e.to_string()))?;
        let denied = || {
            Status::new(
                PERMISSION_DENIED,
                format!(
                    "this trial's credential does not let it report for trial {namespace}/{}",
                    request.trial_name
                ),
            )
        };
        let Some((trial, job)) = found else {
            return Err(denied());
        };
        let Some(job) = job.filter(|j| super::controller::owned_by(j, &trial.uid)) else {
            return Err(denied());
        };
        let Ok(given) = hex::decode(token) else {
            return Err(Status::new(UNAUTHENTICATED, "the credential is malformed"));
        };
        if hmac::verify(&self.key, &signed(&job.namespace, &job.name, &job.uid), &given).is_err() {
            return Err(denied());
        }
        if super::controller::trial_has_ended(&trial.status) {
            return Err(Status::new(
                FAILED_PRECONDITION,
                format!("trial {namespace}/{} has ended", request.trial_name),
            ));
        }
        let now = crate::store::now_rfc3339();
        let logs: Vec<MetricLog> = request
            .logs
            .into_iter()
            .map(|mut l| {
                if l.time_stamp.is_empty() {
                    l.time_stamp = now.clone();
                }
                l
            })
            .collect();
        let count = logs.len();
        let uid = trial.uid.clone();
        let written = tuning
            .store
            .call(move |conn| observation_logs::append(conn, &uid, &logs, metrics::LOG_BOUND))
            .await
            .map_err(|e| Status::new(INTERNAL, e.to_string()))?;
        if written < count {
            return Err(Status::new(
                RESOURCE_EXHAUSTED,
                format!(
                    "the observation log of trial {namespace}/{} holds at most {} values; {} of {count} were not logged",
                    request.trial_name,
                    metrics::LOG_BOUND,
                    count - written
                ),
            ));
        }
        Ok(())
    }
}

/// Reads one gRPC message (length-prefixed, uncompressed) from a request body.
async fn read_message(mut body: h2::RecvStream) -> Result<Vec<u8>, Status> {
    let mut buffer = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| Status::new(INVALID_ARGUMENT, e.to_string()))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        buffer.extend_from_slice(&chunk);
        if buffer.len() > MAX_MESSAGE + 5 {
            return Err(Status::new(
                RESOURCE_EXHAUSTED,
                format!("a report is at most {MAX_MESSAGE} bytes"),
            ));
        }
    }
    let Some((&compressed, rest)) = buffer.split_first() else {
        return Err(Status::new(INVALID_ARGUMENT, "the request has no message"));
    };
    if compressed != 0 {
        return Err(Status::new(UNIMPLEMENTED, "compressed messages are not taken"));
    }
    let (length, message) = rest
        .split_at_checked(4)
        .ok_or_else(|| Status::new(INVALID_ARGUMENT, "truncated message"))?;
    let length = u32::from_be_bytes([length[0], length[1], length[2], length[3]]) as usize;
    if message.len() != length {
        return Err(Status::new(INVALID_ARGUMENT, "the message length does not match"));
    }
    Ok(message.to_vec())
}

/// gRPC's `grpc-message` encoding: printable ASCII but `%` as is, the rest `%XX`.
fn percent_encode(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if (0x20..0x7f).contains(&b) && b != b'%' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[derive(Debug, PartialEq)]
struct ReportRequest {
    trial_name: String,
    logs: Vec<MetricLog>,
}

/// Protobuf wire format, as far as these messages need it: varints, and
/// length-delimited fields (strings and messages); other wire types are skipped.
fn fields(mut buf: &[u8]) -> Result<Vec<(u64, &[u8])>, &'static str> {
    fn varint(buf: &mut &[u8]) -> Result<u64, &'static str> {
        let mut value = 0u64;
        for shift in (0..64).step_by(7) {
            let (&byte, rest) = buf.split_first().ok_or("truncated varint")?;
            *buf = rest;
            value |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err("varint too long")
    }
    let mut out = Vec::new();
    while !buf.is_empty() {
        let key = varint(&mut buf)?;
        let (number, wire) = (key >> 3, key & 7);
        match wire {
            0 => {
                varint(&mut buf)?;
            }
            1 => buf = buf.get(8..).ok_or("truncated fixed64")?,
            2 => {
                let len = usize::try_from(varint(&mut buf)?).map_err(|_| "length too large")?;
                let (value, rest) = buf.split_at_checked(len).ok_or("truncated field")?;
                out.push((number, value));
                buf = rest;
            }
            5 => buf = buf.get(4..).ok_or("truncated fixed32")?,
            _ => return Err("unknown wire type"),
        }
    }
    Ok(out)
}

fn text(bytes: &[u8]) -> Result<String, &'static str> {
    String::from_utf8(bytes.to_vec()).map_err(|_| "a string is not UTF-8")
}

fn decode_request(message: &[u8]) -> Result<ReportRequest, String> {
    let mut request = ReportRequest {
        trial_name: String::new(),
        logs: Vec::new(),
    };
    for (number, value) in fields(message)? {
        match number {
            1 => request.trial_name = text(value)?,
            2 => {
                for (n, log) in fields(value)? {
                    if n != 1 {
                        continue;
                    }
                    let mut entry = MetricLog {
                        time_stamp: String::new(),
                        name: String::new(),
                        value: String::new(),
                    };
                    for (m, part) in fields(log)? {
                        match m {
                            1 => entry.time_stamp = text(part)?,
                            2 => {
                                for (k, v) in fields(part)? {
                                    match k {
                                        1 => entry.name = text(v)?,
                                        2 => entry.value = text(v)?,
                                        _ => {}
                                    }
                                }
                            }
                            _ => {}
                        }
                    }
                    if entry.name.is_empty() {
                        return Err("a metric log has no metric name".into());
                    }
                    if !entry.value.trim().parse::<f64>().is_ok_and(f64::is_finite) {
                        return Err(format!(
                            "metric {}: {:?} is not a finite number",
                            entry.name, entry.value
                        ));
                    }
                    request.logs.push(entry);
                }
            }
            _ => {}
        }
    }
    if request.trial_name.is_empty() {
        return Err("trial_name is required".into());
    }
    Ok(request)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(number: u64, bytes: &[u8]) -> Vec<u8> {
        let mut out = vec![
            u8::try_from((number << 3) | 2).unwrap(),
            u8::try_from(bytes.len()).unwrap(),
        ];
        out.extend_from_slice(bytes);
        out
    }

    fn job(namespace: &str, name: &str, uid: &str, annotated: bool) -> Resource {
        let mut metadata = serde_json::json!({"labels": {TRIAL_LABEL: name}});
        if annotated {
            metadata["annotations"] = serde_json::json!({PUSH_ANNOTATION: "true"});
        }
        Resource {
            uid: uid.into(),
            kind: crate::jobs::spec::KIND.into(),
            namespace: namespace.into(),
            name: name.into(),
            metadata,
            spec: serde_json::json!({}),
            status: serde_json::json!({}),
            generation: 1,
            resource_version: 1,
            created_at: String::new(),
            updated_at: String::new(),
            deletion_requested_at: None,
        }
    }

    #[test]
    fn each_job_gets_its_own_credential_and_unmarked_jobs_none() {
        let push = Push {
            addr: "127.0.0.1:7000".parse().unwrap(),
            key: Arc::new(hmac::Key::new(hmac::HMAC_SHA256, &[7u8; 32])),
        };
        let env = push.environment(&job("team", "exp-a", "u1", true));
        assert_eq!(env[0], ("KATIB_TRIAL_NAME".to_string(), "exp-a".to_string()));
        let proxy = &env[1].1;
        assert!(
            proxy.starts_with("http://team:") && proxy.ends_with("@127.0.0.1:7000"),
            "{proxy}"
        );
        let token = |ns: &str, name: &str, uid: &str| push.token(ns, name, uid);
        let mine = token("team", "exp-a", "u1");
        assert!(proxy.contains(&mine));
        // Another trial, the same name in another namespace, or a later Job of the
        // same name: each a different credential.
        for other in [
            token("team", "exp-b", "u1"),
            token("other", "exp-a", "u1"),
            token("team", "exp-a", "u2"),
        ] {
            assert_ne!(other, mine);
        }
        assert!(push.environment(&job("team", "exp-a", "u1", false)).is_empty());
        let mut unlabelled = job("team", "exp-a", "u1", true);
        unlabelled.metadata["labels"] = serde_json::json!({TRIAL_LABEL: "someone-else"});
        assert!(push.environment(&unlabelled).is_empty());
    }

    #[test]
    fn a_report_is_read_as_katibs_api_proto_writes_it() {
        let metric = [field(1, b"accuracy"), field(2, b"0.5")].concat();
        let log = [field(1, b"2024-01-01T00:00:00Z"), field(2, &metric)].concat();
        let observation = field(1, &log);
        let message = [field(1, b"exp-abc"), field(2, &observation)].concat();
        let request = decode_request(&message).unwrap();
        assert_eq!(request.trial_name, "exp-abc");
        assert_eq!(
            request.logs,
            [MetricLog {
                time_stamp: "2024-01-01T00:00:00Z".into(),
                name: "accuracy".into(),
                value: "0.5".into()
            }]
        );
        let bad = [
            field(1, b"exp-abc"),
            field(
                2,
                &field(1, &field(2, &[field(1, b"a"), field(2, b"x")].concat())),
            ),
        ]
        .concat();
        assert!(decode_request(&bad).unwrap_err().contains("not a finite number"));
        assert!(decode_request(&[0x0a, 0x05, b'a']).is_err());
    }
}
