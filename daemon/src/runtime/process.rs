//! The default backend: workloads are host processes, each under a `hearth shim`
//! (see `shim.rs`). State lives in `<data-dir>/workloads/<id>/`, so a restarted daemon
//! re-adopts running workloads and reads the exit of those that ended meanwhile.

use std::collections::HashMap;
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;

use nix::sys::signal::{kill, killpg, Signal};
use nix::unistd::Pid;
use tokio::io::AsyncBufReadExt;

use super::cgroups::Cgroups;
use super::identity::{self, RunAs};
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

pub struct ProcessRuntime {
    root: PathBuf,
    exe: PathBuf,
    base_env: Vec<(String, String)>,
    log_max_bytes: u64,
    cgroups: Cgroups,
    /// Shims this daemon process started: awaited directly (and reaped).
    children: Mutex<HashMap<String, tokio::process::Child>>,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> RuntimeError + '_ {
    move |source| RuntimeError::Io {
        path: path.to_path_buf(),
        source,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Option<T> {
    std::fs::read(path)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// Whether `pid` is a live (not zombie) `hearth shim` for `dir`; guards against pid reuse.
fn shim_alive(pid: i32, dir: &Path) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().next())
        .unwrap_or("X");
    if state == "Z" || state == "X" {
        return false;
    }
    let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
    let cmdline = String::from_utf8_lossy(&cmdline);
    cmdline.contains("shim") && cmdline.contains(&*dir.to_string_lossy())
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
            root,
            exe,
            base_env,
            log_max_bytes,
            cgroups: Cgroups::detect(),
            children: Mutex::new(HashMap::new()),
        })
    }

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
        set("HEARTH_WORKLOAD_ID", workload.id.clone());
        set("HEARTH_OWNER_UID", workload.owner.uid.clone());
        env
    }

    fn exit_of(&self, dir: &Path) -> Option<ExitInfo> {
        read_json(&dir.join(shim::EXIT))
    }

    fn shim_pid(&self, dir: &Path) -> Option<i32> {
        std::fs::read_to_string(dir.join(shim::SHIM_PID))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn lost(&self, dir: &Path, message: &str) -> ExitInfo {
        let started: Option<Started> = read_json(&dir.join(shim::STARTED));
        ExitInfo {
            exit_code: None,
            signal: None,
            reason: "Lost".into(),
            message: message.into(),
            started_at: started.map(|s| s.started_at),
            finished_at: crate::store::now_rfc3339(),
        }
    }

    fn observe(&self, id: &str) -> Result<RunState, RuntimeError> {
        let dir = self.dir(id);
        if let Some(exit) = self.exit_of(&dir) {
            return Ok(RunState::Exited(exit));
        }
        if let Some(pid) = self.shim_pid(&dir) {
            if shim_alive(pid, &dir) {
                let started: Option<Started> = read_json(&dir.join(shim::STARTED));
                return Ok(match started {
                    Some(s) => RunState::Running {
                        pid: s.pid,
                        started_at: s.started_at,
                    },
                    None => RunState::Running {
                        pid,
                        started_at: crate::store::now_rfc3339(),
                    },
                });
            }
            // The shim may have written exit.json just before we looked at its pid.
            if let Some(exit) = self.exit_of(&dir) {
                return Ok(RunState::Exited(exit));
            }
            return Ok(RunState::Exited(
                self.lost(&dir, "the shim ended without recording how the workload ended"),
            ));
        }
        Err(RuntimeError::NotFound(id.to_string()))
    }

    async fn spawn_shim(&self, workload: &Workload, dir: &Path) -> Result<RunState, RuntimeError> {
        let cgroup = self
            .cgroups
            .prepare(&workload.id, &workload.resources)
            .map_err(|e| RuntimeError::Start {
                id: workload.id.clone(),
                message: format!("cgroup: {e}"),
            })?;
        let identities = identity::global();
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
                identities.hand_over(&run_as, dir, &own).map_err(io_err(&own))?;
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
        shim::write_atomic(&dir.join(shim::SPEC), &bytes).map_err(io_err(dir))?;
        let stderr = std::fs::File::create(dir.join("shim.log")).map_err(io_err(dir))?;

        let mut command = tokio::process::Command::new(&self.exe);
        command
            .arg("shim")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr);
        // SAFETY: setsid is async-signal-safe. A session of its own keeps the shim out of
        // the daemon's process group and terminal, so it survives the daemon.
        unsafe {
            command.as_std_mut().pre_exec(|| {
                nix::unistd::setsid().map_err(std::io::Error::from)?;
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|e| RuntimeError::Start {
            id: workload.id.clone(),
            message: format!("cannot run {} shim: {e}", self.exe.display()),
        })?;
        let Some(stdout) = child.stdout.take() else {
            return Err(RuntimeError::Start {
                id: workload.id.clone(),
                message: "shim has no stdout".into(),
            });
        };
        let mut line = String::new();
        let read = tokio::time::timeout(
            Duration::from_secs(60),
            tokio::io::BufReader::new(stdout).read_line(&mut line),
        )
        .await;
        if let Ok(mut children) = self.children.lock() {
            children.insert(workload.id.clone(), child);
        }
        match read {
            Ok(Ok(_)) if line.starts_with("started ") => self.observe(&workload.id),
            Ok(Ok(_)) => match self.exit_of(dir) {
                Some(exit) => Ok(RunState::Exited(exit)),
                None => Err(RuntimeError::Start {
                    id: workload.id.clone(),
                    message: std::fs::read_to_string(dir.join("shim.error"))
                        .unwrap_or_else(|_| line.trim().to_string()),
                }),
            },
            Ok(Err(e)) => Err(RuntimeError::Start {
                id: workload.id.clone(),
                message: e.to_string(),
            }),
            Err(_) => Err(RuntimeError::Start {
                id: workload.id.clone(),
                message: "the shim did not report within 60 s".into(),
            }),
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
        while shim_alive(pid, dir) {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    fn name(&self) -> &'static str {
        "process"
    }

    /// Idempotent: a workload that already started (or ended) is not started again.
    async fn start(&self, workload: &Workload) -> Result<RunState, RuntimeError> {
        let dir = self.dir(&workload.id);
        match self.observe(&workload.id) {
            Ok(state) => return Ok(state),
            Err(RuntimeError::NotFound(_)) => {}
            Err(e) => return Err(e),
        }
        std::fs::create_dir_all(&dir).map_err(io_err(&dir))?;
        if identity::global().isolated() {
            // Root's files stay 0600 inside; the workload passes through to its `work`.
            std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o711)).map_err(io_err(&dir))?;
        }
        self.spawn_shim(workload, &dir).await
    }

    async fn status(&self, id: &str) -> Result<RunState, RuntimeError> {
        self.observe(id)
    }

    async fn wait(&self, id: &str) -> Result<ExitInfo, RuntimeError> {
        let dir = self.dir(id);
        let own = self.children.lock().ok().and_then(|mut c| c.remove(id));
        match own {
            Some(mut child) => {
                let _ = child.wait().await;
            }
            None => {
                if let Some(pid) = self.shim_pid(&dir) {
                    self.wait_foreign(pid, &dir).await;
                }
            }
        }
        match self.observe(id)? {
            RunState::Exited(exit) => Ok(exit),
            RunState::Running { .. } => {
                Ok(self.lost(&dir, "the shim ended while the workload was still running"))
            }
        }
    }

    async fn logs(&self, id: &str) -> Result<LogFiles, RuntimeError> {
        let dir = self.dir(id);
        if !dir.exists() {
            return Err(RuntimeError::NotFound(id.to_string()));
        }
        let files = [shim::LOG_ROTATED, shim::LOG]
            .iter()
            .map(|f| dir.join(f))
            .filter(|p| p.exists())
            .collect();
        Ok(LogFiles { files })
    }

    async fn stop(&self, id: &str) -> Result<(), RuntimeError> {
        let dir = self.dir(id);
        match self.shim_pid(&dir) {
            Some(pid) if shim_alive(pid, &dir) => {
                let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
                Ok(())
            }
            Some(_) => {
                // No shim to do it gracefully: kill what may be left of the group.
                if let Some(started) = read_json::<Started>(&dir.join(shim::STARTED)) {
                    let _ = killpg(Pid::from_raw(started.pid), Signal::SIGKILL);
                }
                Ok(())
            }
            None => Err(RuntimeError::NotFound(id.to_string())),
        }
    }

    async fn list(&self, owner_uid: Option<&str>) -> Result<Vec<String>, RuntimeError> {
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

    async fn forget(&self, id: &str) -> Result<(), RuntimeError> {
        self.cgroups.remove(id);
        if let Ok(mut children) = self.children.lock() {
            children.remove(id);
        }
        Ok(())
    }

    async fn remove(&self, id: &str) -> Result<(), RuntimeError> {
        if let Ok(RunState::Running { .. }) = self.observe(id) {
            return Err(RuntimeError::StillRunning(id.to_string()));
        }
        self.forget(id).await?;
        let dir = self.dir(id);
        match tokio::fs::remove_dir_all(&dir).await {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io_err(&dir)(e)),
            _ => Ok(()),
        }
    }

    fn limits_note(&self) -> String {
        self.cgroups.note()
    }
}
