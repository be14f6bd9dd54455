"""The real kfp.Client (kfp==2.17.0) against a real Hearth daemon.

Each pipeline is compiled here with the SDK; the steps are lightweight Python
components that run in process mode with this venv's kfp (the daemon's
`pipelines.step_venv`). Every test asserts the values the steps produced.
"""

import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import List

import kfp
import pytest
from kfp import compiler, dsl

ROOT = Path(__file__).resolve().parents[3]
BIN = Path(os.environ.get("HEARTH_BIN", ROOT / "target" / "debug" / "hearth"))
VENV = Path(os.environ.get("HEARTH_STEP_VENV", Path(os.sys.prefix)))


@pytest.fixture(scope="module")
def hearth():
    tmp = Path(tempfile.mkdtemp(prefix="hearth-kfp-"))
    data = tmp / "data"
    cfg = tmp / "config.toml"
    cfg.write_text(
        # The venv's Python lives under /root (0700), which a namespace's Unix user cannot
        # run; tests/tests/isolation.rs covers pipelines as the namespace's user.
        f'[gpu]\nsimulate = 1\n[pipelines]\nstep_venv = "{VENV}"\n[isolation]\nenabled = false\n'
    )
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "WATCHDOG_USEC")}
    log = open(tmp / "daemon.log", "w")
    proc = subprocess.Popen(
        [str(BIN), "serve", "--config", str(cfg), "--data-dir", str(data),
         "--listen", "127.0.0.1:0", "--serving-listen", "127.0.0.1:0", "--tls-listen", "127.0.0.1:0"],
        stdout=log, stderr=log, env=env,
    )
    addr = data / "hearth.addr"
    for _ in range(400):
        if addr.exists():
            try:
                info = json.loads(addr.read_text())
                if info["pid"] == proc.pid:
                    break
            except (ValueError, KeyError):
                pass
        time.sleep(0.05)
    else:
        proc.kill()
        raise RuntimeError((tmp / "daemon.log").read_text())
    url = "http://" + info["api"]
    token = (data / "admin.token").read_text().strip()
    yield {"url": url, "token": token, "tmp": tmp, "data": data}
    proc.terminate()
    proc.wait(timeout=30)


@pytest.fixture(scope="module")
def client(hearth):
    return kfp.Client(host=hearth["url"], existing_token=hearth["token"])


def http(hearth, path):
    req = urllib.request.Request(hearth["url"] + path, headers={"Authorization": "Bearer " + hearth["token"]})
    with urllib.request.urlopen(req) as r:
        body = r.read()
        return json.loads(body) if r.headers.get("content-type", "").startswith("application/json") else body


def wait(client, run_id, timeout=120, states=("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED")):
    deadline = time.time() + timeout
    while time.time() < deadline:
        run = client.get_run(run_id)
        if run.state in states:
            return run
        time.sleep(0.3)
    raise TimeoutError(f"run {run_id} is still {client.get_run(run_id).state}")


def tasks(hearth, run_id):
    run = http(hearth, f"/apis/v2beta1/runs/{run_id}")
    return run["run_details"]["task_details"]


def outputs(hearth, run_id, display_name):
    """Output parameters of every task with that display name, in path order."""
    found = sorted(
        (t for t in tasks(hearth, run_id) if t["display_name"] == display_name),
        key=lambda t: t["hearth_path"],
    )
    assert found, f"no task {display_name} in run {run_id}"
    return [http(hearth, f"/hearth/v1/pipelines/runs/{run_id}/tasks/{t['task_id']}/outputs") for t in found]


def task_states(hearth, run_id):
    return {t["hearth_path"]: t["state"] for t in tasks(hearth, run_id)}


# ----------------------------------------------------------------------------- components

@dsl.component(base_image="python:3.11")
def add(a: int, b: int) -> int:
    return a + b


@dsl.component(base_image="python:3.11")
def shout(text: str) -> str:
    return text.upper() + "!"


@dsl.component(base_image="python:3.11")
def make_dataset(n: int, data: dsl.Output[dsl.Dataset]):
    with open(data.path, "w") as f:
        f.write(",".join(str(i) for i in range(n)))
    data.metadata["rows"] = n


