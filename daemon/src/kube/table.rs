//! Server-side printing (`Accept: application/json;as=Table;v=v1;g=meta.k8s.io`, which
//! `kubectl get` sends): a list or object of a served kind answered as a
//! `meta.k8s.io/v1` `Table`, with the columns upstream prints: the Job printer of
//! `pkg/printers/internalversion`, the Pod, Node, Namespace and Event printers, and
//! the InferenceService CRD's `additionalPrinterColumns`. Rows carry the object as
//! `PartialObjectMetadata` (or whole with `includeObject=Object`). Watches keep
//! their plain events (kubectl prints those itself).

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::HttpResponse;
use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::kinds::{self, Backend, KindDef};
use super::views::View;

/// Whether the request asks for a `Table` (and no watch).
fn wants_table(req: &ServiceRequest) -> bool {
    let accept = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let first = accept.split(',').next().unwrap_or("");
    req.method() == actix_web::http::Method::GET
        && first.contains("as=Table")
        && first.contains("g=meta.k8s.io")
        && !req
            .query_string()
            .split('&')
            .any(|p| p == "watch=true" || p == "watch=1")
}

/// `5s`, `3m`, `2h`, `4d` as kubectl's `HumanDuration` shortens them.
fn human(seconds: i64) -> String {
    let s = seconds.max(0);
    match s {
        0..120 => format!("{s}s"),
        120..7200 => format!("{}m", s / 60),
        7200..172_800 => format!("{}h", s / 3600),
        _ => format!("{}d", s / 86400),
    }
}

fn time(document: &Value, pointer: &str) -> Option<DateTime<Utc>> {
    document
        .pointer(pointer)
        .and_then(Value::as_str)
        .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
        .map(|t| t.with_timezone(&Utc))
}

fn age(document: &Value, pointer: &str) -> String {
    time(document, pointer)
        .map(|t| human((Utc::now() - t).num_seconds()))
        .unwrap_or_else(|| "<unknown>".into())
}

fn text(document: &Value, pointer: &str) -> String {
    match document.pointer(pointer) {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::Bool(b)) => b.to_string(),
        _ => String::new(),
    }
}

/// A field of the last condition (the CRDs' `.status.conditions[-1:]`).
fn last_condition(document: &Value, field: &str) -> String {
    document
        .pointer("/status/conditions")
        .and_then(Value::as_array)
        .and_then(|c| c.last())
        .and_then(|c| c.get(field))
        .and_then(Value::as_str)
        .unwrap_or_default()
        .to_string()
}

fn condition(document: &Value, kind: &str) -> Option<String> {
    document
        .pointer("/status/conditions")
        .and_then(Value::as_array)?
        .iter()
        .find(|c| c["type"] == kind)
        .and_then(|c| c["status"].as_str())
        .map(str::to_string)
}

/// The `percent` of the predictor's traffic entry `pick` chooses (the CRD's
/// `traffic[?(@.tag=='prev')]` and `traffic[?(@.latestRevision==true)]`).
fn traffic(d: &Value, pick: impl Fn(&Value) -> bool) -> Value {
    d.pointer("/status/components/predictor/traffic")
        .and_then(Value::as_array)
        .and_then(|t| t.iter().find(|e| pick(e)))
        .and_then(|e| e.get("percent").cloned())
        .unwrap_or(Value::Null)
}

/// Column names and types, and a row's cells, per kind.
fn columns(kind: &KindDef) -> Vec<(&'static str, &'static str)> {
    let name = ("Name", "string");
    let age = ("Age", "string");
    match kind.backend {
        Backend::Job => vec![
            name,
            ("Status", "string"),
            ("Completions", "string"),
            ("Duration", "string"),
            age,
        ],
        Backend::InferenceService => vec![
            name,
            ("URL", "string"),
            ("Ready", "string"),
            ("Prev", "integer"),
            ("Latest", "integer"),
            age,
        ],
        Backend::View(View::Pod) => vec![
            name,
            ("Ready", "string"),
            ("Status", "string"),
            ("Restarts", "string"),
            age,
        ],
        Backend::View(View::Node) => vec![
            name,
            ("Status", "string"),
            ("Roles", "string"),
            age,
            ("Version", "string"),
        ],
        // The Katib CRDs' printer columns (`.status.conditions[-1:]`).
        Backend::Experiment | Backend::Trial => vec![name, ("Type", "string"), ("Status", "string"), age],
        Backend::Suggestion => vec![
            name,
            ("Type", "string"),
            ("Status", "string"),
            ("Requested", "string"),
            ("Assigned", "string"),
            age,
        ],
        Backend::Notebook => vec![name, ("Ready", "string"), ("Status", "string"), age],
        Backend::View(View::Namespace) => vec![name, ("Status", "string"), age],
        Backend::View(View::Event) => vec![
            ("Last Seen", "string"),
            ("Type", "string"),
            ("Reason", "string"),
            ("Object", "string"),
            ("Message", "string"),
        ],
        Backend::View(View::ClusterServingRuntime) => {
            vec![name, ("Disabled", "boolean"), ("ModelType", "string"), age]
        }
    }
}

