//! `hearth login`, `hearth kubeconfig` (from the server), `hearth token ...` and
//! `hearth user create`: the `/hearth/v1` access endpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{config_dir, config_path, Client, LoginConfig};
use super::trust::{self, TlsFlags, Trust};
use super::{field, print_data, print_table, CliError, OutputFlag};

#[derive(Args)]
pub struct LoginArgs {
    /// The API's URL: `http://127.0.0.1:8470` on the daemon's host, its https://
    /// address from elsewhere (e.g. `https://gpu-box:8472`) [default: the server of
    /// --from-kubeconfig]
    #[arg(required_unless_present = "from_kubeconfig")]
    pub url: Option<String>,
    /// The bearer token (an admin's is in `<data-dir>/admin.token`) [default: the
    /// token of --from-kubeconfig]
    #[arg(long, env = "HEARTH_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Take the server, its CA and the token from a kubeconfig Hearth wrote
    /// (`<data-dir>/kubeconfig`, or `hearth kubeconfig`'s output handed to you).
    #[arg(long, value_name = "FILE")]
    pub from_kubeconfig: Option<PathBuf>,
    /// Where to write the kubeconfig [default: `$XDG_CONFIG_HOME/hearth/kubeconfig`].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
    #[command(flatten)]
    pub tls: TlsFlags,
}

