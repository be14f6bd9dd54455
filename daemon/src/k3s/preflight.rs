//! `hearth k3s preflight`: what k3s with NVIDIA GPUs needs from this host, each check
//! `pass`, `warn` or `fail` with the fix. `hearth serve --runtime k3s` runs the same
//! checks and refuses to start on any `fail`, naming it.
//!
//! Checks follow k3s's own `k3s check-config` and requirements page (kernel, cgroups,
//! modules, ports 6443 and 10250) and the NVIDIA pieces the k3s docs list (driver,
//! `nvidia-container-runtime` where k3s finds it).

use std::path::{Path, PathBuf};

use serde::Serialize;

use super::containerd::{self, ContainerdGeneration, K3sVersion, RuntimeLocation};
use super::K3sConfig;
use crate::gpu::inventory::{GpuInventory, GpuSource};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Pass,
    Warn,
    Fail,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Pass => "pass",
            Status::Warn => "warn",
            Status::Fail => "fail",
        }
    }
}

/// One check's outcome. `fix` is what to do about a `warn` or `fail`.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    pub name: &'static str,
    pub status: Status,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every check, in the order printed, and what it found about k3s.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub checks: Vec<Check>,
    /// From `k3s --version`, when the binary answered.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub k3s_version: Option<String>,
    #[serde(skip)]
    pub version: Option<K3sVersion>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub containerd: Option<ContainerdGeneration>,
    /// Where `nvidia-container-runtime` was found, if anywhere.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub nvidia_container_runtime: Option<String>,
}

impl Report {
    pub fn failures(&self) -> Vec<&Check> {
        self.checks.iter().filter(|c| c.status == Status::Fail).collect()
    }

    /// `name: detail (fix)` of each failure, for the start-up error.
    pub fn failure_summary(&self) -> String {
        self.failures()
            .iter()
            .map(|c| match &c.fix {
                Some(fix) => format!("{}: {} (fix: {fix})", c.name, c.detail),
                None => format!("{}: {}", c.name, c.detail),
            })
            .collect::<Vec<_>>()
            .join("; ")
    }
}

/// What the checks read. `root` is `/` outside tests; the other fields are the
/// facts that cannot be faked by a directory tree.
pub struct Host<'a> {
    pub root: &'a Path,
    pub euid_is_root: bool,
    pub path_env: Option<std::ffi::OsString>,
    pub data_dir: &'a Path,
    pub gpus: &'a GpuInventory,
}

/// Free space below which the data dir fails (k3s's images and containerd's snapshots
/// live there) and below which it warns.
const DISK_FAIL_BYTES: u64 = 4 << 30;
const DISK_WARN_BYTES: u64 = 20 << 30;
/// The kubelet's port; k3s's API port comes from the config.
const KUBELET_PORT: u16 = 10250;

fn check(name: &'static str, status: Status, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check {
        name,
        status,
        detail: detail.into(),
        fix: fix.map(str::to_string),
    }
}

pub fn run(config: &K3sConfig, host: &Host) -> Report {
    let mut checks = vec![
        root_check(host),
        kernel_check(host.root),
        cgroup_check(host.root),
        swap_check(host.root),
        module_check(host.root, "br_netfilter"),
        module_check(host.root, "overlay"),
        port_check("api port", config.https_listen_port),
        port_check("kubelet port", KUBELET_PORT),
        disk_check(host.data_dir),
        driver_check(host.gpus),
    ];
    let location = containerd::locate_runtime(host.root, host.path_env.as_deref());
    checks.push(runtime_check(&location));
    let (k3s, version) = k3s_check(&config.executable);
    checks.push(k3s);
    let nvidia_container_runtime = match &location {
        RuntimeLocation::DetectedByK3s(p) | RuntimeLocation::Elsewhere(p) => Some(p.display().to_string()),
        RuntimeLocation::Missing => None,
    };
    Report {
        checks,
        k3s_version: version.map(|v| v.to_string()),
        version,
        containerd: version.map(K3sVersion::containerd),
        nvidia_container_runtime,
    }
}

fn read(root: &Path, path: &str) -> Option<String> {
    std::fs::read_to_string(root.join(path.trim_start_matches('/'))).ok()
}

