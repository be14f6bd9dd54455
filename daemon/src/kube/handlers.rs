//! The one set of handlers behind every kind's Kubernetes paths: create, get, list
//! (and watch), replace, patch, delete and the `status` subresource. Each takes the
//! kind's [`KindDef`]; the kind's own code (validation, immutable fields, controller)
//! is reached through it. Errors are `ApiError`s, answered as Kubernetes `Status`
//! objects by [`super::status::kubernetes_errors`].

use std::collections::BTreeMap;

use actix_web::{HttpResponse, ResponseError};
use serde::Serialize;
use serde_json::value::RawValue;
use serde_json::{json, Value};
use utoipa::ToSchema;

use super::kinds::{DeleteAnswer, KindDef};
use super::params::{self, ListOptions, WriteOptions};
use super::patch;
use super::status::{ObjectName, Status};
use crate::auth::Principal;
use crate::http::body::Document;
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::store::{resources, StoreError};

pub type Raw = BTreeMap<String, String>;

/// A `<Kind>List` (`kubectl get <kind> -o json`): each item carries its
/// `apiVersion` and `kind`.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceList {
    #[schema(example = "batch/v1")]
    pub api_version: String,
    #[schema(example = "JobList")]
    pub kind: String,
    pub metadata: ListMeta,
    // Kept serialized: a list renders each row and writes it out at once instead of
    // holding every item's tree until the answer is written (the allocator's churn
    // over those trees was most of a large list's cost).
    #[schema(value_type = Vec<Object>)]
    pub items: Vec<Box<RawValue>>,
}

impl ResourceList {
    /// A list of `items` (documents) of `kind`, read at `resource_version`.
    pub fn of(
        kind: &KindDef,
        resource_version: i64,
        continue_token: Option<String>,
        items: Vec<Box<RawValue>>,
    ) -> ResourceList {
        ResourceList {
            api_version: kind.api_version(),
            kind: kind.list_kind.into(),
            metadata: ListMeta {
                resource_version: resource_version.to_string(),
                continue_token,
            },
            items,
        }
    }
}

/// `ListMeta`: the store's `resourceVersion` when the list was read (a watch resumes
/// from it), and `continue` when more items follow this page.
#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ListMeta {
    pub resource_version: String,
    #[serde(rename = "continue", skip_serializing_if = "Option::is_none")]
    pub continue_token: Option<String>,
}

/// Metadata fields the server owns: read (`resourceVersion` as the precondition) and
/// dropped from what a client sends, as the API server resets them.
const SERVER_METADATA: &[&str] = &[
    "uid",
    "resourceVersion",
    "generation",
    "creationTimestamp",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
    "managedFields",
    "selfLink",
    "namespace",
];

/// Checks a sent object against its path and takes out what the server owns.
/// Answers the object to hand the kind and the `metadata.resourceVersion` it named.
fn prepare(mut document: Value, namespace: &str) -> Result<(Value, Option<i64>), ApiError> {
    let root = document
        .as_object_mut()
        .ok_or_else(|| ApiError::BadRequest("the body must be a JSON or YAML object".into()))?;
    root.remove("status");
    let mut expected = None;
    if let Some(metadata) = root.get_mut("metadata").and_then(Value::as_object_mut) {
        if let Some(sent) = metadata.get("namespace").and_then(Value::as_str) {
            if sent != namespace {
                return Err(ApiError::BadRequest(format!(
                    "the namespace of the provided object ({sent}) does not match the namespace sent on the request ({namespace})"
                )));
            }
        }
        expected = match metadata.get("resourceVersion") {
            None | Some(Value::Null) => None,
            Some(Value::String(s)) if s.is_empty() => None,
            Some(Value::String(s)) => Some(s.parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "metadata.resourceVersion",
                    format!("{s:?} is not a version this server issued"),
                )
            })?),
            Some(_) => return Err(ApiError::invalid("metadata.resourceVersion", "must be a string")),
        };
        for key in SERVER_METADATA {
            metadata.remove(*key);
        }
    }
    Ok((document, expected))
}

fn not_found(kind: &KindDef, namespace: &str, name: &str) -> ApiError {
    ApiError::NotFound(format!("{} {namespace}/{name} not found", kind.kind))
}

