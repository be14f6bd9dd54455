//! TLS, kubeconfig and the Kubernetes identity endpoints, driven by the real kubectl
//! 1.35 (`hearth_e2e::kubectl()`, installed by scripts/test) with nothing but the
//! kubeconfig the daemon writes (no `--insecure-skip-tls-verify`), and by Python's
//! `ssl` (OpenSSL) for the certificate itself.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hearth_e2e::{hearth_command, kubectl, spawn_daemon, Daemon};
use serde_json::Value;

/// kubectl with only `kubeconfig`, and a HOME of its own so its discovery cache and any
/// `~/.kube/config` of the machine stay out of the test.
fn kubectl_run(kubectl: &Path, kubeconfig: &Path, home: &Path, args: &[&str]) -> Output {
    Command::new(kubectl)
        .arg("--kubeconfig")
        .arg(kubeconfig)
        .args(args)
        .env_remove("KUBECONFIG")
        .env("HOME", home)
        .stdin(Stdio::null())
        .output()
        .expect("run kubectl")
}

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout:\n{}\nstderr:\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn json_of(out: &Output) -> Value {
    assert!(out.status.success(), "{}", text(out));
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

/// `hearth kubeconfig` for `token`, written to `dir/name` (what a user hands a teammate).
fn user_kubeconfig(d: &Daemon, token: &str, dir: &Path, name: &str, extra: &[&str]) -> PathBuf {
    let out = hearth_command()
        .arg("kubeconfig")
        .arg("--data-dir")
        .arg(&d.data_dir)
        .arg("--config")
        .arg(d.config_path())
        .arg("--token")
        .arg(token)
        .args(extra)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let path = dir.join(name);
    std::fs::write(&path, &out.stdout).unwrap();
    path
}

fn tls_port(d: &Daemon) -> u16 {
    d.tls_url().rsplit(':').next().unwrap().parse().unwrap()
}

#[test]
fn kubectl_version_whoami_and_can_i_with_only_the_kubeconfig() {
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped: kubectl is not installed (scripts/test installs it; set HEARTH_KUBECTL)");
        return;
    };
    let d = spawn_daemon();
    let home = tempfile::tempdir().unwrap();
    let admin = d.kubeconfig_path();
    let mode = std::fs::metadata(&admin).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "the kubeconfig holds a token");
    let run = |config: &Path, args: &[&str]| kubectl_run(&kubectl, config, home.path(), args);

    let version = json_of(&run(&admin, &["version", "-o", "json"]));
    let server = &version["serverVersion"];
    assert_eq!(server["major"], "1", "{version}");
    assert_eq!(server["minor"], "35", "{version}");
    assert!(
        server["gitVersion"]
            .as_str()
            .unwrap()
            .starts_with("v1.35.0+hearth."),
        "{version}"
    );

    let whoami = json_of(&run(&admin, &["auth", "whoami", "-o", "json"]));
    assert_eq!(whoami["kind"], "SelfSubjectReview", "{whoami}");
    assert_eq!(whoami["status"]["userInfo"]["username"], "admin", "{whoami}");
    let groups = &whoami["status"]["userInfo"]["groups"];
    assert!(
        groups.as_array().unwrap().contains(&"system:masters".into()),
        "{whoami}"
    );

    // A second user, through the kubeconfig `hearth kubeconfig` prints for their token.
    let alice_token = d.create_user("alice");
    d.create_user("bob");
    let alice = user_kubeconfig(&d, &alice_token, home.path(), "alice.yaml", &[]);
    let whoami = json_of(&run(&alice, &["auth", "whoami", "-o", "json"]));
    assert_eq!(whoami["status"]["userInfo"]["username"], "alice", "{whoami}");
    assert_eq!(
        whoami["status"]["userInfo"]["groups"],
        serde_json::json!(["system:authenticated"]),
        "{whoami}"
    );
    let doc: Value = serde_yaml_ng::from_slice(&std::fs::read(&alice).unwrap()).unwrap();
    assert_eq!(doc["contexts"][0]["context"]["namespace"], "alice", "{doc}");

    // can-i answers by Hearth's rule: all of one's own namespace, nothing of another's.
    // (The resource is resolved through discovery when the server has it; the answer
    // does not depend on it.)
    let own = run(&alice, &["auth", "can-i", "create", "jobs", "-n", "alice"]);
    assert!(own.status.success(), "{}", text(&own));
    assert_eq!(
        String::from_utf8_lossy(&own.stdout).trim(),
        "yes",
        "{}",
        text(&own)
    );
    let other = run(&alice, &["auth", "can-i", "create", "jobs", "-n", "bob"]);
    assert_eq!(other.status.code(), Some(1), "{}", text(&other));
    let said = String::from_utf8_lossy(&other.stdout);
    assert!(said.starts_with("no"), "{}", text(&other));
    assert!(said.contains("belongs to another user"), "{}", text(&other));
    // The context's namespace is alice's own; all namespaces at once are not.
    let default_ns = run(
        &alice,
        &["auth", "can-i", "delete", "inferenceservices.serving.kserve.io"],
    );
    assert!(default_ns.status.success(), "{}", text(&default_ns));
    let everywhere = run(&alice, &["auth", "can-i", "list", "jobs", "--all-namespaces"]);
    assert_eq!(everywhere.status.code(), Some(1), "{}", text(&everywhere));
    let admin_there = run(&admin, &["auth", "can-i", "delete", "jobs", "-n", "bob"]);
    assert!(admin_there.status.success(), "{}", text(&admin_there));
    let listed = run(&alice, &["auth", "can-i", "--list", "-n", "alice"]);
    assert!(listed.status.success(), "{}", text(&listed));
    assert!(
        String::from_utf8_lossy(&listed.stdout).contains("*.*"),
        "{}",
        text(&listed)
    );
}

