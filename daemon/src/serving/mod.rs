//! The serving data plane: its own listener, speaking the KServe V1 and V2 (Open
//! Inference) protocols.

pub mod dataplane;
