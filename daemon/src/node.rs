//! Facts about this machine and this process, read from `/proc` and `statvfs`.

use std::path::Path;

use serde::Serialize;
use utoipa::ToSchema;

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HostFacts {
    pub hostname: String,
    pub cpus: usize,
    pub memory_total_bytes: u64,
    pub memory_available_bytes: u64,
    pub disk_total_bytes: u64,
    pub disk_available_bytes: u64,
}

pub fn hostname() -> String {
    nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "localhost".into())
}

pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

/// (total, available) bytes from `/proc/meminfo`.
pub fn memory() -> (u64, u64) {
    let text = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse::<u64>().ok())
            .map(|kib| kib * 1024)
            .unwrap_or(0)
    };
    (field("MemTotal:"), field("MemAvailable:"))
}

/// (total, available) bytes of the filesystem holding `path`.
pub fn disk(path: &Path) -> (u64, u64) {
    match nix::sys::statvfs::statvfs(path) {
        Ok(s) => {
            let frag = s.fragment_size();
            (s.blocks() * frag, s.blocks_available() * frag)
        }
        Err(_) => (0, 0),
    }
}

pub fn host_facts(data_dir: &Path) -> HostFacts {
    let (memory_total_bytes, memory_available_bytes) = memory();
    let (disk_total_bytes, disk_available_bytes) = disk(data_dir);
    HostFacts {
        hostname: hostname(),
        cpus: cpu_count(),
        memory_total_bytes,
        memory_available_bytes,
        disk_total_bytes,
        disk_available_bytes,
    }
}

/// This process's resource use, from `/proc/self`.
#[derive(Debug, Default, Clone, Copy)]
pub struct ProcSelf {
    pub resident_bytes: u64,
    pub virtual_bytes: u64,
    pub cpu_millis: u64,
    pub open_fds: u64,
    pub threads: u64,
    pub start_time_seconds: u64,
}

impl ProcSelf {
    pub fn read() -> ProcSelf {
        let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE)
            .ok()
            .flatten()
            .unwrap_or(4096) as u64;
        let ticks = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
            .ok()
            .flatten()
            .unwrap_or(100) as u64;
        let mut out = ProcSelf::default();
        if let Ok(statm) = std::fs::read_to_string("/proc/self/statm") {
            let mut parts = statm.split_whitespace().map(|v| v.parse::<u64>().unwrap_or(0));
            out.virtual_bytes = parts.next().unwrap_or(0) * page;
            out.resident_bytes = parts.next().unwrap_or(0) * page;
        }
        if let Ok(stat) = std::fs::read_to_string("/proc/self/stat") {
            // Fields after the parenthesised command name, which may itself hold spaces.
            let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
            let fields: Vec<u64> = rest.split_whitespace().map(|v| v.parse().unwrap_or(0)).collect();
            // rest[0] is field 3 (state); utime is field 14, stime 15, threads 20, starttime 22.
            let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
            out.cpu_millis = (field(14) + field(15)) * 1000 / ticks.max(1);
            out.threads = field(20);
            out.start_time_seconds = boot_time() + field(22) / ticks.max(1);
        }
        out.open_fds = std::fs::read_dir("/proc/self/fd")
            .map(|d| d.count() as u64)
            .unwrap_or(0);
        out
    }
}

fn boot_time() -> u64 {
    std::fs::read_to_string("/proc/stat")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("btime "))
                .and_then(|l| l[6..].trim().parse().ok())
        })
        .unwrap_or(0)
}
