//! Discovery, built from the kind registry: `/api` (`APIVersions`), `/apis`
//! (`APIGroupList`), `/apis/{group}` (`APIGroup`) and `/apis/{group}/{version}` and
//! `/api/v1` (`APIResourceList`).
//!
//! kubectl 1.35 first asks for aggregated discovery (`Accept:
//! application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,...,
//! application/json`); client-go takes an answer whose `Content-Type` is plain
//! `application/json` as the unaggregated form and reads each group version in turn,
//! so these documents are always answered as plain JSON.

use actix_web::{get, HttpResponse};
use serde_json::{json, Value};

use super::kinds::{self, KindDef, KINDS};
use crate::http::errors::ApiError;

fn group_version(kind: &KindDef) -> Value {
    json!({"groupVersion": kind.api_version(), "version": kind.version})
}

/// Kubernetes' version priority (`k8s.io/apimachinery` `CompareKubeAwareVersionStrings`):
/// GA before beta before alpha, higher numbers first. Smaller sorts first.
fn version_priority(version: &str) -> (u8, i64, i64) {
    let digits = |s: &str| -> i64 { s.parse().unwrap_or(0) };
    let Some(rest) = version.strip_prefix('v') else {
        return (3, 0, 0);
    };
    let split = rest.find(|c: char| !c.is_ascii_digit()).unwrap_or(rest.len());
    let (major, tail) = rest.split_at(split);
    match tail {
        "" => (0, -digits(major), 0),
        t if t.starts_with("beta") => (1, -digits(major), -digits(&t[4..])),
        t if t.starts_with("alpha") => (2, -digits(major), -digits(&t[5..])),
        _ => (3, 0, 0),
    }
}

fn api_group(group: &str) -> Option<Value> {
    let mut kinds: Vec<&KindDef> = KINDS.iter().copied().filter(|k| k.group == group).collect();
    // As the API server lists a group's versions: the preferred (highest priority)
    // first (kubeflow.org: Notebook's v1 before Katib's v1beta1).
    kinds.sort_by_key(|k| version_priority(k.version));
    let first = kinds.first()?;
    let mut versions: Vec<Value> = Vec::new();
    for kind in &kinds {
        let gv = group_version(kind);
        if !versions.contains(&gv) {
            versions.push(gv);
        }
    }
    Some(json!({
        "name": group,
        "versions": versions,
        "preferredVersion": group_version(first),
    }))
}

/// The `APIResource` entries of one kind: the resource, and its `status`
/// subresource.
fn resources_of(kind: &KindDef) -> Vec<Value> {
    let mut entry = json!({
        "name": kind.plural,
        "singularName": kind.singular,
        "namespaced": kind.namespaced,
        "kind": kind.kind,
        "verbs": kind.verbs,
        "categories": kind.categories,
    });
    if !kind.short_names.is_empty() {
        entry["shortNames"] = json!(kind.short_names);
    }
    let mut out = vec![entry];
    if kind.status_subresource {
        out.push(json!({
            "name": format!("{}/status", kind.plural),
            "singularName": "",
            "namespaced": kind.namespaced,
            "kind": kind.kind,
            "verbs": ["get", "patch", "update"],
        }));
    }
    out
}

fn resource_list(group_version: &str) -> Value {
    let resources: Vec<Value> = KINDS
        .iter()
        .filter(|k| k.api_version() == group_version)
        .flat_map(|k| resources_of(k))
        .collect();
    json!({
        "kind": "APIResourceList",
        "apiVersion": "v1",
        "groupVersion": group_version,
        "resources": resources,
    })
}

/// `APIVersions` of the core group.
#[utoipa::path(tag = "kubernetes", operation_id = "getCoreAPIVersions", responses((status = 200, description = "APIVersions", body = crate::kube::upstream_schema::V1APIVersions)))]
#[get("/api")]
async fn core_versions() -> HttpResponse {
    HttpResponse::Ok().json(json!({
        "kind": "APIVersions",
        "versions": ["v1"],
        "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}],
    }))
}

/// `APIResourceList` of the core group `v1`: its read-only views.
#[utoipa::path(tag = "kubernetes", operation_id = "getCoreV1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/api/v1")]
async fn core_resources() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("v1"))
}

/// `APIGroupList`: every group of the kind registry.
#[utoipa::path(tag = "kubernetes", operation_id = "getAPIVersions", responses((status = 200, description = "APIGroupList", body = crate::kube::upstream_schema::V1APIGroupList)))]
#[get("/apis")]
async fn groups() -> HttpResponse {
    let groups: Vec<Value> = kinds::groups().filter_map(api_group).collect();
    HttpResponse::Ok().json(json!({"kind": "APIGroupList", "apiVersion": "v1", "groups": groups}))
}

