//! Kubeflow `kubeflow.org/v1` Notebooks: the document schema (for the generic paths of
//! `crate::kube::routes`) and the mapping of notebook errors onto the API's.

use serde::Serialize;
use serde_json::Value;
use utoipa::ToSchema;

use super::errors::ApiError;
use crate::notebooks::NotebookError;

impl From<NotebookError> for ApiError {
    fn from(e: NotebookError) -> ApiError {
        match e {
            NotebookError::Field(f) => f.into(),
            NotebookError::NotFound { .. } => ApiError::NotFound(e.to_string()),
            NotebookError::Unschedulable(message) => {
                ApiError::invalid("spec.template.spec.containers[0].resources", message)
            }
            NotebookError::Store(s) => s.into(),
            NotebookError::Scheduler(s) => s.into(),
            NotebookError::Workspace { .. } => ApiError::Internal(e.to_string()),
        }
    }
}

/// A Kubeflow Notebook (JSON or YAML), answered with `metadata` completed and `status`
/// in Kubeflow's shape (`readyReplicas`, `containerState`, `conditions`).
#[derive(Serialize, ToSchema)]
#[schema(value_type = Object)]
pub struct Notebook(pub Value);
