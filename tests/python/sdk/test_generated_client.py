"""The Python client that openapi-python-client generates from openapi/openapi.json
(scripts/test generates it into $HEARTH_SDK_DIR and puts it on the path), against a real
hearth daemon: users, tokens, a Kubernetes Job and a KFP run, each through the typed
functions and models of the generated package, never raw HTTP."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import pytest
from hearth_client import AuthenticatedClient
from hearth_client.api.access import create_token, create_user, delete_token, list_tokens, whoami
from hearth_client.api.jobs import create_namespaced_job, read_namespaced_job
from hearth_client.api.kfp import create_run, get_run
from hearth_client.models import CreateToken, CreateUser, JobDocument, Problem, V2Beta1Run

ROOT = pathlib.Path(__file__).resolve().parents[3]
CONFIG = """
[jobs]
backoff_base_seconds = 0.1
[isolation]
enabled = false
"""


@pytest.fixture(scope="module")
def daemon():
    binary = os.environ.get("HEARTH_BIN", str(ROOT / "target" / "debug" / "hearth"))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hearth-sdk-"))
    (tmp / "config.toml").write_text(CONFIG)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HEARTH_")}
    env.pop("NOTIFY_SOCKET", None)
    log = open(tmp / "daemon.log", "a")
    proc = subprocess.Popen([binary, "serve", "--config", str(tmp / "config.toml"), "--data-dir",
                             str(tmp / "data"), "--listen", "127.0.0.1:0", "--serving-listen",
                             "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"], env=env, stderr=log, stdout=log)
    addr = tmp / "data" / "hearth.addr"
    for _ in range(600):
        try:
            found = json.loads(addr.read_text())
            if found.get("pid") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, (tmp / "daemon.log").read_text()
        time.sleep(0.05)
    else:
        raise AssertionError("the daemon did not start")
    url = "http://" + found["api"]
    token = (tmp / "data" / "admin.token").read_text().strip()
    yield url, token
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def client(url, token):
    return AuthenticatedClient(base_url=url, token=token, raise_on_unexpected_status=True)


def test_users_and_tokens(daemon):
    url, admin_token = daemon
    admin = client(url, admin_token)
    me = whoami.sync(client=admin)
    assert me.user == "admin" and me.admin is True

    created = create_user.sync(client=admin, body=CreateUser(name="sdk-user"))
    assert created.namespace == "sdk-user"
    alice = client(url, created.token.token)
    assert whoami.sync(client=alice).user == "sdk-user"

    new = create_token.sync(client=alice, body=CreateToken(name="ci", expires_in_seconds=3600))
    assert new.token.startswith("hth_") and new.expires_at
    names = [t.name for t in list_tokens.sync(client=alice).items]
    assert "ci" in names
    assert delete_token.sync_detailed("ci", client=alice).status_code == 204
    # The revoked token is refused: a typed problem+json answer.
    refused = whoami.sync_detailed(client=client(url, new.token))
    assert refused.status_code == 401
    assert isinstance(refused.parsed, Problem) and refused.parsed.code == "unauthorized"
    # A bad name is a 422 naming the field.
    bad = create_user.sync_detailed(client=admin, body=CreateUser(name="Not_A_Label"))
    assert bad.status_code in (400, 422) and isinstance(bad.parsed, Problem)


def test_a_job_runs_to_completion(daemon):
    url, token = daemon
    admin = client(url, token)
    job = JobDocument.from_dict({
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": {"name": "sdk-job"},
        "spec": {
            "backoffLimit": 0,
            "template": {"spec": {
                "restartPolicy": "Never",
                "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "echo hi"]}],
            }},
        },
    })
    made = create_namespaced_job.sync("admin", client=admin, body=job)
    assert isinstance(made, JobDocument) and made.metadata["name"] == "sdk-job"
    deadline = time.time() + 30
    while time.time() < deadline:
        got = read_namespaced_job.sync("admin", "sdk-job", client=admin)
        status = got.additional_properties.get("status") or {}
        if status.get("succeeded") == 1:
            break
        assert not status.get("failed"), status
        time.sleep(0.3)
    else:
        raise AssertionError(f"the job did not succeed: {got.to_dict()}")


def test_a_kfp_run_succeeds(daemon):
    url, token = daemon
    admin = client(url, token)
    spec = {
        "pipelineInfo": {"name": "sdk"},
        "schemaVersion": "2.1.0",
        "components": {"comp-say": {"executorLabel": "exec-say"}},
        "deploymentSpec": {"executors": {"exec-say": {"container": {
            "image": "alpine:3.23", "command": ["sh", "-c", "echo hello"]}}}},
        "root": {"dag": {"tasks": {"say": {"taskInfo": {"name": "say"}, "componentRef": {"name": "comp-say"}}}}},
    }
    body = V2Beta1Run.from_dict({"display_name": "sdk-run", "pipeline_spec": spec})
    run = create_run.sync(client=admin, body=body)
    run_id = run.run_id
    assert run_id
    deadline = time.time() + 60
    while time.time() < deadline:
        got = get_run.sync(run_id, client=admin)
        if got.state in ("SUCCEEDED", "FAILED", "CANCELED"):
            break
        time.sleep(0.5)
    assert got.state == "SUCCEEDED", got.to_dict()
    tasks = {t.display_name: t.state for t in got.run_details.task_details}
    assert tasks.get("say") == "SUCCEEDED", tasks
