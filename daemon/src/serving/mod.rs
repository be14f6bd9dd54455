//! Model serving: KServe InferenceServices as revisions of replicas (workloads), a
//! data-plane proxy speaking the KServe V1 and V2 (Open Inference) protocols, and a
//! Knative-KPA-style autoscaler with scale to zero.

pub mod autoscaler;
pub mod cache;
pub mod controller;
pub mod dataplane;
pub mod fetch;
pub mod isvc;
pub mod pool;
pub mod protocol;
pub mod runtimes;
pub mod service;
