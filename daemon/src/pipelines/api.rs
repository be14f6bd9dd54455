//! Core functions behind the KFP v2beta1 API. Each takes the caller and plain values,
//! checks access, reads or writes the store and answers in the API's snake_case shapes
//! (the embedded `pipeline_spec` stays camelCase, as written).

use std::path::PathBuf;

use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::controller::{Controller, RunStatus, TERMINAL};
use super::ir::{self, IrError};
use super::store::{self as pstore, find};
use super::{protojson, schedule, schema};
use crate::auth::{AuthError, Principal};
use crate::model::strict::FieldError;
use crate::runtime::RuntimeError;
use crate::scheduler::SchedulerError;
use crate::store::resources::{self, NewResource, Resource};
use crate::store::{now_rfc3339, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum PipelineError {
    #[error(transparent)]
    Ir(#[from] IrError),
    #[error("{0}")]
    NotFound(String),
    #[error("{field}: {detail}")]
    Invalid { field: String, detail: String },
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Store(StoreError),
    #[error(transparent)]
    Scheduler(SchedulerError),
}

impl From<FieldError> for PipelineError {
    fn from(e: FieldError) -> Self {
        match e {
            FieldError::Invalid { path, detail } => PipelineError::Invalid { field: path, detail },
            FieldError::Unsupported { path, detail } => PipelineError::Ir(IrError::Unsupported {
                feature: path,
                detail,
            }),
        }
    }
}

impl From<StoreError> for PipelineError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound { kind, name, .. } => {
                PipelineError::NotFound(format!("{} {name} not found", kind.trim_start_matches("Kfp")))
            }
            other => PipelineError::Store(other),
        }
    }
}

fn invalid(field: &str, detail: impl Into<String>) -> PipelineError {
    PipelineError::Invalid {
        field: field.to_string(),
        detail: detail.into(),
    }
}

/// The pipelines area's shared handles.
#[derive(Clone)]
pub struct Pipelines {
    pub store: Store,
    pub data_dir: PathBuf,
    pub controller: Controller,
}

/// The namespace a KFP request means. KFP sends `namespace=` (empty) when the caller
/// gave none: that is the caller's own namespace, and `default` for the admin.
pub fn namespace_for(caller: &Principal, requested: Option<&str>) -> Result<String, PipelineError> {
    let ns = match requested.map(str::trim).filter(|s| !s.is_empty()) {
        Some(ns) => ns.to_string(),
        None if caller.admin => "default".to_string(),
        None => caller.user.clone(),
    };
    caller.authorize_namespace(&ns)?;
    Ok(ns)
}

async fn get_authorized(
    p: &Pipelines,
    caller: &Principal,
    kind: &'static str,
    id: &str,
) -> Result<Resource, PipelineError> {
    let id2 = id.to_string();
    let res = p.store.call(move |conn| find(conn, kind, &id2)).await?;
    if !caller.can_access(&res.namespace) {
        // Someone else's resource does not exist, as far as this caller can tell.
        return Err(PipelineError::NotFound(format!(
            "{} {id} not found",
            kind.trim_start_matches("Kfp")
        )));
    }
    Ok(res)
}

fn new_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn create(
    p: &Pipelines,
    kind: &str,
    ns: &str,
    id: &str,
    spec: Value,
    status: Value,
) -> Result<Resource, PipelineError> {
    let new = NewResource {
        kind: kind.to_string(),
        namespace: ns.to_string(),
        name: id.to_string(),
        metadata: json!({}),
        spec,
        status,
    };
    Ok(p.store.call(move |conn| resources::create(conn, new)).await?)
}

async fn replace_spec(p: &Pipelines, res: &Resource, spec: Value) -> Result<Resource, PipelineError> {
    let (kind, ns, name, meta) = (
        res.kind.clone(),
        res.namespace.clone(),
        res.name.clone(),
        res.metadata.clone(),
    );
    Ok(p.store
        .call(move |conn| resources::replace_spec(conn, &kind, &ns, &name, &meta, &spec))
        .await?)
}

async fn delete(p: &Pipelines, uid: &str) -> Result<(), PipelineError> {
    let uid = uid.to_string();
    Ok(p.store.call(move |conn| resources::delete(conn, &uid)).await?)
}

async fn list_kind(
    p: &Pipelines,
    kind: &'static str,
    ns: Option<String>,
) -> Result<Vec<Resource>, PipelineError> {
    Ok(p.store
        .call(move |conn| resources::list(conn, kind, ns.as_deref()))
        .await?)
}

// ---------------------------------------------------------------------------------
// Listing: filter, sort, page.

#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
pub struct ListQuery {
    pub page_token: Option<String>,
    pub page_size: Option<String>,
    pub sort_by: Option<String>,
    pub filter: Option<String>,
    pub namespace: Option<String>,
    pub experiment_id: Option<String>,
}

fn op_name(v: &Value) -> Result<String, PipelineError> {
    Ok(match v {
        Value::Number(n) => match n.as_i64() {
            Some(1) => "EQUALS",
            Some(2) => "NOT_EQUALS",
            Some(3) => "GREATER_THAN",
            Some(5) => "GREATER_THAN_EQUALS",
            Some(6) => "LESS_THAN",
            Some(7) => "LESS_THAN_EQUALS",
            Some(8) => "IN",
            Some(9) => "IS_SUBSTRING",
            _ => {
                return Err(invalid(
                    "filter.predicates.operation",
                    format!("unknown operation {n}"),
                ))
            }
        }
        .to_string(),
        Value::String(s) => s.clone(),
        _ => {
            return Err(invalid(
                "filter.predicates.operation",
                "must be a number or a name",
            ))
        }
    })
}

/// A parsed `filter` query value; applied to items in their API shape.
struct Filter {
    predicates: Vec<(String, String, Value)>,
}

