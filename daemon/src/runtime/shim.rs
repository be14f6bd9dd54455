//! `hearth shim <dir>`: the parent of one workload, like containerd-shim. The daemon
//! starts it in a session of its own, so it outlives the daemon (`kill -9`,
//! `systemctl restart` with `KillMode=process`). It starts the command in its own
//! process group with stdout and stderr on one pipe, which it relays to `output.log`
//! with the time of each write in `output.times` (see [`super::log_times`]; both
//! renamed to `*.1` past the size cap), enforces the deadline, turns
//! SIGTERM into "TERM the whole tree, KILL it after the grace period", kills what is
//! left of the tree when the command ends, and records how the command ended in
//! `exit.json` only once nothing it started is left and its output is all in the log.
//! Everything the daemon needs later is a file in `<dir>`.
//!
//! One pipe for both streams keeps their order as written, as the one shared file
//! description did before; the relay costs the workload nothing it waits on (a pipe
//! write instead of a file write; the pipe holds 1 MiB where the kernel allows it),
//! and the shim reads it in the poll loop it already runs.
//!
//! Nothing escapes: the shim is the child subreaper of everything below it, so a
//! process that leaves the group (`setsid`) or whose parent exits (a double fork) is
//! re-parented to the shim and is found among its descendants; with cgroups the
//! workload's cgroup is killed as well.
//!
//! At most one shim ever runs a workload: each claims `<dir>/shim.pid` by linking a
//! complete file into place (which fails when another shim did), before anything runs.
//! A daemon that died between spawning a shim and hearing from it may therefore spawn
//! another after its restart: one of the two claims, the other reports `busy`.

use std::fs::File;
use std::io::Write;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

/// `close_range(2)` flag: mark the range close-on-exec instead of closing it now
/// (linux/close_range.h).
const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;

use nix::errno::Errno;
use nix::fcntl::{fcntl, FcntlArg, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, killpg, SigSet, SigmaskHow, Signal};
use nix::sys::signalfd::{SfdFlags, SignalFd};
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};

use super::log_times::{self, LogWriter};
use super::{proctree, ExitInfo};

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
/// Written by the daemon to ask for a stop; a shim that has not started the command
/// yet records `Stopped` instead of starting it.
pub const STOP: &str = "stop";
/// `HEARTH_FAULT_INJECT`: a test hook, never set in production. A comma-separated list
/// of fault points; see `fault_injected`.
pub const FAULT_INJECT_ENV: &str = "HEARTH_FAULT_INJECT";
/// Fault point: the daemon kills itself (SIGKILL) right after spawning a shim, before
/// it hears whether the shim started the workload.
pub const FAULT_AFTER_SHIM_SPAWN: &str = "after-shim-spawn";
/// Fault point: the shim waits 2 s before it claims the workload, so that a restarted
/// daemon's recovery races its claim (the worst case for "never two copies") or a stop
/// finds the workload still starting.
pub const FAULT_SHIM_SLOW_CLAIM: &str = "shim-slow-claim";
pub const LOG: &str = "output.log";
pub const LOG_ROTATED: &str = "output.log.1";

/// Replaces `path` with `bytes` through a rename, so a reader (or a restarted daemon)
/// sees the old file or the new one, never half of one, whichever process dies. Not
/// flushed to disk: a power loss ends every workload anyway, and one whose files are then
/// missing or empty is recorded `Lost` and retried under its Job's `backoffLimit`, as
/// Kubernetes treats a pod on a node that went down. An fsync here cost each job from
/// 1 ms on a quiet disk to tens of ms while other processes wrote (ext4 commits the
/// whole journal).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = File::create(&tmp)?;
    file.write_all(bytes)?;
    std::fs::rename(&tmp, path)
}

/// Whether the test hook `HEARTH_FAULT_INJECT` names `point`.
pub fn fault_injected(point: &str) -> bool {
    std::env::var(FAULT_INJECT_ENV).is_ok_and(|v| v.split(',').any(|p| p.trim() == point))
}

fn now() -> String {
    crate::store::now_rfc3339()
}

