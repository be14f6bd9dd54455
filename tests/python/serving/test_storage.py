"""Remote model storage fetched by the daemon itself: s3:// against a real S3-compatible
server (moto_server, with IAM authentication switched on, so that SigV4 signatures and
credentials are checked), and http:// with a redirect. https:// is not tested: it needs
a certificate the daemon trusts and nothing here can reach the Internet."""

import concurrent.futures
import json
import socket
import subprocess
import threading
import time
import types

import boto3
import joblib
import numpy as np
import pytest
import requests

from conftest import VENV_BIN, QuietFiles, file_server, isvc, ready, start_daemon, stop_daemon

NS = "kubeflow"
X = [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
BUCKET = "models"
# More objects than one ListObjectsV2 page (1,000 keys) holds, so the fetch must follow
# continuation tokens to get them all.
EXTRA_OBJECTS = 1100


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def predictor_message(doc):
    for c in doc.get("status", {}).get("conditions", []):
        if c["type"] == "PredictorReady" and c.get("reason") == "RevisionFailed":
            return c.get("message") or ""
    return None


def wait_failed(daemon, name):
    doc = daemon.wait(NS, name, lambda d: predictor_message(d) is not None, 60, "RevisionFailed")
    return predictor_message(doc)


def s3_isvc(name, uri):
    doc = isvc(name, "unused")
    doc["spec"]["predictor"]["model"]["storageUri"] = uri
    return doc


def v1_predict(daemon, name):
    return requests.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X},
                         headers={"Host": f"{name}.{NS}.example.com"}, timeout=60)


@pytest.fixture(scope="module")
def s3(models, tmp_path_factory):
    """moto_server with a bucket holding the model (plus enough objects to need two
    listing pages) and an object whose key climbs out of its prefix; then IAM
    authentication is switched on and only the created user's key works."""
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    log = open(tmp_path_factory.mktemp("moto") / "moto.log", "w")
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=log, stderr=log)
    try:
        for _ in range(200):
            try:
                requests.get(f"{endpoint}/moto-api/", timeout=1)
                break
            except requests.ConnectionError:
                assert proc.poll() is None, "moto_server exited"
                time.sleep(0.1)
        setup = dict(endpoint_url=endpoint, region_name="us-east-1",
                     aws_access_key_id="setup", aws_secret_access_key="setup")
        iam = boto3.client("iam", **setup)
        iam.create_user(UserName="hearth")
        iam.put_user_policy(UserName="hearth", PolicyName="read-models", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": ["s3:GetObject", "s3:ListBucket"],
                           "Resource": "*"}]}))
        key = iam.create_access_key(UserName="hearth")["AccessKey"]
        client = boto3.client("s3", **setup)
        client.create_bucket(Bucket=BUCKET)
        client.upload_file(str(models["b"] / "model.joblib"), BUCKET, "iris/v1/model.joblib")

        def put(i):
            client.put_object(Bucket=BUCKET, Key=f"iris/v1/extra/{i:04d}.txt", Body=str(i).encode())
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(put, range(EXTRA_OBJECTS)))
        client.upload_file(str(models["b"] / "model.joblib"), BUCKET, "evil/model.joblib")
        client.put_object(Bucket=BUCKET, Key="evil/../../../escaped", Body=b"outside")
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix="evil/")["Contents"]]
        assert "evil/../../../escaped" in keys, keys
        # From here on every request needs a valid signature by a known key.
        r = requests.post(f"{endpoint}/moto-api/reset-auth", data=b"0", timeout=10)
        assert r.status_code == 200, r.text
        yield types.SimpleNamespace(endpoint=endpoint, key=key["AccessKeyId"],
                                    secret=key["SecretAccessKey"])
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def s3_daemon(s3):
    """Credentials from the [serving] config keys."""
    d = start_daemon(f'''s3_endpoint = "{s3.endpoint}"
s3_access_key_id = "{s3.key}"
s3_secret_access_key = "{s3.secret}"
s3_region = "us-east-1"''')
    yield d
    stop_daemon(d)


