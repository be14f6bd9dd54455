//! KFP v2 pipelines: the IR model and its validation, the v2beta1 API's core functions,
//! and the run controller that executes the DAG with the KFP executor contract.

pub mod api;
pub mod cel;
pub mod cleanup;
pub mod controller;
pub mod executor;
pub mod ir;
pub mod protojson;
pub mod schedule;
pub mod schema;
pub mod store;
