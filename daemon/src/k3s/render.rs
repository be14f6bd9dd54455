//! What Hearth hands k3s: the `k3s server` arguments, the containerd template when one
//! is needed, and the manifests. `hearth k3s render DIR` writes all of it for review
//! (or GitOps) without starting anything; the supervisor writes the same files into
//! k3s's data dir before each start.

use std::path::{Path, PathBuf};

use super::containerd::{self, ContainerdGeneration, RuntimeLocation, RuntimeWiring};
use super::manifests::{self, GPU_PRESENT_LABEL};

/// Everything decided for one k3s start.
#[derive(Debug, Clone)]
pub struct Plan {
    pub args: Vec<String>,
    pub wiring: RuntimeWiring,
    pub manifests: Vec<manifests::Manifest>,
}

/// Inputs of the plan.
pub struct PlanInput<'a> {
    pub hearth_data_dir: &'a Path,
    pub https_listen_port: u16,
    pub generation: ContainerdGeneration,
    pub runtime: &'a RuntimeLocation,
    /// GPUs NVML (or `[gpu] simulate`) reports on this node.
    pub gpu_count: usize,
    pub time_slicing_replicas: u32,
}

pub fn plan(input: &PlanInput) -> Plan {
    let data_dir = super::data_dir(input.hearth_data_dir);
    let mut args: Vec<String> = vec![
        "server".into(),
        "--data-dir".into(),
        data_dir.display().to_string(),
        "--write-kubeconfig".into(),
        super::kubeconfig_path(input.hearth_data_dir)
            .display()
            .to_string(),
        "--write-kubeconfig-mode".into(),
        "0600".into(),
        // Hearth's serving and notebooks proxies front workloads; k3s's ingress and
        // load balancer would take ports 80/443 on the host for nothing.
        "--disable".into(),
        "traefik,servicelb".into(),
        "--https-listen-port".into(),
        input.https_listen_port.to_string(),
    ];
    let wiring = containerd::wiring(input.runtime, input.generation);
    if wiring != RuntimeWiring::None {
        // Also with a template: k3s's base template sets `default_runtime_name` from
        // this flag, and a second one in the appended table would be a TOML error.
        args.push("--default-runtime".into());
        args.push("nvidia".into());
    }
    if input.gpu_count > 0 {
        args.push("--node-label".into());
        args.push(format!("{}={}", GPU_PRESENT_LABEL.0, GPU_PRESENT_LABEL.1));
    }
    Plan {
        args,
        wiring,
        manifests: manifests::all(input.time_slicing_replicas),
    }
}

/// Writes the manifests to `manifests_dir`, the template (if any) to `containerd_dir`
/// (removing a stale Hearth template of the other generation), and returns the paths
/// written. Files are written whole and renamed, since k3s applies what it sees.
pub fn write(plan: &Plan, manifests_dir: &Path, containerd_dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut written = Vec::new();
    std::fs::create_dir_all(manifests_dir)?;
    for manifest in &plan.manifests {
        let text = serde_yaml_ng::to_string(&manifest.document).map_err(std::io::Error::other)?;
        let path = manifests_dir.join(manifest.file_name);
        write_atomic(&path, &text)?;
        written.push(path);
    }
    if let RuntimeWiring::Template { file_name, contents } = &plan.wiring {
        std::fs::create_dir_all(containerd_dir)?;
        let path = containerd_dir.join(file_name);
        write_atomic(&path, contents)?;
        written.push(path);
    }
    Ok(written)
}

fn write_atomic(path: &Path, text: &str) -> std::io::Result<()> {
    let tmp = path.with_extension("hearth-tmp");
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input<'a>(dir: &'a Path, runtime: &'a RuntimeLocation, gpus: usize) -> PlanInput<'a> {
        PlanInput {
            hearth_data_dir: dir,
            https_listen_port: 6443,
            generation: ContainerdGeneration::V2,
            runtime,
            gpu_count: gpus,
            time_slicing_replicas: 1,
        }
    }

    #[test]
    fn args_follow_the_runtime_location_and_gpus() {
        let dir = Path::new("/var/lib/hearth");
        let detected = RuntimeLocation::DetectedByK3s("/usr/bin/nvidia-container-runtime".into());
        let p = plan(&input(dir, &detected, 2));
        let joined = p.args.join(" ");
        assert!(
            joined.starts_with("server --data-dir /var/lib/hearth/k3s "),
            "{joined}"
        );
        assert!(joined.contains("--write-kubeconfig-mode 0600"));
        assert!(joined.contains("--disable traefik,servicelb"));
        assert!(joined.contains("--default-runtime nvidia"));
        assert!(joined.contains("--node-label nvidia.com/gpu.present=true"));
        assert_eq!(p.wiring, RuntimeWiring::Flag);

        let elsewhere = RuntimeLocation::Elsewhere("/opt/nv/nvidia-container-runtime".into());
        let p = plan(&input(dir, &elsewhere, 2));
        assert!(matches!(
            p.wiring,
            RuntimeWiring::Template {
                file_name: "config-v3.toml.tmpl",
                ..
            }
        ));
        assert!(p.args.join(" ").contains("--default-runtime nvidia"));

        let p = plan(&input(dir, &RuntimeLocation::Missing, 0));
        let joined = p.args.join(" ");
        assert!(!joined.contains("--default-runtime"));
        assert!(!joined.contains("--node-label"));
    }

    #[test]
    fn write_puts_files_where_k3s_reads_them() {
        let tmp = tempfile::tempdir().unwrap();
        let elsewhere = RuntimeLocation::Elsewhere("/opt/nv/nvidia-container-runtime".into());
        let p = plan(&input(tmp.path(), &elsewhere, 1));
        let k3s = tmp.path().join("k3s");
        let written = write(
            &p,
            &k3s.join("server/manifests"),
            &k3s.join("agent/etc/containerd"),
        )
        .unwrap();
        assert_eq!(written.len(), 3);
        assert!(tmp
            .path()
            .join("k3s/server/manifests/hearth-nvidia-runtimeclass.yaml")
            .is_file());
        assert!(tmp
            .path()
            .join("k3s/agent/etc/containerd/config-v3.toml.tmpl")
            .is_file());
    }
}
