//! The `hearth` CLI against a spawned daemon: `login` writes a config and a kubeconfig
//! the real kubectl uses; `run --wait` of a compiled pipeline exits 0 when it succeeds
//! and 1 when it fails; `top` shows simulated GPUs, who holds them and why the queue
//! waits; tokens round trip; a bad file or a server error is one line and exit 1.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use hearth_e2e::{hearth_command, kubectl, spawn_daemon_with, Daemon, Options};
use serde_json::Value;

const DURABLE: &str = include_str!("../fixtures/pipelines/durable.yaml");

/// A step that exits 3: the run must end FAILED.
const FAILING: &str = r#"
pipelineInfo: {name: failing}
schemaVersion: 2.1.0
components:
  comp-fail: {executorLabel: exec-fail}
deploymentSpec:
  executors:
    exec-fail:
      container: {image: alpine:3.23, command: [sh, -c, 'echo no; exit 3']}
root:
  dag:
    tasks:
      fail:
        taskInfo: {name: fail}
        componentRef: {name: comp-fail}
"#;

fn daemon(config: &str) -> Daemon {
    spawn_daemon_with(Options::default().config(&format!("[jobs]\nbackoff_base_seconds = 0.1\n{config}")))
}

/// `hearth ARGS` with its own config dir (so a login lands there), no HEARTH_* env.
fn cli(config_home: &Path, args: &[&str]) -> Command {
    let mut cmd = hearth_command();
    cmd.env("XDG_CONFIG_HOME", config_home)
        .env("HOME", config_home)
        .args(args)
        .stdin(Stdio::null());
    cmd
}

/// `hearth ARGS` pointed at `d` by HEARTH_URL and HEARTH_TOKEN, as a script would.
fn cli_env(d: &Daemon, token: &str, config_home: &Path, args: &[&str]) -> Command {
    let mut cmd = cli(config_home, args);
    cmd.env("HEARTH_URL", d.api_url()).env("HEARTH_TOKEN", token);
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn ok(cmd: &mut Command) -> String {
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    String::from_utf8(out.stdout).unwrap()
}

/// The failure shape every CLI error has: exit 1, one line on stderr naming `needle`.
fn fails_with_one_line(cmd: &mut Command, needle: &str) {
    let out = cmd.output().unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim_end().lines().count(), 1, "{}", text(&out));
    assert!(stderr.contains(needle), "wanted {needle:?}: {}", text(&out));
}

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn login_writes_a_kubeconfig_kubectl_uses_and_tokens_round_trip() {
    let d = daemon("");
    let admin = d.admin().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();

    // A wrong token is refused before anything is written.
    fails_with_one_line(
        &mut cli(conf, &["login", &d.api_url(), "--token", "hth_wrong"]),
        "HTTP 401",
    );
    assert!(!conf.join("hearth/cli.toml").exists());

    let said = ok(&mut cli(conf, &["login", &d.api_url(), "--token", &admin]));
    assert!(said.contains("as admin"), "{said}");
    let saved = conf.join("hearth/cli.toml");
    let kubeconfig = conf.join("hearth/kubeconfig");
    assert_eq!(mode(&saved), 0o600);
    assert_eq!(mode(&kubeconfig), 0o600);
    // `hearth kubeconfig` asks the server the login names: the same document.
    let printed = ok(&mut cli(conf, &["kubeconfig"]));
    assert_eq!(printed, std::fs::read_to_string(&kubeconfig).unwrap());

    if let Some(bin) = kubectl() {
        let kube_home = tempfile::tempdir().unwrap();
        let out = Command::new(bin)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["get", "namespaces", "-o", "name"])
            .env_remove("KUBECONFIG")
            .env("HOME", kube_home.path())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("namespace/admin"),
            "{}",
            text(&out)
        );
    }

    // Tokens, through the saved login (no env).
    let token = ok(&mut cli(conf, &["token", "create", "ci-bot"]))
        .trim()
        .to_string();
    assert!(token.starts_with("hth_"), "{token}");
    let listed: Value = serde_json::from_str(&ok(&mut cli(conf, &["token", "list", "-o", "json"]))).unwrap();
    let names: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].as_str().unwrap())
        .collect();
    assert!(names.contains(&"ci-bot"), "{listed}");
    let table = ok(&mut cli(conf, &["token", "list"]));
    assert!(table.starts_with("NAME"), "{table}");
    assert!(table.contains("ci-bot"), "{table}");
    let yaml: Value = serde_yaml_ng::from_str(&ok(&mut cli(conf, &["token", "list", "-o", "yaml"]))).unwrap();
    assert_eq!(yaml, listed);
    // The new token works until revoked.
    assert_eq!(d.get("/hearth/v1/whoami", Some(&token)).status, 200);
    ok(&mut cli(conf, &["token", "revoke", "ci-bot"]));
    assert_eq!(d.get("/hearth/v1/whoami", Some(&token)).status, 401);
    fails_with_one_line(&mut cli(conf, &["token", "revoke", "ci-bot"]), "HTTP 404");

    // A user, and its token logs in elsewhere with its own namespace.
    let created: Value =
        serde_json::from_str(&ok(&mut cli(conf, &["user", "create", "alice", "-o", "json"]))).unwrap();
    assert_eq!(created["namespace"], "alice", "{created}");
    let alice_token = created["token"]["token"].as_str().unwrap();
    let alice_home = tempfile::tempdir().unwrap();
    let said = ok(&mut cli(
        alice_home.path(),
        &["login", &d.api_url(), "--token", alice_token],
    ));
    assert!(said.contains("as alice"), "{said}");
    // Bad input is the server's 400 naming the field, as one line.
    fails_with_one_line(&mut cli(conf, &["user", "create", "Not_A_Label"]), "name");
    // Not an admin: creating users is forbidden.
    fails_with_one_line(
        &mut cli(alice_home.path(), &["user", "create", "bob"]),
        "HTTP 403",
    );
    // No login at all says how to log in.
    let empty = tempfile::tempdir().unwrap();
    fails_with_one_line(&mut cli(empty.path(), &["token", "list"]), "hearth login");
}

fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn run_waits_and_its_exit_code_says_how_the_run_ended() {
    let d = daemon("");
    let admin = d.admin().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();
    let good = write(conf, "durable.yaml", DURABLE);
    let bad = write(conf, "failing.yaml", FAILING);
    let marker = conf.join("marker.txt");
    let param = format!("marker={}", marker.display());

    let out = cli_env(
        &d,
        &admin,
        conf,
        &[
            "run",
            good.to_str().unwrap(),
            "-p",
            &param,
            "--experiment",
            "cli-tests",
            "--wait",
        ],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("SUCCEEDED"), "{}", text(&out));
    // The tasks' states were followed as they changed.
    let stderr = String::from_utf8_lossy(&out.stderr);
    for task in ["one: SUCCEEDED", "two: RUNNING", "three: SUCCEEDED"] {
        assert!(stderr.contains(task), "wanted {task:?}: {}", text(&out));
    }
    assert_eq!(std::fs::read_to_string(&marker).unwrap(), "one\ntwo\nhello two\n");
    // The run is in the named experiment.
    let experiments = d.get("/apis/v2beta1/experiments", Some(&admin));
    let experiment = experiments.body["experiments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["display_name"] == "cli-tests")
        .unwrap_or_else(|| panic!("{experiments}"))
        .clone();
    let runs = d.get(
        &format!(
            "/apis/v2beta1/runs?experiment_id={}",
            experiment["experiment_id"].as_str().unwrap()
        ),
        Some(&admin),
    );
    assert_eq!(runs.body["runs"].as_array().map(Vec::len), Some(1), "{runs}");

    let out = cli_env(
        &d,
        &admin,
        conf,
        &["run", bad.to_str().unwrap(), "--wait", "-o", "json"],
    )
    .output()
    .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let run: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(run["state"], "FAILED", "{run}");

    // Without --wait it creates the run and says its id.
    let said = ok(&mut cli_env(&d, &admin, conf, &["run", bad.to_str().unwrap()]));
    assert!(said.starts_with("run ") && said.contains("created"), "{said}");

    // A file that is no pipeline, one that is not there, a parameter of the wrong type,
    // and the server's refusal of an unknown parameter: one line each, exit 1.
    let junk = write(conf, "junk.yaml", "just: [text\n");
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["run", junk.to_str().unwrap()]),
        "junk.yaml",
    );
    let other = write(conf, "other.yaml", "apiVersion: v1\nkind: ConfigMap\n");
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["run", other.to_str().unwrap()]),
        "not a compiled KFP pipeline",
    );
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["run", "/nonexistent/p.yaml"]),
        "/nonexistent/p.yaml",
    );
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["run", good.to_str().unwrap(), "-p", "nope=1"]),
        "runtime_config.parameters.nope",
    );
    // A daemon that is not there.
    let mut gone = cli(conf, &["run", good.to_str().unwrap()]);
    gone.env("HEARTH_URL", "http://127.0.0.1:9")
        .env("HEARTH_TOKEN", &admin);
    fails_with_one_line(&mut gone, "cannot reach http://127.0.0.1:9");
}

