//! `hearth`: the daemon and its command line.

mod auth;
mod cli;
mod clock;
mod config;
mod controller;
mod gpu;
mod health;
mod http;
mod jobs;
mod kube;
mod kubeconfig;
mod metrics;
mod model;
mod node;
mod notebooks;
mod pipelines;
mod runtime;
mod scheduler;
mod serve;
mod serving;
mod store;
mod systemd;
mod tls;
mod tuning;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

use config::{FlagOverrides, RuntimeKind};

#[derive(Parser)]
#[command(
    name = "hearth",
    version,
    about = "A small MLOps platform for one GPU workstation"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon.
    Serve(ConfigFlags),
    /// Print the OpenAPI document of the HTTP API.
    Openapi,
    /// Supervise one workload (started by the daemon; not for direct use).
    #[command(hide = true)]
    Shim { dir: PathBuf },
    /// Print a kubeconfig for a token (its user's namespace as the context's). With
    /// `--token`/`--token-file` it reads the CA and database of the data dir (on the
    /// daemon's host); without, it asks the server the login points at.
    Kubeconfig(KubeconfigFlags),
    /// Check a URL and token against the server, then save them for the other commands
    /// and write a kubeconfig.
    Login(cli::access::LoginArgs),
    /// Run a compiled KFP pipeline; `--wait` follows its tasks and exits non-zero when
    /// it fails.
    Run(cli::run::RunArgs),
    /// GPUs (utilization, memory, who holds each) and the queue (why each waits).
    Top(cli::top::TopArgs),
    /// Create, list and revoke API tokens.
    Token {
        #[command(flatten)]
        tls: cli::trust::TlsFlags,
        #[command(subcommand)]
        command: cli::access::TokenCommand,
    },
    /// Create users (admins only).
    User {
        #[command(flatten)]
        tls: cli::trust::TlsFlags,
        #[command(subcommand)]
        command: cli::access::UserCommand,
    },
    /// Print a shell completion script: `hearth completion bash > /etc/bash_completion.d/hearth`.
    Completion {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Benchmark the native search algorithms in process, no daemon (`scripts/bench`
    /// runs it beside Optuna): best regret per seed, or suggestion times, as JSON.
    #[command(hide = true, name = "search-bench")]
    SearchBench {
        #[arg(long)]
        algorithm: String,
        /// branin, hartmann6 or rosenbrock10 [default: all three]
        #[arg(long)]
        function: Option<String>,
        #[arg(long, default_value_t = 50)]
        trials: u64,
        #[arg(long, default_value_t = 20)]
        seeds: u64,
        /// Time one suggestion after this many finished trials (`seeds` times).
        #[arg(long)]
        latency_after: Option<u64>,
    },
    /// Inspect the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
}

#[derive(Subcommand)]
enum ConfigCommand {
    /// Print the effective configuration (defaults < file < HEARTH_* env < flags) as TOML.
    Show(ConfigFlags),
    /// Print the workload runtimes this build provides (values for `runtime`), one a line.
    Runtimes,
}

#[derive(Args, Clone)]
struct ConfigFlags {
    /// Config file [default: /etc/hearth/config.toml when it exists]
    #[arg(long)]
    config: Option<PathBuf>,
    /// API address [default: 127.0.0.1:8470]
    #[arg(long)]
    listen: Option<String>,
    /// Serving data-plane address [default: 127.0.0.1:8471]
    #[arg(long)]
    serving_listen: Option<String>,
    /// HTTPS API address, for kubectl and other Kubernetes clients [default: 127.0.0.1:8472]
    #[arg(long)]
    tls_listen: Option<String>,
    /// Data directory [default: /var/lib/hearth as root, else $XDG_DATA_HOME/hearth]
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Workload runtime [default: process]
    #[arg(long, value_enum)]
    runtime: Option<RuntimeKind>,
    /// Log filter, e.g. `info` or `hearth=debug` [default: info]
    #[arg(long)]
    log_level: Option<String>,
}

impl ConfigFlags {
    fn overrides(&self) -> FlagOverrides {
        let mut flags = FlagOverrides::default();
        flags.set("listen", "--listen", self.listen.clone());
        flags.set("serving_listen", "--serving-listen", self.serving_listen.clone());
        flags.set("tls_listen", "--tls-listen", self.tls_listen.clone());
        flags.set(
            "data_dir",
            "--data-dir",
            self.data_dir.as_ref().map(|p| p.display().to_string()),
        );
        flags.set(
            "runtime",
            "--runtime",
            self.runtime.map(|r| r.as_str().to_string()),
        );
        flags.set("log_level", "--log-level", self.log_level.clone());
        flags
    }

    fn load(&self) -> Result<config::Loaded, config::ConfigError> {
        config::load(
            self.config.as_deref(),
            &|name| std::env::var(name).ok(),
            &self.overrides(),
        )
    }
}

#[derive(Args)]
struct KubeconfigFlags {
    #[command(flatten)]
    config: ConfigFlags,
    /// The bearer token to put in it.
    #[arg(
        long,
        env = "HEARTH_TOKEN",
        hide_env_values = true,
        conflicts_with = "token_file"
    )]
    token: Option<String>,
    /// A file holding the token (e.g. `<data-dir>/admin.token`).
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// The API's HTTPS URL as the token's holder reaches it [default: the running
    /// daemon's TLS address, else `tls_listen`, on this host]
    #[arg(long)]
    server: Option<String>,
    /// The context's namespace [default: the token's user's own]
    #[arg(long)]
    namespace: Option<String>,
    /// TLS for asking the server (without a data dir).
    #[command(flatten)]
    tls: cli::trust::TlsFlags,
}