fn group_answer(group: &str) -> Result<HttpResponse, ApiError> {
    let mut doc = api_group(group).ok_or_else(|| ApiError::NotFound(format!("no API group {group}")))?;
    doc["kind"] = json!("APIGroup");
    doc["apiVersion"] = json!("v1");
    Ok(HttpResponse::Ok().json(doc))
}

/// `APIGroup` `batch`.
#[utoipa::path(tag = "kubernetes", operation_id = "getBatchAPIGroup", responses((status = 200, description = "APIGroup", body = crate::kube::upstream_schema::V1APIGroup)))]
#[get("/apis/batch")]
async fn batch_group() -> Result<HttpResponse, ApiError> {
    group_answer("batch")
}

/// `APIResourceList` of `batch/v1`.
#[utoipa::path(tag = "kubernetes", operation_id = "getBatchV1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/apis/batch/v1")]
async fn batch_v1() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("batch/v1"))
}

/// `APIGroup` `serving.kserve.io`.
#[utoipa::path(tag = "kubernetes", operation_id = "getServingKserveIoAPIGroup", responses((status = 200, description = "APIGroup", body = crate::kube::upstream_schema::V1APIGroup)))]
#[get("/apis/serving.kserve.io")]
async fn kserve_group() -> Result<HttpResponse, ApiError> {
    group_answer("serving.kserve.io")
}

/// `APIResourceList` of `serving.kserve.io/v1beta1`.
#[utoipa::path(tag = "kubernetes", operation_id = "getServingKserveIoV1beta1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/apis/serving.kserve.io/v1beta1")]
async fn kserve_v1beta1() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("serving.kserve.io/v1beta1"))
}

/// `APIResourceList` of `serving.kserve.io/v1alpha1` (`clusterservingruntimes`).
#[utoipa::path(tag = "kubernetes", operation_id = "getServingKserveIoV1alpha1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/apis/serving.kserve.io/v1alpha1")]
async fn kserve_v1alpha1() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("serving.kserve.io/v1alpha1"))
}

/// `APIGroup` `kubeflow.org` (Katib's kinds and Notebooks).
#[utoipa::path(tag = "kubernetes", operation_id = "getKubeflowOrgAPIGroup", responses((status = 200, description = "APIGroup", body = crate::kube::upstream_schema::V1APIGroup)))]
#[get("/apis/kubeflow.org")]
async fn kubeflow_group() -> Result<HttpResponse, ApiError> {
    group_answer("kubeflow.org")
}

/// `APIResourceList` of `kubeflow.org/v1beta1` (experiments, trials, suggestions).
#[utoipa::path(tag = "kubernetes", operation_id = "getKubeflowOrgV1beta1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/apis/kubeflow.org/v1beta1")]
async fn kubeflow_v1beta1() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("kubeflow.org/v1beta1"))
}

/// `APIResourceList` of `kubeflow.org/v1` (notebooks).
#[utoipa::path(tag = "kubernetes", operation_id = "getKubeflowOrgV1APIResources", responses((status = 200, description = "APIResourceList", body = crate::kube::upstream_schema::V1APIResourceList)))]
#[get("/apis/kubeflow.org/v1")]
async fn kubeflow_v1() -> HttpResponse {
    HttpResponse::Ok().json(resource_list("kubeflow.org/v1"))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(core_versions)
        .service(core_resources)
        .service(groups)
        .service(batch_group)
        .service(batch_v1)
        .service(kserve_group)
        .service(kserve_v1beta1)
        .service(kserve_v1alpha1)
        .service(kubeflow_group)
        .service(kubeflow_v1beta1)
        .service(kubeflow_v1);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn discovery_lists_every_kind_with_its_status_subresource() {
        let batch = resource_list("batch/v1");
        let names: Vec<&str> = batch["resources"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["jobs", "jobs/status"]);
        let kubeflow = api_group("kubeflow.org").unwrap();
        assert_eq!(kubeflow["preferredVersion"]["version"], "v1");
        assert_eq!(kubeflow["versions"][1]["version"], "v1beta1");
        let kserve_doc = api_group("serving.kserve.io").unwrap();
        assert_eq!(kserve_doc["preferredVersion"]["version"], "v1beta1");
        assert!(version_priority("v1") < version_priority("v2beta1"));
        assert!(version_priority("v1beta2") < version_priority("v1beta1"));
        assert!(version_priority("v1beta1") < version_priority("v1alpha1"));
        let kserve = resource_list("serving.kserve.io/v1beta1");
        assert_eq!(kserve["resources"][0]["shortNames"], json!(["isvc"]));
        assert_eq!(kserve["resources"][0]["categories"], json!(["all"]));
    }
}
