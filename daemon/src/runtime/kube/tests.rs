//! The kube backend against a recorded API server: kube-rs's client over `tower-test`'s
//! mock service, answered from the responses a 1.33 API server gives (status
//! objects, pods, a pod log, a watch stream), every request recorded and asserted.
//! This is not a k3s or Kubernetes integration test: no API server runs.

use std::collections::BTreeMap;

use super::pod::*;
use super::*;
use crate::runtime::docker::IMAGE_PULL_BACK_OFF;
use crate::runtime::{Mount, Owner, ResourceRequest};
use ::kube::client::Body;
use http_body_util::BodyExt;
use serde_json::{json, Value};

/// One request the backend made.
#[derive(Debug, Clone)]
struct Call {
    method: String,
    path: String,
    query: BTreeMap<String, String>,
    body: Value,
}

impl Call {
    fn is(&self, method: &str, path: &str) -> bool {
        self.method == method && self.path == path
    }
}

/// An answer: HTTP status and body, or `None` for a connection that fails.
type Answer = Option<(u16, String)>;

type Calls = Arc<Mutex<Vec<Call>>>;

/// A client whose every request is recorded and answered by `answer`.
fn recorded_api(answer: impl Fn(&Call) -> Answer + Send + Sync + 'static) -> (Client, Calls) {
    let (service, mut handle) = tower_test::mock::pair::<hyper::Request<Body>, hyper::Response<Body>>();
    let calls: Calls = Arc::default();
    let recorded = Arc::clone(&calls);
    tokio::spawn(async move {
        while let Some((request, respond)) = handle.next_request().await {
            let (parts, body) = request.into_parts();
            let bytes = body.collect().await.map(|b| b.to_bytes()).unwrap_or_default();
            let call = Call {
                method: parts.method.to_string(),
                path: parts.uri.path().to_string(),
                query: url::form_urlencoded::parse(parts.uri.query().unwrap_or("").as_bytes())
                    .into_owned()
                    .collect(),
                body: serde_json::from_slice(&bytes).unwrap_or(Value::Null),
            };
            let reply = answer(&call);
            recorded.lock().unwrap().push(call);
            match reply {
                Some((status, body)) => respond.send_response(
                    hyper::Response::builder()
                        .status(status)
                        .header("content-type", "application/json")
                        .body(Body::from(body.into_bytes()))
                        .unwrap(),
                ),
                None => respond.send_error(std::io::Error::new(
                    std::io::ErrorKind::ConnectionRefused,
                    "connection refused",
                )),
            }
        }
    });
    (Client::new(service, "default"), calls)
}

fn status(code: u16, reason: &str, message: &str) -> Answer {
    Some((
        code,
        json!({"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure",
               "message": message, "reason": reason, "code": code})
        .to_string(),
    ))
}

fn ok(value: &Value) -> Answer {
    Some((200, value.to_string()))
}

fn workload() -> Workload {
    Workload {
        id: "Job-u1-0".into(),
        owner: Owner {
            kind: "Job".into(),
            namespace: "team".into(),
            name: "train".into(),
            uid: "u1".into(),
        },
        labels: [("job-name".to_string(), "train".to_string())].into(),
        image: Some("busybox:1.36".into()),
        command: vec!["sh".into(), "-c".into(), "echo hi".into()],
        env: vec![("A".into(), "1".into())],
        mounts: vec![Mount {
            source: "/var/lib/hearth/artifacts/x".into(),
            target: "/mnt/x".into(),
            read_only: true,
        }],
        resources: ResourceRequest {
            cpu_millis: 500,
            memory_bytes: 64 << 20,
            gpus: 1,
        },
        gpu_uuids: vec!["GPU-aaa".into()],
        active_deadline_seconds: Some(30),
        termination_grace_seconds: 5,
        ..Default::default()
    }
}

fn config() -> KubeConfig {
    KubeConfig {
        kubeconfig: None,
        namespace: "hearth".into(),
        node_name: Some("ws".into()),
    }
}

const POD_PATH: &str = "/api/v1/namespaces/hearth/pods";

fn pod_path(id: &str) -> String {
    format!("{POD_PATH}/{}", pod_name(id))
}

