//! The Job controller. For one job it reads the spec, the status and the job's
//! workload attempts, and decides: submit the next attempt, wait out a backoff, stop
//! at the deadline, or declare the job complete or failed. Safe to run at any time and
//! any number of times: attempts have deterministic ids, so a crash between
//! "submitted" and "status written" never runs an attempt twice.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{json, Value};

use super::spec::{self, JobSpec};
use super::{JobError, Jobs};
use crate::runtime::{Owner, Workload};
use crate::scheduler::{PriorityClass, SchedulerError, WorkloadPhase, WorkloadRecord, WorkloadRequest};
use crate::store::resources::{self, Resource};

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

fn condition(kind: &str, reason: &str, message: &str, now: DateTime<Utc>) -> Value {
    json!({
        "type": kind,
        "status": "True",
        "reason": reason,
        "message": message,
        "lastProbeTime": rfc3339(now),
        "lastTransitionTime": rfc3339(now),
    })
}

fn finished_condition(status: &Value) -> Option<String> {
    status.get("conditions")?.as_array()?.iter().find_map(|c| {
        let kind = c.get("type")?.as_str()?;
        (matches!(kind, "Complete" | "Failed") && c.get("status")?.as_str()? == "True")
            .then(|| kind.to_string())
    })
}

fn describe_exit(record: &WorkloadRecord) -> String {
    match &record.exit {
        Some(exit) if !exit.message.is_empty() => exit.message.clone(),
        Some(exit) => exit.reason.clone(),
        None => "no exit recorded".into(),
    }
}

pub fn attempt_id(uid: &str, attempt: usize) -> String {
    format!("job-{uid}-{attempt}")
}

impl Jobs {
    pub async fn all_uids(&self) -> Result<Vec<String>, JobError> {
        // Filtered row by row in the store: finished jobs are never all in memory at once.
        Ok(self
            .store
            .call(|conn| {
                resources::uids_where(conn, spec::KIND, |r| {
                    r.deletion_requested_at.is_some()
                        || finished_condition(&r.status).is_none()
                        || r.spec.get("ttlSecondsAfterFinished").is_some()
                })
            })
            .await?)
    }

