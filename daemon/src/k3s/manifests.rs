//! The manifests Hearth writes to k3s's auto-applied manifests dir
//! (`<k3s data dir>/server/manifests`, applied by k3s's deploy controller at start and
//! on every change): the `nvidia` RuntimeClass, the NVIDIA device plugin DaemonSet, and
//! the device plugin's time-slicing config when GPUs are shared.
//!
//! Built as JSON values rather than with `k8s-openapi` types: these are three fixed
//! documents, and `kubernetes-validate --strict` (in `scripts/test`) checks each against
//! the Kubernetes 1.33 schemas, which is what typed structs would have given.

use serde_json::{json, Value};

/// The device plugin release Hearth deploys, pinned (NVIDIA/k8s-device-plugin).
pub const DEVICE_PLUGIN_IMAGE: &str = "nvcr.io/nvidia/k8s-device-plugin:v0.18.0";
/// The label k3s puts on GPU nodes (Hearth's `--node-label`), which the device plugin's
/// DaemonSet selects.
pub const GPU_PRESENT_LABEL: (&str, &str) = ("nvidia.com/gpu.present", "true");
pub const GPU_RESOURCE: &str = "nvidia.com/gpu";
const NAMESPACE: &str = "kube-system";
const TIME_SLICING_CONFIG_MAP: &str = "nvidia-device-plugin-config";
const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "hearth");

/// One manifest: the file it is written to and its document.
#[derive(Debug, Clone, PartialEq)]
pub struct Manifest {
    pub file_name: &'static str,
    pub document: Value,
}

/// Every manifest for `time_slicing_replicas` (1: no sharing, no ConfigMap).
pub fn all(time_slicing_replicas: u32) -> Vec<Manifest> {
    let mut out = vec![
        Manifest {
            file_name: "hearth-nvidia-runtimeclass.yaml",
            document: runtime_class(),
        },
        Manifest {
            file_name: "hearth-nvidia-device-plugin.yaml",
            document: device_plugin(time_slicing_replicas > 1),
        },
    ];
    if time_slicing_replicas > 1 {
        out.push(Manifest {
            file_name: "hearth-nvidia-time-slicing.yaml",
            document: time_slicing_config_map(time_slicing_replicas),
        });
    }
    out
}

/// `RuntimeClass nvidia`, handled by containerd's `nvidia` runtime.
pub fn runtime_class() -> Value {
    json!({
        "apiVersion": "node.k8s.io/v1",
        "kind": "RuntimeClass",
        "metadata": {"name": "nvidia", "labels": {MANAGED_BY.0: MANAGED_BY.1}},
        "handler": "nvidia",
    })
}

/// The device plugin as NVIDIA's static `nvidia-device-plugin.yml` deploys it, plus
/// what k3s needs: `runtimeClassName: nvidia` (so the plugin sees the driver whatever
/// containerd's default runtime is), GPU nodes only, and the `nvidia.com/gpu`
/// toleration (GPU nodes may carry that taint; see `gpu_rules`).
pub fn device_plugin(time_slicing: bool) -> Value {
    let mut env = vec![json!({"name": "FAIL_ON_INIT_ERROR", "value": "false"})];
    let mut mounts = vec![json!({"name": "device-plugin", "mountPath": "/var/lib/kubelet/device-plugins"})];
    let mut volumes =
        vec![json!({"name": "device-plugin", "hostPath": {"path": "/var/lib/kubelet/device-plugins"}})];
    if time_slicing {
        env.push(json!({"name": "CONFIG_FILE", "value": "/etc/nvidia-device-plugin/config.yaml"}));
        mounts.push(json!({"name": "config", "mountPath": "/etc/nvidia-device-plugin", "readOnly": true}));
        volumes.push(json!({"name": "config", "configMap": {"name": TIME_SLICING_CONFIG_MAP}}));
    }
    json!({
        "apiVersion": "apps/v1",
        "kind": "DaemonSet",
        "metadata": {
            "name": "nvidia-device-plugin-daemonset",
            "namespace": NAMESPACE,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "spec": {
            "selector": {"matchLabels": {"name": "nvidia-device-plugin-ds"}},
            "updateStrategy": {"type": "RollingUpdate"},
            "template": {
                "metadata": {"labels": {"name": "nvidia-device-plugin-ds"}},
                "spec": {
                    "runtimeClassName": "nvidia",
                    "priorityClassName": "system-node-critical",
                    "nodeSelector": {GPU_PRESENT_LABEL.0: GPU_PRESENT_LABEL.1},
                    "tolerations": [
                        {"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"},
                    ],
                    "containers": [{
                        "name": "nvidia-device-plugin-ctr",
                        "image": DEVICE_PLUGIN_IMAGE,
                        "env": env,
                        "securityContext": {
                            "allowPrivilegeEscalation": false,
                            "capabilities": {"drop": ["ALL"]},
                        },
                        "volumeMounts": mounts,
                    }],
                    "volumes": volumes,
                },
            },
        },
    })
}

/// The device plugin's sharing config (its `config.yaml` format, version v1): each GPU
/// advertised as `replicas` `nvidia.com/gpu`.
pub fn time_slicing_config_map(replicas: u32) -> Value {
    let config = format!(
        "version: v1\nsharing:\n  timeSlicing:\n    resources:\n    - name: {GPU_RESOURCE}\n      replicas: {replicas}\n"
    );
    json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": TIME_SLICING_CONFIG_MAP,
            "namespace": NAMESPACE,
            "labels": {MANAGED_BY.0: MANAGED_BY.1},
        },
        "data": {"config.yaml": config},
    })
}

