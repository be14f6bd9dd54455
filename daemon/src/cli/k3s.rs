//! `hearth k3s ...`: preflight, render, verify and join-command for the embedded k3s
//! (see `crate::k3s`). These run on the daemon's host and read its config; none needs
//! a running daemon.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};

use crate::config::Config;
use crate::k3s::containerd::{self, ContainerdGeneration, K3sVersion, RuntimeLocation, RuntimeWiring};
use crate::k3s::{preflight, render};

#[derive(Subcommand)]
pub enum K3sCommand {
    /// Check this host for k3s with NVIDIA GPUs: each check pass/warn/fail with its fix;
    /// exits 1 when any check fails.
    Preflight(PreflightArgs),
    /// Write every manifest and the containerd template Hearth would apply, and the
    /// `k3s server` arguments, into DIR without starting anything.
    Render(RenderArgs),
    /// Run NVIDIA's CUDA vector-add sample as a pod on every GPU node and expect
    /// `Test PASSED`; exits 1 when a node fails.
    Verify(VerifyArgs),
    /// Print what to run on another machine to join this k3s as an agent (token,
    /// server URL).
    JoinCommand(JoinArgs),
}

#[derive(Args)]
pub struct VerifyArgs {
    #[command(flatten)]
    pub config: crate::ConfigFlags,
    /// How long each node's pod may take (the first run pulls the CUDA image).
    #[arg(long, default_value_t = 300)]
    pub timeout_seconds: u64,
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct JoinArgs {
    #[command(flatten)]
    pub config: crate::ConfigFlags,
    /// The address other machines reach this one at [default: this host's address on
    /// its default route].
    #[arg(long)]
    pub server_address: Option<String>,
}

#[derive(Args)]
pub struct PreflightArgs {
    #[command(flatten)]
    pub config: crate::ConfigFlags,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

#[derive(Args)]
pub struct RenderArgs {
    #[command(flatten)]
    pub config: crate::ConfigFlags,
    /// Where to write: DIR/manifests/*.yaml (what k3s applies), DIR/containerd/<template>
    /// (only when one is needed), DIR/verify/cuda-vectoradd-pod.yaml (the pod `verify`
    /// runs), DIR/k3s-server.args (the k3s command line, one argument a line).
    pub dir: PathBuf,
    /// Render for this k3s release (e.g. `v1.33.1+k3s1`) instead of asking the
    /// configured binary's `k3s --version`.
    #[arg(long)]
    pub k3s_version: Option<String>,
    /// Render for an `nvidia-container-runtime` at this path instead of looking for it
    /// on this host.
    #[arg(long)]
    pub nvidia_container_runtime: Option<PathBuf>,
    /// Render for this many GPUs instead of asking NVML.
    #[arg(long)]
    pub gpus: Option<usize>,
}

#[derive(Debug, thiserror::Error)]
pub enum K3sCliError {
    #[error("{0}")]
    Config(#[from] crate::config::ConfigError),
    #[error("{0}")]
    Version(#[from] containerd::VersionError),
    #[error("cannot tell which containerd k3s bundles: {0}; give --k3s-version")]
    NoVersion(String),
    #[error("{path}: {source}")]
    Write { path: PathBuf, source: std::io::Error },
    #[error(transparent)]
    Verify(#[from] crate::k3s::verify::VerifyError),
    #[error(transparent)]
    Join(#[from] crate::k3s::join::JoinError),
    #[error("cannot print the report: {0}")]
    Output(String),
}

/// Runs the checks for `config` on this host.
pub fn preflight_report(config: &Config) -> preflight::Report {
    let gpus = crate::gpu::GpuProbe::new(config.gpu.simulate).snapshot();
    let host = preflight::Host {
        root: std::path::Path::new("/"),
        euid_is_root: nix::unistd::geteuid().is_root(),
        path_env: std::env::var_os("PATH"),
        data_dir: &config.data_dir,
        gpus: &gpus,
    };
    preflight::run(&config.k3s, &host)
}

pub fn preflight(args: &PreflightArgs) -> Result<ExitCode, K3sCliError> {
    let config = args.config.load()?.config;
    let report = preflight_report(&config);
    if args.json {
        let text = serde_json::to_string_pretty(&report).map_err(|e| K3sCliError::Output(e.to_string()))?;
        println!("{text}");
    } else {
        let rows: Vec<Vec<String>> = report
            .checks
            .iter()
            .map(|c| {
                vec![
                    c.name.to_string(),
                    c.status.as_str().to_uppercase(),
                    c.detail.clone(),
                    c.fix.clone().unwrap_or_default(),
                ]
            })
            .collect();
        super::print_table(&["CHECK", "STATUS", "DETAIL", "FIX"], &rows);
        let failed = report.failures().len();
        if failed > 0 {
            println!(
                "\n{failed} check(s) failed: `hearth serve --runtime k3s` will not start until they pass."
            );
        }
    }
    Ok(if report.failures().is_empty() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn render(args: &RenderArgs) -> Result<ExitCode, K3sCliError> {
    let config = args.config.load()?.config;
    let version = match &args.k3s_version {
        Some(v) => K3sVersion::parse(v)?,
        None => {
            let output = std::process::Command::new(&config.k3s.executable)
                .arg("--version")
                .output()
                .map_err(|e| K3sCliError::NoVersion(format!("{}: {e}", config.k3s.executable.display())))?;
            K3sVersion::parse(&String::from_utf8_lossy(&output.stdout))
                .map_err(|e| K3sCliError::NoVersion(e.to_string()))?
        }
    };
    let generation = version.containerd();
    let runtime = match &args.nvidia_container_runtime {
        Some(path)
            if containerd::K3S_RUNTIME_DIRS
                .iter()
                .any(|d| path == &PathBuf::from(d).join(containerd::RUNTIME_BINARY)) =>
        {
            RuntimeLocation::DetectedByK3s(path.clone())
        }
        Some(path) => RuntimeLocation::Elsewhere(path.clone()),
        None => containerd::locate_runtime(std::path::Path::new("/"), std::env::var_os("PATH").as_deref()),
    };
    let gpu_count = match args.gpus {
        Some(n) => n,
        None => crate::gpu::GpuProbe::new(config.gpu.simulate).snapshot().count(),
    };
    let plan = render::plan(&render::PlanInput {
        hearth_data_dir: &config.data_dir,
        https_listen_port: config.k3s.https_listen_port,
        generation,
        runtime: &runtime,
        gpu_count,
        time_slicing_replicas: config.gpu.time_slicing_replicas,
    });
    let write_err = |path: PathBuf| move |source| K3sCliError::Write { path, source };
    let written = render::write(&plan, &args.dir.join("manifests"), &args.dir.join("containerd"))
        .map_err(write_err(args.dir.clone()))?;
    // The pod `hearth k3s verify` would run on this node, for review.
    let node = nix::unistd::gethostname()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "node".into())
        .to_lowercase();
    let verify_dir = args.dir.join("verify");
    let verify_path = verify_dir.join("cuda-vectoradd-pod.yaml");
    let verify_text = serde_yaml_ng::to_string(&crate::k3s::manifests::verify_pod(&node))
        .map_err(|e| K3sCliError::Output(e.to_string()))?;
    std::fs::create_dir_all(&verify_dir)
        .and_then(|()| std::fs::write(&verify_path, verify_text))
        .map_err(write_err(verify_path.clone()))?;
    let args_path = args.dir.join("k3s-server.args");
    let mut args_text = String::new();
    for arg in std::iter::once(config.k3s.executable.display().to_string()).chain(plan.args.iter().cloned()) {
        args_text.push_str(&arg);
        args_text.push('\n');
    }
    std::fs::write(&args_path, args_text).map_err(write_err(args_path.clone()))?;
    for path in written.iter().chain([&verify_path, &args_path]) {
        println!("{}", path.display());
    }
    let how = match &plan.wiring {
        RuntimeWiring::Flag => "k3s finds nvidia-container-runtime itself: --default-runtime nvidia, no template".to_string(),
        RuntimeWiring::Template { file_name, .. } => format!(
            "nvidia-container-runtime is not where k3s looks: template {file_name} (containerd {}, config version {}) plus --default-runtime nvidia",
            match generation {
                ContainerdGeneration::V1 => "1.x",
                ContainerdGeneration::V2 => "2.x",
            },
            generation.config_version()
        ),
        RuntimeWiring::None => "no nvidia-container-runtime found: no NVIDIA runtime is configured (GPU pods cannot start)".to_string(),
    };
    eprintln!("k3s {version}: {how}");
    Ok(ExitCode::SUCCESS)
}

pub fn verify(args: &VerifyArgs) -> Result<ExitCode, K3sCliError> {
    let config = args.config.load()?.config;
    let results = crate::k3s::verify::run(
        &config.k3s.executable,
        &crate::k3s::kubeconfig_path(&config.data_dir),
        std::time::Duration::from_secs(args.timeout_seconds),
        std::time::Duration::from_secs(2),
    )?;
    if args.json {
        let text = serde_json::to_string_pretty(&results).map_err(|e| K3sCliError::Output(e.to_string()))?;
        println!("{text}");
    } else {
        let rows: Vec<Vec<String>> = results
            .iter()
            .map(|r| {
                vec![
                    r.node.clone(),
                    if r.passed { "PASSED" } else { "FAILED" }.to_string(),
                    r.detail.clone(),
                ]
            })
            .collect();
        super::print_table(&["NODE", "CUDA VECTOR-ADD", "DETAIL"], &rows);
    }
    Ok(if results.iter().all(|r| r.passed) {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn join_command(args: &JoinArgs) -> Result<ExitCode, K3sCliError> {
    use crate::k3s::join;
    let config = args.config.load()?.config;
    let token = join::read_token(&config.data_dir)?;
    let host = match &args.server_address {
        Some(address) => address.clone(),
        None => join::default_route_address()?.to_string(),
    };
    let host = if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]")
    } else {
        host
    };
    let url = format!("https://{host}:{}", config.k3s.https_listen_port);
    let release = std::process::Command::new(&config.k3s.executable)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| join::release_word(&String::from_utf8_lossy(&o.stdout)));
    print!("{}", join::commands(&url, &token, release.as_deref()));
    Ok(ExitCode::SUCCESS)
}

pub fn main(command: &K3sCommand) -> ExitCode {
    let (name, result) = match command {
        K3sCommand::Preflight(args) => ("k3s preflight", preflight(args)),
        K3sCommand::Render(args) => ("k3s render", render(args)),
        K3sCommand::Verify(args) => ("k3s verify", verify(args)),
        K3sCommand::JoinCommand(args) => ("k3s join-command", join_command(args)),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hearth {name}: {e}");
            ExitCode::from(2)
        }
    }
}
