//! The data plane's connections to replicas, against a replica that records every
//! request it reads (whole or cut short) and closes its keep-alive connections as
//! real servers do:
//!
//! - a replica that closes an idle keep-alive connection (uvicorn after its keep-alive
//!   timeout, here after a few milliseconds) costs the client nothing: the next request
//!   is answered, on a new connection when the idle one could not take it, and the
//!   replica reads each request once;
//! - a request already written to a connection that then closes without an answer is
//!   never sent again (the replica may have acted on it): the client gets 502 and the
//!   replica read it once;
//! - a chunked body that goes over `max_body_bytes` gets 413, and the replica never
//!   reads a whole request from it: its connection is cut before the last chunk.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options};
use serde_json::{json, Value};

const BASE: &str = "/apis/serving.kserve.io/v1beta1/namespaces/plane/inferenceservices";
const HOST: &str = "rec.plane.example.com";
const LIMIT: usize = 256 * 1024;

/// The replica: one thread per connection; each request it reads ends up as a line
/// in `$RECORD` (`{"id", "conn", "bytes", "whole", "auth", "cookie"}`, `conn` counting
/// connections, `auth` and `cookie` the headers as it got them); a request with `x-drop: 1` is read whole
/// and its connection closed without an answer; an idle connection is closed after
/// `$IDLE_CLOSE_MS` (0: right after each answer, without saying `Connection: close`).
const REPLICA: &str = r#"
import json, os, socket, threading
RECORD, IDLE = os.environ["RECORD"], float(os.environ["IDLE_CLOSE_MS"]) / 1000
lock = threading.Lock()
def record(**entry):
    with lock, open(RECORD, "a") as f:
        f.write(json.dumps(entry) + "\n")
def serve(conn, number):
    f = conn.makefile("rb")
    served = False
    try:
        while True:
            if served and IDLE == 0:
                return
            conn.settimeout(IDLE if served else None)
            try:
                line = f.readline()
            except (socket.timeout, OSError):
                return
            if not line:
                return
            conn.settimeout(None)
            headers = {}
            while True:
                h = f.readline()
                if h in (b"\r\n", b"\n", b""):
                    break
                k, _, v = h.decode("latin-1").partition(":")
                headers[k.strip().lower()] = v.strip()
            rid = headers.get("x-request-id", "")
            size, whole = 0, False
            if headers.get("transfer-encoding", "").lower() == "chunked":
                while True:
                    head = f.readline()
                    if not head.endswith(b"\n"):
                        break
                    n = int(head.split(b";")[0].strip() or b"0", 16)
                    if n == 0:
                        f.readline()
                        whole = True
                        break
                    got = f.read(n + 2)
                    size += max(0, len(got) - 2)
                    if len(got) < n + 2:
                        break
            else:
                want = int(headers.get("content-length", "0"))
                size = len(f.read(want))
                whole = size == want
            record(id=rid, conn=number, bytes=size, whole=whole,
                   auth=headers.get("authorization"), cookie=headers.get("cookie"))
            if not whole or headers.get("x-drop") == "1":
                return
            body = json.dumps({"predictions": [rid]}).encode()
            conn.sendall(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body))
            served = True
    finally:
        conn.close()
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(64)
accepted = 0
while True:
    c, _ = s.accept()
    accepted += 1
    threading.Thread(target=serve, args=(c, accepted), daemon=True).start()
"#;

fn daemon() -> Daemon {
    spawn_daemon_with(Options::default().env("HEARTH_MAX_BODY_BYTES", &LIMIT.to_string()))
}

/// Creates the service `rec` (one replica) with the given idle close and waits until ready.
fn start_replica(d: &Daemon, record: &Path, idle_close_ms: u32) {
    let isvc = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "rec"},
        "spec": {"predictor": {"minReplicas": 1, "containers": [{"name": "kserve-container",
            "image": "python", "command": ["/usr/bin/python3", "-c", REPLICA],
            "env": [{"name": "RECORD", "value": record.display().to_string()},
                    {"name": "IDLE_CLOSE_MS", "value": idle_close_ms.to_string()}]}]}}});
    let created = d.post_json(BASE, d.admin(), &isvc);
    assert_eq!(created.status, 201, "{created}");
    d.wait_until(&format!("{BASE}/rec"), Duration::from_secs(60), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
}

