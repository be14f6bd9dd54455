//! The notebook controller, after Kubeflow's notebook-controller (a StatefulSet of one
//! pod per Notebook, its status mirrored into the Notebook's) and culler
//! (`pkg/culler`). Level-triggered: each pass reads the notebook, its server workloads
//! and the server itself, and moves one step towards what the spec and the stop
//! annotation ask for. Safe to run at any time and any number of times: the server to
//! run next is recorded in `status.hearth` (id, port, token) before it is submitted,
//! and submission is idempotent on the id, so a crash in between never runs two.
//!
//! A daemon restart re-adopts running servers: their workloads outlive the daemon under
//! their shims (the scheduler's `recover`), and the first pass probes them again.

use std::time::Duration;

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::jupyter::{self, Probe};
use super::spec::{self, NotebookSpec, LAST_ACTIVITY_ANNOTATION, PURGE_ANNOTATION, STOPPED_ANNOTATION};
use super::{NotebookError, Notebooks, Upstream};
use crate::runtime::{Owner, Workload};
use crate::scheduler::{PriorityClass, SchedulerError, WorkloadPhase, WorkloadRecord, WorkloadRequest};
use crate::store::resources::{self, Resource};

/// The key of `status` with Hearth's bookkeeping (never shown to clients).
pub const HEARTH_STATUS: &str = "hearth";
/// Kubernetes' ceiling on a crash-looping container's restart delay.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How soon to look again at a server that is starting or winding down: a probe of a
/// starting server is one refused connection, and its cadence is added to start-up.
const STARTING_POLL: Duration = Duration::from_millis(25);
/// How soon to try again when the server cannot be submitted (no Jupyter found).
const SUBMIT_RETRY: Duration = Duration::from_secs(30);

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

pub fn workload_id(uid: &str, n: usize) -> String {
    format!("notebook-{uid}-{n}")
}

fn annotation<'a>(resource: &'a Resource, key: &str) -> Option<&'a str> {
    resource.metadata.get("annotations")?.get(key)?.as_str()
}

/// The server recorded in `status.hearth`: planned or running.
#[derive(Debug, Clone, PartialEq)]
struct Planned {
    workload: String,
    port: u16,
    token: String,
    generation: i64,
}

impl Planned {
    fn of(status: &Value) -> Option<Planned> {
        let h = status.get(HEARTH_STATUS)?;
        Some(Planned {
            workload: h.get("workload")?.as_str()?.to_string(),
            port: u16::try_from(h.get("port")?.as_u64()?).ok()?,
            token: h.get("token")?.as_str()?.to_string(),
            generation: h.get("generation")?.as_i64()?,
        })
    }
}

/// Crashes in a row, as counted in `status.hearth.restarts`.
fn restarts(status: &Value) -> u32 {
    status
        .pointer("/hearth/restarts")
        .and_then(Value::as_u64)
        .and_then(|n| u32::try_from(n).ok())
        .unwrap_or(0)
}

fn backoff(base_seconds: f64, crashes: u32) -> Duration {
    let factor = 2f64.powi(i32::try_from(crashes.saturating_sub(1)).unwrap_or(30).min(30));
    Duration::try_from_secs_f64(base_seconds.max(0.0) * factor)
        .unwrap_or(MAX_BACKOFF)
        .min(MAX_BACKOFF)
}

/// Kubeflow's status: `readyReplicas`, `containerState` and `conditions` (one
/// condition per type, its `lastTransitionTime` kept while its status holds).
struct Shape<'a> {
    ready: bool,
    container_state: Value,
    /// `(type, status, reason, message)`.
    condition: (&'a str, bool, &'a str, String),
}

