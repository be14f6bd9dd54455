//! Pipelines' resources in the generic resource table. The KFP id is the resource
//! name, unique per kind; ids are UUIDs, so an id names one resource in all namespaces.

use rusqlite::{params, OptionalExtension};
use serde_json::Value;

use super::executor::Values;
use crate::store::resources::{self, NewResource, Resource};
use crate::store::{Store, StoreError};

pub const PIPELINE: &str = "KfpPipeline";
pub const VERSION: &str = "KfpPipelineVersion";
pub const EXPERIMENT: &str = "KfpExperiment";
pub const RUN: &str = "KfpRun";
pub const RECURRING: &str = "KfpRecurringRun";
pub const CACHE: &str = "KfpCacheEntry";

/// A resource by kind and id, whatever its namespace.
pub fn find(conn: &rusqlite::Connection, kind: &str, id: &str) -> Result<Resource, StoreError> {
    let ns: Option<String> = conn
        .query_row(
            "SELECT namespace FROM resources WHERE kind = ?1 AND name = ?2",
            params![kind, id],
            |r| r.get(0),
        )
        .optional()?;
    match ns {
        Some(ns) => resources::get(conn, kind, &ns, id),
        None => Err(StoreError::NotFound {
            kind: kind.to_string(),
            namespace: "*".to_string(),
            name: id.to_string(),
        }),
    }
}

pub async fn cache_get(store: &Store, namespace: &str, key: &str) -> Result<Option<Values>, StoreError> {
    let (ns, key) = (namespace.to_string(), key.to_string());
    store
        .call(move |conn| match resources::get(conn, CACHE, &ns, &key) {
            Ok(r) => Ok(serde_json::from_value(r.spec["outputs"].clone()).ok()),
            Err(StoreError::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        })
        .await
}

pub async fn cache_put(
    store: &Store,
    namespace: &str,
    key: &str,
    outputs: &Values,
) -> Result<(), StoreError> {
    let (ns, key) = (namespace.to_string(), key.to_string());
    let spec = serde_json::json!({"outputs": outputs});
    store
        .call(move |conn| {
            match resources::create(
                conn,
                NewResource {
                    kind: CACHE.into(),
                    namespace: ns,
                    name: key,
                    metadata: Value::Object(Default::default()),
                    spec,
                    status: Value::Object(Default::default()),
                },
            ) {
                Ok(_) | Err(StoreError::AlreadyExists { .. }) => Ok(()),
                Err(e) => Err(e),
            }
        })
        .await
}
