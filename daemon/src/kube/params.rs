//! Query parameters of the Kubernetes resource paths (`ListOptions`,
//! `CreateOptions`/`UpdateOptions`/`PatchOptions`, `DeleteOptions`), read from the raw
//! query so a bad value is a 400 naming the parameter. Parameters the API server
//! takes that Hearth cannot honour are refused by name; `pretty` and `fieldManager`
//! change nothing Hearth keeps and are accepted.

use std::collections::BTreeMap;

use serde::Deserialize;
use utoipa::IntoParams;

use super::selectors::{FieldSelector, LabelSelector};
use crate::http::errors::ApiError;
use crate::model::strict::MAX_SECONDS;
use crate::store::resources::Cursor;

type Raw = BTreeMap<String, String>;

fn bad(key: &str, detail: impl std::fmt::Display) -> ApiError {
    ApiError::BadRequest(format!("query parameter {key}: {detail}"))
}

fn only(raw: &Raw, known: &[&str]) -> Result<(), ApiError> {
    match raw.keys().find(|k| !known.contains(&k.as_str())) {
        Some(key) => Err(bad(key, format!("is not known here ({})", known.join(", ")))),
        None => Ok(()),
    }
}

/// A boolean query parameter as the API server reads one (Go's `strconv.ParseBool`):
/// the Python client sends `watch=True`.
fn boolean(raw: &Raw, key: &str) -> Result<bool, ApiError> {
    match raw.get(key).map(String::as_str) {
        None | Some("false" | "0" | "f" | "F" | "FALSE" | "False") => Ok(false),
        Some("true" | "1" | "t" | "T" | "TRUE" | "True") => Ok(true),
        Some(other) => Err(bad(key, format!("must be true or false, not {other:?}"))),
    }
}

fn integer(raw: &Raw, key: &str, max: u64) -> Result<Option<u64>, ApiError> {
    match raw.get(key) {
        None => Ok(None),
        Some(text) => text
            .parse::<u64>()
            .ok()
            .filter(|n| *n <= max)
            .map(Some)
            .ok_or_else(|| bad(key, format!("must be an integer from 0 to {max}, not {text:?}"))),
    }
}

/// `dryRun`: only `All`, as Kubernetes defines it.
fn dry_run(raw: &Raw) -> Result<bool, ApiError> {
    match raw.get("dryRun").map(String::as_str) {
        None => Ok(false),
        Some("All") => Ok(true),
        Some(other) => Err(bad("dryRun", format!("must be All, not {other:?}"))),
    }
}

/// `fieldValidation`: Hearth refuses every field it does not honour whatever the
/// mode, since dropping one silently (`Ignore`) or with a warning (`Warn`) would run
/// something other than what was written; the three values are accepted so that
/// clients sending them work.
fn field_validation(raw: &Raw) -> Result<(), ApiError> {
    match raw.get("fieldValidation").map(String::as_str) {
        None | Some("Strict") | Some("Warn") | Some("Ignore") => Ok(()),
        Some(other) => Err(bad(
            "fieldValidation",
            format!("must be Strict, Warn or Ignore, not {other:?}"),
        )),
    }
}

/// What a list or watch asks for.
#[derive(Debug, Default)]
pub struct ListOptions {
    pub labels: LabelSelector,
    pub fields: FieldSelector,
    /// At most this many items, then `metadata.continue`; `None` for all.
    pub limit: Option<usize>,
    pub after: Option<Cursor>,
    pub watch: bool,
    /// `resourceVersion`: for a watch, the version to resume after (`None` or 0: send
    /// the current objects first).
    pub resource_version: Option<i64>,
    pub timeout_seconds: Option<u64>,
    pub allow_bookmarks: bool,
}

/// `ListOptions` (Kubernetes API reference) as documented for OpenAPI. `watch=true`
/// (with `resourceVersion`, `timeoutSeconds`, `allowWatchBookmarks`) turns the list
/// into a stream of newline-delimited watch events.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the parameters for OpenAPI; they are read from the raw query"
)]
pub struct ListParams {
    /// Label requirements: `k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a,b)`, `k`, `!k`.
    #[serde(rename = "labelSelector")]
    #[param(rename = "labelSelector")]
    label_selector: Option<String>,
    /// `metadata.name` or `metadata.namespace` with `=`, `==` or `!=`.
    #[serde(rename = "fieldSelector")]
    #[param(rename = "fieldSelector")]
    field_selector: Option<String>,
    /// At most this many items (0: no limit); `metadata.continue` names the next page.
    #[param(minimum = 0, maximum = 100000)]
    limit: Option<u32>,
    /// The `metadata.continue` of the previous page.
    #[serde(rename = "continue")]
    #[param(rename = "continue")]
    continue_token: Option<String>,
    /// Accepted and without effect: every list reads the latest state.
    #[serde(rename = "resourceVersion")]
    #[param(rename = "resourceVersion")]
    resource_version: Option<String>,
    /// Accepted and without effect.
    pretty: Option<String>,
}

