"""Serving end to end: a scikit-learn model trained here, served by MLServer replicas
behind Hearth's data plane, called with tritonclient, the kserve client and plain V1
JSON; canary, promotion and rollback; a broken revision; scale to zero and back;
50 concurrent clients scaling up and down without a failed request."""

import collections
import concurrent.futures
import json
import pathlib
import subprocess
import threading
import time

import numpy as np
import pytest
import requests
import tritonclient.http as triton

from conftest import ROOT, file_server, isvc, ready

NS = "kubeflow"
X = [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2], [7.7, 3.0, 6.1, 2.3]]


def host(name):
    return f"{name}.{NS}.example.com"


def v1_predict(daemon, name, instances=X, timeout=60):
    return requests.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": instances},
                         headers={"Host": host(name)}, timeout=timeout)


def test_predictions_with_tritonclient_kserve_and_v1(daemon, models):
    daemon.create(NS, isvc("iris", models["a"]))
    doc = daemon.wait_ready(NS, "iris")
    status = doc["status"]
    assert status["url"] == "http://iris.kubeflow.example.com"
    assert status["components"]["predictor"]["latestReadyRevision"] == "iris-predictor-00001"
    assert status["components"]["predictor"]["traffic"][0]["percent"] == 100

    import joblib
    expected = joblib.load(models["a"] / "model.joblib").predict(np.array(X)).tolist()

    # V1, curl style: {"instances": ...} -> {"predictions": ...}
    r = v1_predict(daemon, "iris")
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
    assert r.headers["x-hearth-revision"] == "iris-predictor-00001"

    # tritonclient: binary tensors by default, and pure JSON.
    client = triton.InferenceServerClient(daemon.serving.removeprefix("http://"))
    x = np.array(X, dtype=np.float64)
    for binary in (True, False):
        inp = triton.InferInput("input-0", list(x.shape), "FP64")
        inp.set_data_from_numpy(x, binary_data=binary)
        outputs = None if binary else [triton.InferRequestedOutput("predict", binary_data=False)]
        res = client.infer("iris", [inp], outputs=outputs, headers={"Host": host("iris")})
        assert res.as_numpy("predict").ravel().tolist() == expected, binary
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("iris", headers={"Host": host("iris")})

    # Routing by path alone works while the name is unique on the node.
    r = requests.post(f"{daemon.serving}/v2/models/iris/infer",
                      json={"inputs": [{"name": "input-0", "shape": [3, 4], "datatype": "FP64",
                                        "data": sum(X, [])}]}, timeout=30)
    assert r.status_code == 200, r.text
    assert r.json()["model_name"] == "iris"

    # The kserve client, in its own venv.
    kserve_python = ROOT / ".venv-kserve" / "bin" / "python"
    if not kserve_python.exists():
        pytest.fail(f"{kserve_python} is missing: scripts/test builds it from tests/requirements-kserve.txt")
    out = subprocess.run([str(kserve_python), str(pathlib.Path(__file__).parent / "kserve_client.py"),
                          daemon.serving, host("iris"), "iris"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    result = json.loads(out.stdout)
    assert result["server_live"] and result["server_ready"] and result["model_ready"], result
    assert result["model_name"] == "iris"
    assert result["v2"]["binary"] == expected[:2] and result["v2"]["json"] == expected[:2], result
    assert result["v1"] == expected[:2] and result["v1_model_ready"], result


def revision_counts(daemon, name, n):
    counts = collections.Counter()
    session = requests.Session()
    for _ in range(n):
        r = session.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X[:1]},
                         headers={"Host": host(name)}, timeout=60)
        assert r.status_code == 200, r.text
        counts[r.headers["x-hearth-revision"]] += 1
    return counts