impl Filter {
    fn parse(raw: Option<&str>) -> Result<Filter, PipelineError> {
        let Some(raw) = raw.filter(|s| !s.trim().is_empty()) else {
            return Ok(Filter { predicates: vec![] });
        };
        let v: Value = serde_json::from_str(raw).map_err(|e| invalid("filter", format!("not JSON: {e}")))?;
        let mut predicates = Vec::new();
        for p in v["predicates"].as_array().cloned().unwrap_or_default() {
            let key = p["key"]
                .as_str()
                .ok_or_else(|| invalid("filter.predicates.key", "missing"))?;
            let key = key.rsplit('.').next().unwrap_or(key).to_string();
            let op = op_name(&p["operation"])?;
            let known = [
                "EQUALS",
                "NOT_EQUALS",
                "GREATER_THAN",
                "GREATER_THAN_EQUALS",
                "LESS_THAN",
                "LESS_THAN_EQUALS",
                "IN",
                "IS_SUBSTRING",
            ];
            if !known.contains(&op.as_str()) {
                return Err(invalid(
                    "filter.predicates.operation",
                    format!("unknown operation {op}"),
                ));
            }
            let value = [
                "string_value",
                "stringValue",
                "int_value",
                "intValue",
                "long_value",
                "longValue",
                "bool_value",
                "boolValue",
                "timestamp_value",
                "timestampValue",
            ]
            .iter()
            .find_map(|k| p.get(*k).cloned())
            .or_else(|| {
                [
                    "string_values",
                    "stringValues",
                    "int_values",
                    "intValues",
                    "long_values",
                    "longValues",
                ]
                .iter()
                .find_map(|k| p.get(*k).and_then(|v| v.get("values")).cloned())
            })
            .ok_or_else(|| invalid("filter.predicates", format!("predicate on {key} has no value")))?;
            predicates.push((key, op, value));
        }
        Ok(Filter { predicates })
    }

    fn matches(&self, item: &Value) -> bool {
        self.predicates.iter().all(|(key, op, want)| {
            let key = if key == "name" && item.get("name").is_none() {
                "display_name"
            } else {
                key.as_str()
            };
            let have = item.get(key).cloned().unwrap_or(Value::Null);
            let text = |v: &Value| match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            let cmp = || -> Option<std::cmp::Ordering> {
                match (
                    have.as_f64(),
                    want.as_f64()
                        .or_else(|| want.as_str().and_then(|s| s.parse().ok())),
                ) {
                    (Some(a), Some(b)) => a.partial_cmp(&b),
                    _ => Some(text(&have).cmp(&text(want))),
                }
            };
            match op.as_str() {
                "EQUALS" => text(&have) == text(want),
                "NOT_EQUALS" => text(&have) != text(want),
                "GREATER_THAN" => cmp().is_some_and(|o| o.is_gt()),
                "GREATER_THAN_EQUALS" => cmp().is_some_and(|o| o.is_ge()),
                "LESS_THAN" => cmp().is_some_and(|o| o.is_lt()),
                "LESS_THAN_EQUALS" => cmp().is_some_and(|o| o.is_le()),
                "IN" => want
                    .as_array()
                    .is_some_and(|a| a.iter().any(|w| text(w) == text(&have))),
                "IS_SUBSTRING" => text(&have).contains(&text(want)),
                _ => false,
            }
        })
    }
}

/// The largest `page_size`: the field is `int32` in the v2beta1 list requests.
const MAX_PAGE_SIZE: u64 = i32::MAX as u64;

