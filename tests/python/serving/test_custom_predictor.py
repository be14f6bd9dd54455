"""A custom predictor that reports what reached it. Request bodies stream through the
data plane to replicas that take them as they are (no translation, no response cache):
a chunked body reaches the replica while the client is still sending it, a sized body
keeps its Content-Length, and the size limit holds for both without a byte too many
reaching the replica. Edits of a service leave no stale model copies behind."""

import hashlib
import pathlib
import socket
import threading
import time

import pytest
import requests

from conftest import start_daemon, stop_daemon

NS = "kubeflow"
LIMIT = 1 << 20
ECHO = pathlib.Path(__file__).parent / "echo_predictor.py"


@pytest.fixture(scope="module")
def small_daemon():
    d = start_daemon(env_extra={"HEARTH_MAX_BODY_BYTES": str(LIMIT)})
    d.create(NS, {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
                  "metadata": {"name": "echo", "namespace": NS},
                  "spec": {"predictor": {"minReplicas": 1, "containers": [{
                      "name": "kserve-container", "image": "example/echo:latest",
                      "command": ["python3", str(ECHO)]}]}}})
    d.wait_ready(NS, "echo")
    yield d
    stop_daemon(d)


def predict(d, data, **kw):
    r = requests.post(f"{d.serving}/v1/models/echo:predict", data=data,
                      headers={"Host": f"echo.{NS}.example.com", "Content-Type": "application/json"},
                      timeout=60, **kw)
    assert r.status_code == 200, r.text
    assert r.headers["x-hearth-revision"] == "echo-predictor-00001"
    return r.json()["predictions"][0]


def raw_request(d, head, chunks):
    """Sends `head` then `chunks` on a socket from a thread, and reads the answer's
    status line; the thread may still be sending when the answer comes."""
    host, port = d.serving.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)), timeout=30)

    def send():
        try:
            sock.sendall(head)
            for c in chunks:
                sock.sendall(c)
        except OSError:
            pass  # the proxy stopped reading: that is the point

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    answer = b""
    while b"\r\n\r\n" not in answer:
        got = sock.recv(65536)
        if not got:
            break
        answer += got
    sock.close()
    return answer


def test_a_chunked_body_reaches_the_replica_while_it_is_sent(small_daemon):
    part = b"x" * 65536

    def slowly():
        yield part
        time.sleep(1.0)
        yield part

    seen = predict(small_daemon, slowly())
    assert seen["bytes"] == 2 * len(part)
    assert seen["sha256"] == hashlib.sha256(2 * part).hexdigest()
    assert seen["chunked"] is True
    # Buffered in the proxy, the replica would get both parts at once.
    assert seen["arrival_seconds"] > 0.7, seen


def test_a_sized_body_keeps_its_length(small_daemon):
    body = bytes(range(256)) * 1000
    seen = predict(small_daemon, body)
    assert seen == {**seen, "bytes": len(body), "chunked": False,
                    "sha256": hashlib.sha256(body).hexdigest()}


def test_a_request_without_a_body_gets_to_the_replica_without_one(small_daemon):
    r = requests.get(f"{small_daemon.serving}/v2/models/echo", headers={"Host": f"echo.{NS}.example.com"}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["transfer_encoding"] is None, r.json()
    assert r.json()["content_length"] in (None, "0"), r.json()


def test_bodies_over_the_limit_are_413_and_never_reach_the_replica(small_daemon):
    before = predict(small_daemon, b"{}")["completed"]
    host = f"echo.{NS}.example.com"
    declared = (f"POST /v1/models/echo:predict HTTP/1.1\r\nHost: {host}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {LIMIT + 1}\r\n\r\n").encode()
    answer = raw_request(small_daemon, declared, [])
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"max_body_bytes" in answer
    chunk = b"y" * 65536
    chunked = (f"POST /v1/models/echo:predict HTTP/1.1\r\nHost: {host}\r\n"
               "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
    framed = [b"%x\r\n%s\r\n" % (len(chunk), chunk)] * (LIMIT // len(chunk) + 4) + [b"0\r\n\r\n"]
    answer = raw_request(small_daemon, chunked, framed)
    assert answer.startswith(b"HTTP/1.1 413"), answer
    # The replica read no whole request in between: the next one is its only other one.
    assert predict(small_daemon, b"{}")["completed"] == before + 1


def test_model_caches_of_idle_revisions_are_removed(small_daemon, tmp_path):
    """Every edit makes a revision with its own copy of the model; only the latest and
    the one rolled out before it (the rollback target) keep theirs."""
    (tmp_path / "weights.bin").write_bytes(b"w" * 4096)
    name = "cached"
    doc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
           "metadata": {"name": name, "namespace": NS},
           "spec": {"predictor": {"minReplicas": 1, "containers": [{
               "name": "kserve-container", "image": "example/echo:latest",
               "command": ["python3", str(ECHO)], "env": [{"name": "EDIT", "value": "0"}],
               "storageUri": f"file://{tmp_path}"}]}}}
    small_daemon.create(NS, doc)
    small_daemon.wait_ready(NS, name)
    caches = small_daemon.data_dir / "data" / "serving" / "models"
    for edit in range(1, 4):
        doc["spec"]["predictor"]["containers"][0]["env"][0]["value"] = str(edit)
        r = small_daemon.session.put(small_daemon.url(NS, name), json=doc)
        assert r.status_code == 200, r.text
        revision = f"{name}-predictor-{edit + 1:05d}"
        small_daemon.wait(NS, name, lambda d: d.get("status", {}).get("components", {}).get("predictor", {})
                          .get("latestRolledoutRevision") == revision, what=revision)
    deadline = time.time() + 30
    while len([p for p in caches.iterdir() if (p / "weights.bin").exists()]) != 2:
        assert time.time() < deadline, sorted(p.name for p in caches.iterdir())
        time.sleep(0.2)
    r = requests.post(f"{small_daemon.serving}/v1/models/{name}:predict", data=b"{}",
                      headers={"Host": f"{name}.{NS}.example.com"}, timeout=30)
    assert r.status_code == 200 and r.headers["x-hearth-revision"] == f"{name}-predictor-00004", r.text
