//! The default backend: workloads are host processes, each under a `hearth shim`
//! (see `shim.rs`). State lives in `<data-dir>/workloads/<id>/`, so a restarted daemon
//! re-adopts running workloads and reads the exit of those that ended meanwhile.
//!
//! File and `/proc` work runs on tokio's blocking pool, never on the async threads.
//! A workload counts as ended only once nothing of it is left: the shim records the
//! exit after its whole tree is gone, and for a shim that died the daemon kills what
//! it left behind before it records the workload `Lost`.

use super::workdir::io_err;
use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;

use super::cgroups::Cgroups;
use super::identity::{self, RunAs};
use super::proctree;
use super::shim::{self, ShimSpec, Started};
use super::{ExitInfo, LogFiles, RunState, Runtime, RuntimeError, Workload};

/// Variables of the daemon's own environment that workloads inherit: locale and time
/// zone only. `HOME`, `USER`, `LOGNAME` and `SHELL` come from the user the workload runs
/// as; nothing else of the daemon's (S3 credentials, `HEARTH_*`, `NOTIFY_SOCKET`,
/// `TMPDIR`, ...) reaches a workload.
const INHERITED_ENV: &[&str] = &["PATH", "LANG", "LC_ALL", "TZ"];

/// The workload's own directory inside `<data-dir>/workloads/<id>/`, owned by its user:
/// where a workload without `workingDir` starts.
pub const WORK_DIR: &str = "work";

/// Set in every workload's environment; also how the remnants of a workload whose
/// shim died are found.
const WORKLOAD_ID_ENV: &str = "HEARTH_WORKLOAD_ID";

/// How long a new shim may take to say whether it started; past it the shim is taken
/// for running if it claimed the workload, and killed if it did not.
const SHIM_REPORT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct ProcessRuntime {
    shared: Arc<Shared>,
    /// Shims this daemon process started: awaited directly (and reaped).
    children: Mutex<HashMap<String, tokio::process::Child>>,
}

/// What the blocking-pool work needs.
struct Shared {
    root: PathBuf,
    exe: PathBuf,
    base_env: Vec<(String, String)>,
    log_max_bytes: u64,
    cgroups: Cgroups,
}

/// What `start` finds before it spawns anything.
enum Prepared {
    /// Started (or ended) before: adopt it.
    Known(RunState),
    /// Never claimed by a shim; `spec.json` is written, and this is the shim's
    /// `shim.log` (its stderr), opened here so that the spawn needs no second trip
    /// through the blocking pool.
    Spawn(std::fs::File),
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Whether `pid` is a live (not zombie) `hearth shim` for `dir`; guards against pid reuse.
fn shim_alive(pid: i32, dir: &Path) -> bool {
    if !proctree::alive(pid) {
        return false;
    }
    let cmdline = proctree::cmdline(pid);
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("shim") && cmdline.contains(&*dir.to_string_lossy())
}

fn shim_pid(dir: &Path) -> Option<i32> {
    std::fs::read_to_string(dir.join(shim::SHIM_PID))
        .ok()?
        .trim()
        .parse()
        .ok()
}

fn exit_of(dir: &Path) -> Option<ExitInfo> {
    read_json(&dir.join(shim::EXIT))
}

impl Shared {
    fn dir(&self, id: &str) -> PathBuf {
        self.root.join(id)
    }

    fn environment(&self, workload: &Workload, run_as: &RunAs) -> Vec<(String, String)> {
        let mut env = self.base_env.clone();
        let mut set = |k: &str, v: String| {
            env.retain(|(existing, _)| existing != k);
            env.push((k.to_string(), v));
        };
        set("HOME", run_as.home.display().to_string());
        set("USER", run_as.user.clone());
        set("LOGNAME", run_as.user.clone());
        set("SHELL", run_as.shell.clone());
        for (k, v) in &workload.env {
            set(k, v.clone());
        }
        // A workload sees exactly the GPUs it was given, none when it asked for none.
        let visible = workload.gpu_uuids.join(",");
        set("CUDA_VISIBLE_DEVICES", visible.clone());
        set(
            "NVIDIA_VISIBLE_DEVICES",
            if visible.is_empty() {
                "void".into()
            } else {
                visible
            },
        );
        set(WORKLOAD_ID_ENV, workload.id.clone());
        set("HEARTH_OWNER_UID", workload.owner.uid.clone());
        env
    }