fn gpu_job(name: &str, gpus: u32) -> String {
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 1
      containers:
      - name: main
        image: busybox
        command: ['sh', '-c', 'sleep 30']
        resources:
          limits:
            nvidia.com/gpu: {gpus}
"
    )
}

#[test]
fn top_shows_simulated_gpus_who_holds_them_and_why_the_queue_waits() {
    let d = daemon("[gpu]\nsimulate = 2\n");
    let admin = d.admin().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();
    let jobs = "/apis/batch/v1/namespaces/admin/jobs";
    for (name, gpus) in [("holder", 2), ("waiter", 1)] {
        let r = d.post_yaml(jobs, Some(&admin), &gpu_job(name, gpus));
        assert_eq!(r.status, 201, "{r}");
    }
    d.wait_until("/hearth/v1/queue", Duration::from_secs(15), |r| {
        r.body["running"] == 1 && r.body["queued"] == 1
    });

    let table = ok(&mut cli_env(&d, &admin, conf, &["top"]));
    assert!(table.contains("GPUs: 2 (simulated"), "{table}");
    let gpu_rows: Vec<&str> = table.lines().filter(|l| l.contains("Simulated GPU")).collect();
    assert_eq!(gpu_rows.len(), 2, "{table}");
    for row in &gpu_rows {
        assert!(row.contains("yes") && row.contains("admin/holder"), "{table}");
    }
    assert!(
        table.contains("Queue: 1 running, 1 waiting; GPUs 2/2 in use"),
        "{table}"
    );
    let waiter = table
        .lines()
        .find(|l| l.contains("admin/waiter"))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        waiter.to_lowercase().contains("gpu"),
        "the reason names the GPUs: {table}"
    );

    let data: Value =
        serde_json::from_str(&ok(&mut cli_env(&d, &admin, conf, &["top", "-o", "json"]))).unwrap();
    assert_eq!(data["gpus"]["simulated"], true, "{data}");
    assert_eq!(
        data["gpus"]["devices"].as_array().map(Vec::len),
        Some(2),
        "{data}"
    );
    assert_eq!(data["queue"]["queued"], 1, "{data}");
}

#[test]
fn completions_for_each_shell() {
    for (shell, marker) in [
        ("bash", "complete -F"),
        ("zsh", "#compdef hearth"),
        ("fish", "complete -c hearth"),
    ] {
        let out = ok(hearth_command().args(["completion", shell]));
        assert!(out.contains(marker), "{shell}: {out}");
        assert!(out.contains("login") && out.contains("top"), "{shell}");
        // The hidden subcommands are not offered, not even under `help`.
        for hidden in ["shim", "search-bench"] {
            assert!(!out.contains(hidden), "{shell} offers {hidden}");
        }
    }
}