@dsl.component(base_image="python:3.11")
def sum_dataset(data: dsl.Input[dsl.Dataset]) -> int:
    return sum(int(x) for x in open(data.path).read().split(","))


@dsl.component(base_image="python:3.11")
def total(xs: List[int]) -> int:
    return sum(xs)


@dsl.component(base_image="python:3.11")
def record(path: str, line: str):
    with open(path, "a") as f:
        f.write(line + "\n")


@dsl.component(base_image="python:3.11")
def fail(msg: str):
    raise RuntimeError(msg)


@dsl.component(base_image="python:3.11")
def flaky(counter: str) -> str:
    import os
    import time
    n = int(open(counter).read()) if os.path.exists(counter) else 0
    open(counter, "w").write(str(n + 1))
    # When each attempt started, so the test can check the backoff between them.
    with open(counter + ".times", "a") as f:
        f.write(f"{time.time()}\n")
    if n < 2:
        raise RuntimeError(f"attempt {n + 1} fails")
    return f"attempt {n + 1}"


@dsl.component(base_image="python:3.11")
def report_status(path: str, status: dsl.PipelineTaskFinalStatus):
    import json
    with open(path, "w") as f:
        json.dump({"state": status.state, "error_code": status.error_code,
                   "error_message": status.error_message,
                   "task": status.pipeline_task_name}, f)


@dsl.component(base_image="python:3.11")
def maybe_fail(fail_it: bool):
    if fail_it:
        raise RuntimeError("the group failed on purpose")


@dsl.component(base_image="python:3.11")
def counted(marker: str, x: int) -> int:
    with open(marker, "a") as f:
        f.write("ran\n")
    return x * 2


@dsl.component(base_image="python:3.11")
def sleeper(pidfile: str, seconds: int):
    import os, time
    open(pidfile, "w").write(str(os.getpid()))
    time.sleep(seconds)


@dsl.component(base_image="python:3.11")
def gpu_step(log: str, name: str) -> str:
    import os, time
    start = time.time()
    time.sleep(1.0)
    with open(log, "a") as f:
        f.write(f"{name} {start} {time.time()} {os.environ.get('CUDA_VISIBLE_DEVICES', '')}\n")
    return os.environ.get("CUDA_VISIBLE_DEVICES", "")


# ------------------------------------------------------------------------------ pipelines

@dsl.pipeline(name="two-step-params")
def two_step(a: int = 1, b: int = 2, word: str = "hi"):
    s = add(a=a, b=b)
    add(a=s.output, b=10)
    shout(text=word)


@dsl.pipeline(name="features")
def features(n: int = 4, log: str = "/tmp/none"):
    ds = make_dataset(n=n)
    sd = sum_dataset(data=ds.outputs["data"])
    with dsl.ParallelFor([1, 2, 3], parallelism=2) as item:
        inc = add(a=item, b=sd.output)
    total(xs=dsl.Collected(inc.output))
    with dsl.If(sd.output > 5):
        record(path=log, line="big").set_display_name("when-big")
    with dsl.Else():
        record(path=log, line="small").set_display_name("when-small")


@dsl.pipeline(name="inner")
def inner(x: int) -> int:
    return add(a=x, b=100).output


@dsl.pipeline(name="nested")
def nested(x: int = 5):
    i = inner(x=x)
    add(a=i.output, b=1).set_display_name("after-inner")


@dsl.pipeline(name="exit-and-failure")
def exit_and_failure(log: str = "/tmp/none"):
    cleanup = record(path=log, line="cleanup ran").set_display_name("cleanup")
    with dsl.ExitHandler(cleanup):
        f = fail(msg="boom")
        record(path=log, line="must not run").after(f).set_display_name("downstream")


@dsl.pipeline(name="retry")
def retry_pipe(counter: str = "/tmp/none"):
    # Waits of 1 s then 2 s before the second and third attempts.
    flaky(counter=counter).set_retry(num_retries=3, backoff_duration="1s", backoff_factor=2.0)


@dsl.pipeline(name="final-status")
def final_status_pipe(path: str = "/tmp/none", fail_it: bool = False):
    handler = report_status(path=path).set_display_name("report")
    with dsl.ExitHandler(handler):
        maybe_fail(fail_it=fail_it)


