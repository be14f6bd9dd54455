//! The Docker runtime end to end: a real `dockerd` (started by `scripts/test`, at
//! `$HEARTH_TEST_DOCKER_HOST`) runs each workload in the image its spec names. These
//! tests never skip: without a Docker that answers they fail, saying so.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hearth_e2e::jobs::{condition, create, wait_finished, JOBS};
use hearth_e2e::{spawn_daemon_with, Daemon, Options};
use serde_json::Value;

const JOB_EXTRAS: &str = "/hearth/v1/namespaces/team/jobs";
const PODS: &str = "/api/v1/namespaces/team/pods";
/// An image made here from `busybox-static` (see `busybox_image`), so nothing is pulled.
pub const BUSYBOX: &str = "hearth-test/busybox:2";
/// The user-defined bridge network the tests' containers join (ports published on
/// 127.0.0.1 through Docker's proxy; `dockerd --bridge=none` has no default bridge).
const NETWORK: &str = "hearth-test";

fn docker_host() -> String {
    std::env::var("HEARTH_TEST_DOCKER_HOST").unwrap_or_else(|_| "unix:///run/hearth-test-docker.sock".into())
}

/// `docker -H <host> args...`; `Err(stderr)` when it fails.
fn docker(args: &[&str]) -> Result<String, String> {
    let out = Command::new("docker")
        .arg("-H")
        .arg(docker_host())
        .args(args)
        .output()
        .map_err(|e| format!("cannot run the docker CLI: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).to_string())
    }
}

/// Docker answers and has the test image and network; panics (never skips) otherwise.
fn ready_docker() {
    if let Err(e) = docker(&["version", "--format", "{{.Server.Version}}"]) {
        panic!(
            "these tests need a running dockerd at {} (scripts/test starts one: dockerd --storage-driver=vfs \
             --iptables=false --bridge=none -H {}): {e}",
            docker_host(),
            docker_host()
        );
    }
    busybox_image();
    if docker(&["network", "inspect", NETWORK]).is_err() {
        // Another test may make it at the same time.
        let _ = docker(&["network", "create", NETWORK]);
        docker(&["network", "inspect", NETWORK]).expect("the test network");
    }
}

/// `hearth-test/busybox:1`: `docker import` of a root file system holding only the
/// static busybox.
fn busybox_image() {
    if docker(&["image", "inspect", BUSYBOX]).is_ok() {
        return;
    }
    let root = tempfile::tempdir().expect("temp dir");
    let bin = root.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::fs::create_dir_all(root.path().join("tmp")).unwrap();
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .find(|p| Path::new(p).exists())
        .expect("busybox-static installed (apt-get install busybox-static)");
    std::fs::copy(busybox, bin.join("busybox")).unwrap();
    let list = Command::new(busybox)
        .arg("--list")
        .output()
        .expect("busybox --list");
    for applet in String::from_utf8_lossy(&list.stdout)
        .lines()
        .filter(|a| *a != "busybox")
    {
        std::os::unix::fs::symlink("busybox", bin.join(applet)).unwrap();
    }
    let script = format!(
        "tar -C {} -c . | docker -H {} import -c 'ENV PATH=/bin' - {BUSYBOX}",
        root.path().display(),
        docker_host()
    );
    let status = Command::new("sh").arg("-c").arg(&script).status().expect("sh");
    assert!(status.success(), "building {BUSYBOX} failed");
}

fn daemon_with(options: Options) -> Daemon {
    ready_docker();
    spawn_daemon_with(options.arg("--runtime").arg("docker").config(&format!(
        "[jobs]\nbackoff_base_seconds = 0.1\n[docker]\nhost = \"{}\"\nnetwork = \"{NETWORK}\"",
        docker_host()
    )))
}

fn daemon() -> Daemon {
    daemon_with(Options::default())
}

fn job_yaml(name: &str, image: &str, script: &str, extra_spec: &str, container_extra: &str) -> String {
    let script = script.replace('\'', "''");
    format!(
        "apiVersion: batch/v1
kind: Job
metadata:
  name: {name}
spec:
  backoffLimit: 0
{extra_spec}
  template:
    spec:
      restartPolicy: Never
      terminationGracePeriodSeconds: 2
      containers:
      - name: main
        image: {image}
        command: ['sh', '-c', '{script}']
{container_extra}
"
    )
}

fn pod_of(d: &Daemon, job: &str) -> Value {
    let pods = d.get(&format!("{PODS}?labelSelector=job-name%3D{job}"), d.admin());
    assert_eq!(pods.status, 200, "{pods}");
    pods.body["items"][0].clone()
}

fn uid_of(d: &Daemon, job: &str) -> String {
    d.get(&format!("{JOBS}/{job}"), d.admin()).body["metadata"]["uid"]
        .as_str()
        .unwrap()
        .to_string()
}

/// Container ids with this owner uid, running or not.
fn containers_of(uid: &str) -> Vec<String> {
    docker(&["ps", "-aq", "--filter", &format!("label=hearth.owner-uid={uid}")])
        .unwrap()
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_for(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let end = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn inspect(container: &str, format: &str) -> String {
    docker(&["inspect", "--format", format, container]).unwrap()
}

#[test]
fn jobs_run_in_their_image_with_exit_codes_and_logs_and_the_container_is_removed() {
    let d = daemon();
    create(
        &d,
        &job_yaml(
            "ok",
            BUSYBOX,
            "test ! -e /etc/debian_version && echo hello from the image; ls /bin/busybox; echo to stderr >&2",
            "",
            "",
        ),
    );
    create(&d, &job_yaml("bad", BUSYBOX, "echo failing; exit 3", "", ""));

    let ok = wait_finished(&d, "ok", Duration::from_secs(60));
    assert_eq!(
        condition(&ok),
        Some(("Complete".into(), "CompletionsReached".into())),
        "{ok}"
    );
    let log = d.get(&format!("{JOB_EXTRAS}/ok/logs"), d.admin());
    assert_eq!(log.status, 200, "{log}");
    assert!(log.text.contains("hello from the image"), "{}", log.text);
    assert!(log.text.contains("/bin/busybox"), "{}", log.text);
    assert!(log.text.contains("to stderr"), "{}", log.text);

    let bad = wait_finished(&d, "bad", Duration::from_secs(60));
    assert_eq!(condition(&bad).map(|c| c.0), Some("Failed".into()), "{bad}");
    let pod = pod_of(&d, "bad");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["exitCode"], 3, "{pod}");
    assert_eq!(terminated["reason"], "Error", "{pod}");
    assert!(d
        .get(&format!("{JOB_EXTRAS}/bad/logs"), d.admin())
        .text
        .contains("failing"));

    // Finished containers go once their logs are kept; the logs stay readable.
    for job in ["ok", "bad"] {
        let uid = uid_of(&d, job);
        wait_for(
            "the finished container's removal",
            Duration::from_secs(20),
            || containers_of(&uid).is_empty(),
        );
    }
    let log = d.get(&format!("{JOB_EXTRAS}/ok/logs"), d.admin());
    assert!(log.text.contains("hello from the image"), "{}", log.text);
}

#[test]
fn limits_labels_and_network_are_visible_in_docker_inspect() {
    let d = daemon();
    create(
        &d,
        &job_yaml(
            "limited",
            BUSYBOX,
            "sleep 30",
            "",
            "        resources:\n          limits: {cpu: 500m, memory: 64Mi}\n        env:\n        - {name: GREETING, value: hi}",
        ),
    );
    d.wait_until(&format!("{JOBS}/limited"), Duration::from_secs(60), |r| {
        r.body["status"]["active"] == 1
    });
    let uid = uid_of(&d, "limited");
    wait_for("the container", Duration::from_secs(20), || {
        !containers_of(&uid).is_empty()
    });
    let id = &containers_of(&uid)[0];
    assert_eq!(inspect(id, "{{.HostConfig.NanoCpus}}"), "500000000");
    assert_eq!(inspect(id, "{{.HostConfig.Memory}}"), "67108864");
    assert_eq!(inspect(id, "{{.HostConfig.NetworkMode}}"), NETWORK);
    assert_eq!(inspect(id, "{{.Config.Image}}"), BUSYBOX);
    assert_eq!(
        inspect(id, "{{index .Config.Labels \"hearth.owner-kind\"}}"),
        "Job"
    );
    assert_eq!(
        inspect(id, "{{index .Config.Labels \"hearth.owner-namespace\"}}"),
        "team"
    );
    assert_eq!(
        inspect(id, "{{index .Config.Labels \"hearth.label.job-name\"}}"),
        "limited"
    );
    assert!(inspect(id, "{{.Name}}").starts_with("/hearth-"));
    let env = inspect(id, "{{json .Config.Env}}");
    assert!(
        env.contains("GREETING=hi") && env.contains("NVIDIA_VISIBLE_DEVICES=void"),
        "{env}"
    );
    assert_eq!(d.delete(&format!("{JOBS}/limited"), d.admin()).status, 200);
    wait_for("the container's removal", Duration::from_secs(30), || {
        containers_of(&uid).is_empty()
    });
}

#[test]
fn cancel_stops_the_container_with_grace_and_a_deadline_ends_it() {
    let d = daemon();
    // Deleting the Job cancels its attempt: SIGTERM, and the trap's word reaches the log.
    create(
        &d,
        &job_yaml(
            "cancelled",
            BUSYBOX,
            "trap 'echo got TERM; exit 0' TERM; echo started; while true; do sleep 0.1; done",
            "",
            "",
        ),
    );
    // The pod's own deadline, which the runtime enforces (the Job's is the controller's).
    let slow = job_yaml("slow", BUSYBOX, "echo slow; sleep 60", "", "").replace(
        "      terminationGracePeriodSeconds: 2\n",
        "      terminationGracePeriodSeconds: 2\n      activeDeadlineSeconds: 2\n",
    );
    assert!(slow.contains("activeDeadlineSeconds: 2"), "{slow}");
    create(&d, &slow);

    d.wait_until(
        &format!("{JOB_EXTRAS}/cancelled/logs"),
        Duration::from_secs(60),
        |r| r.text.contains("started"),
    );
    let uid = uid_of(&d, "cancelled");
    let container = containers_of(&uid)[0].clone();
    assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    let begun = Instant::now();
    assert_eq!(d.delete(&format!("{JOBS}/cancelled"), d.admin()).status, 200);
    wait_for("the cancelled container to go", Duration::from_secs(30), || {
        containers_of(&uid).is_empty()
    });
    assert!(
        begun.elapsed() < Duration::from_secs(20),
        "took {:?}",
        begun.elapsed()
    );

    let slow = wait_finished(&d, "slow", Duration::from_secs(60));
    assert_eq!(condition(&slow).map(|c| c.0), Some("Failed".into()), "{slow}");
    let pod = pod_of(&d, "slow");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "DeadlineExceeded", "{pod}");
    assert!(d
        .get(&format!("{JOB_EXTRAS}/slow/logs"), d.admin())
        .text
        .contains("slow"));
    let uid = uid_of(&d, "slow");
    wait_for("the timed-out container to go", Duration::from_secs(30), || {
        containers_of(&uid).is_empty()
    });
}

#[test]
fn an_unknown_image_fails_with_the_pull_reason_naming_it() {
    let d = daemon();
    let image = "hearth-test/no-such-image:0";
    create(&d, &job_yaml("nopull", image, "true", "", ""));
    let job = wait_finished(&d, "nopull", Duration::from_secs(120));
    assert_eq!(condition(&job).map(|c| c.0), Some("Failed".into()), "{job}");
    let pod = pod_of(&d, "nopull");
    let terminated = &pod["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(terminated["reason"], "ImagePullBackOff", "{pod}");
    let message = terminated["message"].as_str().unwrap_or_default();
    assert!(message.contains(image), "{pod}");
}

#[test]
fn a_daemon_killed_and_restarted_re_adopts_the_running_container() {
    let mut d = daemon();
    create(
        &d,
        &job_yaml("survivor", BUSYBOX, "echo before; sleep 6; echo after", "", ""),
    );
    // And one that ends while the daemon is away.
    create(
        &d,
        &job_yaml(
            "quick",
            BUSYBOX,
            "echo quick start; sleep 1; echo quick end",
            "",
            "",
        ),
    );
    d.wait_until(
        &format!("{JOB_EXTRAS}/survivor/logs"),
        Duration::from_secs(60),
        |r| r.text.contains("before"),
    );
    d.wait_until(
        &format!("{JOB_EXTRAS}/quick/logs"),
        Duration::from_secs(60),
        |r| r.text.contains("quick start"),
    );
    let quick = uid_of(&d, "quick");
    let uid = uid_of(&d, "survivor");
    let container = containers_of(&uid)[0].clone();
    let started = inspect(&container, "{{.State.StartedAt}}");

    d.kill9();
    // The container does not notice.
    assert_eq!(inspect(&container, "{{.State.Running}}"), "true");
    wait_for(
        "the quick job's container to end",
        Duration::from_secs(20),
        || {
            containers_of(&quick)
                .iter()
                .all(|c| inspect(c, "{{.State.Running}}") == "false")
        },
    );
    d.restart();

    let done = wait_finished(&d, "quick", Duration::from_secs(60));
    assert_eq!(condition(&done).map(|c| c.0), Some("Complete".into()), "{done}");
    let log = d.get(&format!("{JOB_EXTRAS}/quick/logs"), d.admin()).text;
    assert_eq!(log, "quick start\nquick end\n");
    wait_for(
        "the quick job's container's removal",
        Duration::from_secs(20),
        || containers_of(&quick).is_empty(),
    );

    let job = wait_finished(&d, "survivor", Duration::from_secs(60));
    assert_eq!(
        condition(&job),
        Some(("Complete".into(), "CompletionsReached".into())),
        "{job}"
    );
    assert_eq!(job["status"]["succeeded"], 1, "{job}");
    // The same container, started once, its whole log kept.
    let log = d.get(&format!("{JOB_EXTRAS}/survivor/logs"), d.admin()).text;
    assert_eq!(log.matches("before").count(), 1, "{log}");
    assert!(log.contains("after"), "{log}");
    let pods = d.get(&format!("{PODS}?labelSelector=job-name%3Dsurvivor"), d.admin());
    assert_eq!(pods.body["items"].as_array().map(Vec::len), Some(1), "{pods}");
    let terminated = &pods.body["items"][0]["status"]["containerStatuses"][0]["state"]["terminated"];
    assert_eq!(
        terminated["startedAt"].as_str().map(|s| &s[..19]),
        Some(&started[..19]),
        "{pods}"
    );
}

#[test]
fn an_unreachable_docker_is_reported_and_workloads_wait_for_it() {
    ready_docker();
    let missing = tempfile::tempdir().unwrap();
    let socket = missing.path().join("docker.sock");
    let d = spawn_daemon_with(
        Options::default()
            .arg("--runtime")
            .arg("docker")
            .config(&format!("[docker]\nhost = \"unix://{}\"", socket.display())),
    );
    let ready = d.get("/readyz", None);
    assert_eq!(ready.status, 503, "{ready}");
    assert!(ready.text.contains(&socket.display().to_string()), "{ready}");
    let node = d.get("/hearth/v1/node", d.admin());
    assert_eq!(node.body["runtime"], "docker", "{node}");
    assert_eq!(node.body["runtime_available"], false, "{node}");
    assert!(
        node.body["runtime_reason"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist"),
        "{node}"
    );

    create(&d, &job_yaml("waiting", BUSYBOX, "true", "", ""));
    let pod = d
        .wait_until(
            &format!("{PODS}?labelSelector=job-name%3Dwaiting"),
            Duration::from_secs(20),
            |r| {
                r.body["items"][0]["status"]["containerStatuses"][0]["state"]["waiting"]["message"]
                    .as_str()
                    .is_some_and(|m| m.contains("RuntimeUnavailable"))
            },
        )
        .body;
    assert_eq!(pod["items"][0]["status"]["phase"], "Pending", "{pod}");
    std::thread::sleep(Duration::from_secs(3));
    let job = d.get(&format!("{JOBS}/waiting"), d.admin()).body;
    assert!(condition(&job).is_none(), "{job}");

    // Docker appears at that path: the daemon notices, says ready, and runs the Job.
    let real = docker_host();
    std::os::unix::fs::symlink(real.trim_start_matches("unix://"), &socket).unwrap();
    let job = wait_finished(&d, "waiting", Duration::from_secs(60));
    assert_eq!(
        condition(&job),
        Some(("Complete".into(), "CompletionsReached".into())),
        "{job}"
    );
    let ready = d.get("/readyz", None);
    assert_eq!(ready.status, 200, "{ready}");
}

/// Every file under `dir`, with its text.
fn files_under(dir: &Path) -> Vec<(std::path::PathBuf, String)> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files_under(&path));
        } else {
            out.push((path.clone(), std::fs::read_to_string(&path).unwrap_or_default()));
        }
    }
    out
}

