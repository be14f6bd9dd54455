//! `hearth`: the daemon and its command line.

mod auth;
mod clock;
mod config;
mod controller;
mod gpu;
mod health;
mod http;
mod jobs;
mod kube;
mod metrics;
mod model;
mod node;
mod pipelines;
mod runtime;
mod scheduler;
mod serve;
mod serving;
mod store;
mod systemd;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

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
    match cli.command {
        Command::Shim { dir } => runtime::shim::main(&dir),
        Command::Openapi => {
            print!("{}", http::openapi::to_pretty_json(&http::openapi::document()));
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
                eprintln!("hearth: {e}");
                ExitCode::from(2)
            }
        },
        Command::Serve(flags) => {
            let loaded = match flags.load() {
                Ok(loaded) => loaded,
                Err(e) => {
                    eprintln!("hearth: {e}");
                    return ExitCode::from(2);
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
