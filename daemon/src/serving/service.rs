//! InferenceService desired state: create, read, replace, patch and delete in the
//! store, answering the upstream document with `metadata` filled in and `status`.
//! The controller is woken after every write.

use std::sync::Arc;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::controller::{PORT_LABEL, REVISION_LABEL};
use super::isvc::{self, IsvcError, Parsed, API_VERSION, KIND};
use super::runtimes::RuntimeTable;
use crate::config::ServingConfig;
use crate::runtime::ExitInfo;
use crate::scheduler::{Scheduler, SchedulerError, WorkloadLog, WorkloadRecord};
use crate::store::{resources, NewResource, Resource, Store, StoreError};

pub const STORE_KIND: &str = "InferenceService";

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error(transparent)]
    Isvc(#[from] IsvcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Scheduler(#[from] SchedulerError),
    #[error("{0}")]
    NoReplica(String),
}

/// The two parts of a service that run replicas.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Component {
    #[default]
    Predictor,
    Transformer,
}

/// One replica of a service, as `kubectl get pods` would list it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Replica {
    /// The workload id, as `/hearth/v1/queue` shows it.
    pub name: String,
    pub revision: String,
    pub component: Component,
    /// `Queued`, `Starting`, `Running`, `Succeeded`, `Failed` or `Stopped`.
    pub phase: &'static str,
    /// The loopback port the replica serves on.
    pub port: Option<u16>,
    pub created_at: String,
    /// Why it waits, while queued.
    pub pending_reason: Option<String>,
    /// How it ended, once it has.
    pub exit: Option<ReplicaExit>,
}

/// An ended replica, in the shape of a Kubernetes container's `state.terminated`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReplicaExit {
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    /// `Completed`, `Error`, `DeadlineExceeded`, `Stopped`, `StartError` or `Lost`.
    pub reason: String,
    pub message: String,
    pub started_at: Option<String>,
    pub finished_at: String,
}

impl From<&ExitInfo> for ReplicaExit {
    fn from(e: &ExitInfo) -> ReplicaExit {
        ReplicaExit {
            exit_code: e.exit_code,
            signal: e.signal,
            reason: e.reason.clone(),
            message: e.message.clone(),
            started_at: e.started_at.clone(),
            finished_at: e.finished_at.clone(),
        }
    }
}

/// Which replica's log: like `kubectl logs`, the newest running one unless named.
#[derive(Debug, Default)]
pub struct ReplicaSelector {
    pub component: Component,
    pub revision: Option<String>,
    pub replica: Option<String>,
}

fn replica_view(record: &WorkloadRecord) -> Replica {
    let key = record
        .workload
        .labels
        .get(REVISION_LABEL)
        .cloned()
        .unwrap_or_default();
    let (revision, component) = match key.strip_suffix("/transformer") {
        Some(revision) => (revision.to_string(), Component::Transformer),
        None => (key, Component::Predictor),
    };
    Replica {
        name: record.id.clone(),
        revision,
        component,
        phase: record.phase.as_str(),
        port: record
            .workload
            .labels
            .get(PORT_LABEL)
            .and_then(|p| p.parse().ok()),
        created_at: record.created_at.clone(),
        pending_reason: record.pending_reason.clone(),
        exit: record.exit.as_ref().map(ReplicaExit::from),
    }
}

/// What the API layer needs to manage InferenceServices. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub runtimes: Arc<RuntimeTable>,
    pub config: Arc<ServingConfig>,
    pub wake: Arc<tokio::sync::Notify>,
    pub scheduler: Scheduler,
}

/// The document as answered: the user's metadata and spec, Hearth's identity fields
/// and the status the controller wrote.
pub fn document(mut resource: Resource) -> Value {
    // The controller keeps its bookkeeping under `status.hearth`; the public status is
    // KServe's shape only.
    match &mut resource.status {
        Value::Object(o) if !o.is_empty() => {
            o.remove("hearth");
        }
        other => *other = json!({"observedGeneration": 0, "conditions": []}),
    }
    crate::model::meta::render(resource, API_VERSION, KIND)
}

impl Services {
    fn parse(&self, doc: &Value, path_name: Option<&str>) -> Result<Parsed, IsvcError> {
        isvc::validate(doc, path_name, &self.runtimes, &self.config)
    }

