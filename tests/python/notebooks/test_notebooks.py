"""Kubeflow Notebooks as real Jupyter servers (jupyterlab and jupyter-server from
.venv-notebooks, tests/requirements-notebooks.txt) behind Hearth's proxy: Ready, the
Jupyter API and a kernel's websocket through the proxy with only a Hearth credential
(bearer or session cookie), the workspace across stop and start, another user refused,
cross-site websockets refused, GPU notebooks queued Pending and started when a GPU is
free, idle culling, and servers surviving a daemon kill -9."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
import uuid

import pytest
import requests
import websocket

ROOT = pathlib.Path(__file__).resolve().parents[3]
VENV_BIN = pathlib.Path(sys.executable).parent
NB_API = "/apis/kubeflow.org/v1/namespaces/{ns}/notebooks"


class Daemon:
    def __init__(self, config, data=None):
        self.tmp = pathlib.Path(tempfile.mkdtemp(prefix="hearth-nb-"))
        self.data = data or self.tmp / "data"
        (self.tmp / "config.toml").write_text(
            f'[workloads]\npath_prefix = "{VENV_BIN}"\n[isolation]\nenabled = false\n' + config)
        self.proc = None
        self.start()

    def start(self):
        binary = os.environ.get("HEARTH_BIN", str(ROOT / "target" / "debug" / "hearth"))
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
        env.pop("NOTIFY_SOCKET", None)
        log = open(self.tmp / "daemon.log", "a")
        self.proc = subprocess.Popen(
            [binary, "serve", "--config", str(self.tmp / "config.toml"), "--data-dir", str(self.data),
             "--listen", "127.0.0.1:0", "--serving-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
            env=env, stderr=log, stdout=log)
        addr = self.data / "hearth.addr"
        for _ in range(600):
            try:
                info = json.loads(addr.read_text())
                if info.get("pid") == self.proc.pid:
                    self.api = "http://" + info["api"]
                    self.admin = (self.data / "admin.token").read_text().strip()
                    return
            except (OSError, ValueError):
                pass
            assert self.proc.poll() is None, (self.tmp / "daemon.log").read_text()
            time.sleep(0.05)
        raise AssertionError("the daemon did not start")

    def kill9(self):
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self):
        # The servers are stopped with their notebooks; the daemon's own stop leaves
        # workloads running under their shims, so delete every notebook first.
        for ns in ("admin", "alice", "bob", "carol"):
            r = self.get(NB_API.format(ns=ns), self.admin)
            for item in r.json().get("items", []) if r.status_code == 200 else []:
                self.req("DELETE", NB_API.format(ns=ns) + "/" + item["metadata"]["name"], self.admin)
        deadline = time.time() + 60
        while time.time() < deadline:
            left = sum(len(self.get(NB_API.format(ns=ns), self.admin).json().get("items", []))
                       for ns in ("admin", "alice", "bob", "carol"))
            if left == 0:
                break
            time.sleep(0.2)
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def req(self, method, path, token=None, **kw):
        headers = kw.pop("headers", {})
        if token:
            headers["Authorization"] = f"Bearer {token}"
        return requests.request(method, self.api + path, headers=headers, timeout=60, **kw)

    def get(self, path, token=None, **kw):
        return self.req("GET", path, token, **kw)

    def user(self, name):
        r = self.req("POST", "/hearth/v1/users", self.admin, json={"name": name})
        assert r.status_code == 201, r.text
        return r.json()["token"]["token"]

    def create(self, ns, token, name, gpus=0, claim=None):
        container = {"name": name, "image": "ghcr.io/kubeflow/kubeflow/notebook-servers/jupyter-scipy:v1.10.0",
                     "resources": {"requests": {"cpu": "100m", "memory": "256Mi"}}}
        pod = {"containers": [container], "serviceAccountName": "default-editor"}
        if gpus:
            container["resources"]["limits"] = {"nvidia.com/gpu": gpus}
        if claim:
            container["volumeMounts"] = [{"name": "workspace", "mountPath": "/home/jovyan"}]
            pod["volumes"] = [{"name": "workspace", "persistentVolumeClaim": {"claimName": claim}}]
        doc = {"apiVersion": "kubeflow.org/v1", "kind": "Notebook", "metadata": {"name": name},
               "spec": {"template": {"spec": pod}}}
        r = self.req("POST", NB_API.format(ns=ns), token, json=doc)
        assert r.status_code == 201, r.text
        return r.json()

    def notebook(self, ns, name):
        r = self.get(NB_API.format(ns=ns) + "/" + name, self.admin)
        assert r.status_code == 200, r.text
        return r.json()

    def wait(self, ns, name, what, timeout=120):
        deadline = time.time() + timeout
        nb = None
        while time.time() < deadline:
            nb = self.notebook(ns, name)
            if what(nb):
                return nb
            time.sleep(0.2)
        raise AssertionError(f"{ns}/{name}: {json.dumps(nb.get('status'))}\n" +
                             (self.tmp / "daemon.log").read_text()[-3000:])

    def annotate_stopped(self, ns, name, stopped):
        value = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()) if stopped else None
        r = self.req("PATCH", NB_API.format(ns=ns) + "/" + name, self.admin,
                     data=json.dumps({"metadata": {"annotations": {"kubeflow-resource-stopped": value}}}),
                     headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text


def ready(nb):
    return nb.get("status", {}).get("readyReplicas") == 1


def stopped(nb):
    s = nb.get("status", {})
    return s.get("readyReplicas") == 0 and s.get("containerState") == {} and \
        s["conditions"][0]["reason"] == "Stopped"


def execute(ws_url, headers, code, **kw):
    """Runs `code` over a kernel's channels websocket; answers the stream output."""
    ws = websocket.create_connection(ws_url, header=headers, timeout=60, **kw)
    msg_id = uuid.uuid4().hex
    ws.send(json.dumps({
        "header": {"msg_id": msg_id, "username": "test", "session": uuid.uuid4().hex,
                   "msg_type": "execute_request", "version": "5.3"},
        "parent_header": {}, "metadata": {}, "channel": "shell",
        "content": {"code": code, "silent": False, "store_history": False,
                    "user_expressions": {}, "allow_stdin": False},
    }))
    out = ""
    deadline = time.time() + 60
    while time.time() < deadline:
        msg = json.loads(ws.recv())
        if msg.get("parent_header", {}).get("msg_id") != msg_id:
            continue
        if msg["msg_type"] == "stream":
            out += msg["content"]["text"]
        if msg["msg_type"] == "status" and msg["content"]["execution_state"] == "idle":
            break
    ws.close()
    return out