/// Entry point of `hearth shim`. Reports `started <pid>`, `failed <reason>`, `stopped`
/// (a stop came before the start) or `busy` (another shim claimed the workload) on
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
    // A session of its own keeps the shim out of the daemon's process group and
    // terminal, so it survives the daemon. Done here rather than in a `pre_exec` hook so
    // that the daemon spawns the shim with posix_spawn, not a fork of its whole address
    // space (several ms per job).
    nix::unistd::setsid().map_err(|e| format!("setsid: {e}"))?;
    let spec: ShimSpec = std::fs::read(dir.join(SPEC))
        .map_err(|e| format!("reading spec.json: {e}"))
        .and_then(|b| serde_json::from_slice(&b).map_err(|e| format!("parsing spec.json: {e}")))?;
    // Signals before the claim: once shim.pid names this process the daemon may send
    // SIGTERM, which must become a stop of the tree, not the shim's death.
    let signals = block_signals()?;
    if fault_injected(FAULT_SHIM_SLOW_CLAIM) {
        std::thread::sleep(Duration::from_secs(2));
    }
    if !claim(dir)? {
        let _ = writeln!(std::io::stdout(), "busy");
        return Ok(());
    }
    // Orphans below the shim are re-parented to it, so none can outlive the workload.
    nix::sys::prctl::set_child_subreaper(true).map_err(|e| format!("PR_SET_CHILD_SUBREAPER: {e}"))?;
    if stop_requested(dir, &signals) {
        record_exit(
            dir,
            &ExitInfo {
                exit_code: None,
                signal: None,
                reason: "Stopped".into(),
                message: "stopped before it started".into(),
                started_at: None,
                finished_at: now(),
            },
        )?;
        let _ = writeln!(std::io::stdout(), "stopped");
        return Ok(());
    }

    let mut output = LogWriter::open(dir, spec.log_max_bytes).map_err(|e| format!("opening the log: {e}"))?;
    let (relay, workload_end) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| format!("pipe2: {e}"))?;
    fcntl(&relay, FcntlArg::F_SETFL(OFlag::O_NONBLOCK)).map_err(|e| format!("O_NONBLOCK: {e}"))?;
    // Best effort: a larger pipe lets a burst of output wait for the shim in the
    // kernel instead of blocking the workload's write.
    let _ = fcntl(&workload_end, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    let held = workload_end.try_clone().map_err(|e| e.to_string())?;
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
        .stdout(workload_end.try_clone().map_err(|e| e.to_string())?)
        .stderr(workload_end)
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
    // SAFETY: only async-signal-safe calls between fork and exec: close_range,
    // sigprocmask, write(2) through an already-open path handled by the kernel, and the
    // credential and chdir calls of `identity::enter`.
    unsafe {
        command.pre_exec(move || {
            // Whatever descriptors the daemon's own parent left open without
            // close-on-exec reached the shim; the workload gets only its stdio.
            // Best effort: kernels before 5.11 lack CLOSE_RANGE_CLOEXEC.
            let _ = libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, CLOSE_RANGE_CLOEXEC);
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
    let spawned = command.spawn();
    // The command holds copies of the pipe's write end; besides the workload's, only
    // the shim's `held` one stays, so that once it is closed the pipe ends (EOF) when
    // the last process of the workload is gone.
    drop(command);
    let child = match spawned {
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
            let _ = output.write(format!("hearth: {message}\n").as_bytes(), log_times::now_nanos());
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
    let _ = writeln!(stdout, "started {} {started_at}", pid.as_raw());
    let _ = stdout.flush();
    // The daemon reads one line; pointing stdout at /dev/null closes its pipe.
    let devnull = File::open("/dev/null").map_err(|e| e.to_string())?;
    let _ = nix::unistd::dup2_stdout(devnull);
    drop(child);

    supervise(
        dir,
        &spec,
        &signals,
        pid,
        started_at,
        Relay {
            pipe: Some(relay),
            output,
            buf: Vec::new(),
            held: Some(held),
        },
    )
}

/// How much the pipe from the workload holds (`F_SETPIPE_SZ`; the unprivileged
/// default limit, `/proc/sys/fs/pipe-max-size`).
const PIPE_BYTES: i32 = 1 << 20;

/// The workload's output on its way from the pipe to the log.
struct Relay {
    /// `None` once every process holding the write end has closed it.
    pipe: Option<OwnedFd>,
    output: LogWriter,
    /// Grows from one page to [`RELAY_MAX_READ`] only for a workload that fills it:
    /// a 64 KiB buffer from the start cost a no-op job 16 page faults (measured: 356
    /// minor faults per shim run before the relay, 372 with such a buffer).
    buf: Vec<u8>,
    /// The shim's own write end, closed only once the workload is gone: without it the
    /// pipe's hang-up at the command's exit woke the shim just before the SIGCHLD that
    /// follows it, a second wake-up per job (about 1 ms on a busy machine).
    held: Option<OwnedFd>,
}

/// The most one read from the pipe takes.
const RELAY_MAX_READ: usize = 64 * 1024;
const RELAY_FIRST_READ: usize = 4 * 1024;

impl Relay {
    /// Moves what is in the pipe to the log, up to `rounds` reads (so that a chatty
    /// workload does not starve signals and deadlines). `true` when the pipe is empty
    /// or closed.
    fn pump(&mut self, rounds: usize) -> bool {
        let Some(pipe) = &self.pipe else { return true };
        if self.buf.is_empty() {
            self.buf.resize(RELAY_FIRST_READ, 0);
        }
        for _ in 0..rounds {
            match nix::unistd::read(pipe, &mut self.buf) {
                Ok(0) => {
                    self.pipe = None;
                    return true;
                }
                Ok(n) => {
                    // A full disk loses these bytes, as it would for the kubelet; the
                    // pipe is drained all the same so the workload never blocks on it.
                    let _ = self.output.write(&self.buf[..n], log_times::now_nanos());
                    if n == self.buf.len() && n < RELAY_MAX_READ {
                        self.buf.resize(RELAY_MAX_READ, 0);
                    }
                }
                Err(Errno::EINTR) => continue,
                Err(Errno::EAGAIN) => return true,
                Err(_) => {
                    self.pipe = None;
                    return true;
                }
            }
        }
        false
    }

    /// After the workload is gone: everything left in the pipe. A process outside the
    /// workload that still holds the write end (it could only have been handed it)
    /// gets no wait: what it has written so far is taken.
    fn drain(&mut self) {
        self.held = None;
        while !self.pump(64) {}
    }
}

fn block_signals() -> Result<SignalFd, String> {
    let mut mask = SigSet::empty();
    for signal in [Signal::SIGCHLD, Signal::SIGTERM, Signal::SIGINT, Signal::SIGHUP] {
        mask.add(signal);
    }
    mask.thread_block().map_err(|e| e.to_string())?;
    SignalFd::with_flags(&mask, SfdFlags::SFD_NONBLOCK | SfdFlags::SFD_CLOEXEC).map_err(|e| e.to_string())
}

/// Claims the workload for this shim: `shim.pid` appears complete (a hard link of a
/// written file) or not at all, and only once. `false`: another shim holds it.
fn claim(dir: &Path) -> Result<bool, String> {
    let me = std::process::id();
    let tmp = dir.join(format!("{SHIM_PID}.{me}"));
    std::fs::write(&tmp, me.to_string()).map_err(|e| format!("writing {}: {e}", tmp.display()))?;
    let claimed = match std::fs::hard_link(&tmp, dir.join(SHIM_PID)) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(format!("claiming {SHIM_PID}: {e}")),
    };
    let _ = std::fs::remove_file(&tmp);
    claimed
}

/// A stop asked for before the command started: the daemon's `stop` file (written
/// before it looks for shim.pid, while this shim wrote shim.pid before looking for the
/// file, so one of the two sees the other) or a signal already pending.
fn stop_requested(dir: &Path, signals: &SignalFd) -> bool {
    let mut asked = dir.join(STOP).exists();
    while let Ok(Some(info)) = signals.read_signal() {
        asked |= info.ssi_signo as i32 != Signal::SIGCHLD as i32;
    }
    asked
}

struct Termination {
    reason: &'static str,
    message: String,
    kill_at: Instant,
}

/// How the main command ended: exit code, or the signal that killed it.
type MainExit = (Option<i32>, Option<i32>);

fn supervise(
    dir: &Path,
    spec: &ShimSpec,
    signals: &SignalFd,
    pid: Pid,
    started_at: String,
    mut relay: Relay,
) -> Result<(), String> {
    let begun = Instant::now();
    let deadline = spec
        .deadline_seconds
        .and_then(|s| begun.checked_add(Duration::from_secs(s)));
    let grace = Duration::from_secs(spec.grace_seconds);
    let kill_at = |from: Instant| from.checked_add(grace).unwrap_or(from);
    let tree = Tree {
        main: pid,
        cgroup: spec.cgroup.clone(),
    };
    let mut terminating: Option<Termination> = None;
    let mut main_exit: Option<MainExit> = None;

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
        let mut fds = vec![PollFd::new(signals.as_fd(), PollFlags::POLLIN)];
        if let Some(pipe) = &relay.pipe {
            fds.push(PollFd::new(pipe.as_fd(), PollFlags::POLLIN));
        }
        let _ = poll(&mut fds, timeout);
        drop(fds);
        relay.pump(16);

        while let Ok(Some(info)) = signals.read_signal() {
            let signo = info.ssi_signo as i32;
            if signo != Signal::SIGCHLD as i32 && terminating.is_none() {
                tree.signal(Signal::SIGTERM);
                terminating = Some(Termination {
                    reason: "Stopped",
                    message: "stopped on request".into(),
                    kill_at: kill_at(Instant::now()),
                });
            }
        }

        let none_left = reap(pid, &mut main_exit);
        if main_exit.is_some() && (terminating.is_none() || none_left) {
            // The command is gone; nothing it started may stay (Kubernetes kills the
            // pod). While stopping, the rest of the tree keeps its grace period.
            break;
        }

        let now_instant = Instant::now();
        if terminating.is_none() && deadline.is_some_and(|d| now_instant >= d) {
            tree.signal(Signal::SIGTERM);
            terminating = Some(Termination {
                reason: "DeadlineExceeded",
                message: format!(
                    "ran longer than activeDeadlineSeconds ({}s)",
                    spec.deadline_seconds.unwrap_or_default()
                ),
                kill_at: kill_at(now_instant),
            });
        }
        if terminating.as_ref().is_some_and(|t| now_instant >= t.kill_at) {
            break;
        }
    }
    tree.kill_and_reap(&mut main_exit);
    relay.drain();
    finish(dir, main_exit, terminating, started_at)
}

/// Reaps every child that ended, noting the main command's status. `true` when the
/// shim has no children left at all.
fn reap(main: Pid, main_exit: &mut Option<MainExit>) -> bool {
    loop {
        match waitpid(None, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(p, code)) if p == main => *main_exit = Some((Some(code), None)),
            Ok(WaitStatus::Signaled(p, signal, _)) if p == main => {
                *main_exit = Some((None, Some(signal as i32)));
            }
            Ok(WaitStatus::StillAlive) => return false,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return true,
            Ok(_) => continue,
        }
    }
}