#[test]
fn hearth_kubeconfig_refuses_unknown_tokens_and_takes_server_and_namespace() {
    let d = spawn_daemon();
    let out = hearth_command()
        .args(["kubeconfig", "--data-dir"])
        .arg(&d.data_dir)
        .args(["--token", "hth_not-a-token"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("not one this Hearth issued"),
        "{}",
        text(&out)
    );

    let out = hearth_command()
        .args(["kubeconfig", "--data-dir"])
        .arg(&d.data_dir)
        .arg("--token-file")
        .arg(d.data_dir.join("admin.token"))
        .args(["--server", "https://gpu-box.lan:8472", "--namespace", "team"])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out));
    let doc: Value = serde_yaml_ng::from_slice(&out.stdout).unwrap();
    assert_eq!(
        doc["clusters"][0]["cluster"]["server"],
        "https://gpu-box.lan:8472"
    );
    assert_eq!(doc["contexts"][0]["context"]["namespace"], "team");
    assert_eq!(doc["users"][0]["name"], "admin");

    let out = hearth_command()
        .args(["kubeconfig", "--data-dir"])
        .arg(&d.data_dir)
        .arg("--token-file")
        .arg(d.data_dir.join("admin.token"))
        .args(["--server", "http://127.0.0.1:8470"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("https://"),
        "{}",
        text(&out)
    );
}

/// Python's ssl module (OpenSSL) does the handshake, checks the chain against Hearth's
/// CA and the name, then reads `/version` (no token) and `/hearth/v1/whoami` (a token).
const TLS_CLIENT: &str = r#"
import json, socket, ssl, sys, urllib.request
ca, port, token = sys.argv[1], int(sys.argv[2]), sys.argv[3]
ctx = ssl.create_default_context(cafile=ca)
for name in ["localhost", "127.0.0.1"]:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        with ctx.wrap_socket(raw, server_hostname=name) as tls:
            print("verified", name, tls.version())
try:
    with socket.create_connection(("127.0.0.1", port)) as raw:
        ctx.wrap_socket(raw, server_hostname="not-this-host.example")
    print("WRONG: a foreign name verified")
except ssl.SSLCertVerificationError:
    print("refused foreign name")
with urllib.request.urlopen(f"https://localhost:{port}/version", context=ctx) as r:
    print("version", json.load(r)["gitVersion"])
req = urllib.request.Request(f"https://127.0.0.1:{port}/hearth/v1/whoami",
                             headers={"Authorization": "Bearer " + token})
with urllib.request.urlopen(req, context=ctx) as r:
    print("whoami", json.load(r)["user"])
"#;

#[test]
fn the_certificate_verifies_against_the_ca_for_localhost_and_127_0_0_1() {
    let d = spawn_daemon();
    let out = Command::new("python3")
        .args(["-c", TLS_CLIENT])
        .arg(d.ca_path())
        .arg(tls_port(&d).to_string())
        .arg(&d.admin_token)
        .output()
        .expect("python3");
    let said = text(&out);
    assert!(out.status.success(), "{said}");
    for line in [
        "verified localhost",
        "verified 127.0.0.1",
        "refused foreign name",
        "version v1.35.0+hearth.",
        "whoami admin",
    ] {
        assert!(said.contains(line), "{line:?} missing:\n{said}");
    }
    for key in ["tls/ca.key", "tls/server.key", "admin.token", "kubeconfig"] {
        let mode = std::fs::metadata(d.data_dir.join(key))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600, "{key}");
    }
}

