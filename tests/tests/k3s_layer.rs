//! The k3s layer without k3s: `hearth k3s preflight` on this host, `hearth serve
//! --runtime k3s` refusing on a failed check, and `hearth k3s render` output checked by
//! independent tools: every manifest by `kubernetes-validate --strict` against the
//! Kubernetes 1.33 schemas, the version-2 containerd template by Debian's `containerd
//! config dump`, the version-3 one as TOML with containerd 2.x's documented keys.
//! None of this runs k3s: it is not a k3s integration test.

use std::path::{Path, PathBuf};
use std::process::Command;

use hearth_e2e::hearth_command;
use serde_json::Value;

/// `kubernetes-validate` from the venv `scripts/test` builds from
/// tests/requirements-k3s.txt (`$HEARTH_KUBERNETES_VALIDATE` overrides).
fn kubernetes_validate() -> PathBuf {
    let path = match std::env::var_os("HEARTH_KUBERNETES_VALIDATE") {
        Some(p) => PathBuf::from(p),
        None => Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .unwrap()
            .join(".venv-k3s/bin/kubernetes-validate"),
    };
    assert!(
        path.exists(),
        "{} is missing: `python3 -m venv .venv-k3s && .venv-k3s/bin/pip install -r tests/requirements-k3s.txt` (scripts/test does this)",
        path.display()
    );
    path
}

/// A config file naming a k3s binary that does not exist, so the test never depends on
/// what is installed on the machine.
fn config_file(dir: &Path, extra: &str) -> PathBuf {
    let path = dir.join("config.toml");
    std::fs::write(
        &path,
        format!(
            "[k3s]\nexecutable = \"{}\"\n{extra}",
            dir.join("no-such-k3s").display()
        ),
    )
    .unwrap();
    path
}

fn hearth(args: &[&str]) -> std::process::Output {
    hearth_command().args(args).output().unwrap()
}

#[test]
fn preflight_on_a_host_without_k3s_fails_clearly_with_fixes() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let data = dir.path().join("data");
    let args = [
        "k3s",
        "preflight",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ];

    let out = hearth(&[&args[..], &["--json"]].concat());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let checks = report["checks"].as_array().unwrap();
    let names: Vec<&str> = checks.iter().map(|c| c["name"].as_str().unwrap()).collect();
    for want in [
        "root",
        "kernel",
        "cgroups",
        "swap",
        "module br_netfilter",
        "module overlay",
        "api port",
        "kubelet port",
        "disk",
        "nvidia driver",
        "nvidia-container-runtime",
        "k3s",
    ] {
        assert!(names.contains(&want), "no {want} check in {names:?}");
    }
    for c in checks {
        let status = c["status"].as_str().unwrap();
        assert!(matches!(status, "pass" | "warn" | "fail"), "{c}");
        if status != "pass" {
            assert!(c["fix"].as_str().is_some_and(|f| !f.is_empty()), "no fix for {c}");
        }
    }
    let k3s = checks.iter().find(|c| c["name"] == "k3s").unwrap();
    assert_eq!(k3s["status"], "fail", "{k3s}");
    assert!(k3s["detail"].as_str().unwrap().contains("no-such-k3s"), "{k3s}");
    // Without NVML (this machine has no NVIDIA driver) the driver check fails and
    // says why, instead of the probe panicking.
    let nvml_present = Path::new("/proc/driver/nvidia/version").exists();
    if !nvml_present {
        let driver = checks.iter().find(|c| c["name"] == "nvidia driver").unwrap();
        assert_eq!(driver["status"], "fail", "{driver}");
        assert!(driver["detail"].as_str().unwrap().contains("NVML"), "{driver}");
    }

    let table = hearth(&args);
    let text = String::from_utf8_lossy(&table.stdout);
    assert_eq!(table.status.code(), Some(1));
    assert!(text.starts_with("CHECK"), "{text}");
    assert!(
        text.contains("FAIL") && text.contains("check(s) failed"),
        "{text}"
    );
}

