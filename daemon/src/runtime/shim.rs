//! `hearth shim <dir>`: the parent of one workload, like containerd-shim. The daemon
//! starts it in a session of its own, so it outlives the daemon (`kill -9`,
//! `systemctl restart` with `KillMode=process`). It starts the command in its own
//! process group with stdout and stderr appended to `output.log` (copied to
//! `output.log.1` and truncated past the size cap), enforces the deadline, turns
//! SIGTERM into "TERM the group, KILL it after the grace period", kills what is left of
//! the tree when the command ends, and records how it ended in `exit.json`. Everything
//! the daemon needs later is a file in `<dir>`.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::fd::AsFd;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::ExitInfo;

/// What the daemon hands the shim, as `<dir>/spec.json`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShimSpec {
    pub argv: Vec<String>,
    /// The complete environment of the command.
    pub env: Vec<(String, String)>,
    pub working_dir: Option<PathBuf>,
    pub deadline_seconds: Option<u64>,
    pub grace_seconds: u64,
    pub log_max_bytes: u64,
    /// A cgroup v2 directory to put the command in, when limits are enforced.
    pub cgroup: Option<PathBuf>,
    /// The user the command runs as, when the daemon is root (the shim stays root to
    /// kill and reap); `None`: the shim's own user.
    #[serde(default)]
    pub run_as: Option<super::identity::RunAs>,
}

/// Written once the command runs: the daemon reads it back after a restart.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Started {
    pub pid: i32,
    pub started_at: String,
}

pub const SPEC: &str = "spec.json";
pub const STARTED: &str = "started.json";
pub const EXIT: &str = "exit.json";
pub const SHIM_PID: &str = "shim.pid";
pub const LOG: &str = "output.log";
pub const LOG_ROTATED: &str = "output.log.1";

pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)
}

fn now() -> String {
    crate::store::now_rfc3339()
}

/// Entry point of `hearth shim`. Reports `started <pid>` or `failed <reason>` on
/// stdout (the daemon waits for that line), then supervises.
pub fn main(dir: &Path) -> ExitCode {
    match run(dir) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            let _ = std::fs::write(dir.join("shim.error"), &message);
            ExitCode::FAILURE
        }
    }
}

fn record_exit(dir: &Path, exit: &ExitInfo) -> Result<(), String> {
    let json = serde_json::to_vec(exit).map_err(|e| e.to_string())?;
    write_atomic(&dir.join(EXIT), &json).map_err(|e| format!("writing exit.json: {e}"))
}

