//! Notebooks: Kubeflow `Notebook` documents (`kubeflow.org/v1`, `v1beta1` accepted) run
//! as Jupyter servers. A notebook is validated as the pod template it is ([`spec`]);
//! its controller ([`controller`]) submits one Jupyter server workload through the
//! scheduler (notebook priority, the GPU ledger), probes it ([`jupyter`]), writes
//! Kubeflow's status, restarts crashes with backoff, stops and starts it by Kubeflow's
//! `kubeflow-resource-stopped` annotation and culls idle servers. The servers listen
//! on 127.0.0.1 only; users reach them through the authenticated proxy ([`proxy`]) at
//! `/notebook/{namespace}/{name}/`, Kubeflow's URL.

pub mod controller;
pub mod jupyter;
pub mod proxy;
pub mod spec;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError, RwLock};

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::controller::WorkQueue;
use crate::model::meta;
use crate::model::strict::FieldError;
use crate::scheduler::{Scheduler, SchedulerError};
use crate::store::resources::{self, NewResource};
use crate::store::{access, Store, StoreError};

/// `[notebooks]` in config.toml.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct NotebooksConfig {
    /// The Jupyter server's command, before Hearth's `--ServerApp.*` arguments. Unset:
    /// `jupyter-lab`, or `jupyter-server` when Lab is absent, looked up on `PATH`
    /// (with `[workloads] path_prefix` in front).
    pub command: Option<Vec<String>>,
    /// Stop servers idle this long (Kubeflow's `CULL_IDLE_TIME`, minutes; fractions
    /// allowed). Idle: no kernel busy and no API activity (`/api/status`
    /// `last_activity`, each kernel's `last_activity`).
    pub cull_idle_time_minutes: f64,
    /// Whether idle servers are stopped at all (Kubeflow's `ENABLE_CULLING`).
    pub enable_culling: bool,
    /// How often a running server's activity is read (Kubeflow's
    /// `IDLENESS_CHECK_PERIOD`, here in seconds).
    pub idleness_check_period_seconds: f64,
    /// First restart delay after a server crashed; doubles per crash in a row, up to
    /// 5 minutes (Kubernetes' CrashLoopBackOff).
    pub restart_backoff_base_seconds: f64,
    /// How long a started server may take to answer `/api/status` before it counts as
    /// failed and is restarted.
    pub start_timeout_seconds: u64,
}