/// NVIDIA's CUDA vector-add sample (the GPU Operator's own check): prints
/// `Test PASSED` when a kernel ran on the GPU and its result was right.
pub const VECTOR_ADD_IMAGE: &str = "nvcr.io/nvidia/k8s/cuda-sample:vectoradd-cuda12.5.0";

/// The pod `hearth k3s verify` runs on `node`: one GPU, the `nvidia` runtime class,
/// the GPU taint's toleration, pinned to the node by name through the scheduler
/// (`matchFields` on `metadata.name`, as DaemonSets are), never restarted.
pub fn verify_pod(node: &str) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": verify_pod_name(node),
            "namespace": "default",
            "labels": {MANAGED_BY.0: MANAGED_BY.1, "hearth.dev/check": "cuda-vectoradd"},
        },
        "spec": {
            "restartPolicy": "Never",
            "runtimeClassName": "nvidia",
            "tolerations": [{"key": GPU_RESOURCE, "operator": "Exists", "effect": "NoSchedule"}],
            "affinity": {"nodeAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchFields": [{"key": "metadata.name", "operator": "In", "values": [node]}]}],
            }}},
            "containers": [{
                "name": "cuda-vectoradd",
                "image": VECTOR_ADD_IMAGE,
                "resources": {"limits": {GPU_RESOURCE: 1}},
            }],
        },
    })
}

/// `hearth-verify-<node>`, cut to a valid pod name.
pub fn verify_pod_name(node: &str) -> String {
    let cleaned: String = node
        .to_lowercase()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                c
            } else {
                '-'
            }
        })
        .collect();
    let mut name = format!("hearth-verify-{cleaned}");
    name.truncate(63);
    name.trim_end_matches(['-', '.']).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn device_plugin_has_the_runtime_class_toleration_and_pinned_image() {
        let ds = device_plugin(false);
        let pod = &ds["spec"]["template"]["spec"];
        assert_eq!(pod["runtimeClassName"], "nvidia");
        assert_eq!(pod["tolerations"][0]["key"], "nvidia.com/gpu");
        assert_eq!(pod["containers"][0]["image"], DEVICE_PLUGIN_IMAGE);
        assert!(!DEVICE_PLUGIN_IMAGE.ends_with(":latest"));
        assert_eq!(pod["nodeSelector"]["nvidia.com/gpu.present"], "true");
    }

    #[test]
    fn the_verify_pod_asks_for_one_gpu_on_its_node() {
        let pod = verify_pod("WS.lan");
        assert_eq!(pod["metadata"]["name"], "hearth-verify-ws.lan");
        assert_eq!(pod["spec"]["runtimeClassName"], "nvidia");
        assert_eq!(
            pod["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"],
            1
        );
        assert_eq!(verify_pod_name(&"x".repeat(80)).len(), 63);
    }

    #[test]
    fn the_time_slicing_config_map_only_when_sharing() {
        assert_eq!(all(1).len(), 2);
        let shared = all(4);
        assert_eq!(shared.len(), 3);
        let config = shared[2].document["data"]["config.yaml"].as_str().unwrap();
        let parsed: serde_json::Value = serde_yaml_ng::from_str(config).unwrap();
        assert_eq!(parsed["sharing"]["timeSlicing"]["resources"][0]["replicas"], 4);
        let env = &shared[1].document["spec"]["template"]["spec"]["containers"][0]["env"];
        assert!(env.as_array().unwrap().iter().any(|e| e["name"] == "CONFIG_FILE"));
    }
}