def test_canary_promotion_rollback_and_broken_revision(daemon, models):
    name = "canary"
    daemon.create(NS, isvc(name, models["a"]))
    daemon.wait_ready(NS, name)
    first = f"{name}-predictor-00001"
    second = f"{name}-predictor-00002"

    # A new model with 10 % canary traffic.
    daemon.patch(NS, name, {"spec": {"predictor": {"canaryTrafficPercent": 10,
                                                   "model": {"storageUri": f"file://{models['b']}"}}}})
    doc = daemon.wait(NS, name, lambda d: len(d["status"]["components"]["predictor"].get("traffic", [])) == 2,
                      what="a canary split")
    traffic = {t["revisionName"]: t["percent"] for t in doc["status"]["components"]["predictor"]["traffic"]}
    assert traffic == {second: 10, first: 90}, traffic
    counts = revision_counts(daemon, name, 1000)
    assert 70 <= counts[second] <= 130, counts
    assert counts[first] + counts[second] == 1000

    # Promotion: drop canaryTrafficPercent.
    daemon.patch(NS, name, {"spec": {"predictor": {"canaryTrafficPercent": None}}})
    doc = daemon.wait(NS, name, lambda d: d["status"]["components"]["predictor"].get("latestRolledoutRevision") == second,
                      what="promotion")
    assert doc["status"]["components"]["predictor"]["previousRolledoutRevision"] == first
    assert revision_counts(daemon, name, 50) == {second: 50}

    # Rollback: canaryTrafficPercent 0 sends everything to the previous rolled-out revision;
    # the latest stays listed at 0 %, as KServe lists it.
    daemon.patch(NS, name, {"spec": {"predictor": {"canaryTrafficPercent": 0}}})
    doc = daemon.wait(NS, name, lambda d: {t["revisionName"]: t["percent"] for t in d["status"]["components"]["predictor"]["traffic"]}
                      == {second: 0, first: 100}, what="rollback")
    targets = {t["revisionName"]: t for t in doc["status"]["components"]["predictor"]["traffic"]}
    assert targets[second]["latestRevision"] is True and targets[first]["latestRevision"] is False, targets
    assert revision_counts(daemon, name, 50) == {first: 50}

    # A broken model: its revision fails and never receives traffic.
    daemon.patch(NS, name, {"spec": {"predictor": {"canaryTrafficPercent": 50,
                                                   "model": {"storageUri": f"file://{models['broken']}"}}}})
    third = f"{name}-predictor-00003"
    stop = threading.Event()
    seen = collections.Counter()
    failures = []

    def hammer():
        session = requests.Session()
        while not stop.is_set():
            r = session.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X[:1]},
                             headers={"Host": host(name)}, timeout=60)
            if r.status_code != 200:
                failures.append(r.text)
            seen[r.headers.get("x-hearth-revision")] += 1

    t = threading.Thread(target=hammer)
    t.start()
    try:
        doc = daemon.wait(NS, name, lambda d: d["status"]["components"]["predictor"]["latestCreatedRevision"] == third
                          and any(c["type"] == "LatestDeploymentReady" and c["status"] == "False"
                                  for c in d["status"]["conditions"]), timeout=120, what="the broken revision failing")
    finally:
        stop.set()
        t.join()
    assert ready(doc), doc["status"]
    assert seen[third] == 0, seen
    assert set(seen) == {first}, f"traffic left the rolled-back revision: {seen}"
    assert not failures, failures[:3]
    assert third not in [t["revisionName"] for t in doc["status"]["components"]["predictor"]["traffic"]]


def test_scale_to_zero_then_load_scales_up_and_down(daemon, models):
    name = "elastic"
    daemon.create(NS, isvc(name, models["a"], minReplicas=0, maxReplicas=4, scaleTarget=2,
                           scaleMetric="concurrency"))
    daemon.wait_ready(NS, name)
    # Idle past the grace period: zero replicas.
    deadline = time.time() + 60
    while daemon.replicas_ready(NS, name) > 0:
        assert time.time() < deadline, "replicas did not reach zero\n" + daemon.log_tail()
        time.sleep(0.5)
    # The next request is held by the activator and succeeds.
    began = time.time()
    r = v1_predict(daemon, name)
    assert r.status_code == 200, r.text
    cold = time.time() - began
    print(f"cold start through the activator: {cold:.2f} s")

    # 50 concurrent clients for a while: replicas go up; afterwards, down again.
    stop = threading.Event()
    results = collections.Counter()
    errors = []
    peak = 0

    def client():
        session = requests.Session()
        while not stop.is_set():
            try:
                resp = session.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X},
                                    headers={"Host": host(name)}, timeout=60)
                results[resp.status_code] += 1
                if resp.status_code != 200:
                    errors.append(resp.text)
            except requests.RequestException as e:
                errors.append(repr(e))

    with concurrent.futures.ThreadPoolExecutor(50) as pool:
        futures = [pool.submit(client) for _ in range(50)]
        deadline = time.time() + 40
        while time.time() < deadline:
            peak = max(peak, daemon.replicas_ready(NS, name))
            if peak >= 2 and time.time() > deadline - 30:
                break
            time.sleep(0.5)
        time.sleep(2)
        stop.set()
        for f in futures:
            f.result()
    assert peak >= 2, f"replicas never went above {peak}\n{daemon.log_tail()}"
    # Down again means the replica processes stop, all the way to zero (minReplicas 0,
    # a 6 s stable window and a 3 s grace here), not only that the data plane stops
    # routing to them: a drained replica that is never stopped would keep running.
    deadline = time.time() + 60
    while daemon.replicas_active(NS, name) > 0:
        assert time.time() < deadline, (f"replicas did not scale down to zero: {daemon.replicas_active(NS, name)} "
                                         f"still active\n{daemon.log_tail()}")
        time.sleep(0.5)
    assert daemon.replicas_ready(NS, name) == 0
    print(f"load: {dict(results)}, peak replicas {peak}")
    assert not errors, errors[:5]
    assert results[200] > 100


