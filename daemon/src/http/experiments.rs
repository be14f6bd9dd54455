//! Katib `kubeflow.org/v1beta1`: the document schemas of Experiments, Trials and
//! Suggestions (for the generic paths of `crate::kube::routes`), and the mapping of
//! tuning errors onto the API's.

use actix_web::{get, web};
use serde::Serialize;
use serde_json::Value;
use utoipa::{IntoParams, ToSchema};

use super::errors::ApiError;
use super::scope::NamespacedItem;
use super::AppState;
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

/// Katib's `Metric`: a metric's name and the value reported, as a string.
#[derive(Serialize, ToSchema)]
pub struct Metric {
    pub name: String,
    pub value: String,
}

/// Katib's `MetricLog`: one reported value with its RFC 3339 time.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct MetricLog {
    pub time_stamp: String,
    pub metric: Metric,
}

/// Katib's `ObservationLog` (its DB manager's `GetObservationLog` reply): a trial's
/// reported values in the order reported, at most 10,000 (values past that are not
/// logged; see the Trial's `status.observation` for `min`, `max` and `latest`).
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObservationLog {
    pub metric_logs: Vec<MetricLog>,
}

#[derive(IntoParams)]
#[into_params(parameter_in = Query)]
pub struct ObservationLogQuery {
    /// Only this metric's values (Katib's `metric_name`).
    #[param(max_length = 253)]
    #[allow(dead_code, reason = "documents the query parameter; read from the raw query")]
    metric_name: Option<String>,
}

/// A Trial's observation log: every metric value it reported (StdOut, File or Push
/// collector), with its timestamp, in Katib's `ObservationLog` shape.
#[utoipa::path(
    tag = "tuning",
    params(("namespace" = String, Path), ("name" = String, Path), ObservationLogQuery),
    responses((status = 200, body = ObservationLog))
)]
#[get("/hearth/v1/namespaces/{namespace}/trials/{name}/observationlog")]
async fn observation_log(
    path: NamespacedItem,
    state: web::Data<AppState>,
    raw: web::Query<std::collections::BTreeMap<String, String>>,
) -> Result<web::Json<ObservationLog>, ApiError> {
    if let Some(key) = raw.keys().find(|k| k.as_str() != "metric_name") {
        return Err(ApiError::BadRequest(format!(
            "query parameter {key}: is not known (metric_name)"
        )));
    }
    let metric = raw.get("metric_name").cloned();
    if metric.as_ref().is_some_and(|m| m.len() > 253) {
        return Err(ApiError::BadRequest(
            "query parameter metric_name: is longer than 253 characters".into(),
        ));
    }
    let logs = state
        .tuning
        .observation_log(&path.namespace, &path.name, metric)
        .await?;
    Ok(web::Json(ObservationLog {
        metric_logs: logs
            .into_iter()
            .map(|l| MetricLog {
                time_stamp: l.time_stamp,
                metric: Metric {
                    name: l.name,
                    value: l.value,
                },
            })
            .collect(),
    }))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(observation_log);
}
