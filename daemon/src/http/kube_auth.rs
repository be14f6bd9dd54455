//! The Kubernetes endpoints that tell a client who it is and what it may do, answered
//! from Hearth's own users and access rule (a user may do everything in their own
//! namespace and nothing in another's; an admin everything), so that `kubectl version`,
//! `kubectl auth whoami` and `kubectl auth can-i` work against Hearth:
//!
//! - `GET /version`: `version.Info` (k8s.io/apimachinery/pkg/version), readable without
//!   a token as in Kubernetes, where `system:public-info-viewer` grants it to everyone.
//! - `POST /apis/authentication.k8s.io/v1/selfsubjectreviews` (`SelfSubjectReview`).
//! - `POST /apis/authorization.k8s.io/v1/selfsubjectaccessreviews`
//!   (`SelfSubjectAccessReview`) and `.../selfsubjectrulesreviews`
//!   (`SelfSubjectRulesReview`, for `kubectl auth can-i --list`).

use std::future::Future;
use std::pin::Pin;

use actix_web::dev::Payload;
use actix_web::{get, post, web, FromRequest, HttpRequest, HttpResponse};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

use super::auth::Caller;
use super::body::JsonBody;
use super::errors::ApiError;
use super::kube_protobuf::{self, ProtobufError};
use crate::auth::Principal;

/// A review's body: JSON, or Kubernetes protobuf as kubectl sends it
/// (`kube_protobuf`); either way read into the same serde type.
pub struct ReviewBody<T>(pub T);

impl From<ProtobufError> for ApiError {
    fn from(e: ProtobufError) -> ApiError {
        match e {
            ProtobufError::Magic | ProtobufError::Malformed(_) => ApiError::BadRequest(e.to_string()),
            ProtobufError::Kind { .. } => ApiError::UnsupportedMediaType {
                got: format!("{} ({e})", kube_protobuf::MEDIA_TYPE),
                expected: "application/json",
            },
        }
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for ReviewBody<T> {
    type Error = ApiError;
    type Future = Pin<Box<dyn Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let protobuf = req
            .headers()
            .get(actix_web::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(kube_protobuf::MEDIA_TYPE));
        if !protobuf {
            // Through a map first: serde would read a struct from a JSON array too.
            let json = JsonBody::<Map<String, Value>>::from_request(req, payload);
            return Box::pin(async move {
                let object = json.await?.0;
                serde_json::from_value(Value::Object(object))
                    .map(ReviewBody)
                    .map_err(|e| ApiError::invalid("body", e.to_string()))
            });
        }
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = super::body::body_limit(&req);
            let bytes = super::body::read_limited(&req, &mut payload, limit).await?;
            let value = kube_protobuf::decode(&bytes)?;
            serde_json::from_value(value)
                .map(ReviewBody)
                .map_err(|e| ApiError::invalid("body", e.to_string()))
        })
    }
}

/// Reads a nested struct only from a JSON object: serde reads a struct from an array of
/// its fields too (`"resourceAttributes": []`), which the API server refuses.
fn object_only<'de, D, T>(deserializer: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    let object = Map::<String, Value>::deserialize(deserializer)?;
    serde_json::from_value(Value::Object(object)).map_err(serde::de::Error::custom)
}

/// [`object_only`] for an optional field (`null` or absent: `None`).
fn opt_object_only<'de, D, T>(deserializer: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: DeserializeOwned,
{
    Option::<Map<String, Value>>::deserialize(deserializer)?
        .map(|object| serde_json::from_value(Value::Object(object)).map_err(serde::de::Error::custom))
        .transpose()
}

/// The Kubernetes minor release whose API (and kubectl) Hearth follows.
pub const KUBERNETES_MAJOR: &str = "1";
pub const KUBERNETES_MINOR: &str = "35";