@pytest.fixture(scope="module")
def daemon():
    d = Daemon("[gpu]\nsimulate = 1\n[notebooks]\nenable_culling = false\nrestart_backoff_base_seconds = 0.5\n")
    yield d
    d.stop()


def test_a_notebook_runs_jupyter_behind_the_proxy_with_only_hearths_credentials(daemon):
    d = daemon
    alice, bob = d.user("alice"), d.user("bob")
    d.create("alice", alice, "lab", claim="lab-workspace")
    nb = d.wait("alice", "lab", ready)
    assert nb["status"]["conditions"][0]["type"] == "Ready"
    assert "running" in nb["status"]["containerState"]
    assert "hearth" not in nb["status"]
    base = "/notebook/alice/lab/"

    # The Jupyter API through the proxy, with a Hearth bearer token only.
    r = d.get(base + "api/status", alice)
    assert r.status_code == 200, r.text
    assert "last_activity" in r.json()
    r = d.get("/notebook/alice/lab", alice, allow_redirects=False)
    assert r.status_code == 307 and r.headers["Location"] == "/notebook/alice/lab/", r.headers
    # Another user's token, and no credentials at all, are refused.
    assert d.get(base + "api/status", bob).status_code == 403
    assert d.get(base + "api/status").status_code == 401
    assert d.get(base + "api/status", "hth_" + "0" * 64).status_code == 401

    # A kernel, and print(6*7) over its websocket.
    r = d.req("POST", base + "api/kernels", alice, json={"name": "python3"})
    assert r.status_code == 201, r.text
    kernel = r.json()["id"]
    ws_base = d.api.replace("http://", "ws://") + base
    out = execute(f"{ws_base}api/kernels/{kernel}/channels", [f"Authorization: Bearer {alice}"], "print(6*7)")
    assert "42" in out

    # A terminal, over its websocket (terminado's JSON list messages).
    r = d.req("POST", base + "api/terminals", alice)
    assert r.status_code == 200, r.text
    term = websocket.create_connection(f"{ws_base}terminals/websocket/{r.json()['name']}",
                                       header=[f"Authorization: Bearer {alice}"], timeout=60)
    term.send(json.dumps(["stdin", "echo $((6*7))x\r"]))
    seen = ""
    deadline = time.time() + 30
    while "42x" not in seen and time.time() < deadline:
        msg = json.loads(term.recv())
        if msg[0] == "stdout":
            seen += msg[1]
    term.close()
    assert "42x" in seen, seen

    # A browser session: login sets an HttpOnly, SameSite=Strict cookie; the cookie
    # alone reaches the notebook, over HTTP and websocket.
    s = requests.Session()
    r = s.post(d.api + "/hearth/v1/session", json={"token": alice}, timeout=30)
    assert r.status_code == 201, r.text
    set_cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in set_cookie and "SameSite=Strict" in set_cookie and "Secure" not in set_cookie
    assert s.get(d.api + base + "api/status", timeout=30).status_code == 200
    # Over the TLS listener the cookie is Secure as well.
    tls = json.loads((d.data / "hearth.addr").read_text())["tls"]
    r = requests.post(f"https://{tls}/hearth/v1/session", json={"token": alice},
                      verify=str(d.data / "tls" / "ca.crt"), timeout=30)
    assert r.status_code == 201 and "Secure" in r.headers["Set-Cookie"], r.headers
    cookie = "hearth_session=" + s.cookies["hearth_session"]
    host = d.api.replace("http://", "")
    out = execute(f"{ws_base}api/kernels/{kernel}/channels",
                  [f"Cookie: {cookie}"], "print(6*7)", origin=f"http://{host}")
    assert "42" in out
    # A page of another site cannot open the websocket with the user's cookie.
    with pytest.raises(websocket.WebSocketBadStatusException) as refused:
        websocket.create_connection(f"{ws_base}api/kernels/{kernel}/channels",
                                    header=[f"Cookie: {cookie}"], origin="http://evil.example", timeout=30)
    assert refused.value.status_code == 403
    # Logged out, the cookie is worth nothing.
    assert s.delete(d.api + "/hearth/v1/session", timeout=30).status_code == 204
    r = requests.get(d.api + base + "api/status", headers={"Cookie": cookie}, timeout=30)
    assert r.status_code == 401

    # A file written through the contents API (a streamed upload of 8 MiB) survives
    # stop and start: the workspace directory is the server's root.
    payload = "x" * (8 * 1024 * 1024)
    r = d.req("PUT", base + "api/contents/hello.txt", alice,
              json={"type": "file", "format": "text", "content": payload})
    assert r.status_code in (200, 201), r.text
    d.annotate_stopped("alice", "lab", True)
    d.wait("alice", "lab", stopped)
    assert d.get(base + "api/status", alice).status_code == 503
    d.annotate_stopped("alice", "lab", False)
    d.wait("alice", "lab", ready)
    r = d.get(base + "api/contents/hello.txt", alice)
    assert r.status_code == 200, r.text
    assert r.json()["content"] == payload
    assert (d.data / "workspaces" / "alice" / "lab-workspace" / "hello.txt").exists()

    # A daemon killed with SIGKILL: the server keeps running under its shim and the
    # restarted daemon re-adopts it (same server, same start time).
    started = d.get(base + "api/status", alice).json()["started"]
    d.kill9()
    d.start()
    # The stored status still says Ready; the proxy routes once the controller has
    # probed the server again.
    deadline = time.time() + 60
    while time.time() < deadline and d.get(base + "api/status", alice).status_code != 200:
        time.sleep(0.1)
    d.wait("alice", "lab", ready)
    assert d.get(base + "api/status", alice).json()["started"] == started