fn records(record: &Path) -> Vec<Value> {
    std::fs::read_to_string(record)
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn predict(client: &reqwest::blocking::Client, d: &Daemon, id: &str, drop: bool) -> (u16, String) {
    let mut request = client
        .post(format!("{}/v1/models/rec:predict", d.serving_url()))
        .header("Host", HOST)
        .header("x-request-id", id)
        .json(&json!({"instances": [id]}));
    if drop {
        request = request.header("x-drop", "1");
    }
    let answer = request.send().unwrap();
    (answer.status().as_u16(), answer.text().unwrap())
}

fn client() -> reqwest::blocking::Client {
    // One keep-alive connection to the data plane, so that every request lands on the
    // same data-plane thread and finds the replica connection the previous one left.
    reqwest::blocking::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(1)
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

#[test]
fn a_replica_closing_idle_connections_costs_no_request_and_none_is_read_twice() {
    for idle_close_ms in [0u32, 20] {
        let d = daemon();
        let dir = tempfile::tempdir().unwrap();
        let record = dir.path().join("record");
        start_replica(&d, &record, idle_close_ms);
        let client = client();
        let mut sent = Vec::new();
        // Pauses around the replica's idle close, so that its FIN comes before, with
        // and after the next request.
        for i in 0..60u64 {
            let id = format!("r{idle_close_ms}-{i}");
            let (status, body) = predict(&client, &d, &id, false);
            assert_eq!(
                status, 200,
                "request {id} after the replica closed its idle connection: {body}"
            );
            assert!(body.contains(&id), "{body}");
            sent.push(id);
            std::thread::sleep(Duration::from_micros(
                (u64::from(idle_close_ms) * 1000 * (i % 7)) / 4,
            ));
        }
        let seen = records(&record);
        for id in &sent {
            let times = seen.iter().filter(|r| r["id"] == id.as_str()).count();
            assert_eq!(times, 1, "the replica read {id} {times} times: {seen:?}");
        }
        assert!(seen.iter().all(|r| r["whole"] == true), "{seen:?}");
        // The replica did close connections under the proxy: requests came on many.
        let mut conns: Vec<u64> = seen.iter().map(|r| r["conn"].as_u64().unwrap()).collect();
        conns.dedup();
        let least = if idle_close_ms == 0 { sent.len() } else { 10 };
        assert!(
            conns.len() >= least,
            "{} connections for {} requests: {seen:?}",
            conns.len(),
            sent.len()
        );
    }
}

#[test]
fn a_request_written_to_a_connection_that_then_closes_is_never_sent_again() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    // Idle connections stay open: the dropped request goes on one the previous request
    // left, the case a proxy could take for a stale connection and re-send.
    start_replica(&d, &record, 60_000);
    let client = client();
    for i in 0..5 {
        let warm = format!("warm-{i}");
        assert_eq!(predict(&client, &d, &warm, false).0, 200);
        let id = format!("dropped-{i}");
        let (status, body) = predict(&client, &d, &id, true);
        assert_eq!(status, 502, "{body}");
        assert!(body.contains("replica"), "{body}");
        let seen = records(&record);
        let times = seen.iter().filter(|r| r["id"] == id.as_str()).count();
        assert_eq!(times, 1, "the replica read {id} {times} times: {seen:?}");
    }
    // The data plane goes on answering on new connections.
    assert_eq!(predict(&client, &d, "after", false).0, 200);
}

#[test]
fn a_chunked_body_over_the_limit_is_413_and_the_replica_reads_no_request_from_it() {
    let d = daemon();
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    start_replica(&d, &record, 60_000);
    let client = client();
    assert_eq!(predict(&client, &d, "before", false).0, 200);

    let addr = d.serving_url().trim_start_matches("http://").to_string();
    let mut sock = TcpStream::connect(&addr).unwrap();
    sock.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!(
        "POST /v1/models/rec:predict HTTP/1.1\r\nHost: {HOST}\r\nx-request-id: big\r\n\
         Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    );
    sock.write_all(head.as_bytes()).unwrap();
    let chunk = vec![b'y'; 16 * 1024];
    let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
    framed.extend_from_slice(&chunk);
    framed.extend_from_slice(b"\r\n");
    // Past the limit, then the proxy may stop reading: a failed write is expected.
    for _ in 0..(LIMIT / chunk.len() + 4) {
        if sock.write_all(&framed).is_err() {
            break;
        }
    }
    let _ = sock.write_all(b"0\r\n\r\n");
    let mut answer = Vec::new();
    let mut buf = [0u8; 4096];
    while !answer.windows(4).any(|w| w == b"\r\n\r\n") {
        match sock.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => answer.extend_from_slice(&buf[..n]),
        }
    }
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    drop(sock);

    assert_eq!(predict(&client, &d, "after", false).0, 200);
    let seen = records(&record);
    let big: Vec<&Value> = seen.iter().filter(|r| r["id"] == "big").collect();
    assert!(
        big.iter()
            .all(|r| r["whole"] == false && r["bytes"].as_u64().unwrap() <= LIMIT as u64),
        "the replica read a whole request, or more than the limit, from the refused body: {big:?}"
    );
    let whole: Vec<&str> = seen
        .iter()
        .filter(|r| r["whole"] == true)
        .map(|r| r["id"].as_str().unwrap())
        .collect();
    assert_eq!(whole, ["before", "after"], "{seen:?}");
}

/// The replica runs its namespace owner's code: it never gets an admin's token or the
/// web page's session cookie, only its owner's own token and headers of its own.
#[test]
fn a_replica_never_sees_an_admins_token_or_the_session_cookie() {
    let d = daemon();
    let owner = d.create_user("plane");
    let dir = tempfile::tempdir().unwrap();
    let record = dir.path().join("record");
    start_replica(&d, &record, 60_000);
    let client = client();
    let send = |id: &str, auth: Option<String>, cookie: Option<&str>| {
        let mut request = client
            .post(format!("{}/v1/models/rec:predict", d.serving_url()))
            .header("Host", HOST)
            .header("x-request-id", id)
            .json(&json!({"instances": [id]}));
        if let Some(auth) = auth {
            request = request.header("Authorization", auth);
        }
        if let Some(cookie) = cookie {
            request = request.header("Cookie", cookie);
        }
        let answer = request.send().unwrap();
        assert_eq!(answer.status().as_u16(), 200, "{id}: {}", answer.text().unwrap());
    };
    let admin = d.admin().unwrap().to_string();
    send("admin", Some(format!("Bearer {admin}")), None);
    send("owner", Some(format!("Bearer {owner}")), None);
    send("own-scheme", Some("ApiKey model-secret".into()), None);
    send("cookie", None, Some("hearth_session=s3cret; theme=dark"));
    send("only-session", None, Some("hearth_session=s3cret"));
    let seen = records(&record);
    let of = |id: &str| {
        seen.iter()
            .find(|r| r["id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("{id}: {seen:?}"))
    };
    assert_eq!(of("admin")["auth"], Value::Null, "{seen:?}");
    assert_eq!(of("owner")["auth"], json!(format!("Bearer {owner}")), "{seen:?}");
    assert_eq!(of("own-scheme")["auth"], json!("ApiKey model-secret"), "{seen:?}");
    assert_eq!(of("cookie")["cookie"], json!("theme=dark"), "{seen:?}");
    assert_eq!(of("only-session")["cookie"], Value::Null, "{seen:?}");
    assert!(
        !std::fs::read_to_string(&record).unwrap().contains(&admin),
        "{seen:?}"
    );
}