/// The manifest as the API server returns it, with a status.
fn with_status(manifest: &Value, version: &str, status: Value) -> Value {
    let mut pod = manifest.clone();
    pod["metadata"]["resourceVersion"] = json!(version);
    pod["metadata"]["uid"] = json!("0b6a7c1e-1111-4f0e-9d3c-2a4b5c6d7e8f");
    pod["status"] = status;
    pod
}

fn running(ip: &str) -> Value {
    json!({
        "phase": "Running",
        "podIP": ip,
        "startTime": "2026-12-02T10:00:00Z",
        "containerStatuses": [{
            "name": CONTAINER, "image": "busybox:1.36", "imageID": "", "ready": true,
            "restartCount": 0,
            "state": {"running": {"startedAt": "2026-12-02T10:00:01Z"}},
        }],
    })
}

fn terminated(phase: &str, code: i32, reason: &str) -> Value {
    json!({
        "phase": phase,
        "podIP": "10.42.0.9",
        "startTime": "2026-12-02T10:00:00Z",
        "containerStatuses": [{
            "name": CONTAINER, "image": "busybox:1.36", "imageID": "", "ready": false,
            "restartCount": 0,
            "state": {"terminated": {"exitCode": code, "reason": reason,
                "startedAt": "2026-12-02T10:00:01Z", "finishedAt": "2026-12-02T10:00:09Z"}},
        }],
    })
}

fn manifest_json(w: &Workload) -> Value {
    serde_json::to_value(pod_manifest(w, "hearth", Some("ws"), &PodUser::default())).unwrap()
}

const LOG_BODY: &str = "2026-12-02T10:00:02.000000001Z hello\n2026-12-02T10:00:03.000000002Z world\n";

