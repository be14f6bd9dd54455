"""Drives Hearth's Kubernetes API with the real `kubernetes` client (BatchV1Api,
CustomObjectsApi, watch) and KServe's `KServeClient`, configured by a kubeconfig dict
that points at the daemon. Lives in .venv-kserve (kserve pulls in the kubernetes
client). Prints JSON of what it saw.

argv: api_url token namespace storage_uri serving_url host_suffix"""

import contextlib
import json
import sys
import urllib.request

from kserve import KServeClient
from kubernetes import client, watch


def main(api, token, ns, storage, serving, host):
    kubeconfig = {
        "apiVersion": "v1", "kind": "Config", "current-context": "hearth",
        "clusters": [{"name": "hearth", "cluster": {"server": api}}],
        "users": [{"name": "admin", "user": {"token": token}}],
        "contexts": [{"name": "hearth", "context": {"cluster": "hearth", "user": "admin", "namespace": ns}}],
    }
    out = {}
    kserve = KServeClient(config_dict=kubeconfig)
    api_client = kserve.api_instance.api_client

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

    # An InferenceService: created, then KServeClient waits for it (watching), reads it,
    # and deletes it, with a prediction through the data plane in between.
    # KServeClient.create takes the SDK's model object, which neither serializes
    # (snake_case keys) nor passes the dict check of the kubernetes client pinned beside
    # kserve 0.21, before any request is sent; so the document is created as a dict
    # through CustomObjectsApi, and the SDK does the rest.
    isvc = {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": "sdk-iris", "namespace": ns},
            "spec": {"predictor": {"model": {"modelFormat": {"name": "sklearn"}, "storageUri": storage}}}}
    custom = client.CustomObjectsApi(api_client)
    custom.create_namespaced_custom_object("serving.kserve.io", "v1beta1", ns, "inferenceservices", isvc)
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
    main(*sys.argv[1:7])