fn cells(kind: &KindDef, d: &Value) -> Vec<Value> {
    let name = json!(text(d, "/metadata/name"));
    let created = json!(age(d, "/metadata/creationTimestamp"));
    match kind.backend {
        Backend::Job => {
            let status = if condition(d, "Complete").as_deref() == Some("True") {
                "Complete"
            } else if condition(d, "Failed").as_deref() == Some("True") {
                "Failed"
            } else if condition(d, "Suspended").as_deref() == Some("True") {
                "Suspended"
            } else {
                "Running"
            };
            let completions = d
                .pointer("/spec/completions")
                .and_then(Value::as_u64)
                .unwrap_or(1);
            let succeeded = d
                .pointer("/status/succeeded")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let duration = match (time(d, "/status/startTime"), time(d, "/status/completionTime")) {
                (Some(start), Some(end)) => human((end - start).num_seconds()),
                (Some(start), None) => human((Utc::now() - start).num_seconds()),
                _ => String::new(),
            };
            vec![
                name,
                json!(status),
                json!(format!("{succeeded}/{completions}")),
                json!(duration),
                created,
            ]
        }
        Backend::InferenceService => vec![
            name,
            json!(text(d, "/status/url")),
            json!(condition(d, "Ready").unwrap_or_default()),
            traffic(d, |t| t["tag"] == "prev"),
            traffic(d, |t| t["latestRevision"] == true),
            created,
        ],
        Backend::Experiment | Backend::Trial => vec![
            name,
            json!(last_condition(d, "type")),
            json!(last_condition(d, "status")),
            created,
        ],
        Backend::Notebook => {
            let ready = d
                .pointer("/status/readyReplicas")
                .and_then(Value::as_u64)
                .unwrap_or(0);
            let stopped = d
                .pointer("/metadata/annotations/kubeflow-resource-stopped")
                .is_some();
            let status = if stopped {
                "Stopped".to_string()
            } else {
                text(d, "/status/conditions/0/reason")
            };
            vec![name, json!(format!("{ready}/1")), json!(status), created]
        }
        Backend::Suggestion => vec![
            name,
            json!(last_condition(d, "type")),
            json!(last_condition(d, "status")),
            json!(text(d, "/spec/requests")),
            json!(text(d, "/status/suggestionCount")),
            created,
        ],
        Backend::View(View::Pod) => {
            let statuses = d.pointer("/status/containerStatuses").and_then(Value::as_array);
            let total = statuses.map_or(0, Vec::len);
            let ready = statuses.map_or(0, |s| s.iter().filter(|c| c["ready"] == true).count());
            let reason = d
                .pointer("/status/containerStatuses/0/state/terminated/reason")
                .or_else(|| d.pointer("/status/containerStatuses/0/state/waiting/reason"))
                .and_then(Value::as_str)
                .filter(|r| !r.is_empty())
                .map(str::to_string)
                .unwrap_or_else(|| text(d, "/status/phase"));
            vec![
                name,
                json!(format!("{ready}/{total}")),
                json!(reason),
                json!(text(d, "/status/containerStatuses/0/restartCount")),
                created,
            ]
        }
        Backend::View(View::Node) => vec![
            name,
            json!(if condition(d, "Ready").as_deref() == Some("True") {
                "Ready"
            } else {
                "NotReady"
            }),
            json!("control-plane"),
            created,
            json!(text(d, "/status/nodeInfo/kubeletVersion")),
        ],
        Backend::View(View::Namespace) => vec![name, json!(text(d, "/status/phase")), created],
        Backend::View(View::Event) => vec![
            json!(age(d, "/lastTimestamp")),
            json!(text(d, "/type")),
            json!(text(d, "/reason")),
            json!(format!(
                "{}/{}",
                text(d, "/involvedObject/kind").to_lowercase(),
                text(d, "/involvedObject/name")
            )),
            json!(text(d, "/message")),
        ],
        Backend::View(View::ClusterServingRuntime) => vec![
            name,
            json!(false),
            json!(text(d, "/spec/supportedModelFormats/0/name")),
            created,
        ],
    }
}