#[test]
fn preflight_marks_simulated_gpus() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "[gpu]\nsimulate = 2\n");
    let out = hearth(&[
        "k3s",
        "preflight",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let driver = report["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "nvidia driver")
        .unwrap();
    assert_eq!(driver["status"], "warn", "{driver}");
    assert!(
        driver["detail"].as_str().unwrap().contains("simulated"),
        "{driver}"
    );
}

#[test]
fn serve_with_the_k3s_runtime_refuses_to_start_naming_the_failed_checks() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let data = dir.path().join("data");
    let out = hearth_command()
        .args(["serve", "--runtime", "k3s", "--config", config.to_str().unwrap()])
        .args(["--data-dir", data.to_str().unwrap()])
        .args([
            "--listen",
            "127.0.0.1:0",
            "--serving-listen",
            "127.0.0.1:0",
            "--tls-listen",
            "127.0.0.1:0",
        ])
        .env_remove("NOTIFY_SOCKET")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(stderr.contains("preflight failed"), "{stderr}");
    assert!(
        stderr.contains("k3s: ") && stderr.contains("no-such-k3s"),
        "{stderr}"
    );
    assert!(stderr.contains("(fix: "), "{stderr}");
    assert!(!data.join("hearth.addr").exists(), "it must not have started");
}

/// Renders into a fresh dir and returns it.
fn render(dir: &Path, name: &str, config_extra: &str, extra: &[&str]) -> PathBuf {
    let config = config_file(dir, config_extra);
    let out_dir = dir.join(name);
    let data = dir.join("data");
    let out = hearth(
        &[
            &[
                "k3s",
                "render",
                out_dir.to_str().unwrap(),
                "--config",
                config.to_str().unwrap(),
                "--data-dir",
                data.to_str().unwrap(),
            ][..],
            extra,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    out_dir
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    out.sort();
    out
}

const OPERATOR: &str = "/usr/local/nvidia/toolkit/nvidia-container-runtime";
const PACKAGE: &str = "/usr/bin/nvidia-container-runtime";
const ELSEWHERE: &str = "/opt/nvidia/bin/nvidia-container-runtime";

#[test]
fn every_rendered_manifest_passes_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut manifests = Vec::new();
    for (i, (replicas, gpus, runtime)) in [(1, "1", PACKAGE), (4, "2", ELSEWHERE), (1, "0", OPERATOR)]
        .iter()
        .enumerate()
    {
        let out = render(
            dir.path(),
            &format!("r{i}"),
            &format!("[gpu]\ntime_slicing_replicas = {replicas}\n"),
            &[
                "--k3s-version",
                "v1.33.1+k3s1",
                "--gpus",
                gpus,
                "--nvidia-container-runtime",
                runtime,
            ],
        );
        let found = files(&out.join("manifests"));
        assert_eq!(found.len(), if *replicas > 1 { 3 } else { 2 }, "{found:?}");
        manifests.extend(found);
        manifests.extend(files(&out.join("verify")));
    }
    let out = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(&manifests)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert_eq!(
        text.matches(" passed for resource ").count(),
        manifests.len(),
        "{text}"
    );
    for kind in [
        "daemonset/nvidia-device-plugin-daemonset",
        "runtimeclass/nvidia",
        "configmap/nvidia-device-plugin-config",
    ] {
        assert!(text.contains(kind), "{kind} not validated: {text}");
    }
}

#[test]
fn flag_or_template_by_where_the_runtime_lives() {
    let dir = tempfile::tempdir().unwrap();
    for (i, runtime) in [OPERATOR, PACKAGE].iter().enumerate() {
        let out = render(
            dir.path(),
            &format!("k{i}"),
            "",
            &[
                "--k3s-version",
                "v1.33.1+k3s1",
                "--gpus",
                "1",
                "--nvidia-container-runtime",
                runtime,
            ],
        );
        assert!(
            files(&out.join("containerd")).is_empty(),
            "k3s detects {runtime}: no template"
        );
        let args = std::fs::read_to_string(out.join("k3s-server.args")).unwrap();
        assert!(args.contains("--default-runtime\nnvidia\n"), "{args}");
        assert!(
            args.contains("--node-label\nnvidia.com/gpu.present=true\n"),
            "{args}"
        );
        assert!(args.contains("--disable\ntraefik,servicelb\n"), "{args}");
        assert!(args.contains("--write-kubeconfig-mode\n0600\n"), "{args}");
    }
    let v2 = render(
        dir.path(),
        "e1",
        "",
        &[
            "--k3s-version",
            "v1.32.1+k3s1",
            "--gpus",
            "1",
            "--nvidia-container-runtime",
            ELSEWHERE,
        ],
    );
    assert_eq!(
        files(&v2.join("containerd")),
        vec![v2.join("containerd/config.toml.tmpl")]
    );
    let v3 = render(
        dir.path(),
        "e2",
        "",
        &[
            "--k3s-version",
            "v1.33.1+k3s1",
            "--gpus",
            "1",
            "--nvidia-container-runtime",
            ELSEWHERE,
        ],
    );
    assert_eq!(
        files(&v3.join("containerd")),
        vec![v3.join("containerd/config-v3.toml.tmpl")]
    );
    for out in [&v2, &v3] {
        let args = std::fs::read_to_string(out.join("k3s-server.args")).unwrap();
        assert!(args.contains("--default-runtime\nnvidia\n"), "{args}");
    }
    // No GPUs on this node: no GPU label.
    let cpu = render(
        dir.path(),
        "c",
        "",
        &[
            "--k3s-version",
            "v1.33.1+k3s1",
            "--gpus",
            "0",
            "--nvidia-container-runtime",
            PACKAGE,
        ],
    );
    assert!(!std::fs::read_to_string(cpu.join("k3s-server.args"))
        .unwrap()
        .contains("gpu.present"));
}

/// What k3s's version-2 base template renders to, in the parts the NVIDIA table sits
/// beside (k3s `pkg/agent/templates`): the CRI plugin with the default runtime from
/// `--default-runtime`, the snapshotter, and k3s's CNI dirs.
const K3S_V2_BASE: &str = r#"version = 2
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "rancher/mirrored-pause:3.6"
[plugins."io.containerd.grpc.v1.cri".containerd]
  snapshotter = "overlayfs"
  default_runtime_name = "nvidia"
[plugins."io.containerd.grpc.v1.cri".cni]
  bin_dir = "/var/lib/rancher/k3s/data/current/bin"
  conf_dir = "/var/lib/rancher/k3s/agent/etc/cni/net.d"
"#;

#[test]
fn the_version_2_template_parses_with_debian_containerd_and_shows_the_nvidia_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(
        dir.path(),
        "v2",
        "",
        &[
            "--k3s-version",
            "v1.32.1+k3s1",
            "--gpus",
            "1",
            "--nvidia-container-runtime",
            ELSEWHERE,
        ],
    );
    let template = std::fs::read_to_string(out.join("containerd/config.toml.tmpl")).unwrap();
    let base_line = "{{ template \"base\" . }}\n";
    assert_eq!(template.matches(base_line).count(), 1, "{template}");
    let config = out.join("config.toml");
    std::fs::write(&config, template.replace(base_line, K3S_V2_BASE)).unwrap();
    let dump = Command::new("containerd")
        .args(["--config", config.to_str().unwrap(), "config", "dump"])
        .output()
        .expect("containerd (Debian package `containerd`) must be installed: scripts/test installs it");
    let text = String::from_utf8_lossy(&dump.stdout);
    assert!(
        dump.status.success(),
        "{}{text}",
        String::from_utf8_lossy(&dump.stderr)
    );
    let parsed: toml::Table = toml::from_str(&text).unwrap();
    let cri = &parsed["plugins"]["io.containerd.grpc.v1.cri"]["containerd"];
    assert_eq!(cri["default_runtime_name"].as_str(), Some("nvidia"), "{text}");
    let nvidia = &cri["runtimes"]["nvidia"];
    assert_eq!(
        nvidia["runtime_type"].as_str(),
        Some("io.containerd.runc.v2"),
        "{text}"
    );
    assert_eq!(
        nvidia["options"]["BinaryName"].as_str(),
        Some(ELSEWHERE),
        "{text}"
    );
    assert_eq!(nvidia["options"]["SystemdCgroup"].as_bool(), Some(true), "{text}");
    // k3s's own settings survive beside it (the point of extending the base).
    assert_eq!(
        parsed["plugins"]["io.containerd.grpc.v1.cri"]["cni"]["bin_dir"].as_str(),
        Some("/var/lib/rancher/k3s/data/current/bin")
    );
}

#[test]
fn the_version_3_template_is_toml_with_containerd_2_keys() {
    let dir = tempfile::tempdir().unwrap();
    let out = render(
        dir.path(),
        "v3",
        "",
        &[
            "--k3s-version",
            "v1.34.2+k3s1",
            "--gpus",
            "1",
            "--nvidia-container-runtime",
            ELSEWHERE,
        ],
    );
    let template = std::fs::read_to_string(out.join("containerd/config-v3.toml.tmpl")).unwrap();
    let body = template.replace("{{ template \"base\" . }}\n", "version = 3\n");
    let parsed: toml::Table = toml::from_str(&body).unwrap();
    assert_eq!(parsed["version"].as_integer(), Some(3));
    // containerd 2.x docs/cri/config.md: runtimes live under the CRI runtime plugin
    // `io.containerd.cri.v1.runtime`, each with runtime_type and runc options.
    let plugins = parsed["plugins"].as_table().unwrap();
    assert_eq!(
        plugins.keys().collect::<Vec<_>>(),
        vec!["io.containerd.cri.v1.runtime"]
    );
    let runtimes = plugins["io.containerd.cri.v1.runtime"]["containerd"]["runtimes"]
        .as_table()
        .unwrap();
    let nvidia = runtimes["nvidia"].as_table().unwrap();
    let mut keys: Vec<&String> = nvidia.keys().collect();
    keys.sort();
    assert_eq!(keys, vec!["options", "runtime_type"]);
    assert_eq!(nvidia["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
    let mut options: Vec<&String> = nvidia["options"].as_table().unwrap().keys().collect();
    options.sort();
    assert_eq!(options, vec!["BinaryName", "SystemdCgroup"]);
}

/// A stand-in `k3s` for `verify`: answers `k3s kubectl` as a cluster with two GPU nodes
/// and one CPU node whose vector-add pods succeed, printing `$VECTOR_ADD_LOG`; records
/// every call and the pod documents applied. Not k3s.
const VERIFY_STAND_IN: &str = r#"#!/bin/bash
dir=@DIR@
[ "$1" = kubectl ] || exit 2
shift
echo "$*" >> "$dir/calls"
case "$*" in
  *"get nodes -o json"*) cat "$dir/nodes.json";;
  *"apply -f -"*) n=$(ls "$dir" | grep -c '^applied-'); cat > "$dir/applied-$n.json"; echo "pod created";;
  *"get pod "*) echo '{"kind":"Pod","status":{"phase":"Succeeded"}}';;
  *" logs "*) cat "$dir/log";;
  *" delete pod "*) echo deleted;;
  *) echo "unexpected: $*" >&2; exit 1;;