@dsl.pipeline(name="cache")
def cache_pipe(marker: str = "/tmp/none", x: int = 21):
    counted(marker=marker, x=x)


@dsl.pipeline(name="long")
def long_pipe(pidfile: str = "/tmp/none"):
    sleeper(pidfile=pidfile, seconds=300)


@dsl.pipeline(name="gpu")
def gpu_pipe(log: str = "/tmp/none"):
    gpu_step(log=log, name="a").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)
    gpu_step(log=log, name="b").set_accelerator_type("nvidia.com/gpu").set_accelerator_limit(1)


# ---------------------------------------------------------------------------------- tests

def test_upload_experiment_yaml_run_and_list(client, hearth, tmp_path):
    package = tmp_path / "two_step_params.yaml"
    compiler.Compiler().compile(two_step, str(package))
    uploaded = client.upload_pipeline(str(package), pipeline_name="two-step")
    assert uploaded.pipeline_id
    exp = client.create_experiment("e2e", namespace="default")
    assert exp.experiment_id
    # The SDK looks the experiment up by name (integer operation filter) and reuses it.
    again = client.create_experiment("e2e", namespace="default")
    assert again.experiment_id == exp.experiment_id
    result = client.create_run_from_pipeline_package(
        str(package), arguments={"a": 3, "b": 4, "word": "hearth"}, experiment_name="e2e", namespace="default"
    )
    run = client.wait_for_run_completion(result.run_id, timeout=120)
    assert run.state == "SUCCEEDED"
    assert [o["outputs"]["parameters"]["Output"] for o in outputs(hearth, result.run_id, "add")] == [7]
    assert outputs(hearth, result.run_id, "add-2")[0]["outputs"]["parameters"]["Output"] == 17
    assert outputs(hearth, result.run_id, "shout")[0]["outputs"]["parameters"]["Output"] == "HEARTH!"
    listed = client.list_runs(experiment_id=exp.experiment_id)
    assert result.run_id in [r.run_id for r in listed.runs]
    assert client.list_runs().total_size >= 1


def test_artifacts_parallel_for_collected_and_conditions(client, hearth, tmp_path):
    log = tmp_path / "features.log"
    result = client.create_run_from_pipeline_func(features, arguments={"n": 4, "log": str(log)}, namespace="default")
    run = wait(client, result.run_id)
    assert run.state == "SUCCEEDED", task_states(hearth, result.run_id)
    # 0+1+2+3 = 6 from the artifact; the loop adds 1, 2, 3; Collected sums them.
    made = outputs(hearth, result.run_id, "make-dataset")[0]
    art = made["outputs"]["artifacts"]["data"][0]
    assert art["metadata"]["rows"] == 4
    assert outputs(hearth, result.run_id, "sum-dataset")[0]["outputs"]["parameters"]["Output"] == 6
    loop = sorted(o["outputs"]["parameters"]["Output"] for o in outputs(hearth, result.run_id, "add"))
    assert loop == [7, 8, 9]
    assert outputs(hearth, result.run_id, "total")[0]["outputs"]["parameters"]["Output"] == 24
    assert log.read_text() == "big\n"
    # The artifact downloads through Hearth's route.
    made_task = [t for t in tasks(hearth, result.run_id) if t["display_name"] == "make-dataset"][0]
    body = http(hearth, f"/hearth/v1/pipelines/runs/{result.run_id}/tasks/{made_task['task_id']}/artifacts/data")
    assert body == b"0,1,2,3"


def test_nested_pipeline_outputs(client, hearth):
    result = client.create_run_from_pipeline_func(nested, arguments={"x": 5}, namespace="default")
    assert wait(client, result.run_id).state == "SUCCEEDED"
    assert outputs(hearth, result.run_id, "after-inner")[0]["outputs"]["parameters"]["Output"] == 106


def test_failure_propagates_and_exit_handler_runs(client, hearth, tmp_path):
    log = tmp_path / "exit.log"
    result = client.create_run_from_pipeline_func(exit_and_failure, arguments={"log": str(log)}, namespace="default")
    run = wait(client, result.run_id)
    assert run.state == "FAILED"
    assert log.read_text() == "cleanup ran\n"
    states = {t["display_name"]: t["state"] for t in tasks(hearth, result.run_id)}
    assert states["fail"] == "FAILED"
    assert states["downstream"] == "SKIPPED"
    assert states["cleanup"] == "SUCCEEDED"


