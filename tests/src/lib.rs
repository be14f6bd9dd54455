//! The end-to-end harness: spawns the real `hearth` binary on free ports with a
//! private data dir, waits until it says where it listens, and talks HTTP to it.
//!
//! ```no_run
//! let d = hearth_e2e::spawn_daemon();
//! let r = d.get("/hearth/v1/version", d.admin());
//! assert_eq!(r.status, 200, "{r}");
//! ```
//!
//! Every area's e2e tests use this; keep it generic (no knowledge of any one area).

pub mod jobs;

use std::fmt;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use reqwest::blocking::Client;
use reqwest::header::{HeaderMap, CONTENT_TYPE};
use reqwest::Method;
use serde_json::Value;

/// How long start-up may take before a test fails with the daemon's stderr.
pub const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Environment variables the daemon reads that must not leak from the test's own
/// environment into a daemon under test.
const SCRUBBED_ENV_PREFIXES: &[&str] = &["HEARTH_", "NOTIFY_SOCKET", "WATCHDOG_", "LISTEN_"];

/// The binary under test: `$HEARTH_BIN`, else `<workspace>/target/debug/hearth`
/// (honouring `$CARGO_TARGET_DIR`).
pub fn hearth_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("HEARTH_BIN") {
        return PathBuf::from(bin);
    }
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the e2e crate lives inside the workspace")
        .to_path_buf();
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|t| if t.is_absolute() { t } else { workspace.join(t) })
        .unwrap_or_else(|| workspace.join("target"));
    let bin = target.join("debug/hearth");
    assert!(
        bin.exists(),
        "{} does not exist: run `cargo build` first (or set HEARTH_BIN)",
        bin.display()
    );
    bin
}

/// The real kubectl (1.35) the tests drive: `$HEARTH_KUBECTL`, else
/// `<workspace>/.tools/kubectl`, where `scripts/test` extracts it from its pinned wheel.
/// `None` when neither exists; a test skips only outside CI (`$CI` unset), since
/// `scripts/test` always installs it.
pub fn kubectl() -> Option<PathBuf> {
    let path = match std::env::var_os("HEARTH_KUBECTL") {
        Some(path) => PathBuf::from(path),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .expect("the e2e crate lives inside the workspace")
            .join(".tools/kubectl"),
    };
    if path.exists() {
        return Some(path);
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "kubectl is missing at {} in CI: scripts/test installs it",
        path.display()
    );
    None
}

/// A `hearth` command with the caller's HEARTH_* and systemd variables removed, for
/// tests that run the CLI directly (`hearth openapi`, `hearth config show`, ...).
pub fn hearth_command() -> Command {
    let mut cmd = Command::new(hearth_bin());
    for (key, _) in std::env::vars_os() {
        if let Some(key) = key.to_str() {
            if SCRUBBED_ENV_PREFIXES.iter().any(|p| key.starts_with(p)) {
                cmd.env_remove(key);
            }
        }
    }
    cmd
}

/// How to start a daemon. `Options::default()` is what `spawn_daemon()` uses.
#[derive(Debug, Clone)]
pub struct Options {
    /// TOML text written to a config file passed with `--config`. Always passed, so a
    /// `/etc/hearth/config.toml` on the machine never leaks into a test.
    pub config_toml: String,
    /// Extra environment variables for the daemon.
    pub env: Vec<(String, String)>,
    /// Extra command-line arguments after `serve ...`.
    pub args: Vec<String>,
    /// Reuse this data dir (a restart test); `None`: a fresh temporary one.
    pub data_dir: Option<PathBuf>,
    pub start_timeout: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            config_toml: String::new(),
            // Most suites test features, not isolation, and share temp dirs and Python
            // venvs (under /root here) that a namespace's Unix user cannot reach; the
            // isolation suite sets HEARTH_ISOLATION_ENABLED=true, which comes later and wins.
            env: vec![("HEARTH_ISOLATION_ENABLED".to_string(), "false".to_string())],
            args: Vec::new(),
            data_dir: None,
            start_timeout: START_TIMEOUT,
        }
    }
}

impl Options {
    pub fn config(mut self, toml: &str) -> Self {
        self.config_toml.push_str(toml);
        self.config_toml.push('\n');
        self
    }

    pub fn env(mut self, key: &str, value: &str) -> Self {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    pub fn arg(mut self, arg: &str) -> Self {
        self.args.push(arg.to_string());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }
}

/// One HTTP answer. `body` is the parsed JSON, or the text as a JSON string when the
/// body is not JSON (`Value::Null` when empty).
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub text: String,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn content_type(&self) -> &str {
        self.header("content-type").unwrap_or("")
    }

    pub fn is_problem(&self) -> bool {
        self.content_type().starts_with("application/problem+json")
    }

