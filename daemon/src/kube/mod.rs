//! The Kubernetes resource API: one generic surface (the API server's registry,
//! kube-rs's `Api<K>`) serving every kind of [`kinds::KINDS`] at Kubernetes' own
//! paths, with Kubernetes' list, watch, patch, error (`Status`) and discovery shapes,
//! so kubectl and the Kubernetes clients work against Hearth unchanged.

pub mod discovery;
pub mod gc;
pub mod handlers;
pub mod kinds;
pub mod openapi_v3;
pub mod ownership;
pub mod params;
pub mod patch;
pub mod pod_log;
pub mod routes;
pub mod schema;
pub mod selectors;
pub mod status;
pub mod table;
pub mod upstream_schema;
pub mod view_routes;
pub mod views;
pub mod watch;
