//! Jobs: Kubernetes `batch/v1` Job documents run as workloads through the shared GPU
//! queue. The API layer calls these functions; the controller turns specs into
//! workload attempts and attempts into Job status.

pub mod controller;
pub mod spec;

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::controller::WorkQueue;
use crate::model::meta;
use crate::model::strict::FieldError;
use crate::scheduler::{Scheduler, SchedulerError, WorkloadLog};
use crate::store::resources::{self, NewResource};
use crate::store::{access, EventRecord, Store, StoreError};

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobsConfig {
    /// First retry delay after a failed attempt; doubles per failure up to 6 minutes,
    /// as Kubernetes does.
    pub backoff_base_seconds: f64,
}

impl Default for JobsConfig {
    fn default() -> Self {
        JobsConfig {
            backoff_base_seconds: 10.0,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum JobError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("job {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Unschedulable(String),
    #[error("the job has no attempt {0}")]
    NoAttempt(usize),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(SchedulerError),
}

impl From<SchedulerError> for JobError {
    fn from(e: SchedulerError) -> JobError {
        match e {
            SchedulerError::Unsatisfiable(message) => JobError::Unschedulable(message),
            other => JobError::Scheduler(other),
        }
    }
}

#[derive(Clone)]
pub struct Jobs {
    store: Store,
    scheduler: Scheduler,
    queue: Arc<WorkQueue>,
    config: JobsConfig,
    active_clock: Arc<crate::clock::SinceClock>,
    extra_env: Arc<std::sync::OnceLock<ExtraEnv>>,
}

/// Environment another part of Hearth adds to a Job's processes when they start (the
/// Katib Push collector's per-trial credential): set in the process only, never in
/// the Job's document. Its variables come after the Job's own, so they win.
pub type ExtraEnv = Arc<dyn Fn(&resources::Resource) -> Vec<(String, String)> + Send + Sync>;

fn not_found(e: StoreError, namespace: &str, name: &str) -> JobError {
    match e {
        StoreError::NotFound { .. } => JobError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        },
        other => JobError::Store(other),
    }
}

pub fn render(resource: resources::Resource) -> Value {
    let (uid, name) = (resource.uid.clone(), resource.name.clone());
    let mut document = meta::render(resource, spec::API_VERSION, spec::KIND);
    add_selector(&mut document, &uid, &name);
    document
}

/// The labels the Job controller puts on a Job's pods (and its pod template), as
/// Kubernetes does; `kubectl logs job/x` finds the pod by them.
fn pod_labels<'a>(uid: &'a str, name: &'a str) -> [(&'static str, &'a str); 4] {
    [
        ("batch.kubernetes.io/controller-uid", uid),
        ("batch.kubernetes.io/job-name", name),
        ("controller-uid", uid),
        ("job-name", name),
    ]
}

/// `spec.selector` and the pod template's labels as the API server defaults them
/// for a Job without `manualSelector`.
fn add_selector(document: &mut Value, uid: &str, name: &str) {
    let Some(spec) = document.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    spec.insert(
        "selector".into(),
        serde_json::json!({"matchLabels": {"batch.kubernetes.io/controller-uid": uid}}),
    );
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else {
        return;
    };
    let metadata = template
        .entry("metadata")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(metadata) = metadata.as_object_mut() else {
        return;
    };
    let labels = metadata
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    let Some(labels) = labels.as_object_mut() else {
        return;
    };
    for (key, value) in pod_labels(uid, name) {
        labels.insert(key.into(), Value::String(value.into()));
    }
}

/// Takes out of a sent document what [`add_selector`] added to `current`'s, so that a
/// document read, changed and sent back (kubectl apply, edit) changes nothing there.
/// A selector other than the generated one stays, and is refused by validation.
fn strip_selector(document: &mut Value, current: &resources::Resource) {
    let Some(spec) = document.get_mut("spec").and_then(Value::as_object_mut) else {
        return;
    };
    let ours = serde_json::json!({"matchLabels": {"batch.kubernetes.io/controller-uid": current.uid}});
    if spec.get("selector") == Some(&ours) {
        spec.remove("selector");
    }
    let stored = current.spec.pointer("/template/metadata");
    let Some(template) = spec.get_mut("template").and_then(Value::as_object_mut) else {
        return;
    };
    let Some(metadata) = template.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    if let Some(labels) = metadata.get_mut("labels").and_then(Value::as_object_mut) {
        for (key, value) in pod_labels(&current.uid, &current.name) {
            if labels.get(key).and_then(Value::as_str) == Some(value) {
                labels.remove(key);
            }
        }
        if labels.is_empty() && stored.and_then(|m| m.get("labels")).is_none() {
            metadata.remove("labels");
        }
    }
    if metadata.is_empty() && stored.is_none() {
        template.remove("metadata");
    }
}

impl Jobs {
    pub fn new(store: Store, scheduler: Scheduler, config: JobsConfig) -> Jobs {
        Jobs {
            store,
            scheduler,
            queue: WorkQueue::new(),
            config,
            active_clock: Arc::default(),
            extra_env: Arc::default(),
        }
    }