fn shaped(before: &Value, shape: Shape, now: DateTime<Utc>) -> Value {
    let (kind, value, reason, message) = shape.condition;
    let text = if value { "True" } else { "False" };
    let previous = before.get("conditions").and_then(Value::as_array).and_then(|cs| {
        cs.iter()
            .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    });
    let same = previous.is_some_and(|c| {
        c.get("status").and_then(Value::as_str) == Some(text)
            && c.get("reason").and_then(Value::as_str) == Some(reason)
            && c.get("message").and_then(Value::as_str) == Some(message.as_str())
    });
    let condition = match previous {
        Some(c) if same => c.clone(),
        _ => {
            let transition = previous
                .filter(|c| c.get("status").and_then(Value::as_str) == Some(text))
                .and_then(|c| c.get("lastTransitionTime").cloned())
                .unwrap_or_else(|| json!(rfc3339(now)));
            json!({
                "type": kind,
                "status": text,
                "reason": reason,
                "message": message,
                "lastProbeTime": rfc3339(now),
                "lastTransitionTime": transition,
            })
        }
    };
    let mut status = json!({
        "readyReplicas": i32::from(shape.ready),
        "containerState": shape.container_state,
        "conditions": [condition],
    });
    if let Some(h) = before.get(HEARTH_STATUS) {
        status[HEARTH_STATUS] = h.clone();
    }
    status
}

impl Notebooks {
    pub async fn all_uids(&self) -> Result<Vec<String>, NotebookError> {
        Ok(self
            .store
            .call(|conn| resources::uids_where(conn, spec::KIND, |_| true))
            .await?)
    }

    async fn write_status(&self, uid: &str, status: Value) -> Result<(), NotebookError> {
        let uid = uid.to_string();
        self.store
            .call(move |conn| resources::update_status(conn, &uid, &status, None).map(|_| ()))
            .await?;
        Ok(())
    }

    async fn event(&self, uid: &str, kind: &str, reason: &str, message: &str) -> Result<(), NotebookError> {
        let (uid, kind, reason, message) = (
            uid.to_string(),
            kind.to_string(),
            reason.to_string(),
            message.to_string(),
        );
        self.store
            .call(move |conn| resources::record_event(conn, &uid, &kind, &reason, &message))
            .await?;
        Ok(())
    }

