//! The Job controller, after Kubernetes' `pkg/controller/job`. For one Job it reads the
//! spec, the status and the Job's workload attempts, and decides: start attempts (up to
//! `parallelism`, one per pending index for Indexed Jobs), wait out a backoff, stop at a
//! deadline or on suspension, or finish the Job. Safe to run at any time and any number
//! of times: attempts have deterministic ids, so a crash between "submitted" and "status
//! written" never runs an attempt twice.
//!
//! Finishing follows Kubernetes 1.31+: the interim condition (`FailureTarget` or
//! `SuccessCriteriaMet`) is written first, running attempts are stopped, and the
//! terminal condition (`Failed` or `Complete`) only once none runs, so the counters and
//! `status.hearth.lastExit` include the attempts that were stopped.
//!
//! Every time computed from stored values uses checked arithmetic: a Job stored before
//! its fields were bounded must not be able to panic the daemon.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use serde_json::{json, Value};

use super::spec::{self, CompletionMode, FailureAction, JobSpec, RestartPolicy};
use super::{JobError, Jobs};
use crate::model::strict::MAX_SECONDS;
use crate::runtime::{Owner, Workload};
use crate::scheduler::{PriorityClass, SchedulerError, WorkloadPhase, WorkloadRecord, WorkloadRequest};
use crate::store::resources::{self, Resource};

/// How many attempts one pass submits; the rest follow in the next pass, so one Job
/// with a large `parallelism` does not hold the controller.
const SUBMIT_PER_PASS: usize = 64;
/// Kubernetes' ceiling on the pod re-creation backoff.
const MAX_BACKOFF_SECONDS: f64 = 360.0;
/// How soon to look again while stopped attempts wind down.
const WIND_DOWN_POLL: Duration = Duration::from_millis(200);

fn parse_time(s: Option<&str>) -> Option<DateTime<Utc>> {
    s.and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|d| d.with_timezone(&Utc))
}

fn rfc3339(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
}

/// `t + seconds`, or `None` when it does not fit (a stored value past any bound).
fn plus_seconds(t: DateTime<Utc>, seconds: u64) -> Option<DateTime<Utc>> {
    let delta = TimeDelta::try_seconds(i64::try_from(seconds).ok()?)?;
    t.checked_add_signed(delta)
}

/// How long from `now` until `t` (zero if past), capped at [`MAX_SECONDS`].
fn until(t: DateTime<Utc>, now: DateTime<Utc>) -> Duration {
    let left = t.signed_duration_since(now).to_std().unwrap_or_default();
    left.min(Duration::from_secs(MAX_SECONDS))
}

/// The `SinceClock` key of the time since a Job's last failed attempt.
fn backoff_key(uid: &str) -> String {
    format!("{uid}/backoff")
}

fn earliest(a: Option<Duration>, b: Duration) -> Option<Duration> {
    Some(a.map_or(b, |a| a.min(b)))
}

fn condition_status<'a>(status: &'a Value, kind: &str) -> Option<&'a Value> {
    status
        .get("conditions")?
        .as_array()?
        .iter()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
}

fn condition_is_true(status: &Value, kind: &str) -> bool {
    condition_status(status, kind).and_then(|c| c.get("status")?.as_str()) == Some("True")
}

/// Sets the condition of `kind`, as Kubernetes' `ensureJobConditionStatus` does: a new
/// one is appended, an existing one keeps its `lastTransitionTime` unless its status
/// changes. Returns whether anything changed.
fn set_condition(
    status: &mut Value,
    kind: &str,
    value: bool,
    reason: &str,
    message: &str,
    now: DateTime<Utc>,
) -> bool {
    let text = if value { "True" } else { "False" };
    if !status.get("conditions").is_some_and(Value::is_array) {
        status["conditions"] = json!([]);
    }
    let Some(conditions) = status.get_mut("conditions").and_then(Value::as_array_mut) else {
        return false;
    };
    let fresh = json!({
        "type": kind,
        "status": text,
        "reason": reason,
        "message": message,
        "lastProbeTime": rfc3339(now),
        "lastTransitionTime": rfc3339(now),
    });
    match conditions
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        Some(existing) => {
            if existing.get("status").and_then(Value::as_str) == Some(text)
                && existing.get("reason").and_then(Value::as_str) == Some(reason)
            {
                return false;
            }
            *existing = fresh;
            true
        }
        None => {
            conditions.push(fresh);
            true
        }
    }
}