    async fn record_event(&self, uid: &str, kind: &str, reason: &str, message: &str) -> Result<(), JobError> {
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

    fn workload(
        &self,
        job: &Resource,
        spec: &JobSpec,
        attempt: usize,
        remaining_deadline: Option<u64>,
    ) -> Workload {
        Workload {
            id: attempt_id(&job.uid, attempt),
            owner: Owner {
                kind: spec::KIND.into(),
                namespace: job.namespace.clone(),
                name: job.name.clone(),
                uid: job.uid.clone(),
            },
            labels: [
                ("job-name".to_string(), job.name.clone()),
                ("attempt".to_string(), attempt.to_string()),
            ]
            .into(),
            image: spec.image.clone(),
            command: spec.command.clone(),
            env: spec.env.clone(),
            working_dir: spec.working_dir.clone().map(Into::into),
            mounts: Vec::new(),
            ports: Vec::new(),
            resources: spec.resources,
            gpu_uuids: Vec::new(),
            active_deadline_seconds: remaining_deadline,
            termination_grace_seconds: spec.termination_grace_seconds,
        }
    }

    /// Reconciles one job; returns when to look again.
    pub async fn reconcile(&self, uid: String) -> Result<Option<Duration>, JobError> {
        let key = uid.clone();
        let Some(job) = self
            .store
            .call(move |conn| resources::get_by_uid(conn, &key))
            .await?
        else {
            return Ok(None);
        };
        let attempts = self.scheduler.list_by_owner(&job.uid).await?;

        if job.deletion_requested_at.is_some() {
            let mut waiting = false;
            for attempt in attempts.iter().filter(|a| !a.phase.is_final()) {
                waiting = true;
                match self.scheduler.stop(&attempt.id).await {
                    Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            if waiting {
                return Ok(Some(Duration::from_millis(200)));
            }
            let uid = job.uid.clone();
            self.store.call(move |conn| resources::delete(conn, &uid)).await?;
            return Ok(None);
        }

        let now = Utc::now();
        let mut status = if job.status.is_object() {
            job.status.clone()
        } else {
            json!({})
        };
        let before = status.clone();

        if finished_condition(&status).is_some() {
            let ttl = job.spec.get("ttlSecondsAfterFinished").and_then(Value::as_u64);
            let done = parse_time(status.get("completionTime").and_then(Value::as_str))
                .or_else(|| parse_time(Some(&job.updated_at)));
            if let (Some(ttl), Some(done)) = (ttl, done) {
                let expiry = done + chrono::Duration::seconds(ttl as i64);
                if expiry <= now {
                    let uid = job.uid.clone();
                    self.store.call(move |conn| resources::delete(conn, &uid)).await?;
                    return Ok(None);
                }
                return Ok((expiry - now).to_std().ok());
            }
            return Ok(None);
        }

        let spec = match spec::parse(&job.spec) {
            Ok(spec) => spec,
            Err(e) => {
                status["conditions"] = json!([condition("Failed", "InvalidSpec", &e.to_string(), now)]);
                self.write_status(&job, status).await?;
                return Ok(None);
            }
        };

        let start = match parse_time(status.get("startTime").and_then(Value::as_str)) {
            Some(t) => t,
            None => {
                status["startTime"] = json!(rfc3339(now));
                now
            }
        };
        let active: Vec<&WorkloadRecord> = attempts.iter().filter(|a| !a.phase.is_final()).collect();
        let succeeded = attempts
            .iter()
            .filter(|a| a.phase == WorkloadPhase::Succeeded)
            .count();
        let failed_attempts: Vec<&WorkloadRecord> = attempts
            .iter()
            .filter(|a| matches!(a.phase, WorkloadPhase::Failed | WorkloadPhase::Stopped))
            .collect();
        let running = active
            .iter()
            .filter(|a| a.phase == WorkloadPhase::Running)
            .count();
        let deadline_at = spec
            .active_deadline_seconds
            .map(|s| start + chrono::Duration::seconds(s as i64));
        let deadline_hit = deadline_at.is_some_and(|d| d <= now)
            || failed_attempts
                .last()
                .and_then(|a| a.exit.as_ref())
                .is_some_and(|e| e.reason == "DeadlineExceeded");

        let mut requeue = None;
        let mut new_event: Option<(&str, &str, String)> = None;
        if succeeded > 0 {
            let finished = attempts
                .iter()
                .find(|a| a.phase == WorkloadPhase::Succeeded)
                .and_then(|a| a.finished_at.clone())
                .unwrap_or_else(|| rfc3339(now));
            status["completionTime"] = json!(finished);
            status["conditions"] = json!([
                condition(
                    "SuccessCriteriaMet",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now
                ),
                condition(
                    "Complete",
                    "CompletionsReached",
                    "Reached expected number of succeeded pods",
                    now
                )
            ]);
            new_event = Some(("Normal", "Completed", "Job completed".into()));
        } else if deadline_hit {
            for attempt in &active {
                match self.scheduler.stop(&attempt.id).await {
                    Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                    Err(e) => return Err(e.into()),
                }
            }
            let message = "Job was active longer than specified deadline";
            status["conditions"] = json!([
                condition("FailureTarget", "DeadlineExceeded", message, now),
                condition("Failed", "DeadlineExceeded", message, now)
            ]);
            new_event = Some(("Warning", "DeadlineExceeded", message.into()));
        } else if failed_attempts.len() as u64 > spec.backoff_limit {
            let last = failed_attempts
                .last()
                .map(|a| describe_exit(a))
                .unwrap_or_default();
            let message = format!("Job has reached the specified backoff limit (last attempt: {last})");
            status["conditions"] = json!([
                condition("FailureTarget", "BackoffLimitExceeded", &message, now),
                condition("Failed", "BackoffLimitExceeded", &message, now)
            ]);
            new_event = Some(("Warning", "BackoffLimitExceeded", message));
        } else if active.is_empty() {
            let backoff = match failed_attempts.len() {
                0 => Duration::ZERO,
                n => {
                    let secs = self.config.backoff_base_seconds * 2f64.powi(n as i32 - 1);
                    Duration::from_secs_f64(secs.clamp(0.0, 360.0))
                }
            };
            let last_end = failed_attempts
                .last()
                .and_then(|a| parse_time(a.finished_at.as_deref()));
            let ready_at = last_end.map(|t| t + chrono::Duration::from_std(backoff).unwrap_or_default());
            match ready_at.filter(|t| *t > now) {
                Some(t) => requeue = (t - now).to_std().ok(),
                None => {
                    let remaining = deadline_at.map(|d| (d - now).num_seconds().max(1) as u64);
                    let attempt = attempts.len();
                    let workload = self.workload(&job, &spec, attempt, remaining);
                    match self
                        .scheduler
                        .submit(WorkloadRequest {
                            workload,
                            priority: PriorityClass::Batch,
                        })
                        .await
                    {
                        Ok(record) => {
                            new_event = Some(match &record.pending_reason {
                                Some(reason) => {
                                    ("Normal", "Queued", format!("attempt {attempt} queued: {reason}"))
                                }
                                None => ("Normal", "SuccessfulCreate", format!("started attempt {attempt}")),
                            });
                            // Its phase may already have moved on; the event wakes us again.
                        }
                        Err(SchedulerError::Unsatisfiable(message)) => {
                            status["conditions"] =
                                json!([condition("Failed", "Unschedulable", &message, now)]);
                            new_event = Some(("Warning", "Unschedulable", message));
                        }
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }

        let attempts = self.scheduler.list_by_owner(&job.uid).await?;
        let active: Vec<&WorkloadRecord> = attempts.iter().filter(|a| !a.phase.is_final()).collect();
        let finished = finished_condition(&status).is_some();
        status["active"] = json!(if finished { 0 } else { active.len() });
        status["ready"] = json!(if finished {
            0
        } else {
            running.max(
                active
                    .iter()
                    .filter(|a| a.phase == WorkloadPhase::Running)
                    .count(),
            )
        });
        status["succeeded"] = json!(attempts
            .iter()
            .filter(|a| a.phase == WorkloadPhase::Succeeded)
            .count());
        status["failed"] = json!(attempts
            .iter()
            .filter(|a| matches!(a.phase, WorkloadPhase::Failed | WorkloadPhase::Stopped))
            .count());
        status["hearth"] = self.hearth_status(&attempts, &status);
        if !finished {
            if let Some(deadline) = deadline_at {
                let left = (deadline - now).to_std().unwrap_or_default();
                requeue = Some(requeue.map_or(left, |r: Duration| r.min(left)));
            }
        } else if let Some(ttl) = job.spec.get("ttlSecondsAfterFinished").and_then(Value::as_u64) {
            // Finished in this pass: come back when the TTL runs out, not at the next
            // periodic resync.
            let ttl = Duration::from_secs(ttl);
            requeue = Some(requeue.map_or(ttl, |r: Duration| r.min(ttl)));
        }

        if status != before {
            self.write_status(&job, status).await?;
        }
        if let Some((kind, reason, message)) = new_event {
            self.record_event(&job.uid, kind, reason, &message).await?;
        }
        Ok(requeue)
    }

    /// Hearth's own view, beside the upstream fields: where the job stands in the
    /// queue, which GPUs it holds, how the last attempt ended.
    fn hearth_status(&self, attempts: &[WorkloadRecord], status: &Value) -> Value {
        let last = attempts.last();
        let phase = if let Some(kind) = finished_condition(status) {
            if kind == "Complete" {
                "Succeeded"
            } else {
                "Failed"
            }
        } else {
            match last.map(|a| a.phase) {
                Some(WorkloadPhase::Running) | Some(WorkloadPhase::Starting) => "Running",
                _ => "Pending",
            }
        };
        let mut out = json!({ "phase": phase, "attempts": attempts.len() });
        if let Some(last) = last {
            out["workload"] = json!(last.id);
            if !last.gpu_uuids.is_empty() {
                out["gpus"] = json!(last.gpu_uuids);
            }
            if let Some(reason) = last
                .pending_reason
                .as_ref()
                .filter(|_| last.phase == WorkloadPhase::Queued)
            {
                out["reason"] = json!(reason);
            }
            if let Some(exit) = &last.exit {
                out["lastExit"] = json!({
                    "exitCode": exit.exit_code,
                    "signal": exit.signal,
                    "reason": exit.reason,
                    "message": exit.message,
                    "finishedAt": exit.finished_at,
                });
            }
        }
        out
    }

    async fn write_status(&self, job: &Resource, status: Value) -> Result<(), JobError> {
        let uid = job.uid.clone();
        match self
            .store
            .call(move |conn| resources::update_status(conn, &uid, &status, None))
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }
}
