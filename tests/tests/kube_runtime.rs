//! `hearth serve` with the kube runtime (`runtime = "kube"`) when no API server answers:
//! the daemon starts, `/readyz` and the node view name the unreachable cluster, and a
//! Job waits with that reason, nothing admitted and nothing changed. No API server runs
//! here (the pod mapping and the requests the backend makes are tested against a
//! recorded API in the `runtime::kube` unit tests): this is not a Kubernetes or k3s
//! integration test.

use std::time::Duration;

use hearth_e2e::jobs::{condition, create, JOBS};
use hearth_e2e::{spawn_daemon_with, Options};

const PODS: &str = "/api/v1/namespaces/team/pods";

/// A kubeconfig in the shape k3s writes, for a server on a port nothing listens on.
fn kubeconfig(dir: &std::path::Path) -> (std::path::PathBuf, u16) {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = dir.join("cluster.yaml");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- cluster:\n    server: https://127.0.0.1:{port}\n    insecure-skip-tls-verify: true\n  name: c\ncontexts:\n- context:\n    cluster: c\n    user: u\n  name: c\ncurrent-context: c\nusers:\n- user:\n    token: t\n  name: u\n"
        ),
    )
    .unwrap();
    (path, port)
}

#[test]
fn an_unreachable_cluster_is_reported_and_workloads_wait_for_it() {
    let dir = tempfile::tempdir().unwrap();
    let (path, port) = kubeconfig(dir.path());
    let d = spawn_daemon_with(Options::default().arg("--runtime").arg("kube").config(&format!(
        "[kube]\nkubeconfig = \"{}\"\nnamespace = \"hearth-e2e\"\n",
        path.display()
    )));
    let server = format!("https://127.0.0.1:{port}/");
    let ready = d.wait_until("/readyz", Duration::from_secs(20), |r| {
        r.status == 503 && r.text.contains("does not answer")
    });
    assert!(
        ready.text.contains(&format!(
            "runtime: kube backend unavailable: the API server at {server} does not answer"
        )),
        "{ready}"
    );
    let node = d.get("/hearth/v1/node", d.admin());
    assert_eq!(node.body["runtime"], "kube", "{node}");
    assert_eq!(node.body["runtime_available"], false, "{node}");
    assert_eq!(
        node.body["runtime_capabilities"]["gpu_mode"], "Delegated",
        "{node}"
    );
    assert_eq!(node.body["runtime_capabilities"]["own_network"], true, "{node}");

    create(
        &d,
        "apiVersion: batch/v1
kind: Job
metadata:
  name: waiting
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: main
        image: busybox:1.36
        command: ['sh', '-c', 'true']
",
    );
    let pod = d
        .wait_until(
            &format!("{PODS}?labelSelector=job-name%3Dwaiting"),
            Duration::from_secs(20),
            |r| {
                r.body["items"][0]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("RuntimeUnavailable") && m.contains(&server))
            },
        )
        .body;
    assert_eq!(pod["items"][0]["status"]["phase"], "Pending", "{pod}");
    std::thread::sleep(Duration::from_secs(3));
    let job = d.get(&format!("{JOBS}/waiting"), d.admin()).body;
    assert!(condition(&job).is_none(), "{job}");
}

/// `runtime = "kube"` without a kubeconfig is refused at start, naming the key.
#[test]
fn the_kube_runtime_without_a_kubeconfig_is_refused() {
    let out = hearth_e2e::hearth_command()
        .args(["serve", "--runtime", "kube", "--listen", "127.0.0.1:0"])
        .env("HEARTH_DATA_DIR", tempfile::tempdir().unwrap().path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kube.kubeconfig"), "{err}");
}