    /// The problem's stable `code`, or "" when the answer is not a problem.
    pub fn code(&self) -> &str {
        if !self.is_problem() {
            return "";
        }
        self.body["code"].as_str().unwrap_or("")
    }

    /// Panics (with the whole answer) unless this is a problem+json with this status
    /// and code whose `status` member matches the HTTP status.
    #[track_caller]
    pub fn assert_problem(&self, status: u16, code: &str) -> &Self {
        assert_eq!(self.status, status, "{self}");
        assert!(self.is_problem(), "not problem+json: {self}");
        assert_eq!(self.body["status"], status, "{self}");
        assert_eq!(self.code(), code, "{self}");
        assert!(self.body["detail"].is_string(), "{self}");
        assert!(self.body["type"].is_string(), "{self}");
        assert!(self.body["title"].is_string(), "{self}");
        self
    }
}

impl Reply {
    /// Panics (with the whole answer) unless this is a Kubernetes `Status` failure
    /// with this code and `reason` (`Invalid`, `NotFound`, `AlreadyExists`, ...), as
    /// the Kubernetes paths (`/api`, `/apis/<group>`) answer errors.
    #[track_caller]
    pub fn assert_status(&self, status: u16, reason: &str) -> &Self {
        assert_eq!(self.status, status, "{self}");
        assert!(self.content_type().starts_with("application/json"), "{self}");
        assert_eq!(self.body["kind"], "Status", "{self}");
        assert_eq!(self.body["apiVersion"], "v1", "{self}");
        assert_eq!(self.body["status"], "Failure", "{self}");
        assert_eq!(self.body["code"], status, "{self}");
        assert_eq!(self.body["reason"], reason, "{self}");
        assert!(self.body["message"].is_string(), "{self}");
        self
    }

    /// The field of a Kubernetes `Status`'s first cause (`details.causes[0].field`),
    /// or "".
    pub fn cause_field(&self) -> &str {
        self.body["details"]["causes"][0]["field"].as_str().unwrap_or("")
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "HTTP {} [{}] {}", self.status, self.content_type(), self.text)
    }
}

/// A running daemon. Dropping it SIGKILLs the process; its temporary data dir is
/// removed with it.
pub struct Daemon {
    child: Option<Child>,
    pid: u32,
    options: Options,
    pub data_dir: PathBuf,
    /// Holds the temporary data dir (and config) alive; `None` when the caller gave one.
    _temp: Option<tempfile::TempDir>,
    _config_dir: tempfile::TempDir,
    api: String,
    serving: String,
    tls: String,
    pub admin_token: String,
    pub client: Client,
}

pub fn spawn_daemon() -> Daemon {
    spawn_daemon_with(Options::default())
}

pub fn spawn_daemon_with(options: Options) -> Daemon {
    let (data_dir, temp) = match &options.data_dir {
        Some(dir) => (dir.clone(), None),
        None => {
            let temp = tempfile::Builder::new()
                .prefix("hearth-e2e-")
                .tempdir()
                .expect("temp data dir");
            (temp.path().to_path_buf(), Some(temp))
        }
    };
    let config_dir = tempfile::Builder::new()
        .prefix("hearth-e2e-config-")
        .tempdir()
        .expect("temp config dir");
    // The workspace's reqwest is built with the daemon's `rustls-no-provider` feature
    // (features unify across a `--workspace` build), which wants a process-wide rustls
    // provider before any client is built, even a plain-HTTP one: ring, as the daemon uses.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let client = Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(60))
        .build()
        .expect("http client");
    let mut daemon = Daemon {
        child: None,
        pid: 0,
        options,
        data_dir,
        _temp: temp,
        _config_dir: config_dir,
        api: String::new(),
        serving: String::new(),
        tls: String::new(),
        admin_token: String::new(),
        client,
    };
    daemon.start();
    daemon
}

impl Daemon {
    pub fn config_path(&self) -> PathBuf {
        self._config_dir.path().join("config.toml")
    }

    /// The daemon's stderr accumulates here across restarts.
    pub fn log_path(&self) -> PathBuf {
        self.data_dir.join("daemon.stderr.log")
    }