    /// Sets [`ExtraEnv`] (once, at start-up; a second call is ignored).
    pub fn set_extra_env(&self, extra: ExtraEnv) {
        let _ = self.extra_env.set(extra);
    }

    pub fn queue(&self) -> Arc<WorkQueue> {
        Arc::clone(&self.queue)
    }

    fn validate(
        &self,
        document: &Value,
        name_from_path: Option<&str>,
    ) -> Result<(meta::Metadata, Value, spec::JobSpec), JobError> {
        meta::check_type(document, &[spec::API_VERSION], spec::KIND)?;
        crate::model::strict::only_keys(
            document,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            "not part of a Job",
        )?;
        let metadata = meta::parse(document, name_from_path)?;
        let spec_value = document
            .get("spec")
            .cloned()
            .ok_or_else(|| FieldError::invalid("spec", "is required"))?;
        let parsed = spec::parse_for(&spec_value, self.scheduler.runtime().capabilities().runs_images)?;
        Ok((metadata, spec_value, parsed))
    }

    /// Creates a job; with `dry_run` (Kubernetes' `dryRun=All`) only checks it and
    /// answers what would be stored.
    pub async fn create(&self, namespace: &str, document: Value, dry_run: bool) -> Result<Value, JobError> {
        let (metadata, spec_value, parsed) = self.validate(&document, None)?;
        self.scheduler.check_satisfiable(&parsed.resources, namespace)?;
        // Who the attempts will run as, checked now so a refused securityContext is a 422.
        crate::runtime::identity::global()
            .for_workload(namespace, parsed.security_context.as_ref())
            .map_err(|e| JobError::Field(e.into_field_error()))?;
        let new = NewResource {
            kind: spec::KIND.into(),
            namespace: namespace.into(),
            name: metadata.name,
            metadata: metadata.stored,
            spec: spec_value,
            status: serde_json::json!({}),
        };
        if dry_run {
            return Ok(render(resources::unsaved(new)));
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
        Ok(render(created))
    }

    async fn load(&self, namespace: &str, name: &str) -> Result<resources::Resource, JobError> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .call(move |conn| resources::get(conn, spec::KIND, &ns, &n))
            .await
            .map_err(|e| not_found(e, namespace, name))
    }

    /// PUT: as in Kubernetes, the pod template, `completions`, `completionMode`, the
    /// policies and `backoffLimitPerIndex` are immutable ([`spec::IMMUTABLE_FIELDS`]);
    /// `parallelism`, `suspend`, `backoffLimit`, `maxFailedIndexes`,
    /// `activeDeadlineSeconds` and `ttlSecondsAfterFinished` may change. The new spec
    /// passes the same checks (and bounds) as on create.
    ///
    /// `expected_version` is Kubernetes' precondition (`metadata.resourceVersion`): a
    /// job written since is a `Conflict`. With `dry_run` nothing is stored.
    pub async fn replace(
        &self,
        namespace: &str,
        name: &str,
        document: Value,
        expected_version: Option<i64>,
        dry_run: bool,
    ) -> Result<Value, JobError> {
        let current = self.load(namespace, name).await?;
        let mut document = document;
        strip_selector(&mut document, &current);
        let (metadata, spec_value, _) = self.validate(&document, Some(name))?;
        for field in spec::IMMUTABLE_FIELDS {
            if current.spec.get(*field) != spec_value.get(*field) {
                return Err(FieldError::invalid(
                    format!("spec.{field}"),
                    "is immutable once a job exists; delete and re-create the job",
                )
                .into());
            }
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
        .map_err(|e| not_found(e, namespace, name))?;
        if !dry_run {
            self.queue.add(&updated.uid);
        }
        Ok(render(updated))
    }

    /// Cancels what runs and removes the job once its workloads have stopped; answers
    /// the job as marked for deletion (`dry_run`: as it is, with nothing changed).
    pub async fn delete(&self, namespace: &str, name: &str, dry_run: bool) -> Result<Value, JobError> {
        if dry_run {
            return Ok(render(self.load(namespace, name).await?));
        }
        let (ns, n) = (namespace.to_string(), name.to_string());
        let marked = self
            .store
            .call(move |conn| resources::request_deletion(conn, spec::KIND, &ns, &n))
            .await
            .map_err(|e| not_found(e, namespace, name))?;
        self.queue.add(&marked.uid);
        Ok(render(marked))
    }

    pub async fn events(&self, namespace: &str, name: &str) -> Result<Vec<EventRecord>, JobError> {
        let job = self.load(namespace, name).await?;
        Ok(self
            .store
            .call(move |conn| resources::list_events(conn, &job.uid))
            .await?)
    }

    /// The log of one attempt (0-based; the latest by default).
    pub async fn log(
        &self,
        namespace: &str,
        name: &str,
        attempt: Option<usize>,
    ) -> Result<Option<WorkloadLog>, JobError> {
        let job = self.load(namespace, name).await?;
        let attempts = self.scheduler.list_by_owner(&job.uid).await?;
        let chosen = match attempt {
            Some(i) => Some(attempts.get(i).ok_or(JobError::NoAttempt(i))?),
            None => attempts.last(),
        };
        let Some(record) = chosen else { return Ok(None) };
        Ok(Some(self.scheduler.log_of(record).await))
    }
}