def test_a_second_gpu_notebook_waits_pending_until_the_first_stops(daemon):
    d = daemon
    d.create("admin", d.admin, "gpu-one", gpus=1)
    d.wait("admin", "gpu-one", ready)
    d.create("admin", d.admin, "gpu-two", gpus=1)
    nb = d.wait("admin", "gpu-two", lambda nb: nb.get("status", {}).get("containerState", {}).get("waiting"))
    waiting = nb["status"]["containerState"]["waiting"]
    assert waiting["reason"] == "Pending"
    assert "GPU" in waiting["message"] or "gpu" in waiting["message"], waiting
    condition = nb["status"]["conditions"][0]
    assert (condition["type"], condition["status"], condition["reason"]) == ("PodScheduled", "False", "Unschedulable")
    assert nb["status"]["readyReplicas"] == 0
    d.annotate_stopped("admin", "gpu-one", True)
    d.wait("admin", "gpu-one", stopped)
    d.wait("admin", "gpu-two", ready)


def test_a_crashed_server_is_restarted_with_backoff(daemon):
    d = daemon
    d.create("admin", d.admin, "crashy")
    d.wait("admin", "crashy", ready)
    pids = subprocess.run(["pgrep", "-f", "base_url=/notebook/admin/crashy/"], capture_output=True,
                          text=True).stdout.split()
    assert pids, "no server process"
    for pid in pids:
        os.kill(int(pid), signal.SIGKILL)
    d.wait("admin", "crashy", lambda nb: not ready(nb), timeout=30)
    nb = d.wait("admin", "crashy", ready)
    events = d.get("/api/v1/namespaces/admin/events", d.admin).json()["items"]
    crashes = [e for e in events if e["reason"] == "CrashLoopBackOff"
               and e["involvedObject"]["name"] == "crashy"]
    assert crashes, events
    assert "restarting in" in crashes[0]["message"]
    assert d.get("/notebook/admin/crashy/api/status", d.admin).status_code == 200
    assert nb["status"]["conditions"][0]["reason"] == "Running"

    # A changed template restarts the server with it (a StatefulSet rollout upstream).
    nb["spec"]["template"]["spec"]["containers"][0]["env"] = [{"name": "ROLLED", "value": "out"}]
    r = d.req("PUT", NB_API.format(ns="admin") + "/crashy", d.admin, json=nb)
    assert r.status_code == 200, r.text
    deadline = time.time() + 120
    environ = b""
    while time.time() < deadline and b"ROLLED=out" not in environ:
        time.sleep(0.2)
        pids = subprocess.run(["pgrep", "-f", "base_url=/notebook/admin/crashy/"], capture_output=True,
                              text=True).stdout.split()
        for pid in pids:
            try:
                environ = pathlib.Path(f"/proc/{pid}/environ").read_bytes()
            except OSError:
                continue
    assert b"ROLLED=out" in environ
    assert b"NB_PREFIX=/notebook/admin/crashy" in environ
    d.wait("admin", "crashy", ready)