/// Filters, sorts (`sort_by`: `"created_at desc"`, `"name"`, ...) and pages the items.
fn page(items: Vec<Value>, q: &ListQuery, plural: &str) -> Result<Value, PipelineError> {
    let filter = Filter::parse(q.filter.as_deref())?;
    let mut items: Vec<Value> = items.into_iter().filter(|i| filter.matches(i)).collect();
    let sort = q.sort_by.as_deref().unwrap_or("").trim();
    let (key, desc) = match sort.split_once(' ') {
        Some((k, dir)) => (k, dir.trim().eq_ignore_ascii_case("desc")),
        None if sort.is_empty() => ("created_at", false),
        None => (sort, false),
    };
    let key = match key {
        "name" => "display_name",
        "id" => "",
        other => other,
    };
    items.sort_by(|a, b| {
        let (x, y) = (&a[key], &b[key]);
        let o = match (x.as_f64(), y.as_f64()) {
            (Some(p), Some(q)) => p.partial_cmp(&q).unwrap_or(std::cmp::Ordering::Equal),
            _ => x.to_string().cmp(&y.to_string()),
        };
        if desc {
            o.reverse()
        } else {
            o
        }
    });
    let total = items.len();
    // int32 in the list requests' protos; 0 or absent: everything. An empty value is no
    // int32, and grpc-gateway refuses it too.
    let size = match q.page_size.as_deref() {
        Some(s) => {
            protojson::int_in(&json!({"page_size": s}), "page_size", "", 0, MAX_PAGE_SIZE)?.unwrap_or(0)
        }
        None => 0,
    };
    let offset: usize = match q.page_token.as_deref().filter(|s| !s.is_empty()) {
        Some(t) => t
            .parse()
            .map_err(|_| invalid("page_token", format!("{t:?} is not a token this server issued")))?,
        None => 0,
    };
    let size = match usize::try_from(size) {
        Ok(0) | Err(_) => total.max(1),
        Ok(n) => n,
    };
    let end = offset.saturating_add(size).min(total);
    let slice: Vec<Value> = items
        .into_iter()
        .skip(offset)
        .take(end.saturating_sub(offset))
        .collect();
    let mut out = json!({ plural: slice, "total_size": total });
    if end < total {
        out["next_page_token"] = json!(end.to_string());
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------
// Pipelines and versions.

fn pipeline_json(r: &Resource) -> Value {
    omit_unset(json!({
        "pipeline_id": r.name,
        "display_name": r.spec["display_name"],
        "name": r.spec["display_name"],
        "description": r.spec["description"],
        "created_at": r.created_at,
        "namespace": r.namespace,
    }))
}

fn version_json(r: &Resource) -> Value {
    omit_unset(json!({
        "pipeline_id": r.spec["pipeline_id"],
        "pipeline_version_id": r.name,
        "display_name": r.spec["display_name"],
        "name": r.spec["display_name"],
        "description": r.spec["description"],
        "created_at": r.created_at,
        "pipeline_spec": r.spec["pipeline_spec"],
    }))
}

/// Validates a package and returns its API form.
pub fn check_package(pkg: &ir::Package) -> Result<ir::Validated, PipelineError> {
    Ok(ir::validate(pkg)?)
}

pub struct NewPipeline {
    pub display_name: Option<String>,
    pub description: Option<String>,
    pub namespace: Option<String>,
}

pub async fn create_pipeline(
    p: &Pipelines,
    caller: &Principal,
    req: NewPipeline,
    pkg: Option<ir::Package>,
) -> Result<Value, PipelineError> {
    let ns = namespace_for(caller, req.namespace.as_deref())?;
    let validated = pkg.as_ref().map(check_package).transpose()?;
    let name = req
        .display_name
        .filter(|s| !s.trim().is_empty())
        .or_else(|| validated.as_ref().map(|v| v.name.clone()))
        .ok_or_else(|| invalid("display_name", "a pipeline needs a name"))?;
    let existing = list_kind(p, pstore::PIPELINE, Some(ns.clone())).await?;
    if existing.iter().any(|r| r.spec["display_name"] == name.as_str()) {
        return Err(PipelineError::Conflict(format!(
            "a pipeline named {name:?} already exists in {ns}"
        )));
    }
    let description = req
        .description
        .or_else(|| validated.as_ref().and_then(|v| v.description.clone()));
    let id = new_id();
    let r = create(
        p,
        pstore::PIPELINE,
        &ns,
        &id,
        json!({"display_name": name, "description": description}),
        json!({}),
    )
    .await?;
    if let Some(pkg) = pkg {
        create_version_inner(p, &r, &name, None, &pkg).await?;
    }
    Ok(pipeline_json(&r))
}

async fn create_version_inner(
    p: &Pipelines,
    pipeline: &Resource,
    name: &str,
    description: Option<String>,
    pkg: &ir::Package,
) -> Result<Value, PipelineError> {
    let versions = list_kind(p, pstore::VERSION, Some(pipeline.namespace.clone())).await?;
    if versions
        .iter()
        .any(|v| v.spec["pipeline_id"] == pipeline.name.as_str() && v.spec["display_name"] == name)
    {
        return Err(PipelineError::Conflict(format!(
            "pipeline version {name:?} already exists"
        )));
    }
    let id = new_id();
    let r = create(
        p,
        pstore::VERSION,
        &pipeline.namespace,
        &id,
        json!({"pipeline_id": pipeline.name, "display_name": name, "description": description, "pipeline_spec": pkg.to_api()}),
        json!({}),
    )
    .await?;
    Ok(version_json(&r))
}

pub async fn create_version(
    p: &Pipelines,
    caller: &Principal,
    pipeline_id: &str,
    name: Option<String>,
    description: Option<String>,
    pkg: ir::Package,
) -> Result<Value, PipelineError> {
    let pipeline = get_authorized(p, caller, pstore::PIPELINE, pipeline_id).await?;
    check_package(&pkg)?;
    let name = name.filter(|s| !s.trim().is_empty()).unwrap_or_else(|| {
        format!(
            "{}-{}",
            pipeline.spec["display_name"].as_str().unwrap_or("v"),
            now_rfc3339()
        )
    });
    create_version_inner(p, &pipeline, &name, description, &pkg).await
}

pub async fn get_pipeline(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    Ok(pipeline_json(
        &get_authorized(p, caller, pstore::PIPELINE, id).await?,
    ))
}

pub async fn get_pipeline_by_name(
    p: &Pipelines,
    caller: &Principal,
    ns: Option<&str>,
    name: &str,
) -> Result<Value, PipelineError> {
    let ns = namespace_for(caller, ns)?;
    list_kind(p, pstore::PIPELINE, Some(ns))
        .await?
        .iter()
        .find(|r| r.spec["display_name"] == name)
        .map(pipeline_json)
        .ok_or_else(|| PipelineError::NotFound(format!("pipeline {name} not found")))
}

pub async fn list_pipelines(
    p: &Pipelines,
    caller: &Principal,
    q: &ListQuery,
) -> Result<Value, PipelineError> {
    let ns = namespace_for(caller, q.namespace.as_deref())?;
    let items = list_kind(p, pstore::PIPELINE, Some(ns))
        .await?
        .iter()
        .map(pipeline_json)
        .collect();
    page(items, q, "pipelines")
}

pub async fn delete_pipeline(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::PIPELINE, id).await?;
    let versions = list_kind(p, pstore::VERSION, Some(r.namespace.clone())).await?;
    if versions.iter().any(|v| v.spec["pipeline_id"] == id) {
        return Err(PipelineError::Conflict(format!(
            "pipeline {id} still has versions; delete them first (as KFP requires)"
        )));
    }
    delete(p, &r.uid).await?;
    Ok(json!({}))
}

pub async fn list_versions(
    p: &Pipelines,
    caller: &Principal,
    pipeline_id: &str,
    q: &ListQuery,
) -> Result<Value, PipelineError> {
    let pipeline = get_authorized(p, caller, pstore::PIPELINE, pipeline_id).await?;
    let items = list_kind(p, pstore::VERSION, Some(pipeline.namespace))
        .await?
        .iter()
        .filter(|v| v.spec["pipeline_id"] == pipeline_id)
        .map(version_json)
        .collect();
    page(items, q, "pipeline_versions")
}

async fn get_version_res(
    p: &Pipelines,
    caller: &Principal,
    pipeline_id: &str,
    version_id: &str,
) -> Result<Resource, PipelineError> {
    let v = get_authorized(p, caller, pstore::VERSION, version_id).await?;
    if v.spec["pipeline_id"] != pipeline_id {
        return Err(PipelineError::NotFound(format!(
            "pipeline version {version_id} not found in pipeline {pipeline_id}"
        )));
    }
    Ok(v)
}

pub async fn get_version(
    p: &Pipelines,
    caller: &Principal,
    pipeline_id: &str,
    version_id: &str,
) -> Result<Value, PipelineError> {
    Ok(version_json(
        &get_version_res(p, caller, pipeline_id, version_id).await?,
    ))
}

pub async fn delete_version(
    p: &Pipelines,
    caller: &Principal,
    pipeline_id: &str,
    version_id: &str,
) -> Result<Value, PipelineError> {
    let v = get_version_res(p, caller, pipeline_id, version_id).await?;
    delete(p, &v.uid).await?;
    Ok(json!({}))
}

// ---------------------------------------------------------------------------------
// Experiments.

fn experiment_json(r: &Resource) -> Value {
    omit_unset(json!({
        "experiment_id": r.name,
        "display_name": r.spec["display_name"],
        "description": r.spec["description"],
        "created_at": r.created_at,
        "namespace": r.namespace,
        "storage_state": r.spec["storage_state"].as_str().unwrap_or("AVAILABLE"),
    }))
}

/// Serializes "is this experiment name free, then insert" across requests: experiment
/// names are unique per namespace in the spec, not in a store key, so without it two
/// concurrent first runs in a namespace both create `Default` (or one gets a 409). One
/// daemon owns a data dir, so a process-wide lock covers every writer.
static EXPERIMENT_NAMES: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn insert_experiment(
    p: &Pipelines,
    ns: &str,
    name: &str,
    description: &Value,
) -> Result<Resource, PipelineError> {
    create(
        p,
        pstore::EXPERIMENT,
        ns,
        &new_id(),
        json!({"display_name": name, "description": description, "storage_state": "AVAILABLE"}),
        json!({}),
    )
    .await
}

pub async fn create_experiment(
    p: &Pipelines,
    caller: &Principal,
    body: &Value,
) -> Result<Value, PipelineError> {
    schema::check_experiment(body)?;
    let ns = namespace_for(caller, body["namespace"].as_str())?;
    let name = body["display_name"]
        .as_str()
        .or_else(|| body["name"].as_str())
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| invalid("display_name", "an experiment needs a display_name"))?;
    let _names = EXPERIMENT_NAMES.lock().await;
    let existing = list_kind(p, pstore::EXPERIMENT, Some(ns.clone())).await?;
    if existing.iter().any(|r| r.spec["display_name"] == name) {
        return Err(PipelineError::Conflict(format!(
            "an experiment named {name:?} already exists in {ns}"
        )));
    }
    let r = insert_experiment(p, &ns, name, &body["description"]).await?;
    Ok(experiment_json(&r))
}