fn log_query() -> BTreeMap<String, String> {
    [
        ("container", CONTAINER),
        ("follow", "true"),
        ("timestamps", "true"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn without_logs(calls: &Calls) -> Vec<Call> {
    calls
        .lock()
        .unwrap()
        .iter()
        .filter(|c| !c.path.ends_with("/log"))
        .cloned()
        .collect()
}

/// create: namespace, the pod looked for by name, then made (its body checked);
/// logs: followed with times into `output.log`; watch: from the version read, on
/// the pod's name, until it succeeded; the end comes from the recorded status.
#[tokio::test]
async fn start_creates_the_pod_copies_its_log_and_wait_watches_it_end() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload();
    let created: Arc<Mutex<Option<Value>>> = Arc::default();
    let state = Arc::clone(&created);
    let name = pod_name(&w.id);
    let (client, calls) = recorded_api(move |call| {
        let mut created = state.lock().unwrap();
        match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v1/namespaces") => {
                status(409, "AlreadyExists", "namespaces \"hearth\" already exists")
            }
            ("POST", POD_PATH) => {
                let pod = with_status(&call.body, "5", json!({"phase": "Pending"}));
                *created = Some(pod.clone());
                Some((201, pod.to_string()))
            }
            ("GET", p) if p == pod_path("Job-u1-0") => match created.as_ref() {
                None => status(
                    404,
                    "NotFound",
                    &format!("pods \"{}\" not found", pod_name("Job-u1-0")),
                ),
                Some(pod) => ok(&with_status(pod, "7", running("10.42.0.9"))),
            },
            ("GET", p) if p == format!("{}/log", pod_path("Job-u1-0")) => Some((200, LOG_BODY.into())),
            ("GET", POD_PATH) if call.query.get("watch").map(String::as_str) == Some("true") => {
                let pod = created.as_ref().unwrap();
                let event = json!({"type": "MODIFIED", "object": with_status(pod, "8", terminated("Succeeded", 0, "Completed"))});
                Some((200, format!("{event}\n")))
            }
            _ => status(404, "NotFound", "not recorded"),
        }
    });
    let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();

    // Pending, not started: seen running from now.
    assert!(matches!(rt.start(&w).await.unwrap(), RunState::Running { .. }));
    let exit = rt.wait(&w.id).await.unwrap();
    assert_eq!(exit.reason, "Completed");
    assert_eq!(exit.exit_code, Some(0));
    assert_eq!(exit.started_at.as_deref(), Some("2026-12-02T10:00:01Z"));
    assert_eq!(exit.finished_at, "2026-12-02T10:00:09Z");
    // Kept: a second wait and status read it from disk, asking nothing.
    let asked = calls.lock().unwrap().len();
    assert_eq!(rt.wait(&w.id).await.unwrap(), exit);
    assert_eq!(rt.status(&w.id).await.unwrap(), RunState::Exited(exit));
    assert_eq!(calls.lock().unwrap().len(), asked);

    // The log, copied with its times.
    let files = rt.logs(&w.id).await.unwrap().files;
    assert_eq!(
        std::fs::read_to_string(files.last().unwrap()).unwrap(),
        "hello\nworld\n"
    );
    let times = crate::runtime::log_times::LineTimes::of(files.last().unwrap())
        .unwrap()
        .unwrap();
    assert_eq!(times.at(0), Some(1_796_205_602_000_000_001));
    assert_eq!(times.at(6), Some(1_796_205_603_000_000_002));

    let all = calls.lock().unwrap().clone();
    let logs: Vec<&Call> = all.iter().filter(|c| c.path.ends_with("/log")).collect();
    assert_eq!(logs.len(), 1, "{all:#?}");
    assert_eq!(logs[0].method, "GET");
    assert_eq!(logs[0].path, format!("{}/log", pod_path(&w.id)));
    assert_eq!(logs[0].query, log_query());

    let calls = without_logs(&calls);
    let shape: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| (c.method.as_str(), c.path.as_str()))
        .collect();
    let pod = pod_path(&w.id);
    assert_eq!(
        shape,
        [
            ("POST", "/api/v1/namespaces"),
            ("GET", pod.as_str()),
            ("POST", POD_PATH),
            ("GET", pod.as_str()),
            ("GET", POD_PATH),
        ],
        "{calls:#?}"
    );
    assert_eq!(calls[0].body["metadata"]["name"], "hearth");
    // The create: the pod's name, labels, owner, command, limits, GPU wiring.
    let body = &calls[2].body;
    assert!(calls[2].query.is_empty(), "{:?}", calls[2].query);
    assert_eq!(body["metadata"]["name"], name);
    assert_eq!(body["metadata"]["namespace"], "hearth");
    assert_eq!(body["metadata"]["labels"][LABEL_MANAGED_BY.0], "hearth");
    assert_eq!(body["metadata"]["labels"][LABEL_OWNER_UID], "u1");
    assert_eq!(body["metadata"]["annotations"][ANNOTATION_WORKLOAD], "Job-u1-0");
    assert_eq!(
        body["metadata"]["annotations"][ANNOTATION_LABELS],
        r#"{"job-name":"train"}"#
    );
    let spec = &body["spec"];
    assert_eq!(spec["restartPolicy"], "Never");
    assert_eq!(spec["activeDeadlineSeconds"], 30);
    assert_eq!(spec["terminationGracePeriodSeconds"], 5);
    assert_eq!(spec["runtimeClassName"], "nvidia");
    assert_eq!(
        spec["tolerations"],
        json!([{"key": "nvidia.com/gpu", "operator": "Equal", "value": "present", "effect": "NoSchedule"}])
    );
    assert_eq!(spec["nodeSelector"], json!({"kubernetes.io/hostname": "ws"}));
    assert_eq!(spec["automountServiceAccountToken"], false);
    let c = &spec["containers"][0];
    assert_eq!(c["name"], CONTAINER);
    assert_eq!(c["image"], "busybox:1.36");
    assert_eq!(c["command"], json!(["sh"]));
    assert_eq!(c["args"], json!(["-c", "echo hi"]));
    assert_eq!(
        c["resources"]["limits"],
        json!({"cpu": "500m", "memory": "67108864", "nvidia.com/gpu": "1"})
    );
    assert_eq!(
        c["resources"]["requests"],
        json!({"cpu": "500m", "memory": "67108864"})
    );
    assert_eq!(
        c["volumeMounts"],
        json!([{"name": "mount-0", "mountPath": "/mnt/x", "readOnly": true}])
    );
    assert_eq!(
        spec["volumes"][0]["hostPath"]["path"],
        "/var/lib/hearth/artifacts/x"
    );
    let env = c["env"].as_array().unwrap();
    assert!(env.contains(&json!({"name": "A", "value": "1"})));
    assert!(env.contains(&json!({"name": "HEARTH_WORKLOAD_ID", "value": "Job-u1-0"})));
    // The device plugin sets the GPUs' variable; a GPU pod must not override it.
    assert!(
        !env.iter().any(|e| e["name"] == "NVIDIA_VISIBLE_DEVICES"),
        "{env:?}"
    );
    // The watch: on the pod's name, from the version the GET read.
    let expected: BTreeMap<String, String> = [
        ("watch", "true"),
        ("timeoutSeconds", "290"),
        ("fieldSelector", format!("metadata.name={name}").as_str()),
        ("allowWatchBookmarks", "true"),
        ("resourceVersion", "7"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    assert_eq!(calls[4].query, expected);
}

/// Re-adoption after a daemon restart: a new backend with an empty data dir finds
/// the running pod by name and makes nothing; `list` finds pods by label; the
/// loopback port is relayed to the pod IP.
#[tokio::test]
async fn a_restarted_daemon_adopts_the_running_pod_and_relays_its_port() {
    let dir = tempfile::tempdir().unwrap();
    // The pod listens on its own IP (127.0.0.2 stands for it), the relay on
    // 127.0.0.1, both at the workload's port: one free on 127.0.0.1 (held until the
    // backend starts, so that no other listener there answers in its place).
    let (held, upstream) = loop {
        let held = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let port = held.local_addr().unwrap().port();
        if let Ok(upstream) = tokio::net::TcpListener::bind(("127.0.0.2", port)).await {
            break (held, upstream);
        }
    };
    let port = upstream.local_addr().unwrap().port();
    let mut w = workload();
    w.id = "InferenceService-u2-r1".into();
    w.owner.uid = "u2".into();
    w.ports = vec![port];
    w.resources.gpus = 0;
    w.mounts.clear();
    let pod = with_status(&manifest_json(&w), "41", running("127.0.0.2"));
    let mut other = with_status(&manifest_json(&workload()), "42", running("10.42.0.10"));
    other["metadata"]["annotations"][ANNOTATION_OWNER_UID] = json!("u2-other");
    let (for_api, id) = (pod.clone(), w.id.clone());
    let (client, calls) = recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/api/v1/namespaces") => Some((
            201,
            json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "hearth"}}).to_string(),
        )),
        ("GET", p) if p == pod_path(&id) => ok(&for_api),
        ("GET", p) if p == format!("{}/log", pod_path(&id)) => Some((200, LOG_BODY.into())),
        ("GET", POD_PATH) => ok(
            &json!({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "50"},
                                       "items": [for_api, other]}),
        ),
        _ => status(404, "NotFound", "not recorded"),
    });
    let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();

    drop(held);
    let state = rt.start(&w).await.unwrap();
    assert_eq!(
        state,
        RunState::Running {
            started_at: "2026-12-02T10:00:01Z".into()
        }
    );
    assert_eq!(rt.status(&w.id).await.unwrap(), state);
    assert!(
        !calls.lock().unwrap().iter().any(|c| c.is("POST", POD_PATH)),
        "adopting must not make a pod"
    );

    // list by owner: the label selector, and only that owner's ids.
    assert_eq!(rt.list(Some("u2")).await.unwrap(), vec![w.id.clone()]);
    assert_eq!(
        rt.list(None).await.unwrap(),
        vec![w.id.clone(), "Job-u1-0".to_string()]
    );
    let lists: Vec<Call> = without_logs(&calls)
        .into_iter()
        .filter(|c| c.is("GET", POD_PATH))
        .collect();
    assert_eq!(lists.len(), 2);
    assert_eq!(
        lists[0].query,
        [("labelSelector".to_string(), "hearth.dev/owner-uid=u2".to_string())].into()
    );
    assert_eq!(
        lists[1].query,
        [(
            "labelSelector".to_string(),
            "app.kubernetes.io/managed-by=hearth".to_string()
        )]
        .into()
    );

    // The relay: 127.0.0.1:<port> reaches the pod's IP.
    let server = tokio::spawn(async move {
        let (mut s, _) = upstream.accept().await.unwrap();
        let mut buf = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut s, &mut buf)
            .await
            .unwrap();
        tokio::io::AsyncWriteExt::write_all(&mut s, b"pong")
            .await
            .unwrap();
        buf
    });
    let exchange = async {
        let mut conn = loop {
            match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
                Ok(c) => break c,
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        };
        tokio::io::AsyncWriteExt::write_all(&mut conn, b"ping")
            .await
            .unwrap();
        let mut reply = [0u8; 4];
        tokio::io::AsyncReadExt::read_exact(&mut conn, &mut reply)
            .await
            .unwrap();
        reply
    };
    let reply = tokio::time::timeout(Duration::from_secs(20), exchange)
        .await
        .expect("the relay answers within 20 s");
    assert_eq!(&reply, b"pong");
    let sent = tokio::time::timeout(Duration::from_secs(20), server)
        .await
        .unwrap();
    assert_eq!(&sent.unwrap(), b"ping");
}