fn root_check(host: &Host) -> Check {
    if host.euid_is_root {
        check("root", Status::Pass, "running as root", None)
    } else {
        check(
            "root",
            Status::Fail,
            "not running as root: k3s manages cgroups, iptables and mounts",
            Some("run as root: `sudo hearth k3s preflight`, `sudo hearth serve --runtime k3s` (the systemd unit runs as root)"),
        )
    }
}

fn kernel_check(root: &Path) -> Check {
    let Some(release) = read(root, "/proc/sys/kernel/osrelease") else {
        return check(
            "kernel",
            Status::Fail,
            "cannot read /proc/sys/kernel/osrelease",
            Some("run on Linux with /proc mounted"),
        );
    };
    let release = release.trim().to_string();
    let mut numbers = release
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|n| n.parse::<u32>().ok());
    let version = (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0));
    if version >= (5, 4) {
        check("kernel", Status::Pass, format!("Linux {release}"), None)
    } else if version >= (4, 15) {
        check(
            "kernel",
            Status::Warn,
            format!("Linux {release}: older than 5.4, cgroup v2 and eBPF features are limited"),
            Some("upgrade to a 5.4 or newer kernel (the distribution's HWE kernel)"),
        )
    } else {
        check(
            "kernel",
            Status::Fail,
            format!("Linux {release}: k3s needs 4.15 or newer"),
            Some("upgrade the kernel"),
        )
    }
}

fn cgroup_check(root: &Path) -> Check {
    if let Some(controllers) = read(root, "/sys/fs/cgroup/cgroup.controllers") {
        let missing: Vec<&str> = ["cpu", "memory", "pids"]
            .into_iter()
            .filter(|c| !controllers.split_whitespace().any(|have| have == *c))
            .collect();
        if missing.is_empty() {
            check("cgroups", Status::Pass, "cgroup v2 with cpu, memory, pids", None)
        } else {
            check(
                "cgroups",
                Status::Fail,
                format!("cgroup v2 without the {} controller(s)", missing.join(", ")),
                Some("enable them: add `cgroup_enable=memory cgroup_memory=1` to the kernel command line (Raspberry Pi and some ARM boards) and reboot"),
            )
        }
    } else if root.join("sys/fs/cgroup/memory").is_dir() {
        check(
            "cgroups",
            Status::Warn,
            "cgroup v1: supported by k3s, but Kubernetes has put it in maintenance mode",
            Some("boot with cgroup v2: `systemd.unified_cgroup_hierarchy=1` on the kernel command line"),
        )
    } else {
        check(
            "cgroups",
            Status::Fail,
            "no cgroup filesystem with a memory controller under /sys/fs/cgroup",
            Some("mount cgroup2 at /sys/fs/cgroup (systemd does this at boot)"),
        )
    }
}

fn swap_check(root: &Path) -> Check {
    let active = read(root, "/proc/swaps")
        .map(|text| text.lines().skip(1).filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    if active == 0 {
        check("swap", Status::Pass, "no swap", None)
    } else {
        check(
            "swap",
            Status::Warn,
            format!(
                "{active} swap device(s) on: k3s runs with them, but pods' memory limits are then not strict"
            ),
            Some("`swapoff -a` and remove swap from /etc/fstab"),
        )
    }
}

fn module_check(root: &Path, module: &'static str) -> Check {
    let name: &'static str = match module {
        "br_netfilter" => "module br_netfilter",
        _ => "module overlay",
    };
    let loaded = root.join("sys/module").join(module).exists()
        || (module == "overlay"
            && read(root, "/proc/filesystems").is_some_and(|f| {
                f.lines()
                    .any(|l| l.trim_end().ends_with("\toverlay") || l.trim() == "overlay")
            }));
    if loaded {
        check(name, Status::Pass, "loaded", None)
    } else {
        check(
            name,
            Status::Warn,
            "not loaded (k3s loads it at start when the module is installed)",
            Some(match module {
                "br_netfilter" => {
                    "`modprobe br_netfilter` and `echo br_netfilter > /etc/modules-load.d/k3s.conf`"
                }
                _ => "`modprobe overlay` and `echo overlay > /etc/modules-load.d/k3s.conf`",
            }),
        )
    }
}

fn port_check(name: &'static str, port: u16) -> Check {
    match std::net::TcpListener::bind(("0.0.0.0", port)) {
        Ok(_) => check(name, Status::Pass, format!("{port}/tcp free"), None),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => check(
            name,
            Status::Fail,
            format!("{port}/tcp is in use by another process"),
            Some(&format!("find it with `ss -ltnp 'sport = :{port}'` and stop it (another Kubernetes, or a k3s not started by Hearth: `systemctl disable --now k3s`)")),
        ),
        // Binding a port below 1024 needs root, 6443 and 10250 do not: any other
        // error is a host oddity worth showing but not a reason to refuse.
        Err(e) => check(name, Status::Warn, format!("{port}/tcp: cannot test ({e})"), None),
    }
}

