//! Runs `k3s server` as Hearth's child and keeps it running.
//!
//! - The child gets a process group of its own, so a Ctrl-C at the daemon's terminal
//!   reaches Hearth only, and Hearth decides when and how k3s stops.
//! - Its stdout and stderr go to `<data_dir>/k3s/k3s.log`, rotated past
//!   `[k3s] log_max_bytes` (one older file, `k3s.log.1`, kept).
//! - Start-up waits for the API (`/readyz` answers `ok`) and the node's `Ready`
//!   condition, then GPU readiness (`gpu_rules`), asking through `k3s kubectl` with the
//!   admin kubeconfig k3s writes (mode 0600).
//! - When k3s dies it is restarted after `restart_backoff_base_seconds`, doubling per
//!   crash in a row up to `restart_backoff_max_seconds`; a run that reached `Ready`
//!   resets the count.
//! - Stopping signals the k3s process alone (SIGTERM, then SIGKILL after
//!   `stop_timeout`), never its group: k3s's own systemd unit has `KillMode=process`
//!   for the same reason, so containerd's shims and the pods they run survive a
//!   restart of Hearth and are picked up again by the next k3s.
//! - The child's pid is kept in `<data_dir>/k3s/hearth-k3s.pid`, so a daemon that
//!   crashed and left k3s running stops it before starting its own (`stop_leftover`).

use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError, RwLock};
use std::time::Duration;

use serde::Serialize;
use tokio::io::{AsyncBufReadExt, AsyncRead, BufReader};
use tokio::sync::watch;
use utoipa::ToSchema;

use super::gpu_rules::{self, ClusterNodes, TaintChange};
use crate::health::Health;

/// Where the supervisor is, as the node view and `STATUS=` show it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Phase {
    Starting,
    WaitingForApi,
    WaitingForNode,
    /// The node is `Ready` but does not yet report the GPUs NVML counts.
    WaitingForGpus,
    Ready,
    /// k3s exited; it is started again after a delay.
    Restarting,
    Stopped,
}

/// The supervisor's state. `detail` says what it waits for or why it restarts.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct Status {
    pub phase: Phase,
    pub detail: String,
    /// The last time k3s died or could not be started, and how.
    pub last_error: Option<String>,
    /// Restarts since the daemon started.
    pub restarts: u32,
    /// The delay before the pending restart, in seconds, while `restarting`.
    pub restart_delay_seconds: Option<f64>,
    pub pid: Option<u32>,
}

impl Status {
    /// For systemd's `STATUS=` line: `k3s ready`, or with restarts
    /// `k3s restarting (3 restarts; last: k3s exited (exit status: 1)...)`.
    pub fn status_word(&self) -> String {
        let phase = serde_json::to_value(self.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_string))
            .unwrap_or_default();
        match (&self.last_error, self.restarts) {
            (Some(error), restarts) => {
                let short: String = error.chars().take(120).collect();
                format!("k3s {phase} ({restarts} restarts; last: {short})")
            }
            (None, _) => format!("k3s {phase}"),
        }
    }
}

/// How to run and watch k3s.
#[derive(Debug, Clone)]
pub struct Options {
    pub binary: PathBuf,
    /// Arguments after the binary (`server ...`, from `render::plan`).
    pub args: Vec<String>,
    pub kubeconfig: PathBuf,
    pub log_path: PathBuf,
    pub log_max_bytes: u64,
    pub pid_file: PathBuf,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// How often readiness is asked while waiting (and, slower, once ready).
    pub poll: Duration,
    /// How long SIGTERM has before SIGKILL.
    pub stop_timeout: Duration,
    /// This node's name in the cluster (k3s uses the host name).
    pub node_name: String,
    /// NVML's GPU count times the time-slicing replicas: the `nvidia.com/gpu` this node
    /// must report as allocatable before Hearth calls it ready.
    pub expected_gpus: u64,
}