def test_custom_transformer_in_front_of_the_predictor(daemon, models):
    name = "iris-names"
    doc = isvc(name, models["a"])
    script = pathlib.Path(__file__).parent / "iris_transformer.py"
    doc["spec"]["transformer"] = {"containers": [{
        "name": "kserve-container", "image": "example/iris-transformer:latest",
        "command": ["python3", str(script)]}]}
    daemon.create(NS, doc)
    daemon.wait_ready(NS, name)
    rows = [dict(zip(["sepal_length", "sepal_width", "petal_length", "petal_width"], x)) for x in X]
    r = requests.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": rows},
                      headers={"Host": host(name)}, timeout=60)
    assert r.status_code == 200, r.text
    import joblib
    expected = joblib.load(models["a"] / "model.joblib").predict(np.array(X)).tolist()
    names = ["setosa", "versicolor", "virginica"]
    assert r.json() == {"predictions": [names[i] for i in expected]}
    assert r.headers["x-hearth-revision"] == f"{name}-predictor-00001"


def metric(daemon, name, service):
    text = daemon.session.get(f"{daemon.api}/metrics").text
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
               if line.startswith(name + "{") and f'service="{service}"' in line)


def test_bearer_auth_and_response_cache(daemon, models):
    name = "guarded"
    doc = isvc(name, models["a"])
    doc["metadata"]["annotations"] = {"serving.hearth.dev/require-token": "true",
                                      "serving.hearth.dev/response-cache": "60"}
    created = daemon.create(NS, doc)
    daemon.wait_ready(NS, name)
    assert created["metadata"]["annotations"]["serving.hearth.dev/response-cache"] == "60"
    r = v1_predict(daemon, name)
    assert r.status_code == 401, r.text
    headers = {"Host": host(name), "Authorization": f"Bearer {daemon.token}"}
    answers = []
    for _ in range(3):
        r = requests.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X}, headers=headers,
                          timeout=30)
        assert r.status_code == 200, r.text
        answers.append(r.json())
    assert answers[0] == answers[1] == answers[2]
    assert metric(daemon, "hearth_serving_cache_hits_total", name) >= 2
    assert metric(daemon, "hearth_serving_cache_misses_total", name) >= 1
    # A different body is a different key.
    r = requests.post(f"{daemon.serving}/v1/models/{name}:predict", json={"instances": X[:1]}, headers=headers,
                      timeout=30)
    assert r.status_code == 200 and len(r.json()["predictions"]) == 1
    # Per-service metrics: requests by code, latency, replicas.
    assert metric(daemon, "hearth_serving_requests_total", name) >= 4
    assert metric(daemon, "hearth_serving_replicas_ready", name) >= 1

    # Deleting the service stops its replicas and removes it.
    r = daemon.session.delete(daemon.url(NS, name))
    assert r.status_code == 200, r.text
    deadline = time.time() + 30
    while daemon.session.get(daemon.url(NS, name)).status_code != 404:
        assert time.time() < deadline, "the service was not removed"
        time.sleep(0.25)
    assert v1_predict(daemon, name).status_code == 404


def test_http_storage_uri_is_fetched_into_the_cache(daemon, models):
    name = "from-http"
    with file_server(models["b"]) as server:
        doc = isvc(name, "unused")
        doc["spec"]["predictor"]["model"]["storageUri"] = f"http://127.0.0.1:{server.server_port}/model.joblib"
        daemon.create(NS, doc)
        daemon.wait_ready(NS, name)
    # Served from the revision's cache, with the origin gone.
    import joblib
    expected = joblib.load(models["b"] / "model.joblib").predict(np.array(X)).tolist()
    r = v1_predict(daemon, name)
    assert r.status_code == 200, r.text
    assert r.json() == {"predictions": expected}