/// `version.Info`, as `GET /version` answers it.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct VersionInfo {
    pub major: &'static str,
    pub minor: &'static str,
    /// `v1.35.0+hearth.<hearth version>`: the Kubernetes release followed, with Hearth's
    /// own version as semver build metadata (as k3s writes `v1.35.0+k3s1`).
    pub git_version: String,
    pub git_commit: &'static str,
    pub git_tree_state: &'static str,
    pub build_date: &'static str,
    /// Empty: Hearth is not written in Go.
    pub go_version: &'static str,
    pub compiler: &'static str,
    /// `linux/amd64`, `linux/arm64`, ... (Go's names).
    pub platform: String,
}

fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        "powerpc64" => "ppc64le",
        other => other,
    }
}

/// The Kubernetes version this server reports (`version.Info`); open to anyone.
#[utoipa::path(tag = "kubernetes", operation_id = "getCode", responses((status = 200, body = VersionInfo)))]
#[get("/version")]
async fn version() -> web::Json<VersionInfo> {
    version_info().await
}

async fn version_info() -> web::Json<VersionInfo> {
    web::Json(VersionInfo {
        major: KUBERNETES_MAJOR,
        minor: KUBERNETES_MINOR,
        git_version: format!(
            "v{KUBERNETES_MAJOR}.{KUBERNETES_MINOR}.0+hearth.{}",
            env!("CARGO_PKG_VERSION")
        ),
        git_commit: env!("HEARTH_GIT_COMMIT"),
        git_tree_state: "clean",
        build_date: "",
        go_version: "",
        compiler: "rustc",
        platform: format!("{}/{}", std::env::consts::OS, go_arch()),
    })
}

/// `metav1.ObjectMeta` of an answered review.
#[derive(Serialize, ToSchema, Default)]
#[serde(rename_all = "camelCase")]
pub struct ReviewMeta {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_timestamp: Option<String>,
}

/// `SelfSubjectReview` as a client posts it: only `apiVersion`, `kind` and `metadata`.
#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfSubjectReviewRequest {
    #[serde(default)]
    #[schema(pattern = "^authentication[.]k8s[.]io/v1$")]
    pub api_version: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^SelfSubjectReview$")]
    pub kind: Option<String>,
    /// Accepted (kubectl sends `{creationTimestamp: null}`) and ignored, as Kubernetes
    /// gives a review no identity.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub metadata: Option<Map<String, Value>>,
    /// Ignored, as Kubernetes ignores a posted status.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub status: Option<Map<String, Value>>,
}

/// `authentication.k8s.io/v1` `UserInfo`.
#[derive(Serialize, ToSchema)]
pub struct UserInfo {
    /// The Hearth user's name.
    pub username: String,
    /// `system:authenticated`, and `system:masters` for an admin (what a k3s admin has).
    pub groups: Vec<String>,
    /// `authentication.hearth.dev/token-name`: the name of the token used.
    pub extra: std::collections::BTreeMap<String, Vec<String>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectReviewStatus {
    pub user_info: UserInfo,
}

/// `authentication.k8s.io/v1` `SelfSubjectReview`, answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectReview {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ReviewMeta,
    pub status: SelfSubjectReviewStatus,
}

fn check_type(
    api_version: Option<&str>,
    kind: Option<&str>,
    want_version: &str,
    want_kind: &str,
) -> Result<(), ApiError> {
    if let Some(v) = api_version.filter(|v| *v != want_version) {
        return Err(ApiError::invalid(
            "apiVersion",
            format!("{v:?}: this path takes {want_version}"),
        ));
    }
    if let Some(k) = kind.filter(|k| *k != want_kind) {
        return Err(ApiError::invalid(
            "kind",
            format!("{k:?}: this path takes {want_kind}"),
        ));
    }
    Ok(())
}

fn now() -> Option<String> {
    Some(crate::store::now_rfc3339())
}