impl KubeconfigFlags {
    /// No data-dir flag, and no token unless `HEARTH_URL` is set: ask the server
    /// `hearth login` (or `HEARTH_URL`) points at.
    fn is_remote(&self) -> bool {
        let url_set = std::env::var_os("HEARTH_URL").is_some_and(|u| !u.is_empty());
        let local = (self.token.is_some() && !url_set)
            || self.token_file.is_some()
            || self.config.config.is_some()
            || self.config.data_dir.is_some()
            || self.server.is_some()
            || self.namespace.is_some();
        !local
    }
}

fn print_kubeconfig(flags: &KubeconfigFlags) -> Result<(), String> {
    let config = flags.config.load().map_err(|e| e.to_string())?.config;
    let token = match (&flags.token, &flags.token_file) {
        (Some(token), _) => token.trim().to_string(),
        (None, Some(file)) => std::fs::read_to_string(file)
            .map_err(|e| format!("--token-file {}: {e}", file.display()))?
            .trim()
            .to_string(),
        (None, None) => return Err("give the token with --token, --token-file or HEARTH_TOKEN".into()),
    };
    let user = kubeconfig::token_user(&config.data_dir, &token).map_err(|e| e.to_string())?;
    let ca_path = tls::dir(&config.data_dir).join("ca.crt");
    let ca_pem = std::fs::read_to_string(&ca_path).map_err(|e| {
        format!(
            "{}: {e} (start the daemon once to make its CA)",
            ca_path.display()
        )
    })?;
    let server = match &flags.server {
        Some(server) if server.starts_with("https://") => server.clone(),
        Some(server) => return Err(format!("--server {server:?}: must be an https:// URL")),
        None => {
            let running = std::fs::read_to_string(config.data_dir.join("hearth.addr"))
                .ok()
                .and_then(|text| serde_json::from_str::<serde_json::Value>(&text).ok())
                .and_then(|addr| addr["tls"].as_str().and_then(|a| a.parse().ok()));
            kubeconfig::server_url(running.unwrap_or(config.tls_listen))
        }
    };
    let namespace = flags.namespace.clone().unwrap_or_else(|| user.clone());
    auth::validate_dns_label("--namespace", &namespace).map_err(|e| e.to_string())?;
    let text = kubeconfig::Kubeconfig {
        server: &server,
        ca_pem: &ca_pem,
        insecure_skip_tls_verify: false,
        user: &user,
        token: &token,
        namespace: &namespace,
    }
    .render()
    .map_err(|e| e.to_string())?;
    print!("{text}");
    Ok(())
}