fn finished_condition(status: &Value) -> Option<String> {
    ["Complete", "Failed"]
        .into_iter()
        .find(|kind| condition_is_true(status, kind))
        .map(str::to_string)
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

/// Renders sorted indexes as Kubernetes writes `completedIndexes`: `"0-2,4"`.
pub fn index_ranges(indexes: &BTreeSet<u64>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut run: Option<(u64, u64)> = None;
    let push = |out: &mut Vec<String>, (a, b): (u64, u64)| {
        out.push(if a == b { a.to_string() } else { format!("{a}-{b}") });
    };
    for &i in indexes {
        run = match run {
            Some((a, b)) if b.checked_add(1) == Some(i) => Some((a, i)),
            Some(done) => {
                push(&mut out, done);
                Some((i, i))
            }
            None => Some((i, i)),
        };
    }
    if let Some(done) = run {
        push(&mut out, done);
    }
    out.join(",")
}

/// The exit code as a container runtime reports it: a signal is `128 + signal`.
fn exit_code(record: &WorkloadRecord) -> Option<i64> {
    let exit = record.exit.as_ref()?;
    exit.exit_code
        .map(i64::from)
        .or_else(|| exit.signal.map(|s| 128 + i64::from(s)))
}

/// One attempt with what its labels say about it.
struct Attempt<'a> {
    record: &'a WorkloadRecord,
    /// The completion index (Indexed Jobs).
    index: Option<u64>,
    /// The pod this attempt ran in: with `OnFailure` a restart reuses its pod.
    pod: u64,
    /// Whether the deadline it ran under was the Job's (not the pod template's).
    job_deadline: bool,
}

impl<'a> Attempt<'a> {
    fn of(number: usize, record: &'a WorkloadRecord) -> Attempt<'a> {
        let label = |key: &str| record.workload.labels.get(key);
        Attempt {
            record,
            index: label("index").and_then(|v| v.parse().ok()),
            pod: label("pod").and_then(|v| v.parse().ok()).unwrap_or(number as u64),
            // Attempts from before pod-level deadlines ran only under the Job's.
            job_deadline: label("deadline").is_none_or(|v| v == "job"),
        }
    }

    fn active(&self) -> bool {
        !self.record.phase.is_final()
    }

    fn phase(&self) -> WorkloadPhase {
        self.record.phase
    }
}

/// What the pod failure policy makes of a failed attempt.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Verdict {
    Count,
    Ignore,
    FailIndex,
    FailJob(usize),
}

fn verdict(spec: &JobSpec, attempt: &Attempt) -> Verdict {
    let Some(code) = exit_code(attempt.record) else {
        return Verdict::Count;
    };
    for (i, rule) in spec.pod_failure_policy.iter().enumerate() {
        if rule.matches(code) {
            return match rule.action {
                FailureAction::FailJob => Verdict::FailJob(i),
                FailureAction::FailIndex => Verdict::FailIndex,
                FailureAction::Ignore => Verdict::Ignore,
                FailureAction::Count => Verdict::Count,
            };
        }
    }
    Verdict::Count
}

/// How the Job ends: the reason and message of its conditions.
#[derive(Debug, Clone, PartialEq)]
struct Ending {
    success: bool,
    reason: String,
    message: String,
}

impl Ending {
    fn failed(reason: &str, message: impl Into<String>) -> Ending {
        Ending {
            success: false,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn complete(reason: &str, message: impl Into<String>) -> Ending {
        Ending {
            success: true,
            reason: reason.into(),
            message: message.into(),
        }
    }

    fn interim(&self) -> &'static str {
        if self.success {
            "SuccessCriteriaMet"
        } else {
            "FailureTarget"
        }
    }

    fn terminal(&self) -> &'static str {
        if self.success {
            "Complete"
        } else {
            "Failed"
        }
    }

    /// An ending decided in an earlier pass and written as its interim condition.
    fn recorded(status: &Value) -> Option<Ending> {
        ["FailureTarget", "SuccessCriteriaMet"]
            .into_iter()
            .find_map(|kind| {
                let c = condition_status(status, kind)?;
                (c.get("status")?.as_str()? == "True").then(|| Ending {
                    success: kind == "SuccessCriteriaMet",
                    reason: c.get("reason").and_then(Value::as_str).unwrap_or("").to_string(),
                    message: c.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
                })
            })
    }
}

/// Everything one pass derives from the attempts.
struct Tally {
    /// Failed attempts that count towards `backoffLimit` (not ignored by the policy).
    counted_failures: u64,
    /// Failed attempts shown in `status.failed` with `restartPolicy: Never`.
    failed_pods: u64,
    succeeded: u64,
    last_failure_at: Option<DateTime<Utc>>,
    fail_job: Option<String>,
    completed_indexes: BTreeSet<u64>,
    failed_indexes: BTreeSet<u64>,
    /// Indexes with an active attempt.
    active_indexes: BTreeSet<u64>,
    /// Latest attempt of each pod.
    pods: BTreeMap<u64, usize>,
    job_deadline_hit: bool,
}