pub async fn list_experiments(
    p: &Pipelines,
    caller: &Principal,
    q: &ListQuery,
) -> Result<Value, PipelineError> {
    let ns = namespace_for(caller, q.namespace.as_deref())?;
    let items = list_kind(p, pstore::EXPERIMENT, Some(ns))
        .await?
        .iter()
        .map(experiment_json)
        .collect();
    page(items, q, "experiments")
}

pub async fn get_experiment(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    Ok(experiment_json(
        &get_authorized(p, caller, pstore::EXPERIMENT, id).await?,
    ))
}

pub async fn delete_experiment(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::EXPERIMENT, id).await?;
    delete(p, &r.uid).await?;
    Ok(json!({}))
}

pub async fn set_experiment_storage(
    p: &Pipelines,
    caller: &Principal,
    id: &str,
    archived: bool,
) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::EXPERIMENT, id).await?;
    let mut spec = r.spec.clone();
    let state = if archived { "ARCHIVED" } else { "AVAILABLE" };
    spec["storage_state"] = json!(state);
    replace_spec(p, &r, spec).await?;
    // Archiving an experiment archives its runs, as KFP does.
    if archived {
        for run in list_kind(p, pstore::RUN, Some(r.namespace.clone())).await? {
            if run.spec["experiment_id"] == id {
                let mut s = run.spec.clone();
                s["storage_state"] = json!("ARCHIVED");
                replace_spec(p, &run, s).await?;
            }
        }
    }
    Ok(json!({}))
}

/// The experiment a run goes into: the given one, or the namespace's `Default`.
async fn experiment_for(
    p: &Pipelines,
    caller: &Principal,
    ns: &str,
    id: Option<&str>,
) -> Result<String, PipelineError> {
    if let Some(id) = id.filter(|s| !s.is_empty()) {
        let e = get_authorized(p, caller, pstore::EXPERIMENT, id).await?;
        if e.namespace != ns {
            return Err(invalid(
                "experiment_id",
                format!("experiment {id} is in namespace {}, not {ns}", e.namespace),
            ));
        }
        return Ok(e.name);
    }
    // Insert-or-get under the name lock: concurrent first runs share one `Default`.
    let _names = EXPERIMENT_NAMES.lock().await;
    let existing = list_kind(p, pstore::EXPERIMENT, Some(ns.to_string())).await?;
    if let Some(e) = existing.iter().find(|e| e.spec["display_name"] == "Default") {
        return Ok(e.name.clone());
    }
    Ok(insert_experiment(p, ns, "Default", &Value::Null).await?.name)
}

// ---------------------------------------------------------------------------------
// Runs.

