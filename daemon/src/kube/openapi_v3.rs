//! The OpenAPI v3 documents kubectl reads (`k8s.io/client-go/openapi`): the index
//! `/openapi/v3` (`{"paths": {"apis/batch/v1": {"serverRelativeURL": ...}}}`) and one
//! OpenAPI 3.0 document per group version, with each kind's paths and its schema in
//! `components.schemas`, both tagged `x-kubernetes-group-version-kind` as the API
//! server tags them.
//!
//! What kubectl 1.35 does with them (k8s.io/kubectl `factory_client_access.go`,
//! k8s.io/cli-runtime `query_param_verifier_v3.go`): `apply`/`create` look for the
//! `fieldValidation` query parameter on the kind's PATCH operation; found, kubectl
//! sends `fieldValidation=Strict` and leaves validation to the server (Hearth refuses
//! every field it does not honour, naming it), with no client-side pass. Without
//! these documents kubectl falls back to `/openapi/v2`, which it reads as protobuf
//! only, and fails unless `--validate=false`. `kubectl explain` finds the kind by
//! the GVK of the operations on its paths, then the schema carrying the same GVK, and
//! prints its descriptions. `/openapi/v2` is not served (kubectl 1.35 uses it only as
//! that fallback and for `explain --output plaintext-openapiv2`).

use actix_web::{get, web, HttpResponse};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::kinds::{KindDef, KINDS};
use super::schema;
use crate::http::errors::ApiError;

/// `api/v1` for the core group, `apis/{group}/{version}` otherwise: the index's keys.
fn group_version_path(kind: &KindDef) -> String {
    if kind.group.is_empty() {
        format!("api/{}", kind.version)
    } else {
        format!("apis/{}/{}", kind.group, kind.version)
    }
}

fn parameter(name: &str, location: &str, description: &str) -> Value {
    json!({
        "name": name,
        "in": location,
        "description": description,
        "required": location == "path",
        "schema": {"type": "string", "uniqueItems": true},
    })
}

fn write_parameters() -> Vec<Value> {
    vec![
        parameter("dryRun", "query", "All: check everything, store nothing."),
        parameter(
            "fieldValidation",
            "query",
            "Strict, Warn or Ignore; Hearth refuses every field it does not honour whatever the mode, naming it.",
        ),
        parameter("fieldManager", "query", "Accepted and without effect."),
    ]
}

fn delete_parameters() -> Vec<Value> {
    vec![
        parameter("dryRun", "query", "All: check, delete nothing."),
        parameter(
            "propagationPolicy",
            "query",
            "Background (the default), Foreground or Orphan: whether the object's dependents (objects whose ownerReferences name it) are deleted after it, before it, or kept without the reference.",
        ),
        parameter(
            "orphanDependents",
            "query",
            "Deprecated: true is propagationPolicy=Orphan, false is Background.",
        ),
        parameter(
            "gracePeriodSeconds",
            "query",
            "Accepted: the grace period of the workloads' configured stop applies.",
        ),
    ]
}

/// `DeleteOptions` (meta/v1) as a DELETE's optional body.
fn delete_options_body() -> Value {
    let string = |description: &str| json!({"type": "string", "description": description});
    let schema = json!({
        "type": "object",
        "description": "DeleteOptions: the query parameters of a delete, sent as its body (kubectl delete does).",
        "properties": {
            "apiVersion": string("v1"),
            "kind": string("DeleteOptions"),
            "dryRun": {"type": "array", "items": {"type": "string"}, "description": "[All]: check, delete nothing."},
            "propagationPolicy": string("Background, Foreground or Orphan."),
            "orphanDependents": {"type": "boolean", "description": "Deprecated form of propagationPolicy."},
            "gracePeriodSeconds": {"type": "integer", "format": "int64", "description": "Accepted: the workloads' configured stop applies."},
            "preconditions": {
                "type": "object",
                "description": "Delete only the object with this uid and/or resourceVersion (else 409 Conflict).",
                "properties": {"uid": string("The object's metadata.uid."), "resourceVersion": string("The object's metadata.resourceVersion.")},
            },
        },
    });
    json!({"content": {"application/json": {"schema": schema}}, "required": false})
}

