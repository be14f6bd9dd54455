//! Model serving: KServe InferenceServices as revisions of replicas (workloads), a
//! data-plane proxy speaking the KServe V1 and V2 (Open Inference) protocols, and a
//! Knative-KPA-style autoscaler with scale to zero.

pub mod autoscaler;
pub mod cache;
pub mod controller;
pub mod dataplane;
pub mod fetch;
pub mod invoke;
pub mod isvc;
pub mod listener;
pub mod pool;
pub mod protocol;
pub mod runtimes;
pub mod service;
pub mod upstream;

/// A span of seconds from configuration as a `Duration`, never panicking: negative or
/// NaN is zero, and anything past `model::strict::MAX_SECONDS` is that (configuration
/// is checked at start, but a panic on the controller's or a data-plane worker's
/// thread would stop every service).
pub(crate) fn seconds(value: f64) -> std::time::Duration {
    let max = crate::model::strict::MAX_SECONDS as f64;
    // `clamp` keeps NaN; `try_from_secs_f64` refuses it.
    std::time::Duration::try_from_secs_f64(value.clamp(0.0, max)).unwrap_or(std::time::Duration::ZERO)
}
