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
    }
}
