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


def python_on_path(tmp, interpreter):
    """A PATH whose `python` is `interpreter`: the SDK's trials run `python -u` (its
    ENTRYPOINT_PYTHON), and a host may have only `python3`."""
    bindir = pathlib.Path(tempfile.mkdtemp(prefix="py-", dir=tmp))
    # A wrapper, not a link: a venv's Python finds its venv from the path it is run by.
    wrapper = bindir / "python"
    wrapper.write_text(f'#!/bin/sh\nexec "{interpreter}" "$@"\n')
    wrapper.chmod(0o755)
    return f"{bindir}:{os.environ.get('PATH', '/usr/bin:/bin')}"


def stdout_objective(parameters):
    # Runs in the trial, with the host's Python and no packages: Katib's StdOut format.
    lr = float(parameters["lr"])
    print(f"accuracy={1 - abs(lr - 0.03)}")


def test_tune_runs_an_objective_function_with_the_hosts_python(daemon):
    import sys
    from kubeflow import katib
    client = KatibClient(config_file=str(daemon / "data" / "kubeconfig"))
    host_python = getattr(sys, "_base_executable", None) or sys.executable
    client.tune(
        name="sdk-tune",
        namespace=NS,
        objective=stdout_objective,
        parameters={"lr": katib.search.double(min=0.01, max=0.05)},
        objective_metric_name="accuracy",
        algorithm_name="random",
        max_trial_count=3,
        parallel_trial_count=2,
        env_per_trial={"PATH": python_on_path(daemon, host_python)},
    )
    done = client.wait_for_experiment_condition("sdk-tune", namespace=NS, timeout=90, polling_interval=1)
    assert client.is_experiment_succeeded("sdk-tune", namespace=NS, experiment=done), done.status
    assert done.status.trials_succeeded == 3, done.status
    optimal = client.get_optimal_hyperparameters("sdk-tune", namespace=NS)
    lr = float(optimal.parameter_assignments[0].value)
    assert float(optimal.observation.metrics[0].latest) == pytest.approx(1 - abs(lr - 0.03), abs=1e-6)
    client.delete_experiment("sdk-tune", namespace=NS)


def push_objective(parameters):
    # Runs in the trial: reports with the katib SDK (Push collector), three steps. It
    # first tries to write another trial's log with its own credential, which must be
    # refused, and reports whether it was ("forged": 0 refused, 1 taken).
    import os
    from kubeflow.katib import report_metrics
    from kubeflow.katib.utils import utils
    # katib 0.19's report_metrics reads the pod's service-account namespace file (for
    # its error message only), which a host process does not have.
    utils.get_current_k8s_namespace = lambda: "kubeflow"
    me = os.environ["KATIB_TRIAL_NAME"]
    os.environ["KATIB_TRIAL_NAME"] = parameters["victim"]
    try:
        report_metrics({"accuracy": 99})
        forged = 1
    except RuntimeError as e:
        forged = 0 if "PERMISSION_DENIED" in str(e) else 2
    os.environ["KATIB_TRIAL_NAME"] = me
    lr = float(parameters["lr"])
    for step in range(3):
        report_metrics({"accuracy": 1 - abs(lr - 0.03) - (2 - step) * 0.1, "forged": forged})


def test_push_trials_report_with_report_metrics_and_only_for_themselves(daemon):
    import sys
    import requests
    from kubeflow import katib
    client = KatibClient(config_file=str(daemon / "data" / "kubeconfig"))
    info = json.loads((daemon / "data" / "hearth.addr").read_text())
    token = (daemon / "data" / "admin.token").read_text().strip()
    api = f"http://{info['api']}"
    auth = {"Authorization": f"Bearer {token}"}
    # A victim: a finished StdOut trial in the same namespace.
    client.tune(
        name="victim", namespace=NS, objective=stdout_objective,
        parameters={"lr": katib.search.double(min=0.01, max=0.05)},
        objective_metric_name="accuracy", max_trial_count=1, parallel_trial_count=1,
        env_per_trial={"PATH": python_on_path(daemon, getattr(sys, "_base_executable", sys.executable))},
    )
    client.wait_for_experiment_condition("victim", namespace=NS, timeout=90, polling_interval=1)
    victim = client.list_trials("victim", namespace=NS)[0].metadata.name
    before = requests.get(f"{api}/hearth/v1/namespaces/{NS}/trials/{victim}/observationlog",
                          headers=auth, timeout=10).json()

    client.tune(
        name="sdk-push",
        namespace=NS,
        objective=push_objective,
        parameters={"lr": katib.search.double(min=0.01, max=0.05), "victim": victim},
        objective_metric_name="accuracy",
        additional_metric_names=["forged"],
        max_trial_count=2,
        parallel_trial_count=2,
        metrics_collector_config={"kind": "Push"},
        # The venv's Python: the objective imports the katib SDK.
        env_per_trial={"PATH": python_on_path(daemon, sys.executable)},
        retain_trials=True,
    )
    done = client.wait_for_experiment_condition("sdk-push", namespace=NS, timeout=90, polling_interval=1)
    outputs = [requests.get(f"{api}/hearth/v1/namespaces/{NS}/jobs/{t.metadata.name}/logs",
                            headers=auth, timeout=10).text
               for t in client.list_trials("sdk-push", namespace=NS)]
    assert client.is_experiment_succeeded("sdk-push", namespace=NS, experiment=done), outputs
    assert done.status.trials_succeeded == 2, outputs
    for trial in client.list_trials("sdk-push", namespace=NS):
        name = trial.metadata.name
        lr = float(trial.spec.parameter_assignments[0].value)
        metrics = {m.name: m for m in trial.status.observation.metrics}
        assert float(metrics["accuracy"].latest) == pytest.approx(1 - abs(lr - 0.03), abs=1e-6)
        assert float(metrics["accuracy"].min) == pytest.approx(1 - abs(lr - 0.03) - 0.2, abs=1e-6)
        assert metrics["forged"].latest == "0", "another trial's log was written"
        log = requests.get(f"{api}/hearth/v1/namespaces/{NS}/trials/{name}/observationlog",
                           params={"metric_name": "accuracy"}, headers=auth, timeout=10).json()
        assert len(log["metricLogs"]) == 3, log
        assert all(entry["timeStamp"].endswith("Z") for entry in log["metricLogs"]), log
        # The credential is in neither the Trial nor its Job (retained).
        for path in (f"/apis/kubeflow.org/v1beta1/namespaces/{NS}/trials/{name}",
                     f"/apis/batch/v1/namespaces/{NS}/jobs/{name}"):
            doc = requests.get(api + path, headers=auth, timeout=10)
            assert doc.status_code == 200, doc.text
            assert "grpc_proxy" not in doc.text and "katib-push" not in doc.text.replace(
                "hearth.dev/katib-push", ""), doc.text
    after = requests.get(f"{api}/hearth/v1/namespaces/{NS}/trials/{victim}/observationlog",
                         headers=auth, timeout=10).json()
    assert after == before, "the victim's log changed"
    client.delete_experiment("sdk-push", namespace=NS)
    client.delete_experiment("victim", namespace=NS)