/// Largest `limit`.
const MAX_LIMIT: u64 = 100_000;

fn version(raw: &Raw, key: &str) -> Result<Option<i64>, ApiError> {
    match raw.get(key).map(String::as_str) {
        None | Some("") => Ok(None),
        Some(text) => text
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .map(Some)
            .ok_or_else(|| {
                bad(
                    key,
                    format!("{text:?} is not a resourceVersion this server issued"),
                )
            }),
    }
}

impl ListOptions {
    pub fn parse(raw: &Raw) -> Result<ListOptions, ApiError> {
        only(
            raw,
            &[
                "labelSelector",
                "fieldSelector",
                "limit",
                "continue",
                "watch",
                "resourceVersion",
                "resourceVersionMatch",
                "timeoutSeconds",
                "allowWatchBookmarks",
                "sendInitialEvents",
                "pretty",
                // kubectl's `--request-timeout`, which kubectl enforces itself.
                "timeout",
            ],
        )?;
        if boolean(raw, "sendInitialEvents")? {
            return Err(bad(
                "sendInitialEvents",
                "streaming lists are not supported by Hearth; watch without it",
            ));
        }
        match raw.get("resourceVersionMatch").map(String::as_str) {
            None | Some("") | Some("NotOlderThan") => {}
            Some(other) => {
                return Err(bad(
                    "resourceVersionMatch",
                    format!("{other:?} is not supported by Hearth (it lists the latest state: NotOlderThan)"),
                ))
            }
        }
        let after = match raw.get("continue").map(String::as_str) {
            None | Some("") => None,
            Some(token) => Some(Cursor::decode(token).ok_or_else(|| {
                bad(
                    "continue",
                    "not a continue token from this server's metadata.continue",
                )
            })?),
        };
        let limit = match integer(raw, "limit", MAX_LIMIT)? {
            None | Some(0) => None,
            Some(n) => usize::try_from(n).ok(),
        };
        Ok(ListOptions {
            labels: LabelSelector::parse(raw.get("labelSelector").map_or("", String::as_str))?,
            fields: FieldSelector::parse(raw.get("fieldSelector").map_or("", String::as_str))?,
            limit,
            after,
            watch: boolean(raw, "watch")?,
            resource_version: version(raw, "resourceVersion")?,
            timeout_seconds: integer(raw, "timeoutSeconds", MAX_SECONDS)?,
            allow_bookmarks: boolean(raw, "allowWatchBookmarks")?,
        })
    }
}

/// Options of create, update and patch.
#[derive(Debug, Default)]
pub struct WriteOptions {
    pub dry_run: bool,
}

/// `CreateOptions`/`UpdateOptions`/`PatchOptions` as documented for OpenAPI.
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the parameters for OpenAPI; they are read from the raw query"
)]
pub struct WriteParams {
    /// `All`: check everything, store nothing, answer what would be stored.
    #[serde(rename = "dryRun")]
    #[param(rename = "dryRun", pattern = "^All$")]
    dry_run: Option<String>,
    /// `Strict`, `Warn` or `Ignore`; Hearth refuses unknown fields in every mode.
    #[serde(rename = "fieldValidation")]
    #[param(rename = "fieldValidation", pattern = "^(Strict|Warn|Ignore)$")]
    field_validation: Option<String>,
    /// Accepted and without effect (Hearth keeps no managed fields).
    #[serde(rename = "fieldManager")]
    #[param(rename = "fieldManager")]
    field_manager: Option<String>,
    /// Accepted and without effect.
    pretty: Option<String>,
}

impl WriteOptions {
    pub fn parse(raw: &Raw) -> Result<WriteOptions, ApiError> {
        only(
            raw,
            &["dryRun", "fieldValidation", "fieldManager", "pretty", "force"],
        )?;
        field_validation(raw)?;
        if boolean(raw, "force")? {
            return Err(bad(
                "force",
                "belongs to server-side apply, which Hearth does not serve",
            ));
        }
        Ok(WriteOptions {
            dry_run: dry_run(raw)?,
        })
    }
}

