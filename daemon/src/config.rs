//! One `Config` for the whole daemon. Layers, lowest first: built-in defaults, the TOML
//! file, `HEARTH_*` environment variables, command-line flags. Every layer is checked
//! on its own so that an error names the key and where it came from.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

pub const DEFAULT_CONFIG_PATH: &str = "/etc/hearth/config.toml";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    File { path: PathBuf, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("command-line flag {flag}: {message}")]
    Flag { flag: String, message: String },
    #[error("{key}: {message}")]
    Invalid { key: &'static str, message: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum RuntimeKind {
    Process,
    Docker,
    K3s,
}

impl RuntimeKind {
    /// Whether this build can run workloads with this runtime. `hearth config runtimes`
    /// prints the ones that can (the installer asks it), and `serve` refuses the others.
    pub fn is_available(self) -> bool {
        match self {
            // k3s: provisioned and supervised (`crate::k3s`); workloads still run on the
            // process backend until the kube backend is built.
            RuntimeKind::Process | RuntimeKind::Docker | RuntimeKind::K3s => true,
        }
    }

    /// The runtimes this build provides, in declaration order.
    pub fn available() -> Vec<RuntimeKind> {
        <RuntimeKind as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .filter(|r| r.is_available())
            .collect()
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RuntimeKind::Process => "process",
            RuntimeKind::Docker => "docker",
            RuntimeKind::K3s => "k3s",
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Address of the control-plane API over plain HTTP: loopback only unless
    /// `allow_plain_http_on_network` (bearer tokens must not cross a network in clear).
    pub listen: SocketAddr,
    /// Address of the same API over HTTPS, with Hearth's own CA (`tls::ensure`): the one
    /// kubectl and other Kubernetes clients use, since they send no token over plain HTTP.
    pub tls_listen: SocketAddr,
    /// Extra DNS names and IP addresses for the API's TLS certificate, besides
    /// `localhost`, `127.0.0.1`, `::1` and the host name (k3s's `--tls-san`).
    pub tls_sans: Vec<String>,
    /// Let `listen` or `serving_listen` be a non-loopback address: plain HTTP, tokens
    /// in clear text, on a network. Off: such an address stops start-up.
    pub allow_plain_http_on_network: bool,
    /// Address of the model-serving data plane.
    pub serving_listen: SocketAddr,
    /// Where the database, logs, artifacts and the admin token live.
    pub data_dir: PathBuf,
    pub runtime: RuntimeKind,
    /// The Docker backend (`runtime = "docker"`).
    pub docker: crate::runtime::docker::DockerConfig,
    /// A tracing filter: `info`, `debug`, `hearth=debug,actix_web=info`, ...
    pub log_level: String,
    /// Largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// Seconds SIGTERM waits for in-flight requests before closing them.
    pub shutdown_timeout_seconds: u64,
    /// Seconds a web session (the `hearth_session` cookie of a login) lasts from the
    /// login; then the page shows the login page again and the API answers 401.
    pub session_ttl_seconds: u64,
    pub metrics: MetricsConfig,
    pub gpu: GpuConfig,
    pub serving: ServingConfig,
    pub pipelines: PipelinesConfig,
    pub scheduler: crate::scheduler::SchedulerConfig,
    pub workloads: crate::runtime::WorkloadsConfig,
    pub jobs: crate::jobs::JobsConfig,
    pub notebooks: crate::notebooks::NotebooksConfig,
    pub isolation: IsolationConfig,
    pub k3s: crate::k3s::K3sConfig,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Serve `/metrics` without a token (for a Prometheus on the same host).
    pub public: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GpuConfig {
    /// Report this many simulated GPUs instead of asking NVML (tests, demos).
    /// Simulated GPUs are marked `simulated: true` wherever they appear.
    pub simulate: Option<u32>,
    /// Share each GPU this many ways (the GPU Operator's time-slicing convention).
    pub time_slicing_replicas: u32,
    /// Seconds between inventory refreshes.
    pub refresh_seconds: u64,
}

/// How pipeline steps run on the process runtime.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PipelinesConfig {
    /// A Python virtual environment for steps: its `bin/` goes first on PATH and
    /// `VIRTUAL_ENV` is set, so a component's `pip install kfp==X` preamble finds kfp
    /// already installed (no network needed) and `python3` is that environment's.
    pub step_venv: Option<PathBuf>,
    /// More directories for steps' PATH (colon-separated, like PATH), after the venv's
    /// `bin/` and before the daemon's own PATH.
    pub step_path: Option<String>,
}

impl PipelinesConfig {
    pub fn step_path_entries(&self) -> Vec<PathBuf> {
        let mut out = Vec::new();
        if let Some(v) = &self.step_venv {
            out.push(v.join("bin"));
        }
        if let Some(p) = &self.step_path {
            out.extend(std::env::split_paths(p));
        }
        out
    }
}

/// Which Unix user each namespace's workloads run as when the daemon runs as root
/// (see `runtime::identity`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct IsolationConfig {
    /// `false`: workloads run as the daemon's own user even when it is root, as in
    /// single-user mode (namespaces are then not isolated from each other).
    pub enabled: bool,
    /// Hearth creates the system user `<user_prefix><namespace>` for a namespace that
    /// `accounts` does not map.
    pub user_prefix: String,
    /// `first-last`: the uids (and gids of their groups) Hearth gives the users it creates.
    pub uid_range: String,
    /// Namespace (a Hearth user's namespace carries the user's name) to an existing Unix
    /// account its workloads run as, e.g. `alice = "alice"`.
    pub accounts: std::collections::BTreeMap<String, String>,
    /// Namespaces whose workloads may ask for any `runAsUser`/`runAsGroup`/`fsGroup`
    /// in their `securityContext`, root included.
    pub privileged_namespaces: Vec<String>,
}