fn run_json(r: &Resource, details: bool) -> Value {
    let status: RunStatus = serde_json::from_value(r.status.clone()).unwrap_or_default();
    let state = if status.state.is_empty() {
        "PENDING".to_string()
    } else {
        status.state.clone()
    };
    let state = if r.spec["terminate_requested"] == true && !TERMINAL.contains(&state.as_str()) {
        "CANCELING".to_string()
    } else {
        state
    };
    let mut v = json!({
        "run_id": r.name,
        "experiment_id": r.spec["experiment_id"],
        "display_name": r.spec["display_name"],
        "description": r.spec["description"],
        "state": state,
        "storage_state": r.spec["storage_state"].as_str().unwrap_or("AVAILABLE"),
        "created_at": r.created_at,
        "runtime_config": r.spec["runtime_config"],
        "service_account": r.spec["service_account"],
        "namespace": r.namespace,
        "state_history": status.state_history.iter().map(|s| json!({"update_time": s.update_time, "state": s.state})).collect::<Vec<_>>(),
    });
    if let Some(t) = &status.scheduled_at {
        v["scheduled_at"] = json!(t);
    }
    if let Some(t) = &status.finished_at {
        v["finished_at"] = json!(t);
    }
    if let Some(e) = &status.error {
        v["error"] = json!({"code": 2, "message": e});
    }
    if !r.spec["pipeline_version_reference"].is_null() {
        v["pipeline_version_reference"] = r.spec["pipeline_version_reference"].clone();
    } else {
        v["pipeline_spec"] = r.spec["pipeline_spec"].clone();
    }
    if !r.spec["recurring_run_id"].is_null() {
        v["recurring_run_id"] = r.spec["recurring_run_id"].clone();
    }
    if details {
        let mut tasks = Vec::new();
        let mut pending = Vec::new();
        let ids: std::collections::BTreeMap<&String, &String> =
            status.tasks.iter().map(|(path, t)| (path, &t.task_id)).collect();
        let mut children: std::collections::BTreeMap<&str, Vec<Value>> = Default::default();
        for c in status.tasks.values() {
            if let Some(parent) = c.parent.as_deref() {
                children
                    .entry(parent)
                    .or_default()
                    .push(json!({"task_id": c.task_id}));
            }
        }
        for (path, t) in &status.tasks {
            let children = children.remove(path.as_str()).unwrap_or_default();
            let mut d = json!({
                "run_id": r.name,
                "task_id": t.task_id,
                "display_name": t.display_name,
                "create_time": t.create_time,
                "state": t.state,
                "child_tasks": children,
                "hearth_path": path,
                "hearth_kind": t.kind,
                "hearth_cached": t.cached,
                "hearth_attempts": t.attempts,
            });
            if let Some(s) = &t.start_time {
                d["start_time"] = json!(s);
            }
            if let Some(s) = &t.end_time {
                d["end_time"] = json!(s);
            }
            if let Some(e) = &t.error {
                d["error"] = json!({"code": 2, "message": e});
            }
            if let Some(parent) = t.parent.as_ref().and_then(|p| ids.get(p)) {
                d["parent_task_id"] = json!(parent);
            }
            if let Some(w) = &t.workload {
                d["hearth_workload"] = json!(w);
            }
            // Why a step waits: the scheduler's queue, shown where users look.
            if let Some(reason) = t.pending_reason.as_ref().filter(|_| t.state == "PENDING") {
                d["hearth_pending_reason"] = json!(reason);
                pending.push(json!({"task": path, "reason": reason}));
            }
            tasks.push(omit_unset(d));
        }
        v["run_details"] = json!({"task_details": tasks});
        if !pending.is_empty() && !TERMINAL.contains(&v["state"].as_str().unwrap_or_default()) {
            v["hearth"] = json!({"pending": pending});
        }
    }
    omit_unset(v)
}

/// An API object as KFP's server writes it (grpc-gateway with protojson, proto field
/// names, unpopulated fields left out): top-level fields that are unset (`null`) or
/// empty strings are dropped. Nested documents (`pipeline_spec`, `runtime_config`)
/// stay exactly as written.
fn omit_unset(mut v: Value) -> Value {
    if let Value::Object(m) = &mut v {
        m.retain(|_, field| !matches!(field, Value::Null) && field.as_str() != Some(""));
    }
    v
}

/// What a new run (or a recurring run's template) executes.
struct RunSource {
    pipeline_spec: Value,
    version_ref: Value,
    parameters: Map<String, Value>,
}