    /// The state of a workload. A shim that died without recording the exit is settled
    /// here once and for all (see `settle_lost`). `NotFound`: no shim ever claimed it.
    fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = exit_of(&dir) {
            return Ok(RunState::Exited(exit));
        }
        let Some(pid) = shim_pid(&dir) else {
            return Err(RuntimeError::NotFound(id.to_string()));
        };
        if shim_alive(pid, &dir) {
            let started: Option<Started> = read_json(&dir.join(shim::STARTED));
            return Ok(match started {
                Some(s) => RunState::Running {
                    started_at: s.started_at,
                },
                // Claimed, the command not started yet.
                None => RunState::Running {
                    started_at: crate::store::now_rfc3339(),
                },
            });
        }
        // The shim may have written exit.json just before we looked at its pid.
        if let Some(exit) = exit_of(&dir) {
            return Ok(RunState::Exited(exit));
        }
        self.settle_lost(id, &dir).map(RunState::Exited)
    }

    /// The shim is gone without an exit record (killed, or it failed after its claim):
    /// kill whatever the workload left, then record it `Lost` so that it stays ended.
    /// Returns only once no process of the workload is left.
    fn settle_lost(&self, id: &str, dir: &Path) -> Result<ExitInfo, RuntimeError> {
        let mut pause = Duration::from_millis(5);
        loop {
            let mut left = proctree::with_env(WORKLOAD_ID_ENV, id);
            left.extend(self.cgroups.procs(id));
            if left.is_empty() {
                break;
            }
            tracing::warn!(workload = %id, pids = ?left, "killing what a dead shim left running");
            self.cgroups.kill(id);
            for pid in left {
                let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(200));
        }
        let started: Option<Started> = read_json(&dir.join(shim::STARTED));
        let why = std::fs::read_to_string(dir.join("shim.error")).unwrap_or_default();
        let message = match why.trim() {
            "" => "the shim ended without recording how the workload ended".to_string(),
            why => format!("the shim failed: {why}"),
        };
        let exit = ExitInfo {
            exit_code: None,
            signal: None,
            reason: "Lost".into(),
            message,
            started_at: started.map(|s| s.started_at),
            finished_at: crate::store::now_rfc3339(),
        };
        let json = serde_json::to_vec(&exit).map_err(|e| RuntimeError::Io {
            path: dir.join(shim::EXIT),
            source: std::io::Error::other(e),
        })?;
        shim::write_atomic(&dir.join(shim::EXIT), &json).map_err(io_err(dir))?;
        Ok(exit)
    }