/// `DeleteOptions` from the query, and from the body where clients send them there
/// (`kubectl delete` and the Kubernetes Python client do).
#[derive(Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(
    dead_code,
    reason = "documents the parameters for OpenAPI; they are read from the raw query"
)]
pub struct DeleteParams {
    /// `All`: check, delete nothing.
    #[serde(rename = "dryRun")]
    #[param(rename = "dryRun", pattern = "^All$")]
    dry_run: Option<String>,
    /// How deletion reaches the object's dependents (objects whose
    /// `metadata.ownerReferences` name it): `Background` (the default: the object goes,
    /// the garbage collector deletes its dependents), `Foreground` (the object stays,
    /// with `deletionTimestamp` and the `foregroundDeletion` finalizer, until its
    /// dependents with `blockOwnerDeletion` are gone) or `Orphan` (its dependents lose
    /// the owner reference and stay). What the object itself runs is always stopped.
    #[serde(rename = "propagationPolicy")]
    #[param(rename = "propagationPolicy", pattern = "^(Background|Foreground|Orphan)$")]
    propagation_policy: Option<String>,
    /// Deprecated form of `propagationPolicy`: `true` is `Orphan`, `false` is
    /// `Background`; not together with `propagationPolicy`.
    #[serde(rename = "orphanDependents")]
    #[param(rename = "orphanDependents")]
    orphan_dependents: Option<bool>,
    /// Accepted: the grace period of the workloads' configured stop applies.
    #[serde(rename = "gracePeriodSeconds")]
    #[param(rename = "gracePeriodSeconds", minimum = 0, maximum = 2147483647)]
    grace_period_seconds: Option<u32>,
    /// Accepted and without effect.
    pretty: Option<String>,
}

/// A `DeleteOptions` body (`meta/v1`), as `kubectl delete` and the Kubernetes clients
/// send it; its fields mean what the query parameters of the same names mean.
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field"
)]
pub struct DeleteOptions {
    #[schema(example = "DeleteOptions")]
    kind: Option<String>,
    #[schema(example = "v1")]
    api_version: Option<String>,
    /// `["All"]`: check, delete nothing.
    dry_run: Option<Vec<DryRunValue>>,
    /// `Background`, `Foreground` or `Orphan` (see the query parameter).
    #[schema(pattern = "^(Background|Foreground|Orphan)$")]
    propagation_policy: Option<String>,
    /// Deprecated: `true` is `Orphan`, `false` is `Background`.
    orphan_dependents: Option<bool>,
    /// Accepted: the grace period of the workloads' configured stop applies.
    #[schema(minimum = 0, maximum = 2147483647)]
    grace_period_seconds: Option<i64>,
    preconditions: Option<DeletePreconditions>,
}

/// The one `dryRun` value Kubernetes defines.
#[derive(Deserialize, utoipa::ToSchema)]
#[allow(dead_code, reason = "documents the body for OpenAPI")]
pub enum DryRunValue {
    All,
}

/// `Preconditions`: delete only the object with this uid and/or `resourceVersion`
/// (else 409 `Conflict`).
#[derive(Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
#[allow(
    dead_code,
    reason = "documents the body for OpenAPI; it is read field by field"
)]
pub struct DeletePreconditions {
    uid: Option<String>,
    #[schema(pattern = "^[0-9]{1,18}$")]
    resource_version: Option<String>,
}

/// Kubernetes' `DeletionPropagation`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Propagation {
    #[default]
    Background,
    Foreground,
    Orphan,
}

impl Propagation {
    /// The finalizer that holds the object while the garbage collector propagates its
    /// deletion (the API server's names), if any.
    pub fn finalizer(self) -> Option<&'static str> {
        match self {
            Propagation::Background => None,
            Propagation::Foreground => Some(FOREGROUND_FINALIZER),
            Propagation::Orphan => Some(ORPHAN_FINALIZER),
        }
    }
}

/// `metav1.FinalizerDeleteDependents`.
pub const FOREGROUND_FINALIZER: &str = "foregroundDeletion";
/// `metav1.FinalizerOrphanDependents`.
pub const ORPHAN_FINALIZER: &str = "orphan";

/// What a delete asks for.
#[derive(Debug, Default)]
pub struct DeleteRequest {
    pub dry_run: bool,
    pub propagation: Propagation,
    pub preconditions: crate::store::resources::Preconditions,
}

fn preconditions(value: &serde_json::Value) -> Result<crate::store::resources::Preconditions, ApiError> {
    let mut out = crate::store::resources::Preconditions::default();
    let object = match value {
        serde_json::Value::Null => return Ok(out),
        serde_json::Value::Object(object) => object,
        _ => return Err(ApiError::invalid("preconditions", "must be an object")),
    };
    for (key, v) in object {
        match (key.as_str(), v) {
            (_, serde_json::Value::Null) => {}
            ("uid", serde_json::Value::String(uid)) => out.uid = Some(uid.clone()),
            ("resourceVersion", serde_json::Value::String(text)) => {
                out.resource_version = Some(text.parse::<i64>().map_err(|_| {
                    ApiError::invalid(
                        "preconditions.resourceVersion",
                        format!("{text:?} is not a resourceVersion this server issued"),
                    )
                })?)
            }
            ("uid" | "resourceVersion", _) => {
                return Err(ApiError::invalid(
                    format!("preconditions.{key}"),
                    "must be a string",
                ))
            }
            (other, _) => {
                return Err(ApiError::invalid(
                    format!("preconditions.{other}"),
                    "is not a field of Preconditions (uid, resourceVersion)",
                ))
            }
        }
    }
    Ok(out)
}