/// The caller as Kubernetes sees it (`kubectl auth whoami`).
#[utoipa::path(operation_id = "createSelfSubjectReview", tag = "kubernetes", request_body = SelfSubjectReviewRequest, responses((status = 201, body = SelfSubjectReview)), security(("bearer" = [])))]
#[post("/apis/authentication.k8s.io/v1/selfsubjectreviews")]
async fn self_subject_review(
    caller: Caller,
    body: ReviewBody<SelfSubjectReviewRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    check_type(
        request.api_version.as_deref(),
        request.kind.as_deref(),
        "authentication.k8s.io/v1",
        "SelfSubjectReview",
    )?;
    let caller = caller.0;
    let mut groups = Vec::new();
    if caller.admin {
        groups.push("system:masters".to_string());
    }
    groups.push("system:authenticated".to_string());
    let extra = [(
        "authentication.hearth.dev/token-name".to_string(),
        vec![caller.token_name],
    )]
    .into();
    Ok(HttpResponse::Created().json(SelfSubjectReview {
        api_version: "authentication.k8s.io/v1",
        kind: "SelfSubjectReview",
        metadata: ReviewMeta {
            name: None,
            creation_timestamp: now(),
        },
        status: SelfSubjectReviewStatus {
            user_info: UserInfo {
                username: caller.user,
                groups,
                extra,
            },
        },
    }))
}

/// `ResourceAttributes`: the action on a resource being asked about.
#[derive(Deserialize, Serialize, ToSchema, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ResourceAttributes {
    /// Empty: every namespace (for namespaced resources) or a cluster-scoped resource.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub namespace: String,
    /// `get`, `list`, `watch`, `create`, `update`, `patch`, `delete`, `*`, ...
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub group: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub version: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub resource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub subresource: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// Accepted and echoed; Hearth's rule does not depend on selectors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub field_selector: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub label_selector: Option<Map<String, Value>>,
}

/// `NonResourceAttributes`: a verb on a URL path that is no resource (`/version`).
#[derive(Deserialize, Serialize, ToSchema, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct NonResourceAttributes {
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub path: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub verb: String,
}

/// `SelfSubjectAccessReviewSpec`: exactly one of the two.
#[derive(Deserialize, Serialize, ToSchema, Default, Clone)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfSubjectAccessReviewSpec {
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_object_only"
    )]
    pub resource_attributes: Option<ResourceAttributes>,
    #[serde(
        default,
        skip_serializing_if = "Option::is_none",
        deserialize_with = "opt_object_only"
    )]
    pub non_resource_attributes: Option<NonResourceAttributes>,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfSubjectAccessReviewRequest {
    #[serde(default)]
    #[schema(pattern = "^authorization[.]k8s[.]io/v1$")]
    pub api_version: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^SelfSubjectAccessReview$")]
    pub kind: Option<String>,
    /// Accepted (kubectl sends `{creationTimestamp: null}`) and ignored, as Kubernetes
    /// gives a review no identity.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(deserialize_with = "object_only")]
    pub spec: SelfSubjectAccessReviewSpec,
    /// Ignored, as Kubernetes ignores a posted status.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub status: Option<Map<String, Value>>,
}

/// `SubjectAccessReviewStatus`.
#[derive(Serialize, ToSchema)]
pub struct SubjectAccessReviewStatus {
    pub allowed: bool,
    /// True when Hearth's rule refuses the action outright (another user's namespace).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub denied: bool,
    pub reason: String,
}

/// `authorization.k8s.io/v1` `SelfSubjectAccessReview`, answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectAccessReview {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ReviewMeta,
    pub spec: SelfSubjectAccessReviewSpec,
    pub status: SubjectAccessReviewStatus,
}

/// Verbs that only read.
const READ_VERBS: &[&str] = &["get", "list", "watch"];
/// Cluster-scoped resources every user may read: this host (`nodes`) and the namespaces
/// they can see (a list shows their own only).
const PUBLIC_CLUSTER_READS: &[&str] = &["nodes", "namespaces"];
/// Resources every user may create anywhere: the reviews themselves.
const REVIEWS: &[(&str, &str)] = &[
    ("authentication.k8s.io", "selfsubjectreviews"),
    ("authorization.k8s.io", "selfsubjectaccessreviews"),
    ("authorization.k8s.io", "selfsubjectrulesreviews"),
];
/// Non-resource paths every user may read (Kubernetes' `system:discovery` and
/// `system:public-info-viewer`).
const PUBLIC_PATHS: &[&str] = &[
    "/version", "/healthz", "/readyz", "/livez", "/api", "/apis", "/openapi",
];