esac
"#;

fn verify_setup(dir: &Path, log: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let script = dir.join("bin/k3s");
    std::fs::create_dir_all(script.parent().unwrap()).unwrap();
    std::fs::write(
        &script,
        VERIFY_STAND_IN.replace("@DIR@", &dir.display().to_string()),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::write(dir.join("log"), log).unwrap();
    let node = |name: &str, gpus: u32| {
        serde_json::json!({
            "metadata": {"name": name, "labels": if gpus > 0 { serde_json::json!({"nvidia.com/gpu.present": "true"}) } else { serde_json::json!({}) }},
            "status": {"conditions": [{"type": "Ready", "status": "True"}], "allocatable": {"nvidia.com/gpu": gpus.to_string()}},
        })
    };
    let list =
        serde_json::json!({"kind": "NodeList", "items": [node("ws", 2), node("cpu1", 0), node("gpu2", 8)]});
    std::fs::write(dir.join("nodes.json"), list.to_string()).unwrap();
    let data = dir.join("data");
    std::fs::create_dir_all(data.join("k3s/server")).unwrap();
    std::fs::write(data.join("k3s/kubeconfig.yaml"), "apiVersion: v1\n").unwrap();
    std::fs::write(data.join("k3s/server/node-token"), "K10stand-in::server:secret\n").unwrap();
    std::fs::write(
        dir.join("config.toml"),
        format!("[k3s]\nexecutable = \"{}\"\n", script.display()),
    )
    .unwrap();
    data
}

#[test]
fn verify_runs_the_vector_add_pod_on_each_gpu_node() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = verify_setup(d, "[Vector addition of 50000 elements]\nCopy output data from the CUDA device to the host memory\nTest PASSED\nDone\n");
    let config = d.join("config.toml");
    let out = hearth(&[
        "k3s",
        "verify",
        "--json",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let results: Value = serde_json::from_slice(&out.stdout).unwrap();
    let nodes: Vec<&str> = results
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["node"].as_str().unwrap())
        .collect();
    assert_eq!(nodes, vec!["ws", "gpu2"], "GPU nodes only: {results}");
    assert!(
        results.as_array().unwrap().iter().all(|r| r["passed"] == true),
        "{results}"
    );

    // The pods applied: one GPU, the nvidia runtime class, the toleration, pinned to
    // their node; and they pass kubernetes-validate --strict.
    let applied = files(d)
        .into_iter()
        .filter(|p| p.file_name().unwrap().to_str().unwrap().starts_with("applied-"))
        .collect::<Vec<_>>();
    assert_eq!(applied.len(), 2);
    for (path, node) in applied.iter().zip(["ws", "gpu2"]) {
        let pod: Value = serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
        assert_eq!(pod["spec"]["runtimeClassName"], "nvidia");
        assert_eq!(pod["spec"]["restartPolicy"], "Never");
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            1
        );
        assert_eq!(pod["spec"]["tolerations"][0]["key"], "nvidia.com/gpu");
        let term = &pod["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
            ["nodeSelectorTerms"][0];
        assert_eq!(term["matchFields"][0]["values"][0], node);
    }
    let check = Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(&applied)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
    let calls = std::fs::read_to_string(d.join("calls")).unwrap();
    assert_eq!(
        calls.matches("delete pod hearth-verify-ws").count(),
        2,
        "before and after: {calls}"
    );

    // A log without `Test PASSED` fails the node and the command.
    std::fs::write(
        d.join("log"),
        "Failed to allocate device vector A (error code no CUDA-capable device is detected)!\n",
    )
    .unwrap();
    let out = hearth(&[
        "k3s",
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("FAILED") && text.contains("no CUDA-capable device"),
        "{text}"
    );
}

#[test]
fn verify_without_a_running_k3s_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let config = config_file(dir.path(), "");
    let out = hearth(&[
        "k3s",
        "verify",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        dir.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("kubeconfig.yaml does not exist: start the daemon with --runtime k3s"),
        "{stderr}"
    );
}

#[test]
fn join_command_prints_the_agent_install_with_url_and_token() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let data = verify_setup(d, "");
    let config = d.join("config.toml");
    let out = hearth(&[
        "k3s",
        "join-command",
        "--server-address",
        "10.0.0.5",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        data.to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("K3S_URL=https://10.0.0.5:6443 K3S_TOKEN=K10stand-in::server:secret"),
        "{text}"
    );
    assert!(
        text.contains("agent --node-label nvidia.com/gpu.present=true --default-runtime nvidia"),
        "{text}"
    );

    let empty = tempfile::tempdir().unwrap();
    let out = hearth(&[
        "k3s",
        "join-command",
        "--config",
        config.to_str().unwrap(),
        "--data-dir",
        empty.path().to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("node-token") && stderr.contains("start `hearth serve --runtime k3s` first"),
        "{stderr}"
    );
}
