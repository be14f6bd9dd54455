//! The experiment controller, level-triggered: each pass re-derives everything from
//! the store (the Experiment, its Trials, its Suggestion, the Trials' Jobs), so a
//! restart or `kill -9` at any moment loses nothing and runs nothing twice.
//!
//! A pass: (1) each unfinished Trial follows its Job (Created → Running → Succeeded,
//! MetricsUnavailable or Failed, as Katib's trial controller sets them), collecting
//! metrics when the Job completes; (2) the Experiment's counts, `currentOptimalTrial`
//! and end (Katib's reasons: `ExperimentGoalReached`, `ExperimentMaxTrialsReached`,
//! `ExperimentSuggestionEndReached`, `ExperimentFailed`); (3) while it runs, new
//! assignments up to `parallelTrialCount` are asked of the algorithm and written to
//! the Suggestion *before* their Trials are made, so a pass interrupted between the two
//! makes those Trials next time instead of asking again.

use std::time::Duration;

use serde_json::{json, Map, Value};

use super::algorithms::{self, Request};
use super::metrics;
use super::spec::{self, Collector, ExperimentSpec, MetricStrategy, ObjectiveType};
use super::{Tuning, TuningError};
use crate::jobs::JobError;
use crate::store::observation_logs;
use crate::store::resources::{self, NewResource, Resource};
use crate::store::{now_rfc3339, StoreError};

/// Katib's labels on a Trial and its Job.
pub const EXPERIMENT_LABEL: &str = "katib.kubeflow.org/experiment";
pub const TRIAL_LABEL: &str = "katib.kubeflow.org/trial";

/// The key of a Trial's `status` that is Hearth's bookkeeping (never shown; the
/// Trial kind's `hidden_status`).
pub const HEARTH_STATUS: &str = "hearth";

/// Held while a File-collector trial checks that no other trial writes its metrics
/// file and makes its Job ([`Tuning::file_writer`]).
static METRICS_FILE_GATE: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// How soon a running experiment is looked at again (its trials' Jobs move on their
/// own; the Jobs controller does not wake this one).
const POLL: Duration = Duration::from_millis(500);

/// Katib's default trial conditions for a batch/v1 Job (its `successCondition` and
/// `failureCondition`, in gjson).
const JOB_SUCCESS: &str = "status.conditions.#(type==\"Complete\")#|#(status==\"True\")#";
const JOB_FAILURE: &str = "status.conditions.#(type==\"Failed\")#|#(status==\"True\")#";

const TERMINAL_TRIAL: &[&str] = &[
    "Succeeded",
    "Failed",
    "MetricsUnavailable",
    "EarlyStopped",
    "Killed",
];

fn condition_true(status: &Value, kind: &str) -> bool {
    status
        .get("conditions")
        .and_then(Value::as_array)
        .is_some_and(|cs| {
            cs.iter().any(|c| {
                c.get("type").and_then(Value::as_str) == Some(kind)
                    && c.get("status").and_then(Value::as_str) == Some("True")
            })
        })
}

/// Whether an Experiment's status says it has ended (Succeeded or Failed).
pub fn is_finished(status: &Value) -> bool {
    condition_true(status, "Succeeded") || condition_true(status, "Failed")
}

/// Whether a finished experiment ended because `maxTrialCount` was reached (the only
/// end Katib restarts from).
pub fn ended_by_max_trials(status: &Value) -> bool {
    condition_true(status, "Succeeded")
        && status
            .get("conditions")
            .and_then(Value::as_array)
            .is_some_and(|cs| {
                cs.iter().any(|c| {
                    c.get("type").and_then(Value::as_str) == Some("Succeeded")
                        && c.get("reason").and_then(Value::as_str) == Some("ExperimentMaxTrialsReached")
                })
            })
}

/// Whether a finished experiment is one Katib's controller restarts once its budget
/// is raised: `resumePolicy: LongRunning`, ended by `ExperimentMaxTrialsReached`.
fn resumable(experiment: &Resource, parsed: &ExperimentSpec) -> bool {
    parsed.resume_policy == spec::ResumePolicy::LongRunning && ended_by_max_trials(&experiment.status)
}

/// Katib's restart: the `Succeeded` condition goes, `Restarting` is set
/// (`ExperimentRestarting`), and the pass goes on as for a running experiment.
fn restart(status: &mut Map<String, Value>) {
    if let Some(list) = status.get_mut("conditions").and_then(Value::as_array_mut) {
        list.retain(|c| c.get("type").and_then(Value::as_str) != Some("Succeeded"));
    }
    status.remove("completionTime");
    set_condition(
        status,
        "Restarting",
        true,
        "ExperimentRestarting",
        "Experiment is restarted",
    );
}

/// Whether a Trial has ended (any of Katib's terminal conditions).
pub(super) fn trial_has_ended(status: &Value) -> bool {
    trial_end(status).is_some()
}

/// The terminal condition of a Trial, if any.
fn trial_end(status: &Value) -> Option<&'static str> {
    TERMINAL_TRIAL.iter().copied().find(|k| condition_true(status, k))
}

/// Sets condition `kind` in `status.conditions` as Katib's status helpers do: an
/// existing one is updated in place (its transition time kept unless its status
/// changes); a new one is appended, so the last condition is the latest.
fn set_condition(status: &mut Map<String, Value>, kind: &str, on: bool, reason: &str, message: &str) {
    let now = now_rfc3339();
    let word = if on { "True" } else { "False" };
    let conditions = status.entry("conditions").or_insert_with(|| json!([]));
    if !conditions.is_array() {
        *conditions = json!([]);
    }
    let Some(list) = conditions.as_array_mut() else {
        return;
    };
    if let Some(c) = list
        .iter_mut()
        .find(|c| c.get("type").and_then(Value::as_str) == Some(kind))
    {
        if c.get("status").and_then(Value::as_str) != Some(word) {
            c["status"] = json!(word);
            c["lastTransitionTime"] = json!(now);
            c["lastUpdateTime"] = json!(now);
        }
        c["reason"] = json!(reason);
        c["message"] = json!(message);
        return;
    }
    if on {
        list.push(json!({
            "type": kind, "status": word, "reason": reason, "message": message,
            "lastUpdateTime": now, "lastTransitionTime": now,
        }));
    }
}

fn status_map(resource: &Resource) -> Map<String, Value> {
    resource.status.as_object().cloned().unwrap_or_default()
}

fn owner_reference(kind: &str, api_version: &str, owner: &Resource) -> Value {
    json!([{
        "apiVersion": api_version,
        "kind": kind,
        "name": owner.name,
        "uid": owner.uid,
        "controller": true,
        "blockOwnerDeletion": true,
    }])
}