/// Hearth's access rule applied to one Kubernetes request: `(allowed, reason)`.
pub fn decide(caller: &Principal, spec: &SelfSubjectAccessReviewSpec) -> (bool, String) {
    if caller.admin {
        return (true, format!("hearth: {} is an admin", caller.user));
    }
    if let Some(r) = &spec.resource_attributes {
        if REVIEWS.contains(&(r.group.as_str(), r.resource.as_str())) && r.verb == "create" {
            return (true, "hearth: every user may review their own access".into());
        }
        if !r.namespace.is_empty() {
            return if caller.can_access(&r.namespace) {
                (
                    true,
                    format!("hearth: namespace {} is {}'s own", r.namespace, caller.user),
                )
            } else {
                (
                    false,
                    format!("hearth: namespace {} belongs to another user", r.namespace),
                )
            };
        }
        if r.group.is_empty()
            && PUBLIC_CLUSTER_READS.contains(&r.resource.as_str())
            && READ_VERBS.contains(&r.verb.as_str())
        {
            return (true, format!("hearth: every user may read {}", r.resource));
        }
        return (
            false,
            "hearth: only an admin may act across all namespaces or on cluster-scoped resources".into(),
        );
    }
    if let Some(n) = &spec.non_resource_attributes {
        let public = PUBLIC_PATHS
            .iter()
            .any(|p| n.path == *p || n.path.starts_with(&format!("{p}/")));
        if public && n.verb == "get" {
            return (true, format!("hearth: {} is readable by every user", n.path));
        }
        if n.path == "/metrics" && n.verb == "get" {
            return (
                true,
                "hearth: every user may read /metrics, which shows them the node-wide series and their own namespace's".into(),
            );
        }
        return (false, format!("hearth: only an admin may {} {}", n.verb, n.path));
    }
    (false, "hearth: nothing asked".into())
}

/// Whether the caller may do one action (`kubectl auth can-i`), by Hearth's rule.
#[utoipa::path(operation_id = "createSelfSubjectAccessReview", tag = "kubernetes", request_body = SelfSubjectAccessReviewRequest, responses((status = 201, body = SelfSubjectAccessReview)), security(("bearer" = [])))]
#[post("/apis/authorization.k8s.io/v1/selfsubjectaccessreviews")]
async fn self_subject_access_review(
    caller: Caller,
    body: ReviewBody<SelfSubjectAccessReviewRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    check_type(
        request.api_version.as_deref(),
        request.kind.as_deref(),
        "authorization.k8s.io/v1",
        "SelfSubjectAccessReview",
    )?;
    let spec = request.spec;
    match (&spec.resource_attributes, &spec.non_resource_attributes) {
        (Some(_), None) | (None, Some(_)) => {}
        _ => {
            return Err(ApiError::invalid(
                "spec",
                "exactly one of resourceAttributes or nonResourceAttributes must be given",
            ))
        }
    }
    let (allowed, reason) = decide(&caller.0, &spec);
    Ok(HttpResponse::Created().json(SelfSubjectAccessReview {
        api_version: "authorization.k8s.io/v1",
        kind: "SelfSubjectAccessReview",
        metadata: ReviewMeta {
            name: None,
            creation_timestamp: now(),
        },
        spec,
        status: SubjectAccessReviewStatus {
            allowed,
            denied: !allowed,
            reason,
        },
    }))
}

#[derive(Deserialize, Serialize, ToSchema, Default)]
#[serde(deny_unknown_fields)]
pub struct SelfSubjectRulesReviewSpec {
    #[serde(default)]
    pub namespace: String,
}