/// Verifies the token against the server, then writes the CLI config and a kubeconfig
/// (both mode 0600). Over https the trust used (a CA, or explicitly none) is stored
/// with the login and written into the kubeconfig.
pub fn login(args: &LoginArgs) -> Result<ExitCode, CliError> {
    let from = match &args.from_kubeconfig {
        Some(path) => trust::read_kubeconfig(path)?,
        None => trust::FromKubeconfig::default(),
    };
    let url = args
        .url
        .clone()
        .or(from.server)
        .ok_or_else(|| CliError::Input("the kubeconfig names no server: give the URL".into()))?;
    let token = args
        .token
        .clone()
        .or(from.token)
        .ok_or_else(|| CliError::Input("give the token with --token or HEARTH_TOKEN".into()))?;
    let trust = args.tls.trust()?.or(from.trust).unwrap_or(Trust::System);
    let client = Client::new(&url, &token, trust)?;
    let me = client.get("/hearth/v1/whoami")?;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .map_or_else(|| config_dir().map(|d| d.join("kubeconfig")), Ok)?;
    let text = render_kubeconfig(&client, &me)?;
    write_private(&kubeconfig, &text)?;
    let path = config_path()?;
    let (certificate_authority, insecure_skip_tls_verify) = match (is_https(&client), client.trust()) {
        (true, Trust::Ca(pem)) => (Some(pem.clone()), false),
        (true, Trust::Insecure) => (None, true),
        _ => (None, false),
    };
    LoginConfig {
        url: client.base().to_string(),
        token: client.token().to_string(),
        kubeconfig: Some(kubeconfig.clone()),
        certificate_authority,
        insecure_skip_tls_verify,
    }
    .write(&path)?;
    println!(
        "Logged in to {} as {}{}.",
        client.base(),
        field(&me, "user"),
        if me["admin"] == true { " (admin)" } else { "" }
    );
    println!("CLI config: {}", path.display());
    println!(
        "kubeconfig: {} (export KUBECONFIG={})",
        kubeconfig.display(),
        kubeconfig.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// Prints a kubeconfig for the current login's token, from the server's address and CA.
pub fn kubeconfig(tls: &TlsFlags) -> Result<ExitCode, CliError> {
    let client = Client::from_environment(tls)?;
    let me = client.get("/hearth/v1/whoami")?;
    print!("{}", render_kubeconfig(&client, &me)?);
    Ok(ExitCode::SUCCESS)
}

fn is_https(client: &Client) -> bool {
    client.base().starts_with("https://")
}

/// Over `http://` (the daemon's host): its TLS listener on the host the CLI reached,
/// with the CA the server reports. Over `https://`: the URL the CLI reached (the TLS
/// listener serves the Kubernetes API too), with the trust the CLI used.
fn render_kubeconfig(client: &Client, me: &Value) -> Result<String, CliError> {
    let (server, ca_pem, insecure) = if is_https(client) {
        match client.trust() {
            Trust::Ca(pem) => (client.base().to_string(), pem.clone(), false),
            Trust::Insecure => (client.base().to_string(), String::new(), true),
            Trust::System => (client.base().to_string(), String::new(), false),
        }
    } else {
        let cluster = client.get("/hearth/v1/cluster")?;
        let port = cluster["tls_port"]
            .as_u64()
            .ok_or_else(|| CliError::Output("the server did not say its TLS port".into()))?;
        let host = url::Url::parse(client.base())
            .ok()
            .and_then(|u| u.host_str().map(str::to_string))
            .unwrap_or_else(|| "127.0.0.1".into());
        let ca = cluster["certificate_authority"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        (format!("https://{host}:{port}"), ca, false)
    };
    let user = field(me, "user");
    crate::kubeconfig::Kubeconfig {
        server: &server,
        ca_pem: &ca_pem,
        insecure_skip_tls_verify: insecure,
        user: &user,
        token: client.token(),
        namespace: &user,
    }
    .render()
    .map_err(|e| CliError::Output(e.to_string()))
}

fn write_private(path: &std::path::Path, text: &str) -> Result<(), CliError> {
    let io = |source| CliError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    crate::auth::write_private_file(path, text).map_err(io)
}

#[derive(Subcommand)]
pub enum TokenCommand {
    /// Create a token for yourself; prints it once.
    Create {
        name: String,
        /// Lifetime in seconds [default: no expiry].
        #[arg(long)]
        expires_in_seconds: Option<u64>,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// List your tokens (names and dates; secrets are never shown). `--all-users`: every
    /// user's (admins only).
    List {
        /// Every user's tokens, not only yours (admins only; others get HTTP 403).
        #[arg(short = 'A', long)]
        all_users: bool,
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

pub fn token(tls: &TlsFlags, command: &TokenCommand) -> Result<ExitCode, CliError> {
    let client = Client::from_environment(tls)?;
    match command {
        TokenCommand::Create {
            name,
            expires_in_seconds,
            output,
        } => {
            let mut body = json!({"name": name});
            if let Some(seconds) = expires_in_seconds {
                body["expires_in_seconds"] = json!(seconds);
            }
            let created = client.post("/hearth/v1/tokens", &body)?;
            if !print_data(output.output, &created)? {
                println!("{}", field(&created, "token"));
            }
        }
        TokenCommand::List { all_users, output } => {
            let path = if *all_users {
                "/hearth/v1/tokens?all_users=true"
            } else {
                "/hearth/v1/tokens"
            };
            let list = client.get(path)?;
            if !print_data(output.output, &list)? {
                let rows: Vec<Vec<String>> = items(&list)
                    .iter()
                    .map(|t| {
                        vec![
                            field(t, "name"),
                            field(t, "user"),
                            field(t, "created_at"),
                            field(t, "expires_at"),
                        ]
                    })
                    .collect();
                print_table(&["NAME", "USER", "CREATED", "EXPIRES"], &rows);
            }
        }
        TokenCommand::Revoke { name } => {
            client.delete(&format!("/hearth/v1/tokens/{}", segment(name)))?;
            println!("token {name} revoked");
        }
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Subcommand)]
pub enum UserCommand {
    /// Create a user (admins only) with its namespace and a first token, printed once.
    Create {
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        #[command(flatten)]
        output: OutputFlag,
    },
}

pub fn user(tls: &TlsFlags, command: &UserCommand) -> Result<ExitCode, CliError> {
    let client = Client::from_environment(tls)?;
    match command {
        UserCommand::Create { name, admin, output } => {
            let created = client.post("/hearth/v1/users", &json!({"name": name, "admin": admin}))?;
            if !print_data(output.output, &created)? {
                println!(
                    "user {} created (namespace {})",
                    field(&created, "name"),
                    field(&created, "namespace")
                );
                println!("token: {}", field(&created["token"], "token"));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn items(list: &Value) -> Vec<Value> {
    list["items"].as_array().cloned().unwrap_or_default()
}

/// A name as one URL path segment.
pub fn segment(name: &str) -> String {
    percent_encoding::utf8_percent_encode(name, percent_encoding::NON_ALPHANUMERIC).to_string()
}