pub(super) fn owned_by(resource: &Resource, owner_uid: &str) -> bool {
    resource
        .metadata
        .get("ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| {
            refs.iter()
                .any(|r| r.get("uid").and_then(Value::as_str) == Some(owner_uid))
        })
}

/// A short random suffix, as Katib names trials (`<experiment>-<8 characters>`).
fn trial_name(experiment: &str) -> String {
    use rand::Rng;
    let chars = b"bcdfghjklmnpqrstvwxz2456789";
    let suffix: String = (0..8)
        .map(|_| chars[rand::rng().random_range(0..chars.len())] as char)
        .collect();
    // A DNS label is at most 63 characters: keep the suffix, shorten the prefix.
    let prefix: String = experiment.chars().take(63 - 9).collect();
    format!("{}-{suffix}", prefix.trim_end_matches('-'))
}

/// The value a trial parameter takes: its parameter's assignment, or one of Katib's
/// `${trialSpec.*}` metadata references.
fn trial_parameter_value(
    reference: &str,
    assignments: &[(String, String)],
    template: &Value,
    namespace: &str,
    trial: &str,
) -> String {
    if let Some((_, v)) = assignments.iter().find(|(n, _)| n == reference) {
        return v.clone();
    }
    let meta = |section: &str, key: &str| -> String {
        template
            .pointer(&format!("/metadata/{section}"))
            .and_then(|m| m.get(key))
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_string()
    };
    match reference {
        "${trialSpec.Name}" => trial.to_string(),
        "${trialSpec.Namespace}" => namespace.to_string(),
        "${trialSpec.Kind}" => crate::jobs::spec::KIND.to_string(),
        "${trialSpec.APIVersion}" => crate::jobs::spec::API_VERSION.to_string(),
        other => {
            let inner = other
                .strip_prefix("${trialSpec.")
                .and_then(|s| s.strip_suffix("]}"))
                .unwrap_or("");
            match inner.split_once('[') {
                Some(("Labels", key)) => meta("labels", key),
                Some(("Annotations", key)) => meta("annotations", key),
                _ => String::new(),
            }
        }
    }
}

/// The trial's Job: the template with `${trialParameters.x}` substituted (as JSON
/// string content, so any value stays inside its string), named after the trial and
/// labelled with the experiment and trial, as Katib does.
pub fn run_spec(
    parsed: &ExperimentSpec,
    namespace: &str,
    experiment: &str,
    trial: &str,
    assignments: &[(String, String)],
) -> Result<Value, TuningError> {
    let template = &parsed.trial_template.trial_spec;
    let mut text = template.to_string();
    for tp in &parsed.trial_template.trial_parameters {
        let value = trial_parameter_value(&tp.reference, assignments, template, namespace, trial);
        let quoted = serde_json::to_string(&value).map_err(StoreError::from)?;
        let inner = &quoted[1..quoted.len() - 1];
        text = text.replace(&format!("${{trialParameters.{}}}", tp.name), inner);
    }
    let mut job: Value = serde_json::from_str(&text).map_err(StoreError::from)?;
    let metadata = job
        .as_object_mut()
        .map(|m| m.entry("metadata").or_insert_with(|| json!({})));
    if let Some(Value::Object(metadata)) = metadata {
        metadata.remove("namespace");
        metadata.remove("generateName");
        metadata.insert("name".into(), json!(trial));
        let labels = metadata.entry("labels").or_insert_with(|| json!({}));
        if let Some(labels) = labels.as_object_mut() {
            labels.insert(EXPERIMENT_LABEL.into(), json!(experiment));
            labels.insert(TRIAL_LABEL.into(), json!(trial));
        }
    }
    Ok(job)
}

/// The objective value of a finished trial under the objective's metric strategy.
fn objective_value(trial: &Resource, parsed: &ExperimentSpec) -> Option<f64> {
    let field = match parsed.objective.strategy_of(&parsed.objective.metric_name) {
        MetricStrategy::Min => "min",
        MetricStrategy::Max => "max",
        MetricStrategy::Latest => "latest",
    };
    trial
        .status
        .pointer("/observation/metrics")?
        .as_array()?
        .iter()
        .find(|m| m.get("name").and_then(Value::as_str) == Some(parsed.objective.metric_name.as_str()))?
        .get(field)?
        .as_str()?
        .parse::<f64>()
        .ok()
        .filter(|v| v.is_finite())
}

fn better(parsed: &ExperimentSpec, a: f64, b: f64) -> bool {
    match parsed.objective.objective_type {
        ObjectiveType::Minimize => a < b,
        ObjectiveType::Maximize => a > b,
    }
}

fn goal_reached(parsed: &ExperimentSpec, best: f64) -> bool {
    match (parsed.objective.goal, parsed.objective.objective_type) {
        (Some(goal), ObjectiveType::Minimize) => best <= goal,
        (Some(goal), ObjectiveType::Maximize) => best >= goal,
        (None, _) => false,
    }
}

/// What the algorithm is told: every stored suggestion in the order made, with its
/// Trial's outcome (the objective under its metric strategy, negated when maximized;
/// a suggestion without a Trial yet, or whose Trial runs, is pending). Rebuilt from
/// the stored Suggestion and Trials on every pass, so a restarted daemon asks the
/// algorithm exactly what it would have asked.
fn history(stored: &[Suggested], trials: &[Resource], parsed: &ExperimentSpec) -> Vec<algorithms::Trial> {
    stored
        .iter()
        .zip(0u64..)
        .map(|(s, index)| {
            let trial = trials.iter().find(|t| t.name == s.trial);
            let outcome = match trial {
                None => algorithms::Outcome::Pending,
                Some(t) if trial_end(&t.status).is_none() => algorithms::Outcome::Pending,
                Some(t) => match objective_value(t, parsed) {
                    Some(v) if matches!(trial_end(&t.status), Some("Succeeded" | "EarlyStopped")) => {
                        algorithms::Outcome::Completed(match parsed.objective.objective_type {
                            ObjectiveType::Minimize => v,
                            ObjectiveType::Maximize => -v,
                        })
                    }
                    _ => algorithms::Outcome::Failed,
                },
            };
            algorithms::Trial {
                index,
                assignment: s.assignments.clone(),
                outcome,
            }
        })
        .collect()
}

/// An early stopping rule of a trial (Katib's `EarlyStoppingRule`).
struct Rule {
    name: String,
    value: f64,
    /// `less` or `greater` (Katib's `ComparisonType`; `equal` is not made by medianstop).
    less: bool,
    start_step: usize,
}