/// `hearth kubectl ARGS` with only `kubeconfig`; false when kubectl is not installed
/// (outside CI only, see `hearth_e2e::kubectl`).
fn kubectl_ok(kubeconfig: &Path, args: &[&str]) -> Option<String> {
    let bin = kubectl()?;
    let kube_home = tempfile::tempdir().unwrap();
    let out = Command::new(bin)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", kube_home.path())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    Some(String::from_utf8(out.stdout).unwrap())
}

fn yaml_file(path: &Path) -> Value {
    serde_yaml_ng::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

/// A teammate on another machine reaches the daemon's HTTPS port: the CLI verifies it
/// with Hearth's CA (a file, or the kubeconfig Hearth wrote), stores that CA with the
/// login, and writes a kubeconfig kubectl accepts. Without a CA it refuses, naming the
/// flag; skipping verification takes `--insecure-skip-tls-verify` and warns.
#[test]
fn https_login_trusts_hearths_ca_and_never_skips_verification_silently() {
    let d = daemon("");
    let admin = d.admin().unwrap().to_string();
    let tls = d.tls_url();
    let ca = d.ca_path();
    let ca = ca.to_str().unwrap();

    // No CA: the host's roots do not know Hearth's CA, so the certificate is refused.
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();
    fails_with_one_line(
        &mut cli(conf, &["login", &tls, "--token", &admin]),
        "--certificate-authority",
    );
    assert!(!conf.join("hearth/cli.toml").exists());
    // Plain HTTP to another host would carry the token in clear text: refused first.
    fails_with_one_line(
        &mut cli(conf, &["login", "http://192.0.2.1:8470", "--token", &admin]),
        "clear text",
    );
    fails_with_one_line(
        &mut cli(
            conf,
            &[
                "login",
                &tls,
                "--token",
                &admin,
                "--certificate-authority",
                ca,
                "--insecure-skip-tls-verify",
            ],
        ),
        "exclude each other",
    );
    let not_pem = write(conf, "not-a-ca.pem", "hello\n");
    fails_with_one_line(
        &mut cli(
            conf,
            &[
                "login",
                &tls,
                "--token",
                &admin,
                "--certificate-authority",
                not_pem.to_str().unwrap(),
            ],
        ),
        "not-a-ca.pem",
    );

    // With the CA file.
    let out = cli(
        conf,
        &["login", &tls, "--token", &admin, "--certificate-authority", ca],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(out.stderr.is_empty(), "no warning when verified: {}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(said.contains(&format!("Logged in to {tls} as admin")), "{said}");
    let saved: Value =
        toml::from_str(&std::fs::read_to_string(conf.join("hearth/cli.toml")).unwrap()).unwrap();
    assert_eq!(saved["url"], tls.as_str());
    assert_eq!(
        saved["certificate_authority"].as_str(),
        Some(std::fs::read_to_string(d.ca_path()).unwrap().as_str())
    );
    assert!(saved.get("insecure_skip_tls_verify").is_none(), "{saved}");
    let kubeconfig = conf.join("hearth/kubeconfig");
    let doc = yaml_file(&kubeconfig);
    assert_eq!(doc["clusters"][0]["cluster"]["server"], tls.as_str(), "{doc}");
    assert!(
        doc["clusters"][0]["cluster"]["certificate-authority-data"].is_string(),
        "{doc}"
    );
    if let Some(names) = kubectl_ok(&kubeconfig, &["get", "namespaces", "-o", "name"]) {
        assert!(names.contains("namespace/admin"), "{names}");
    }
    // Later commands use the stored CA, over HTTPS, with no flags.
    let token = ok(&mut cli(conf, &["token", "create", "over-tls"]))
        .trim()
        .to_string();
    assert!(token.starts_with("hth_"), "{token}");
    assert!(ok(&mut cli(conf, &["token", "list"])).contains("over-tls"));
    assert_eq!(
        ok(&mut cli(conf, &["kubeconfig"])),
        std::fs::read_to_string(&kubeconfig).unwrap()
    );

    // A script: HEARTH_URL/HEARTH_TOKEN with HEARTH_CERTIFICATE_AUTHORITY, or not.
    let bare = tempfile::tempdir().unwrap();
    let mut script = cli(bare.path(), &["top", "-o", "json"]);
    script
        .env("HEARTH_URL", &tls)
        .env("HEARTH_TOKEN", &admin)
        .env("HEARTH_CERTIFICATE_AUTHORITY", ca);
    let top: Value = serde_json::from_str(&ok(&mut script)).unwrap();
    assert!(top["queue"].is_object(), "{top}");
    let mut unverified = cli(bare.path(), &["top"]);
    unverified.env("HEARTH_URL", &tls).env("HEARTH_TOKEN", &admin);
    fails_with_one_line(&mut unverified, "certificate");

    // The kubeconfig Hearth wrote names the server, its CA and the token.
    let other = tempfile::tempdir().unwrap();
    let said = ok(&mut cli(
        other.path(),
        &[
            "login",
            "--from-kubeconfig",
            d.kubeconfig_path().to_str().unwrap(),
        ],
    ));
    assert!(said.contains("as admin") && said.contains("https://"), "{said}");
    ok(&mut cli(other.path(), &["token", "list"]));
    fails_with_one_line(
        &mut cli(
            other.path(),
            &["login", "--from-kubeconfig", "/nonexistent/kubeconfig"],
        ),
        "/nonexistent/kubeconfig",
    );

    // Explicitly unverified: it works, says so every time, and the kubeconfig says so too.
    let insecure = tempfile::tempdir().unwrap();
    let out = cli(
        insecure.path(),
        &["login", &tls, "--token", &admin, "--insecure-skip-tls-verify"],
    )
    .output()
    .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: TLS verification is off"),
        "{}",
        text(&out)
    );
    let kubeconfig = insecure.path().join("hearth/kubeconfig");
    let doc = yaml_file(&kubeconfig);
    assert_eq!(
        doc["clusters"][0]["cluster"]["insecure-skip-tls-verify"], true,
        "{doc}"
    );
    assert!(
        doc["clusters"][0]["cluster"]
            .get("certificate-authority-data")
            .is_none(),
        "{doc}"
    );
    kubectl_ok(&kubeconfig, &["get", "namespaces", "-o", "name"]);
    let out = cli(insecure.path(), &["token", "list"]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("warning: TLS verification is off"),
        "{}",
        text(&out)
    );
}

/// `token list` is the caller's own; `--all-users` (`-A`) is every user's for an admin
/// and a 403 for anyone else; no listing carries a secret, and every time in it has
/// one format.
#[test]
fn token_list_all_users_is_for_admins_and_never_shows_secrets() {
    let d = daemon("");
    let admin = d.admin().unwrap().to_string();
    let alice = d.create_user("alice");
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();
    ok(&mut cli_env(
        &d,
        &admin,
        conf,
        &["token", "create", "ci-bot", "--expires-in-seconds", "3600"],
    ));
    ok(&mut cli_env(&d, &alice, conf, &["token", "create", "laptop"]));

    let users = |out: &str| -> Vec<String> {
        let list: Value = serde_json::from_str(out).unwrap();
        let items = list["items"].as_array().unwrap().clone();
        for item in &items {
            assert!(item.get("token").is_none(), "a secret in {item}");
            for key in ["created_at", "expires_at"] {
                if let Some(at) = item[key].as_str() {
                    // RFC 3339, UTC, milliseconds: 2026-12-02T13:20:00.123Z
                    let bytes = at.as_bytes();
                    assert!(
                        at.len() == 24 && bytes[10] == b'T' && bytes[19] == b'.' && at.ends_with('Z'),
                        "{key} {at:?} is not in the one time format"
                    );
                }
            }
        }
        items
            .iter()
            .map(|t| t["user"].as_str().unwrap().to_string())
            .collect()
    };
    let own = ok(&mut cli_env(&d, &admin, conf, &["token", "list", "-o", "json"]));
    assert!(users(&own).iter().all(|u| u == "admin"), "{own}");
    assert!(own.contains("ci-bot") && own.contains("expires_at"), "{own}");
    let all = ok(&mut cli_env(
        &d,
        &admin,
        conf,
        &["token", "list", "-A", "-o", "json"],
    ));
    let all_users = users(&all);
    assert!(
        all_users.contains(&"alice".to_string()) && all_users.contains(&"admin".to_string()),
        "{all}"
    );
    assert!(all.contains("laptop") && !all.contains("hth_"), "{all}");
    let table = ok(&mut cli_env(&d, &admin, conf, &["token", "list", "--all-users"]));
    assert!(
        table.contains("laptop") && table.contains("alice") && !table.contains("hth_"),
        "{table}"
    );

    // Not an admin: the flag is refused, the own listing works.
    fails_with_one_line(
        &mut cli_env(&d, &alice, conf, &["token", "list", "--all-users"]),
        "HTTP 403",
    );
    let mine = ok(&mut cli_env(&d, &alice, conf, &["token", "list", "-o", "json"]));
    assert!(users(&mine).iter().all(|u| u == "alice"), "{mine}");
    d.get("/hearth/v1/tokens?all_users=true", Some(&alice))
        .assert_problem(403, "forbidden");
    assert_eq!(
        d.get("/hearth/v1/tokens?all_users=true", Some(&admin)).status,
        200
    );

    // Users have no namespace in their names: `User alice`, not `User /alice`.
    let out = cli_env(&d, &admin, conf, &["user", "create", "alice"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("User alice already exists"), "{}", text(&out));
    let gone = d.delete("/hearth/v1/users/nobody", Some(&admin));
    assert_eq!(gone.status, 404, "{gone}");
    assert!(
        gone.body["detail"]
            .as_str()
            .unwrap()
            .contains("User nobody not found"),
        "{gone}"
    );
}

/// Every command's failure on a bad file or a server error: one line, exit 1.
#[test]
fn bad_files_and_server_errors_are_one_line_and_exit_1_everywhere() {
    let d = daemon("");
    let admin = d.admin().unwrap().to_string();
    let home = tempfile::tempdir().unwrap();
    let conf = home.path();
    let bad_toml = write(conf, "bad.toml", "listen = [1,\n");
    fails_with_one_line(
        &mut cli(conf, &["config", "show", "--config", bad_toml.to_str().unwrap()]),
        "bad.toml: line 1, column 13",
    );
    fails_with_one_line(
        &mut cli(conf, &["serve", "--config", bad_toml.to_str().unwrap()]),
        "bad.toml: line 1, column 13",
    );
    fails_with_one_line(
        &mut cli(conf, &["kubeconfig", "--token-file", "/nonexistent/token"]),
        "/nonexistent/token",
    );
    fails_with_one_line(
        &mut cli(
            conf,
            &[
                "kubeconfig",
                "--data-dir",
                d.data_dir.to_str().unwrap(),
                "--token",
                "hth_not-a-token",
            ],
        ),
        "not one this Hearth issued",
    );
    // A broken login file.
    std::fs::create_dir_all(conf.join("hearth")).unwrap();
    std::fs::write(conf.join("hearth/cli.toml"), "url = [\n").unwrap();
    fails_with_one_line(&mut cli(conf, &["top"]), "cli.toml");
    std::fs::remove_file(conf.join("hearth/cli.toml")).unwrap();
    // Server errors, command by command.
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["token", "create", "Bad_Name"]),
        "HTTP 422",
    );
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["token", "revoke", "nope"]),
        "HTTP 404",
    );
    fails_with_one_line(
        &mut cli_env(&d, &admin, conf, &["user", "create", "Bad_Name"]),
        "HTTP 422",
    );
    fails_with_one_line(&mut cli_env(&d, "hth_wrong", conf, &["top"]), "HTTP 401");
    fails_with_one_line(&mut cli_env(&d, "hth_wrong", conf, &["kubeconfig"]), "HTTP 401");
    fails_with_one_line(
        &mut cli_env(&d, "hth_wrong", conf, &["token", "list"]),
        "HTTP 401",
    );
}
