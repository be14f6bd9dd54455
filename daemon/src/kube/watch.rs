//! `watch=true`: Kubernetes' watch stream, one JSON event per line
//! (`{"type": "ADDED|MODIFIED|DELETED|BOOKMARK|ERROR", "object": ...}`), read from the
//! store's change log and woken right after each commit.
//!
//! Without `resourceVersion` (or with 0) the current objects come first as `ADDED`,
//! as the API server sends them; with one, the changes after it. A version older than
//! the log keeps is answered with one `ERROR` event holding a 410 `Expired` `Status`,
//! after which a client lists again. Bookmarks (`allowWatchBookmarks=true`) carry
//! only `metadata.resourceVersion`. The stream ends after `timeoutSeconds`.

use std::convert::Infallible;
use std::time::Duration;

use actix_web::web::Bytes;
use actix_web::HttpResponse;
use serde_json::{json, Value};
use tokio::sync::mpsc;

use super::kinds::KindDef;
use super::params::ListOptions;
use super::status::Status;
use crate::auth::Principal;
use crate::http::errors::ApiError;
use crate::http::AppState;
use crate::store::resources::{self, ChangeOp};
use crate::store::{Store, StoreError};

/// How long a watch runs without `timeoutSeconds` (the API server picks 30–60 min).
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(1800);
/// How often a bookmark is sent when asked for (the API server: about a minute).
const BOOKMARK_EVERY: Duration = Duration::from_secs(30);
/// Changes read per store call.
const BATCH: usize = 500;

struct Filter {
    kind: &'static KindDef,
    namespace: Option<String>,
    caller: Principal,
    options: ListOptions,
}

impl Filter {
    fn keeps(&self, document: &Value) -> bool {
        let namespace = document
            .pointer("/metadata/namespace")
            .and_then(Value::as_str)
            .unwrap_or("");
        self.caller.can_access(namespace)
            && self.options.labels.matches(document)
            && self.options.fields.matches(document)
    }
}

/// One watch event and its newline; `type` first, as the API server writes it.
fn line(event_type: &str, object: &Value) -> Bytes {
    Bytes::from(format!("{{\"type\":\"{event_type}\",\"object\":{object}}}\n"))
}

pub async fn serve(
    kind: &'static KindDef,
    state: &AppState,
    namespace: Option<String>,
    caller: Principal,
    options: ListOptions,
) -> Result<HttpResponse, ApiError> {
    let timeout = match options.timeout_seconds {
        None | Some(0) => DEFAULT_TIMEOUT,
        Some(seconds) => Duration::from_secs(seconds),
    };
    let filter = Filter {
        kind,
        namespace,
        caller,
        options,
    };
    // Subscribed before the first read, so no commit falls between read and wait.
    let changes = state.store.changes();
    let store = state.store.clone();
    let start = initial(&store, &filter).await?;
    let (tx, rx) = mpsc::channel::<Bytes>(64);
    tokio::spawn(async move {
        if let Err(e) = pump(store, filter, start, changes, timeout, tx).await {
            tracing::warn!(error = %e, "watch stream ended by a store error");
        }
    });
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|bytes| (Ok::<_, Infallible>(bytes), rx))
    });
    Ok(HttpResponse::Ok()
        .content_type("application/json")
        .insert_header(("Cache-Control", "no-cache, private"))
        .streaming(body))
}

/// Where the stream starts: the events to send first, and the version after which
/// changes follow; or the 410 when that version is gone from the log.
enum Start {
    From { events: Vec<Bytes>, since: i64 },
    Expired { since: i64, oldest: i64 },
}

async fn initial(store: &Store, filter: &Filter) -> Result<Start, ApiError> {
    let kind = filter.kind;
    let namespace = filter.namespace.clone();
    match filter.options.resource_version {
        Some(since) if since > 0 => {
            let oldest = store
                .call(|conn| resources::oldest_resumable_version(conn))
                .await?;
            if since < oldest {
                return Ok(Start::Expired { since, oldest });
            }
            Ok(Start::From {
                events: Vec::new(),
                since,
            })
        }
        _ => {
            let (all, since) = store
                .call(move |conn| {
                    let since = resources::latest_version(conn)?;
                    Ok((
                        resources::list(conn, kind.store_kind, namespace.as_deref())?,
                        since,
                    ))
                })
                .await?;
            let events = all
                .into_iter()
                .map(|r| kind.render(r))
                .filter(|d| filter.keeps(d))
                .map(|d| line("ADDED", &d))
                .collect();
            Ok(Start::From { events, since })
        }
    }
}

async fn pump(
    store: Store,
    filter: Filter,
    start: Start,
    mut changes: tokio::sync::watch::Receiver<i64>,
    timeout: Duration,
    tx: mpsc::Sender<Bytes>,
) -> Result<(), StoreError> {
    let (events, mut since) = match start {
        Start::Expired { since, oldest } => {
            let status = Status::failure(
                410,
                "Expired",
                format!("too old resource version: {since} ({oldest})"),
                None,
            );
            let _ = tx.send(line("ERROR", &json!(status))).await;
            return Ok(());
        }
        Start::From { events, since } => (events, since),
    };
    for event in events {
        if tx.send(event).await.is_err() {
            return Ok(());
        }
    }
    let deadline = tokio::time::Instant::now() + timeout;
    let mut bookmark = tokio::time::interval_at(tokio::time::Instant::now() + BOOKMARK_EVERY, BOOKMARK_EVERY);
    let kind = filter.kind;
    loop {
        let namespace = filter.namespace.clone();
        let batch = store
            .call(move |conn| {
                resources::changes_since(conn, kind.store_kind, namespace.as_deref(), since, BATCH)
            })
            .await?;
        let full = batch.len() == BATCH;
        for change in batch {
            since = change.rv;
            let document = kind.render(change.object);
            if !filter.keeps(&document) {
                continue;
            }
            let event_type = match change.op {
                ChangeOp::Added => "ADDED",
                ChangeOp::Modified => "MODIFIED",
                ChangeOp::Deleted => "DELETED",
            };
            if tx.send(line(event_type, &document)).await.is_err() {
                return Ok(());
            }
        }
        if full {
            continue;
        }
        tokio::select! {
            changed = changes.changed() => {
                if changed.is_err() {
                    return Ok(());
                }
            }
            _ = bookmark.tick(), if filter.options.allow_bookmarks => {
                let object = json!({
                    "apiVersion": kind.api_version(),
                    "kind": kind.kind,
                    "metadata": {"resourceVersion": since.to_string()},
                });
                if tx.send(line("BOOKMARK", &object)).await.is_err() {
                    return Ok(());
                }
            }
            _ = tokio::time::sleep_until(deadline) => return Ok(()),
            _ = tx.closed() => return Ok(()),
        }
    }
}