async fn run_source(p: &Pipelines, caller: &Principal, body: &Value) -> Result<RunSource, PipelineError> {
    let version_ref = body
        .get("pipeline_version_reference")
        .cloned()
        .unwrap_or(Value::Null);
    let pkg = if let Some(spec) = body.get("pipeline_spec").filter(|v| !v.is_null()) {
        if !version_ref.is_null() {
            return Err(invalid(
                "pipeline_spec",
                "give pipeline_spec or pipeline_version_reference, not both",
            ));
        }
        ir::from_api(spec)?
    } else if !version_ref.is_null() {
        let pid = version_ref["pipeline_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let vid = version_ref["pipeline_version_id"]
            .as_str()
            .unwrap_or_default()
            .to_string();
        let v = if vid.is_empty() {
            // The newest version of the pipeline.
            let pipeline = get_authorized(p, caller, pstore::PIPELINE, &pid).await?;
            list_kind(p, pstore::VERSION, Some(pipeline.namespace))
                .await?
                .into_iter()
                .filter(|v| v.spec["pipeline_id"] == pid.as_str())
                .max_by(|a, b| a.created_at.cmp(&b.created_at))
                .ok_or_else(|| PipelineError::NotFound(format!("pipeline {pid} has no versions")))?
        } else {
            get_version_res(p, caller, &pid, &vid).await?
        };
        ir::from_api(&v.spec["pipeline_spec"])?
    } else {
        return Err(invalid(
            "pipeline_spec",
            "a run needs pipeline_spec or pipeline_version_reference",
        ));
    };
    let validated = check_package(&pkg)?;
    let parameters = match &body["runtime_config"]["parameters"] {
        Value::Null => Map::new(),
        Value::Object(m) => m.clone(),
        _ => return Err(invalid("runtime_config.parameters", "must be an object")),
    };
    let defs = &validated.spec.root.input_definitions;
    for (k, v) in &parameters {
        let Some(def) = defs.parameters.get(k) else {
            return Err(invalid(
                &format!("runtime_config.parameters.{k}"),
                "the pipeline has no such input parameter",
            ));
        };
        super::executor::coerce(v.clone(), &def.parameter_type)
            .map_err(|e| invalid(&format!("runtime_config.parameters.{k}"), e))?;
    }
    for (k, def) in &defs.parameters {
        if !parameters.contains_key(k) && def.default_value.is_none() && !def.is_optional {
            return Err(invalid(
                &format!("runtime_config.parameters.{k}"),
                "required input parameter is missing",
            ));
        }
    }
    for (k, def) in &defs.artifacts {
        if !def.is_optional {
            return Err(invalid(
                &format!("runtime_config.parameters.{k}"),
                "pipeline input artifacts cannot be given to a run; use an importer",
            ));
        }
    }
    if let Some(root) = body["runtime_config"]["pipeline_root"]
        .as_str()
        .filter(|s| !s.is_empty())
    {
        return Err(PipelineError::Ir(IrError::Unsupported {
            feature: "runtime_config.pipeline_root".into(),
            detail: format!("{root}: Hearth keeps artifacts under its data dir"),
        }));
    }
    Ok(RunSource {
        pipeline_spec: pkg.to_api(),
        version_ref,
        parameters,
    })
}

/// The SDK's `enable_caching` is compiled into each task; the API has no run-level
/// switch, so Hearth reads it from the tasks' `cachingOptions` as written.
pub async fn create_run(p: &Pipelines, caller: &Principal, body: &Value) -> Result<Value, PipelineError> {
    schema::check_run(body)?;
    let requested_ns = body["namespace"].as_str();
    let ns = if requested_ns.is_none_or(str::is_empty) {
        match body["experiment_id"].as_str().filter(|s| !s.is_empty()) {
            Some(eid) => {
                get_authorized(p, caller, pstore::EXPERIMENT, eid)
                    .await?
                    .namespace
            }
            None => namespace_for(caller, None)?,
        }
    } else {
        namespace_for(caller, requested_ns)?
    };
    let src = run_source(p, caller, body).await?;
    let experiment_id = experiment_for(p, caller, &ns, body["experiment_id"].as_str()).await?;
    let display_name = body["display_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .unwrap_or("run")
        .to_string();
    let r = create_run_resource(p, &ns, &experiment_id, &display_name, body, src, Value::Null).await?;
    Ok(run_json(&r, false))
}

async fn create_run_resource(
    p: &Pipelines,
    ns: &str,
    experiment_id: &str,
    display_name: &str,
    body: &Value,
    src: RunSource,
    recurring: Value,
) -> Result<Resource, PipelineError> {
    let spec = json!({
        "display_name": display_name,
        "description": body["description"],
        "experiment_id": experiment_id,
        "pipeline_spec": src.pipeline_spec,
        "pipeline_version_reference": src.version_ref,
        "runtime_config": {"parameters": src.parameters},
        "service_account": body["service_account"],
        "storage_state": "AVAILABLE",
        "recurring_run_id": recurring,
    });
    let status =
        json!({"state": "PENDING", "state_history": [{"update_time": now_rfc3339(), "state": "PENDING"}]});
    let r = create(p, pstore::RUN, ns, &new_id(), spec, status).await?;
    p.controller.wake();
    Ok(r)
}

pub async fn list_runs(p: &Pipelines, caller: &Principal, q: &ListQuery) -> Result<Value, PipelineError> {
    let items: Vec<Value> = match q.experiment_id.as_deref().filter(|s| !s.is_empty()) {
        Some(eid) => {
            let e = get_authorized(p, caller, pstore::EXPERIMENT, eid).await?;
            list_kind(p, pstore::RUN, Some(e.namespace))
                .await?
                .iter()
                .filter(|r| r.spec["experiment_id"] == eid)
                .map(|r| run_json(r, false))
                .collect()
        }
        None => {
            let ns = namespace_for(caller, q.namespace.as_deref())?;
            list_kind(p, pstore::RUN, Some(ns))
                .await?
                .iter()
                .map(|r| run_json(r, false))
                .collect()
        }
    };
    page(items, q, "runs")
}

pub async fn get_run(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    Ok(run_json(&get_authorized(p, caller, pstore::RUN, id).await?, true))
}

pub async fn terminate_run(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RUN, id).await?;
    let state = r.status["state"].as_str().unwrap_or("PENDING");
    if TERMINAL.contains(&state) {
        return Ok(json!({}));
    }
    let mut spec = r.spec.clone();
    spec["terminate_requested"] = json!(true);
    replace_spec(p, &r, spec).await?;
    p.controller.cancel(id);
    Ok(json!({}))
}

/// Retries a failed or canceled run: finished tasks keep their outputs; failed ones
/// run again.
pub async fn retry_run(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RUN, id).await?;
    let mut status: RunStatus = serde_json::from_value(r.status.clone()).unwrap_or_default();
    if !["FAILED", "CANCELED"].contains(&status.state.as_str()) {
        return Err(PipelineError::Conflict(format!(
            "run {id} is {}; only failed or canceled runs are retried",
            status.state
        )));
    }
    status
        .tasks
        .retain(|_, t| t.state == "SUCCEEDED" || (t.state == "SKIPPED" && t.error.is_none()));
    status.error = None;
    status.finished_at = None;
    status.set_state("PENDING");
    let mut spec = r.spec.clone();
    spec["terminate_requested"] = json!(false);
    // Steps run again as new workloads: their ids carry the generation.
    spec["retry_generation"] = json!(spec["retry_generation"].as_u64().unwrap_or(0).saturating_add(1));
    replace_spec(p, &r, spec).await?;
    let uid = r.uid.clone();
    let st = serde_json::to_value(&status).map_err(|e| PipelineError::Store(StoreError::Json(e)))?;
    p.store
        .call(move |conn| resources::update_status(conn, &uid, &st, None))
        .await?;
    p.controller.wake();
    Ok(json!({}))
}