async fn load(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<resources::Resource, ApiError> {
    let (ns, n) = (namespace.to_string(), name.to_string());
    state
        .store
        .call(move |conn| resources::get(conn, kind.store_kind, &ns, &n))
        .await
        .map_err(|e| match e {
            StoreError::NotFound { .. } => not_found(kind, namespace, name),
            other => other.into(),
        })
}

pub async fn create(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    raw: &Raw,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let options = WriteOptions::parse(raw)?;
    let (mut document, _) = prepare(body.single()?, namespace)?;
    let name = document
        .pointer("/metadata/name")
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string();
    let checked = match super::ownership::check(kind, state, namespace, &mut document).await {
        Ok(()) => kind.create(state, namespace, document, options.dry_run).await,
        Err(e) => Err(e),
    };
    let mut created = match checked {
        Ok(created) => created,
        Err(e) => {
            let mut answer = e.error_response();
            answer.extensions_mut().insert(ObjectName(name));
            return Ok(answer);
        }
    };
    if options.dry_run {
        if let Some(metadata) = created.get_mut("metadata").and_then(Value::as_object_mut) {
            metadata.remove("resourceVersion");
        }
    }
    Ok(HttpResponse::Created().json(created))
}

pub async fn read(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
) -> Result<HttpResponse, ApiError> {
    Ok(HttpResponse::Ok().json(kind.render(load(kind, state, namespace, name).await?)))
}

/// One page of a kind (in one namespace, or every namespace the caller may see),
/// filtered by the selectors; or, with `watch=true`, the watch stream.
pub async fn list(
    kind: &'static KindDef,
    state: &AppState,
    namespace: Option<String>,
    caller: Principal,
    raw: &Raw,
) -> Result<HttpResponse, ApiError> {
    let options = ListOptions::parse(raw)?;
    options.fields.only(kind.kind, kind.selectable_fields())?;
    if let super::kinds::Backend::View(view) = kind.backend {
        return super::views::list(kind, view, state, namespace, caller, options).await;
    }
    if options.watch {
        return super::watch::serve(kind, state, namespace, caller, options).await;
    }
    let ListOptions {
        labels,
        fields,
        limit,
        after,
        ..
    } = options;
    let (items, next, version) = state
        .store
        .call(move |conn| {
            let version = resources::latest_version(conn)?;
            let name = fields.name().map(str::to_string);
            let (items, next) = resources::scan(
                conn,
                kind.store_kind,
                namespace.as_deref(),
                name.as_deref(),
                limit.unwrap_or(usize::MAX),
                after.as_ref(),
                |r| {
                    if !caller.can_access(&r.namespace) {
                        return None;
                    }
                    let document = kind.render(r);
                    (labels.matches(&document) && fields.matches(&document))
                        .then(|| serde_json::value::to_raw_value(&document))
                },
            )?;
            let items = items.into_iter().collect::<Result<Vec<_>, _>>()?;
            Ok((items, next, version))
        })
        .await?;
    Ok(HttpResponse::Ok().json(ResourceList::of(kind, version, next.map(|c| c.encode()), items)))
}

pub async fn replace(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    raw: &Raw,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let options = WriteOptions::parse(raw)?;
    let (mut document, expected) = prepare(body.single()?, namespace)?;
    super::ownership::check(kind, state, namespace, &mut document).await?;
    let replaced = kind
        .replace(state, namespace, name, document, expected, options.dry_run)
        .await?;
    Ok(HttpResponse::Ok().json(replaced))
}

/// Whether a patch names `metadata.resourceVersion` (a merge patch setting it, a JSON
/// patch operation on it): then it applies only over that version, never retried.
fn names_version(patch: &Value) -> bool {
    match patch {
        Value::Array(operations) => operations.iter().any(|op| {
            op.get("path")
                .and_then(Value::as_str)
                .is_some_and(|p| p.starts_with("/metadata/resourceVersion"))
        }),
        _ => patch.pointer("/metadata/resourceVersion").is_some(),
    }
}

/// How often a patch without a `resourceVersion` of its own is tried again when
/// another write lands between its read and its write, as the API server retries.
const PATCH_ATTEMPTS: usize = 5;

pub async fn patch(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    raw: &Raw,
    content_type: Option<&str>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let patch_type = patch::patch_type(content_type)?;
    let options = WriteOptions::parse(raw)?;
    let patch_body = body.single()?;
    let pinned = names_version(&patch_body);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = load(kind, state, namespace, name).await?;
        let mut document = kind.render(current);
        patch::apply(&mut document, &patch_body, patch_type)?;
        let (mut document, expected) = prepare(document, namespace)?;
        super::ownership::check(kind, state, namespace, &mut document).await?;
        match kind
            .replace(state, namespace, name, document, expected, options.dry_run)
            .await
        {
            Err(ApiError::Conflict(_)) if !pinned && attempt < PATCH_ATTEMPTS => continue,
            outcome => return Ok(HttpResponse::Ok().json(outcome?)),
        }
    }
}