fn run(dir: &Path) -> Result<(), String> {
    let spec: ShimSpec = std::fs::read(dir.join(SPEC))
        .map_err(|e| format!("reading spec.json: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("parsing spec.json: {e}")))?;
    std::fs::write(dir.join(SHIM_PID), std::process::id().to_string()).map_err(|e| e.to_string())?;
    // Orphaned grandchildren are re-parented here, so none can outlive the workload.
    let _ = nix::sys::prctl::set_child_subreaper(true);

    let mut mask = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| e.to_string())?;
    let signals = SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC)
        .map_err(|e| e.to_string())?;

    let log = OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join(LOG))
        .map_err(|e| format!("opening the log: {e}"))?;
    let started_at = now();
    let mut stdout = std::io::stdout();

    let Some((program, args)) = spec.argv.split_first() else {
        return Err("empty argv".into());
    };
    let mut command = Command::new(program);
    command
        .args(args)
        .env_clear()
        .envs(spec.env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log.try_clone().map_err(|e| e.to_string())?)
        .process_group(0);
    // As another user the working directory is entered after the switch, as that user.
    let drop_to = match &spec.run_as {
        Some(run_as) => Some(
            super::identity::Prepared::new(run_as, spec.working_dir.as_deref()).map_err(|e| e.to_string())?,
        ),
        None => {
            if let Some(cwd) = &spec.working_dir {
                command.current_dir(cwd);
            }
            None
        }
    };
    let cgroup_procs = spec.cgroup.as_ref().map(|c| c.join("cgroup.procs"));
    // SAFETY: only async-signal-safe calls between fork and exec: sigprocmask,
    // write(2) through an already-open path handled by the kernel, and the credential
    // and chdir calls of `identity::enter`.
    unsafe {
        command.pre_exec(move || {
            let _ = nix::sys::signal::sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
            if let Some(procs) = &cgroup_procs {
                std::fs::write(procs, b"0")?;
            }
            if let Some(prepared) = &drop_to {
                super::identity::enter(prepared)?;
            }
            Ok(())
        });
    }
    let child = match command.spawn() {
        Ok(child) => child,
        Err(e) => {
            let message = match &spec.run_as {
                Some(who) => format!(
                    "cannot start {program} as {} (uid {}) in {}: {e}",
                    who.user,
                    who.uid,
                    spec.working_dir.as_deref().unwrap_or(Path::new(".")).display()
                ),
                None => format!("cannot start {program}: {e}"),
            };
            let _ = writeln!(&log, "hearth: {message}");
            record_exit(
                dir,
                &ExitInfo {
                    exit_code: Some(if e.kind() == std::io::ErrorKind::NotFound {
                        127
                    } else {
                        126
                    }),
                    signal: None,
                    reason: "StartError".into(),
                    message: message.clone(),
                    started_at: Some(started_at),
                    finished_at: now(),
                },
            )?;
            let _ = writeln!(stdout, "failed {message}");
            return Ok(());
        }
    };
    let pid = Pid::from_raw(child.id() as i32);
    let started = Started {
        pid: pid.as_raw(),
        started_at: started_at.clone(),
    };
    write_atomic(
        &dir.join(STARTED),
        &serde_json::to_vec(&started).map_err(|e| e.to_string())?,
    )
    .map_err(|e| e.to_string())?;
    let _ = writeln!(stdout, "started {}", pid.as_raw());
    let _ = stdout.flush();
    // The daemon reads one line; pointing stdout at /dev/null closes its pipe.
    let devnull = File::open("/dev/null").map_err(|e| e.to_string())?;
    let _ = nix::unistd::dup2_stdout(devnull);
    drop(child);

    supervise(dir, &spec, &signals, pid, started_at)
}

struct Termination {
    reason: &'static str,
    message: String,
    kill_at: Instant,
}

fn supervise(
    dir: &Path,
    spec: &ShimSpec,
    signals: &SignalFd,
    pid: Pid,
    started_at: String,
) -> Result<(), String> {
    let begun = Instant::now();
    let deadline = spec.deadline_seconds.map(|s| begun + Duration::from_secs(s));
    let grace = Duration::from_secs(spec.grace_seconds);
    let mut terminating: Option<Termination> = None;
    let mut last_rotation_check = Instant::now();

    loop {
        let now_instant = Instant::now();
        let mut wake = Duration::from_secs(1);
        if let Some(d) = deadline.filter(|_| terminating.is_none()) {
            wake = wake.min(d.saturating_duration_since(now_instant));
        }
        if let Some(t) = &terminating {
            wake = wake.min(t.kill_at.saturating_duration_since(now_instant));
        }
        let timeout = PollTimeout::try_from(wake).unwrap_or(PollTimeout::MAX);
        let mut fds = [PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        let _ = poll(&mut fds, timeout);

        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo != Signal::SIGCHLD as i32 && terminating.is_none() {
                let _ = killpg(pid, Signal::SIGTERM);
                terminating = Some(Termination {
                    reason: "Stopped",
                    message: "stopped on request".into(),
                    kill_at: Instant::now() + grace,
                });
            }
        }

        // Reap everything that ended; the main command's status is the result.
        loop {
            match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(p, code)) if p == pid => {
                    return finish(dir, pid, Some(code), None, terminating, started_at);
                }
                Ok(WaitStatus::Signaled(p, signal, _)) if p == pid => {
                    return finish(dir, pid, None, Some(signal as i32), terminating, started_at);
                }
                Ok(WaitStatus::StillAlive) | Err(_) => break,
                Ok(_) => continue,
            }
        }

        let now_instant = Instant::now();
        if terminating.is_none() && deadline.is_some_and(|d| now_instant >= d) {
            let _ = killpg(pid, Signal::SIGTERM);
            terminating = Some(Termination {
                reason: "DeadlineExceeded",
                message: format!(
                    "ran longer than activeDeadlineSeconds ({}s)",
                    spec.deadline_seconds.unwrap_or_default()
                ),
                kill_at: now_instant + grace,
            });
        }
        if let Some(t) = &terminating {
            if now_instant >= t.kill_at {
                kill_tree(pid);
            }
        }
        if last_rotation_check.elapsed() >= Duration::from_secs(1) {
            last_rotation_check = Instant::now();
            rotate_if_needed(dir, spec.log_max_bytes);
        }
    }
}