    /// Before a spawn: adopt what a shim already claimed, else write the spec.
    fn prepare(&self, workload: &Workload) -> Result<Prepared, RuntimeError> {
        match self.observe(&workload.id) {
            Ok(state) => return Ok(Prepared::Known(state)),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        let dir = self.dir(&workload.id);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let identities = identity::global();
        if identities.isolated() {
            // Root's files stay 0600 inside; the workload passes through to its `work`.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(io_err(&dir))?;
        }
        if dir.join(shim::STOP).exists() {
            // Stopped while it was starting; a shim spawned before a crash that claims
            // it later finds the same request and does not start it either.
            let exit = ExitInfo {
                exit_code: None,
                signal: None,
                reason: "Stopped".into(),
                message: "stopped before it started".into(),
                started_at: None,
                finished_at: crate::store::now_rfc3339(),
            };
            let json = serde_json::to_vec(&exit).map_err(|e| RuntimeError::Start {
                id: workload.id.clone(),
                message: e.to_string(),
            })?;
            shim::write_atomic(&dir.join(shim::EXIT), &json).map_err(io_err(&dir))?;
            return Ok(Prepared::Known(RunState::Exited(exit)));
        }
        let cgroup = self
            .cgroups
            .prepare(&workload.id, &workload.resources)
            .map_err(|e| RuntimeError::Start {
                id: workload.id.clone(),
                message: format!("cgroup: {e}"),
            })?;
        let run_as = identities
            .for_workload(&workload.owner.namespace, workload.security_context.as_ref())
            .map_err(|e| RuntimeError::Start {
                id: workload.id.clone(),
                message: e.to_string(),
            })?;
        let working_dir = match &workload.working_dir {
            Some(dir) => dir.clone(),
            None => {
                let own = dir.join(WORK_DIR);
                std::fs::create_dir_all(&own).map_err(io_err(&own))?;
                identities.hand_over(&run_as, &dir, &own).map_err(io_err(&own))?;
                own
            }
        };
        let spec = ShimSpec {
            argv: workload.command.clone(),
            env: self.environment(workload, &run_as),
            working_dir: Some(working_dir),
            run_as: identities.isolated().then_some(run_as),
            deadline_seconds: workload.active_deadline_seconds,
            grace_seconds: workload.termination_grace_seconds,
            log_max_bytes: self.log_max_bytes,
            cgroup,
        };
        let bytes = serde_json::to_vec(&spec).map_err(|e| RuntimeError::Start {
            id: workload.id.clone(),
            message: e.to_string(),
        })?;
        shim::write_atomic(&dir.join(shim::SPEC), &bytes).map_err(io_err(&dir))?;
        let log = dir.join("shim.log");
        let stderr = std::fs::File::create(&log).map_err(io_err(&log))?;
        Ok(Prepared::Spawn(stderr))
    }

    /// Records the stop request, then passes it to the shim if one claimed the
    /// workload. The file comes first: a shim writes its claim before it looks for
    /// the file, so either it sees the file or we see its claim.
    fn request_stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        let stop = dir.join(shim::STOP);
        if !stop.exists() {
            shim::write_atomic(&stop, crate::store::now_rfc3339().as_bytes()).map_err(io_err(&dir))?;
        }
        if exit_of(&dir).is_some() {
            return Ok(());
        }
        match shim_pid(&dir) {
            Some(pid) if shim_alive(pid, &dir) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
            }
            Some(_) => {
                self.observe(id)?;
            }
            None => {}
        }
        Ok(())
    }

    fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
        let entries = std::fs::read_dir(&self.root).map_err(io_err(&self.root))?;
        let mut ids = Vec::new();
        for entry in entries.flatten() {
            let id = entry.file_name().to_string_lossy().to_string();
            if let Some(uid) = owner_uid {
                let spec: Option<ShimSpec> = read_json(&entry.path().join(shim::SPEC));
                let owned =
                    spec.is_some_and(|s| s.env.iter().any(|(k, v)| k == "HEARTH_OWNER_UID" && v == uid));
                if !owned {
                    continue;
                }
            }
            ids.push(id);
        }
        ids.sort();
        Ok(ids)
    }

    fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        super::workdir::log_files(&self.dir(id), id)
    }

    fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        match self.observe(id) {
            Ok(RunState::Running { .. }) => return Err(RuntimeError::StillRunning(id.to_string())),
            Ok(RunState::Exited(_)) | Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        self.cgroups.remove(id);
        let dir = self.dir(id);
        match std::fs::remove_dir_all(&dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }
}