def test_an_idle_server_is_culled_and_its_workspace_kept():
    d = Daemon("[notebooks]\ncull_idle_time_minutes = 0.05\nidleness_check_period_seconds = 0.5\n")
    try:
        d.create("admin", d.admin, "idle", claim="idle-ws")
        d.wait("admin", "idle", ready)
        nb = d.wait("admin", "idle", stopped, timeout=60)
        annotations = nb["metadata"]["annotations"]
        assert "kubeflow-resource-stopped" in annotations
        assert "notebooks.kubeflow.org/last-activity" in annotations
        assert (d.data / "workspaces" / "admin" / "idle-ws").is_dir()
        events = d.get("/api/v1/namespaces/admin/events", d.admin).json()["items"]
        assert any(e["reason"] == "Culled" for e in events), events
        # Delete keeps the workspace (a PVC outlives its pod) ...
        workspace = d.data / "workspaces" / "admin" / "idle-ws"
        (workspace / "keep.txt").write_text("kept")
        path = NB_API.format(ns="admin") + "/idle"
        assert d.req("DELETE", path, d.admin).status_code == 200
        gone = lambda: d.get(path, d.admin).status_code == 404
        deadline = time.time() + 30
        while not gone() and time.time() < deadline:
            time.sleep(0.1)
        assert gone() and (workspace / "keep.txt").read_text() == "kept"
        # ... unless the notebook carries hearth.dev/purge-workspace: "true".
        d.create("admin", d.admin, "idle", claim="idle-ws")
        r = d.req("PATCH", path, d.admin,
                  data=json.dumps({"metadata": {"annotations": {"hearth.dev/purge-workspace": "true"}}}),
                  headers={"Content-Type": "application/merge-patch+json"})
        assert r.status_code == 200, r.text
        assert d.req("DELETE", path, d.admin).status_code == 200
        deadline = time.time() + 30
        while not gone() and time.time() < deadline:
            time.sleep(0.1)
        assert gone() and not workspace.exists()
    finally:
        d.stop()


BROWSER = ROOT / "tests" / "browser"


def test_jupyterlab_loads_and_runs_a_cell_in_headless_chromium(daemon):
    """Debian's chromium with playwright-core (tests/browser, installed by scripts/test):
    log in to Hearth, load JupyterLab at /notebook/{ns}/{name}/lab, run a cell."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not (BROWSER / "node_modules" / "playwright-core").is_dir() or not os.path.exists(chromium):
        assert not os.environ.get("CI"), "scripts/test installs chromium and playwright-core"
        pytest.skip("no chromium or playwright-core (scripts/test installs them)")
    d = daemon
    carol = d.user("carol")
    d.create("carol", carol, "lab")
    d.wait("carol", "lab", ready)
    notebook = {"nbformat": 4, "nbformat_minor": 5,
                "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"}},
                "cells": [{"cell_type": "code", "id": "c1", "metadata": {}, "execution_count": None,
                           "outputs": [], "source": "print(6*7)"}]}
    r = d.req("PUT", "/notebook/carol/lab/api/contents/six.ipynb", carol,
              json={"type": "notebook", "format": "json", "content": notebook})
    assert r.status_code in (200, 201), r.text
    env = dict(os.environ, HEARTH_API=d.api, HEARTH_TOKEN=carol, NOTEBOOK_PATH="/notebook/carol/lab/",
               NOTEBOOK_FILE="six.ipynb", CHROMIUM=chromium)
    out = subprocess.run(["node", str(BROWSER / "jupyterlab.mjs")], env=env, capture_output=True,
                         text=True, timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    assert '"lab":true' in out.stdout