/// stop: recorded, then the pod deleted (its own grace period applies); the watch
/// sees it go, and the end is `Stopped`. forget then deletes nothing more.
#[tokio::test]
async fn stop_deletes_the_pod_and_the_end_is_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let w = workload();
    let deleted = Arc::new(AtomicBool::new(false));
    let gone = Arc::clone(&deleted);
    let pod = with_status(&manifest_json(&w), "7", running("10.42.0.9"));
    let (client, calls) = recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
        ("POST", "/api/v1/namespaces") => status(409, "AlreadyExists", "exists"),
        ("GET", p) if p == pod_path("Job-u1-0") && gone.load(Ordering::SeqCst) => {
            status(404, "NotFound", "gone")
        }
        ("GET", p) if p == pod_path("Job-u1-0") => ok(&pod),
        ("DELETE", p) if p == pod_path("Job-u1-0") => {
            gone.store(true, Ordering::SeqCst);
            let mut terminating = pod.clone();
            terminating["metadata"]["deletionTimestamp"] = json!("2026-12-02T10:01:00Z");
            ok(&terminating)
        }
        ("GET", p) if p == format!("{}/log", pod_path("Job-u1-0")) => Some((200, LOG_BODY.into())),
        _ => status(404, "NotFound", "not recorded"),
    });
    let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
    assert!(matches!(rt.start(&w).await.unwrap(), RunState::Running { .. }));
    rt.stop(&w.id).await.unwrap();
    assert!(deleted.load(Ordering::SeqCst));
    let exit = rt.wait(&w.id).await.unwrap();
    assert_eq!(exit.reason, "Stopped");
    rt.forget(&w.id).await.unwrap();
    let calls = without_logs(&calls);
    let deletes: Vec<&Call> = calls.iter().filter(|c| c.method == "DELETE").collect();
    assert_eq!(deletes.len(), 1, "{calls:#?}");
    assert_eq!(deletes[0].path, pod_path(&w.id));
    assert!(deletes[0].query.is_empty(), "{:?}", deletes[0].query);
    // No grace period of Hearth's: the pod's terminationGracePeriodSeconds holds.
    assert!(
        deletes[0].body.get("gracePeriodSeconds").is_none(),
        "{:?}",
        deletes[0].body
    );
}