def test_retry_of_a_flaky_step(client, hearth, tmp_path):
    counter = tmp_path / "counter"
    result = client.create_run_from_pipeline_func(retry_pipe, arguments={"counter": str(counter)}, namespace="default")
    assert wait(client, result.run_id).state == "SUCCEEDED"
    out = outputs(hearth, result.run_id, "flaky")[0]
    assert out["outputs"]["parameters"]["Output"] == "attempt 3"
    assert out["attempts"] == 3
    assert counter.read_text() == "3"
    # backoffDuration 1s, backoffFactor 2: the gaps between attempts' starts hold
    # waits of 1 s and 2 s, plus each Python step's start-up (seconds on a loaded
    # machine, so only the lower bound is checked here; tests/tests/pipelines_api.rs
    # checks the waits closely with shell steps).
    starts = [float(t) for t in Path(str(counter) + ".times").read_text().split()]
    gaps = [b - a for a, b in zip(starts, starts[1:])]
    assert len(gaps) == 2, gaps
    assert gaps[0] >= 1.0 and gaps[1] >= 2.0, gaps


@pytest.mark.parametrize("fail_it", [False, True])
def test_exit_handler_gets_the_final_status_as_kfp_gives_it(client, hearth, tmp_path, fail_it):
    path = tmp_path / "status.json"
    result = client.create_run_from_pipeline_func(
        final_status_pipe, arguments={"path": str(path), "fail_it": fail_it}, namespace="default")
    run = wait(client, result.run_id)
    assert run.state == ("FAILED" if fail_it else "SUCCEEDED")
    status = json.loads(path.read_text())
    if fail_it:
        # A google.rpc.Code and the group's real error.
        assert status["state"] == "FAILED", status
        assert status["error_code"] == 2, status
        assert "the group failed on purpose" in status["error_message"] or "exited with code" in status["error_message"], status
    else:
        # As KFP documents PipelineTaskFinalStatus: None, not 0 and ''.
        assert status == {"state": "SUCCEEDED", "error_code": None, "error_message": None,
                          "task": status["task"]}, status


def test_cache_hit_on_second_run(client, hearth, tmp_path):
    marker = tmp_path / "marker"
    args = {"marker": str(marker), "x": 21}
    first = client.create_run_from_pipeline_func(cache_pipe, arguments=args, namespace="default", enable_caching=True)
    assert wait(client, first.run_id).state == "SUCCEEDED"
    second = client.create_run_from_pipeline_func(cache_pipe, arguments=args, namespace="default", enable_caching=True)
    assert wait(client, second.run_id).state == "SUCCEEDED"
    assert marker.read_text() == "ran\n", "the cached step ran again"
    out = outputs(hearth, second.run_id, "counted")[0]
    assert out["cached"] is True
    assert out["outputs"]["parameters"]["Output"] == 42
    # enable_caching=False runs the step again.
    third = client.create_run_from_pipeline_func(cache_pipe, arguments=args, namespace="default", enable_caching=False)
    assert wait(client, third.run_id).state == "SUCCEEDED"
    assert marker.read_text() == "ran\nran\n"