fn disk_check(data_dir: &Path) -> Check {
    let mut dir: PathBuf = data_dir.to_path_buf();
    while !dir.exists() {
        match dir.parent() {
            Some(parent) => dir = parent.to_path_buf(),
            None => break,
        }
    }
    let free = match nix::sys::statvfs::statvfs(&dir) {
        Ok(s) => s.blocks_available() * s.fragment_size(),
        Err(e) => {
            return check(
                "disk",
                Status::Fail,
                format!("cannot read free space of {}: {e}", dir.display()),
                Some("set data_dir to a writable directory"),
            )
        }
    };
    let gib = |b: u64| format!("{:.1} GiB", b as f64 / f64::from(1u32 << 30));
    let detail = format!("{} free at {}", gib(free), dir.display());
    if free >= DISK_WARN_BYTES {
        check("disk", Status::Pass, detail, None)
    } else if free >= DISK_FAIL_BYTES {
        check(
            "disk",
            Status::Warn,
            format!("{detail}: CUDA images are several GiB each"),
            Some("free space, or set data_dir on a larger disk (20 GiB or more)"),
        )
    } else {
        check(
            "disk",
            Status::Fail,
            format!("{detail}: k3s's images and containerd's snapshots need at least 4 GiB"),
            Some("free space, or set data_dir on a larger disk (20 GiB or more)"),
        )
    }
}

fn driver_check(gpus: &GpuInventory) -> Check {
    match gpus.source {
        GpuSource::Nvml if gpus.count() > 0 => check(
            "nvidia driver",
            Status::Pass,
            format!(
                "driver {} with {} GPU(s) (NVML)",
                gpus.driver_version.as_deref().unwrap_or("?"),
                gpus.count()
            ),
            None,
        ),
        GpuSource::Simulated => check(
            "nvidia driver",
            Status::Warn,
            format!("{} simulated GPU(s) ([gpu] simulate): not real hardware, the device plugin will advertise none", gpus.count()),
            Some("remove `simulate` from [gpu] on a machine with NVIDIA GPUs"),
        ),
        GpuSource::Nvml | GpuSource::None => check(
            "nvidia driver",
            Status::Fail,
            gpus.reason.clone().unwrap_or_else(|| "no NVIDIA GPU found".to_string()),
            Some("install the NVIDIA driver (`ubuntu-drivers install`, or the distribution's `nvidia-driver` package) and check `nvidia-smi`"),
        ),
    }
}

fn runtime_check(location: &RuntimeLocation) -> Check {
    match location {
        RuntimeLocation::DetectedByK3s(path) => check(
            "nvidia-container-runtime",
            Status::Pass,
            format!("{} (k3s finds it: started with --default-runtime nvidia)", path.display()),
            None,
        ),
        RuntimeLocation::Elsewhere(path) => check(
            "nvidia-container-runtime",
            Status::Warn,
            format!(
                "{}: not where k3s looks (/usr/local/nvidia/toolkit, /usr/bin); Hearth writes a containerd template for it",
                path.display()
            ),
            Some("install the nvidia-container-toolkit package so the runtime is in /usr/bin"),
        ),
        RuntimeLocation::Missing => check(
            "nvidia-container-runtime",
            Status::Fail,
            "not found in /usr/local/nvidia/toolkit, /usr/bin or PATH: containers cannot see the GPUs",
            Some("install NVIDIA Container Toolkit: add NVIDIA's apt repository (https://nvidia.github.io/libnvidia-container) and `apt-get install nvidia-container-toolkit`"),
        ),
    }
}