/// Everything the workload started: the main command's process group, every process
/// below the shim (setsid and double forks included, the shim being their subreaper),
/// and the workload's cgroup when there is one.
struct Tree {
    main: Pid,
    cgroup: Option<PathBuf>,
}

impl Tree {
    fn signal(&self, signal: Signal) {
        let _ = killpg(self.main, signal);
        if let Some(cgroup) = &self.cgroup {
            // cgroup.kill (Linux 5.14) takes the whole cgroup at once, forks included.
            let killed =
                signal == Signal::SIGKILL && std::fs::write(cgroup.join("cgroup.kill"), b"1").is_ok();
            if !killed {
                let procs = std::fs::read_to_string(cgroup.join("cgroup.procs")).unwrap_or_default();
                for pid in procs.lines().filter_map(|l| l.trim().parse::<i32>().ok()) {
                    let _ = kill(Pid::from_raw(pid), signal);
                }
            }
        }
        for pid in proctree::descendants(std::process::id() as i32) {
            let _ = kill(Pid::from_raw(pid), signal);
        }
    }

    /// SIGKILL to the tree until the shim has no child left, reaping as it goes. No
    /// time limit: the exit is recorded (and the GPUs freed) only once all are gone.
    fn kill_and_reap(&self, main_exit: &mut Option<MainExit>) {
        let mut pause = Duration::from_millis(1);
        // No child left means no descendant left: every orphan of the tree is reparented
        // to the shim, its subreaper. Checking first spares the common case (the command
        // exited alone) a walk of all of /proc, which cost a job several milliseconds.
        while !reap(self.main, main_exit) {
            self.signal(Signal::SIGKILL);
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }
}

fn finish(
    dir: &Path,
    main_exit: Option<MainExit>,
    terminating: Option<Termination>,
    started_at: String,
) -> Result<(), String> {
    let (code, signal) = main_exit.unwrap_or((None, None));
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