impl Default for IsolationConfig {
    fn default() -> Self {
        IsolationConfig {
            enabled: true,
            user_prefix: "hearth-".to_string(),
            uid_range: "20000-20999".to_string(),
            accounts: Default::default(),
            privileged_namespaces: Vec::new(),
        }
    }
}

impl IsolationConfig {
    /// `uid_range` as an inclusive pair; `validate` has checked it.
    pub fn uid_bounds(&self) -> Result<(u32, u32), String> {
        let (first, last) = self
            .uid_range
            .split_once('-')
            .ok_or_else(|| format!("{:?} is not `first-last`", self.uid_range))?;
        let parse = |s: &str| {
            s.trim()
                .parse::<u32>()
                .map_err(|_| format!("{:?} is not `first-last` with uids", self.uid_range))
        };
        let (first, last) = (parse(first)?, parse(last)?);
        if first < 1000 || last < first || last >= 65534 {
            return Err(format!(
                "{:?}: must be an ascending range within 1000-65533 (no system or nobody uids)",
                self.uid_range
            ));
        }
        Ok((first, last))
    }
}

impl Default for GpuConfig {
    fn default() -> Self {
        GpuConfig {
            simulate: None,
            time_slicing_replicas: 1,
            refresh_seconds: 5,
        }
    }
}