#[derive(Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SelfSubjectRulesReviewRequest {
    #[serde(default)]
    #[schema(pattern = "^authorization[.]k8s[.]io/v1$")]
    pub api_version: Option<String>,
    #[serde(default)]
    #[schema(pattern = "^SelfSubjectRulesReview$")]
    pub kind: Option<String>,
    /// Accepted (kubectl sends `{creationTimestamp: null}`) and ignored, as Kubernetes
    /// gives a review no identity.
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub metadata: Option<Map<String, Value>>,
    #[serde(default, deserialize_with = "object_only")]
    pub spec: SelfSubjectRulesReviewSpec,
    #[serde(default)]
    #[schema(value_type = Option<Object>)]
    #[allow(dead_code, reason = "accepted from clients, ignored as Kubernetes does")]
    pub status: Option<Map<String, Value>>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResourceRule {
    pub verbs: Vec<String>,
    pub api_groups: Vec<String>,
    pub resources: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NonResourceRule {
    pub verbs: Vec<String>,
    #[serde(rename = "nonResourceURLs")]
    pub non_resource_urls: Vec<String>,
}

#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubjectRulesReviewStatus {
    pub resource_rules: Vec<ResourceRule>,
    pub non_resource_rules: Vec<NonResourceRule>,
    /// Always false: Hearth's rule is fully listed.
    pub incomplete: bool,
}

/// `authorization.k8s.io/v1` `SelfSubjectRulesReview`, answered.
#[derive(Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct SelfSubjectRulesReview {
    pub api_version: &'static str,
    pub kind: &'static str,
    pub metadata: ReviewMeta,
    pub spec: SelfSubjectRulesReviewSpec,
    pub status: SubjectRulesReviewStatus,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// Everything the caller may do in one namespace (`kubectl auth can-i --list`).
#[utoipa::path(operation_id = "createSelfSubjectRulesReview", tag = "kubernetes", request_body = SelfSubjectRulesReviewRequest, responses((status = 201, body = SelfSubjectRulesReview)), security(("bearer" = [])))]
#[post("/apis/authorization.k8s.io/v1/selfsubjectrulesreviews")]
async fn self_subject_rules_review(
    caller: Caller,
    body: ReviewBody<SelfSubjectRulesReviewRequest>,
) -> Result<HttpResponse, ApiError> {
    let request = body.0;
    check_type(
        request.api_version.as_deref(),
        request.kind.as_deref(),
        "authorization.k8s.io/v1",
        "SelfSubjectRulesReview",
    )?;
    let caller = caller.0;
    let spec = request.spec;
    let everything = caller.admin || (!spec.namespace.is_empty() && caller.can_access(&spec.namespace));
    let mut resource_rules = Vec::new();
    let mut non_resource_rules = Vec::new();
    if everything {
        resource_rules.push(ResourceRule {
            verbs: strings(&["*"]),
            api_groups: strings(&["*"]),
            resources: strings(&["*"]),
        });
    }
    if caller.admin {
        non_resource_rules.push(NonResourceRule {
            verbs: strings(&["*"]),
            non_resource_urls: strings(&["*"]),
        });
    } else {
        for (group, resource) in REVIEWS {
            resource_rules.push(ResourceRule {
                verbs: strings(&["create"]),
                api_groups: strings(&[group]),
                resources: strings(&[resource]),
            });
        }
        resource_rules.push(ResourceRule {
            verbs: strings(READ_VERBS),
            api_groups: strings(&[""]),
            resources: strings(PUBLIC_CLUSTER_READS),
        });
        non_resource_rules.push(NonResourceRule {
            verbs: strings(&["get"]),
            non_resource_urls: PUBLIC_PATHS
                .iter()
                .flat_map(|p| [p.to_string(), format!("{p}/*")])
                .collect(),
        });
    }
    Ok(HttpResponse::Created().json(SelfSubjectRulesReview {
        api_version: "authorization.k8s.io/v1",
        kind: "SelfSubjectRulesReview",
        metadata: ReviewMeta {
            name: None,
            creation_timestamp: now(),
        },
        spec,
        status: SubjectRulesReviewStatus {
            resource_rules,
            non_resource_rules,
            incomplete: false,
        },
    }))
}