#[test]
fn a_kfp_pipeline_runs_each_step_in_its_image_with_artifacts_and_outputs_at_their_paths() {
    use serde_json::json;
    let d = daemon();
    let token = d.admin().unwrap().to_string();
    let dataset = json!({"schemaTitle": "system.Dataset", "schemaVersion": "0.0.1"});
    let spec = json!({
        "pipelineInfo": {"name": "in-images"},
        "schemaVersion": "2.1.0",
        "sdkVersion": "kfp-2.17.0",
        "components": {
            "comp-produce": {
                "executorLabel": "exec-produce",
                "outputDefinitions": {
                    "artifacts": {"data": {"artifactType": dataset}},
                    "parameters": {"count": {"parameterType": "NUMBER_INTEGER"}},
                },
            },
            "comp-consume": {
                "executorLabel": "exec-consume",
                "inputDefinitions": {
                    "artifacts": {"data": {"artifactType": dataset}},
                    "parameters": {"count": {"parameterType": "NUMBER_INTEGER"}},
                },
                "outputDefinitions": {"artifacts": {"report": {"artifactType": dataset}}},
            },
        },
        "deploymentSpec": {"executors": {
            "exec-produce": {"container": {
                "image": BUSYBOX,
                "command": ["sh", "-c",
                    "mkdir -p \"$(dirname \"$0\")\"; echo \"rows from $(cat /etc/hostname)\" > \"$0\"; printf 3 > \"$1\"",
                    "{{$.outputs.artifacts['data'].path}}",
                    "{{$.outputs.parameters['count'].output_file}}"],
            }},
            "exec-consume": {"container": {
                "image": BUSYBOX,
                "command": ["sh", "-c",
                    "mkdir -p \"$(dirname \"$2\")\"; { cat \"$0\"; echo \"count=$1\"; echo \"consumer $(cat /etc/hostname)\"; ls /bin/busybox; } > \"$2\"",
                    "{{$.inputs.artifacts['data'].path}}",
                    "{{$.inputs.parameters['count']}}",
                    "{{$.outputs.artifacts['report'].path}}"],
            }},
        }},
        "root": {"dag": {"tasks": {
            "produce": {"taskInfo": {"name": "produce"}, "componentRef": {"name": "comp-produce"}},
            "consume": {
                "taskInfo": {"name": "consume"},
                "componentRef": {"name": "comp-consume"},
                "dependentTasks": ["produce"],
                "inputs": {
                    "artifacts": {"data": {"taskOutputArtifact": {"producerTask": "produce", "outputArtifactKey": "data"}}},
                    "parameters": {"count": {"taskOutputParameter": {"producerTask": "produce", "outputParameterKey": "count"}}},
                },
            },
        }}},
    });
    let r = d.post_json(
        "/apis/v2beta1/runs",
        Some(&token),
        &json!({"display_name": "in-images", "pipeline_spec": spec}),
    );
    assert_eq!(r.status, 200, "{r}");
    let id = r.body["run_id"].as_str().unwrap().to_string();
    let run = d.wait_until(
        &format!("/apis/v2beta1/runs/{id}"),
        Duration::from_secs(90),
        |r| ["SUCCEEDED", "FAILED"].contains(&r.body["state"].as_str().unwrap_or_default()),
    );
    assert_eq!(run.body["state"], "SUCCEEDED", "{run}\n{}", d.logs());

    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    let files = files_under(&d.data_dir.join("artifacts"));
    let report = files
        .iter()
        .find(|(_, text)| text.contains("consumer "))
        .unwrap_or_else(|| panic!("no report among {files:?}"));
    let text = &report.1;
    assert!(
        text.contains("rows from ") && text.contains("count=3") && text.contains("/bin/busybox"),
        "{text}"
    );
    // Each step had a container's host name, not this machine's.
    for line in text
        .lines()
        .filter(|l| l.starts_with("rows from ") || l.starts_with("consumer "))
    {
        let name = line.rsplit(' ').next().unwrap_or_default();
        assert!(!name.is_empty() && name != host.trim(), "{text}");
    }
}

