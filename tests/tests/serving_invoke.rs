//! The try-it route: `POST /hearth/v1/namespaces/{ns}/inferenceservices/{name}/inference`
//! sends one KServe V1 or V2 call through the real data plane to a real replica, as the
//! caller (bearer token or web session), within the caller's namespaces only.

use std::time::Duration;

use hearth_e2e::{spawn_daemon_with, Daemon, Options, Reply};
use reqwest::Method;
use serde_json::{json, Value};

/// A custom predictor that adds each row: V1 `instances` (rows of numbers) and V2 JSON
/// tensors of shape `[rows, cols]`; V2 metadata at `GET /v2/models/adder`; a bad body
/// gets its own 400.
const ADDER: &str = r#"
import http.server, json, os
META = {"name": "adder", "platform": "python", "inputs": [{"name": "x", "datatype": "FP64", "shape": [-1, 3]}],
        "outputs": [{"name": "sum", "datatype": "FP64", "shape": [-1]}]}
class H(http.server.BaseHTTPRequestHandler):
    def answer(self, code, doc):
        body = json.dumps(doc).encode()
        self.send_response(code)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def do_POST(self):
        doc = json.loads(self.rfile.read(int(self.headers.get("content-length") or 0)) or b"{}")
        try:
            if self.path.endswith(":predict"):
                return self.answer(200, {"predictions": [sum(row) for row in doc["instances"]],
                                         "credential_seen": "authorization" in self.headers})
            t = doc["inputs"][0]
            cols = t["shape"][1]
            rows = [t["data"][i:i + cols] for i in range(0, len(t["data"]), cols)]
            return self.answer(200, {"model_name": "adder", "outputs": [
                {"name": "sum", "datatype": "FP64", "shape": [len(rows)], "data": [sum(r) for r in rows]}]})
        except Exception as e:
            return self.answer(400, {"error": "bad input: %r" % e})
    def do_GET(self):
        self.answer(200, META if self.path == "/v2/models/adder" else {})
    def log_message(self, *args):
        pass
http.server.ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;

const LIMIT: usize = 64 * 1024;

/// `adder` needs a token on the data plane; `open-adder` is the same model without.
fn adder(name: &str, require_token: bool) -> Value {
    json!({
        "apiVersion": "serving.kserve.io/v1beta1",
        "kind": "InferenceService",
        "metadata": {"name": name, "annotations": {"serving.hearth.dev/require-token": require_token.to_string()}},
        "spec": {"predictor": {"minReplicas": 1, "containers": [{
            "name": "kserve-container",
            "image": "example/adder:latest",
            "command": ["python3", "-c", ADDER]
        }]}}
    })
}

fn route(namespace: &str, name: &str) -> String {
    format!("/hearth/v1/namespaces/{namespace}/inferenceservices/{name}/inference")
}

fn call(d: &Daemon, token: &str, namespace: &str, name: &str, body: &Value) -> Reply {
    d.post_json(&route(namespace, name), Some(token), body)
}

