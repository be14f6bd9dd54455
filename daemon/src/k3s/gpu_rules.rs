//! The GPU rules Hearth keeps in a k3s cluster, as pure functions over the Node list.
//!
//! **Taints.** A GPU node is tainted `nvidia.com/gpu=present:NoSchedule` only when the
//! cluster also has a node without GPUs: then CPU-only pods go to the CPU nodes and GPU
//! pods (which carry the toleration) to the GPU nodes. When every node has GPUs (a
//! single workstation, or a cluster of GPU machines) the taint would leave system pods
//! (CoreDNS, metrics-server, local-path-provisioner) with nowhere to run, so Hearth
//! removes it. The rule is re-applied as nodes join and leave.
//!
//! **GPU readiness.** A node is ready for GPU work once it reports allocatable
//! `nvidia.com/gpu` equal to NVML's count times the time-slicing replicas: until the
//! device plugin has registered, the scheduler would leave GPU pods `Pending`.

use serde_json::Value;

use super::manifests::{GPU_PRESENT_LABEL, GPU_RESOURCE};

/// `key=value:effect`, as `kubectl taint` takes it.
pub const TAINT: &str = "nvidia.com/gpu=present:NoSchedule";

/// What Hearth reads of one Node.
#[derive(Debug, Clone, PartialEq)]
pub struct NodeFacts {
    pub name: String,
    pub ready: bool,
    /// Labelled `nvidia.com/gpu.present=true` or reporting `nvidia.com/gpu` capacity.
    pub has_gpus: bool,
    pub allocatable_gpus: u64,
    /// Carries Hearth's `nvidia.com/gpu` NoSchedule taint.
    pub gpu_tainted: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct ClusterNodes {
    pub nodes: Vec<NodeFacts>,
}

fn quantity(value: &Value) -> u64 {
    value
        .as_str()
        .and_then(|s| s.parse().ok())
        .or_else(|| value.as_u64())
        .unwrap_or(0)
}

impl ClusterNodes {
    /// Parses a `NodeList` (`kubectl get nodes -o json`).
    pub fn parse(json: &str) -> Result<ClusterNodes, String> {
        let list: Value =
            serde_json::from_str(json).map_err(|e| format!("the node list is not JSON: {e}"))?;
        let items = list["items"].as_array().ok_or("the node list has no items")?;
        let nodes = items
            .iter()
            .map(|node| {
                let name = node["metadata"]["name"].as_str().unwrap_or_default().to_string();
                let ready = node["status"]["conditions"]
                    .as_array()
                    .is_some_and(|c| c.iter().any(|c| c["type"] == "Ready" && c["status"] == "True"));
                let labelled = node["metadata"]["labels"][GPU_PRESENT_LABEL.0] == GPU_PRESENT_LABEL.1;
                let capacity = quantity(&node["status"]["capacity"][GPU_RESOURCE]);
                let gpu_tainted = node["spec"]["taints"].as_array().is_some_and(|t| {
                    t.iter()
                        .any(|t| t["key"] == GPU_RESOURCE && t["effect"] == "NoSchedule")
                });
                NodeFacts {
                    name,
                    ready,
                    has_gpus: labelled || capacity > 0,
                    allocatable_gpus: quantity(&node["status"]["allocatable"][GPU_RESOURCE]),
                    gpu_tainted,
                }
            })
            .collect();
        Ok(ClusterNodes { nodes })
    }

