//! Tuning: Katib `kubeflow.org/v1beta1` Experiments, run unchanged. An Experiment is
//! validated as Katib's webhook does ([`spec`]); its controller ([`controller`]) asks a
//! native search algorithm ([`algorithms`]) for assignments, records them in the
//! experiment's `Suggestion`, and runs each as a `Trial` whose batch/v1 Job goes
//! through the Jobs core (the GPU queue); metrics come from the Job's output or a file
//! ([`metrics`]). Trials and Suggestions are Hearth's, read-only to users.

pub mod algorithms;
pub mod benchmark;
pub mod controller;
pub mod metrics;
pub mod push;
pub mod spec;

use std::sync::Arc;

use serde_json::{json, Value};

use crate::controller::WorkQueue;
use crate::jobs::{JobError, Jobs};
use crate::model::meta;
use crate::model::strict::FieldError;
use crate::store::resources::{self, NewResource};
use crate::store::{access, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum TuningError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("{kind} {namespace}/{name} not found")]
    NotFound {
        kind: &'static str,
        namespace: String,
        name: String,
    },
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Job(#[from] JobError),
}

/// The Experiments API and the handle its controller shares.
#[derive(Clone)]
pub struct Tuning {
    store: Store,
    jobs: Jobs,
    queue: Arc<WorkQueue>,
}

pub fn render_experiment(resource: resources::Resource) -> Value {
    meta::render(resource, spec::API_VERSION, spec::EXPERIMENT_KIND)
}

/// A Trial as clients see it: Hearth's bookkeeping in `status`
/// ([`controller::HEARTH_STATUS`]) left out.
pub fn render_trial(resource: resources::Resource) -> Value {
    let mut document = meta::render(resource, spec::API_VERSION, spec::TRIAL_KIND);
    if let Some(status) = document.get_mut("status").and_then(Value::as_object_mut) {
        status.remove(controller::HEARTH_STATUS);
    }
    document
}

pub fn render_suggestion(resource: resources::Resource) -> Value {
    meta::render(resource, spec::API_VERSION, spec::SUGGESTION_KIND)
}

/// The spec as Katib's mutating webhook completes it: `parallelTrialCount`,
/// `resumePolicy`, each metric's strategy and the collector kind written out.
fn defaulted(mut value: Value, parsed: &spec::ExperimentSpec) -> Value {
    let Some(map) = value.as_object_mut() else {
        return value;
    };
    map.entry("parallelTrialCount")
        .or_insert_with(|| json!(parsed.parallel_trial_count));
    map.entry("resumePolicy").or_insert_with(|| json!("Never"));
    let strategies: Vec<Value> = parsed
        .objective
        .strategies
        .iter()
        .map(|(name, s)| {
            let value = match s {
                spec::MetricStrategy::Min => "min",
                spec::MetricStrategy::Max => "max",
                spec::MetricStrategy::Latest => "latest",
            };
            json!({"name": name, "value": value})
        })
        .collect();
    if let Some(objective) = map.get_mut("objective").and_then(Value::as_object_mut) {
        objective.insert("metricStrategies".into(), Value::Array(strategies));
    }
    let collector = map.entry("metricsCollectorSpec").or_insert_with(|| json!({}));
    if let Some(collector) = collector.as_object_mut() {
        collector
            .entry("collector")
            .or_insert_with(|| json!({"kind": "StdOut"}));
    }
    value
}

impl Tuning {
    pub fn new(store: Store, jobs: Jobs) -> Tuning {
        Tuning {
            store,
            jobs,
            queue: WorkQueue::new(),
        }
    }

    pub fn queue(&self) -> Arc<WorkQueue> {
        Arc::clone(&self.queue)
    }

    fn validate(
        document: &Value,
        name_from_path: Option<&str>,
    ) -> Result<(meta::Metadata, Value, spec::ExperimentSpec), TuningError> {
        meta::check_type(document, &[spec::API_VERSION], spec::EXPERIMENT_KIND)?;
        crate::model::strict::only_keys(
            document,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            "not part of an Experiment",
        )?;
        let metadata = meta::parse(document, name_from_path)?;
        let spec_value = document
            .get("spec")
            .cloned()
            .ok_or_else(|| FieldError::invalid("spec", "is required"))?;
        let parsed = spec::parse(&spec_value)?;
        Ok((metadata, defaulted(spec_value, &parsed), parsed))
    }

    /// Creates an Experiment (`dry_run`: only checks it); its controller starts trials.
    pub async fn create(
        &self,
        namespace: &str,
        document: Value,
        dry_run: bool,
    ) -> Result<Value, TuningError> {
        let (metadata, spec_value, _) = Self::validate(&document, None)?;
        let new = NewResource {
            kind: spec::EXPERIMENT_KIND.into(),
            namespace: namespace.into(),
            name: metadata.name,
            metadata: metadata.stored,
            spec: spec_value,
            status: json!({}),
        };
        if dry_run {
            return Ok(render_experiment(resources::unsaved(new)));
        }
        let ns = namespace.to_string();
        let created = self
            .store
            .call(move |conn| {
                access::ensure_namespace(conn, &ns)?;
                resources::create(conn, new)
            })
            .await?;
        self.queue.add(&created.uid);
        Ok(render_experiment(created))
    }