impl Tally {
    fn new(job: &Resource, spec: &JobSpec, attempts: &[Attempt]) -> Tally {
        let mut tally = Tally {
            counted_failures: 0,
            failed_pods: 0,
            succeeded: 0,
            last_failure_at: None,
            fail_job: None,
            completed_indexes: BTreeSet::new(),
            failed_indexes: BTreeSet::new(),
            active_indexes: BTreeSet::new(),
            pods: BTreeMap::new(),
            job_deadline_hit: false,
        };
        let mut index_failures: BTreeMap<u64, u64> = BTreeMap::new();
        for (n, attempt) in attempts.iter().enumerate() {
            tally.pods.insert(attempt.pod, n);
            if attempt.active() {
                if let Some(i) = attempt.index {
                    tally.active_indexes.insert(i);
                }
                continue;
            }
            match attempt.phase() {
                WorkloadPhase::Succeeded => {
                    tally.succeeded += 1;
                    if let Some(i) = attempt.index {
                        tally.completed_indexes.insert(i);
                    }
                }
                // Stopped by Hearth (suspension, a Job deadline, the Job ending): shown
                // as failed, as Kubernetes counts a deleted pod that ran, but no retry is
                // owed. One stopped while still queued never ran and is not counted.
                WorkloadPhase::Stopped => {
                    if attempt.record.started_at.is_some() {
                        tally.failed_pods += 1;
                    }
                }
                _ => {
                    let deadline = attempt
                        .record
                        .exit
                        .as_ref()
                        .is_some_and(|e| e.reason == "DeadlineExceeded");
                    if deadline && attempt.job_deadline {
                        tally.job_deadline_hit = true;
                        tally.failed_pods += 1;
                        continue;
                    }
                    let v = verdict(spec, attempt);
                    if v == Verdict::Ignore {
                        continue;
                    }
                    tally.failed_pods += 1;
                    tally.counted_failures += 1;
                    let at = parse_time(attempt.record.finished_at.as_deref());
                    tally.last_failure_at = tally.last_failure_at.max(at);
                    if let Some(i) = attempt.index {
                        let failures = index_failures.entry(i).or_default();
                        *failures += 1;
                        let over = spec
                            .backoff_limit_per_index
                            .is_some_and(|limit| *failures > limit);
                        if v == Verdict::FailIndex || over {
                            tally.failed_indexes.insert(i);
                        }
                    }
                    if let (Verdict::FailJob(rule), None) = (v, &tally.fail_job) {
                        tally.fail_job = Some(format!(
                            "Container {} for pod {}/{} failed with exit code {} matching FailJob rule at index {rule}",
                            spec.container_name,
                            job.namespace,
                            attempt.record.id,
                            exit_code(attempt.record).unwrap_or_default(),
                        ));
                    }
                }
            }
        }
        // An index that succeeded is done, whatever failed before.
        let completed = tally.completed_indexes.clone();
        tally.failed_indexes.retain(|i| !completed.contains(i));
        tally
    }

    /// The ending this pass's facts call for, in Kubernetes' order: pod failure policy,
    /// backoff limit, deadline, failed indexes, then success.
    fn ending(&self, spec: &JobSpec, active: usize, deadline_passed: bool) -> Option<Ending> {
        if let Some(message) = &self.fail_job {
            return Some(Ending::failed("PodFailurePolicy", message));
        }
        if self.counted_failures > spec.backoff_limit {
            return Some(Ending::failed(
                "BackoffLimitExceeded",
                "Job has reached the specified backoff limit",
            ));
        }
        if deadline_passed || self.job_deadline_hit {
            return Some(Ending::failed(
                "DeadlineExceeded",
                "Job was active longer than specified deadline",
            ));
        }
        if let Some(max) = spec.max_failed_indexes {
            if self.failed_indexes.len() as u64 > max {
                return Some(Ending::failed(
                    "MaxFailedIndexesExceeded",
                    "Job has exceeded the specified maximal number of failed indexes",
                ));
            }
        }
        for (i, rule) in spec.success_policy.iter().enumerate() {
            let in_rule = |idx: &u64| {
                rule.succeeded_indexes
                    .as_ref()
                    .is_none_or(|ranges| ranges.iter().any(|(a, b)| (a..=b).contains(&idx)))
            };
            let done = self.completed_indexes.iter().filter(|i| in_rule(i)).count() as u64;
            let needed = match (&rule.succeeded_indexes, rule.succeeded_count) {
                (_, Some(count)) => count,
                (Some(ranges), None) => ranges.iter().map(|(a, b)| b - a + 1).sum(),
                (None, None) => u64::MAX,
            };
            if done >= needed {
                return Some(Ending::complete(
                    "SuccessPolicy",
                    format!("Matched rules at index {i}"),
                ));
            }
        }
        let reached = match (spec.completion_mode, spec.completions) {
            (CompletionMode::Indexed, Some(c)) => self.completed_indexes.len() as u64 >= c,
            (CompletionMode::Indexed, None) => true,
            (CompletionMode::NonIndexed, Some(c)) => self.succeeded >= c,
            // The work-queue pattern: done once one succeeded and none still runs.
            (CompletionMode::NonIndexed, None) => self.succeeded > 0 && active == 0,
        };
        if reached {
            return Some(Ending::complete(
                "CompletionsReached",
                "Reached expected number of succeeded pods",
            ));
        }
        if spec.completion_mode == CompletionMode::Indexed && !self.failed_indexes.is_empty() {
            let resolved = (self.completed_indexes.len() + self.failed_indexes.len()) as u64;
            if resolved >= spec.completions.unwrap_or(0) {
                return Some(Ending::failed("FailedIndexes", "Job has failed indexes"));
            }
        }
        None
    }
}

/// One attempt to start: its completion index and pod.
struct NewAttempt {
    index: Option<u64>,
    pod: u64,
}