fn ready(d: &Daemon, token: &str, name: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    loop {
        let x = d.get(
            &format!("/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices/{name}"),
            Some(token),
        );
        let ready = x.body["status"]["conditions"]
            .as_array()
            .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
        if ready {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{name} not Ready: {x}\n{}",
            d.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn one_call_through_the_data_plane_as_the_caller_within_their_namespace() {
    let d = spawn_daemon_with(Options::default().config(&format!("max_body_bytes = {LIMIT}")));
    let alice = d.create_user("alice");
    let bob = d.create_user("bob");
    for (name, require_token) in [("adder", true), ("open-adder", false)] {
        let created = d.post_json(
            "/apis/serving.kserve.io/v1beta1/namespaces/alice/inferenceservices",
            Some(&alice),
            &adder(name, require_token),
        );
        assert_eq!(created.status, 201, "{created}");
    }
    ready(&d, &alice, "adder");
    ready(&d, &alice, "open-adder");

    // The service needs a token on the data plane: a direct call without one is refused,
    // so the route's success below is the caller's own token at work.
    let direct = d
        .client
        .post(format!("{}/v1/models/adder:predict", d.serving_url()))
        .header("host", "adder.alice.example.com")
        .json(&json!({"instances": [[1, 2, 3]]}))
        .send()
        .unwrap();
    assert_eq!(direct.status().as_u16(), 401);

    // V1 predict with a bearer token.
    let v1 = call(
        &d,
        &alice,
        "alice",
        "adder",
        &json!({"call": "v1_predict", "body": {"instances": [[1, 2, 3], [4, 5, 6]]}}),
    );
    assert_eq!(v1.status, 200, "{v1}");
    assert_eq!(v1.body["status"], 200, "{v1}");
    assert_eq!(v1.body["body"]["predictions"], json!([6, 15]), "{v1}");
    assert_eq!(v1.body["request"], "POST /v1/models/adder:predict");
    assert_eq!(v1.body["revision"], "adder-predictor-00001", "{v1}");
    assert!(v1.body["elapsed_ms"].as_f64().is_some_and(|ms| ms > 0.0), "{v1}");
    // A service that needs no token gets none: its replica never sees the caller's.
    let open = call(
        &d,
        &alice,
        "alice",
        "open-adder",
        &json!({"call": "v1_predict", "body": {"instances": [[1, 2]]}}),
    );
    assert_eq!(open.body["body"]["predictions"], json!([3]), "{open}");
    assert_eq!(open.body["body"]["credential_seen"], false, "{open}");

    // V2 infer, metadata and readiness with the web session (the page's way), which
    // like every state-changing call by cookie needs the CSRF header.
    let login = d.post_json("/hearth/v1/session", None, &json!({"token": alice}));
    assert_eq!(login.status, 201, "{login}");
    let cookie = login
        .header("set-cookie")
        .and_then(|c| c.split(';').next())
        .unwrap()
        .to_string();
    let by_cookie = |body: &Value, csrf: bool| {
        let mut req = d
            .client
            .post(d.url(&route("alice", "adder")))
            .header("cookie", &cookie)
            .json(body);
        if csrf {
            req = req.header("x-hearth-csrf", "1");
        }
        d.send(req)
    };
    let v2 = json!({"call": "v2_infer", "body": {"inputs": [
        {"name": "x", "datatype": "FP64", "shape": [2, 3], "data": [1, 2, 3, 4, 5, 6]}]}});
    by_cookie(&v2, false).assert_problem(403, "forbidden");
    let answered = by_cookie(&v2, true);
    assert_eq!(answered.status, 200, "{answered}");
    assert_eq!(answered.body["status"], 200, "{answered}");
    assert_eq!(answered.body["body"]["model_name"], "adder", "{answered}");
    assert_eq!(
        answered.body["body"]["outputs"][0]["data"],
        json!([6, 15]),
        "{answered}"
    );
    let meta = by_cookie(&json!({"call": "v2_metadata"}), true);
    assert_eq!(meta.body["status"], 200, "{meta}");
    assert_eq!(meta.body["body"]["inputs"][0]["shape"], json!([-1, 3]), "{meta}");
    for (which, path) in [
        ("v1_ready", "GET /v1/models/adder"),
        ("v2_ready", "GET /v2/models/adder/ready"),
    ] {
        let r = call(&d, &alice, "alice", "adder", &json!({ "call": which }));
        assert_eq!(r.body["status"], 200, "{which}: {r}");
        assert_eq!(r.body["body"]["ready"], true, "{which}: {r}");
        assert_eq!(r.body["request"], path);
    }

    // The model's own refusal is an answer, not an error of the route.
    let refused = call(
        &d,
        &alice,
        "alice",
        "adder",
        &json!({"call": "v1_predict", "body": {"instances": "nope"}}),
    );
    assert_eq!(refused.status, 200, "{refused}");
    assert_eq!(refused.body["status"], 400, "{refused}");
    assert!(refused.body["body"]["error"]
        .as_str()
        .is_some_and(|e| e.contains("bad input")));

    // Unknown service; another user's namespace (403), and bob's own namespace, where
    // alice's service does not exist (404).
    call(&d, &alice, "alice", "nothing", &json!({"call": "v2_ready"})).assert_problem(404, "not_found");
    call(&d, &bob, "alice", "adder", &v2).assert_problem(403, "forbidden");
    call(&d, &bob, "bob", "adder", &v2).assert_problem(404, "not_found");

    // Bodies: too large (413), malformed (400), missing or misplaced (422), and
    // `:explain`, refused by name.
    let big = json!({"call": "v1_predict", "body": {"instances": [vec![1; LIMIT]]}});
    call(&d, &alice, "alice", "adder", &big).assert_problem(413, "payload_too_large");
    let malformed = d.send_body(
        Method::POST,
        &route("alice", "adder"),
        Some(&alice),
        "application/json",
        "{\"call\": \"v1_predict\", \"body\": {",
    );
    malformed.assert_problem(400, "malformed_body");
    call(&d, &alice, "alice", "adder", &json!({"call": "v1_predict"})).assert_problem(422, "invalid_field");
    call(
        &d,
        &alice,
        "alice",
        "adder",
        &json!({"call": "v2_ready", "body": {"a": 1}}),
    )
    .assert_problem(422, "invalid_field");
    call(
        &d,
        &alice,
        "alice",
        "adder",
        &json!({"call": "v1_explain", "body": {"instances": [[1, 2, 3]]}}),
    )
    .assert_problem(422, "unsupported_feature");
    call(&d, &alice, "alice", "adder", &json!({"call": "v3_predict"})).assert_problem(422, "invalid_field");
    // Without credentials: 401, as every route.
    d.post_json(&route("alice", "adder"), None, &v2)
        .assert_problem(401, "unauthorized");
}