/// A KServe custom predictor in the busybox image: `nc` answers each request with the
/// model file it finds at `/mnt/models` and the container's host name.
const PREDICTOR: &str = r#"cat > /tmp/handler.sh <<'EOF'
len=0
while read -r h; do
  h=$(printf '%s' "$h" | tr -d '\r')
  [ -z "$h" ] && break
  case "$h" in [Cc]ontent-[Ll]ength:*) len=$(echo "${h#*:}" | tr -d ' ');; esac
done
body=$(head -c "$len")
reply="{\"predictions\": [\"$(cat /mnt/models/model.txt)\", \"$(cat /etc/hostname)\"], \"got\": $body}"
printf 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s' "${#reply}" "$reply"
EOF
echo "predictor on $PORT"
exec nc -ll -p "$PORT" -e sh /tmp/handler.sh"#;

#[test]
fn an_inference_service_custom_predictor_serves_from_its_image_on_a_loopback_port() {
    use serde_json::json;
    let d = daemon();
    let model = tempfile::tempdir().unwrap();
    std::fs::write(model.path().join("model.txt"), "weights-42").unwrap();
    let isvc = json!({"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
        "metadata": {"name": "boxed"},
        "spec": {"predictor": {"minReplicas": 1, "containers": [{"name": "kserve-container",
            "image": BUSYBOX, "command": ["sh", "-c", PREDICTOR],
            "storageUri": format!("file://{}", model.path().display())}]}}});
    let base = "/apis/serving.kserve.io/v1beta1/namespaces/team/inferenceservices";
    let created = d.post_json(base, d.admin(), &isvc);
    assert_eq!(created.status, 201, "{created}");
    let ready = d.wait_until(&format!("{base}/boxed"), Duration::from_secs(90), |r| {
        r.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"))
    });
    let predicted = d
        .client
        .post(format!("{}/v1/models/boxed:predict", d.serving_url()))
        .header("Host", "boxed.team.example.com")
        .bearer_auth(d.admin().unwrap())
        .json(&json!({"instances": [7]}))
        .send()
        .unwrap();
    assert_eq!(predicted.status().as_u16(), 200, "{ready}");
    let body: Value = predicted.json().unwrap();
    assert_eq!(body["predictions"][0], "weights-42", "{body}");
    assert_eq!(body["got"], json!({"instances": [7]}), "{body}");
    let host = std::fs::read_to_string("/etc/hostname").unwrap_or_default();
    assert_ne!(
        body["predictions"][1].as_str().unwrap_or_default(),
        host.trim(),
        "{body}"
    );

    // Its port is published on the loopback address only.
    let uid = ready.body["metadata"]["uid"].as_str().unwrap().to_string();
    let containers = containers_of(&uid);
    assert_eq!(containers.len(), 1, "{containers:?}");
    let bindings = inspect(&containers[0], "{{json .HostConfig.PortBindings}}");
    let bindings: Value = serde_json::from_str(&bindings).unwrap();
    let all: Vec<&Value> = bindings
        .as_object()
        .unwrap()
        .values()
        .flat_map(|v| v.as_array().unwrap())
        .collect();
    assert!(!all.is_empty(), "{bindings}");
    assert!(all.iter().all(|b| b["HostIp"] == "127.0.0.1"), "{bindings}");
    assert_eq!(d.delete(&format!("{base}/boxed"), d.admin()).status, 200);
    wait_for("the replica's container to go", Duration::from_secs(60), || {
        containers_of(&uid).is_empty()
    });
}