/// The attempts to start now so that `parallelism` attempts run (fewer when fewer
/// completions remain). With `OnFailure`, a pod whose last attempt failed is restarted
/// in place first.
fn plan(spec: &JobSpec, attempts: &[Attempt], tally: &Tally) -> Vec<NewAttempt> {
    let running = attempts.iter().filter(|a| a.active()).count() as u64;
    let mut next_pod = attempts
        .iter()
        .map(|a| a.pod)
        .max()
        .map_or(0, |p| p.saturating_add(1));
    let mut out = Vec::new();
    let mut new_pod = |index: Option<u64>| {
        let pod = next_pod;
        next_pod = next_pod.saturating_add(1);
        NewAttempt { index, pod }
    };
    let on_failure = spec.restart_policy == RestartPolicy::OnFailure;
    // Pods waiting for an in-place restart (OnFailure only).
    let waiting: Vec<&Attempt> = if on_failure {
        tally
            .pods
            .values()
            .map(|&n| &attempts[n])
            .filter(|a| matches!(a.phase(), WorkloadPhase::Failed | WorkloadPhase::Stopped))
            .filter(|a| a.index.is_none_or(|i| !tally.completed_indexes.contains(&i)))
            .collect()
    } else {
        Vec::new()
    };
    match spec.completion_mode {
        CompletionMode::NonIndexed => {
            let want = match spec.completions {
                Some(c) => spec.parallelism.min(c.saturating_sub(tally.succeeded)),
                None if tally.succeeded > 0 => 0,
                None => spec.parallelism,
            };
            let mut slots = want.saturating_sub(running);
            for pod in &waiting {
                if slots == 0 {
                    break;
                }
                out.push(NewAttempt {
                    index: None,
                    pod: pod.pod,
                });
                slots -= 1;
            }
            for _ in 0..slots {
                if out.len() >= SUBMIT_PER_PASS {
                    break;
                }
                out.push(new_pod(None));
            }
        }
        CompletionMode::Indexed => {
            let completions = spec.completions.unwrap_or(0);
            let open = completions
                .saturating_sub(tally.completed_indexes.len() as u64)
                .saturating_sub(tally.failed_indexes.len() as u64);
            let mut slots = spec.parallelism.min(open).saturating_sub(running);
            let mut index = 0;
            while slots > 0 && index < completions && out.len() < SUBMIT_PER_PASS {
                let pending = !tally.completed_indexes.contains(&index)
                    && !tally.failed_indexes.contains(&index)
                    && !tally.active_indexes.contains(&index);
                if pending {
                    // With OnFailure an index keeps its pod across restarts.
                    let pod = waiting.iter().find(|a| a.index == Some(index)).map(|a| a.pod);
                    out.push(match pod {
                        Some(pod) => NewAttempt {
                            index: Some(index),
                            pod,
                        },
                        None => new_pod(Some(index)),
                    });
                    slots -= 1;
                }
                index += 1;
            }
        }
    }
    out
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

    /// The workload for attempt `number`. `job_left` is what remains of the Job's
    /// deadline; the attempt runs under the sooner of it and the pod template's.
    fn workload(
        &self,
        job: &Resource,
        spec: &JobSpec,
        number: usize,
        new: &NewAttempt,
        job_left: Option<u64>,
    ) -> Workload {
        let (deadline, whose) = match (job_left, spec.attempt_deadline_seconds) {
            (Some(j), Some(p)) if p < j => (Some(p), "pod"),
            (Some(j), _) => (Some(j), "job"),
            (None, Some(p)) => (Some(p), "pod"),
            (None, None) => (None, "job"),
        };
        let mut labels: std::collections::BTreeMap<String, String> = [
            ("job-name".to_string(), job.name.clone()),
            ("attempt".to_string(), number.to_string()),
            ("pod".to_string(), new.pod.to_string()),
            ("deadline".to_string(), whose.to_string()),
        ]
        .into();
        let mut env = spec.env.clone();
        if let Some(index) = new.index {
            labels.insert("index".into(), index.to_string());
            // As the Job controller sets it for Indexed Jobs (and before the user's
            // own env, so a user value wins as it would in a pod).
            env.insert(0, ("JOB_COMPLETION_INDEX".into(), index.to_string()));
        }
        if let Some(extra) = self.extra_env.get() {
            env.extend(extra(job));
        }
        Workload {
            id: attempt_id(&job.uid, number),
            owner: Owner {
                kind: spec::KIND.into(),
                namespace: job.namespace.clone(),
                name: job.name.clone(),
                uid: job.uid.clone(),
            },
            labels,
            image: spec.image.clone(),
            command: spec.command.clone(),
            env,
            working_dir: spec.working_dir.clone().map(Into::into),
            mounts: Vec::new(),
            ports: Vec::new(),
            resources: spec.resources,
            gpu_uuids: Vec::new(),
            active_deadline_seconds: deadline,
            termination_grace_seconds: spec.termination_grace_seconds,
            security_context: spec.security_context.clone(),
        }
    }

    async fn stop_all(&self, attempts: &[WorkloadRecord]) -> Result<usize, JobError> {
        let mut stopping = 0;
        for attempt in attempts.iter().filter(|a| !a.phase.is_final()) {
            stopping += 1;
            match self.scheduler.stop(&attempt.id).await {
                Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stopping)
    }

    async fn delete_now(&self, job: &Resource) -> Result<(), JobError> {
        self.active_clock.forget(&job.uid);
        self.active_clock.forget(&backoff_key(&job.uid));
        let uid = job.uid.clone();
        self.store.call(move |conn| resources::delete(conn, &uid)).await?;
        Ok(())
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
        let records = self.scheduler.list_by_owner(&job.uid).await?;

        if job.deletion_requested_at.is_some() {
            if self.stop_all(&records).await? > 0 {
                return Ok(Some(WIND_DOWN_POLL));
            }
            self.delete_now(&job).await?;
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
            self.active_clock.forget(&job.uid);
            self.active_clock.forget(&backoff_key(&job.uid));
            return self.collect_finished(&job, &status, now).await;
        }

        let spec = match spec::parse_for(&job.spec, self.scheduler.runtime().capabilities().runs_images) {
            Ok(spec) => spec,
            Err(e) => {
                // Stored before today's checks (or by hand): left alone with the reason,
                // never retried.
                self.stop_all(&records).await?;
                set_condition(&mut status, "Failed", true, "InvalidSpec", &e.to_string(), now);
                self.write_status(&job, status).await?;
                self.record_event(&job.uid, "Warning", "InvalidSpec", &e.to_string())
                    .await?;
                return Ok(None);
            }
        };

        let attempts: Vec<Attempt> = records
            .iter()
            .enumerate()
            .map(|(n, r)| Attempt::of(n, r))
            .collect();
        let tally = Tally::new(&job, &spec, &attempts);
        let active = attempts.iter().filter(|a| a.active()).count();
        let mut events: Vec<(&str, String, String)> = Vec::new();
        let mut requeue: Option<Duration> = None;

        let mut start = parse_time(status.get("startTime").and_then(Value::as_str));
        let mut ending = Ending::recorded(&status);
        let mut terminating = 0;

        if ending.is_none() && !spec.suspend && condition_is_true(&status, "Suspended") {
            set_condition(&mut status, "Suspended", false, "JobResumed", "Job resumed", now);
            events.push(("Normal", "Resumed".into(), "Job resumed".into()));
            // As upstream: the deadline counts the time a Job is continuously active.
            start = None;
        }
        if start.is_none() && !spec.suspend {
            status["startTime"] = json!(rfc3339(now));
            start = Some(now);
        }
        // What is left of `activeDeadlineSeconds`, on the monotonic clock.
        let deadline_left = match (start, spec.active_deadline_seconds) {
            (Some(s), Some(d)) if !spec.suspend => {
                let active = self.active_clock.elapsed_at(&job.uid, s, now, Instant::now());
                Some(Duration::from_secs(d.min(MAX_SECONDS)).saturating_sub(active))
            }
            _ => {
                self.active_clock.forget(&job.uid);
                None
            }
        };
        let deadline_passed = deadline_left.is_some_and(|left| left.is_zero());

        if ending.is_none() {
            ending = tally.ending(&spec, active, deadline_passed);
            if let Some(e) = &ending {
                set_condition(&mut status, e.interim(), true, &e.reason, &e.message, now);
                let kind = if e.success { "Normal" } else { "Warning" };
                // As the Job controller records them: `Completed` / "Job completed", or
                // the failure reason with its message.
                let (reason, message) = if e.success {
                    ("Completed", "Job completed")
                } else {
                    (e.reason.as_str(), e.message.as_str())
                };
                events.push((kind, reason.to_string(), message.to_string()));
            }
        }

        if let Some(e) = &ending {
            terminating = self.stop_all(&records).await?;
            if terminating == 0 {
                set_condition(&mut status, e.terminal(), true, &e.reason, &e.message, now);
                if e.success {
                    let finished = records
                        .iter()
                        .filter_map(|a| a.finished_at.as_deref())
                        .max()
                        .map_or_else(|| rfc3339(now), str::to_string);
                    status["completionTime"] = json!(finished);
                }
                if let Some(ttl) = spec.ttl_seconds_after_finished {
                    requeue = earliest(requeue, Duration::from_secs(ttl));
                }
            } else {
                requeue = Some(WIND_DOWN_POLL);
            }
        } else if spec.suspend {
            if set_condition(
                &mut status,
                "Suspended",
                true,
                "JobSuspended",
                "Job suspended",
                now,
            ) {
                events.push(("Normal", "Suspended".into(), "Job suspended".into()));
            }
            terminating = self.stop_all(&records).await?;
            if terminating > 0 {
                requeue = Some(WIND_DOWN_POLL);
            } else if let Some(map) = status.as_object_mut() {
                // As upstream clears it: a suspended Job is not active, and resuming
                // starts its deadline afresh.
                map.remove("startTime");
            }
        } else {
            let backoff = self.backoff(tally.counted_failures);
            // What is left of the backoff since the last failure, on the monotonic clock.
            let backoff_left = tally.last_failure_at.map(|t| {
                let since = self
                    .active_clock
                    .elapsed_at(&backoff_key(&job.uid), t, now, Instant::now());
                backoff.saturating_sub(since)
            });
            match backoff_left.filter(|left| !left.is_zero()) {
                Some(left) => requeue = earliest(requeue, left),
                None => {
                    let wanted = plan(&spec, &attempts, &tally);
                    let job_left = deadline_left.map(|left| left.as_secs().max(1));
                    let full = wanted.len() >= SUBMIT_PER_PASS;
                    // Past every attempt number in use, so that a record removed from the
                    // middle can never make a new attempt reuse an old one's id.
                    let next_number = records
                        .iter()
                        .filter_map(|r| r.id.rsplit('-').next()?.parse::<usize>().ok())
                        .max()
                        .map_or(0, |n| n.saturating_add(1))
                        .max(records.len());
                    for (offset, new) in wanted.iter().enumerate() {
                        let number = next_number.saturating_add(offset);
                        let workload = self.workload(&job, &spec, number, new, job_left);
                        let request = WorkloadRequest {
                            workload,
                            priority: PriorityClass::Batch,
                        };
                        match self.scheduler.submit(request).await {
                            Ok(record) => events.push(match &record.pending_reason {
                                Some(reason) => (
                                    "Normal",
                                    "Queued".into(),
                                    format!("attempt {number} queued: {reason}"),
                                ),
                                None => (
                                    "Normal",
                                    "SuccessfulCreate".into(),
                                    format!("started attempt {number}"),
                                ),
                            }),
                            Err(SchedulerError::Unsatisfiable(message)) => {
                                set_condition(
                                    &mut status,
                                    "FailureTarget",
                                    true,
                                    "Unschedulable",
                                    &message,
                                    now,
                                );
                                events.push(("Warning", "Unschedulable".into(), message));
                                requeue = Some(Duration::ZERO);
                                break;
                            }
                            // Deterministic: waiting would not change it, so the Job
                            // ends with the reason instead of a retry every second.
                            Err(SchedulerError::Invalid(message)) => {
                                set_condition(
                                    &mut status,
                                    "FailureTarget",
                                    true,
                                    "InvalidSpec",
                                    &message,
                                    now,
                                );
                                events.push(("Warning", "InvalidSpec".into(), message));
                                requeue = Some(Duration::ZERO);
                                break;
                            }
                            Err(e) => return Err(e.into()),
                        }
                    }
                    if full {
                        requeue = Some(Duration::ZERO);
                    }
                }
            }
            if let Some(left) = deadline_left {
                requeue = earliest(requeue, left);
            }
        }

        // Counters from what the attempts are now.
        let records = self.scheduler.list_by_owner(&job.uid).await?;
        let attempts: Vec<Attempt> = records
            .iter()
            .enumerate()
            .map(|(n, r)| Attempt::of(n, r))
            .collect();
        let tally = Tally::new(&job, &spec, &attempts);
        let finished = finished_condition(&status);
        self.fill_counters(
            &mut status,
            &spec,
            &attempts,
            &tally,
            finished.as_deref(),
            terminating,
        );
        status["hearth"] = self.hearth_status(&records, &status);

        if status != before {
            self.write_status(&job, status).await?;
        }
        for (kind, reason, message) in events {
            self.record_event(&job.uid, kind, &reason, &message).await?;
        }
        Ok(requeue)
    }

    /// Kubernetes' pod re-creation backoff: the base delay doubled per counted failure
    /// after the first, at most six minutes.
    fn backoff(&self, failures: u64) -> Duration {
        if failures == 0 {
            return Duration::ZERO;
        }
        let exponent = i32::try_from(failures.saturating_sub(1).min(32)).unwrap_or(32);
        let secs = self.config.backoff_base_seconds * 2f64.powi(exponent);
        Duration::try_from_secs_f64(secs.clamp(0.0, MAX_BACKOFF_SECONDS)).unwrap_or(Duration::ZERO)
    }

    /// A finished Job waits only for its `ttlSecondsAfterFinished`.
    async fn collect_finished(
        &self,
        job: &Resource,
        status: &Value,
        now: DateTime<Utc>,
    ) -> Result<Option<Duration>, JobError> {
        let ttl = job.spec.get("ttlSecondsAfterFinished").and_then(Value::as_u64);
        let done = parse_time(status.get("completionTime").and_then(Value::as_str))
            .or_else(|| {
                condition_status(status, "Failed")
                    .and_then(|c| parse_time(c.get("lastTransitionTime").and_then(Value::as_str)))
            })
            .or_else(|| parse_time(Some(&job.updated_at)));
        let Some(expiry) = ttl.zip(done).and_then(|(ttl, done)| plus_seconds(done, ttl)) else {
            return Ok(None);
        };
        if expiry <= now {
            self.delete_now(job).await?;
            return Ok(None);
        }
        Ok(Some(until(expiry, now)))
    }

    fn fill_counters(
        &self,
        status: &mut Value,
        spec: &JobSpec,
        attempts: &[Attempt],
        tally: &Tally,
        finished: Option<&str>,
        terminating: usize,
    ) {
        let running = attempts.iter().filter(|a| a.active()).count();
        let ready = attempts
            .iter()
            .filter(|a| a.phase() == WorkloadPhase::Running)
            .count();
        let (active, failed) = match spec.restart_policy {
            RestartPolicy::Never => (running as u64, tally.failed_pods),
            RestartPolicy::OnFailure => {
                // A pod restarting in place is active, not failed, until the Job ends.
                let unfinished_pods = tally
                    .pods
                    .values()
                    .filter(|&&n| attempts[n].phase() != WorkloadPhase::Succeeded)
                    .count() as u64;
                match finished {
                    Some("Failed") => (running as u64, unfinished_pods),
                    Some(_) => (running as u64, 0),
                    None if condition_is_true(status, "Suspended") => (running as u64, 0),
                    None => (unfinished_pods, 0),
                }
            }
        };
        status["active"] = json!(active);
        status["ready"] = json!(ready);
        status["succeeded"] = json!(tally.succeeded);
        status["failed"] = json!(failed);
        status["terminating"] = json!(terminating);
        // Hearth counts every ended attempt at once: nothing is ever uncounted.
        status["uncountedTerminatedPods"] = json!({});
        if spec.completion_mode == CompletionMode::Indexed {
            let completed = index_ranges(&tally.completed_indexes);
            if completed.is_empty() {
                if let Some(map) = status.as_object_mut() {
                    map.remove("completedIndexes");
                }
            } else {
                status["completedIndexes"] = json!(completed);
            }
            if spec.backoff_limit_per_index.is_some() {
                status["failedIndexes"] = json!(index_ranges(&tally.failed_indexes));
            }
        }
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
        } else if condition_is_true(status, "Suspended") {
            "Suspended"
        } else if attempts
            .iter()
            .any(|a| matches!(a.phase, WorkloadPhase::Running | WorkloadPhase::Starting))
        {
            "Running"
        } else {
            "Pending"
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
        }
        // The most recent attempt that ended (with parallel attempts, the last one
        // submitted may still run).
        let ended = attempts.iter().filter(|a| a.exit.is_some()).max_by(|a, b| {
            let at = |r: &WorkloadRecord| r.exit.as_ref().map(|e| e.finished_at.clone());
            at(a).cmp(&at(b))
        });
        if let Some(record) = ended {
            if let Some(exit) = &record.exit {
                out["lastExit"] = json!({
                    "workload": record.id,
                    "exitCode": exit.exit_code,
                    "signal": exit.signal,
                    "reason": exit.reason,
                    "message": exit.message,
                    "finishedAt": exit.finished_at,
                });
            }
            if record.phase != WorkloadPhase::Succeeded {
                out["lastFailure"] = json!(describe_exit(record));
            }
        }
        out
    }

    async fn write_status(&self, job: &Resource, status: Value) -> Result<(), JobError> {
        let uid = job.uid.clone();
        self.store
            .call(move |conn| resources::update_status(conn, &uid, &status, None))
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::ExitInfo;

    fn job_spec(extra: Value) -> JobSpec {
        let mut doc = json!({"template": {"spec": {"restartPolicy": "Never",
            "containers": [{"name": "main", "command": ["true"]}]}}});
        for (k, v) in extra.as_object().into_iter().flatten() {
            if k == "restartPolicy" {
                doc["template"]["spec"]["restartPolicy"] = v.clone();
            } else {
                doc[k] = v.clone();
            }
        }
        spec::parse(&doc).unwrap()
    }

    /// Attempt `n` in `phase`, with its exit code and labels.
    fn record(n: usize, phase: WorkloadPhase, code: Option<i32>, labels: &[(&str, &str)]) -> WorkloadRecord {
        let exit = phase.is_final().then(|| ExitInfo {
            exit_code: code,
            signal: None,
            reason: if code == Some(0) { "Completed" } else { "Error" }.into(),
            message: String::new(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
            finished_at: "2026-01-01T00:00:01Z".into(),
        });
        WorkloadRecord {
            id: attempt_id("u", n),
            owner: Owner::default(),
            priority: PriorityClass::Batch,
            seq: n as i64,
            phase,
            workload: Workload {
                labels: labels
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_string()))
                    .collect(),
                ..Workload::default()
            },
            pending_reason: None,
            gpu_uuids: Vec::new(),
            finished_at: exit.as_ref().map(|e| e.finished_at.clone()),
            exit,
            created_at: "2026-01-01T00:00:00Z".into(),
            started_at: Some("2026-01-01T00:00:00Z".into()),
        }
    }

    fn job() -> Resource {
        Resource {
            uid: "u".into(),
            kind: spec::KIND.into(),
            namespace: "team".into(),
            name: "j".into(),
            generation: 1,
            resource_version: 1,
            metadata: json!({}),
            spec: json!({}),
            status: json!({}),
            created_at: String::new(),
            updated_at: String::new(),
            deletion_requested_at: None,
        }
    }

    fn decide(spec: &JobSpec, records: &[WorkloadRecord]) -> (Option<Ending>, Vec<(Option<u64>, u64)>) {
        let attempts: Vec<Attempt> = records
            .iter()
            .enumerate()
            .map(|(n, r)| Attempt::of(n, r))
            .collect();
        let tally = Tally::new(&job(), spec, &attempts);
        let active = attempts.iter().filter(|a| a.active()).count();
        let ending = tally.ending(spec, active, false);
        let planned = plan(spec, &attempts, &tally)
            .into_iter()
            .map(|a| (a.index, a.pod))
            .collect();
        (ending, planned)
    }

    #[test]
    fn completions_run_in_turn_and_finish_at_the_count() {
        let spec = job_spec(json!({"completions": 3, "parallelism": 1}));
        let ok = |n| record(n, WorkloadPhase::Succeeded, Some(0), &[]);
        assert_eq!(decide(&spec, &[]).1, vec![(None, 0)]);
        let (ending, planned) = decide(&spec, &[ok(0)]);
        assert_eq!((ending, planned), (None, vec![(None, 1)]));
        let running = record(2, WorkloadPhase::Running, None, &[]);
        assert_eq!(decide(&spec, &[ok(0), ok(1), running]).1, vec![], "one at a time");
        let (ending, _) = decide(&spec, &[ok(0), ok(1), ok(2)]);
        assert_eq!(ending.map(|e| e.reason), Some("CompletionsReached".into()));
    }

    #[test]
    fn indexed_attempts_retry_only_the_failed_index() {
        let spec = job_spec(
            json!({"completions": 3, "parallelism": 3, "completionMode": "Indexed", "backoffLimitPerIndex": 1}),
        );
        let at = |n, phase, code, index: &str| {
            record(n, phase, code, &[("index", index), ("pod", &n.to_string())])
        };
        let records = [
            at(0, WorkloadPhase::Succeeded, Some(0), "0"),
            at(1, WorkloadPhase::Failed, Some(1), "1"),
            at(2, WorkloadPhase::Succeeded, Some(0), "2"),
        ];
        let (ending, planned) = decide(&spec, &records);
        assert_eq!(ending, None);
        assert_eq!(planned, vec![(Some(1), 3)]);
        let mut records = records.to_vec();
        records.push(at(3, WorkloadPhase::Failed, Some(1), "1"));
        let (ending, planned) = decide(&spec, &records);
        assert_eq!(ending.map(|e| e.reason), Some("FailedIndexes".into()));
        assert_eq!(planned, vec![]);
    }

    #[test]
    fn the_pod_failure_policy_decides_what_a_failure_means() {
        let spec = job_spec(json!({"backoffLimit": 6, "podFailurePolicy": {"rules": [
            {"action": "FailJob", "onExitCodes": {"operator": "In", "values": [42]}},
            {"action": "Ignore", "onExitCodes": {"operator": "In", "values": [3]}}
        ]}}));
        let (ending, _) = decide(&spec, &[record(0, WorkloadPhase::Failed, Some(42), &[])]);
        let ending = ending.unwrap();
        assert_eq!(
            (ending.success, ending.reason.as_str()),
            (false, "PodFailurePolicy")
        );
        assert!(
            ending
                .message
                .contains("exit code 42 matching FailJob rule at index 0"),
            "{}",
            ending.message
        );
        let ignored: Vec<_> = (0..10)
            .map(|n| record(n, WorkloadPhase::Failed, Some(3), &[]))
            .collect();
        let attempts: Vec<Attempt> = ignored
            .iter()
            .enumerate()
            .map(|(n, r)| Attempt::of(n, r))
            .collect();
        let tally = Tally::new(&job(), &spec, &attempts);
        assert_eq!((tally.counted_failures, tally.failed_pods), (0, 0));
        assert_eq!(
            tally.ending(&spec, 0, false),
            None,
            "ignored failures never reach the limit"
        );
    }

    #[test]
    fn on_failure_restarts_the_same_pod() {
        let spec = job_spec(json!({"backoffLimit": 3, "restartPolicy": "OnFailure"}));
        let records = [record(0, WorkloadPhase::Failed, Some(1), &[("pod", "0")])];
        let (ending, planned) = decide(&spec, &records);
        assert_eq!(ending, None);
        assert_eq!(planned, vec![(None, 0)], "a restart in place, not a new pod");
    }

    #[test]
    fn index_ranges_are_written_as_kubernetes_writes_them() {
        let set = |v: &[u64]| v.iter().copied().collect::<BTreeSet<u64>>();
        assert_eq!(index_ranges(&set(&[])), "");
        assert_eq!(index_ranges(&set(&[0, 1, 2])), "0-2");
        assert_eq!(index_ranges(&set(&[0, 2, 3, 4, 7])), "0,2-4,7");
        assert_eq!(
            index_ranges(&set(&[u64::MAX - 1, u64::MAX])),
            format!("{}-{}", u64::MAX - 1, u64::MAX)
        );
    }

    #[test]
    fn time_arithmetic_on_stored_values_never_panics() {
        let now = Utc::now();
        assert!(plus_seconds(now, 10_000_000_000_000).is_none());
        assert!(plus_seconds(now, u64::MAX).is_none());
        assert!(plus_seconds(now, 10).is_some());
        let far = DateTime::<Utc>::MAX_UTC;
        assert_eq!(until(far, now), Duration::from_secs(MAX_SECONDS));
        assert_eq!(until(now, far), Duration::ZERO);
    }
}