/// The row's object: `PartialObjectMetadata` unless the whole object was asked for.
fn row_object(d: &Value, whole: bool) -> Value {
    if whole {
        return d.clone();
    }
    json!({
        "kind": "PartialObjectMetadata",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": d.get("metadata").cloned().unwrap_or_else(|| json!({})),
    })
}

/// The `Table` of a list (`items`) or of one object.
pub fn table(kind: &KindDef, answer: &Value, whole: bool) -> Value {
    let items: Vec<&Value> = match answer.get("items").and_then(Value::as_array) {
        Some(items) => items.iter().collect(),
        None => vec![answer],
    };
    let definitions: Vec<Value> = columns(kind)
        .into_iter()
        .enumerate()
        .map(|(i, (name, kind))| {
            json!({
                "name": name,
                "type": kind,
                "format": if name == "Name" { "name" } else { "" },
                "description": "",
                // kubectl shows priority-0 columns without `-o wide`.
                "priority": if i < 6 { 0 } else { 1 },
            })
        })
        .collect();
    let rows: Vec<Value> = items
        .into_iter()
        .map(|d| json!({"cells": cells(kind, d), "object": row_object(d, whole)}))
        .collect();
    let mut metadata =
        json!({"resourceVersion": answer.pointer("/metadata/resourceVersion").cloned().unwrap_or(json!(""))});
    if let Some(next) = answer.pointer("/metadata/continue") {
        metadata["continue"] = next.clone();
    }
    json!({
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": metadata,
        "columnDefinitions": definitions,
        "rows": rows,
    })
}

/// Answers a `Table` in place of a list or object of a served kind when asked for.
pub async fn tables(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let parts: Vec<String> = req
        .path()
        .trim_matches('/')
        .split('/')
        .map(str::to_string)
        .collect();
    let refs: Vec<&str> = parts.iter().map(String::as_str).collect();
    // Only the kind's own collection or item, not a subresource such as `log`.
    let kind = kinds::for_path(&refs).filter(|k| {
        let at = refs.iter().rposition(|p| *p == k.plural);
        at.is_some_and(|at| refs.len() <= at + 2)
    });
    let whole = req.query_string().split('&').any(|p| p == "includeObject=Object");
    let wanted = wants_table(&req);
    let res = next.call(req).await?.map_into_boxed_body();
    let Some(kind) = kind.filter(|_| wanted) else {
        return Ok(res);
    };
    let json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !res.status().is_success() || !json {
        return Ok(res);
    }
    let (req, res) = res.into_parts();
    let (head, body) = res.into_parts();
    let bytes = actix_web::body::to_bytes(body).await.unwrap_or_default();
    let Ok(answer) = serde_json::from_slice::<Value>(&bytes) else {
        return Ok(ServiceResponse::new(req, head.set_body(BoxBody::new(bytes))));
    };
    let mut out = HttpResponse::build(head.status());
    out.insert_header((
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json;as=Table;v=v1;g=meta.k8s.io"),
    ));
    Ok(ServiceResponse::new(
        req,
        out.body(table(kind, &answer, whole).to_string()),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_job_list_prints_as_kubectl_does() {
        let list = json!({"metadata": {"resourceVersion": "7"}, "items": [{
            "metadata": {"name": "pi", "creationTimestamp": "2020-01-01T00:00:00Z"},
            "spec": {"completions": 2},
            "status": {"succeeded": 2, "startTime": "2020-01-01T00:00:00Z",
                "completionTime": "2020-01-01T00:00:09Z",
                "conditions": [{"type": "Complete", "status": "True"}]},
        }]});
        let t = table(&kinds::JOB, &list, false);
        assert_eq!(t["kind"], "Table");
        let names: Vec<&str> = t["columnDefinitions"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Name", "Status", "Completions", "Duration", "Age"]);
        assert_eq!(t["rows"][0]["cells"][1], "Complete");
        assert_eq!(t["rows"][0]["cells"][2], "2/2");
        assert_eq!(t["rows"][0]["cells"][3], "9s");
        assert_eq!(t["rows"][0]["object"]["kind"], "PartialObjectMetadata");
        assert_eq!(t["metadata"]["resourceVersion"], "7");
    }
}