    /// Everything the daemon wrote to stderr so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// Waits (up to 10 s) until the daemon's stderr holds every one of `needles`, and
    /// returns it; log lines are written after the answer, so a test must not race them.
    #[track_caller]
    pub fn wait_logs_containing(&self, needles: &[&str]) -> String {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let logs = self.logs();
            let missing: Vec<&&str> = needles.iter().filter(|n| !logs.contains(**n)).collect();
            if missing.is_empty() {
                return logs;
            }
            if Instant::now() > deadline {
                panic!("the daemon's log lacks {missing:?}:\n{logs}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn start(&mut self) {
        std::fs::create_dir_all(&self.data_dir).expect("create data dir");
        std::fs::write(self.config_path(), &self.options.config_toml).expect("write test config");
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.log_path())
            .expect("open daemon log");
        let mut cmd = hearth_command();
        cmd.arg("serve")
            .arg("--listen")
            .arg("127.0.0.1:0")
            .arg("--serving-listen")
            .arg("127.0.0.1:0")
            .arg("--tls-listen")
            .arg("127.0.0.1:0")
            .arg("--data-dir")
            .arg(&self.data_dir)
            .arg("--config")
            .arg(self.config_path())
            .args(&self.options.args)
            .envs(self.options.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("dup log"))
            .stderr(log);
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {}: {e}", hearth_bin().display()));
        self.pid = child.id();
        self.child = Some(child);
        self.wait_for_addr();
        self.admin_token = std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap_or_else(|e| panic!("admin.token: {e}\n{}", self.logs()))
            .trim()
            .to_string();
    }

    fn wait_for_addr(&mut self) {
        let deadline = Instant::now() + self.options.start_timeout;
        let addr_file = self.data_dir.join("hearth.addr");
        loop {
            if let Some(child) = self.child.as_mut() {
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "hearth exited during start-up ({status}); its stderr:\n{}",
                        self.logs()
                    );
                }
            }
            if let Ok(text) = std::fs::read_to_string(&addr_file) {
                if let Ok(addr) = serde_json::from_str::<Value>(&text) {
                    if addr["pid"].as_u64() == Some(u64::from(self.pid)) {
                        self.api = addr["api"].as_str().expect("api in hearth.addr").to_string();
                        self.serving = addr["serving"]
                            .as_str()
                            .expect("serving in hearth.addr")
                            .to_string();
                        self.tls = addr["tls"].as_str().expect("tls in hearth.addr").to_string();
                        return;
                    }
                }
            }
            if Instant::now() > deadline {
                panic!(
                    "hearth did not write {} within {:?}; its stderr:\n{}",
                    addr_file.display(),
                    self.options.start_timeout,
                    self.logs()
                );
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// `http://127.0.0.1:PORT` of the API.
    pub fn api_url(&self) -> String {
        format!("http://{}", self.api)
    }

    /// `http://127.0.0.1:PORT` of the serving data plane.
    pub fn serving_url(&self) -> String {
        format!("http://{}", self.serving)
    }

    /// `https://127.0.0.1:PORT` of the API's TLS listener.
    pub fn tls_url(&self) -> String {
        format!("https://{}", self.tls)
    }

    /// Hearth's CA certificate (PEM), which the TLS listener's certificate chains to.
    pub fn ca_path(&self) -> PathBuf {
        self.data_dir.join("tls/ca.crt")
    }

    /// The admin's kubeconfig the daemon writes at start.
    pub fn kubeconfig_path(&self) -> PathBuf {
        self.data_dir.join("kubeconfig")
    }

    /// The admin token, to pass where a `token` is asked for.
    pub fn admin(&self) -> Option<&str> {
        Some(&self.admin_token)
    }

    pub fn url(&self, path: &str) -> String {
        if path.starts_with("http://") || path.starts_with("https://") {
            path.to_string()
        } else {
            format!("{}{}", self.api_url(), path)
        }
    }

    /// A request builder with the token set; for what the helpers below do not cover.
    pub fn request(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
    ) -> reqwest::blocking::RequestBuilder {
        let builder = self.client.request(method, self.url(path));
        match token {
            Some(token) => builder.bearer_auth(token),
            None => builder,
        }
    }

    /// Sends and collects the answer; a transport error panics with the daemon's log.
    pub fn send(&self, builder: reqwest::blocking::RequestBuilder) -> Reply {
        let response = builder
            .send()
            .unwrap_or_else(|e| panic!("request failed: {e:?}\ndaemon stderr:\n{}", self.logs()));
        to_reply(response)
    }

    pub fn get(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::GET, path, token))
    }

    pub fn delete(&self, path: &str, token: Option<&str>) -> Reply {
        self.send(self.request(Method::DELETE, path, token))
    }

    pub fn post_json(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_body(Method::POST, path, token, "application/json", body.to_string())
    }

    pub fn put(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_body(Method::PUT, path, token, "application/json", body.to_string())
    }

    /// A JSON merge patch (RFC 7396).
    pub fn patch(&self, path: &str, token: Option<&str>, body: &Value) -> Reply {
        self.send_body(
            Method::PATCH,
            path,
            token,
            "application/merge-patch+json",
            body.to_string(),
        )
    }

    pub fn post_yaml(&self, path: &str, token: Option<&str>, yaml: &str) -> Reply {
        self.send_body(Method::POST, path, token, "application/yaml", yaml.to_string())
    }