impl ProcessRuntime {
    pub fn new(
        root: PathBuf,
        log_max_bytes: u64,
        base_env_extra: Vec<(String, String)>,
    ) -> Result<ProcessRuntime, RuntimeError> {
        std::fs::create_dir_all(&root).map_err(io_err(&root))?;
        if identity::global().isolated() {
            std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o711)).map_err(io_err(&root))?;
        }
        let exe = std::env::current_exe().map_err(io_err(Path::new("/proc/self/exe")))?;
        let mut base_env: Vec<(String, String)> = INHERITED_ENV
            .iter()
            .filter_map(|k| std::env::var(k).ok().map(|v| (k.to_string(), v)))
            .collect();
        for (k, v) in base_env_extra {
            base_env.retain(|(existing, _)| existing != &k);
            base_env.push((k, v));
        }
        Ok(ProcessRuntime {
            shared: Arc::new(Shared {
                root,
                exe,
                base_env,
                log_max_bytes,
                cgroups: Cgroups::detect(),
            }),
            children: Mutex::new(HashMap::new()),
        })
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<T, F>(&self, work: F) -> Result<T, RuntimeError>
    where
        T: Send + 'static,
        F: FnOnce(&Shared) -> Result<T, RuntimeError> + Send + 'static,
    {
        let shared = Arc::clone(&self.shared);
        tokio::task::spawn_blocking(move || work(&shared))
            .await
            .map_err(|e| RuntimeError::Io {
                path: self.shared.root.clone(),
                source: std::io::Error::other(e),
            })?
    }

    async fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let id = id.to_string();
        self.blocking(move |s| s.observe(&id)).await
    }

    fn keep_child(&self, id: &str, child: tokio::process::Child) {
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            children.insert(id.to_string(), child);
        }
    }

    /// Spawns a shim for a prepared workload and reports what became of it. An error
    /// means that no shim claimed the workload and none will: nothing of it runs.
    async fn spawn_shim(&self, workload: &Workload, stderr: std::fs::File) -> Result<RunState, RuntimeError> {
        let dir = self.shared.dir(&workload.id);
        let mut command = tokio::process::Command::new(&self.shared.exe);
        command
            .arg("shim")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // No `pre_exec`: the shim calls setsid itself, so this is a posix_spawn.
        let mut child = command.spawn().map_err(|e| RuntimeError::Start {
            id: workload.id.clone(),
            message: format!("cannot run {} shim: {e}", self.shared.exe.display()),
        })?;
        if shim::fault_injected(shim::FAULT_AFTER_SHIM_SPAWN) {
            tracing::error!(workload = %workload.id, "test hook {}: the daemon kills itself after spawning a shim", shim::FAULT_INJECT_ENV);
            let _ = kill(nix::unistd::getpid(), Signal::SIGKILL);
        }
        let mut line = String::new();
        let reported = match child.stdout.take() {
            Some(stdout) => tokio::time::timeout(
                SHIM_REPORT_TIMEOUT,
                tokio::io::BufReader::new(stdout).read_line(&mut line),
            )
            .await
            .is_ok(),
            None => false,
        };
        if let Some(started) = line.strip_prefix("started ") {
            self.keep_child(&workload.id, child);
            // `started <pid> <started_at>`: all that `observe` would read back from
            // started.json, without another trip through the blocking pool.
            let mut words = started.split_whitespace();
            if let (Some(Ok(_pid)), Some(started_at)) = (words.next().map(str::parse::<i32>), words.next()) {
                return Ok(RunState::Running {
                    started_at: started_at.to_string(),
                });
            }
            // It runs: an error reading its files must not pass for a failed start,
            // which would free its GPUs.
            return match self.observe(&workload.id).await {
                Ok(state) => Ok(state),
                Err(e) => {
                    tracing::warn!(workload = %workload.id, error = %e, "reading the state of a started workload");
                    Ok(RunState::Running {
                        started_at: crate::store::now_rfc3339(),
                    })
                }
            };
        }
        if reported {
            // `busy`, `stopped`, `failed` or nothing: this shim is ending (or ended).
            let _ = child.wait().await;
        } else {
            // Silent for too long: if it claimed the workload it runs it, else end it
            // before it can (SIGKILL cannot leave anything: it has started nothing).
            match self.observe(&workload.id).await {
                Ok(RunState::Running { .. }) => {
                    self.keep_child(&workload.id, child);
                    return self.observe(&workload.id).await;
                }
                Ok(RunState::Exited(_)) | Err(RuntimeError::NotFound(_)) => {}
                Err(e) => tracing::warn!(workload = %workload.id, error = %e, "looking at a silent shim"),
            }
            let _ = child.kill().await;
        }
        match self.observe(&workload.id).await {
            Err(RuntimeError::NotFound(_)) => {
                let dir = dir.clone();
                let why = self
                    .blocking(move |_| Ok(std::fs::read_to_string(dir.join("shim.error")).ok()))
                    .await?;
                Err(RuntimeError::Start {
                    id: workload.id.clone(),
                    message: why.unwrap_or_else(|| match line.trim() {
                        "" if reported => "the shim ended without a word".to_string(),
                        "" => format!(
                            "the shim did not report within {} s",
                            SHIM_REPORT_TIMEOUT.as_secs()
                        ),
                        said => said.to_string(),
                    }),
                })
            }
            other => other,
        }
    }

    /// Waits for a shim this daemon did not start, through a pidfd.
    async fn wait_foreign(&self, pid: i32, dir: &Path) {
        // SAFETY: pidfd_open takes a pid and flags and returns a new descriptor or -1.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: the kernel just returned this descriptor to us; we own it.
            let owned = unsafe { OwnedFd::from_raw_fd(fd as i32) };
            // SAFETY: the AsyncFd takes ownership of the descriptor, and nothing else
            // closes or reuses it while it is registered.
            if let Ok(async_fd) = unsafe { tokio::io::unix::AsyncFd::register(owned) } {
                let _ = async_fd.readable().await;
                return;
            }
        }
        loop {
            let dir = dir.to_path_buf();
            if !self
                .blocking(move |_| Ok(shim_alive(pid, &dir)))
                .await
                .unwrap_or(false)
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Idempotent: a workload that a shim already claimed (running or ended) is
    /// adopted, never started again; one stopped before it started never starts.
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError> {
        let owned = workload.clone();
        match self.blocking(move |s| s.prepare(&owned)).await? {
            Prepared::Known(state) => Ok(state),
            Prepared::Spawn(stderr) => self.spawn_shim(workload, stderr).await,
        }
    }

    async fn status(&self, id: &str) -> Result<RunState, RuntimeError> {
        self.observe(id).await
    }

    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.shared.dir(id);
        let own = self
            .children
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
        if let Some(mut child) = own {
            let _ = child.wait().await;
        }
        // The shim that runs it may be another one (a restart, or a `busy` report).
        loop {
            match self.observe(id).await? {
                RunState::Exited(exit) => return Ok(exit),
                RunState::Running { .. } => {
                    let at = dir.clone();
                    match self.blocking(move |_| Ok(shim_pid(&at))).await? {
                        Some(pid) => self.wait_foreign(pid, &dir).await,
                        None => tokio::time::sleep(Duration::from_millis(200)).await,
                    }
                }
            }
        }
    }

    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        let id = id.to_string();
        self.blocking(move |s| s.logs(&id)).await
    }

    /// Recorded first (`<dir>/stop`), so a stop of a workload that is still starting
    /// is honoured once its shim claims it; a claimed one gets SIGTERM, which the shim
    /// turns into TERM, grace period, KILL of the whole tree.
    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let id = id.to_string();
        self.blocking(move |s| s.request_stop(&id)).await
    }

    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
        let owner_uid = owner_uid.map(str::to_string);
        self.blocking(move |s| s.list(owner_uid.as_deref())).await
    }

    async fn forget(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            children.remove(id);
        }
        let id = id.to_string();
        self.blocking(move |s| {
            s.cgroups.remove(&id);
            Ok(())
        })
        .await
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        {
            let mut children = self.children.lock().unwrap_or_else(PoisonError::into_inner);
            children.remove(id);
        }
        let id = id.to_string();
        self.blocking(move |s| s.remove(&id)).await
    }

    fn limits_note(&self) -> String {
        self.shared.cgroups.note()
    }

    fn capabilities(&self) -> super::Capabilities {
        super::Capabilities {
            runs_images: false,
            needs_command: true,
            mounts: false,
            gpu_mode: super::GpuMode::Environment,
            own_network: false,
            local_admission: true,
        }
    }
}