fn k3s_check(binary: &Path) -> (Check, Option<K3sVersion>) {
    let fix = "install k3s without starting it: `curl -sfL https://get.k3s.io | INSTALL_K3S_SKIP_ENABLE=true INSTALL_K3S_SKIP_START=true sh -`, or copy the air-gap bundle's `k3s` there; or set [k3s] executable";
    let output = match std::process::Command::new(binary).arg("--version").output() {
        Ok(output) => output,
        Err(e) => {
            return (
                check(
                    "k3s",
                    Status::Fail,
                    format!("{}: {e}", binary.display()),
                    Some(fix),
                ),
                None,
            )
        }
    };
    let text = String::from_utf8_lossy(&output.stdout);
    match K3sVersion::parse(&text) {
        Ok(version) if output.status.success() => {
            let generation = version.containerd();
            (
                check(
                    "k3s",
                    Status::Pass,
                    format!(
                        "{} {version} (containerd {}, config version {})",
                        binary.display(),
                        match generation {
                            ContainerdGeneration::V1 => "1.x",
                            ContainerdGeneration::V2 => "2.x",
                        },
                        generation.config_version()
                    ),
                    None,
                ),
                Some(version),
            )
        }
        Ok(_) | Err(_) => (
            check(
                "k3s",
                Status::Fail,
                format!(
                    "{} --version answered {} with {:?}",
                    binary.display(),
                    output.status,
                    text.lines().next().unwrap_or("")
                ),
                Some(fix),
            ),
            None,
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gpu::GpuProbe;

    #[test]
    fn a_bare_root_fails_clearly_with_fixes() {
        let root = tempfile::tempdir().unwrap();
        let gpus = GpuProbe::new(None).snapshot();
        let data = root.path().join("data");
        let host = Host {
            root: root.path(),
            euid_is_root: false,
            path_env: None,
            data_dir: &data,
            gpus: &gpus,
        };
        let config = K3sConfig {
            executable: root.path().join("no-k3s"),
            https_listen_port: 0,
            ..K3sConfig::default()
        };
        let report = run(&config, &host);
        let status = |name: &str| report.checks.iter().find(|c| c.name == name).unwrap().status;
        assert_eq!(status("root"), Status::Fail);
        assert_eq!(status("kernel"), Status::Fail);
        assert_eq!(status("cgroups"), Status::Fail);
        assert_eq!(status("nvidia-container-runtime"), Status::Fail);
        assert_eq!(status("k3s"), Status::Fail);
        assert_eq!(status("swap"), Status::Pass);
        for c in report.failures() {
            assert!(c.fix.is_some(), "{} has no fix", c.name);
        }
        assert!(report.failure_summary().contains("k3s: "));
    }

    #[test]
    fn a_prepared_root_passes() {
        use std::os::unix::fs::PermissionsExt;
        let root = tempfile::tempdir().unwrap();
        let write = |p: &str, text: &str| {
            let path = root.path().join(p);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, text).unwrap();
            path
        };
        write("proc/sys/kernel/osrelease", "6.8.0-45-generic\n");
        write(
            "sys/fs/cgroup/cgroup.controllers",
            "cpuset cpu io memory hugetlb pids rdma misc\n",
        );
        write("proc/swaps", "Filename\tType\tSize\tUsed\tPriority\n");
        write("sys/module/br_netfilter/refcnt", "0");
        write("proc/filesystems", "nodev\tsysfs\nnodev\toverlay\n");
        let runtime = write("usr/bin/nvidia-container-runtime", "#!/bin/sh\n");
        let k3s = write(
            "k3s",
            "#!/bin/sh\necho 'k3s version v1.33.1+k3s1 (99d91538)'\necho 'go version go1.24.2'\n",
        );
        for p in [&runtime, &k3s] {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        let gpus = GpuInventory {
            source: GpuSource::Nvml,
            simulated: false,
            reason: None,
            driver_version: Some("570.86.15".into()),
            devices: GpuProbe::new(Some(2)).snapshot().devices,
        };
        let host = Host {
            root: root.path(),
            euid_is_root: true,
            path_env: None,
            data_dir: root.path(),
            gpus: &gpus,
        };
        let config = K3sConfig {
            executable: k3s,
            https_listen_port: 0,
            ..K3sConfig::default()
        };
        let report = run(&config, &host);
        for c in &report.checks {
            // Ports and disk are this machine's: only the faked checks must pass.
            if !matches!(c.name, "api port" | "kubelet port" | "disk") {
                assert_eq!(c.status, Status::Pass, "{c:?}");
            }
        }
        assert_eq!(report.k3s_version.as_deref(), Some("v1.33.1"));
        assert_eq!(report.containerd, Some(ContainerdGeneration::V2));
        assert_eq!(
            report.nvidia_container_runtime.as_deref(),
            Some("/usr/bin/nvidia-container-runtime")
        );
    }
}