pub async fn set_run_storage(
    p: &Pipelines,
    caller: &Principal,
    id: &str,
    archived: bool,
) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RUN, id).await?;
    let mut spec = r.spec.clone();
    spec["storage_state"] = json!(if archived { "ARCHIVED" } else { "AVAILABLE" });
    replace_spec(p, &r, spec).await?;
    Ok(json!({}))
}

pub async fn delete_run(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RUN, id).await?;
    delete(p, &r.uid).await?;
    // After the delete, so a driver starting meanwhile cannot outlive the cleanup.
    p.controller.run_deleted(&r.uid, &r.namespace, &r.name);
    Ok(json!({}))
}

// ---------------------------------------------------------------------------------
// Recurring runs.

pub fn recurring_json(r: &Resource) -> Value {
    let mut v = r.spec.clone();
    v["recurring_run_id"] = json!(r.name);
    v["namespace"] = json!(r.namespace);
    v["created_at"] = json!(r.created_at);
    v["updated_at"] = json!(r.updated_at);
    let mode = r.spec["mode"].as_str().unwrap_or("ENABLE");
    v["status"] = json!(if mode == "DISABLE" { "DISABLED" } else { "ENABLED" });
    if let Some(e) = r.status["error"].as_str() {
        v["error"] = json!(e);
    }
    omit_unset(v)
}

pub async fn create_recurring_run(
    p: &Pipelines,
    caller: &Principal,
    body: &Value,
) -> Result<Value, PipelineError> {
    schema::check_recurring_run(body)?;
    let ns = match body["experiment_id"].as_str().filter(|s| !s.is_empty()) {
        Some(eid) if body["namespace"].as_str().is_none_or(str::is_empty) => {
            get_authorized(p, caller, pstore::EXPERIMENT, eid)
                .await?
                .namespace
        }
        _ => namespace_for(caller, body["namespace"].as_str())?,
    };
    let src = run_source(p, caller, body).await?;
    let experiment_id = experiment_for(p, caller, &ns, body["experiment_id"].as_str()).await?;
    let trigger = super::schedule::Trigger::parse(&body["trigger"])?;
    // recurring_run.proto keeps the times in the trigger's schedule; a top-level
    // `start_time`/`end_time` is taken too when the schedule has none.
    let mut start = super::schedule::time_field(body, "start_time")?;
    let mut end = super::schedule::time_field(body, "end_time")?;
    for sub in ["cron_schedule", "periodic_schedule"] {
        if let Some(inner) = body["trigger"].get(sub).filter(|s| !s.is_null()) {
            let field = |key: &str| {
                super::schedule::time_field(inner, key).map_err(|e| match e {
                    PipelineError::Invalid { detail, .. } => invalid(&format!("trigger.{sub}.{key}"), detail),
                    other => other,
                })
            };
            start = field("start_time")?.or(start);
            end = field("end_time")?.or(end);
        }
    }
    // Range [1-10], as recurring_run.proto documents it.
    let max_concurrency =
        protojson::int_in(body, "max_concurrency", "", 1, schedule::MAX_CONCURRENCY)?.unwrap_or(1);
    let mode = body["mode"].as_str().unwrap_or("ENABLE");
    if !["ENABLE", "DISABLE", "MODE_UNSPECIFIED"].contains(&mode) {
        return Err(invalid("mode", format!("unknown mode {mode}")));
    }
    let display_name = body["display_name"]
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| invalid("display_name", "a recurring run needs a display_name"))?;
    let spec = json!({
        "display_name": display_name,
        "description": body["description"],
        "experiment_id": experiment_id,
        "pipeline_spec": src.pipeline_spec,
        "pipeline_version_reference": src.version_ref,
        "runtime_config": {"parameters": src.parameters},
        "service_account": body["service_account"],
        "trigger": trigger.to_json(start.as_deref(), end.as_deref()),
        "max_concurrency": max_concurrency.to_string(),
        "no_catchup": body["no_catchup"].as_bool().unwrap_or(false),
        "mode": if mode == "DISABLE" { "DISABLE" } else { "ENABLE" },
    });
    let status = json!({"last_fire": now_rfc3339()});
    let r = create(p, pstore::RECURRING, &ns, &new_id(), spec, status).await?;
    p.controller.wake();
    Ok(recurring_json(&r))
}

pub async fn list_recurring_runs(
    p: &Pipelines,
    caller: &Principal,
    q: &ListQuery,
) -> Result<Value, PipelineError> {
    let items: Vec<Value> = match q.experiment_id.as_deref().filter(|s| !s.is_empty()) {
        Some(eid) => {
            let e = get_authorized(p, caller, pstore::EXPERIMENT, eid).await?;
            list_kind(p, pstore::RECURRING, Some(e.namespace))
                .await?
                .iter()
                .filter(|r| r.spec["experiment_id"] == eid)
                .map(recurring_json)
                .collect()
        }
        None => {
            let ns = namespace_for(caller, q.namespace.as_deref())?;
            list_kind(p, pstore::RECURRING, Some(ns))
                .await?
                .iter()
                .map(recurring_json)
                .collect()
        }
    };
    page(items, q, "recurring_runs")
}

pub async fn get_recurring_run(p: &Pipelines, caller: &Principal, id: &str) -> Result<Value, PipelineError> {
    Ok(recurring_json(
        &get_authorized(p, caller, pstore::RECURRING, id).await?,
    ))
}

pub async fn set_recurring_mode(
    p: &Pipelines,
    caller: &Principal,
    id: &str,
    enable: bool,
) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RECURRING, id).await?;
    let mut spec = r.spec.clone();
    spec["mode"] = json!(if enable { "ENABLE" } else { "DISABLE" });
    replace_spec(p, &r, spec).await?;
    if enable {
        // Enabling starts the clock now: missed fires while disabled are not made up.
        let uid = r.uid.clone();
        let st = json!({"last_fire": now_rfc3339()});
        p.store
            .call(move |conn| resources::update_status(conn, &uid, &st, None))
            .await?;
    }
    p.controller.wake();
    Ok(json!({}))
}