    async fn load(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
    ) -> Result<resources::Resource, TuningError> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .call(move |conn| resources::get(conn, kind, &ns, &n))
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => TuningError::NotFound {
                    kind,
                    namespace: namespace.into(),
                    name: name.into(),
                },
                other => TuningError::Store(other),
            })
    }

    /// PUT: as Katib's webhook allows, only `maxTrialCount`, `parallelTrialCount` and
    /// `maxFailedTrialCount` change ([`spec::MUTABLE_FIELDS`]), with the same checks
    /// as on create; a finished experiment is resumed as its `resumePolicy` allows
    /// (`check_resume`).
    pub async fn replace(
        &self,
        namespace: &str,
        name: &str,
        document: Value,
        expected_version: Option<i64>,
        dry_run: bool,
    ) -> Result<Value, TuningError> {
        let current = self.load(spec::EXPERIMENT_KIND, namespace, name).await?;
        let (metadata, spec_value, _) = Self::validate(&document, Some(name))?;
        let keys = |v: &Value| -> Vec<String> {
            v.as_object()
                .map(|m| m.keys().cloned().collect())
                .unwrap_or_default()
        };
        let mut all = keys(&current.spec);
        all.extend(keys(&spec_value));
        for key in all {
            if !spec::MUTABLE_FIELDS.contains(&key.as_str()) && current.spec.get(&key) != spec_value.get(&key)
            {
                return Err(FieldError::invalid(
                    format!("spec.{key}"),
                    "is immutable; only maxTrialCount, parallelTrialCount and maxFailedTrialCount may change",
                )
                .into());
            }
        }
        if controller::is_finished(&current.status) && current.spec != spec_value {
            Self::check_resume(&current, &spec_value)?;
        }
        let updated = resources::replace_spec_staged(
            &self.store,
            current,
            metadata.stored,
            spec_value,
            expected_version,
            dry_run,
        )
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => TuningError::NotFound {
                kind: spec::EXPERIMENT_KIND,
                namespace: namespace.into(),
                name: name.into(),
            },
            other => TuningError::Store(other),
        })?;
        if !dry_run {
            self.queue.add(&updated.uid);
        }
        Ok(render_experiment(updated))
    }

    /// Whether a finished experiment may take a new spec, as Katib's validating webhook
    /// decides: `resumePolicy: Never` is never restarted; `LongRunning` only after it
    /// succeeded with `ExperimentMaxTrialsReached`, and only by raising `maxTrialCount`
    /// (the controller then resumes it, [`controller::resumable`]).
    fn check_resume(current: &resources::Resource, spec_value: &Value) -> Result<(), TuningError> {
        let policy = current
            .spec
            .get("resumePolicy")
            .and_then(Value::as_str)
            .unwrap_or("Never");
        if policy != "LongRunning" {
            return Err(FieldError::invalid(
                "spec.resumePolicy",
                format!("the experiment has finished and its resumePolicy {policy} does not let it restart"),
            )
            .into());
        }
        if !controller::ended_by_max_trials(&current.status) {
            return Err(FieldError::invalid(
                "spec.maxTrialCount",
                "a finished experiment restarts only if it succeeded because maxTrialCount was reached",
            )
            .into());
        }
        let budget = |v: &Value| v.get("maxTrialCount").and_then(Value::as_u64);
        let raised = match (budget(&current.spec), budget(spec_value)) {
            (Some(old), Some(new)) => new > old,
            (Some(_), None) => true,
            _ => false,
        };
        if !raised {
            return Err(FieldError::invalid(
                "spec.maxTrialCount",
                "must be raised (or removed) to restart a finished experiment",
            )
            .into());
        }
        Ok(())
    }

    /// Finishes the deletion of a Trial or Suggestion that the garbage collector marked
    /// (its Experiment is gone, or going in the foreground): the object goes, and a
    /// Trial's Job, its owner gone, is collected in turn. One not marked is left as it
    /// is (users do not delete these kinds: they have no DELETE path).
    pub async fn finish_collected(
        &self,
        kind: &'static str,
        namespace: &str,
        name: &str,
        dry_run: bool,
    ) -> Result<Value, TuningError> {
        let resource = self.load(kind, namespace, name).await?;
        let collect = !dry_run && resource.deletion_requested_at.is_some();
        let uid = resource.uid.clone();
        let document = if kind == spec::TRIAL_KIND {
            render_trial(resource)
        } else {
            render_suggestion(resource)
        };
        if !collect {
            return Ok(document);
        }
        self.store.call(move |conn| resources::delete(conn, &uid)).await?;
        Ok(document)
    }

    /// A Trial's observation log (Katib's DB manager `GetObservationLog`): every value
    /// it reported, in order, only `metric_name`'s when given; at most
    /// [`metrics::LOG_BOUND`] values.
    pub async fn observation_log(
        &self,
        namespace: &str,
        name: &str,
        metric_name: Option<String>,
    ) -> Result<Vec<crate::store::observation_logs::MetricLog>, TuningError> {
        let trial = self.load(spec::TRIAL_KIND, namespace, name).await?;
        Ok(self
            .store
            .call(move |conn| crate::store::observation_logs::read(conn, &trial.uid, metric_name.as_deref()))
            .await?)
    }

    /// Marks the experiment for deletion; its controller removes it, and the garbage
    /// collector its Trials (whose Jobs are stopped) and Suggestion. Answers the
    /// marked object.
    pub async fn delete(&self, namespace: &str, name: &str, dry_run: bool) -> Result<Value, TuningError> {
        if dry_run {
            return Ok(render_experiment(
                self.load(spec::EXPERIMENT_KIND, namespace, name).await?,
            ));
        }
        let (ns, n) = (namespace.to_string(), name.to_string());
        let marked = self
            .store
            .call(move |conn| resources::request_deletion(conn, spec::EXPERIMENT_KIND, &ns, &n))
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => TuningError::NotFound {
                    kind: spec::EXPERIMENT_KIND,
                    namespace: namespace.into(),
                    name: name.into(),
                },
                other => TuningError::Store(other),
            })?;
        self.queue.add(&marked.uid);
        Ok(render_experiment(marked))
    }
}