def test_s3_model_with_credentials_is_fetched_and_served(s3_daemon, models):
    s3_daemon.create(NS, s3_isvc("from-s3", f"s3://{BUCKET}/iris/v1"))
    s3_daemon.wait_ready(NS, "from-s3", timeout=120)
    expected = joblib.load(models["b"] / "model.joblib").predict(np.array(X)).tolist()
    r = v1_predict(s3_daemon, "from-s3")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    # Both listing pages were followed: every object is in the revision's cache.
    cached = list((s3_daemon.data_dir / "data" / "serving" / "models").glob("*/extra/*.txt"))
    assert len(cached) == EXTRA_OBJECTS, len(cached)
    assert sorted(p.read_text() for p in cached)[:2] == ["0", "1"]


def test_s3_object_key_with_dot_dot_is_refused(s3_daemon):
    s3_daemon.create(NS, s3_isvc("evil", f"s3://{BUCKET}/evil"))
    message = wait_failed(s3_daemon, "evil")
    assert "refusing object name" in message and "evil/../../../escaped" in message, message
    assert not list(s3_daemon.data_dir.rglob("escaped"))


def test_s3_wrong_credentials_are_named_in_the_status(s3):
    # The standard AWS_* environment of the daemon, with a secret that does not match.
    d = start_daemon(f's3_endpoint = "{s3.endpoint}"',
                     env_extra={"AWS_ACCESS_KEY_ID": s3.key, "AWS_SECRET_ACCESS_KEY": "not-the-secret"})
    try:
        d.create(NS, s3_isvc("wrong-key", f"s3://{BUCKET}/iris/v1"))
        message = wait_failed(d, "wrong-key")
        assert "HTTP 403" in message and "SignatureDoesNotMatch" in message, message
        assert f"s3://{BUCKET}/iris/v1/" in message, message
        assert "not-the-secret" not in message
    finally:
        stop_daemon(d)


def test_http_storage_follows_redirects_and_names_a_missing_file(daemon, models):
    class Handler(QuietFiles):
        def do_GET(self):
            if self.path == "/latest/model.joblib":
                self.send_response(302)
                self.send_header("Location", "/model.joblib")
                self.end_headers()
                return
            super().do_GET()

    with file_server(models["a"], Handler) as server:
        base = f"http://127.0.0.1:{server.server_port}"
        daemon.create(NS, s3_isvc("redirected", f"{base}/latest/model.joblib"))
        daemon.wait_ready(NS, "redirected")
        daemon.create(NS, s3_isvc("missing", f"{base}/nothing/model.joblib"))
        message = wait_failed(daemon, "missing")
        assert "HTTP 404" in message and "/nothing/model.joblib" in message, message
    expected = joblib.load(models["a"] / "model.joblib").predict(np.array(X)).tolist()
    r = v1_predict(daemon, "redirected")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}


def test_a_storage_outage_is_waited_out_with_a_backoff(daemon, models):
    """More 503s than one fetch retries: the revision stays pending, says why, fetches
    again after a backoff and becomes ready (KServe's storage initializer is restarted
    until the revision's deadline the same way)."""
    failures_left = [6]
    asked = []

    class Flaky(QuietFiles):
        def do_GET(self):
            asked.append(time.monotonic())
            if failures_left[0] > 0:
                failures_left[0] -= 1
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            super().do_GET()

    with file_server(models["a"], Flaky) as server:
        daemon.create(NS, s3_isvc("outage", f"http://127.0.0.1:{server.server_port}/model.joblib"))

        def says_retrying(doc):
            return any(c["type"] == "PredictorReady" and "HTTP 503" in (c.get("message") or "")
                       and "trying again" in c["message"] for c in doc.get("status", {}).get("conditions", []))
        daemon.wait(NS, "outage", says_retrying, 60, "a retry message")
        doc = daemon.wait_ready(NS, "outage", timeout=90)
    assert failures_left[0] == 0
    # One fetch asks 4 times (waiting 1, 2 and 4 s in between); the next fetch comes
    # only after the revision's backoff (2 s at first), not on the next controller pass
    # (250 ms here), which is what a missing backoff would look like.
    assert len(asked) >= 7, asked
    gaps = [b - a for a, b in zip(asked, asked[1:])]
    assert gaps[3] >= 1.5, f"the second fetch came {gaps[3]:.2f} s after the first gave up: {gaps}"
    assert all(not c.get("message") for c in doc["status"]["conditions"] if c["type"] == "PredictorReady"), doc
    r = v1_predict(daemon, "outage")
    assert r.status_code == 200, r.text