    /// Writes the shaped status when it changed, with an event when the condition's
    /// reason did.
    async fn settle(&self, nb: &Resource, status: Value, warning: bool) -> Result<(), NotebookError> {
        if status == nb.status {
            return Ok(());
        }
        let reason_of = |s: &Value| {
            s.pointer("/conditions/0/reason")
                .and_then(Value::as_str)
                .map(str::to_string)
        };
        let (old, new) = (reason_of(&nb.status), reason_of(&status));
        if old != new {
            if let Some(reason) = new.as_deref().filter(|r| !r.is_empty()) {
                let message = status
                    .pointer("/conditions/0/message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_string();
                self.event(
                    &nb.uid,
                    if warning { "Warning" } else { "Normal" },
                    reason,
                    &message,
                )
                .await?;
            }
        }
        self.write_status(&nb.uid, status).await
    }

    async fn stop_active(&self, records: &[WorkloadRecord]) -> Result<usize, NotebookError> {
        let mut stopping = 0;
        for record in records.iter().filter(|r| !r.phase.is_final()) {
            stopping += 1;
            match self.scheduler.stop(&record.id).await {
                Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stopping)
    }

    /// The server's root dir: the claim's workspace, or the notebook's scratch dir.
    fn root_dir(&self, nb: &Resource, parsed: &NotebookSpec) -> std::path::PathBuf {
        match &parsed.workspace {
            Some(w) => self.workspace_dir(&nb.namespace, &w.claim_name),
            None => self.scratch_dir(&nb.namespace, &nb.name),
        }
    }

    /// Makes the root dir, owned by the identity the server runs as.
    fn prepare_root(
        &self,
        nb: &Resource,
        parsed: &NotebookSpec,
        root: &std::path::Path,
    ) -> Result<(), NotebookError> {
        let err = |source| NotebookError::Workspace {
            path: root.display().to_string(),
            source,
        };
        std::fs::create_dir_all(root).map_err(err)?;
        let identities = crate::runtime::identity::global();
        let run_as = identities
            .for_workload(&nb.namespace, parsed.security_context.as_ref())
            .map_err(|e| NotebookError::Field(e.into_field_error()))?;
        let base = if parsed.workspace.is_some() {
            self.data_dir.join("workspaces")
        } else {
            self.data_dir.join("notebooks")
        };
        identities.hand_over(&run_as, &base, root).map_err(err)?;
        Ok(())
    }

    fn workload(
        &self,
        nb: &Resource,
        parsed: &NotebookSpec,
        planned: &Planned,
        argv: Vec<String>,
    ) -> Workload {
        let prefix = jupyter::base_url(&nb.namespace, &nb.name);
        let mut env = vec![
            ("NB_PREFIX".to_string(), prefix.trim_end_matches('/').to_string()),
            ("JUPYTER_TOKEN".to_string(), planned.token.clone()),
        ];
        env.extend(parsed.env.iter().cloned());
        Workload {
            id: planned.workload.clone(),
            owner: Owner {
                kind: spec::KIND.into(),
                namespace: nb.namespace.clone(),
                name: nb.name.clone(),
                uid: nb.uid.clone(),
            },
            labels: [
                ("notebook-name".to_string(), nb.name.clone()),
                ("statefulset".to_string(), nb.name.clone()),
            ]
            .into(),
            image: parsed.image.clone(),
            command: argv,
            env,
            working_dir: Some(self.root_dir(nb, parsed)),
            // The workspace at its host path, where `root_dir` and the proxy expect it.
            mounts: vec![crate::runtime::Mount {
                source: self.root_dir(nb, parsed),
                target: self.root_dir(nb, parsed),
                read_only: false,
            }],
            ports: vec![planned.port],
            resources: parsed.resources,
            gpu_uuids: Vec::new(),
            active_deadline_seconds: None,
            termination_grace_seconds: parsed.termination_grace_seconds,
            security_context: parsed.security_context.clone(),
        }
    }

    /// Submits the planned server (again, after a crash between planning and
    /// submitting: the same id is a no-op for the scheduler).
    async fn submit(
        &self,
        nb: &Resource,
        parsed: &NotebookSpec,
        planned: &Planned,
    ) -> Result<Result<(), String>, NotebookError> {
        let capabilities = self.scheduler.runtime().capabilities();
        let command = match self.config.command.as_deref().filter(|c| !c.is_empty()) {
            // The image's own Jupyter, found on the image's PATH.
            None if capabilities.runs_images => vec!["jupyter".to_string(), "lab".to_string()],
            configured => match jupyter::server_command(configured, self.path_prefix.as_deref()) {
                Ok(c) => c,
                Err(message) => return Ok(Err(message)),
            },
        };
        let root = self.root_dir(nb, parsed);
        self.prepare_root(nb, parsed, &root)?;
        let argv = jupyter::argv(
            command,
            planned.port,
            &jupyter::base_url(&nb.namespace, &nb.name),
            &root,
            capabilities.own_network,
        );
        let request = WorkloadRequest {
            workload: self.workload(nb, parsed, planned, argv),
            priority: PriorityClass::Notebook,
        };
        match self.scheduler.submit(request).await {
            Ok(_) => Ok(Ok(())),
            Err(SchedulerError::Unsatisfiable(message)) => Ok(Err(message)),
            Err(e) => Err(e.into()),
        }
    }

    /// Records the next server in `status.hearth` (before it is submitted).
    async fn plan(
        &self,
        nb: &Resource,
        records: &[WorkloadRecord],
        crashes: u32,
    ) -> Result<Planned, NotebookError> {
        let port = jupyter::free_port().map_err(|source| NotebookError::Workspace {
            path: "127.0.0.1:0".into(),
            source,
        })?;
        let planned = Planned {
            workload: workload_id(&nb.uid, records.len()),
            port,
            token: jupyter::new_token(),
            generation: nb.generation,
        };
        let mut status = if nb.status.is_object() {
            nb.status.clone()
        } else {
            json!({})
        };
        status[HEARTH_STATUS] = json!({
            "workload": planned.workload,
            "port": planned.port,
            "token": planned.token,
            "generation": planned.generation,
            "restarts": crashes,
        });
        self.write_status(&nb.uid, status).await?;
        Ok(planned)
    }

    /// Deletion: the server stops, the scratch dir goes, the workspace too when the
    /// purge annotation asks, then the object.
    async fn finish_deletion(
        &self,
        nb: &Resource,
        records: &[WorkloadRecord],
    ) -> Result<Option<Duration>, NotebookError> {
        self.set_upstream(&nb.namespace, &nb.name, None);
        if self.stop_active(records).await? > 0 {
            return Ok(Some(STARTING_POLL));
        }
        let scratch = self.scratch_dir(&nb.namespace, &nb.name);
        let mut remove = vec![scratch];
        if annotation(nb, PURGE_ANNOTATION) == Some("true") {
            if let Ok(parsed) = spec::parse(&nb.spec) {
                if let Some(w) = parsed.workspace {
                    remove.push(self.workspace_dir(&nb.namespace, &w.claim_name));
                }
            }
        }
        for dir in remove {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(source) => {
                    return Err(NotebookError::Workspace {
                        path: dir.display().to_string(),
                        source,
                    })
                }
            }
        }
        let uid = nb.uid.clone();
        self.store.call(move |conn| resources::delete(conn, &uid)).await?;
        Ok(None)
    }

    /// Sets the stop annotation (and the last activity seen), as Kubeflow's culler
    /// does; the next pass stops the server.
    async fn cull(
        &self,
        nb: &Resource,
        last: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), NotebookError> {
        let uid = nb.uid.clone();
        let (stopped, activity) = (rfc3339(now), rfc3339(last));
        self.store
            .call(move |conn| {
                let Some(current) = resources::get_by_uid(conn, &uid)? else {
                    return Ok(());
                };
                let mut metadata = current.metadata.clone();
                if !metadata.is_object() {
                    metadata = json!({});
                }
                if !metadata.get("annotations").is_some_and(Value::is_object) {
                    metadata["annotations"] = json!({});
                }
                metadata["annotations"][STOPPED_ANNOTATION] = json!(stopped);
                metadata["annotations"][LAST_ACTIVITY_ANNOTATION] = json!(activity);
                resources::set_metadata(conn, &uid, &metadata, current.resource_version)?;
                Ok(())
            })
            .await?;
        self.event(
            &nb.uid,
            "Normal",
            "Culled",
            &format!(
                "idle since {} (over {} minutes): stopped, as Kubeflow's culler does; remove the {STOPPED_ANNOTATION} annotation to start it again",
                rfc3339(last),
                self.config.cull_idle_time_minutes
            ),
        )
        .await
    }

    /// Reconciles one notebook; returns when to look again.
    pub async fn reconcile(
        &self,
        http: &awc::Client,
        uid: String,
    ) -> Result<Option<Duration>, NotebookError> {
        let key = uid.clone();
        let Some(nb) = self
            .store
            .call(move |conn| resources::get_by_uid(conn, &key))
            .await?
        else {
            return Ok(None);
        };
        let records = self.scheduler.list_by_owner(&nb.uid).await?;
        if nb.deletion_requested_at.is_some() {
            return self.finish_deletion(&nb, &records).await;
        }
        let now = Utc::now();
        let parsed = match spec::parse(&nb.spec) {
            Ok(p) => p,
            Err(e) => {
                // Stored before today's checks: left stopped, with the reason.
                self.set_upstream(&nb.namespace, &nb.name, None);
                self.stop_active(&records).await?;
                let status = shaped(
                    &nb.status,
                    Shape {
                        ready: false,
                        container_state: json!({}),
                        condition: ("Ready", false, "InvalidSpec", e.to_string()),
                    },
                    now,
                );
                self.settle(&nb, status, true).await?;
                return Ok(None);
            }
        };

        if annotation(&nb, STOPPED_ANNOTATION).is_some() {
            self.set_upstream(&nb.namespace, &nb.name, None);
            let stopping = self.stop_active(&records).await?;
            let mut status = shaped(
                &nb.status,
                Shape {
                    ready: false,
                    container_state: json!({}),
                    condition: (
                        "Ready",
                        false,
                        "Stopped",
                        format!("stopped by the {STOPPED_ANNOTATION} annotation; the workspace is kept"),
                    ),
                },
                now,
            );
            // A start after a stop is a fresh start (a new server), not a crash.
            if let Some(h) = status.get_mut(HEARTH_STATUS).and_then(Value::as_object_mut) {
                h.insert("restarts".into(), json!(0));
                h.remove("workload");
            }
            self.settle(&nb, status, false).await?;
            return Ok((stopping > 0).then_some(STARTING_POLL));
        }

        let planned = Planned::of(&nb.status);
        let current = planned
            .as_ref()
            .and_then(|p| records.iter().find(|r| r.id == p.workload));
        let crashes = restarts(&nb.status);
        match (planned, current) {
            // Planned, not yet submitted (or lost before it was): submit it.
            (Some(planned), None) if planned.generation == nb.generation => {
                if let Err(message) = self.submit(&nb, &parsed, &planned).await? {
                    let status = shaped(
                        &nb.status,
                        Shape {
                            ready: false,
                            container_state: json!({"waiting": {"reason": "CreateContainerError", "message": message}}),
                            condition: ("Ready", false, "CreateContainerError", message.clone()),
                        },
                        now,
                    );
                    self.settle(&nb, status, true).await?;
                    return Ok(Some(SUBMIT_RETRY));
                }
                Ok(Some(Duration::ZERO))
            }
            (None, _) | (Some(_), None) => {
                self.plan(&nb, &records, 0).await?;
                Ok(Some(Duration::ZERO))
            }
            (Some(planned), Some(record)) => {
                self.follow(http, &nb, &records, planned, record, crashes, now)
                    .await
            }
        }
    }

    /// The planned server exists: mirror its state, restart it after a crash or a spec
    /// change, cull it when idle.
    #[allow(
        clippy::too_many_arguments,
        reason = "one pass's facts, named at the one call"
    )]
    async fn follow(
        &self,
        http: &awc::Client,
        nb: &Resource,
        records: &[WorkloadRecord],
        planned: Planned,
        record: &WorkloadRecord,
        crashes: u32,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, NotebookError> {
        let (ns, name) = (nb.namespace.as_str(), nb.name.as_str());
        if planned.generation != nb.generation {
            // The template changed: the server restarts with it (a StatefulSet rollout).
            self.set_upstream(ns, name, None);
            if self.stop_active(records).await? > 0 {
                return Ok(Some(STARTING_POLL));
            }
            self.plan(nb, records, 0).await?;
            return Ok(Some(Duration::ZERO));
        }
        match record.phase {
            WorkloadPhase::Queued => {
                let reason = record
                    .pending_reason
                    .clone()
                    .unwrap_or_else(|| "waiting in the queue".into());
                let status = shaped(
                    &nb.status,
                    Shape {
                        ready: false,
                        container_state: json!({"waiting": {"reason": "Pending", "message": reason}}),
                        condition: ("PodScheduled", false, "Unschedulable", reason.clone()),
                    },
                    now,
                );
                self.settle(nb, status, false).await?;
                // Workload events wake this notebook when it is admitted.
                Ok(Some(Duration::from_secs(5)))
            }
            WorkloadPhase::Starting | WorkloadPhase::Running => {
                let started = record
                    .started_at
                    .as_deref()
                    .and_then(|s| parse_time(Some(s)))
                    .unwrap_or(now);
                let base = jupyter::base_url(ns, name);
                match jupyter::probe(http, planned.port, &base, &planned.token, now).await {
                    Probe::Ready { last_activity } => {
                        self.set_upstream(
                            ns,
                            name,
                            Some(Upstream {
                                port: planned.port,
                                token: planned.token.clone(),
                            }),
                        );
                        let mut status = shaped(
                            &nb.status,
                            Shape {
                                ready: true,
                                container_state: json!({"running": {"startedAt": rfc3339(started)}}),
                                condition: ("Ready", true, "Running", "the Jupyter server answers".into()),
                            },
                            now,
                        );
                        // Up and answering: the crash count starts again.
                        if let Some(h) = status.get_mut(HEARTH_STATUS).and_then(Value::as_object_mut) {
                            h.insert("restarts".into(), json!(0));
                        }
                        self.settle(nb, status, false).await?;
                        let period =
                            Duration::try_from_secs_f64(self.config.idleness_check_period_seconds.max(0.05))
                                .unwrap_or(Duration::from_secs(60));
                        if self.config.enable_culling {
                            let last = last_activity.unwrap_or(started).max(started);
                            let idle_for = now.signed_duration_since(last);
                            let limit = TimeDelta::try_milliseconds(
                                (self.config.cull_idle_time_minutes * 60_000.0) as i64,
                            )
                            .unwrap_or(TimeDelta::MAX);
                            if idle_for > limit {
                                self.cull(nb, last, now).await?;
                                return Ok(Some(Duration::ZERO));
                            }
                        }
                        Ok(Some(period))
                    }
                    Probe::NotReady(why) => {
                        self.set_upstream(ns, name, None);
                        let waited = now.signed_duration_since(started).to_std().unwrap_or_default();
                        if waited > Duration::from_secs(self.config.start_timeout_seconds) {
                            // Never answered: a failed start, restarted with backoff.
                            self.scheduler.stop(&record.id).await.or_else(|e| match e {
                                SchedulerError::NotFound(_) => Ok(()),
                                other => Err(other),
                            })?;
                            self.event(
                                &nb.uid,
                                "Warning",
                                "Unhealthy",
                                &format!(
                                    "the Jupyter server did not answer within {} s: {why}",
                                    self.config.start_timeout_seconds
                                ),
                            )
                            .await?;
                            return Ok(Some(STARTING_POLL));
                        }
                        let status = shaped(
                            &nb.status,
                            Shape {
                                ready: false,
                                container_state: json!({"running": {"startedAt": rfc3339(started)}}),
                                condition: (
                                    "Ready",
                                    false,
                                    "ContainersNotReady",
                                    "the Jupyter server is starting".into(),
                                ),
                            },
                            now,
                        );
                        self.settle(nb, status, false).await?;
                        Ok(Some(STARTING_POLL))
                    }
                }
            }
            WorkloadPhase::Succeeded | WorkloadPhase::Failed | WorkloadPhase::Stopped => {
                self.set_upstream(ns, name, None);
                // Not asked to stop (that is the annotation, handled before): a crash.
                let crashes = crashes.saturating_add(1);
                let finished = parse_time(record.finished_at.as_deref()).unwrap_or(now);
                let delay = backoff(self.config.restart_backoff_base_seconds, crashes);
                let due = finished + TimeDelta::from_std(delay).unwrap_or(TimeDelta::MAX);
                let exit = record.exit.as_ref();
                let message = format!(
                    "the Jupyter server ended ({}{}); restarting in {} s",
                    exit.map(|e| e.reason.as_str()).unwrap_or("no exit recorded"),
                    exit.filter(|e| !e.message.is_empty())
                        .map(|e| format!(": {}", e.message))
                        .unwrap_or_default(),
                    delay.as_secs()
                );
                if now < due {
                    let status = shaped(
                        &nb.status,
                        Shape {
                            ready: false,
                            container_state: json!({"waiting": {"reason": "CrashLoopBackOff", "message": message}}),
                            condition: ("Ready", false, "CrashLoopBackOff", message.clone()),
                        },
                        now,
                    );
                    self.settle(nb, status, true).await?;
                    return Ok(Some(due.signed_duration_since(now).to_std().unwrap_or_default()));
                }
                self.plan(nb, records, crashes).await?;
                Ok(Some(Duration::ZERO))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crash_restarts_back_off_doubling_up_to_five_minutes() {
        assert_eq!(backoff(10.0, 1), Duration::from_secs(10));
        assert_eq!(backoff(10.0, 2), Duration::from_secs(20));
        assert_eq!(backoff(10.0, 3), Duration::from_secs(40));
        assert_eq!(backoff(10.0, 20), MAX_BACKOFF);
        assert_eq!(backoff(0.5, 1), Duration::from_millis(500));
    }

    #[test]
    fn status_keeps_the_transition_time_while_the_condition_holds() {
        let t0 = Utc::now();
        let shape = |reason: &str| Shape {
            ready: false,
            container_state: json!({}),
            condition: ("Ready", false, "Stopped", reason.to_string()),
        };
        let first = shaped(&json!({"hearth": {"port": 1}}), shape("a"), t0);
        assert_eq!(first["readyReplicas"], 0);
        assert_eq!(first["hearth"]["port"], 1);
        let later = t0 + TimeDelta::seconds(5);
        assert_eq!(shaped(&first, shape("a"), later), first);
        let changed = shaped(&first, shape("b"), later);
        assert_eq!(
            changed["conditions"][0]["lastTransitionTime"],
            first["conditions"][0]["lastTransitionTime"]
        );
        assert_ne!(
            changed["conditions"][0]["lastProbeTime"],
            first["conditions"][0]["lastProbeTime"]
        );
    }
}