/// Reads delete options: query parameters first, then a `DeleteOptions` body.
pub fn delete_options(raw: &Raw, body: &[u8]) -> Result<DeleteRequest, ApiError> {
    only(
        raw,
        &[
            "dryRun",
            "propagationPolicy",
            "gracePeriodSeconds",
            "orphanDependents",
            "pretty",
        ],
    )?;
    let mut merged = raw.clone();
    let mut conditions = crate::store::resources::Preconditions::default();
    if !body.iter().all(u8::is_ascii_whitespace) {
        let value: serde_json::Value = serde_json::from_slice(body)
            .map_err(|e| ApiError::BadRequest(format!("DeleteOptions body: {e}")))?;
        let empty = serde_json::Map::new();
        let object = match &value {
            // `null`: no options, as an empty body.
            serde_json::Value::Null => &empty,
            serde_json::Value::Object(object) => object,
            _ => {
                return Err(ApiError::BadRequest(
                    "DeleteOptions body: must be a JSON object".into(),
                ))
            }
        };
        for (key, v) in object {
            match (key.as_str(), v) {
                ("kind" | "apiVersion", _) | (_, serde_json::Value::Null) => {}
                ("dryRun", serde_json::Value::Array(items)) => {
                    if let Some(first) = items.first().and_then(|i| i.as_str()) {
                        merged.insert("dryRun".into(), first.to_string());
                    }
                }
                ("propagationPolicy", serde_json::Value::String(s)) => {
                    merged.insert(key.clone(), s.clone());
                }
                ("gracePeriodSeconds", serde_json::Value::Number(n)) => {
                    merged.insert(key.clone(), n.to_string());
                }
                ("orphanDependents", serde_json::Value::Bool(b)) => {
                    merged.insert(key.clone(), b.to_string());
                }
                ("preconditions", v) => conditions = preconditions(v)?,
                (other, _) => {
                    return Err(ApiError::BadRequest(format!(
                        "DeleteOptions.{other}: not known, or not of its type"
                    )))
                }
            }
        }
    }
    let policy = match merged.get("propagationPolicy").map(String::as_str) {
        None => None,
        Some("Background") => Some(Propagation::Background),
        Some("Foreground") => Some(Propagation::Foreground),
        Some("Orphan") => Some(Propagation::Orphan),
        Some(other) => {
            return Err(ApiError::invalid(
                "propagationPolicy",
                format!(
                "Unsupported value: {other:?}: supported values: \"Foreground\", \"Background\", \"Orphan\""
            ),
            ))
        }
    };
    let orphan = match merged.get("orphanDependents") {
        None => None,
        Some(_) => Some(boolean(&merged, "orphanDependents")?),
    };
    let propagation = match (policy, orphan) {
        (Some(_), Some(_)) => {
            return Err(ApiError::invalid(
                "propagationPolicy",
                "orphanDependents and deletionPropagation cannot be both set",
            ))
        }
        (Some(policy), None) => policy,
        (None, Some(true)) => Propagation::Orphan,
        (None, Some(false) | None) => Propagation::Background,
    };
    integer(&merged, "gracePeriodSeconds", MAX_SECONDS)?;
    Ok(DeleteRequest {
        dry_run: dry_run(&merged)?,
        propagation,
        preconditions: conditions,
    })
}

/// The raw body of a DELETE (an optional `DeleteOptions`), read under the
/// configured size limit.
pub struct DeleteBody(pub actix_web::web::Bytes);

impl actix_web::FromRequest for DeleteBody {
    type Error = ApiError;
    type Future = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Self, Self::Error>>>>;

    fn from_request(req: &actix_web::HttpRequest, payload: &mut actix_web::dev::Payload) -> Self::Future {
        let req = req.clone();
        let mut payload = payload.take();
        Box::pin(async move {
            let limit = req
                .app_data::<actix_web::web::Data<crate::http::AppState>>()
                .map_or(64 * 1024, |s| s.config.max_body_bytes);
            crate::http::body::read_limited(&req, &mut payload, limit)
                .await
                .map(DeleteBody)
        })
    }
}