def test_a_slow_download_does_not_hold_up_other_services(daemon, models):
    release = threading.Event()

    class Stalled(QuietFiles):
        def do_GET(self):
            release.wait(60)
            super().do_GET()

    with file_server(models["a"], Stalled) as server:
        try:
            daemon.create(NS, s3_isvc("stalled", f"http://127.0.0.1:{server.server_port}/model.joblib"))
            time.sleep(0.5)
            daemon.create(NS, isvc("beside", models["b"]))
            daemon.wait_ready(NS, "beside", timeout=60)
            assert not ready(daemon.get(NS, "stalled")), "the stalled download cannot have finished"
            release.set()
            daemon.wait_ready(NS, "stalled", timeout=60)
        finally:
            release.set()


@pytest.fixture(scope="module")
def https_models(models, tmp_path_factory):
    """An HTTPS server for the model directory, with a certificate from a CA of the
    test's own (trusted only where `SSL_CERT_FILE` names it)."""
    import ssl
    tls = tmp_path_factory.mktemp("tls")
    run = lambda *args: subprocess.run(["openssl", *args], cwd=tls, check=True, capture_output=True)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=hearth test CA",
        "-keyout", "ca.key", "-out", "ca.pem")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1", "-keyout", "server.key", "-out", "server.csr")
    (tls / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    run("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial", "-days", "1",
        "-extfile", "ext.cnf", "-out", "server.pem")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls / "server.pem", tls / "server.key")
    with file_server(models["a"], tls=context) as server:
        yield types.SimpleNamespace(url=f"https://127.0.0.1:{server.server_port}/model.joblib", ca=tls / "ca.pem")


def test_https_storage_with_a_ca_the_host_trusts(https_models, models):
    d = start_daemon(env_extra={"SSL_CERT_FILE": str(https_models.ca)})
    try:
        d.create(NS, s3_isvc("tls", https_models.url))
        d.wait_ready(NS, "tls")
        r = v1_predict(d, "tls")
        assert r.status_code == 200, r.text
    finally:
        stop_daemon(d)


def test_https_storage_with_an_unknown_issuer_fails_at_once_naming_it(daemon, https_models):
    began = time.monotonic()
    daemon.create(NS, s3_isvc("untrusted", https_models.url))
    message = wait_failed(daemon, "untrusted")
    assert "certificate" in message.lower() and "UnknownIssuer" in message, message
    # Not a transient failure: no backoff, no inline retries.
    assert time.monotonic() - began < 10, message


def test_deleting_a_service_mid_download_leaves_no_files(daemon, models):
    release = threading.Event()
    seen = []

    class Stalled(QuietFiles):
        def do_GET(self):
            seen.append(self.path)
            release.wait(60)
            super().do_GET()

    caches = daemon.data_dir / "data" / "serving" / "models"
    before = set(p.name for p in caches.iterdir()) if caches.exists() else set()
    with file_server(models["a"], Stalled) as server:
        try:
            daemon.create(NS, s3_isvc("abandoned", f"http://127.0.0.1:{server.server_port}/model.joblib"))
            deadline = time.time() + 20
            while not seen:
                assert time.time() < deadline, "the download did not start"
                time.sleep(0.05)
            assert daemon.session.delete(daemon.url(NS, "abandoned")).status_code == 200
            while daemon.session.get(daemon.url(NS, "abandoned")).status_code != 404:
                assert time.time() < deadline + 20, "the service was not deleted"
                time.sleep(0.1)
        finally:
            release.set()
    time.sleep(1)  # what an unstopped download would write, it would have written now
    assert set(p.name for p in caches.iterdir()) == before