/// forget on an ended pod: the log drained, the end recorded from its status
/// (exit code, OOM, deadline, image pull), then the pod deleted.
#[tokio::test]
async fn forget_records_how_the_pod_ended_then_deletes_it() {
    let w = workload();
    let cases = [
        (
            terminated("Failed", 3, "Error"),
            "Error",
            Some(3),
            "exited with code 3",
        ),
        (
            terminated("Failed", 137, "OOMKilled"),
            "OOMKilled",
            Some(137),
            "killed for exceeding its memory limit (exit code 137)",
        ),
        (
            {
                let mut s = terminated("Failed", 137, "Error");
                s["reason"] = json!("DeadlineExceeded");
                s["message"] = json!("Pod was active on the node longer than the specified deadline");
                s
            },
            "DeadlineExceeded",
            Some(137),
            "ran longer than activeDeadlineSeconds (30s)",
        ),
        (
            json!({"phase": "Pending", "containerStatuses": [{"name": CONTAINER, "image": "busybox:nope",
                "imageID": "", "ready": false, "restartCount": 0,
                "state": {"waiting": {"reason": "ImagePullBackOff",
                    "message": "Back-off pulling image \"busybox:nope\""}}}]}),
            IMAGE_PULL_BACK_OFF,
            None,
            "Back-off pulling image \"busybox:nope\"",
        ),
    ];
    for (pod_status, reason, code, message) in cases {
        let dir = tempfile::tempdir().unwrap();
        let pod = with_status(&manifest_json(&w), "9", pod_status);
        let (client, calls) = recorded_api(move |call| match (call.method.as_str(), call.path.as_str()) {
            ("POST", "/api/v1/namespaces") => status(409, "AlreadyExists", "exists"),
            ("GET", p) if p == pod_path("Job-u1-0") => ok(&pod),
            ("GET", p) if p.ends_with("/log") && pod["status"]["phase"] == "Pending" => status(
                400,
                "BadRequest",
                "container \"workload\" in pod is waiting to start: trying and failing to pull image",
            ),
            ("GET", p) if p.ends_with("/log") => Some((200, LOG_BODY.into())),
            ("DELETE", p) if p == pod_path("Job-u1-0") => ok(&pod),
            _ => status(404, "NotFound", "not recorded"),
        });
        let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
        let RunState::Exited(seen) = rt.status(&w.id).await.unwrap() else {
            panic!("{reason}: the pod ended")
        };
        rt.forget(&w.id).await.unwrap();
        let exit = read_exit(&dir.path().join(&w.id)).unwrap();
        // Never ran: it ended when seen, by status and by forget alike.
        assert_eq!(
            ExitInfo {
                finished_at: String::new(),
                ..exit.clone()
            },
            ExitInfo {
                finished_at: String::new(),
                ..seen
            },
            "{reason}"
        );
        assert_eq!(
            (exit.reason.as_str(), exit.exit_code, exit.message.as_str()),
            (reason, code, message)
        );
        let calls = without_logs(&calls);
        let shape: Vec<(&str, &str)> = calls
            .iter()
            .map(|c| (c.method.as_str(), c.path.as_str()))
            .collect();
        let path = pod_path(&w.id);
        let mut expected = vec![
            ("POST", "/api/v1/namespaces"),
            ("GET", path.as_str()),
            ("GET", path.as_str()),
        ];
        // The log copy asks for the log, is told the container never started (400),
        // and reads the pod to see that it ended.
        if reason == IMAGE_PULL_BACK_OFF {
            expected.push(("GET", path.as_str()));
        }
        expected.push(("DELETE", path.as_str()));
        assert_eq!(shape, expected, "{reason}");
    }
}