/// Model serving: routing, autoscaling and storage. Defaults follow KServe/Knative;
/// tests shorten the windows so scale-to-zero happens in seconds.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServingConfig {
    /// Services answer at `Host: {name}.{namespace}.{domain}` (KServe's default domain).
    pub domain: String,
    /// Knative KPA stable window.
    pub stable_window_seconds: f64,
    /// Knative KPA panic window.
    pub panic_window_seconds: f64,
    /// Panic when the panic-window demand reaches this percentage of ready capacity.
    pub panic_threshold_percent: f64,
    /// How long a revision with `minReplicas: 0` must be idle before its last replica stops.
    pub scale_to_zero_grace_seconds: f64,
    /// How often the autoscaler decides.
    pub autoscaler_tick_ms: u64,
    /// Requests the activator holds per revision while it has no ready replica.
    pub activator_queue: usize,
    /// How long a held request waits for a replica before a 503.
    pub activator_timeout_seconds: f64,
    /// A replica not ready this long after it started counts as failed.
    pub readiness_timeout_seconds: f64,
    /// Failed replicas (exit or readiness timeout) before a revision is marked failed.
    pub revision_failure_limit: u32,
    /// Ended replicas (with their logs) kept per service once their revision has
    /// settled; older ones are removed. Scale-to-zero makes one per idle period.
    pub ended_replicas_kept: usize,
    /// Per-request timeout when the service sets none (KServe's default is 300 s).
    pub default_timeout_seconds: u64,
    /// Data-plane worker threads; 0: one per CPU. The proxy is CPU-bound under load,
    /// so on a many-core workstation it should not be capped like the control plane.
    pub workers: usize,
    /// S3-compatible endpoint for `s3://` storage URIs (`http://127.0.0.1:9000`); empty: refused.
    pub s3_endpoint: String,
    /// S3 access key for `s3://` storage; empty: `AWS_ACCESS_KEY_ID` from the daemon's
    /// environment, else anonymous requests.
    pub s3_access_key_id: String,
    /// The secret that goes with `s3_access_key_id` (else `AWS_SECRET_ACCESS_KEY`).
    pub s3_secret_access_key: String,
    /// Region requests are signed for; empty: `AWS_REGION`, else `us-east-1`.
    pub s3_region: String,
    /// Where public `gs://` objects are read from (Google's XML and JSON APIs).
    pub gcs_endpoint: String,
    /// Runtimes added to (or replacing, by name) the built-in serving runtime table.
    pub runtimes: Vec<crate::serving::runtimes::ServingRuntime>,
}

impl Default for ServingConfig {
    fn default() -> Self {
        ServingConfig {
            domain: "example.com".to_string(),
            stable_window_seconds: 60.0,
            panic_window_seconds: 6.0,
            panic_threshold_percent: 200.0,
            scale_to_zero_grace_seconds: 30.0,
            autoscaler_tick_ms: 2000,
            activator_queue: 1000,
            activator_timeout_seconds: 120.0,
            readiness_timeout_seconds: 300.0,
            revision_failure_limit: 3,
            ended_replicas_kept: 10,
            default_timeout_seconds: 300,
            workers: 0,
            s3_endpoint: String::new(),
            s3_access_key_id: String::new(),
            s3_secret_access_key: String::new(),
            s3_region: String::new(),
            gcs_endpoint: "https://storage.googleapis.com".to_string(),
            runtimes: Vec::new(),
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            listen: SocketAddr::from(([127, 0, 0, 1], 8470)),
            serving_listen: SocketAddr::from(([127, 0, 0, 1], 8471)),
            tls_listen: SocketAddr::from(([127, 0, 0, 1], 8472)),
            tls_sans: Vec::new(),
            allow_plain_http_on_network: false,
            data_dir: default_data_dir(),
            runtime: RuntimeKind::Process,
            docker: Default::default(),
            log_level: "info".to_string(),
            max_body_bytes: 64 * 1024 * 1024,
            shutdown_timeout_seconds: 30,
            session_ttl_seconds: 12 * 3600,
            metrics: MetricsConfig::default(),
            gpu: GpuConfig::default(),
            serving: ServingConfig::default(),
            pipelines: PipelinesConfig::default(),
            scheduler: Default::default(),
            workloads: Default::default(),
            jobs: Default::default(),
            notebooks: Default::default(),
            isolation: Default::default(),
            k3s: Default::default(),
        }
    }
}

fn default_data_dir() -> PathBuf {
    if nix::unistd::geteuid().is_root() {
        return PathBuf::from("/var/lib/hearth");
    }
    if let Some(xdg) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
        return PathBuf::from(xdg).join("hearth");
    }
    match std::env::var_os("HOME") {
        Some(home) => PathBuf::from(home).join(".local/share/hearth"),
        None => PathBuf::from("/var/lib/hearth"),
    }
}