#[test]
fn isolated_mode_runs_the_container_as_the_namespaces_user() {
    let prefix = format!("d{}-", std::process::id() % 100_000);
    let user = format!("{prefix}team");
    struct Gone(String);
    impl Drop for Gone {
        fn drop(&mut self) {
            let _ = Command::new("userdel").arg(&self.0).output();
            let _ = Command::new("groupdel").arg(&self.0).output();
        }
    }
    let _gone = Gone(user.clone());
    let d = daemon_with(
        Options::default()
            .env("HEARTH_ISOLATION_ENABLED", "true")
            .config(&format!("[isolation]\nuser_prefix = \"{prefix}\"")),
    );
    create(&d, &job_yaml("whoami", BUSYBOX, "echo uid=$(id -u)", "", ""));
    let job = wait_finished(&d, "whoami", Duration::from_secs(60));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    let out = Command::new("id").args(["-u", &user]).output().unwrap();
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(!uid.is_empty() && uid != "0", "no user {user}");
    let log = d.get(&format!("{JOB_EXTRAS}/whoami/logs"), d.admin()).text;
    assert_eq!(log.trim(), format!("uid={uid}"), "{log}");
}

#[test]
fn katib_trials_run_in_their_image_and_their_metrics_are_collected() {
    use serde_json::json;
    let d = daemon();
    let experiments = "/apis/kubeflow.org/v1beta1/namespaces/team/experiments";
    let doc = json!({"apiVersion": "kubeflow.org/v1beta1", "kind": "Experiment", "metadata": {"name": "boxed"},
    "spec": {
        "objective": {"type": "maximize", "goal": 99, "objectiveMetricName": "accuracy"},
        "algorithm": {"algorithmName": "random", "algorithmSettings": [{"name": "random_state", "value": "7"}]},
        "parameters": [{"name": "lr", "parameterType": "double", "feasibleSpace": {"min": "0.1", "max": "0.4", "step": "0.1"}}],
        "maxTrialCount": 3, "parallelTrialCount": 3,
        "trialTemplate": {
            "primaryContainerName": "training",
            "trialParameters": [{"name": "lr", "reference": "lr"}],
            "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"backoffLimit": 0, "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "training", "image": BUSYBOX,
                    // /etc/debian_version is the host's, not the image's: a trial on the host fails.
                    "command": ["sh", "-c", "test ! -e /etc/debian_version && echo accuracy=$LR"],
                    "env": [{"name": "LR", "value": "${trialParameters.lr}"}]}]
            }}}}
        }
    }});
    let created = d.post_json(experiments, d.admin(), &doc);
    assert_eq!(created.status, 201, "{created}");
    let done = d.wait_until(&format!("{experiments}/boxed"), Duration::from_secs(120), |r| {
        r.body["status"]["conditions"].as_array().is_some_and(|c| {
            c.iter()
                .any(|c| (c["type"] == "Succeeded" || c["type"] == "Failed") && c["status"] == "True")
        })
    });
    let status = &done.body["status"];
    assert_eq!(status["trialsSucceeded"], 3, "{done}");
    let best = &status["currentOptimalTrial"]["observation"]["metrics"][0];
    assert_eq!(best["name"], "accuracy", "{done}");
    let value: f64 = best["max"].as_str().unwrap_or("0").parse().unwrap_or(0.0);
    assert!((0.1..=0.4).contains(&value), "{done}");
}

