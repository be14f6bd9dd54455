"""The Katib SDK (kubeflow-katib 0.19, .venv-katib) against a real hearth daemon, with
the kubeconfig the daemon writes: create_experiment with the SDK's typed models,
wait_for_experiment_condition, get_optimal_hyperparameters, list_trials and
delete_experiment. Trials are tiny python3 commands printing `accuracy=...` (process
mode runs the container's command on the host). The served Experiment schema is
checked against the SDK's models, which are generated from Katib's Go types."""

import json
import os
import pathlib
import signal
import subprocess
import tempfile
import time

import pytest
from kubeflow.katib import KatibClient, models
from kubernetes.client import V1Container, V1JobSpec, V1ObjectMeta, V1PodSpec, V1PodTemplateSpec

ROOT = pathlib.Path(__file__).resolve().parents[3]
NS = "kubeflow"
CONFIG = """
[jobs]
backoff_base_seconds = 0.1
[isolation]
enabled = false
"""


@pytest.fixture(scope="module")
def daemon():
    binary = os.environ.get("HEARTH_BIN", str(ROOT / "target" / "debug" / "hearth"))
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="hearth-katib-"))
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
            if json.loads(addr.read_text()).get("pid") == proc.pid:
                break
        except (OSError, ValueError):
            pass
        assert proc.poll() is None, (tmp / "daemon.log").read_text()
        time.sleep(0.05)
    else:
        raise AssertionError("the daemon did not start")
    yield tmp
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()


def experiment(name):
    # accuracy peaks at lr = 0.03: the best trial is the one closest to it.
    script = "import sys; lr = float(sys.argv[1]); print('accuracy=%f' % (1 - abs(lr - 0.03)))"
    job = {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "spec": V1JobSpec(
            backoff_limit=0,
            template=V1PodTemplateSpec(spec=V1PodSpec(
                restart_policy="Never",
                containers=[V1Container(name="training", image="python:3.11",
                                        command=["python3", "-c", script, "${trialParameters.learningRate}"])],
            )),
        ),
    }
    return models.V1beta1Experiment(
        api_version="kubeflow.org/v1beta1",
        kind="Experiment",
        metadata=V1ObjectMeta(name=name, namespace=NS),
        spec=models.V1beta1ExperimentSpec(
            max_trial_count=3,
            parallel_trial_count=3,
            max_failed_trial_count=1,
            algorithm=models.V1beta1AlgorithmSpec(
                algorithm_name="random",
                algorithm_settings=[models.V1beta1AlgorithmSetting(name="random_state", value="3")],
            ),
            objective=models.V1beta1ObjectiveSpec(type="maximize", goal=2.0, objective_metric_name="accuracy"),
            parameters=[models.V1beta1ParameterSpec(
                name="lr", parameter_type="double",
                feasible_space=models.V1beta1FeasibleSpace(min="0.01", max="0.05"))],
            trial_template=models.V1beta1TrialTemplate(
                primary_container_name="training",
                trial_parameters=[models.V1beta1TrialParameterSpec(name="learningRate", reference="lr")],
                trial_spec=job,
            ),
        ),
    )


def test_katib_sdk_runs_an_experiment_to_its_optimum(daemon):
    katib = KatibClient(config_file=str(daemon / "data" / "kubeconfig"))
    katib.create_experiment(experiment("sdk-random"), namespace=NS)
    done = katib.wait_for_experiment_condition("sdk-random", namespace=NS, timeout=60, polling_interval=1)
    assert katib.is_experiment_succeeded("sdk-random", namespace=NS, experiment=done)
    reasons = [c.reason for c in done.status.conditions if c.type == "Succeeded"]
    assert reasons == ["ExperimentMaxTrialsReached"], done.status.conditions

    trials = katib.list_trials("sdk-random", namespace=NS)
    assert len(trials) == 3
    scores = {
        t.metadata.name: float(t.status.observation.metrics[0].latest) for t in trials
    }
    optimal = katib.get_optimal_hyperparameters("sdk-random", namespace=NS)
    assert optimal is not None, (daemon / "daemon.log").read_text()[-3000:]
    assert optimal.best_trial_name == max(scores, key=scores.get), (optimal, scores)
    lr = float(optimal.parameter_assignments[0].value)
    assert 0.01 <= lr <= 0.05
    assert float(optimal.observation.metrics[0].max) == pytest.approx(1 - abs(lr - 0.03), abs=1e-5)

    katib.delete_experiment("sdk-random", namespace=NS)
    # The experiment goes, then the garbage collector takes its trials.
    deadline = time.time() + 30
    while (katib.list_experiments(namespace=NS) or katib.list_trials("sdk-random", namespace=NS)) \
            and time.time() < deadline:
        time.sleep(0.2)
    assert katib.list_experiments(namespace=NS) == []
    assert katib.list_trials("sdk-random", namespace=NS) == []


def sdk_schema(type_name, depth=0):
    """The OpenAPI shape of a Katib SDK model (generated from Katib's Go types): names
    from `attribute_map`, types from `openapi_types`."""
    import re
    m = re.fullmatch(r"list\[(.*)\]", type_name)
    if m:
        return {"type": "array", "items": sdk_schema(m.group(1), depth + 1)}
    if type_name.startswith("dict("):
        return {"type": "object"}
    simple = {"str": "string", "int": "integer", "float": "number", "bool": "boolean", "object": "object"}
    if type_name in simple or depth > 8:
        return {"type": simple.get(type_name, "object")}
    cls = getattr(models, type_name, None)
    if cls is None:  # a Kubernetes type (V1HTTPGetAction): not descended into
        return {"type": "object"}
    return {"type": "object", "properties": {
        cls.attribute_map[a]: sdk_schema(t, depth + 1) for a, t in cls.openapi_types.items()}}


def same_fields(ours, theirs, path, errors):
    if theirs.get("type") and ours.get("type") != theirs["type"]:
        errors.append(f"{path}: Hearth says {ours.get('type')}, Katib {theirs['type']}")
        return 1
    checked = 1
    for name, sub in (ours.get("properties") or {}).items():
        if "properties" not in theirs:
            break
        if name not in theirs["properties"]:
            errors.append(f"{path}.{name}: not a Katib field")
            continue
        checked += same_fields(sub, theirs["properties"][name], f"{path}.{name}", errors)
    if "items" in ours and "items" in theirs:
        checked += same_fields(ours["items"], theirs["items"], f"{path}[]", errors)
    return checked


def test_the_experiment_schema_has_katibs_fields_and_types(daemon):
    """Every field the served Experiment schema declares is one of Katib's (the SDK's
    models), with Katib's type: the CRD itself declares no fields
    (x-kubernetes-preserve-unknown-fields)."""
    import requests
    info = json.loads((daemon / "data" / "hearth.addr").read_text())
    token = (daemon / "data" / "admin.token").read_text().strip()
    doc = requests.get(f"http://{info['api']}/openapi/v3/apis/kubeflow.org/v1beta1",
                       headers={"Authorization": f"Bearer {token}"}, timeout=10).json()
    ours = doc["components"]["schemas"]["org.kubeflow.v1beta1.Experiment"]["properties"]["spec"]
    errors = []
    checked = same_fields(ours, sdk_schema("V1beta1ExperimentSpec"), "spec", errors)
    assert not errors, "\n".join(errors)
    assert checked > 30, checked
    print(f"{checked} fields compared")