    pub fn put_yaml(&self, path: &str, token: Option<&str>, yaml: &str) -> Reply {
        self.send_body(Method::PUT, path, token, "application/yaml", yaml.to_string())
    }

    pub fn send_body(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        content_type: &str,
        body: impl Into<reqwest::blocking::Body>,
    ) -> Reply {
        self.send(
            self.request(method, path, token)
                .header(CONTENT_TYPE, content_type)
                .body(body),
        )
    }

    /// Creates a non-admin user (and so their namespace) and returns their token.
    pub fn create_user(&self, name: &str) -> String {
        let reply = self.post_json(
            "/hearth/v1/users",
            self.admin(),
            &serde_json::json!({ "name": name }),
        );
        assert_eq!(reply.status, 201, "creating user {name}: {reply}");
        reply.body["token"]["token"]
            .as_str()
            .unwrap_or_else(|| panic!("no token in {reply}"))
            .to_string()
    }

    /// Polls `GET path` (with the admin token) until `done` holds for the answer.
    pub fn wait_until(&self, path: &str, timeout: Duration, done: impl Fn(&Reply) -> bool) -> Reply {
        let deadline = Instant::now() + timeout;
        loop {
            let reply = self.get(path, self.admin());
            if done(&reply) {
                return reply;
            }
            if Instant::now() > deadline {
                panic!("GET {path}: condition not met within {timeout:?}; last answer: {reply}");
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Whether the process is still running (reaping it if it exited).
    pub fn is_running(&mut self) -> bool {
        match self.child.as_mut() {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }

    /// SIGKILL, then reap. The data dir stays for `restart()`.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait up to `timeout`; returns the exit status, or `None` (after a
    /// SIGKILL) if it did not stop in time.
    pub fn terminate_within(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let mut child = self.child.take()?;
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return Some(status);
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// SIGTERM and wait (up to 30 s); panics with the log if it does not stop.
    pub fn terminate(&mut self) -> ExitStatus {
        match self.terminate_within(Duration::from_secs(30)) {
            Some(status) => status,
            None => panic!(
                "hearth did not stop within 30 s of SIGTERM; stderr:\n{}",
                self.logs()
            ),
        }
    }

    /// Starts the daemon again on the same data dir (stopping it first with SIGTERM if
    /// it still runs). Ports change; `api_url()` follows.
    pub fn restart(&mut self) {
        if self.is_running() {
            self.terminate();
        }
        self.child = None;
        self.start();
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn to_reply(response: reqwest::blocking::Response) -> Reply {
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().unwrap_or_default();
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or_else(|_| Value::String(text.clone()))
    };
    Reply {
        status,
        headers,
        text,
        body,
    }
}

/// Every operation of the served OpenAPI document: (METHOD, path template).
pub fn openapi_operations(doc: &Value) -> Vec<(Method, String)> {
    let mut ops = Vec::new();
    let Some(paths) = doc["paths"].as_object() else {
        return ops;
    };
    for (path, item) in paths {
        for (name, method) in [
            ("get", Method::GET),
            ("put", Method::PUT),
            ("post", Method::POST),
            ("delete", Method::DELETE),
            ("patch", Method::PATCH),
            ("head", Method::HEAD),
        ] {
            if item.get(name).is_some() {
                ops.push((method, path.clone()));
            }
        }
    }
    ops
}

/// Replaces every `{param}` of a path template with `value`.
pub fn fill_path(template: &str, value: &str) -> String {
    fill_path_with(template, |_| value.to_string())
}

/// Replaces every `{param}` of a path template with `value(param)`.
pub fn fill_path_with(template: &str, value: impl Fn(&str) -> String) -> String {
    let mut out = String::new();
    let mut rest = template;
    while let Some(start) = rest.find('{') {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        out.push_str(&value(&rest[start + 1..start + end]));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

/// The upstream corpus (`../shared/fixtures`), for `tests/tests/corpus_*.rs`.
/// `scripts/test` sets `HEARTH_FIXTURES` and runs those tests only when the corpus is
/// there; a corpus test run without it fails rather than passing with nothing checked.
pub fn fixtures_dir() -> PathBuf {
    let dir = std::env::var_os("HEARTH_FIXTURES").map(PathBuf::from).expect(
        "HEARTH_FIXTURES is not set: corpus tests run from scripts/test when ../shared/fixtures exists",
    );
    assert!(
        dir.is_dir(),
        "HEARTH_FIXTURES={} is not a directory",
        dir.display()
    );
    dir
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fills_path_parameters() {
        assert_eq!(fill_path("/a/{ns}/b/{name}", "x"), "/a/x/b/x");
        assert_eq!(
            fill_path_with("/n/{namespace}/j/{name}", |p| p.to_uppercase()),
            "/n/NAMESPACE/j/NAME"
        );
        assert_eq!(fill_path("/plain", "x"), "/plain");
    }
}
