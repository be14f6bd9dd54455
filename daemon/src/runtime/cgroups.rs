//! CPU and memory limits through cgroup v2, when the daemon was given a delegated
//! subtree (systemd `Delegate=yes`). The daemon moves itself into `<own>/daemon` so the
//! subtree root may enable controllers, and each workload gets `<own>/workloads/<id>`
//! with `cpu.max` and `memory.max`. Without delegation nothing is enforced, and the
//! node and job status say so.

use std::path::{Path, PathBuf};

use super::ResourceRequest;

const ROOT: &str = "/sys/fs/cgroup";

#[derive(Debug, Clone)]
pub enum Cgroups {
    Enforced { workloads: PathBuf },
    NotEnforced { reason: String },
}

impl Cgroups {
    pub fn detect() -> Cgroups {
        match Self::try_delegate() {
            Ok(workloads) => Cgroups::Enforced { workloads },
            Err(reason) => Cgroups::NotEnforced { reason },
        }
    }

    fn try_delegate() -> Result<PathBuf, String> {
        let root = Path::new(ROOT);
        if !root.join("cgroup.controllers").exists() {
            return Err(
                "CPU/memory limits are not enforced: this host does not use the unified cgroup v2 hierarchy"
                    .into(),
            );
        }
        let own = std::fs::read_to_string("/proc/self/cgroup")
            .ok()
            .and_then(|s| s.lines().find_map(|l| l.strip_prefix("0::").map(str::to_string)))
            .ok_or("CPU/memory limits are not enforced: cannot find this process's cgroup")?;
        let own = root.join(own.trim_start_matches('/'));
        let controllers = std::fs::read_to_string(own.join("cgroup.controllers")).unwrap_or_default();
        if !(controllers.contains("memory") && controllers.contains("cpu")) {
            return Err("CPU/memory limits are not enforced: the cpu and memory controllers are not delegated to Hearth (run it under systemd with Delegate=yes)".into());
        }
        let daemon = own.join("daemon");
        let workloads = own.join("workloads");
        let setup = || -> std::io::Result<()> {
            std::fs::create_dir_all(&daemon)?;
            std::fs::write(daemon.join("cgroup.procs"), std::process::id().to_string())?;
            std::fs::write(own.join("cgroup.subtree_control"), "+cpu +memory")?;
            std::fs::create_dir_all(&workloads)?;
            std::fs::write(workloads.join("cgroup.subtree_control"), "+cpu +memory")?;
            Ok(())
        };
        setup().map_err(|e| {
            format!(
                "CPU/memory limits are not enforced: cannot set up the delegated cgroup {}: {e}",
                own.display()
            )
        })?;
        Ok(workloads)
    }

    pub fn note(&self) -> String {
        match self {
            Cgroups::Enforced { workloads } => format!(
                "CPU/memory limits enforced with cgroup v2 under {}",
                workloads.display()
            ),
            Cgroups::NotEnforced { reason } => reason.clone(),
        }
    }

    /// Creates the workload's cgroup with its limits; `None` when not enforced.
    pub fn prepare(&self, id: &str, request: &ResourceRequest) -> std::io::Result<Option<PathBuf>> {
        let Cgroups::Enforced { workloads } = self else {
            return Ok(None);
        };
        let dir = workloads.join(id);
        std::fs::create_dir_all(&dir)?;
        if request.cpu_millis > 0 {
            // period 100 ms; quota in microseconds per period.
            std::fs::write(
                dir.join("cpu.max"),
                format!("{} 100000", request.cpu_millis * 100),
            )?;
        }
        if request.memory_bytes > 0 {
            std::fs::write(dir.join("memory.max"), request.memory_bytes.to_string())?;
        }
        Ok(Some(dir))
    }

    /// Processes in the workload's cgroup; none when limits are not enforced.
    pub fn procs(&self, id: &str) -> Vec<i32> {
        let Cgroups::Enforced { workloads } = self else {
            return Vec::new();
        };
        std::fs::read_to_string(workloads.join(id).join("cgroup.procs"))
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.trim().parse().ok())
            .collect()
    }

    /// SIGKILL to every process in the workload's cgroup at once (`cgroup.kill`, Linux
    /// 5.14); a no-op without it, when callers kill `procs` one by one.
    pub fn kill(&self, id: &str) {
        if let Cgroups::Enforced { workloads } = self {
            let _ = std::fs::write(workloads.join(id).join("cgroup.kill"), b"1");
        }
    }

    pub fn remove(&self, id: &str) {
        if let Cgroups::Enforced { workloads } = self {
            let _ = std::fs::remove_dir(workloads.join(id));
        }
    }
}