/// A running supervisor; `stop` ends it.
pub struct Supervisor {
    status: Arc<RwLock<Status>>,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Supervisor {
    /// Starts the loop on the current tokio runtime. `health` gets a `k3s` component,
    /// ready only in the `ready` phase.
    pub fn start(options: Options, health: Health) -> Supervisor {
        let status = Arc::new(RwLock::new(Status {
            phase: Phase::Starting,
            detail: "starting k3s".into(),
            last_error: None,
            restarts: 0,
            restart_delay_seconds: None,
            pid: None,
        }));
        health.set("k3s", false, "starting k3s");
        let (stop, stop_rx) = watch::channel(false);
        let task = tokio::spawn(run(options, Arc::clone(&status), health, stop_rx));
        Supervisor { status, stop, task }
    }

    /// A handle that reads the status after the supervisor is moved into shutdown.
    pub fn status_handle(&self) -> StatusHandle {
        StatusHandle(Arc::clone(&self.status))
    }

    /// Stops k3s (the process only; see the module doc) and waits for the loop to end.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

#[derive(Clone)]
pub struct StatusHandle(Arc<RwLock<Status>>);

impl StatusHandle {
    pub fn get(&self) -> Status {
        self.0.read().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

fn set(status: &RwLock<Status>, health: &Health, phase: Phase, detail: impl Into<String>) {
    let detail = detail.into();
    health.set(
        "k3s",
        phase == Phase::Ready,
        format!("{}: {detail}", phase_word(phase)),
    );
    let mut s = status.write().unwrap_or_else(PoisonError::into_inner);
    s.phase = phase;
    s.detail = detail;
    if phase != Phase::Restarting {
        s.restart_delay_seconds = None;
    }
}

fn phase_word(phase: Phase) -> &'static str {
    match phase {
        Phase::Starting => "starting",
        Phase::WaitingForApi => "waiting for the API",
        Phase::WaitingForNode => "waiting for the node",
        Phase::WaitingForGpus => "waiting for GPUs",
        Phase::Ready => "ready",
        Phase::Restarting => "restarting",
        Phase::Stopped => "stopped",
    }
}

/// The delay before restart number `crashes_in_a_row` (1 for the first).
pub fn backoff(base: Duration, max: Duration, crashes_in_a_row: u32) -> Duration {
    let factor = 2f64.powi(
        i32::try_from(crashes_in_a_row.saturating_sub(1))
            .unwrap_or(i32::MAX)
            .min(30),
    );
    base.mul_f64(factor).min(max)
}

async fn run(options: Options, status: Arc<RwLock<Status>>, health: Health, mut stop: watch::Receiver<bool>) {
    let log = Arc::new(tokio::sync::Mutex::new(RotatingLog::new(
        &options.log_path,
        options.log_max_bytes,
    )));
    let mut crashes_in_a_row = 0u32;
    loop {
        set(
            &status,
            &health,
            Phase::Starting,
            format!("starting {}", options.binary.display()),
        );
        let exit = match spawn(&options, &log).await {
            Ok((mut child, stderr_pump)) => {
                let pid = child.id();
                status.write().unwrap_or_else(PoisonError::into_inner).pid = pid;
                if let Some(pid) = pid {
                    if let Err(e) = std::fs::write(&options.pid_file, format!("{pid}\n")) {
                        tracing::warn!(path = %options.pid_file.display(), "cannot write k3s's pid file: {e}");
                    }
                }
                let outcome = watch_child(&options, &status, &health, &mut child, &mut stop).await;
                status.write().unwrap_or_else(PoisonError::into_inner).pid = None;
                match outcome {
                    ChildOutcome::Stopped => {
                        let _ = std::fs::remove_file(&options.pid_file);
                        set(
                            &status,
                            &health,
                            Phase::Stopped,
                            "stopped with the daemon (pods keep running)",
                        );
                        return;
                    }
                    ChildOutcome::Exited { how, reached_ready } => {
                        let _ = std::fs::remove_file(&options.pid_file);
                        if reached_ready {
                            crashes_in_a_row = 0;
                        }
                        // The rest of k3s's stderr, unless something it left behind
                        // still holds the pipe.
                        let _ = tokio::time::timeout(Duration::from_millis(500), stderr_pump).await;
                        let last_line = log.lock().await.last_stderr_line.clone();
                        format!("k3s exited ({how}); its last stderr line: {last_line:?}")
                    }
                }
            }
            Err(e) => format!("cannot start {}: {e}", options.binary.display()),
        };
        crashes_in_a_row += 1;
        let delay = backoff(options.backoff_base, options.backoff_max, crashes_in_a_row);
        tracing::warn!(delay_seconds = delay.as_secs_f64(), "{exit}; restarting k3s");
        let detail = format!(
            "{exit}; restart {crashes_in_a_row} in a row in {:.1} s",
            delay.as_secs_f64()
        );
        health.set(
            "k3s",
            false,
            format!("{}: {detail}", phase_word(Phase::Restarting)),
        );
        {
            // One write, so a reader never sees the new count with the old phase.
            let mut s = status.write().unwrap_or_else(PoisonError::into_inner);
            s.last_error = Some(exit.clone());
            s.restarts += 1;
            s.restart_delay_seconds = Some(delay.as_secs_f64());
            s.phase = Phase::Restarting;
            s.detail = detail;
        }
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = stopped(&mut stop) => {
                set(&status, &health, Phase::Stopped, "stopped with the daemon");
                return;
            }
        }
    }
}

/// Resolves once `stop` is set (or its sender is gone). The guard `wait_for` returns
/// is not `Send`, so it is dropped here rather than held in a `select!`.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

async fn spawn(
    options: &Options,
    log: &Arc<tokio::sync::Mutex<RotatingLog>>,
) -> std::io::Result<(tokio::process::Child, tokio::task::JoinHandle<()>)> {
    let mut command = tokio::process::Command::new(&options.binary);
    command
        .args(&options.args)
        .process_group(0)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        // Dropping the handle must not kill k3s: only `terminate` stops it.
        .kill_on_drop(false);
    let mut child = command.spawn()?;
    if let Some(out) = child.stdout.take() {
        tokio::spawn(pump(out, Arc::clone(log), false));
    }
    let stderr_pump = match child.stderr.take() {
        Some(err) => tokio::spawn(pump(err, Arc::clone(log), true)),
        None => tokio::spawn(async {}),
    };
    Ok((child, stderr_pump))
}

/// Copies one stream into the log, line by line. k3s logs to stderr; its last stderr
/// line is what a crash report quotes.
async fn pump(stream: impl AsyncRead + Unpin, log: Arc<tokio::sync::Mutex<RotatingLog>>, stderr: bool) {
    let mut lines = BufReader::new(stream).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let mut log = log.lock().await;
        log.write_line(&line);
        if stderr {
            log.last_stderr_line = line.chars().take(300).collect();
        }
    }
}

enum ChildOutcome {
    Stopped,
    Exited { how: String, reached_ready: bool },
}

async fn watch_child(
    options: &Options,
    status: &RwLock<Status>,
    health: &Health,
    child: &mut tokio::process::Child,
    stop: &mut watch::Receiver<bool>,
) -> ChildOutcome {
    let mut reached_ready = false;
    set(
        status,
        health,
        Phase::WaitingForApi,
        "waiting for k3s's API to answer /readyz",
    );
    let mut next_probe = options.poll;
    loop {
        tokio::select! {
            exit = child.wait() => {
                let how = match exit {
                    Ok(s) => s.to_string(),
                    Err(e) => format!("wait failed: {e}"),
                };
                return ChildOutcome::Exited { how, reached_ready };
            }
            () = stopped(stop) => {
                terminate(child, options.stop_timeout).await;
                return ChildOutcome::Stopped;
            }
            () = tokio::time::sleep(next_probe) => {
                let (phase, detail) = probe(options).await;
                if phase == Phase::Ready {
                    reached_ready = true;
                }
                // Once ready, ask less often: taints and GPU counts change slowly.
                next_probe = if phase == Phase::Ready { options.poll * 5 } else { options.poll };
                set(status, health, phase, detail);
            }
        }
    }
}

/// SIGTERM to k3s alone, SIGKILL after `timeout`: the pods' shims are not signalled.
async fn terminate(child: &mut tokio::process::Child, timeout: Duration) {
    let Some(pid) = child.id() else { return };
    let pid = nix::unistd::Pid::from_raw(pid as i32);
    let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    if tokio::time::timeout(timeout, child.wait()).await.is_err() {
        tracing::warn!("k3s did not stop within {timeout:?} of SIGTERM; killing it");
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

/// Asks k3s through `k3s kubectl` how far it is, and applies the GPU taint rule.
async fn probe(options: &Options) -> (Phase, String) {
    if !options.kubeconfig.exists() {
        return (
            Phase::WaitingForApi,
            format!("k3s has not written {} yet", options.kubeconfig.display()),
        );
    }
    match kubectl(options, &["get", "--raw", "/readyz"]).await {
        Ok(body) if body.trim() == "ok" => {}
        Ok(body) => {
            return (
                Phase::WaitingForApi,
                format!("/readyz answered {:?}", body.trim()),
            )
        }
        Err(e) => return (Phase::WaitingForApi, e),
    }
    let nodes = match kubectl(options, &["get", "nodes", "-o", "json"]).await {
        Ok(body) => match ClusterNodes::parse(&body) {
            Ok(nodes) => nodes,
            Err(e) => return (Phase::WaitingForNode, e),
        },
        Err(e) => return (Phase::WaitingForNode, e),
    };
    let Some(node) = nodes.find(&options.node_name) else {
        return (
            Phase::WaitingForNode,
            format!("node {} is not registered yet", options.node_name),
        );
    };
    if !node.ready {
        return (Phase::WaitingForNode, format!("node {} is not Ready", node.name));
    }
    for change in gpu_rules::taint_changes(&nodes) {
        let (node_name, spec) = match &change {
            TaintChange::Add(n) => (n, gpu_rules::TAINT.to_string()),
            TaintChange::Remove(n) => (n, format!("{}-", gpu_rules::TAINT)),
        };
        match kubectl(options, &["taint", "nodes", node_name, &spec, "--overwrite"]).await {
            Ok(_) => tracing::info!(node = %node_name, "k3s: {change}"),
            Err(e) => tracing::warn!(node = %node_name, "k3s: cannot apply {change}: {e}"),
        }
    }
    match gpu_rules::gpu_readiness(node, options.expected_gpus) {
        Ok(detail) => (Phase::Ready, detail),
        Err(missing) => (Phase::WaitingForGpus, missing),
    }
}

async fn kubectl(options: &Options, args: &[&str]) -> Result<String, String> {
    let kubeconfig = options.kubeconfig.display().to_string();
    let mut command = tokio::process::Command::new(&options.binary);
    command
        .args(["kubectl", "--kubeconfig", &kubeconfig, "--request-timeout", "10s"])
        .args(args)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    let output = tokio::time::timeout(Duration::from_secs(15), command.output())
        .await
        .map_err(|_| format!("k3s kubectl {} timed out", args.join(" ")))?
        .map_err(|e| format!("k3s kubectl: {e}"))?;
    if output.status.success() {
        Ok(String::from_utf8_lossy(&output.stdout).into_owned())
    } else {
        let err = String::from_utf8_lossy(&output.stderr);
        Err(format!(
            "k3s kubectl {}: {}",
            args.join(" "),
            err.lines().last().unwrap_or("failed").trim()
        ))
    }
}

/// k3s's log: lines appended; past `max_bytes` the file becomes `<name>.1` (replacing
/// the previous one) and a new one starts.
struct RotatingLog {
    path: PathBuf,
    max_bytes: u64,
    file: Option<std::fs::File>,
    size: u64,
    last_stderr_line: String,
}

impl RotatingLog {
    fn new(path: &Path, max_bytes: u64) -> RotatingLog {
        RotatingLog {
            path: path.to_path_buf(),
            max_bytes,
            file: None,
            size: 0,
            last_stderr_line: String::new(),
        }
    }

    fn write_line(&mut self, line: &str) {
        use std::io::Write;
        let len = line.len() as u64 + 1;
        if self.file.is_some() && self.size + len > self.max_bytes {
            self.file = None;
            let mut rotated = self.path.clone().into_os_string();
            rotated.push(".1");
            let _ = std::fs::rename(&self.path, rotated);
        }
        if self.file.is_none() {
            match std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
            {
                Ok(f) => {
                    self.size = f.metadata().map(|m| m.len()).unwrap_or(0);
                    self.file = Some(f);
                }
                Err(e) => {
                    tracing::warn!(path = %self.path.display(), "cannot open k3s's log: {e}");
                    return;
                }
            }
        }
        if let Some(f) = self.file.as_mut() {
            if writeln!(f, "{line}").is_ok() {
                self.size += len;
            }
        }
    }
}

/// Stops a k3s left running by a daemon that died (its pid in `pid_file`): SIGTERM to
/// that process alone, SIGKILL after `timeout`. A pid that is gone, or that is no
/// longer a k3s, is left alone.
pub fn stop_leftover(pid_file: &Path, timeout: Duration) -> Option<u32> {
    let text = std::fs::read_to_string(pid_file).ok()?;
    let _ = std::fs::remove_file(pid_file);
    let pid: i32 = text.trim().parse().ok()?;
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
    if !(cmdline.contains("k3s") && cmdline.contains("server")) {
        return None;
    }
    let nix_pid = nix::unistd::Pid::from_raw(pid);
    let _ = nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGTERM);
    let deadline = std::time::Instant::now() + timeout;
    while std::time::Instant::now() < deadline {
        if !Path::new(&format!("/proc/{pid}")).exists() || is_zombie(pid) {
            return u32::try_from(pid).ok();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = nix::sys::signal::kill(nix_pid, nix::sys::signal::Signal::SIGKILL);
    u32::try_from(pid).ok()
}

fn is_zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|s| s.rsplit_once(") ").map(|(_, rest)| rest.starts_with('Z')))
        .unwrap_or(false)
}

/// Supervisor tests: a stand-in `k3s` (a shell script that records how it is called and
/// answers `kubectl` from a file) in place of k3s. They test the supervisor, not k3s.
#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Instant;

    /// Shared with the e2e supervisor test (`tests/tests/k3s_supervisor.rs`).
    const STAND_IN: &str = include_str!("../../../tests/fixtures/k3s/stand-in-k3s");

    fn stand_in(dir: &Path) -> PathBuf {
        // Not `dir/k3s`: that is k3s's data dir under Hearth's.
        std::fs::create_dir_all(dir.join("bin")).unwrap();
        let path = dir.join("bin/k3s");
        std::fs::write(&path, STAND_IN.replace("@DIR@", &dir.display().to_string())).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
        path
    }

    fn nodes_json(nodes: &[(&str, u64, bool)]) -> String {
        let items: Vec<serde_json::Value> = nodes
            .iter()
            .map(|(name, gpus, tainted)| {
                let mut labels = serde_json::json!({});
                if *gpus > 0 {
                    labels["nvidia.com/gpu.present"] = "true".into();
                }
                let taints = if *tainted {
                    serde_json::json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
                } else {
                    serde_json::json!([])
                };
                serde_json::json!({
                    "metadata": {"name": name, "labels": labels},
                    "spec": {"taints": taints},
                    "status": {
                        "conditions": [{"type": "Ready", "status": "True"}],
                        "allocatable": {"nvidia.com/gpu": gpus.to_string()},
                    },
                })
            })
            .collect();
        serde_json::json!({"kind": "NodeList", "items": items}).to_string()
    }

    fn options(dir: &Path, expected_gpus: u64) -> Options {
        let plan = super::super::render::plan(&super::super::render::PlanInput {
            hearth_data_dir: dir,
            https_listen_port: 6443,
            generation: super::super::containerd::ContainerdGeneration::V2,
            runtime: &super::super::containerd::RuntimeLocation::DetectedByK3s(
                "/usr/bin/nvidia-container-runtime".into(),
            ),
            gpu_count: 2,
            time_slicing_replicas: 1,
        });
        Options {
            binary: stand_in(dir),
            args: plan.args,
            kubeconfig: super::super::kubeconfig_path(dir),
            log_path: dir.join("k3s.log"),
            log_max_bytes: 1 << 20,
            pid_file: dir.join("hearth-k3s.pid"),
            backoff_base: Duration::from_millis(100),
            backoff_max: Duration::from_secs(10),
            poll: Duration::from_millis(50),
            stop_timeout: Duration::from_secs(5),
            node_name: "ws".into(),
            expected_gpus,
        }
    }

    async fn wait_for(handle: &StatusHandle, what: &str, done: impl Fn(&Status) -> bool) -> Status {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let status = handle.get();
            if done(&status) {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}: {status:?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn alive(pid: i32) -> bool {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn supervisor_passes_flags_captures_logs_waits_for_gpus_and_stops_k3s_alone() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // One GPU node carrying the taint, still without allocatable GPUs.
        std::fs::write(
            d.join("nodes.json"),
            nodes_json(&[("ws", 0, true)]).replace(
                "\"labels\":{}",
                "\"labels\":{\"nvidia.com/gpu.present\":\"true\"}",
            ),
        )
        .unwrap();
        let opts = options(d, 2);
        let args = opts.args.join(" ");
        let health = Health::default();
        let sup = Supervisor::start(opts, health.clone());
        let handle = sup.status_handle();

        let waiting = wait_for(&handle, "waiting-for-gpus", |s| s.phase == Phase::WaitingForGpus).await;
        assert!(
            waiting.detail.contains("reports 0 allocatable nvidia.com/gpu"),
            "{waiting:?}"
        );
        let problems = health.problems();
        assert!(
            problems.iter().any(|p| p.starts_with("k3s: waiting for GPUs")),
            "{problems:?}"
        );

        // The flags k3s got are the plan's, in order.
        let passed = std::fs::read_to_string(d.join("server-args")).unwrap();
        assert_eq!(passed.trim(), args);
        for flag in [
            "--disable traefik,servicelb",
            "--write-kubeconfig-mode 0600",
            "--node-label nvidia.com/gpu.present=true",
            "--default-runtime nvidia",
        ] {
            assert!(passed.contains(flag), "{flag} missing: {passed}");
        }
        assert!(passed.contains(&format!("--data-dir {}", d.join("k3s").display())));
        // A single GPU node is never left tainted.
        let calls = std::fs::read_to_string(d.join("kubectl-calls")).unwrap();
        assert!(
            calls.contains("taint nodes ws nvidia.com/gpu=present:NoSchedule- --overwrite"),
            "{calls}"
        );

        // The device plugin registers: ready.
        std::fs::write(d.join("nodes.json"), nodes_json(&[("ws", 2, false)])).unwrap();
        let ready = wait_for(&handle, "ready", |s| s.phase == Phase::Ready).await;
        assert!(ready.detail.contains("2 allocatable"), "{ready:?}");
        assert!(health.all_ready());
        assert_eq!(ready.restarts, 0);

        let log = std::fs::read_to_string(d.join("k3s.log")).unwrap();
        assert!(
            log.contains("Starting k3s (stand-in)") && log.contains("stand-in stderr line"),
            "{log}"
        );
        let k3s_pid = ready.pid.unwrap();
        assert_eq!(
            std::fs::read_to_string(d.join("hearth-k3s.pid")).unwrap().trim(),
            k3s_pid.to_string()
        );
        let pod: i32 = std::fs::read_to_string(d.join("pod.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(alive(pod));

        sup.stop().await;
        assert_eq!(handle.get().phase, Phase::Stopped);
        assert_eq!(
            std::fs::read_to_string(d.join("events")).unwrap().trim(),
            "SIGTERM"
        );
        assert!(!d.join("hearth-k3s.pid").exists());
        // KillMode=process: the "pod" in k3s's process group was not signalled.
        assert!(alive(pod), "stopping k3s killed its pods");
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pod), nix::sys::signal::Signal::SIGKILL);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn supervisor_restarts_a_crashing_k3s_with_growing_delay() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("crash"), "").unwrap();
        let sup = Supervisor::start(options(d, 0), Health::default());
        let handle = sup.status_handle();
        let status = wait_for(&handle, "4 restarts", |s| s.restarts >= 4).await;
        assert_eq!(status.phase, Phase::Restarting);
        assert!(
            status.status_word().starts_with("k3s restarting ("),
            "{}",
            status.status_word()
        );
        let error = status.last_error.unwrap();
        assert!(
            error.contains("k3s exited (exit status: 1)") && error.contains("stand-in crash"),
            "{error}"
        );
        let starts: Vec<f64> = std::fs::read_to_string(d.join("starts"))
            .unwrap()
            .lines()
            .map(|l| l.parse().unwrap())
            .collect();
        assert!(starts.len() >= 4, "{starts:?}");
        let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
        // 0.1 s, 0.2 s, 0.4 s: each at least its backoff, and growing.
        for (i, want) in [0.1, 0.2, 0.4].iter().enumerate() {
            assert!(gaps[i] >= *want, "gap {i} {} < {want}: {gaps:?}", gaps[i]);
        }
        assert!(gaps[2] > gaps[0], "{gaps:?}");
        // A crashing k3s does not come up: the next start finds it fixed and runs.
        std::fs::remove_file(d.join("crash")).unwrap();
        std::fs::write(d.join("nodes.json"), nodes_json(&[("ws", 0, false)])).unwrap();
        let up = wait_for(&handle, "ready after the crashes", |s| s.phase == Phase::Ready).await;
        assert!(up.last_error.is_some());
        sup.stop().await;
        let pod: i32 = std::fs::read_to_string(d.join("pod.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pod), nix::sys::signal::Signal::SIGKILL);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn supervisor_taints_gpu_nodes_once_a_cpu_node_joins() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(
            d.join("nodes.json"),
            nodes_json(&[("ws", 2, false), ("cpu1", 0, false)]),
        )
        .unwrap();
        let sup = Supervisor::start(options(d, 2), Health::default());
        let handle = sup.status_handle();
        wait_for(&handle, "ready", |s| s.phase == Phase::Ready).await;
        let calls = std::fs::read_to_string(d.join("kubectl-calls")).unwrap();
        assert!(
            calls.contains("taint nodes ws nvidia.com/gpu=present:NoSchedule --overwrite"),
            "{calls}"
        );
        assert!(!calls.contains("taint nodes cpu1"), "{calls}");
        sup.stop().await;
        let pod: i32 = std::fs::read_to_string(d.join("pod.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pod), nix::sys::signal::Signal::SIGKILL);
    }

    #[test]
    fn backoff_doubles_up_to_the_maximum() {
        let b = |n| backoff(Duration::from_secs(2), Duration::from_secs(300), n);
        assert_eq!(b(1), Duration::from_secs(2));
        assert_eq!(b(2), Duration::from_secs(4));
        assert_eq!(b(5), Duration::from_secs(32));
        assert_eq!(b(20), Duration::from_secs(300));
        assert_eq!(b(u32::MAX), Duration::from_secs(300));
    }

    #[test]
    fn the_log_rotates_past_its_limit() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k3s.log");
        let mut log = RotatingLog::new(&path, 100);
        for i in 0..30 {
            log.write_line(&format!("line {i:04}"));
        }
        let current = std::fs::read_to_string(&path).unwrap();
        let older = std::fs::read_to_string(dir.path().join("k3s.log.1")).unwrap();
        assert!(
            current.len() <= 100 && older.len() <= 100,
            "{current:?} {older:?}"
        );
        assert!(current.ends_with("line 0029\n"));
    }
}