/// Every setting with its TOML key and environment variable. The env name is the key
/// upper-cased with dots as underscores, prefixed `HEARTH_`.
pub const SETTINGS: &[&str] = &[
    "listen",
    "serving_listen",
    "tls_listen",
    "allow_plain_http_on_network",
    "data_dir",
    "runtime",
    "docker.host",
    "docker.network",
    "log_level",
    "max_body_bytes",
    "shutdown_timeout_seconds",
    "session_ttl_seconds",
    "metrics.public",
    "gpu.simulate",
    "gpu.time_slicing_replicas",
    "gpu.refresh_seconds",
    "serving.domain",
    "serving.stable_window_seconds",
    "serving.panic_window_seconds",
    "serving.panic_threshold_percent",
    "serving.scale_to_zero_grace_seconds",
    "serving.autoscaler_tick_ms",
    "serving.activator_queue",
    "serving.activator_timeout_seconds",
    "serving.readiness_timeout_seconds",
    "serving.revision_failure_limit",
    "serving.ended_replicas_kept",
    "serving.default_timeout_seconds",
    "serving.workers",
    "serving.s3_endpoint",
    "serving.s3_access_key_id",
    "serving.s3_secret_access_key",
    "serving.s3_region",
    "serving.gcs_endpoint",
    "pipelines.step_venv",
    "pipelines.step_path",
    "scheduler.reserved_cpu_millis",
    "scheduler.reserved_memory_bytes",
    "scheduler.namespace_gpu_quota",
    "workloads.log_max_bytes",
    "workloads.path_prefix",
    "workloads.gc_interval_seconds",
    "jobs.backoff_base_seconds",
    "notebooks.cull_idle_time_minutes",
    "notebooks.enable_culling",
    "notebooks.idleness_check_period_seconds",
    "notebooks.restart_backoff_base_seconds",
    "notebooks.start_timeout_seconds",
    "isolation.enabled",
    "isolation.user_prefix",
    "isolation.uid_range",
    "k3s.executable",
    "k3s.https_listen_port",
    "k3s.restart_backoff_base_seconds",
    "k3s.restart_backoff_max_seconds",
    "k3s.log_max_bytes",
];

pub fn env_name(key: &str) -> String {
    format!("HEARTH_{}", key.replace('.', "_").to_uppercase())
}

/// Values given on the command line; `None` means "not given".
#[derive(Debug, Default, Clone)]
pub struct FlagOverrides {
    pub values: Vec<(&'static str, &'static str, String)>,
}

impl FlagOverrides {
    pub fn set(&mut self, key: &'static str, flag: &'static str, value: Option<String>) {
        if let Some(value) = value {
            self.values.push((key, flag, value));
        }
    }
}

/// Where the effective config came from, for `hearth config show`.
#[derive(Debug)]
pub struct Loaded {
    pub config: Config,
    pub file: Option<PathBuf>,
}

/// `explicit_file` is `--config`; when it is absent the default path is read only if it exists.
pub fn load(
    explicit_file: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &FlagOverrides,
) -> Result<Loaded, ConfigError> {
    let env_file = env("HEARTH_CONFIG").map(PathBuf::from);
    let file = match (explicit_file, env_file) {
        (Some(path), _) => Some(path.to_path_buf()),
        (None, Some(path)) => Some(path),
        (None, None) => {
            let default = PathBuf::from(DEFAULT_CONFIG_PATH);
            default.exists().then_some(default)
        }
    };

    let mut tree = toml::Value::try_from(Config::default()).map_err(|e| ConfigError::Invalid {
        key: "defaults",
        message: e.to_string(),
    })?;

    if let Some(path) = &file {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        let layer: toml::Table = toml::from_str(&text).map_err(|e| ConfigError::File {
            path: path.clone(),
            message: parse_error_line(&text, &e),
        })?;
        merge(&mut tree, toml::Value::Table(layer));
        check(&tree).map_err(|message| ConfigError::File {
            path: path.clone(),
            message,
        })?;
    }

    for key in SETTINGS {
        let var = env_name(key);
        if let Some(raw) = env(&var) {
            set_key(&mut tree, key, scalar(&raw));
            check(&tree).map_err(|message| ConfigError::Env {
                var: var.clone(),
                message,
            })?;
        }
    }
    for (key, flag, raw) in &flags.values {
        set_key(&mut tree, key, scalar(raw));
        check(&tree).map_err(|message| ConfigError::Flag {
            flag: flag.to_string(),
            message,
        })?;
    }

    let config: Config = tree
        .try_into()
        .map_err(|e: toml::de::Error| ConfigError::Invalid {
            key: "config",
            message: e.to_string(),
        })?;
    config.validate()?;
    Ok(Loaded { config, file })
}

