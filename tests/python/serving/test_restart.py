"""A daemon killed with SIGKILL while it serves a Ready InferenceService, then started
again on the same data directory, adopts the running replica: the same workload, no
second replica, and predictions answer at once (no cold start). Killed in the middle
of a model download, it fetches again after the restart."""

import threading
import time

import joblib
import numpy as np
import requests

from conftest import QuietFiles, file_server, isvc, start_daemon, stop_daemon

NS = "kubeflow"
X = [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]
NAME = "survivor"


def replicas(d):
    """The service's workloads as the scheduler reports them: id -> (phase, started_at)."""
    r = d.session.get(f"{d.api}/hearth/v1/queue")
    assert r.status_code == 200, r.text
    return {e["id"]: (e["phase"], e["started_at"]) for e in r.json()["items"]
            if e["namespace"] == NS}


def predict(d, timeout):
    return requests.post(f"{d.serving}/v1/models/{NAME}:predict", json={"instances": X},
                         headers={"Host": f"{NAME}.{NS}.example.com"}, timeout=timeout)


def test_a_killed_daemon_adopts_its_replica_on_restart(models):
    expected = joblib.load(models["a"] / "model.joblib").predict(np.array(X)).tolist()
    d = start_daemon()
    data_dir = d.data_dir
    try:
        d.create(NS, isvc(NAME, models["a"]))
        d.wait_ready(NS, NAME)
        r = predict(d, 60)
        assert r.status_code == 200 and r.json() == {"predictions": expected}, r.text
        before = replicas(d)
        assert len(before) == 1, before
        replica_dirs = sorted(p.name for p in (data_dir / "data" / "serving" / "replicas").iterdir())
        assert len(replica_dirs) == 1, replica_dirs
    except BaseException:
        d.proc.kill()
        raise

    d.proc.kill()  # SIGKILL: no shutdown path runs
    d.proc.wait(timeout=10)

    d = start_daemon(data_dir=data_dir)
    try:
        started = time.monotonic()
        # A cold start of MLServer takes seconds; an adopted replica answers as soon as
        # the controller has probed it once.
        while True:
            try:
                r = predict(d, 5)
                if r.status_code == 200:
                    break
            except requests.RequestException:
                pass
            assert time.monotonic() - started < 3, f"no prediction 3 s after the restart\n{d.log_tail()}"
            time.sleep(0.05)
        assert r.json() == {"predictions": expected}
        doc = d.wait_ready(NS, NAME, timeout=10)
        assert doc["status"]["components"]["predictor"]["latestReadyRevision"] == f"{NAME}-predictor-00001"
        # Give a wrongful second start the time it would take to show up.
        time.sleep(2)
        after = replicas(d)
        assert after == before, (before, after)
        assert sorted(p.name for p in (data_dir / "data" / "serving" / "replicas").iterdir()) == replica_dirs
    finally:
        stop_daemon(d)


def test_a_daemon_killed_mid_download_fetches_again_after_restart(models):
    release = threading.Event()
    requests_seen = []

    class Stalled(QuietFiles):
        def do_GET(self):
            requests_seen.append(self.path)
            if len(requests_seen) == 1:
                release.wait(60)  # the first download hangs until the daemon is gone
            super().do_GET()

    with file_server(models["a"], Stalled) as server:
        doc = isvc("refetched", models["a"])
        doc["spec"]["predictor"]["model"]["storageUri"] = f"http://127.0.0.1:{server.server_port}/model.joblib"
        d = start_daemon()
        data_dir = d.data_dir
        try:
            d.create(NS, doc)
            deadline = time.monotonic() + 20
            while not requests_seen:
                assert time.monotonic() < deadline, "the download did not start"
                time.sleep(0.05)
            d.proc.kill()
            d.proc.wait(timeout=10)
            release.set()
            d = start_daemon(data_dir=data_dir)
            d.wait_ready(NS, "refetched", timeout=60)
            assert len(requests_seen) >= 2, requests_seen
            r = requests.post(f"{d.serving}/v1/models/refetched:predict", json={"instances": X},
                              headers={"Host": f"refetched.{NS}.example.com"}, timeout=60)
            assert r.status_code == 200, r.text
            partial = [p.name for p in (data_dir / "data" / "serving" / "models").iterdir() if p.name.endswith(".partial")]
            assert not partial, partial
        finally:
            release.set()
            stop_daemon(d)