/// An API server that cannot be reached: nothing changes, the call says why, and
/// the availability follows (the scheduler admits nothing meanwhile).
#[tokio::test]
async fn an_unreachable_api_server_makes_the_backend_unavailable() {
    let dir = tempfile::tempdir().unwrap();
    let (client, calls) = recorded_api(|_| None);
    let rt = KubeRuntime::with_client(dir.path().to_path_buf(), 1 << 20, config(), client).unwrap();
    match rt.start(&workload()).await {
        Err(RuntimeError::Unavailable {
            runtime: "kube",
            reason,
        }) => {
            assert!(reason.contains("does not answer"), "{reason}")
        }
        other => panic!("{other:?}"),
    }
    assert!(rt.availability().is_err());
    assert!(read_exit(&dir.path().join("Job-u1-0")).is_none());
    let probe = rt.probe().await.unwrap_err();
    assert!(probe.contains("does not answer"), "{probe}");
    assert!(!calls
        .lock()
        .unwrap()
        .iter()
        .any(|c| c.method == "POST" && c.path == POD_PATH));
}

/// A k3s whose kubeconfig is not written yet: unavailable, naming it.
#[tokio::test]
async fn k3s_mode_waits_for_the_kubeconfig() {
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("k3s/kubeconfig.yaml");
    let rt = KubeRuntime::new(
        dir.path().join("workloads"),
        1 << 20,
        KubeConfig {
            kubeconfig: Some(kubeconfig.clone()),
            ..config()
        },
        "k3s",
    )
    .unwrap();
    let reason = rt.probe().await.unwrap_err();
    assert!(reason.contains("k3s has not written its kubeconfig"), "{reason}");
    assert!(reason.contains(&kubeconfig.display().to_string()), "{reason}");
    match rt.status("x").await {
        Err(RuntimeError::Unavailable { runtime: "k3s", .. }) => {}
        other => panic!("{other:?}"),
    }
}