#[test]
fn without_command_the_image_entrypoint_runs_and_an_image_is_required() {
    let d = daemon();
    // An image whose CMD speaks: made from the busybox one with `docker commit`.
    let tagged = "hearth-test/busybox-cmd:1";
    if docker(&["image", "inspect", tagged]).is_err() {
        let made = docker(&["create", BUSYBOX, "true"]).unwrap();
        docker(&[
            "commit",
            "--change",
            r#"CMD ["echo", "from the image's CMD"]"#,
            &made,
            tagged,
        ])
        .unwrap();
        docker(&["rm", &made]).unwrap();
    }
    let yaml = format!(
        "apiVersion: batch/v1\nkind: Job\nmetadata: {{name: bare}}\nspec:\n  backoffLimit: 0\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {{name: main, image: '{tagged}'}}\n"
    );
    create(&d, &yaml);
    let job = wait_finished(&d, "bare", Duration::from_secs(60));
    assert_eq!(condition(&job).map(|c| c.0), Some("Complete".into()), "{job}");
    let log = d.get(&format!("{JOB_EXTRAS}/bare/logs"), d.admin()).text;
    assert_eq!(log, "from the image's CMD\n");

    let imageless = "apiVersion: batch/v1\nkind: Job\nmetadata: {name: noimage}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n      - {name: main, command: [echo]}\n";
    let refused = d.post_yaml(JOBS, d.admin(), imageless);
    assert_eq!(refused.status, 422, "{refused}");
    assert!(refused.text.contains("containers[0].image"), "{refused}");
}
