//! Supervisor test at the daemon level: `hearth serve --runtime k3s` with a stand-in
//! `k3s` (a shell script that records its calls and answers `k3s kubectl` from a file)
//! and a stand-in `nvidia-container-runtime` on PATH. It tests what Hearth does around
//! k3s (preflight passing, files written where k3s reads them, flags, readiness, the
//! node view, stopping k3s alone); it is not a k3s integration test. Runs as root, as
//! CI does (the preflight requires it).

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Options};

/// Shared with the supervisor's unit tests (`daemon/src/k3s/supervisor.rs`).
const STAND_IN: &str = include_str!("../fixtures/k3s/stand-in-k3s");

fn executable(path: &Path, text: &str) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn node_list(allocatable: u32) -> String {
    serde_json::json!({"kind": "NodeList", "items": [{
        "metadata": {"name": "stand-in-node", "labels": {"nvidia.com/gpu.present": "true"}},
        "spec": {},
        "status": {
            "conditions": [{"type": "Ready", "status": "True"}],
            "capacity": {"nvidia.com/gpu": allocatable.to_string()},
            "allocatable": {"nvidia.com/gpu": allocatable.to_string()},
        },
    }]})
    .to_string()
}

#[test]
fn serve_runtime_k3s_supervises_a_stand_in_k3s() {
    assert!(
        std::os::unix::fs::MetadataExt::uid(&std::fs::metadata("/proc/self").unwrap()) == 0,
        "the k3s preflight requires root: run this test as root (CI does)"
    );
    let tools = tempfile::tempdir().unwrap();
    let t = tools.path();
    executable(
        &t.join("bin/k3s"),
        &STAND_IN.replace("@DIR@", &t.display().to_string()),
    );
    executable(&t.join("nvidia/nvidia-container-runtime"), "#!/bin/sh\nexit 0\n");
    std::fs::write(t.join("nodes.json"), node_list(0)).unwrap();
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let path = format!(
        "{}:{}",
        t.join("nvidia").display(),
        std::env::var("PATH").unwrap_or_default()
    );

    let mut d = spawn_daemon_with(
        Options::default()
            .arg("--runtime")
            .arg("k3s")
            .env("PATH", &path)
            .config(&format!(
                "[gpu]\nsimulate = 1\ntime_slicing_replicas = 2\n[k3s]\nexecutable = \"{}\"\nhttps_listen_port = {port}\n",
                t.join("bin/k3s").display()
            )),
    );
    let admin = d.admin().unwrap().to_string();
    let k3s_dir = d.data_dir.join("k3s");

    // What k3s reads was written before it started.
    let args = std::fs::read_to_string(t.join("server-args")).unwrap();
    assert!(
        args.starts_with(&format!("server --data-dir {} ", k3s_dir.display())),
        "{args}"
    );
    for flag in [
        "--write-kubeconfig-mode 0600",
        "--disable traefik,servicelb",
        "--default-runtime nvidia",
        "--node-label nvidia.com/gpu.present=true",
        &format!("--https-listen-port {port}"),
    ] {
        assert!(args.contains(flag), "{flag} missing: {args}");
    }
    let template = std::fs::read_to_string(k3s_dir.join("agent/etc/containerd/config-v3.toml.tmpl")).unwrap();
    assert!(template.contains("{{ template \"base\" . }}"), "{template}");
    assert!(template.contains(&t.join("nvidia/nvidia-container-runtime").display().to_string()));
    for file in [
        "hearth-nvidia-runtimeclass.yaml",
        "hearth-nvidia-device-plugin.yaml",
        "hearth-nvidia-time-slicing.yaml",
    ] {
        assert!(k3s_dir.join("server/manifests").join(file).is_file(), "{file}");
    }
    assert!(k3s_dir.join("agent/images").is_dir());

    // Until the node reports 1 GPU × 2 replicas, /readyz says what is missing.
    let r = d.wait_until("/readyz", Duration::from_secs(20), |r| {
        r.status == 503 && r.body.to_string().contains("waiting for GPUs")
    });
    assert!(
        r.body
            .to_string()
            .contains("reports 0 allocatable nvidia.com/gpu"),
        "{r}"
    );
    let node = d.get("/hearth/v1/node", Some(&admin));
    assert_eq!(node.body["k3s"]["state"], "waiting-for-gpus", "{node}");
    assert_eq!(node.body["gpus"]["simulated"], true, "{node}");

    std::fs::write(t.join("nodes.json"), node_list(2)).unwrap();
    d.wait_until("/readyz", Duration::from_secs(20), |r| r.status == 200);
    let node = d.get("/hearth/v1/node", Some(&admin));
    assert_eq!(node.body["k3s"]["state"], "ready", "{node}");
    assert_eq!(node.body["k3s"]["restarts"], 0, "{node}");
    let log = std::fs::read_to_string(k3s_dir.join("k3s.log")).unwrap();
    assert!(log.contains("Starting k3s (stand-in)"), "{log}");

    let pod: i32 = std::fs::read_to_string(t.join("pod.pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(d.terminate().success());
    assert_eq!(
        std::fs::read_to_string(t.join("events")).unwrap().trim(),
        "SIGTERM"
    );
    let pod_pid = nix::unistd::Pid::from_raw(pod);
    assert!(
        nix::sys::signal::kill(pod_pid, None).is_ok(),
        "stopping Hearth killed k3s's pods"
    );
    let _ = nix::sys::signal::kill(pod_pid, nix::sys::signal::Signal::SIGKILL);
}
