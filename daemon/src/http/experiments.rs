//! Katib `kubeflow.org/v1beta1`: the document schemas of Experiments, Trials and
//! Suggestions (for the generic paths of `crate::kube::routes`), and the mapping of
//! tuning errors onto the API's.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::ApiError;
use crate::tuning::TuningError;

impl From<TuningError> for ApiError {
    fn from(e: TuningError) -> ApiError {
        match e {
            TuningError::Field(f) => f.into(),
            TuningError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            TuningError::Store(s) => s.into(),
            TuningError::Job(j) => j.into(),
        }
    }
}

/// A Katib `kubeflow.org/v1beta1` Experiment (JSON or YAML), answered with `metadata`
/// completed, the spec as Katib's webhook defaults it, and `status` in Katib's shape.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Experiment(pub Value);

/// A Katib Trial or Suggestion, made by Hearth.
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct KatibObject(pub Value);
