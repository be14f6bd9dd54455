"""Fixtures for the serving e2e: a real hearth daemon (its replicas run MLServer from
this venv), a trained scikit-learn model on disk, and small HTTP helpers."""

import contextlib
import functools
import http.server
import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time

import joblib
import pytest
import requests
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.tree import DecisionTreeClassifier

ROOT = pathlib.Path(__file__).resolve().parents[3]
VENV_BIN = pathlib.Path(sys.executable).parent

# Short windows so scale-to-zero and scale-down happen in seconds, not minutes.
CONFIG = """
[serving]
autoscaler_tick_ms = 250
stable_window_seconds = 6.0
panic_window_seconds = 1.0
scale_to_zero_grace_seconds = 3.0
readiness_timeout_seconds = 40.0
revision_failure_limit = 1
activator_timeout_seconds = 60.0
{serving}
[workloads]
path_prefix = "{bin}"
# The test venvs' Python lives under /root (0700), which a namespace's Unix user cannot
# run; tests/tests/isolation.rs covers serving as the namespace's user.
[isolation]
enabled = false
"""


class Daemon:
    def __init__(self, api, serving, token, proc, data_dir):
        self.api, self.serving, self.token = api, serving, token
        self.proc, self.data_dir = proc, data_dir
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {token}"

    def url(self, ns, name=""):
        base = f"{self.api}/apis/serving.kserve.io/v1beta1/namespaces/{ns}/inferenceservices"
        return f"{base}/{name}" if name else base

    def create(self, ns, doc):
        r = self.session.post(self.url(ns), json=doc)
        assert r.status_code == 201, r.text
        return r.json()

    def patch(self, ns, name, patch):
        r = self.session.patch(self.url(ns, name), data=json.dumps(patch),
                               headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        return r.json()

    def get(self, ns, name):
        r = self.session.get(self.url(ns, name))
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, ns, name, check, timeout=90, what="condition"):
        deadline = time.time() + timeout
        doc = None
        while time.time() < deadline:
            doc = self.get(ns, name)
            if check(doc):
                return doc
            time.sleep(0.25)
        raise AssertionError(f"{ns}/{name}: {what} not reached in {timeout}s: "
                             f"{json.dumps(doc.get('status'), indent=1)}\n{self.log_tail()}")

    def wait_ready(self, ns, name, timeout=90):
        return self.wait(ns, name, ready, timeout, "Ready")

    def replicas_ready(self, ns, name):
        """Ready replicas of every revision of a service, from /metrics."""
        text = self.session.get(f"{self.api}/metrics").text
        total = 0
        for line in text.splitlines():
            if line.startswith("hearth_serving_replicas_ready{") and f'service="{name}"' in line \
                    and f'namespace="{ns}"' in line:
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def replicas_active(self, ns, name):
        """Replica workloads of a service that are queued, starting or running: the
        processes, not the data plane's view (a drained replica that is never stopped
        leaves the pool but keeps running)."""
        r = self.session.get(f"{self.api}/hearth/v1/namespaces/{ns}/inferenceservices/{name}/replicas")
        assert r.status_code == 200, r.text
        return sum(1 for item in r.json()["items"] if item["phase"] in ("Queued", "Starting", "Running"))

    def log_tail(self):
        try:
            return (self.data_dir / "daemon.log").read_text()[-4000:]
        except OSError:
            return ""


def ready(doc):
    conds = {c["type"]: c["status"] for c in doc.get("status", {}).get("conditions", [])}
    return conds.get("Ready") == "True"


def start_daemon(serving="", data_dir=None, env_extra=None):
    """A daemon with the test windows plus `serving` lines in its `[serving]` table. `data_dir` reuses a
    directory (a restart); `env_extra` adds environment variables."""
    binary = os.environ.get("HEARTH_BIN", str(ROOT / "target" / "debug" / "hearth"))
    tmp = data_dir or pathlib.Path(tempfile.mkdtemp(prefix="hearth-serving-"))
    (tmp / "config.toml").write_text(CONFIG.format(bin=VENV_BIN, serving=serving))
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("HEARTH_") and not k.startswith("AWS_")}
    env.pop("NOTIFY_SOCKET", None)
    env.update(env_extra or {})
    log = open(tmp / "daemon.log", "a")
    proc = subprocess.Popen([binary, "serve", "--config", str(tmp / "config.toml"), "--data-dir",
                             str(tmp / "data"), "--listen", "127.0.0.1:0", "--serving-listen",
                             "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"], env=env, stderr=log, stdout=log)
    addr = tmp / "data" / "hearth.addr"
    for _ in range(600):
        if addr.exists():
            try:
                info = json.loads(addr.read_text())
            except ValueError:  # being written
                info = {}
            if info.get("pid") == proc.pid:
                break
        assert proc.poll() is None, (tmp / "daemon.log").read_text()
        time.sleep(0.05)
    else:
        raise AssertionError("the daemon did not start")
    token = (tmp / "data" / "admin.token").read_text().strip()
    return Daemon(f"http://{info['api']}", f"http://{info['serving']}", token, proc, tmp)


def stop_daemon(d):
    """Replicas outlive the daemon by design (their shims survive restarts), so the
    services are deleted, and their replicas stopped, before the daemon is."""
    for item in d.session.get(d.url("kubeflow")).json().get("items", []):
        d.session.delete(d.url("kubeflow", item["metadata"]["name"]))
    deadline = time.time() + 60
    while d.session.get(d.url("kubeflow")).json().get("items") and time.time() < deadline:
        time.sleep(0.25)
    d.proc.send_signal(signal.SIGTERM)
    try:
        d.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        d.proc.kill()


@pytest.fixture(scope="session")
def daemon():
    d = start_daemon()
    yield d
    stop_daemon(d)


def _save(model, directory):
    directory.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, directory / "model.joblib")
    return directory


@pytest.fixture(scope="session")
def models():
    """Two different iris classifiers (for canaries) and a broken model file."""
    x, y = load_iris(return_X_y=True)
    root = pathlib.Path(tempfile.mkdtemp(prefix="hearth-models-"))
    a = _save(LogisticRegression(max_iter=500).fit(x, y), root / "logistic")
    b = _save(DecisionTreeClassifier(random_state=0).fit(x, y), root / "tree")
    broken = root / "broken"
    broken.mkdir()
    (broken / "model.joblib").write_bytes(b"this is not a pickle")
    return {"a": a, "b": b, "broken": broken, "x": x, "y": y}


def isvc(name, storage, **predictor):
    spec = {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": f"file://{storage}"}}
    spec.update(predictor)
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": "kubeflow"}, "spec": {"predictor": spec}}


class QuietFiles(http.server.SimpleHTTPRequestHandler):
    """Serves a directory without logging every request into the test's output."""

    def log_message(self, *args):
        pass


@contextlib.contextmanager
def file_server(directory, handler=QuietFiles, tls=None):
    """An HTTP(S) server for `directory` on a free port, for as long as the block runs."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(handler, directory=str(directory)))
    if tls is not None:
        server.socket = tls.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