/// One operation of a kind, tagged with its GVK and Kubernetes action.
fn operation(kind: &KindDef, action: &str, id: &str, parameters: Vec<Value>, body: bool) -> Value {
    let reference = json!({"$ref": format!("#/components/schemas/{}", schema::schema_name(kind))});
    let mut op = json!({
        "operationId": format!("{id}{}", kind.kind),
        "parameters": parameters,
        "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": reference}}}},
        "x-kubernetes-action": action,
        "x-kubernetes-group-version-kind": {"group": kind.group, "version": kind.version, "kind": kind.kind},
    });
    if body {
        let media = if action == "patch" {
            json!({
                "application/merge-patch+json": {"schema": {"type": "object"}},
                "application/strategic-merge-patch+json": {"schema": {"type": "object"}},
            })
        } else {
            json!({"application/json": {"schema": reference}, "application/yaml": {"schema": reference}})
        };
        op["requestBody"] = json!({"content": media, "required": true});
    }
    op
}

/// The paths of one kind, as the API server lists them in its group version's document.
fn kind_paths(kind: &KindDef, paths: &mut Map<String, Value>) {
    let prefix = format!("/{}", group_version_path(kind));
    let scoped = if kind.namespaced {
        format!("{prefix}/namespaces/{{namespace}}/{}", kind.plural)
    } else {
        format!("{prefix}/{}", kind.plural)
    };
    let namespace = || {
        if kind.namespaced {
            vec![parameter("namespace", "path", "The object's namespace.")]
        } else {
            Vec::new()
        }
    };
    let with = |mut first: Vec<Value>, rest: Vec<Value>| {
        first.extend(rest);
        first
    };
    let name = || vec![parameter("name", "path", "The object's name.")];
    let writes = kind.verbs.contains(&"create");
    let mut collection = Map::new();
    collection.insert(
        "get".into(),
        operation(
            kind,
            "list",
            if kind.namespaced { "listNamespaced" } else { "list" },
            namespace(),
            false,
        ),
    );
    if writes {
        collection.insert(
            "post".into(),
            operation(
                kind,
                "post",
                "createNamespaced",
                with(namespace(), write_parameters()),
                true,
            ),
        );
    }
    paths.insert(scoped.clone(), Value::Object(collection));
    let mut item = Map::new();
    item.insert(
        "get".into(),
        operation(kind, "get", "readNamespaced", with(namespace(), name()), false),
    );
    if writes {
        let item_writes = || with(with(namespace(), name()), write_parameters());
        item.insert(
            "put".into(),
            operation(kind, "put", "replaceNamespaced", item_writes(), true),
        );
        item.insert(
            "patch".into(),
            operation(kind, "patch", "patchNamespaced", item_writes(), true),
        );
        let mut delete = operation(
            kind,
            "delete",
            "deleteNamespaced",
            with(with(namespace(), name()), delete_parameters()),
            false,
        );
        delete["requestBody"] = delete_options_body();
        item.insert("delete".into(), delete);
    }
    paths.insert(format!("{scoped}/{{name}}"), Value::Object(item));
    if kind.namespaced {
        paths.insert(
            format!("{prefix}/{}", kind.plural),
            json!({"get": operation(kind, "list", "listForAllNamespaces", Vec::new(), false)}),
        );
    }
}

/// The OpenAPI 3.0 document of one group version (`apis/batch/v1`), or `None` when no
/// kind is served there.
pub fn group_version_document(path: &str) -> Option<Value> {
    let kinds: Vec<&KindDef> = KINDS
        .iter()
        .copied()
        .filter(|k| group_version_path(k) == path)
        .collect();
    if kinds.is_empty() {
        return None;
    }
    let mut paths = Map::new();
    let mut schemas = Map::new();
    for kind in kinds {
        kind_paths(kind, &mut paths);
        schemas.insert(schema::schema_name(kind), (kind.schema)(kind));
    }
    Some(json!({
        "openapi": "3.0.0",
        "info": {"title": "Hearth", "version": env!("CARGO_PKG_VERSION")},
        "paths": paths,
        "components": {"schemas": schemas},
    }))
}