pub async fn delete_recurring_run(
    p: &Pipelines,
    caller: &Principal,
    id: &str,
) -> Result<Value, PipelineError> {
    let r = get_authorized(p, caller, pstore::RECURRING, id).await?;
    delete(p, &r.uid).await?;
    Ok(json!({}))
}

/// Starts one run of a recurring run (called by the schedule loop).
pub async fn fire_recurring(p: &Pipelines, rr: &Resource, at: &str) -> Result<(), PipelineError> {
    let src = RunSource {
        pipeline_spec: rr.spec["pipeline_spec"].clone(),
        version_ref: rr.spec["pipeline_version_reference"].clone(),
        parameters: rr.spec["runtime_config"]["parameters"]
            .as_object()
            .cloned()
            .unwrap_or_default(),
    };
    let name = format!("{}-{}", rr.spec["display_name"].as_str().unwrap_or("run"), at);
    let experiment_id = rr.spec["experiment_id"].as_str().unwrap_or_default().to_string();
    create_run_resource(
        p,
        &rr.namespace,
        &experiment_id,
        &name,
        &rr.spec,
        src,
        json!(rr.name),
    )
    .await?;
    Ok(())
}

// ---------------------------------------------------------------------------------
// Hearth routes: task outputs, logs and artifacts.

pub struct TaskView {
    pub record: super::controller::TaskRecord,
    /// The run's namespace.
    pub namespace: String,
}

pub async fn task(
    p: &Pipelines,
    caller: &Principal,
    run_id: &str,
    task_id: &str,
) -> Result<TaskView, PipelineError> {
    let run = get_authorized(p, caller, pstore::RUN, run_id).await?;
    let status: RunStatus = serde_json::from_value(run.status.clone()).unwrap_or_default();
    let record = status
        .tasks
        .values()
        .find(|t| t.task_id == task_id)
        .cloned()
        .ok_or_else(|| PipelineError::NotFound(format!("task {task_id} not found in run {run_id}")))?;
    Ok(TaskView {
        record,
        namespace: run.namespace.clone(),
    })
}

pub async fn task_outputs(
    p: &Pipelines,
    caller: &Principal,
    run_id: &str,
    task_id: &str,
) -> Result<Value, PipelineError> {
    let t = task(p, caller, run_id, task_id).await?;
    Ok(json!({
        "task_id": t.record.task_id,
        "display_name": t.record.display_name,
        "state": t.record.state,
        "cached": t.record.cached,
        "attempts": t.record.attempts,
        "inputs": t.record.inputs,
        "outputs": t.record.outputs,
    }))
}

pub async fn task_log(
    p: &Pipelines,
    caller: &Principal,
    run_id: &str,
    task_id: &str,
) -> Result<Vec<u8>, PipelineError> {
    let t = task(p, caller, run_id, task_id).await?;
    let Some(workload) = t.record.workload else {
        return Err(PipelineError::NotFound(format!(
            "task {task_id} has no log (it ran no process)"
        )));
    };
    let files = match p.controller.inner.scheduler.log_files(&workload).await {
        Ok(files) => files,
        Err(SchedulerError::NotFound(_) | SchedulerError::Runtime(RuntimeError::NotFound(_))) => Vec::new(),
        Err(e) => return Err(PipelineError::Scheduler(e)),
    };
    let mut out = Vec::new();
    for file in files {
        match std::fs::read(&file) {
            Ok(bytes) => out.extend(bytes),
            // Rotated away between listing and reading.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(PipelineError::NotFound(format!("log of task {task_id}: {e}"))),
        }
    }
    Ok(out)
}

/// An output artifact's file, checked to lie under the data dir's artifact tree (or
/// be an imported local file the run recorded), so no path escapes.
pub async fn artifact_file(
    p: &Pipelines,
    caller: &Principal,
    run_id: &str,
    task_id: &str,
    name: &str,
    rel: Option<&str>,
) -> Result<PathBuf, PipelineError> {
    let t = task(p, caller, run_id, task_id).await?;
    let artifact = t
        .record
        .outputs
        .artifacts
        .get(name)
        .and_then(|l| l.first())
        .ok_or_else(|| PipelineError::NotFound(format!("task {task_id} has no output artifact {name}")))?;
    // The run's own namespace's tree: a step may rewrite its artifact's uri (in
    // executor_output.json) to another namespace's artifact.
    let root = p
        .data_dir
        .join("artifacts")
        .join(super::executor::sanitize(&t.namespace));
    let base = PathBuf::from(&artifact.uri);
    if !super::executor::under(&root, &base) {
        return Err(PipelineError::NotFound(format!(
            "artifact {name} is not stored by Hearth ({})",
            artifact.uri
        )));
    }
    let file = match rel.filter(|r| !r.is_empty()) {
        Some(r) => {
            let joined = base.join(r);
            if std::path::Path::new(r).is_absolute() || !super::executor::under(&base, &joined) {
                return Err(invalid("path", "must stay inside the artifact"));
            }
            joined
        }
        None => base.clone(),
    };
    let canonical = file
        .canonicalize()
        .map_err(|e| PipelineError::NotFound(format!("artifact file: {e}")))?;
    let root_c = root
        .canonicalize()
        .map_err(|e| PipelineError::NotFound(format!("artifact root: {e}")))?;
    let base_c = base
        .canonicalize()
        .map_err(|e| PipelineError::NotFound(format!("artifact {name}: {e}")))?;
    // Resolved, not only lexically: a symlink a step left inside its artifact may
    // point at another run's (or namespace's) artifacts, still under the store.
    if !base_c.starts_with(&root_c) || !canonical.starts_with(&base_c) {
        return Err(invalid("path", "must stay inside the artifact"));
    }
    if canonical.is_dir() {
        return Err(invalid(
            "path",
            "is a directory; name a file inside it with ?path=",
        ));
    }
    Ok(canonical)
}