def test_gpu_request_is_queued(client, hearth, tmp_path):
    log = tmp_path / "gpu.log"
    result = client.create_run_from_pipeline_func(gpu_pipe, arguments={"log": str(log)}, namespace="default")
    # While one step holds the only GPU, the scheduler's queue holds the other, with
    # its reason, and the run's task details show the same reason.
    queued, task_reason, admitted = None, None, set()
    deadline = time.time() + 120
    while time.time() < deadline:
        queue = http(hearth, "/hearth/v1/queue")
        mine = [i for i in queue["items"] if i["kind"] == "PipelineRun" and i["name"] == result.run_id]
        for item in mine:
            if item["phase"] == "Queued" and item.get("reason"):
                queued = queued or item
            admitted.update(item["gpu_uuids"])
        for t in tasks(hearth, result.run_id):
            task_reason = task_reason or t.get("hearth_pending_reason")
        if client.get_run(result.run_id).state in ("SUCCEEDED", "FAILED", "CANCELED"):
            break
        time.sleep(0.1)
    assert queued is not None, "the second GPU step never showed in /hearth/v1/queue"
    assert "GPU" in queued["reason"], queued
    assert queued["gpus"] == 1 and queued["priority"] == "Batch", queued
    assert task_reason and "GPU" in task_reason, "the task details never showed the pending reason"
    assert wait(client, result.run_id).state == "SUCCEEDED"
    rows = [line.split() for line in log.read_text().splitlines()]
    assert len(rows) == 2
    (a0, a1), (b0, b1) = sorted((float(r[1]), float(r[2])) for r in rows)
    assert b0 >= a1, "two 1-GPU steps overlapped on a host with one (simulated) GPU"
    assert all(len(r) == 4 and r[3] for r in rows), "the step saw no CUDA_VISIBLE_DEVICES"
    assert {r[3] for r in rows} <= admitted, "the steps saw GPUs the scheduler did not assign"


def test_terminate_long_run_leaves_no_process(client, hearth, tmp_path):
    pidfile = tmp_path / "pid"
    result = client.create_run_from_pipeline_func(long_pipe, arguments={"pidfile": str(pidfile)}, namespace="default")
    for _ in range(300):
        if pidfile.exists() and pidfile.read_text():
            break
        time.sleep(0.1)
    pid = int(pidfile.read_text())
    client.terminate_run(result.run_id)
    run = wait(client, result.run_id, timeout=60)
    assert run.state == "CANCELED"
    for _ in range(50):
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"step process {pid} is still alive after terminate")


def test_recurring_run_fires_on_cron(client, hearth, tmp_path):
    package = tmp_path / "two.yaml"
    compiler.Compiler().compile(two_step, str(package))
    exp = client.create_experiment("recurring", namespace="default")
    rr = client.create_recurring_run(
        experiment_id=exp.experiment_id,
        job_name="every-2s",
        cron_expression="*/2 * * * * *",
        pipeline_package_path=str(package),
        params={"a": 1, "b": 1},
        max_concurrency=1,
    )
    assert rr.recurring_run_id
    deadline = time.time() + 60
    done = []
    while time.time() < deadline and not done:
        runs = client.list_runs(experiment_id=exp.experiment_id, page_size=50).runs or []
        done = [r for r in runs if r.recurring_run_id == rr.recurring_run_id and r.state == "SUCCEEDED"]
        time.sleep(0.5)
    assert done, "the cron schedule fired no successful run within 60 s"
    assert outputs(hearth, done[0].run_id, "add")[0]["outputs"]["parameters"]["Output"] == 2
    client.disable_recurring_run(rr.recurring_run_id)
    assert client.get_recurring_run(rr.recurring_run_id).status == "DISABLED"
    client.delete_recurring_run(rr.recurring_run_id)


# ------------------------------------------------- artifacts loops, versions, retry, periodic