impl Config {
    /// The config as `hearth config show` prints it: secrets replaced by a marker.
    pub fn redacted(&self) -> Config {
        let mut config = self.clone();
        if !config.serving.s3_secret_access_key.is_empty() {
            config.serving.s3_secret_access_key = "(set, not shown)".to_string();
        }
        config
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if !self.allow_plain_http_on_network {
            for (key, addr) in [("listen", self.listen), ("serving_listen", self.serving_listen)] {
                if !addr.ip().is_loopback() {
                    return Err(ConfigError::Invalid {
                        key,
                        message: format!(
                            "{addr} is not a loopback address: plain HTTP there would carry bearer tokens in clear text over the network; use tls_listen for remote clients, or set allow_plain_http_on_network = true to accept that"
                        ),
                    });
                }
            }
        }
        if self.max_body_bytes < 1024 {
            return Err(ConfigError::Invalid {
                key: "max_body_bytes",
                message: "must be at least 1024".into(),
            });
        }
        if !(1..=crate::model::strict::MAX_SECONDS).contains(&self.session_ttl_seconds) {
            return Err(ConfigError::Invalid {
                key: "session_ttl_seconds",
                message: format!("must be from 1 to {} seconds", crate::model::strict::MAX_SECONDS),
            });
        }
        if self.gpu.time_slicing_replicas == 0 {
            return Err(ConfigError::Invalid {
                key: "gpu.time_slicing_replicas",
                message: "must be at least 1".into(),
            });
        }
        if self.workloads.gc_interval_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "workloads.gc_interval_seconds",
                message: "must be at least 1".into(),
            });
        }
        if self.gpu.refresh_seconds == 0 {
            return Err(ConfigError::Invalid {
                key: "gpu.refresh_seconds",
                message: "must be at least 1".into(),
            });
        }
        let s = &self.serving;
        let windows = [
            ("serving.stable_window_seconds", s.stable_window_seconds),
            ("serving.panic_window_seconds", s.panic_window_seconds),
            ("serving.activator_timeout_seconds", s.activator_timeout_seconds),
            ("serving.readiness_timeout_seconds", s.readiness_timeout_seconds),
        ];
        let max = crate::model::strict::MAX_SECONDS as f64;
        for (key, value) in windows {
            if value.is_nan() || value <= 0.0 || value > max {
                return Err(ConfigError::Invalid {
                    key,
                    message: format!("must be a positive number of seconds, at most {max}"),
                });
            }
        }
        let grace = s.scale_to_zero_grace_seconds;
        if grace.is_nan() || !(0.0..=max).contains(&grace) {
            return Err(ConfigError::Invalid {
                key: "serving.scale_to_zero_grace_seconds",
                message: format!("must be a number of seconds from 0 to {max}"),
            });
        }
        if s.panic_window_seconds > s.stable_window_seconds {
            return Err(ConfigError::Invalid {
                key: "serving.panic_window_seconds",
                message: "must not exceed serving.stable_window_seconds".into(),
            });
        }
        if s.autoscaler_tick_ms == 0 || s.activator_queue == 0 {
            return Err(ConfigError::Invalid {
                key: "serving.autoscaler_tick_ms",
                message: "autoscaler_tick_ms and activator_queue must be at least 1".into(),
            });
        }
        if s.workers > 1024 {
            return Err(ConfigError::Invalid {
                key: "serving.workers",
                message: "must be at most 1024 (0: one per CPU)".into(),
            });
        }
        if s.s3_access_key_id.is_empty() != s.s3_secret_access_key.is_empty() {
            return Err(ConfigError::Invalid {
                key: "serving.s3_secret_access_key",
                message: "set together with serving.s3_access_key_id, or neither".into(),
            });
        }
        let endpoint = &s.s3_endpoint;
        if !endpoint.is_empty() && !endpoint.starts_with("http://") && !endpoint.starts_with("https://") {
            return Err(ConfigError::Invalid {
                key: "serving.s3_endpoint",
                message: format!("{:?} is not an http:// or https:// URL", s.s3_endpoint),
            });
        }
        if let Err(message) = self.isolation.uid_bounds() {
            return Err(ConfigError::Invalid {
                key: "isolation.uid_range",
                message,
            });
        }
        let prefix = &self.isolation.user_prefix;
        if prefix.is_empty()
            || prefix.len() > 16
            || !prefix.starts_with(|c: char| c.is_ascii_lowercase())
            || !prefix
                .chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '_')
        {
            return Err(ConfigError::Invalid {
                key: "isolation.user_prefix",
                message: format!(
                    "{prefix:?}: 1-16 characters, a lower-case letter first, then lower-case letters, digits, '-' or '_'"
                ),
            });
        }
        if let Err(e) = tracing_subscriber::EnvFilter::try_new(&self.log_level) {
            return Err(ConfigError::Invalid {
                key: "log_level",
                message: e.to_string(),
            });
        }
        Ok(())
    }
}

