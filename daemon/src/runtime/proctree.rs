//! What `/proc` says about processes: whether one is alive, the descendants of one, and
//! the processes that carry a workload's id in their environment. Blocking reads: call
//! from the shim (a plain thread) or through `spawn_blocking`.

use std::collections::{HashMap, HashSet};

/// Field `n` (0 = state) after the `comm` field of `/proc/<pid>/stat`; the command name
/// may hold spaces and parentheses, so parsing starts after its last `)`.
fn stat_field(pid: i32, n: usize) -> Option<String> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    rest.split_whitespace().nth(n).map(str::to_string)
}

/// Whether `pid` exists and is neither a zombie nor dead.
pub fn alive(pid: i32) -> bool {
    stat_field(pid, 0).is_some_and(|state| state != "Z" && state != "X")
}

/// `argv` of `pid`, NUL-separated as the kernel gives it; empty for a zombie.
pub fn cmdline(pid: i32) -> Vec<u8> {
    std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default()
}

fn pids() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<i32>().ok())
        .collect()
}

/// Every process below `root` (children, their children, ...), `root` excluded. A
/// snapshot: a process may fork or exit right after.
pub fn descendants(root: i32) -> Vec<i32> {
    let mut children: HashMap<i32, Vec<i32>> = HashMap::new();
    for pid in pids() {
        if let Some(ppid) = stat_field(pid, 1).and_then(|p| p.parse::<i32>().ok()) {
            children.entry(ppid).or_default().push(pid);
        }
    }
    let mut found = Vec::new();
    let mut seen = HashSet::from([root]);
    let mut next = vec![root];
    while let Some(parent) = next.pop() {
        for &child in children.get(&parent).into_iter().flatten() {
            if seen.insert(child) {
                found.push(child);
                next.push(child);
            }
        }
    }
    found
}

/// Live processes whose environment holds exactly `key=value`. Every workload process
/// inherits `HEARTH_WORKLOAD_ID`, so this finds what is left of a workload whose shim
/// died (a process that replaced its whole environment escapes it; a cgroup does not).
pub fn with_env(key: &str, value: &str) -> Vec<i32> {
    let needle = format!("{key}={value}").into_bytes();
    pids()
        .into_iter()
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/environ"))
                .is_ok_and(|env| env.split(|b| *b == 0).any(|entry| entry == needle.as_slice()))
        })
        .filter(|pid| alive(*pid))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descendants_include_grandchildren() {
        let mut child = std::process::Command::new("sh")
            .args(["-c", "sh -c 'sleep 30 & wait' & wait"])
            .spawn()
            .unwrap();
        let root = child.id() as i32;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        let below = loop {
            let below = descendants(root);
            if below.len() >= 2 || std::time::Instant::now() > deadline {
                break below;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        assert_eq!(below.len(), 2, "the inner sh and its sleep: {below:?}");
        assert!(below.iter().all(|pid| alive(*pid)));
        for pid in below.iter().chain([&root]) {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(*pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        let _ = child.wait();
        assert!(!alive(root));
    }
}