/// The index: each group version's document, addressed with the hash of its content
/// so that kubectl's cache sees a change.
pub fn index() -> Value {
    let mut paths = Map::new();
    for kind in KINDS {
        let path = group_version_path(kind);
        if paths.contains_key(&path) {
            continue;
        }
        let Some(document) = group_version_document(&path) else {
            continue;
        };
        let hash = hex::encode(Sha256::digest(document.to_string().as_bytes()));
        paths.insert(
            path.clone(),
            json!({"serverRelativeURL": format!("/openapi/v3/{path}?hash={}", hash.to_uppercase())}),
        );
    }
    json!({"paths": paths})
}

/// The OpenAPI v3 index kubectl reads first (`k8s.io/client-go/openapi` `Paths`).
#[utoipa::path(operation_id = "get_openapi_v3_index", tag = "kubernetes", responses((status = 200, description = "The index of group-version documents", body = crate::kube::upstream_schema::OpenAPIV3Discovery)))]
#[get("/openapi/v3")]
async fn openapi_v3_index() -> HttpResponse {
    HttpResponse::Ok().json(index())
}

fn answer(path: &str) -> Result<HttpResponse, ApiError> {
    let document = group_version_document(path)
        .ok_or_else(|| ApiError::NotFound(format!("no OpenAPI v3 document for {path}")))?;
    Ok(HttpResponse::Ok().json(document))
}

/// The OpenAPI 3.0 document of a named group's version (`/openapi/v3/apis/batch/v1`).
#[utoipa::path(operation_id = "get_openapi_v3_group", tag = "kubernetes",
    params(("group" = String, Path), ("version" = String, Path)),
    responses((status = 200, description = "OpenAPI 3.0 document of the group version", body = crate::kube::upstream_schema::OpenAPIV3Document)))]
#[get("/openapi/v3/apis/{group}/{version}")]
async fn openapi_v3_group(path: web::Path<(String, String)>) -> Result<HttpResponse, ApiError> {
    let (group, version) = path.into_inner();
    answer(&format!("apis/{group}/{version}"))
}

/// The OpenAPI 3.0 document of the core group's version (`/openapi/v3/api/v1`).
#[utoipa::path(operation_id = "get_openapi_v3_core", tag = "kubernetes",
    params(("version" = String, Path)),
    responses((status = 200, description = "OpenAPI 3.0 document of the core group version", body = crate::kube::upstream_schema::OpenAPIV3Document)))]
#[get("/openapi/v3/api/{version}")]
async fn openapi_v3_core(version: web::Path<String>) -> Result<HttpResponse, ApiError> {
    answer(&format!("api/{}", version.into_inner()))
}

pub fn routes(cfg: &mut crate::http::routing::Routes) {
    cfg.service(openapi_v3_index)
        .service(openapi_v3_group)
        .service(openapi_v3_core);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_patch_operation_offers_field_validation_so_kubectl_validates_on_the_server() {
        let doc = group_version_document("apis/batch/v1").unwrap();
        let patch = &doc["paths"]["/apis/batch/v1/namespaces/{namespace}/jobs/{name}"]["patch"];
        assert_eq!(patch["x-kubernetes-group-version-kind"]["kind"], "Job");
        let names: Vec<&str> = patch["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["name"].as_str().unwrap())
            .collect();
        assert!(names.contains(&"fieldValidation"), "{names:?}");
        assert!(doc["components"]["schemas"]["io.k8s.api.batch.v1.Job"].is_object());
        let index = index();
        let url = index["paths"]["apis/serving.kserve.io/v1beta1"]["serverRelativeURL"]
            .as_str()
            .unwrap();
        assert!(
            url.starts_with("/openapi/v3/apis/serving.kserve.io/v1beta1?hash="),
            "{url}"
        );
        assert!(group_version_document("apis/batch/v2").is_none());
    }
}