#[test]
fn pod_names_are_dns_labels_stable_and_distinct() {
    let long = format!(
        "PipelineRun-{}-Step_With.Odd--Chars",
        "0b6a7c1e-1111-4f0e-9d3c-2a4b5c6d7e8f"
    );
    for id in ["Job-u1-0", long.as_str(), "___", "job-u1-0"] {
        let name = pod_name(id);
        assert!(valid_namespace(&name), "{name}");
        assert_eq!(name, pod_name(id));
    }
    assert_ne!(pod_name("Job-u1-0"), pod_name("job-u1-0"));
    assert!(pod_name(&long).len() <= 63);
}

/// One workload of each kind as its controller makes it (the fields that shape the
/// pod), with and without GPUs.
fn workloads_of_each_kind() -> Vec<(String, Workload)> {
    let owner = |kind: &str| Owner {
        kind: kind.into(),
        namespace: "team".into(),
        name: format!("{}-x", kind.to_lowercase()),
        uid: "8d4f7a0e-5b7e-4c1e-9f7a-3c2b1a0d9e8f".into(),
    };
    let base = |kind: &str, suffix: &str| Workload {
        id: format!("{kind}-8d4f7a0e-5b7e-4c1e-9f7a-3c2b1a0d9e8f-{suffix}"),
        owner: owner(kind),
        image: Some("python:3.12-slim".into()),
        termination_grace_seconds: 10,
        resources: ResourceRequest {
            cpu_millis: 1000,
            memory_bytes: 1 << 30,
            gpus: 0,
        },
        ..Default::default()
    };
    let job = Workload {
        labels: [
            ("job-name".to_string(), "job-x".to_string()),
            (
                "batch.kubernetes.io/job-completion-index".to_string(),
                "0".to_string(),
            ),
        ]
        .into(),
        command: vec!["python".into(), "train.py".into()],
        active_deadline_seconds: Some(3600),
        ..base("Job", "0-0")
    };
    let step = Workload {
        labels: [(
            "pipelines.kubeflow.org/task".to_string(),
            "preprocess".to_string(),
        )]
        .into(),
        command: vec!["sh".into(), "-c".into(), "python -m kfp.dsl.executor_main".into()],
        working_dir: Some("/kfp/step".into()),
        mounts: vec![
            Mount {
                source: "/var/lib/hearth/pipelines/run/step".into(),
                target: "/kfp/step".into(),
                read_only: false,
            },
            Mount {
                source: "/var/lib/hearth/artifacts".into(),
                target: "/kfp/artifacts".into(),
                read_only: true,
            },
        ],
        env: vec![("KFP_POD_NAME".into(), "preprocess".into())],
        ..base("PipelineRun", "preprocess")
    };
    let trial = Workload {
        labels: [("katib.kubeflow.org/trial".to_string(), "exp-abc".to_string())].into(),
        command: vec!["python".into(), "train.py".into(), "--lr=0.01".into()],
        ..base("Trial", "0")
    };
    let replica = Workload {
        ports: vec![39001],
        command: vec!["mlserver".into(), "start".into(), "/mnt/models".into()],
        mounts: vec![Mount {
            source: "/var/lib/hearth/models/m".into(),
            target: "/mnt/models".into(),
            read_only: true,
        }],
        env: vec![("MLSERVER_HTTP_PORT".into(), "39001".into())],
        ..base("InferenceService", "predictor-1")
    };
    let notebook = Workload {
        ports: vec![39002],
        image: Some("kubeflownotebookswg/jupyter-scipy:v1.10.0".into()),
        command: Vec::new(),
        mounts: vec![Mount {
            source: "/var/lib/hearth/workspaces/team/nb".into(),
            target: "/home/jovyan".into(),
            read_only: false,
        }],
        security_context: Some(crate::runtime::identity::SecurityContext {
            run_as_user: Some(1000),
            run_as_group: Some(100),
            fs_group: Some(100),
            run_as_non_root: Some(true),
            path: "spec.template.spec.securityContext".into(),
        }),
        ..base("Notebook", "0")
    };
    let mut all = Vec::new();
    for (kind, w) in [
        ("job-attempt", job),
        ("pipeline-step", step),
        ("trial", trial),
        ("model-replica", replica),
        ("notebook", notebook),
    ] {
        let mut gpu = w.clone();
        gpu.id.push_str("-gpu");
        gpu.resources.gpus = 2;
        gpu.gpu_uuids = vec!["GPU-a".into(), "GPU-b".into()];
        all.push((kind.to_string(), w));
        all.push((format!("{kind}-gpu"), gpu));
    }
    all
}

