"""Drives Hearth's Kubernetes API with the real `kubernetes` client (BatchV1Api,
CustomObjectsApi, watch) and KServe's `KServeClient`, configured by nothing but the
daemon's own `<data-dir>/kubeconfig` (HTTPS, Hearth's CA, the admin token), as a user
would. Lives in .venv-kserve (kserve 0.21 with kubernetes 30.1.0, which its typed
`create` needs). Prints JSON of what it saw.

argv: kubeconfig_path namespace storage_uri serving_url host_suffix"""

import contextlib
import json
import sys
import urllib.request

from kserve import (KServeClient, V1beta1InferenceService, V1beta1InferenceServiceSpec,
                    V1beta1ModelFormat, V1beta1ModelSpec, V1beta1PredictorSpec, constants)
from kubernetes import client, config, watch


def main(kubeconfig, ns, storage, serving, host):
    out = {}
    kserve = KServeClient(config_file=kubeconfig)
    api_client = config.new_client_from_config(config_file=kubeconfig)

    # BatchV1Api: create, read, list, watch the status change, delete.
    batch = client.BatchV1Api(api_client)
    job = {"apiVersion": "batch/v1", "kind": "Job", "metadata": {"name": "k8s-client"},
           "spec": {"backoffLimit": 0, "template": {"spec": {"restartPolicy": "Never",
                    "containers": [{"name": "main", "image": "busybox", "command": ["sh", "-c", "sleep 0.5"]}]}}}}
    created = batch.create_namespaced_job(ns, job)
    out["job_created"] = created.metadata.name
    out["job_read_uid_matches"] = batch.read_namespaced_job("k8s-client", ns).metadata.uid == created.metadata.uid
    out["job_listed"] = [j.metadata.name for j in batch.list_namespaced_job(ns).items]
    events = []
    w = watch.Watch()
    for event in w.stream(batch.list_namespaced_job, ns, field_selector="metadata.name=k8s-client",
                          timeout_seconds=60):
        status = event["object"].status
        events.append(event["type"])
        if status and status.succeeded == 1:
            out["job_watched_succeeded"] = True
            w.stop()
    out["job_events"] = events
    deleted = batch.delete_namespaced_job("k8s-client", ns, propagation_policy="Background")
    deleted = deleted if isinstance(deleted, dict) else deleted.to_dict()
    out["job_delete_status"] = deleted.get("status")
    try:
        batch.read_namespaced_job("missing", ns)
    except client.ApiException as e:
        out["job_missing"] = [e.status, json.loads(e.body)["reason"]]

    # An InferenceService as KServe's docs write it with the SDK: created by
    # KServeClient.create from the typed model, waited for (watching), read, and deleted,
    # with a prediction through the data plane in between.
    isvc = V1beta1InferenceService(
        api_version=constants.KSERVE_V1BETA1,
        kind=constants.KSERVE_KIND_INFERENCESERVICE,
        metadata=client.V1ObjectMeta(name="sdk-iris", namespace=ns),
        spec=V1beta1InferenceServiceSpec(predictor=V1beta1PredictorSpec(model=V1beta1ModelSpec(
            model_format=V1beta1ModelFormat(name="sklearn"), storage_uri=storage))))
    kserve.create(isvc)
    custom = client.CustomObjectsApi(api_client)
    # With watch=True the SDK watches the service (and prints its table: kept off
    # stdout, which carries this script's answer).
    with contextlib.redirect_stdout(sys.stderr):
        kserve.wait_isvc_ready("sdk-iris", namespace=ns, watch=True, timeout_seconds=120)
    got = kserve.get("sdk-iris", namespace=ns)
    out["isvc_ready"] = kserve.is_isvc_ready("sdk-iris", namespace=ns)
    out["isvc_url"] = got.get("status", {}).get("url")
    request = urllib.request.Request(
        f"{serving}/v1/models/sdk-iris:predict",
        data=json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4], [5.1, 3.5, 1.4, 0.2]]}).encode(),
        headers={"Content-Type": "application/json", "Host": f"sdk-iris.{ns}.{host}"})
    with urllib.request.urlopen(request, timeout=60) as response:
        out["predictions"] = json.loads(response.read())["predictions"]
    out["isvc_listed"] = [i["metadata"]["name"] for i in custom.list_namespaced_custom_object(
        "serving.kserve.io", "v1beta1", ns, "inferenceservices")["items"]]
    kserve.delete("sdk-iris", namespace=ns)
    print(json.dumps(out))


if __name__ == "__main__":
    main(*sys.argv[1:6])