def http_post(hearth, path, body=None):
    req = urllib.request.Request(
        hearth["url"] + path,
        data=json.dumps(body or {}).encode(),
        method="POST",
        headers={"Authorization": "Bearer " + hearth["token"], "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req) as r:
        return json.loads(r.read() or b"{}")


@dsl.component(base_image="python:3.11")
def make_text(text: str, out: dsl.Output[dsl.Artifact]):
    with open(out.path, "w") as f:
        f.write(text.upper())


@dsl.pipeline(name="make-texts")
def make_texts(texts: List[str]) -> List[dsl.Artifact]:
    with dsl.ParallelFor(texts) as t:
        made = make_text(text=t)
    return dsl.Collected(made.outputs["out"])


@dsl.component(base_image="python:3.11")
def read_text(a: dsl.Input[dsl.Artifact], log: str) -> str:
    with open(a.path) as f:
        text = f.read()
    with open(log, "a") as f:
        f.write(text + "\n")
    return text


@dsl.pipeline(name="loop-over-artifacts")
def loop_over_artifacts(log: str = "/tmp/none"):
    made = make_texts(texts=["x", "y", "z"])
    with dsl.ParallelFor(made.output, parallelism=2) as a:
        read_text(a=a, log=log)


def test_parallel_for_over_artifacts(client, hearth, tmp_path):
    log = tmp_path / "read.log"
    package = tmp_path / "loop_artifacts.yaml"
    compiler.Compiler().compile(loop_over_artifacts, str(package))
    assert "artifactIterator" in package.read_text(), "the SDK did not compile a loop over artifacts"
    result = client.create_run_from_pipeline_package(
        str(package), arguments={"log": str(log)}, namespace="default"
    )
    assert wait(client, result.run_id).state == "SUCCEEDED"
    # One iteration per artifact, each reading what its producer wrote.
    assert sorted(log.read_text().split()) == ["X", "Y", "Z"]
    said = sorted(o["outputs"]["parameters"]["Output"] for o in outputs(hearth, result.run_id, "read-text"))
    assert said == ["X", "Y", "Z"]


@dsl.pipeline(name="versioned")
def versioned_v1(word: str = "one"):
    shout(text=word)


@dsl.pipeline(name="versioned")
def versioned_v2(word: str = "two"):
    shout(text=word)
    add(a=40, b=2)


def test_upload_version_and_run_it(client, hearth, tmp_path):
    v1, v2 = tmp_path / "v1.yaml", tmp_path / "v2.yaml"
    compiler.Compiler().compile(versioned_v1, str(v1))
    compiler.Compiler().compile(versioned_v2, str(v2))
    pipeline = client.upload_pipeline(str(v1), pipeline_name="versioned")
    version = client.upload_pipeline_version(
        str(v2), pipeline_version_name="versioned-v2", pipeline_id=pipeline.pipeline_id
    )
    assert version.pipeline_id == pipeline.pipeline_id
    listed = client.list_pipeline_versions(pipeline.pipeline_id, page_size=10)
    names = sorted(v.display_name for v in listed.pipeline_versions)
    assert len(names) == 2 and "versioned-v2" in names, names
    got = client.get_pipeline_version(pipeline.pipeline_id, version.pipeline_version_id)
    assert "comp-add" in json.dumps(got.pipeline_spec), "the new version does not hold the uploaded spec"
    # Uploading a version to a pipeline that does not exist is refused.
    with pytest.raises(Exception) as refused:
        client.upload_pipeline_version(str(v2), pipeline_version_name="x", pipeline_id="no-such-pipeline")
    assert "404" in str(refused.value) or "not found" in str(refused.value).lower()

    exp = client.create_experiment("versions", namespace="default")
    run = client.run_pipeline(
        experiment_id=exp.experiment_id,
        job_name="from-v2",
        pipeline_id=pipeline.pipeline_id,
        version_id=version.pipeline_version_id,
    )
    assert wait(client, run.run_id).state == "SUCCEEDED"
    assert [o["outputs"]["parameters"]["Output"] for o in outputs(hearth, run.run_id, "add")] == [42]
    assert [o["outputs"]["parameters"]["Output"] for o in outputs(hearth, run.run_id, "shout")] == ["TWO!"]


@dsl.component(base_image="python:3.11")
def counted_step(log: str, name: str) -> str:
    with open(log, "a") as f:
        f.write(name + "\n")
    return name


@dsl.component(base_image="python:3.11")
def needs_flag(log: str, flag: str, upstream: str) -> str:
    import os
    with open(log, "a") as f:
        f.write("needs-flag\n")
    if not os.path.exists(flag):
        raise SystemExit(f"no {flag}")
    return upstream + "+flag"


@dsl.pipeline(name="retry-run")
def retry_run_pipe(log: str = "/tmp/none", flag: str = "/tmp/none"):
    first = counted_step(log=log, name="first")
    needs_flag(log=log, flag=flag, upstream=first.output).set_caching_options(False)


def test_retry_of_a_failed_run_reruns_only_what_failed(client, hearth, tmp_path):
    log, flag = tmp_path / "steps.log", tmp_path / "flag"
    result = client.create_run_from_pipeline_func(
        retry_run_pipe, arguments={"log": str(log), "flag": str(flag)}, namespace="default",
        enable_caching=False,
    )
    run = wait(client, result.run_id)
    assert run.state == "FAILED"
    assert log.read_text().split() == ["first", "needs-flag"]
    before = {t["display_name"]: t for t in tasks(hearth, result.run_id)}
    assert before["counted-step"]["state"] == "SUCCEEDED"
    assert before["needs-flag"]["state"] == "FAILED"

    flag.write_text("")
    http_post(hearth, f"/apis/v2beta1/runs/{result.run_id}:retry")
    assert wait(client, result.run_id).state == "SUCCEEDED"
    # The finished step was not run again; the failed one ran once more.
    assert log.read_text().split() == ["first", "needs-flag", "needs-flag"]
    after = {t["display_name"]: t for t in tasks(hearth, result.run_id)}
    assert after["counted-step"]["task_id"] == before["counted-step"]["task_id"]
    assert after["needs-flag"]["hearth_workload"] != before["needs-flag"]["hearth_workload"]
    assert [o["outputs"]["parameters"]["Output"] for o in outputs(hearth, result.run_id, "needs-flag")] == [
        "first+flag"
    ]
    # A run that has not failed is not retried.
    with pytest.raises(urllib.error.HTTPError) as again:
        http_post(hearth, f"/apis/v2beta1/runs/{result.run_id}:retry")
    assert again.value.code == 409


@dsl.container_component
def sleep_three():
    return dsl.ContainerSpec(image="alpine:3.23", command=["sleep", "3"])


@dsl.pipeline(name="slow")
def slow_pipe():
    # Not cached: every fire must really take 3 s.
    sleep_three().set_caching_options(False)


def fire_times(client, recurring_run_id):
    """The due times of a recurring run's runs (from their names), in order."""
    runs = client.list_runs(namespace="default", page_size=100).runs or []
    mine = [r for r in runs if r.recurring_run_id == recurring_run_id]
    stamps = sorted(r.display_name.rsplit("-", 1)[1] for r in mine)
    return [time.mktime(time.strptime(s, "%Y%m%d%H%M%S")) for s in stamps], mine


def test_periodic_recurring_runs_from_a_version_with_and_without_catchup(client, hearth, tmp_path):
    package = tmp_path / "slow.yaml"
    compiler.Compiler().compile(slow_pipe, str(package))
    pipeline = client.upload_pipeline(str(package), pipeline_name="slow")
    version_id = client.list_pipeline_versions(pipeline.pipeline_id).pipeline_versions[0].pipeline_version_id
    exp = client.create_experiment("periodic", namespace="default")
    # Every second, one at a time, each run 3 s: fires fall behind. Without no_catchup
    # each missed second is made up in turn; with it only the latest missed one runs.
    made = {}
    for catchup in (True, False):
        rr = client.create_recurring_run(
            experiment_id=exp.experiment_id,
            job_name=f"periodic-catchup-{catchup}".lower(),
            interval_second=1,
            max_concurrency=1,
            no_catchup=not catchup,
            pipeline_id=pipeline.pipeline_id,
            version_id=version_id,
        )
        made[catchup] = rr.recurring_run_id
    got = client.get_recurring_run(made[False])
    # int64 in the API, so a string in JSON, as KFP answers it.
    assert got.no_catchup is True and got.trigger.periodic_schedule.interval_second == "1"
    deadline = time.time() + 60
    while time.time() < deadline:
        if all(len(fire_times(client, made[c])[0]) >= 3 for c in (True, False)):
            break
        time.sleep(0.5)
    for rr in made.values():
        client.disable_recurring_run(rr)

    caught_up, runs = fire_times(client, made[True])
    assert len(caught_up) >= 3, caught_up
    assert all(b - a == 1 for a, b in zip(caught_up, caught_up[1:])), caught_up
    skipped, runs_nc = fire_times(client, made[False])
    assert len(skipped) >= 3, skipped
    assert all(b - a >= 3 for a, b in zip(skipped, skipped[1:])), skipped
    for r in runs + runs_nc:
        ref = r.pipeline_version_reference
        assert ref.pipeline_id == pipeline.pipeline_id and ref.pipeline_version_id == version_id
    for r in runs[:2] + runs_nc[:2]:
        assert wait(client, r.run_id).state == "SUCCEEDED"
