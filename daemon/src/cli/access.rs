//! `hearth login`, `hearth kubeconfig` (from the server), `hearth token ...` and
//! `hearth user create`: the `/hearth/v1` access endpoints.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use super::client::{config_dir, config_path, Client, LoginConfig};
use super::{field, print_data, print_table, CliError, OutputFlag};

#[derive(Args)]
pub struct LoginArgs {
    /// The HTTP API's URL, e.g. `http://127.0.0.1:8470`.
    pub url: String,
    /// The bearer token (an admin's is in `<data-dir>/admin.token`).
    #[arg(long, env = "HEARTH_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Where to write the kubeconfig [default: `$XDG_CONFIG_HOME/hearth/kubeconfig`].
    #[arg(long)]
    pub kubeconfig: Option<PathBuf>,
}

/// Verifies the token against the server, then writes the CLI config and a kubeconfig
/// (both mode 0600).
pub fn login(args: &LoginArgs) -> Result<ExitCode, CliError> {
    let client = Client::new(&args.url, &args.token)?;
    let me = client.get("/hearth/v1/whoami")?;
    let kubeconfig = args
        .kubeconfig
        .clone()
        .map_or_else(|| config_dir().map(|d| d.join("kubeconfig")), Ok)?;
    let text = render_kubeconfig(&client, &me)?;
    write_private(&kubeconfig, &text)?;
    let path = config_path()?;
    LoginConfig {
        url: client.base().to_string(),
        token: client.token().to_string(),
        kubeconfig: Some(kubeconfig.clone()),
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
pub fn kubeconfig() -> Result<ExitCode, CliError> {
    let client = Client::from_environment()?;
    let me = client.get("/hearth/v1/whoami")?;
    print!("{}", render_kubeconfig(&client, &me)?);
    Ok(ExitCode::SUCCESS)
}

fn render_kubeconfig(client: &Client, me: &Value) -> Result<String, CliError> {
    let cluster = client.get("/hearth/v1/cluster")?;
    let port = cluster["tls_port"]
        .as_u64()
        .ok_or_else(|| CliError::Output("the server did not say its TLS port".into()))?;
    // The HTTPS listener on the host the CLI reached, so a remote login works when
    // the daemon listens beyond loopback.
    let host = url::Url::parse(client.base())
        .ok()
        .and_then(|u| u.host_str().map(str::to_string))
        .unwrap_or_else(|| "127.0.0.1".into());
    let server = format!("https://{host}:{port}");
    let user = field(me, "user");
    crate::kubeconfig::Kubeconfig {
        server: &server,
        ca_pem: cluster["certificate_authority"].as_str().unwrap_or_default(),
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
    /// List your tokens (an admin sees everyone's).
    List {
        #[command(flatten)]
        output: OutputFlag,
    },
    /// Revoke a token by name.
    Revoke { name: String },
}

pub fn token(command: &TokenCommand) -> Result<ExitCode, CliError> {
    let client = Client::from_environment()?;
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
        TokenCommand::List { output } => {
            let list = client.get("/hearth/v1/tokens")?;
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

pub fn user(command: &UserCommand) -> Result<ExitCode, CliError> {
    let client = Client::from_environment()?;
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