    /// Creates a service; with `dry_run` (Kubernetes' `dryRun=All`) only checks it.
    pub async fn create(&self, namespace: &str, doc: Value, dry_run: bool) -> Result<Value, ServingError> {
        let parsed = self.parse(&doc, None)?;
        let new = NewResource {
            kind: STORE_KIND.into(),
            namespace: namespace.to_string(),
            name: parsed.name,
            metadata: parsed.metadata,
            spec: parsed.spec,
            status: json!({}),
        };
        if dry_run {
            return Ok(document(resources::unsaved(new)));
        }
        let created = self.store.call(move |conn| resources::create(conn, new)).await?;
        self.wake.notify_one();
        Ok(document(created))
    }

    pub(crate) async fn get_resource(&self, namespace: &str, name: &str) -> Result<Resource, ServingError> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Ok(self
            .store
            .call(move |conn| resources::get(conn, STORE_KIND, &namespace, &name))
            .await?)
    }

    /// PUT: the whole document replaces metadata and spec; status stays the
    /// controller's. `expected_version` is Kubernetes' `metadata.resourceVersion`
    /// precondition; with `dry_run` nothing is stored.
    pub async fn replace(
        &self,
        namespace: &str,
        name: &str,
        doc: Value,
        expected_version: Option<i64>,
        dry_run: bool,
    ) -> Result<Value, ServingError> {
        let parsed = self.parse(&doc, Some(name))?;
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let replaced = self
            .store
            .call(move |conn| {
                let mut current = resources::get(conn, STORE_KIND, &namespace, &name)?;
                if current.deletion_requested_at.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "InferenceService {namespace}/{name} is being deleted"
                    )));
                }
                if dry_run {
                    current.generation += i64::from(current.spec != parsed.spec);
                    current.metadata = parsed.metadata;
                    current.spec = parsed.spec;
                    return Ok(current);
                }
                resources::replace_spec_checked(
                    conn,
                    STORE_KIND,
                    &namespace,
                    &name,
                    &parsed.metadata,
                    &parsed.spec,
                    expected_version,
                )
            })
            .await?;
        if !dry_run {
            self.wake.notify_one();
        }
        Ok(document(replaced))
    }

    /// The service's replicas, oldest first, ended ones included.
    pub async fn replicas(&self, namespace: &str, name: &str) -> Result<Vec<Replica>, ServingError> {
        let service = self.get_resource(namespace, name).await?;
        let records = self.scheduler.list_by_owner(&service.uid).await?;
        Ok(records.iter().map(replica_view).collect())
    }

    /// The chosen replica's name and log.
    pub async fn replica_log(
        &self,
        namespace: &str,
        name: &str,
        select: &ReplicaSelector,
    ) -> Result<(String, WorkloadLog), ServingError> {
        let service = self.get_resource(namespace, name).await?;
        let records = self.scheduler.list_by_owner(&service.uid).await?;
        let matching: Vec<&WorkloadRecord> = records
            .iter()
            .filter(|r| {
                let view = replica_view(r);
                view.component == select.component
                    && select.revision.as_ref().is_none_or(|want| *want == view.revision)
                    && select.replica.as_ref().is_none_or(|want| *want == view.name)
            })
            .collect();
        let chosen = matching
            .iter()
            .rev()
            .find(|r| r.phase.is_active())
            .or(matching.last())
            .ok_or_else(|| {
                ServingError::NoReplica(match &select.replica {
                    Some(replica) => format!("InferenceService {namespace}/{name} has no replica {replica}"),
                    None => format!(
                        "InferenceService {namespace}/{name} has no {} replica{} (at zero replicas there is no log until a request starts one)",
                        match select.component {
                            Component::Predictor => "predictor",
                            Component::Transformer => "transformer",
                        },
                        select
                            .revision
                            .as_ref()
                            .map(|r| format!(" of revision {r}"))
                            .unwrap_or_default()
                    ),
                })
            })?;
        Ok((chosen.id.clone(), self.scheduler.log_of(chosen).await))
    }

    /// Marks the service for deletion; the controller stops its replicas and then
    /// removes it (and its revisions).
    pub async fn delete(&self, namespace: &str, name: &str, dry_run: bool) -> Result<Value, ServingError> {
        if dry_run {
            return Ok(document(self.get_resource(namespace, name).await?));
        }
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let marked = self
            .store
            .call(move |conn| resources::request_deletion(conn, STORE_KIND, &namespace, &name))
            .await?;
        self.wake.notify_one();
        Ok(document(marked))
    }
}