#[test]
fn version_is_open_and_the_reviews_answer_json_over_plain_http_too() {
    let d = spawn_daemon();
    let r = d.get("/version", None);
    assert_eq!(r.status, 200, "{r}");
    assert_eq!(r.body["major"], "1", "{r}");
    assert!(r.body["platform"].as_str().unwrap().starts_with("linux/"), "{r}");
    // The Kubernetes Python client's VersionApi asks with a trailing slash.
    let slash = d.get("/version/", None);
    assert_eq!((slash.status, &slash.body), (200, &r.body), "{slash}");

    let alice = d.create_user("alice");
    let review = |ns: &str| {
        serde_json::json!({
            "apiVersion": "authorization.k8s.io/v1",
            "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"namespace": ns, "verb": "create", "group": "batch", "resource": "jobs"}}
        })
    };
    let path = "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews";
    let r = d.post_json(path, Some(&alice), &review("alice"));
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body["status"]["allowed"], true, "{r}");
    let r = d.post_json(path, Some(&alice), &review("admin"));
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body["status"]["allowed"], false, "{r}");
    assert_eq!(r.body["status"]["denied"], true, "{r}");
    assert!(
        r.body["status"]["reason"]
            .as_str()
            .unwrap()
            .contains("another user"),
        "{r}"
    );

    // On the Kubernetes API's paths errors are Kubernetes `Status` objects.
    let r = d.post_json(path, Some(&alice), &serde_json::json!({"spec": {}}));
    r.assert_status(422, "Invalid");
    assert_eq!(r.cause_field(), "spec", "{r}");
    let r = d.post_json(path, None, &review("alice"));
    assert_eq!(r.status, 401, "{r}");
    let r = d.post_json(
        "/apis/authentication.k8s.io/v1/selfsubjectreviews",
        Some(&alice),
        &serde_json::json!({"apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"}),
    );
    assert_eq!(r.status, 201, "{r}");
    assert_eq!(r.body["status"]["userInfo"]["username"], "alice", "{r}");
}

#[test]
fn plain_http_beyond_loopback_is_refused_at_start_up_unless_allowed() {
    let data = tempfile::tempdir().unwrap();
    let config = data.path().join("config.toml");
    std::fs::write(&config, "").unwrap();
    let serve = |listen_flag: &str, env: &[(&str, &str)]| {
        let mut cmd = hearth_command();
        cmd.arg("serve")
            .arg("--config")
            .arg(&config)
            .arg("--data-dir")
            .arg(data.path().join("d"))
            .args(["--tls-listen", "127.0.0.1:0"])
            .args(listen_flag.split(' '))
            .env("HEARTH_ISOLATION_ENABLED", "false")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd
    };
    for flag in [
        "--listen 0.0.0.0:0 --serving-listen 127.0.0.1:0",
        "--listen 127.0.0.1:0 --serving-listen [::]:0",
    ] {
        let out = serve(flag, &[]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{flag}: started\n{err}");
        assert!(err.contains("allow_plain_http_on_network"), "{flag}: {err}");
        assert!(err.contains("clear text"), "{flag}: {err}");
        assert!(
            !data.path().join("d/hearth.db").exists(),
            "{flag}: the store was opened"
        );
    }

    // Said explicitly, it starts.
    let mut child = serve(
        "--listen 0.0.0.0:0",
        &[("HEARTH_ALLOW_PLAIN_HTTP_ON_NETWORK", "true")],
    )
    .spawn()
    .unwrap();
    let addr = data.path().join("d/hearth.addr");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !addr.exists() {
        assert!(child.try_wait().unwrap().is_none(), "it exited");
        assert!(Instant::now() < deadline, "no hearth.addr");
        std::thread::sleep(Duration::from_millis(20));
    }
    let said: Value = serde_json::from_str(&std::fs::read_to_string(&addr).unwrap()).unwrap();
    assert!(said["api"].as_str().unwrap().starts_with("0.0.0.0:"), "{said}");
    child.kill().unwrap();
    child.wait().unwrap();
}

#[test]
fn a_restart_keeps_the_ca_so_kubeconfigs_handed_out_keep_working() {
    let mut d = spawn_daemon();
    let ca = std::fs::read_to_string(d.ca_path()).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let alice_token = d.create_user("alice");
    let alice = user_kubeconfig(&d, &alice_token, dir.path(), "alice.yaml", &[]);

    d.restart();
    assert_eq!(
        std::fs::read_to_string(d.ca_path()).unwrap(),
        ca,
        "the CA changed on restart"
    );
    let admin: Value = serde_yaml_ng::from_slice(&std::fs::read(d.kubeconfig_path()).unwrap()).unwrap();
    assert_eq!(
        admin["clusters"][0]["cluster"]["server"],
        d.tls_url(),
        "the admin kubeconfig follows the new port"
    );
    // The kubeconfig from before the restart still verifies the server; only the port
    // (0 in tests, fixed in real use) moved.
    let Some(kubectl) = kubectl() else {
        eprintln!("skipped the kubectl half: kubectl is not installed");
        return;
    };
    let out = kubectl_run(
        &kubectl,
        &alice,
        dir.path(),
        &["--server", &d.tls_url(), "auth", "whoami", "-o", "json"],
    );
    assert_eq!(json_of(&out)["status"]["userInfo"]["username"], "alice");
}