/// DELETE with Kubernetes' `DeleteOptions`: `preconditions` (uid, resourceVersion;
/// a mismatch is 409 `Conflict`) and `propagationPolicy`, recorded with the deletion
/// as the API server records it (the `foregroundDeletion` or `orphan` finalizer) and
/// carried out by the garbage collector ([`super::gc`]). An object held by a finalizer
/// is answered as the object, as the API server answers a deletion that did not
/// finish at once.
pub async fn delete(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    raw: &Raw,
    body: &[u8],
) -> Result<HttpResponse, ApiError> {
    let options = params::delete_options(raw, body)?;
    let object = if options.dry_run {
        let current = load(kind, state, namespace, name).await?;
        resources::check_preconditions(&current, &options.preconditions)?;
        kind.delete(state, namespace, name, true).await?
    } else {
        let (ns, n) = (namespace.to_string(), name.to_string());
        let (preconditions, finalizer) = (options.preconditions.clone(), options.propagation.finalizer());
        let marked = state
            .store
            .call(move |conn| {
                resources::request_deletion_with(conn, kind.store_kind, &ns, &n, &preconditions, finalizer)
            })
            .await
            .map_err(|e| match e {
                StoreError::NotFound { .. } => not_found(kind, namespace, name),
                other => other.into(),
            })?;
        // Marked already: this wakes the kind's controller. The object may be gone by
        // now (the collector released it and the controller removed it); the answer
        // is the object as this delete left it, as the API server answers.
        match kind.delete(state, namespace, name, false).await {
            Ok(_) | Err(ApiError::NotFound(_)) => kind.render(marked),
            Err(e) => return Err(e),
        }
    };
    let held = object
        .pointer("/metadata/finalizers")
        .and_then(Value::as_array)
        .is_some_and(|f| !f.is_empty());
    Ok(match kind.delete_answer {
        DeleteAnswer::Status if !held => {
            let uid = object
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .unwrap_or("");
            HttpResponse::Ok().json(Status::deleted(kind, name, uid))
        }
        DeleteAnswer::Status | DeleteAnswer::Object => HttpResponse::Ok().json(object),
    })
}

/// Writes `status` (the `status` subresource): the rest of the object is left as it
/// is, and the kind's hidden bookkeeping in `status` is kept.
async fn write_status(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    dry_run: bool,
    new_status: impl Fn(&Value) -> Result<(Value, Option<i64>), ApiError>,
    retry: bool,
) -> Result<HttpResponse, ApiError> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let current = load(kind, state, namespace, name).await?;
        let (status, expected) = new_status(&kind.render(current.clone()))?;
        let mut status = match status {
            Value::Object(map) => map,
            Value::Null => serde_json::Map::new(),
            _ => return Err(ApiError::invalid("status", "must be an object")),
        };
        for key in kind.hidden_status {
            status.remove(*key);
            if let Some(kept) = current.status.get(*key) {
                status.insert((*key).to_string(), kept.clone());
            }
        }
        let status = Value::Object(status);
        if dry_run {
            let mut would_be = current;
            would_be.status = status;
            return Ok(HttpResponse::Ok().json(kind.render(would_be)));
        }
        let uid = current.uid.clone();
        let expected = expected.unwrap_or(current.resource_version);
        let written = state
            .store
            .call(move |conn| {
                resources::update_status(conn, &uid, &status, Some(expected))?;
                resources::get_by_uid(conn, &uid)
            })
            .await;
        match written {
            Err(StoreError::Conflict(_)) if retry && attempt < PATCH_ATTEMPTS => continue,
            Err(StoreError::Conflict(_)) => return Err(ApiError::Conflict(
                "the object has been modified; please apply your changes to the latest version and try again"
                    .into(),
            )),
            Err(e) => return Err(e.into()),
            Ok(None) => return Err(not_found(kind, namespace, name)),
            Ok(Some(resource)) => return Ok(HttpResponse::Ok().json(kind.render(resource))),
        }
    }
}

pub async fn replace_status(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    raw: &Raw,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let options = WriteOptions::parse(raw)?;
    let sent = body.single()?;
    let status = sent.get("status").cloned().unwrap_or(Value::Null);
    let (_, expected) = prepare(sent, namespace)?;
    let unpinned = expected.is_none();
    write_status(
        kind,
        state,
        namespace,
        name,
        options.dry_run,
        move |_| Ok((status.clone(), expected)),
        unpinned,
    )
    .await
}

pub async fn patch_status(
    kind: &'static KindDef,
    state: &AppState,
    namespace: &str,
    name: &str,
    raw: &Raw,
    content_type: Option<&str>,
    body: Document,
) -> Result<HttpResponse, ApiError> {
    let patch_type = patch::patch_type(content_type)?;
    let options = WriteOptions::parse(raw)?;
    let patch_body = body.single()?;
    let pinned = patch_body
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
        .map(|s| {
            s.parse::<i64>().map_err(|_| {
                ApiError::invalid(
                    "metadata.resourceVersion",
                    format!("{s:?} is not a version this server issued"),
                )
            })
        })
        .transpose()?;
    write_status(
        kind,
        state,
        namespace,
        name,
        options.dry_run,
        move |current| {
            let mut document = current.clone();
            patch::apply(&mut document, &patch_body, patch_type)?;
            Ok((document.get("status").cloned().unwrap_or(json!({})), pinned))
        },
        pinned.is_none(),
    )
    .await
}