#[test]
fn every_kind_maps_to_a_pod_that_runs_once_with_its_gpus() {
    for (kind, w) in workloads_of_each_kind() {
        let pod =
            serde_json::to_value(pod_manifest(&w, "hearth", Some("ws"), &PodUser::from_spec(&w))).unwrap();
        let spec = &pod["spec"];
        assert_eq!(spec["restartPolicy"], "Never", "{kind}");
        let limits = &spec["containers"][0]["resources"]["limits"];
        if kind.ends_with("-gpu") {
            assert_eq!(limits["nvidia.com/gpu"], "2", "{kind}");
            assert_eq!(spec["runtimeClassName"], "nvidia", "{kind}");
            assert_eq!(spec["tolerations"][0]["key"], "nvidia.com/gpu", "{kind}");
        } else {
            assert!(limits.get("nvidia.com/gpu").is_none(), "{kind}");
            assert!(spec.get("runtimeClassName").is_none(), "{kind}");
            assert!(spec.get("tolerations").is_none(), "{kind}");
            assert!(spec["containers"][0]["env"]
                .as_array()
                .unwrap()
                .contains(&json!({"name": "NVIDIA_VISIBLE_DEVICES", "value": "void"})));
        }
        assert_eq!(spec["nodeSelector"].is_object(), !w.mounts.is_empty(), "{kind}");
        let ports: Vec<u16> = w.ports.clone();
        let declared: Vec<u16> = spec["containers"][0]["ports"]
            .as_array()
            .map(|p| {
                p.iter()
                    .map(|p| p["containerPort"].as_u64().unwrap() as u16)
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(declared, ports, "{kind}");
    }
    let notebook = workloads_of_each_kind()
        .into_iter()
        .find(|(k, _)| k == "notebook")
        .unwrap()
        .1;
    let pod = serde_json::to_value(pod_manifest(
        &notebook,
        "hearth",
        None,
        &PodUser::from_spec(&notebook),
    ))
    .unwrap();
    assert_eq!(
        pod["spec"]["securityContext"],
        json!({"runAsUser": 1000, "runAsGroup": 100, "fsGroup": 100, "runAsNonRoot": true})
    );
    // No command: the image's entrypoint and CMD run.
    assert!(pod["spec"]["containers"][0].get("command").is_none());
    assert!(pod["spec"]["containers"][0].get("args").is_none());
    assert!(
        pod["spec"].get("nodeSelector").is_none(),
        "no node known: not pinned"
    );
}

/// `kubernetes-validate` from the venv `scripts/test` builds from
/// tests/requirements-k3s.txt (`$HEARTH_KUBERNETES_VALIDATE` overrides), as
/// tests/tests/k3s_layer.rs finds it.
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

/// Every pod the backend makes, each workload kind with and without GPUs, passes
/// `kubernetes-validate --strict` against the Kubernetes 1.33 schemas.
#[test]
fn pod_manifests_pass_kubernetes_validate_strict() {
    let dir = tempfile::tempdir().unwrap();
    let mut files = Vec::new();
    let user = PodUser {
        uid: Some(61000),
        gid: Some(61000),
        fs_group: None,
        groups: vec![44, 109],
        run_as_non_root: None,
    };
    for (kind, w) in workloads_of_each_kind() {
        for (suffix, user) in [("", PodUser::from_spec(&w)), ("-isolated", user.clone())] {
            let path = dir.path().join(format!("{kind}{suffix}.json"));
            let pod = pod_manifest(&w, "hearth", Some("ws"), &user);
            // As the API server is sent it (k8s-openapi writes apiVersion and kind).
            let value = serde_json::to_value(&pod).unwrap();
            assert_eq!(
                (&value["apiVersion"], &value["kind"]),
                (&json!("v1"), &json!("Pod"))
            );
            std::fs::write(&path, serde_json::to_vec_pretty(&value).unwrap()).unwrap();
            files.push(path);
        }
    }
    let out = std::process::Command::new(kubernetes_validate())
        .args(["--strict", "--kubernetes-version", "1.33.0"])
        .args(&files)
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
        files.len(),
        "{text}"
    );
    assert_eq!(files.len(), 20);
}