/// SIGKILL to the process group and to every process re-parented to this shim.
fn kill_tree(pid: Pid) {
    let _ = killpg(pid, Signal::SIGKILL);
    let me = std::process::id() as i32;
    for child in children_of(me) {
        let _ = kill(Pid::from_raw(child), Signal::SIGKILL);
    }
}

/// Direct children of `parent`, from `/proc/*/stat`.
fn children_of(parent: i32) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .filter(|pid| {
            std::fs::read_to_string(format!("/proc/{pid}/stat"))
                .ok()
                .and_then(|s| {
                    s.rsplit_once(')')
                        .and_then(|(_, rest)| rest.split_whitespace().nth(1)?.parse::<i32>().ok())
                })
                == Some(parent)
        })
        .collect()
}

fn finish(
    dir: &Path,
    pid: Pid,
    code: Option<i32>,
    signal: Option<i32>,
    terminating: Option<Termination>,
    started_at: String,
) -> Result<(), String> {
    // The command is gone; nothing it started may stay (Kubernetes kills the pod).
    kill_tree(pid);
    let deadline = Instant::now() + Duration::from_secs(2);
    while Instant::now() < deadline {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => std::thread::sleep(Duration::from_millis(5)),
            Ok(_) => continue,
            Err(_) => break,
        }
    }
    let (reason, message) = match terminating {
        Some(t) => (t.reason.to_string(), t.message),
        None => match (code, signal) {
            (Some(0), _) => ("Completed".to_string(), String::new()),
            (Some(c), _) => ("Error".to_string(), format!("exited with code {c}")),
            (None, Some(s)) => (
                "Error".to_string(),
                format!(
                    "killed by signal {}",
                    Signal::try_from(s)
                        .map(|sig| sig.as_str().to_string())
                        .unwrap_or_else(|_| s.to_string())
                ),
            ),
            (None, None) => ("Error".to_string(), "ended without a status".to_string()),
        },
    };
    let exit_code = code.or_else(|| signal.map(|s| 128 + s));
    record_exit(
        dir,
        &ExitInfo {
            exit_code,
            signal,
            reason,
            message,
            started_at: Some(started_at),
            finished_at: now(),
        },
    )
}

/// Copy-then-truncate, as logrotate's `copytruncate`: the command keeps its append-mode
/// descriptor and goes on writing at the start of the emptied file.
fn rotate_if_needed(dir: &Path, max_bytes: u64) {
    let log = dir.join(LOG);
    let Ok(meta) = std::fs::metadata(&log) else { return };
    if max_bytes == 0 || meta.len() <= max_bytes {
        return;
    }
    if std::fs::copy(&log, dir.join(LOG_ROTATED)).is_ok() {
        if let Ok(file) = OpenOptions::new().write(true).open(&log) {
            let _ = file.set_len(0);
        }
    }
}