fn early_stopping_rules(trial: &Resource) -> Vec<Rule> {
    trial
        .spec
        .get("earlyStoppingRules")
        .and_then(Value::as_array)
        .map(|rules| {
            rules
                .iter()
                .filter_map(|r| {
                    Some(Rule {
                        name: r.get("name")?.as_str()?.to_string(),
                        value: r.get("value")?.as_str()?.parse().ok()?,
                        less: r.get("comparison")?.as_str()? == "less",
                        start_step: usize::try_from(r.get("startStep")?.as_u64()?).ok()?,
                    })
                })
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a trial's values so far break a rule, as Katib's metrics collector checks
/// them: from the rule's `startStep`-th value of its metric on, the best value so far
/// (for the objective; the value itself for another metric) compared with the rule's.
fn stops_early(rules: &[Rule], logs: &[metrics::MetricLog], parsed: &ExperimentSpec) -> bool {
    rules.iter().any(|rule| {
        let values = logs
            .iter()
            .filter(|l| l.name == rule.name)
            .filter_map(|l| l.value.trim().parse::<f64>().ok());
        let objective = rule.name == parsed.objective.metric_name;
        let mut best: Option<f64> = None;
        for (step, value) in values.enumerate() {
            let current = if objective {
                let b = match best {
                    Some(b) if !better(parsed, value, b) => b,
                    _ => value,
                };
                best = Some(b);
                b
            } else {
                value
            };
            if step + 1 < rule.start_step {
                continue;
            }
            let worse = if rule.less {
                current < rule.value
            } else {
                current > rule.value
            };
            if worse {
                return true;
            }
        }
        false
    })
}

/// A stored suggestion: the trial it is for, and its assignments.
struct Suggested {
    trial: String,
    assignments: Vec<(String, String)>,
}

fn suggestions_of(suggestion: &Resource) -> Vec<Suggested> {
    suggestion
        .status
        .get("suggestions")
        .and_then(Value::as_array)
        .map(|items| {
            items
                .iter()
                .filter_map(|s| {
                    let trial = s.get("name")?.as_str()?.to_string();
                    let assignments = s
                        .get("parameterAssignments")?
                        .as_array()?
                        .iter()
                        .filter_map(|a| {
                            Some((
                                a.get("name")?.as_str()?.to_string(),
                                a.get("value")?.as_str()?.to_string(),
                            ))
                        })
                        .collect();
                    Some(Suggested { trial, assignments })
                })
                .collect()
        })
        .unwrap_or_default()
}

fn assignments_json(assignments: &[(String, String)]) -> Value {
    Value::Array(
        assignments
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect(),
    )
}

#[derive(Default)]
struct Counts {
    pending: Vec<String>,
    running: Vec<String>,
    succeeded: Vec<String>,
    failed: Vec<String>,
    killed: Vec<String>,
    early_stopped: Vec<String>,
    metrics_unavailable: Vec<String>,
}

impl Counts {
    fn of(trials: &[Resource]) -> Counts {
        let mut c = Counts::default();
        for t in trials {
            let name = t.name.clone();
            match trial_end(&t.status) {
                Some("Succeeded") => c.succeeded.push(name),
                Some("Failed") => c.failed.push(name),
                Some("Killed") => c.killed.push(name),
                Some("EarlyStopped") => c.early_stopped.push(name),
                Some(_) => c.metrics_unavailable.push(name),
                None if condition_true(&t.status, "Running") => c.running.push(name),
                None => c.pending.push(name),
            }
        }
        c
    }

    fn active(&self) -> usize {
        self.pending.len().saturating_add(self.running.len())
    }

    fn completed(&self) -> usize {
        [
            &self.succeeded,
            &self.failed,
            &self.killed,
            &self.early_stopped,
            &self.metrics_unavailable,
        ]
        .iter()
        .map(|l| l.len())
        .fold(0usize, usize::saturating_add)
    }

    fn write(&self, status: &mut Map<String, Value>, total: usize) {
        let n = |l: &Vec<String>| json!(l.len());
        status.insert("trials".into(), json!(total));
        status.insert("trialsPending".into(), n(&self.pending));
        status.insert("trialsRunning".into(), n(&self.running));
        status.insert("trialsSucceeded".into(), n(&self.succeeded));
        status.insert("trialsFailed".into(), n(&self.failed));
        status.insert("trialsKilled".into(), n(&self.killed));
        status.insert("trialsEarlyStopped".into(), n(&self.early_stopped));
        status.insert("trialMetricsUnavailable".into(), n(&self.metrics_unavailable));
        for (key, list) in [
            ("pendingTrialList", &self.pending),
            ("runningTrialList", &self.running),
            ("succeededTrialList", &self.succeeded),
            ("failedTrialList", &self.failed),
            ("killedTrialList", &self.killed),
            ("earlyStoppedTrialList", &self.early_stopped),
            ("metricsUnavailableTrialList", &self.metrics_unavailable),
        ] {
            if list.is_empty() {
                status.remove(key);
            } else {
                status.insert(key.into(), json!(list));
            }
        }
    }
}

impl Tuning {
    /// Every experiment's uid, for the controller's resync.
    pub async fn all_uids(&self) -> Result<Vec<String>, TuningError> {
        Ok(self
            .store
            .call(|conn| resources::uids_where(conn, spec::EXPERIMENT_KIND, |_| true))
            .await?)
    }

    async fn write_status(
        &self,
        resource: &Resource,
        status: Map<String, Value>,
    ) -> Result<bool, TuningError> {
        let status = Value::Object(status);
        if status == resource.status {
            return Ok(true);
        }
        let (uid, version) = (resource.uid.clone(), resource.resource_version);
        match self
            .store
            .call(move |conn| resources::update_status(conn, &uid, &status, Some(version)))
            .await
        {
            Ok(_) => Ok(true),
            // Written since it was read: the next pass sees the new version.
            Err(StoreError::Conflict(_)) => Ok(false),
            Err(e) => Err(e.into()),
        }
    }

    async fn reload(&self, uid: &str) -> Result<Option<Resource>, TuningError> {
        let uid = uid.to_string();
        Ok(self
            .store
            .call(move |conn| resources::get_by_uid(conn, &uid))
            .await?)
    }

    /// One pass over an experiment (module docs); answers when to look again.
    pub async fn reconcile(&self, uid: String) -> Result<Option<Duration>, TuningError> {
        let Some(experiment) = self.reload(&uid).await? else {
            return Ok(None);
        };
        if experiment.deletion_requested_at.is_some() {
            self.finish_deletion(&experiment).await?;
            return Ok(None);
        }
        let mut status = status_map(&experiment);
        let parsed = match spec::parse(&experiment.spec) {
            Ok(parsed) => parsed,
            Err(e) => {
                // Stored before a check that now refuses it: end it, naming why.
                if !is_finished(&experiment.status) {
                    set_condition(&mut status, "Failed", true, "ExperimentFailed", &e.to_string());
                    self.write_status(&experiment, status).await?;
                }
                return Ok(None);
            }
        };
        if !condition_true(&experiment.status, "Created") {
            status.insert("startTime".into(), json!(now_rfc3339()));
            set_condition(
                &mut status,
                "Created",
                true,
                "ExperimentCreated",
                "Experiment is created",
            );
        }
        let mut finished = is_finished(&experiment.status);
        if finished && resumable(&experiment, &parsed) {
            let completed = Counts::of(&self.trials(&experiment).await?).completed();
            let budget =
                usize::try_from(parsed.max_trial_count.unwrap_or(spec::MAX_TRIALS)).unwrap_or(usize::MAX);
            if completed < budget {
                restart(&mut status);
                finished = false;
            }
        }
        if !finished {
            set_condition(
                &mut status,
                "Running",
                true,
                "ExperimentRunning",
                "Experiment is running",
            );
        }

        let suggestion = self.suggestion(&experiment, &parsed).await?;
        let mut trials = self.trials(&experiment).await?;
        for trial in trials.iter_mut() {
            if trial_end(&trial.status).is_none() {
                *trial = self.reconcile_trial(&experiment, &parsed, trial.clone()).await?;
            }
        }

        // The best trial so far, and whether the experiment has ended.
        let mut counts = Counts::of(&trials);
        // As Katib's experiment status: any trial whose observation has the objective,
        // an early-stopped one included.
        let best = trials
            .iter()
            .filter(|t| matches!(trial_end(&t.status), Some("Succeeded" | "EarlyStopped")))
            .filter_map(|t| objective_value(t, &parsed).map(|v| (t, v)))
            .fold(None::<(&Resource, f64)>, |acc, (t, v)| match acc {
                Some((_, b)) if !better(&parsed, v, b) => acc,
                _ => Some((t, v)),
            });
        if let Some((trial, _)) = best {
            status.insert(
                "currentOptimalTrial".into(),
                json!({
                    "bestTrialName": trial.name,
                    "parameterAssignments": trial.spec.get("parameterAssignments").cloned().unwrap_or(json!([])),
                    "observation": trial.status.get("observation").cloned().unwrap_or(json!({"metrics": []})),
                }),
            );
        }
        let stored = suggestions_of(&suggestion);
        let exhausted = condition_true(&suggestion.status, "Succeeded");
        let max_trials =
            usize::try_from(parsed.max_trial_count.unwrap_or(spec::MAX_TRIALS)).unwrap_or(usize::MAX);
        let failed_over = parsed
            .max_failed_trial_count
            .is_some_and(|max| u64::try_from(counts.failed.len()).unwrap_or(u64::MAX) > max);
        let ending: Option<(&str, &str, &str)> = if finished {
            None
        } else if best.is_some_and(|(_, v)| goal_reached(&parsed, v)) {
            Some((
                "Succeeded",
                "ExperimentGoalReached",
                "Experiment has succeeded because Objective goal has reached",
            ))
        } else if failed_over {
            Some((
                "Failed",
                "ExperimentFailed",
                "Experiment has failed because max failed count has reached",
            ))
        } else if counts.completed() >= max_trials {
            Some((
                "Succeeded",
                "ExperimentMaxTrialsReached",
                "Experiment has succeeded because max trial count has reached",
            ))
        } else if exhausted
            && counts.active() == 0
            && stored.iter().all(|s| trials.iter().any(|t| t.name == s.trial))
        {
            Some((
                "Succeeded",
                "ExperimentSuggestionEndReached",
                "Experiment has succeeded because suggestion service has reached the end",
            ))
        } else {
            None
        };
        if let Some((kind, reason, message)) = ending {
            for trial in trials.iter_mut().filter(|t| trial_end(&t.status).is_none()) {
                *trial = self
                    .kill_trial(trial.clone(), parsed.trial_template.retain)
                    .await?;
            }
            counts = Counts::of(&trials);
            set_condition(&mut status, "Restarting", false, reason, message);
            set_condition(&mut status, "Running", false, reason, message);
            set_condition(&mut status, kind, true, reason, message);
            status.insert("completionTime".into(), json!(now_rfc3339()));
        }

        let mut made = false;
        if !finished && ending.is_none() {
            made = self
                .start_trials(&experiment, &parsed, suggestion, &mut trials, &counts, max_trials)
                .await?;
            counts = Counts::of(&trials);
        }
        counts.write(&mut status, trials.len());
        let written = self.write_status(&experiment, status).await?;
        let running = !finished && ending.is_none();
        Ok((running || made || !written).then_some(POLL))
    }

    /// The experiment's Trials (owned by it), oldest first.
    async fn trials(&self, experiment: &Resource) -> Result<Vec<Resource>, TuningError> {
        let (ns, uid) = (experiment.namespace.clone(), experiment.uid.clone());
        Ok(self
            .store
            .call(move |conn| {
                Ok(resources::list(conn, spec::TRIAL_KIND, Some(&ns))?
                    .into_iter()
                    .filter(|t| owned_by(t, &uid))
                    .collect())
            })
            .await?)
    }

    /// The experiment's Suggestion (named after it), made on its first pass.
    async fn suggestion(
        &self,
        experiment: &Resource,
        parsed: &ExperimentSpec,
    ) -> Result<Resource, TuningError> {
        let (ns, name) = (experiment.namespace.clone(), experiment.name.clone());
        let found = self
            .store
            .call(
                move |conn| match resources::get(conn, spec::SUGGESTION_KIND, &ns, &name) {
                    Ok(r) => Ok(Some(r)),
                    Err(StoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                },
            )
            .await?;
        if let Some(found) = found.filter(|s| owned_by(s, &experiment.uid)) {
            return Ok(found);
        }
        let mut metadata = Map::new();
        metadata.insert("labels".into(), json!({EXPERIMENT_LABEL: experiment.name}));
        metadata.insert(
            "ownerReferences".into(),
            owner_reference(spec::EXPERIMENT_KIND, spec::API_VERSION, experiment),
        );
        let settings: Vec<Value> = parsed
            .algorithm_settings
            .iter()
            .map(|(n, v)| json!({"name": n, "value": v}))
            .collect();
        let new = NewResource {
            kind: spec::SUGGESTION_KIND.into(),
            namespace: experiment.namespace.clone(),
            name: experiment.name.clone(),
            metadata: Value::Object(metadata),
            spec: json!({
                "algorithm": {"algorithmName": parsed.algorithm_name, "algorithmSettings": settings},
                "requests": 0,
                "resumePolicy": experiment.spec.get("resumePolicy").cloned().unwrap_or(json!("Never")),
            }),
            status: json!({
                "suggestionCount": 0,
                "suggestions": [],
                "conditions": [{
                    "type": "Created", "status": "True", "reason": "SuggestionCreated",
                    "message": "Suggestion is created", "lastUpdateTime": now_rfc3339(),
                    "lastTransitionTime": now_rfc3339(),
                }],
            }),
        };
        let (ns, name) = (experiment.namespace.clone(), experiment.name.clone());
        Ok(self
            .store
            .call(move |conn| match resources::create(conn, new) {
                Err(StoreError::AlreadyExists { .. }) => {
                    resources::get(conn, spec::SUGGESTION_KIND, &ns, &name)
                }
                other => other,
            })
            .await?)
    }

    /// Makes Trials up to `parallelTrialCount` running and `maxTrialCount` in all:
    /// first for stored suggestions without a Trial, then for new ones, which are
    /// stored first. Answers whether any Trial was made.
    async fn start_trials(
        &self,
        experiment: &Resource,
        parsed: &ExperimentSpec,
        suggestion: Resource,
        trials: &mut Vec<Resource>,
        counts: &Counts,
        max_trials: usize,
    ) -> Result<bool, TuningError> {
        // In process mode trials share one filesystem: File-collector trials would
        // write the same file, so they run one at a time.
        let parallel = match parsed.collector {
            Collector::File { .. } => 1,
            Collector::StdOut { .. } | Collector::Push => {
                usize::try_from(parsed.parallel_trial_count).unwrap_or(usize::MAX)
            }
        };
        let want = parallel
            .saturating_sub(counts.active())
            .min(max_trials.saturating_sub(trials.len()));
        if want == 0 {
            return Ok(false);
        }
        let mut stored = suggestions_of(&suggestion);
        let mut unused: Vec<usize> = (0..stored.len())
            .filter(|i| !trials.iter().any(|t| t.name == stored[*i].trial))
            .collect();
        let exhausted = condition_true(&suggestion.status, "Succeeded");
        if unused.len() < want && !exhausted {
            let Some(algorithm) = algorithms::by_name(&parsed.algorithm_name) else {
                return Ok(false);
            };
            let history = history(&stored, trials, parsed);
            let (parameters, settings) = (parsed.parameters.clone(), parsed.algorithm_settings.clone());
            let made = u64::try_from(stored.len()).unwrap_or(u64::MAX);
            let count = u64::try_from(want - unused.len()).unwrap_or(0);
            // A Gaussian process over a long history takes a while: off the async workers.
            let asked = tokio::task::spawn_blocking(move || {
                algorithm.suggest(&Request {
                    parameters: &parameters,
                    settings: &settings,
                    history: &history,
                    made,
                    count,
                })
            })
            .await;
            let batch = match asked {
                Ok(batch) => batch,
                Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
                // Cancelled: the runtime is shutting down.
                Err(_) => return Ok(false),
            };
            let mut status = status_map(&suggestion);
            let mut items = status
                .get("suggestions")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for assignments in batch.assignments {
                let trial = trial_name(&experiment.name);
                items.push(json!({"name": trial, "parameterAssignments": assignments_json(&assignments)}));
                unused.push(stored.len());
                stored.push(Suggested { trial, assignments });
            }
            status.insert("suggestionCount".into(), json!(items.len()));
            status.insert("suggestions".into(), Value::Array(items));
            if batch.exhausted {
                set_condition(
                    &mut status,
                    "Succeeded",
                    true,
                    "SuggestionExhausted",
                    "Suggestion is exhausted",
                );
            } else {
                set_condition(
                    &mut status,
                    "Running",
                    true,
                    "SuggestionRunning",
                    "Suggestion is running",
                );
            }
            // `spec.requests` is how many assignments were asked for, as Katib's
            // experiment controller writes it.
            let mut requested = suggestion.spec.clone();
            requested["requests"] = json!(stored.len());
            let (uid, version, ns, name, metadata) = (
                suggestion.uid.clone(),
                suggestion.resource_version,
                suggestion.namespace.clone(),
                suggestion.name.clone(),
                suggestion.metadata.clone(),
            );
            let status = Value::Object(status);
            let written = self
                .store
                .call(move |conn| {
                    resources::update_status(conn, &uid, &status, Some(version))?;
                    resources::replace_spec(conn, spec::SUGGESTION_KIND, &ns, &name, &metadata, &requested)
                })
                .await;
            match written {
                Ok(_) => {}
                // Another pass wrote it: ask again over what it wrote.
                Err(StoreError::Conflict(_)) => return Ok(true),
                Err(e) => return Err(e.into()),
            }
        }
        let mut made = false;
        for i in unused.into_iter().take(want) {
            let trial = self.create_trial(experiment, parsed, &stored[i]).await?;
            let trial = self.reconcile_trial(experiment, parsed, trial).await?;
            trials.push(trial);
            made = true;
        }
        Ok(made)
    }

    async fn create_trial(
        &self,
        experiment: &Resource,
        parsed: &ExperimentSpec,
        suggested: &Suggested,
    ) -> Result<Resource, TuningError> {
        let run_spec = run_spec(
            parsed,
            &experiment.namespace,
            &experiment.name,
            &suggested.trial,
            &suggested.assignments,
        )?;
        let mut metadata = Map::new();
        metadata.insert("labels".into(), json!({EXPERIMENT_LABEL: experiment.name}));
        metadata.insert(
            "ownerReferences".into(),
            owner_reference(spec::EXPERIMENT_KIND, spec::API_VERSION, experiment),
        );
        let rules = self.early_stopping_rules_for(experiment, parsed).await?;
        let mut trial_status = Map::new();
        set_condition(
            &mut trial_status,
            "Created",
            true,
            "TrialCreated",
            "Trial is created",
        );
        let new = NewResource {
            kind: spec::TRIAL_KIND.into(),
            namespace: experiment.namespace.clone(),
            name: suggested.trial.clone(),
            metadata: Value::Object(metadata),
            spec: json!({
                "objective": experiment.spec.get("objective").cloned().unwrap_or(json!({})),
                "parameterAssignments": assignments_json(&suggested.assignments),
                "runSpec": run_spec,
                "metricsCollector": experiment.spec.get("metricsCollectorSpec").cloned().unwrap_or(json!({})),
                "primaryContainerName": parsed.trial_template.primary_container_name,
                "successCondition": JOB_SUCCESS,
                "failureCondition": JOB_FAILURE,
                "retainRun": parsed.trial_template.retain,
                "labels": {EXPERIMENT_LABEL: experiment.name},
                "earlyStoppingRules": rules,
            }),
            status: Value::Object(trial_status),
        };
        let (ns, name) = (experiment.namespace.clone(), suggested.trial.clone());
        Ok(self
            .store
            .call(move |conn| match resources::create(conn, new) {
                Err(StoreError::AlreadyExists { .. }) => resources::get(conn, spec::TRIAL_KIND, &ns, &name),
                other => other,
            })
            .await?)
    }

    async fn job_of(&self, trial: &Resource) -> Result<Option<Resource>, TuningError> {
        let (ns, name) = (trial.namespace.clone(), trial.name.clone());
        Ok(self
            .store
            .call(
                move |conn| match resources::get(conn, crate::jobs::spec::KIND, &ns, &name) {
                    Ok(job) => Ok(Some(job)),
                    Err(StoreError::NotFound { .. }) => Ok(None),
                    Err(e) => Err(e),
                },
            )
            .await?)
    }

    /// Moves an unfinished Trial along its Job: makes the Job, marks it Running, and
    /// on the Job's end collects metrics and ends the Trial.
    async fn reconcile_trial(
        &self,
        _experiment: &Resource,
        parsed: &ExperimentSpec,
        trial: Resource,
    ) -> Result<Resource, TuningError> {
        let mut status = status_map(&trial);
        let job = match self.job_of(&trial).await? {
            Some(job) if owned_by(&job, &trial.uid) => Some(job),
            Some(_) => {
                set_condition(
                    &mut status,
                    "Failed",
                    true,
                    "TrialFailed",
                    "a Job of the trial's name, not made by it, exists",
                );
                None
            }
            None if condition_true(&trial.status, "Running") => {
                set_condition(&mut status, "Running", false, "TrialFailed", "Trial has failed");
                set_condition(
                    &mut status,
                    "Failed",
                    true,
                    "TrialFailed",
                    "the trial's Job is gone",
                );
                None
            }
            None => {
                // Trials that write the same metrics file run one at a time, across
                // experiments and namespaces (one host filesystem): held from the check
                // to the Job's creation, so two passes cannot both start one.
                let _file_gate = match &parsed.collector {
                    Collector::File { path, .. } => {
                        let gate = METRICS_FILE_GATE.lock().await;
                        if let Some(other) = self.file_writer(path, &trial).await? {
                            let message = format!(
                                "waiting for trial {other} to finish: it writes the same metrics file {path}"
                            );
                            set_condition(&mut status, "Created", true, "TrialCreated", &message);
                            self.write_status(&trial, status).await?;
                            return Ok(self.reload(&trial.uid).await?.unwrap_or(trial));
                        }
                        // What the file holds before this trial runs is an earlier trial's.
                        let before = tokio::fs::metadata(path).await.map(|m| m.len()).unwrap_or(0);
                        status.insert(HEARTH_STATUS.into(), json!({"metricsFileOffset": before}));
                        Some(gate)
                    }
                    Collector::StdOut { .. } | Collector::Push => None,
                };
                let mut run_spec = trial.spec.get("runSpec").cloned().unwrap_or(json!({}));
                if let Some(metadata) = run_spec.get_mut("metadata").and_then(Value::as_object_mut) {
                    metadata.insert(
                        "ownerReferences".into(),
                        owner_reference(spec::TRIAL_KIND, spec::API_VERSION, &trial),
                    );
                    if parsed.collector == Collector::Push {
                        // Its process gets the Push endpoint and credential
                        // (`push::Push::environment`); the document only this mark.
                        let annotations = metadata.entry("annotations").or_insert_with(|| json!({}));
                        if let Some(annotations) = annotations.as_object_mut() {
                            annotations.insert(super::push::PUSH_ANNOTATION.into(), json!("true"));
                        }
                    }
                }
                match self.jobs.create(&trial.namespace, run_spec, false).await {
                    Ok(_) | Err(JobError::Store(StoreError::AlreadyExists { .. })) => {}
                    Err(e @ (JobError::Field(_) | JobError::Unschedulable(_))) => {
                        set_condition(
                            &mut status,
                            "Failed",
                            true,
                            "TrialFailed",
                            &format!("the trial's Job was refused: {e}"),
                        );
                    }
                    Err(e) => return Err(e.into()),
                }
                None
            }
        };
        if let Some(job) = &job {
            let started = job.status.get("startTime").is_some()
                || job.status.get("active").and_then(Value::as_u64).unwrap_or(0) > 0;
            if condition_true(&job.status, "Complete") {
                let logs = self.collect(parsed, &trial, job).await;
                self.log_observations(&trial, &logs).await?;
                let series = metrics::series(&logs);
                let wanted = parsed.objective.metric_names();
                status.insert("observation".into(), metrics::observation(&series, &wanted));
                set_condition(
                    &mut status,
                    "Running",
                    false,
                    "TrialSucceeded",
                    "Trial has succeeded",
                );
                if series.contains_key(&parsed.objective.metric_name) {
                    set_condition(
                        &mut status,
                        "Succeeded",
                        true,
                        "TrialSucceeded",
                        "Trial has succeeded",
                    );
                } else {
                    set_condition(
                        &mut status,
                        "MetricsUnavailable",
                        true,
                        "MetricsUnavailable",
                        "Metrics are not available",
                    );
                }
            } else if condition_true(&job.status, "Failed") {
                let why = job
                    .status
                    .get("conditions")
                    .and_then(Value::as_array)
                    .and_then(|cs| {
                        cs.iter()
                            .find(|c| c.get("type").and_then(Value::as_str) == Some("Failed"))
                    })
                    .and_then(|c| c.get("message").and_then(Value::as_str))
                    .unwrap_or("Trial has failed")
                    .to_string();
                set_condition(&mut status, "Running", false, "TrialFailed", "Trial has failed");
                set_condition(&mut status, "Failed", true, "TrialFailed", &why);
            } else {
                if started && !condition_true(&trial.status, "Running") {
                    status.insert("startTime".into(), json!(now_rfc3339()));
                    set_condition(&mut status, "Running", true, "TrialRunning", "Trial is running");
                }
                let rules = early_stopping_rules(&trial);
                if started && !rules.is_empty() {
                    // Katib's collector reports while the trial runs and checks each
                    // value against the trial's rules.
                    let logs = self.collect(parsed, &trial, job).await;
                    self.log_observations(&trial, &logs).await?;
                    if stops_early(&rules, &logs, parsed) {
                        let wanted = parsed.objective.metric_names();
                        status.insert(
                            "observation".into(),
                            metrics::observation(&metrics::series(&logs), &wanted),
                        );
                        set_condition(
                            &mut status,
                            "Running",
                            false,
                            "TrialEarlyStopped",
                            "Trial is early stopped",
                        );
                        set_condition(
                            &mut status,
                            "EarlyStopped",
                            true,
                            "TrialEarlyStopped",
                            "Trial is early stopped",
                        );
                    }
                }
            }
        }
        let ended = {
            let probe = Value::Object(status.clone());
            trial_end(&probe).is_some()
        };
        if ended {
            status.insert("completionTime".into(), json!(now_rfc3339()));
        }
        let early_stopped = condition_true(&Value::Object(status.clone()), "EarlyStopped");
        self.write_status(&trial, status).await?;
        if early_stopped && parsed.trial_template.retain {
            // Stopping is not deleting: a retained run is kept, its pods stopped.
            if let Some(job) = &job {
                self.suspend_job(job).await?;
            }
        } else if ended && !parsed.trial_template.retain && job.is_some() {
            // Katib removes a finished trial's run unless `retain` is set.
            match self.jobs.delete(&trial.namespace, &trial.name, false).await {
                Ok(_) | Err(JobError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(self.reload(&trial.uid).await?.unwrap_or(trial))
    }

    /// Ends an unfinished Trial when its experiment ends: its Job is stopped, and
    /// removed unless `retain` keeps it (then only suspended).
    async fn kill_trial(&self, trial: Resource, retain: bool) -> Result<Resource, TuningError> {
        if retain {
            if let Some(job) = self.job_of(&trial).await?.filter(|j| owned_by(j, &trial.uid)) {
                self.suspend_job(&job).await?;
            }
        } else {
            match self.jobs.delete(&trial.namespace, &trial.name, false).await {
                Ok(_) | Err(JobError::NotFound { .. }) => {}
                Err(e) => return Err(e.into()),
            }
        }
        let mut status = status_map(&trial);
        set_condition(
            &mut status,
            "Running",
            false,
            "TrialKilled",
            "Trial has been killed",
        );
        set_condition(
            &mut status,
            "Killed",
            true,
            "TrialKilled",
            "Trial has been killed",
        );
        status.insert("completionTime".into(), json!(now_rfc3339()));
        self.write_status(&trial, status).await?;
        Ok(self.reload(&trial.uid).await?.unwrap_or(trial))
    }

    /// The trial's metric values so far from its collector, in order. A metrics file
    /// older than the trial is an earlier trial's and is not read; of one it shares,
    /// only what was added since the trial started.
    async fn collect(
        &self,
        parsed: &ExperimentSpec,
        trial: &Resource,
        job: &Resource,
    ) -> Vec<metrics::MetricLog> {
        let wanted = parsed.objective.metric_names();
        let now = now_rfc3339();
        match &parsed.collector {
            Collector::StdOut { formats } => {
                let Ok(Some(log)) = self.jobs.log(&job.namespace, &job.name, None).await else {
                    return Vec::new();
                };
                let mut text = String::new();
                for file in &log.files {
                    if let Ok(bytes) = tokio::fs::read(file).await {
                        text.push_str(&metrics::tail_text(&bytes));
                        text.push('\n');
                    }
                }
                metrics::logs_from_text(&text, formats, &wanted, &now)
            }
            Collector::Push => {
                // What the trial reported is its log.
                let uid = trial.uid.clone();
                self.store
                    .call(move |conn| observation_logs::read(conn, &uid, None))
                    .await
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|l| wanted.contains(&l.name))
                    .collect()
            }
            Collector::File {
                path,
                format,
                formats,
            } => {
                let created = chrono::DateTime::parse_from_rfc3339(&trial.created_at).ok();
                let fresh = match (
                    tokio::fs::metadata(path).await.and_then(|m| m.modified()),
                    created,
                ) {
                    (Ok(modified), Some(created)) => {
                        chrono::DateTime::<chrono::Utc>::from(modified) >= created.with_timezone(&chrono::Utc)
                    }
                    _ => false,
                };
                if !fresh {
                    return Vec::new();
                }
                match tokio::fs::read(path).await {
                    Ok(bytes) => {
                        // Only what this trial added, unless it rewrote the file.
                        let offset = trial
                            .status
                            .pointer(&format!("/{HEARTH_STATUS}/metricsFileOffset"))
                            .and_then(Value::as_u64)
                            .and_then(|o| usize::try_from(o).ok())
                            .filter(|o| *o <= bytes.len())
                            .unwrap_or(0);
                        metrics::logs_from_file(
                            &metrics::tail_text(&bytes[offset..]),
                            *format,
                            formats,
                            &wanted,
                            &now,
                        )
                    }
                    Err(_) => Vec::new(),
                }
            }
        }
    }

    /// Appends to the trial's observation log what `logs` (everything its collector
    /// has read so far, in order) holds beyond what is logged, up to
    /// [`metrics::LOG_BOUND`]. Re-reading the same output appends nothing, so a value
    /// keeps the time it was first seen.
    async fn log_observations(
        &self,
        trial: &Resource,
        logs: &[metrics::MetricLog],
    ) -> Result<(), TuningError> {
        let uid = trial.uid.clone();
        let logs = logs.to_vec();
        self.store
            .call(move |conn| {
                let held = usize::try_from(observation_logs::count(conn, &uid)?).unwrap_or(usize::MAX);
                if let Some(new) = logs.get(held..).filter(|n| !n.is_empty()) {
                    observation_logs::append(conn, &uid, new, metrics::LOG_BOUND)?;
                }
                Ok(())
            })
            .await?;
        Ok(())
    }

    /// Another unfinished trial (any experiment, any namespace) whose File collector
    /// reads `path` and whose Job exists: `namespace/name`, if any.
    async fn file_writer(&self, path: &str, trial: &Resource) -> Result<Option<String>, TuningError> {
        let (path, uid) = (path.to_string(), trial.uid.clone());
        Ok(self
            .store
            .call(move |conn| {
                for other in resources::list(conn, spec::TRIAL_KIND, None)? {
                    let same = other
                        .spec
                        .pointer("/metricsCollector/source/fileSystemPath/path")
                        .and_then(Value::as_str)
                        == Some(path.as_str());
                    if other.uid == uid || !same || trial_end(&other.status).is_some() {
                        continue;
                    }
                    match resources::get(conn, crate::jobs::spec::KIND, &other.namespace, &other.name) {
                        Ok(_) => return Ok(Some(format!("{}/{}", other.namespace, other.name))),
                        Err(StoreError::NotFound { .. }) => {}
                        Err(e) => return Err(e),
                    }
                }
                Ok(None)
            })
            .await?)
    }

    /// Stops a Job's pods and keeps its record (`spec.suspend`), as a retained trial
    /// that was stopped early keeps its run.
    async fn suspend_job(&self, job: &Resource) -> Result<(), TuningError> {
        let mut spec = job.spec.clone();
        spec["suspend"] = json!(true);
        let mut metadata = job.metadata.clone();
        metadata["name"] = json!(job.name);
        let document = json!({
            "apiVersion": crate::jobs::spec::API_VERSION,
            "kind": crate::jobs::spec::KIND,
            "metadata": metadata,
            "spec": spec,
        });
        match self
            .jobs
            .replace(&job.namespace, &job.name, document, None, false)
            .await
        {
            Ok(_) | Err(JobError::NotFound { .. }) => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Katib's medianstop rules for a new trial (`Trial.spec.earlyStoppingRules`), fixed
    /// when the trial is made as Katib's experiment controller does: none until
    /// `min_trials_required` trials have succeeded; then the objective, the median of
    /// the succeeded trials' averages over their first `start_step` logged values, and
    /// the comparison that means worse (`less` when maximizing, `greater` when
    /// minimizing). Katib's service computes the mean of those averages under the name
    /// median; Hearth takes the median, as the rule (and Katib's docs) name it.
    async fn early_stopping_rules_for(
        &self,
        experiment: &Resource,
        parsed: &ExperimentSpec,
    ) -> Result<Value, TuningError> {
        let Some(stop) = parsed.early_stopping else {
            return Ok(json!([]));
        };
        let succeeded: Vec<String> = self
            .trials(experiment)
            .await?
            .into_iter()
            .filter(|t| trial_end(&t.status) == Some("Succeeded"))
            .map(|t| t.uid)
            .collect();
        if u64::try_from(succeeded.len()).unwrap_or(u64::MAX) < stop.min_trials_required {
            return Ok(json!([]));
        }
        let metric = parsed.objective.metric_name.clone();
        let first = usize::try_from(stop.start_step).unwrap_or(usize::MAX);
        let mut averages: Vec<f64> = self
            .store
            .call(move |conn| {
                let mut averages = Vec::new();
                for uid in succeeded {
                    let values: Vec<f64> = observation_logs::read(conn, &uid, Some(&metric))?
                        .iter()
                        .filter_map(|l| l.value.trim().parse::<f64>().ok())
                        .take(first)
                        .collect();
                    if !values.is_empty() {
                        averages.push(values.iter().sum::<f64>() / values.len() as f64);
                    }
                }
                Ok(averages)
            })
            .await?;
        if u64::try_from(averages.len()).unwrap_or(u64::MAX) < stop.min_trials_required {
            return Ok(json!([]));
        }
        averages.sort_by(f64::total_cmp);
        let mid = averages.len() / 2;
        let median = if averages.len().is_multiple_of(2) {
            (averages[mid - 1] + averages[mid]) / 2.0
        } else {
            averages[mid]
        };
        let comparison = match parsed.objective.objective_type {
            ObjectiveType::Maximize => "less",
            ObjectiveType::Minimize => "greater",
        };
        Ok(json!([{
            "name": parsed.objective.metric_name,
            "value": median.to_string(),
            "comparison": comparison,
            "startStep": stop.start_step,
        }]))
    }

    /// Removes the Experiment once its finalizers are gone. Its Trials and Suggestion
    /// follow through the garbage collector (`kube::gc`) as `propagationPolicy` says
    /// (Background by default, Foreground, or Orphan), and each Trial's Job after its
    /// Trial, its workloads stopped by the Jobs controller.
    async fn finish_deletion(&self, experiment: &Resource) -> Result<(), TuningError> {
        let uid = experiment.uid.clone();
        self.store.call(move |conn| resources::delete(conn, &uid)).await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn run_spec_substitutes_values_inside_their_strings() {
        let spec = json!({
            "objective": {"type": "maximize", "objectiveMetricName": "accuracy"},
            "algorithm": {"algorithmName": "random"},
            "parameters": [{"name": "opt", "parameterType": "categorical", "feasibleSpace": {"list": ["a"]}}],
            "trialTemplate": {
                "primaryContainerName": "main",
                "trialParameters": [{"name": "opt", "reference": "opt"}, {"name": "me", "reference": "${trialSpec.Name}"}],
                "trialSpec": {"apiVersion": "batch/v1", "kind": "Job", "spec": {"template": {"spec": {
                    "containers": [{"name": "main", "command": ["echo", "--opt=${trialParameters.opt}", "${trialParameters.me}"]}],
                    "restartPolicy": "Never"}}}}
            }
        });
        let parsed = spec::parse(&spec).unwrap();
        let job = run_spec(
            &parsed,
            "ns",
            "exp",
            "exp-abc",
            &[("opt".into(), "say \"hi\"".into())],
        )
        .unwrap();
        assert_eq!(
            job.pointer("/spec/template/spec/containers/0/command").unwrap(),
            &json!(["echo", "--opt=say \"hi\"", "exp-abc"])
        );
        assert_eq!(job["metadata"]["name"], "exp-abc");
        assert_eq!(job["metadata"]["labels"][TRIAL_LABEL], "exp-abc");
    }

    #[test]
    fn conditions_append_new_and_update_in_place() {
        let mut status = Map::new();
        set_condition(&mut status, "Created", true, "ExperimentCreated", "x");
        set_condition(&mut status, "Running", true, "ExperimentRunning", "y");
        set_condition(&mut status, "Running", false, "ExperimentGoalReached", "z");
        set_condition(&mut status, "Succeeded", true, "ExperimentGoalReached", "z");
        let s = Value::Object(status);
        assert!(is_finished(&s));
        assert!(!condition_true(&s, "Running"));
        assert_eq!(s["conditions"][2]["type"], "Succeeded");
    }
}
