"""The Kubernetes API as its own clients use it: the `kubernetes` Python client's
BatchV1Api (create, read, list, watch the status change, delete), CustomObjectsApi
(list) and KServe's KServeClient (create, wait ready by watching, get, delete), with a
prediction through the data plane in between, configured by the daemon's own
kubeconfig. Both run in .venv-kserve (see kubernetes_clients.py)."""

import json
import pathlib
import subprocess

import pytest

from conftest import ROOT

NS = "kubeflow"


def test_kubernetes_client_and_kserve_sdk(daemon, models):
    python = ROOT / ".venv-kserve" / "bin" / "python"
    if not python.exists():
        pytest.fail(f"{python} is missing: scripts/test builds it from tests/requirements-kserve.txt")
    out = subprocess.run([str(python), str(pathlib.Path(__file__).parent / "kubernetes_clients.py"),
                          str(pathlib.Path(daemon.data_dir) / "data" / "kubeconfig"), NS, f"file://{models['a']}", daemon.serving, "example.com"],
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr + "\n" + daemon.log_tail()
    seen = json.loads(out.stdout)
    assert seen["job_created"] == "k8s-client" and seen["job_read_uid_matches"], seen
    assert "k8s-client" in seen["job_listed"], seen
    assert seen.get("job_watched_succeeded"), seen
    assert seen["job_events"][0] == "ADDED" and "MODIFIED" in seen["job_events"], seen
    assert seen["job_delete_status"] == "Success", seen
    assert seen["job_missing"] == [404, "NotFound"], seen
    assert seen["isvc_ready"], seen
    assert "sdk-iris" in seen["isvc_listed"], seen
    assert len(seen["predictions"]) == 2, seen