    /// The node named `name` (case-insensitively: k3s lower-cases the host name), or
    /// the only node when there is one.
    pub fn find(&self, name: &str) -> Option<&NodeFacts> {
        self.nodes
            .iter()
            .find(|n| n.name.eq_ignore_ascii_case(name))
            .or_else(|| (self.nodes.len() == 1).then(|| &self.nodes[0]))
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TaintChange {
    Add(String),
    Remove(String),
}

impl std::fmt::Display for TaintChange {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            TaintChange::Add(n) => write!(f, "taint {n} {TAINT} (the cluster has nodes without GPUs)"),
            TaintChange::Remove(n) => write!(f, "untaint {n} {TAINT} (every node has GPUs)"),
        }
    }
}

/// The taint changes that bring the cluster to the rule (see the module doc).
pub fn taint_changes(cluster: &ClusterNodes) -> Vec<TaintChange> {
    let mixed = cluster.nodes.iter().any(|n| !n.has_gpus);
    cluster
        .nodes
        .iter()
        .filter(|n| n.has_gpus)
        .filter_map(|n| match (mixed, n.gpu_tainted) {
            (true, false) => Some(TaintChange::Add(n.name.clone())),
            (false, true) => Some(TaintChange::Remove(n.name.clone())),
            _ => None,
        })
        .collect()
}

/// `Ok(detail)` when `node` reports `expected` allocatable GPUs; else what is missing.
pub fn gpu_readiness(node: &NodeFacts, expected: u64) -> Result<String, String> {
    if node.allocatable_gpus == expected {
        Ok(format!(
            "node {} Ready with {expected} allocatable {GPU_RESOURCE}",
            node.name
        ))
    } else {
        Err(format!(
            "node {} reports {} allocatable {GPU_RESOURCE}, NVML's count times the time-slicing replicas is {expected} (is the NVIDIA device plugin running? `k3s kubectl -n kube-system get pods -l name=nvidia-device-plugin-ds`)",
            node.name, node.allocatable_gpus
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn node(name: &str, gpus: u64, tainted: bool) -> Value {
        let mut labels = json!({"kubernetes.io/hostname": name});
        let mut status =
            json!({"conditions": [{"type": "Ready", "status": "True"}], "capacity": {}, "allocatable": {}});
        if gpus > 0 {
            labels["nvidia.com/gpu.present"] = json!("true");
            status["capacity"]["nvidia.com/gpu"] = json!(gpus.to_string());
            status["allocatable"]["nvidia.com/gpu"] = json!(gpus.to_string());
        }
        let taints = if tainted {
            json!([{"key": "nvidia.com/gpu", "value": "present", "effect": "NoSchedule"}])
        } else {
            json!([])
        };
        json!({"metadata": {"name": name, "labels": labels}, "spec": {"taints": taints}, "status": status})
    }

    fn cluster(nodes: Vec<Value>) -> ClusterNodes {
        ClusterNodes::parse(&json!({"kind": "NodeList", "items": nodes}).to_string()).unwrap()
    }

    #[test]
    fn a_single_gpu_node_is_never_left_tainted() {
        assert_eq!(taint_changes(&cluster(vec![node("ws", 2, false)])), vec![]);
        assert_eq!(
            taint_changes(&cluster(vec![node("ws", 2, true)])),
            vec![TaintChange::Remove("ws".into())]
        );
        // Only GPU nodes: none tainted either.
        assert_eq!(
            taint_changes(&cluster(vec![node("a", 2, true), node("b", 8, false)])),
            vec![TaintChange::Remove("a".into())]
        );
    }

    #[test]
    fn gpu_nodes_are_tainted_once_a_cpu_node_joins() {
        let mixed = cluster(vec![node("ws", 2, false), node("cpu1", 0, false)]);
        assert_eq!(taint_changes(&mixed), vec![TaintChange::Add("ws".into())]);
        let done = cluster(vec![node("ws", 2, true), node("cpu1", 0, false)]);
        assert_eq!(taint_changes(&done), vec![]);
    }

    #[test]
    fn readiness_names_what_is_missing() {
        let c = cluster(vec![node("ws", 0, false)]);
        let ws = c.find("WS").unwrap();
        let err = gpu_readiness(ws, 8).unwrap_err();
        assert!(
            err.contains("reports 0 allocatable nvidia.com/gpu") && err.contains("is 8"),
            "{err}"
        );
        let c = cluster(vec![node("ws", 8, false)]);
        assert!(gpu_readiness(c.find("ws").unwrap(), 8).is_ok());
        assert!(ClusterNodes::parse("not json").is_err());
    }
}