impl Default for NotebooksConfig {
    fn default() -> Self {
        NotebooksConfig {
            command: None,
            cull_idle_time_minutes: 1440.0,
            enable_culling: true,
            idleness_check_period_seconds: 60.0,
            restart_backoff_base_seconds: 10.0,
            start_timeout_seconds: 120,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NotebookError {
    #[error(transparent)]
    Field(#[from] FieldError),
    #[error("notebook {namespace}/{name} not found")]
    NotFound { namespace: String, name: String },
    #[error("{0}")]
    Unschedulable(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(SchedulerError),
    #[error("workspace {path}: {source}")]
    Workspace { path: String, source: std::io::Error },
}

impl From<SchedulerError> for NotebookError {
    fn from(e: SchedulerError) -> NotebookError {
        match e {
            SchedulerError::Unsatisfiable(message) => NotebookError::Unschedulable(message),
            other => NotebookError::Scheduler(other),
        }
    }
}

/// Where a ready server listens, for the proxy: kept by the controller, read on every
/// proxied request (no database read on the request path).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub port: u16,
    /// The server's own token (`JUPYTER_TOKEN`), added by the proxy.
    pub token: String,
}

/// The Notebooks API and the handle its controller and proxy share.
#[derive(Clone)]
pub struct Notebooks {
    store: Store,
    scheduler: Scheduler,
    queue: Arc<WorkQueue>,
    config: NotebooksConfig,
    data_dir: PathBuf,
    path_prefix: Option<String>,
    ready: Arc<RwLock<HashMap<(String, String), Upstream>>>,
}

/// A notebook as clients see it, under the `apiVersion` they asked by.
pub fn render(resource: resources::Resource, api_version: &str) -> Value {
    let mut document = meta::render(resource, api_version, spec::KIND);
    if let Some(status) = document.get_mut("status").and_then(Value::as_object_mut) {
        status.remove(controller::HEARTH_STATUS);
    }
    document
}

fn not_found(e: StoreError, namespace: &str, name: &str) -> NotebookError {
    match e {
        StoreError::NotFound { .. } => NotebookError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
        },
        other => NotebookError::Store(other),
    }
}

impl Notebooks {
    pub fn new(
        store: Store,
        scheduler: Scheduler,
        config: NotebooksConfig,
        data_dir: PathBuf,
        path_prefix: Option<String>,
    ) -> Notebooks {
        Notebooks {
            store,
            scheduler,
            queue: WorkQueue::new(),
            config,
            data_dir,
            path_prefix,
            ready: Arc::default(),
        }
    }

    pub fn queue(&self) -> Arc<WorkQueue> {
        Arc::clone(&self.queue)
    }

    /// The ready server of a notebook, if it has one.
    pub fn upstream(&self, namespace: &str, name: &str) -> Option<Upstream> {
        self.ready
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(namespace.to_string(), name.to_string()))
            .cloned()
    }

    fn set_upstream(&self, namespace: &str, name: &str, upstream: Option<Upstream>) {
        let mut ready = self.ready.write().unwrap_or_else(PoisonError::into_inner);
        let key = (namespace.to_string(), name.to_string());
        match upstream {
            Some(u) => ready.insert(key, u),
            None => ready.remove(&key),
        };
    }

    /// `<data-dir>/workspaces/<namespace>/<claimName>`: a claim's directory.
    pub fn workspace_dir(&self, namespace: &str, claim_name: &str) -> PathBuf {
        self.data_dir.join("workspaces").join(namespace).join(claim_name)
    }

    /// `<data-dir>/notebooks/<namespace>/<name>`: the root dir of a notebook with no
    /// claim, removed with the notebook (as a pod's own filesystem goes with it).
    pub fn scratch_dir(&self, namespace: &str, name: &str) -> PathBuf {
        self.data_dir.join("notebooks").join(namespace).join(name)
    }

    fn validate(
        document: &Value,
        name_from_path: Option<&str>,
    ) -> Result<(meta::Metadata, Value, spec::NotebookSpec), NotebookError> {
        if document.get("apiVersion").and_then(Value::as_str) == Some("kubeflow.org/v1alpha1") {
            return Err(FieldError::unsupported(
                "apiVersion",
                "kubeflow.org/v1alpha1 is no longer served upstream; use kubeflow.org/v1 (the same spec)",
            )
            .into());
        }
        meta::check_type(document, spec::API_VERSIONS, spec::KIND)?;
        crate::model::strict::only_keys(
            document,
            "",
            &["apiVersion", "kind", "metadata", "spec", "status"],
            "not part of a Notebook",
        )?;
        let metadata = meta::parse(document, name_from_path)?;
        let spec_value = document
            .get("spec")
            .cloned()
            .ok_or_else(|| FieldError::invalid("spec", "is required"))?;
        let parsed = spec::parse(&spec_value)?;
        Ok((metadata, spec_value, parsed))
    }

    /// Creates a notebook (`dry_run`: only checks it); its controller starts the server.
    pub async fn create(
        &self,
        namespace: &str,
        document: Value,
        dry_run: bool,
        api_version: &str,
    ) -> Result<Value, NotebookError> {
        let (metadata, spec_value, parsed) = Self::validate(&document, None)?;
        self.scheduler.check_satisfiable(&parsed.resources, namespace)?;
        crate::runtime::identity::global()
            .for_workload(namespace, parsed.security_context.as_ref())
            .map_err(|e| NotebookError::Field(e.into_field_error()))?;
        let new = NewResource {
            kind: spec::KIND.into(),
            namespace: namespace.into(),
            name: metadata.name,
            metadata: metadata.stored,
            spec: spec_value,
            status: json!({}),
        };
        if dry_run {
            return Ok(render(resources::unsaved(new), api_version));
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
        Ok(render(created, api_version))
    }

    async fn load(&self, namespace: &str, name: &str) -> Result<resources::Resource, NotebookError> {
        let (ns, n) = (namespace.to_string(), name.to_string());
        self.store
            .call(move |conn| resources::get(conn, spec::KIND, &ns, &n))
            .await
            .map_err(|e| not_found(e, namespace, name))
    }

    /// PUT (and every PATCH, the stop annotation's included): any field may change, as
    /// Kubeflow lets the template change; a changed spec restarts the server with it.
    pub async fn replace(
        &self,
        namespace: &str,
        name: &str,
        document: Value,
        expected_version: Option<i64>,
        dry_run: bool,
        api_version: &str,
    ) -> Result<Value, NotebookError> {
        let current = self.load(namespace, name).await?;
        let (metadata, spec_value, parsed) = Self::validate(&document, Some(name))?;
        self.scheduler.check_satisfiable(&parsed.resources, namespace)?;
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
        Ok(render(updated, api_version))
    }

    /// Marks the notebook for deletion; its controller stops the server and removes
    /// it. The workspace directory stays unless the notebook carries
    /// `hearth.dev/purge-workspace: "true"` ([`spec::PURGE_ANNOTATION`]).
    pub async fn delete(
        &self,
        namespace: &str,
        name: &str,
        dry_run: bool,
        api_version: &str,
    ) -> Result<Value, NotebookError> {
        if dry_run {
            return Ok(render(self.load(namespace, name).await?, api_version));
        }
        let (ns, n) = (namespace.to_string(), name.to_string());
        let marked = self
            .store
            .call(move |conn| resources::request_deletion(conn, spec::KIND, &ns, &n))
            .await
            .map_err(|e| not_found(e, namespace, name))?;
        self.set_upstream(namespace, name, None);
        self.queue.add(&marked.uid);
        Ok(render(marked, api_version))
    }
}
