//! Named OpenAPI schemas for Kubernetes documents Hearth answers as built JSON rather
//! than a typed struct: discovery (`APIVersions`, `APIResourceList`, `APIGroupList`,
//! `APIGroup`, k8s.io/apimachinery `meta/v1`), the read-only views (`Pod`, `Node`,
//! `Namespace`, `Event`, `ClusterServingRuntime`) and the `/openapi/v3` documents. Named
//! as the upstream Kubernetes clients name them (`V1Pod`, `V1APIGroup`, `CoreV1Event`),
//! so generated clients get one type per upstream schema. Every field is optional and
//! more members are allowed: they document, the handlers write the JSON.

#![allow(
    dead_code,
    reason = "the structs document answers for OpenAPI; handlers build them as JSON values"
)]

use serde_json::Value;
use utoipa::ToSchema;

/// `GroupVersionForDiscovery`.
#[derive(ToSchema)]
pub struct V1GroupVersionForDiscovery {
    #[schema(rename = "groupVersion")]
    group_version: Option<String>,
    version: Option<String>,
}

/// `APIVersions` (`GET /api`).
#[derive(ToSchema)]
pub struct V1APIVersions {
    kind: Option<String>,
    versions: Option<Vec<String>>,
    #[schema(rename = "serverAddressByClientCIDRs", value_type = Option<Vec<Object>>)]
    server_address_by_client_cidrs: Option<Value>,
}

/// `APIResource`: one resource of a group version.
#[derive(ToSchema)]
pub struct V1APIResource {
    name: Option<String>,
    #[schema(rename = "singularName")]
    singular_name: Option<String>,
    namespaced: Option<bool>,
    kind: Option<String>,
    verbs: Option<Vec<String>>,
    #[schema(rename = "shortNames")]
    short_names: Option<Vec<String>>,
    categories: Option<Vec<String>>,
}

/// `APIResourceList` (`GET /api/v1`, `GET /apis/{group}/{version}`).
#[derive(ToSchema)]
pub struct V1APIResourceList {
    kind: Option<String>,
    #[schema(rename = "apiVersion")]
    api_version: Option<String>,
    #[schema(rename = "groupVersion")]
    group_version: Option<String>,
    resources: Option<Vec<V1APIResource>>,
}

/// `APIGroup` (`GET /apis/{group}`).
#[derive(ToSchema)]
pub struct V1APIGroup {
    kind: Option<String>,
    #[schema(rename = "apiVersion")]
    api_version: Option<String>,
    name: Option<String>,
    versions: Option<Vec<V1GroupVersionForDiscovery>>,
    #[schema(rename = "preferredVersion")]
    preferred_version: Option<V1GroupVersionForDiscovery>,
}

/// `APIGroupList` (`GET /apis`).
#[derive(ToSchema)]
pub struct V1APIGroupList {
    kind: Option<String>,
    #[schema(rename = "apiVersion")]
    api_version: Option<String>,
    groups: Option<Vec<V1APIGroup>>,
}

/// A Kubernetes object as Hearth shows it: `apiVersion`, `kind`, `metadata`, and the
/// kind's `spec` and `status` (see the kind's upstream reference).
macro_rules! object_schema {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(ToSchema)]
        pub struct $name {
            #[schema(rename = "apiVersion")]
            api_version: Option<String>,
            kind: Option<String>,
            /// `ObjectMeta`.
            #[schema(value_type = Option<Object>)]
            metadata: Option<Value>,
            #[schema(value_type = Option<Object>)]
            spec: Option<Value>,
            #[schema(value_type = Option<Object>)]
            status: Option<Value>,
        }
    };
}

object_schema!(
    /// `io.k8s.api.core.v1.Pod`: a view of a workload's process (read-only).
    V1Pod
);
object_schema!(
    /// `io.k8s.api.core.v1.Node`: this machine (read-only).
    V1Node
);
object_schema!(
    /// `io.k8s.api.core.v1.Namespace`: a Hearth user's namespace (read-only).
    V1Namespace
);
object_schema!(
    /// KServe's `ClusterServingRuntime` (`serving.kserve.io/v1alpha1`), read-only.
    V1alpha1ClusterServingRuntime
);
/// The answer to a delete: a `Status` (`kind: Status`, `status: Success`, when the
/// object is gone) or the object itself while a finalizer (`foregroundDeletion`,
/// `orphan`) holds it, with its `spec` and `status` object.
#[derive(ToSchema)]
pub struct DeleteResult {
    #[schema(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    #[schema(value_type = Option<Object>)]
    spec: Option<Value>,
    /// `Success` in a `Status`; the object's status object otherwise.
    #[schema(value_type = Option<Value>)]
    status: Option<Value>,
    /// A `Status`'s `details` (the deleted object's name, group, kind, uid).
    #[schema(value_type = Option<Object>)]
    details: Option<Value>,
}

/// `io.k8s.api.core.v1.Event` (`CoreV1Event`): something that happened to an object.
#[derive(ToSchema)]
pub struct CoreV1Event {
    #[schema(rename = "apiVersion")]
    api_version: Option<String>,
    kind: Option<String>,
    #[schema(value_type = Option<Object>)]
    metadata: Option<Value>,
    #[schema(rename = "involvedObject", value_type = Option<Object>)]
    involved_object: Option<Value>,
    reason: Option<String>,
    message: Option<String>,
    #[schema(rename = "type")]
    event_type: Option<String>,
    count: Option<i64>,
    #[schema(rename = "firstTimestamp")]
    first_timestamp: Option<String>,
    #[schema(rename = "lastTimestamp")]
    last_timestamp: Option<String>,
}

/// The `/openapi/v3` index: group-version path to its document's URL.
#[derive(ToSchema)]
pub struct OpenAPIV3Discovery {
    /// `{"apis/batch/v1": {"serverRelativeURL": "/openapi/v3/apis/batch/v1?hash=..."}}`.
    #[schema(value_type = Option<Object>)]
    paths: Option<Value>,
}

/// An OpenAPI 3.0 document of one group version, as kubectl reads it.
#[derive(ToSchema)]
pub struct OpenAPIV3Document {
    openapi: Option<String>,
    #[schema(value_type = Option<Object>)]
    info: Option<Value>,
    #[schema(value_type = Option<Object>)]
    paths: Option<Value>,
    #[schema(value_type = Option<Object>)]
    components: Option<Value>,
}
