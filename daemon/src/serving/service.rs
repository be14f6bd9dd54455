//! InferenceService desired state: create, read, replace, patch and delete in the
//! store, answering the upstream document with `metadata` filled in and `status`.
//! The controller is woken after every write.

use std::sync::Arc;

use serde_json::{json, Value};

use super::isvc::{self, IsvcError, Parsed, API_VERSION, KIND};
use super::runtimes::RuntimeTable;
use crate::config::ServingConfig;
use crate::store::{resources, NewResource, Resource, Store, StoreError};

pub const STORE_KIND: &str = "InferenceService";

#[derive(Debug, thiserror::Error)]
pub enum ServingError {
    #[error(transparent)]
    Isvc(#[from] IsvcError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the merge patch must be a JSON object")]
    PatchNotObject,
}

/// What the API layer needs to manage InferenceServices. Cheap to clone.
#[derive(Clone)]
pub struct Services {
    pub store: Store,
    pub runtimes: Arc<RuntimeTable>,
    pub config: Arc<ServingConfig>,
    pub wake: Arc<tokio::sync::Notify>,
}

/// The document as answered: the user's metadata and spec, Hearth's identity fields
/// and the status the controller wrote.
pub fn document(resource: &Resource) -> Value {
    let status = match &resource.status {
        Value::Object(o) if !o.is_empty() => resource.status.clone(),
        _ => json!({"observedGeneration": 0, "conditions": []}),
    };
    let mut doc = crate::model::meta::render(resource, API_VERSION, KIND);
    doc["status"] = public_status(&status);
    doc
}

/// The controller keeps its bookkeeping under `status.hearth`; the public status is
/// KServe's shape only.
fn public_status(status: &Value) -> Value {
    let mut status = status.clone();
    if let Some(o) = status.as_object_mut() {
        o.remove("hearth");
    }
    status
}

impl Services {
    fn parse(&self, doc: &Value, path_name: Option<&str>) -> Result<Parsed, IsvcError> {
        isvc::validate(doc, path_name, &self.runtimes, &self.config)
    }

    pub async fn create(&self, namespace: &str, doc: Value) -> Result<Value, ServingError> {
        let parsed = self.parse(&doc, None)?;
        let namespace = namespace.to_string();
        let created = self
            .store
            .call(move |conn| {
                resources::create(
                    conn,
                    NewResource {
                        kind: STORE_KIND.into(),
                        namespace,
                        name: parsed.name,
                        metadata: parsed.metadata,
                        spec: parsed.spec,
                        status: json!({}),
                    },
                )
            })
            .await?;
        self.wake.notify_one();
        Ok(document(&created))
    }

    pub async fn get(&self, namespace: &str, name: &str) -> Result<Value, ServingError> {
        Ok(document(&self.get_resource(namespace, name).await?))
    }

    async fn get_resource(&self, namespace: &str, name: &str) -> Result<Resource, ServingError> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        Ok(self
            .store
            .call(move |conn| resources::get(conn, STORE_KIND, &namespace, &name))
            .await?)
    }

    pub async fn list(&self, namespace: &str) -> Result<Vec<Value>, ServingError> {
        let namespace = namespace.to_string();
        let rows = self
            .store
            .call(move |conn| resources::list(conn, STORE_KIND, Some(&namespace)))
            .await?;
        Ok(rows.iter().map(document).collect())
    }

    /// PUT: the whole document replaces metadata and spec; status stays the controller's.
    pub async fn replace(&self, namespace: &str, name: &str, doc: Value) -> Result<Value, ServingError> {
        let parsed = self.parse(&doc, Some(name))?;
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let replaced = self
            .store
            .call(move |conn| {
                let current = resources::get(conn, STORE_KIND, &namespace, &name)?;
                if current.deletion_requested_at.is_some() {
                    return Err(StoreError::Conflict(format!(
                        "InferenceService {namespace}/{name} is being deleted"
                    )));
                }
                resources::replace_spec(
                    conn,
                    STORE_KIND,
                    &namespace,
                    &name,
                    &parsed.metadata,
                    &parsed.spec,
                )
            })
            .await?;
        self.wake.notify_one();
        Ok(document(&replaced))
    }

    /// PATCH with a JSON merge patch over the stored document.
    pub async fn patch(&self, namespace: &str, name: &str, patch: Value) -> Result<Value, ServingError> {
        if !patch.is_object() {
            return Err(ServingError::PatchNotObject);
        }
        let current = self.get_resource(namespace, name).await?;
        let mut doc = json!({
            "apiVersion": API_VERSION,
            "kind": KIND,
            "metadata": current.metadata,
            "spec": current.spec,
        });
        crate::model::meta::merge_patch(&mut doc, &patch);
        self.replace(namespace, name, doc).await
    }

    /// Marks the service for deletion; the controller stops its replicas and then
    /// removes it (and its revisions).
    pub async fn delete(&self, namespace: &str, name: &str) -> Result<Value, ServingError> {
        let (namespace, name) = (namespace.to_string(), name.to_string());
        let marked = self
            .store
            .call(move |conn| resources::request_deletion(conn, STORE_KIND, &namespace, &name))
            .await?;
        self.wake.notify_one();
        Ok(document(&marked))
    }
}