/// The command line as completions offer it: without the hidden subcommands (`shim`,
/// `search-bench`), which clap_complete would otherwise list, in `help`'s too.
fn completion_command() -> clap::Command {
    let full = Cli::command();
    let visible: Vec<clap::Command> = full
        .get_subcommands()
        .filter(|c| !c.is_hide_set())
        .cloned()
        .collect();
    let mut command = clap::Command::new("hearth")
        .version(env!("CARGO_PKG_VERSION"))
        .subcommand_required(true)
        .subcommands(visible);
    if let Some(about) = full.get_about() {
        command = command.about(about.clone());
    }
    command
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    // Under systemd the journal adds its own timestamps.
    let under_systemd = std::env::var_os("JOURNAL_STREAM").is_some();
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    if under_systemd {
        builder.without_time().init();
    } else {
        builder.init();
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if !matches!(cli.command, Command::Serve(..) | Command::Shim { .. }) {
        // A command whose output is piped into `head` ends quietly when the reader goes,
        // as other command-line tools do, instead of panicking on a broken pipe. The
        // daemon and the shim keep Rust's default (SIGPIPE ignored): a client that goes
        // away must never kill them.
        // SAFETY: set before any thread starts; SIG_DFL is a valid disposition.
        unsafe {
            libc::signal(libc::SIGPIPE, libc::SIG_DFL);
        }
    }
    match cli.command {
        Command::Shim { dir } => runtime::shim::main(&dir),
        Command::Openapi => {
            print!("{}", http::openapi::to_pretty_json(&http::openapi::document()));
            ExitCode::SUCCESS
        }
        Command::Login(args) => cli::finish("login", cli::access::login(&args)),
        Command::Run(args) => cli::finish("run", cli::run::run(&args)),
        Command::Top(args) => cli::finish("top", cli::top::top(&args)),
        Command::Token { tls, command } => cli::finish("token", cli::access::token(&tls, &command)),
        Command::User { tls, command } => cli::finish("user", cli::access::user(&tls, &command)),
        Command::Completion { shell } => {
            clap_complete::generate(shell, &mut completion_command(), "hearth", &mut std::io::stdout());
            ExitCode::SUCCESS
        }
        Command::Kubeconfig(flags) if flags.is_remote() => {
            cli::finish("kubeconfig", cli::access::kubeconfig(&flags.tls))
        }
        Command::SearchBench {
            algorithm,
            function,
            trials,
            seeds,
            latency_after,
        } => match tuning::benchmark::main(&algorithm, function.as_deref(), trials, seeds, latency_after) {
            Ok(report) => {
                println!("{report}");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("hearth search-bench: {e}");
                ExitCode::from(2)
            }
        },
        Command::Kubeconfig(flags) => match print_kubeconfig(&flags) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("hearth kubeconfig: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Config {
            command: ConfigCommand::Runtimes,
        } => {
            for runtime in RuntimeKind::available() {
                println!("{}", runtime.as_str());
            }
            ExitCode::SUCCESS
        }
        Command::Config {
            command: ConfigCommand::Show(flags),
        } => match flags.load() {
            Ok(loaded) => {
                if let Some(file) = &loaded.file {
                    println!("# file: {}", file.display());
                }
                match toml::to_string_pretty(&loaded.config.redacted()) {
                    Ok(text) => {
                        print!("{text}");
                        ExitCode::SUCCESS
                    }
                    Err(e) => {
                        eprintln!("hearth: cannot print the config: {e}");
                        ExitCode::FAILURE
                    }
                }
            }
            Err(e) => {
                eprintln!("hearth config show: {e}");
                ExitCode::FAILURE
            }
        },
        Command::Serve(flags) => {
            let loaded = match flags.load() {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("hearth serve: {e}");
                    return ExitCode::FAILURE;
                }
            };
            init_logging(&loaded.config.log_level);
            match serve::run(loaded.config) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    tracing::error!("{e}");
                    eprintln!("hearth: {e}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