/// A TOML parse error as one line, `line L, column C: what` (toml's own text spans
/// several lines, with the source and a caret).
fn parse_error_line(text: &str, error: &toml::de::Error) -> String {
    let message = error.message().split_whitespace().collect::<Vec<_>>().join(" ");
    match error.span() {
        Some(span) => {
            let before = text.get(..span.start).unwrap_or(text);
            let line = before.matches('\n').count() + 1;
            let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
            format!("line {line}, column {column}: {message}")
        }
        None => message,
    }
}

fn check(tree: &toml::Value) -> Result<(), String> {
    tree.clone()
        .try_into::<Config>()
        .map(|_| ())
        .map_err(|e| e.to_string().trim().to_string())
}

/// Env and flag values are typed by how they look: `true`, `8`, else a string.
fn scalar(raw: &str) -> toml::Value {
    if let Ok(b) = raw.parse::<bool>() {
        return toml::Value::Boolean(b);
    }
    if let Ok(i) = raw.parse::<i64>() {
        return toml::Value::Integer(i);
    }
    toml::Value::String(raw.to_string())
}

fn set_key(tree: &mut toml::Value, dotted: &str, value: toml::Value) {
    let mut node = tree;
    let parts: Vec<&str> = dotted.split('.').collect();
    for (i, part) in parts.iter().enumerate() {
        let toml::Value::Table(table) = node else {
            return;
        };
        if i + 1 == parts.len() {
            table.insert(part.to_string(), value);
            return;
        }
        node = table
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
    }
}