pub fn routes(cfg: &mut utoipa_actix_web::service_config::ServiceConfig) {
    // The Kubernetes Python client asks for `/version/`, which Kubernetes also serves;
    // the same answer, left out of the OpenAPI document.
    cfg.route("/version/", web::get().to(version_info))
        .service(version)
        .service(self_subject_review)
        .service(self_subject_access_review)
        .service(self_subject_rules_review);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(name: &str, admin: bool) -> Principal {
        Principal {
            user: name.into(),
            admin,
            token_name: "t".into(),
        }
    }

    fn on(namespace: &str, verb: &str, group: &str, resource: &str) -> SelfSubjectAccessReviewSpec {
        SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: namespace.into(),
                verb: verb.into(),
                group: group.into(),
                resource: resource.into(),
                ..Default::default()
            }),
            non_resource_attributes: None,
        }
    }

    #[test]
    fn a_user_may_do_anything_in_their_namespace_and_nothing_in_anothers() {
        let alice = user("alice", false);
        assert!(decide(&alice, &on("alice", "create", "batch", "jobs")).0);
        assert!(decide(&alice, &on("alice", "*", "*", "*")).0);
        let (allowed, reason) = decide(&alice, &on("bob", "get", "batch", "jobs"));
        assert!(!allowed);
        assert!(reason.contains("bob"), "{reason}");
        // Across all namespaces, or cluster-scoped writes: admins only.
        assert!(!decide(&alice, &on("", "list", "batch", "jobs")).0);
        assert!(!decide(&alice, &on("", "delete", "", "nodes")).0);
        assert!(decide(&alice, &on("", "list", "", "nodes")).0);
        assert!(
            decide(
                &alice,
                &on("", "create", "authorization.k8s.io", "selfsubjectaccessreviews")
            )
            .0
        );
    }

    #[test]
    fn an_admin_may_do_anything() {
        let admin = user("admin", true);
        assert!(decide(&admin, &on("bob", "delete", "batch", "jobs")).0);
        assert!(decide(&admin, &on("", "*", "*", "*")).0);
    }

    #[test]
    fn nested_structs_are_read_from_objects_only() {
        let read = |body: Value| serde_json::from_value::<SelfSubjectAccessReviewRequest>(body);
        for bad in [
            serde_json::json!({"spec": {"resourceAttributes": []}}),
            serde_json::json!({"spec": {"nonResourceAttributes": ["/version", "get"]}}),
            serde_json::json!({"spec": [null, null]}),
        ] {
            assert!(read(bad.clone()).is_err(), "{bad}");
        }
        let ok = read(serde_json::json!({"spec": {"resourceAttributes": {"verb": "get"}, "nonResourceAttributes": null}}))
            .expect("an object reads");
        assert_eq!(
            ok.spec.resource_attributes.map(|r| r.verb).as_deref(),
            Some("get")
        );
        assert!(
            serde_json::from_value::<SelfSubjectRulesReviewRequest>(serde_json::json!({"spec": []})).is_err()
        );
        assert!(serde_json::from_value::<SelfSubjectRulesReviewRequest>(serde_json::json!({})).is_ok());
    }

    #[test]
    fn non_resource_paths() {
        let alice = user("alice", false);
        let path = |p: &str, verb: &str| SelfSubjectAccessReviewSpec {
            resource_attributes: None,
            non_resource_attributes: Some(NonResourceAttributes {
                path: p.into(),
                verb: verb.into(),
            }),
        };
        assert!(decide(&alice, &path("/version", "get")).0);
        assert!(decide(&alice, &path("/apis/batch/v1", "get")).0);
        assert!(decide(&alice, &path("/metrics", "get")).0);
        assert!(!decide(&alice, &path("/metrics", "post")).0);
        assert!(!decide(&alice, &path("/version", "post")).0);
        assert!(!decide(&alice, &path("/apisx", "get")).0);
    }
}