fn merge(base: &mut toml::Value, layer: toml::Value) {
    match (base, layer) {
        (toml::Value::Table(base), toml::Value::Table(layer)) => {
            for (k, v) in layer {
                match base.get_mut(&k) {
                    Some(existing) if existing.is_table() && v.is_table() => merge(existing, v),
                    _ => {
                        base.insert(k, v);
                    }
                }
            }
        }
        (base, layer) => *base = layer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn precedence_is_file_then_env_then_flags() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "log_level = \"warn\"\nmax_body_bytes = 2048\n[gpu]\nsimulate = 1"
        )
        .unwrap();
        let env = |k: &str| match k {
            "HEARTH_MAX_BODY_BYTES" => Some("4096".to_string()),
            "HEARTH_GPU_SIMULATE" => Some("3".to_string()),
            _ => None,
        };
        let mut flags = FlagOverrides::default();
        flags.set("gpu.simulate", "--gpu-simulate", Some("5".into()));
        let loaded = load(Some(file.path()), &env, &flags).unwrap();
        assert_eq!(loaded.config.log_level, "warn");
        assert_eq!(loaded.config.max_body_bytes, 4096);
        assert_eq!(loaded.config.gpu.simulate, Some(5));
    }

    #[test]
    fn unknown_key_names_key_and_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "[gpu]\nsimulte = 2").unwrap();
        let err = load(Some(file.path()), &no_env, &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("simulte"), "{err}");
        assert!(err.contains(&file.path().display().to_string()), "{err}");
    }

    #[test]
    fn bad_env_value_names_the_variable() {
        let env = |k: &str| (k == "HEARTH_LISTEN").then(|| "not-an-address".to_string());
        let err = load(None, &env, &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("HEARTH_LISTEN"), "{err}");
    }

    #[test]
    fn a_session_lifetime_of_zero_is_refused_and_the_default_is_twelve_hours() {
        assert_eq!(Config::default().session_ttl_seconds, 12 * 3600);
        let env = |k: &str| (k == "HEARTH_SESSION_TTL_SECONDS").then(|| "0".to_string());
        let err = load(None, &env, &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("session_ttl_seconds"), "{err}");
    }

    #[test]
    fn bad_value_is_refused() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(file, "runtime = \"podman\"").unwrap();
        let err = load(Some(file.path()), &no_env, &FlagOverrides::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("runtime") || err.contains("podman"), "{err}");
    }

    #[test]
    fn plain_http_beyond_loopback_needs_the_named_setting() {
        for (var, value) in [
            ("HEARTH_LISTEN", "0.0.0.0:8470"),
            ("HEARTH_SERVING_LISTEN", "[::]:8471"),
        ] {
            let env = |k: &str| (k == var).then(|| value.to_string());
            let err = load(None, &env, &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains("allow_plain_http_on_network"), "{var}: {err}");
            let allowed = |k: &str| match k {
                "HEARTH_ALLOW_PLAIN_HTTP_ON_NETWORK" => Some("true".to_string()),
                k if k == var => Some(value.to_string()),
                _ => None,
            };
            load(None, &allowed, &FlagOverrides::default()).unwrap();
        }
        let ok = |k: &str| (k == "HEARTH_LISTEN").then(|| "[::1]:8470".to_string());
        load(None, &ok, &FlagOverrides::default()).unwrap();
    }

    #[test]
    fn isolation_settings_are_checked() {
        for (var, value) in [
            ("HEARTH_ISOLATION_UID_RANGE", "0-99"),
            ("HEARTH_ISOLATION_UID_RANGE", "30000-20000"),
            ("HEARTH_ISOLATION_UID_RANGE", "20000"),
            ("HEARTH_ISOLATION_USER_PREFIX", "Root/"),
        ] {
            let env = |k: &str| (k == var).then(|| value.to_string());
            let err = load(None, &env, &FlagOverrides::default())
                .unwrap_err()
                .to_string();
            let key = format!(
                "isolation.{}",
                var.trim_start_matches("HEARTH_ISOLATION_").to_lowercase()
            );
            assert!(err.contains(&key), "{var}={value}: {err}");
        }
        let mut file = tempfile::NamedTempFile::new().unwrap();
        writeln!(
            file,
            "[isolation]\nuid_range = \"30000-30099\"\naccounts = {{ alice = \"alice\" }}\nprivileged_namespaces = [\"ops\"]"
        )
        .unwrap();
        let loaded = load(Some(file.path()), &no_env, &FlagOverrides::default()).unwrap();
        assert_eq!(loaded.config.isolation.uid_bounds(), Ok((30000, 30099)));
        assert_eq!(loaded.config.isolation.accounts["alice"], "alice");
    }

    /// The README's configuration table is the user's reference: a setting missing
    /// from it is a setting nobody finds.
    #[test]
    fn every_setting_is_in_the_readme() {
        let readme = include_str!("../../README.md");
        for key in SETTINGS {
            let env = env_name(key);
            // Rows that pair two settings abbreviate the second as `..._TAIL`.
            let section = key.split_once('.').map(|(s, _)| s.to_uppercase());
            let abbreviated = section.and_then(|s| {
                env.strip_prefix(&format!("HEARTH_{s}"))
                    .map(|tail| format!("`...{tail}`"))
            });
            let found =
                readme.contains(&format!("`{env}`")) || abbreviated.is_some_and(|a| readme.contains(&a));
            assert!(found, "README's configuration table lacks {key} ({env})");
        }
    }
}
