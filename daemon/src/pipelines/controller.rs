//! The run controller. A level-triggered loop finds runs that are not finished and
//! drives each one: it walks the IR's DAG and submits every container task, with the
//! KFP executor contract, as a workload to the node's scheduler (which queues it for
//! CPU, memory and GPUs, runs it under `hearth shim` and records its exit). Task state
//! lives in memory and is written to the run's status in batches. A restarted daemon
//! drives the same runs again: a task recorded as finished is never run again (its
//! outputs are read back), and a step's workload id is derived from the run, the task
//! path, the retry generation and the attempt, so resubmitting it after a crash finds
//! the workload the previous daemon submitted (running, re-adopted by the scheduler,
//! or finished) and nothing runs twice unless its retry policy says so.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::BoxFuture;
use futures_util::stream::{FuturesUnordered, StreamExt};
use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

use super::cel;
use super::cleanup;
use super::executor::{self, Artifact, PlaceholderContext, StepPaths, Values};
use super::ir::{self, ComponentSpec, Dag, PipelineSpec, Task};
use super::protojson;
use super::store as pstore;
use crate::config::PipelinesConfig;
use crate::runtime::{Owner, ResourceRequest, Workload};
use crate::scheduler::{
    PriorityClass, Scheduler, SchedulerError, WorkloadPhase, WorkloadRecord, WorkloadRequest,
};
use crate::store::{now_rfc3339, Store, StoreError};

pub const TERMINAL: &[&str] = &["SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"];

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct TaskRecord {
    pub task_id: String,
    pub name: String,
    pub display_name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<String>,
    /// `container`, `importer`, `dag`, `loop` or `iteration`.
    pub kind: String,
    pub state: String,
    pub create_time: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub inputs: Values,
    #[serde(default)]
    pub outputs: Values,
    #[serde(default)]
    pub attempts: u32,
    #[serde(default)]
    pub cached: bool,
    /// The scheduler's workload of the latest attempt (logs, queue position).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workload: Option<String>,
    /// Why the latest attempt still waits in the scheduler's queue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pending_reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default)]
    pub gpus: u32,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub gpu_uuids: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct StateChange {
    pub update_time: String,
    pub state: String,
}

/// A run's observed state, kept in the run resource's `status`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct RunStatus {
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheduled_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub state_history: Vec<StateChange>,
    /// Keyed by task path: `root/for-loop-2/0/print-op`.
    #[serde(default)]
    pub tasks: BTreeMap<String, TaskRecord>,
}

impl RunStatus {
    pub fn set_state(&mut self, state: &str) {
        if self.state != state {
            self.state = state.to_string();
            self.state_history.push(StateChange {
                update_time: now_rfc3339(),
                state: state.to_string(),
            });
        }
    }
}

pub struct Inner {
    pub store: Store,
    pub data_dir: PathBuf,
    pub cfg: PipelinesConfig,
    /// Every step runs as a workload through the node's one scheduler, which owns the
    /// GPU ledger, the queue and the processes.
    pub scheduler: Scheduler,
    /// `[workloads] path_prefix`, kept in front of the daemon's PATH when a step's PATH
    /// is replaced to put the step venv first.
    path_prefix: Option<String>,
    active: Mutex<HashMap<String, CancellationToken>>,
    wake: Notify,
    /// Steps waiting for their workload to change phase, by workload id.
    waiters: Mutex<HashMap<String, Arc<Notify>>>,
    /// Runs whose driver failed to start: failures so far and the next try's time.
    start_failures: Mutex<HashMap<String, (u32, tokio::time::Instant)>>,
    /// Runs deleted whose cleanup has not finished: a driver started for one from a
    /// listing taken before the delete is cancelled at once.
    deleted: Mutex<HashSet<String>>,
}

#[derive(Clone)]
pub struct Controller {
    pub inner: Arc<Inner>,
}

impl Controller {
    pub fn new(
        store: Store,
        data_dir: PathBuf,
        cfg: PipelinesConfig,
        scheduler: Scheduler,
        path_prefix: Option<String>,
    ) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                store,
                data_dir,
                cfg,
                scheduler,
                path_prefix,
                active: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                waiters: Mutex::new(HashMap::new()),
                start_failures: Mutex::new(HashMap::new()),
                deleted: Mutex::new(HashSet::new()),
            }),
        }
    }

    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// A workload of a pipeline run changed phase: wake the step waiting for it.
    pub fn workload_event(&self, workload_id: &str) {
        {
            let waiters = self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(n) = waiters.get(workload_id) {
                // `notify_one` keeps a permit, so an event between two looks is not lost.
                n.notify_one();
            }
        }
    }

    /// Events were dropped (the broadcast lagged): every waiting step looks again.
    pub fn workload_events_lost(&self) {
        {
            let waiters = self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            for n in waiters.values() {
                n.notify_one();
            }
        }
    }

    /// Stops a run's steps now; the run's driver records CANCELED.
    pub fn cancel(&self, run_id: &str) {
        {
            let active = self.inner.active.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(token) = active.get(run_id) {
                token.cancel();
            }
        }
        self.wake();
    }

    /// A run's resource was deleted: stop its driver and every step it has, whether
    /// or not a driver is live, then remove its files (in the background).
    pub fn run_deleted(&self, uid: &str, namespace: &str, run_id: &str) {
        {
            let mut deleted = self.inner.deleted.lock().unwrap_or_else(PoisonError::into_inner);
            deleted.insert(run_id.to_string());
        }
        self.cancel(run_id);
        let this = self.clone();
        let (uid, namespace, run_id) = (uid.to_string(), namespace.to_string(), run_id.to_string());
        tokio::spawn(async move {
            let driving = || {
                this.inner
                    .active
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .contains_key(&run_id)
            };
            cleanup::deleted_run(&this.inner, driving, &uid, &namespace, &run_id).await;
            {
                let mut deleted = this.inner.deleted.lock().unwrap_or_else(PoisonError::into_inner);
                deleted.remove(&run_id);
            }
        });
    }

    /// The reconcile loop: runs forever, woken by new runs or every second.
    pub async fn run(self, health: crate::health::Health) {
        let mut next_sweep = tokio::time::Instant::now();
        loop {
            if tokio::time::Instant::now() >= next_sweep {
                if let Err(e) = cleanup::sweep(&self.inner).await {
                    tracing::warn!(error = %e, "sweeping deleted pipeline runs");
                }
                next_sweep = tokio::time::Instant::now() + SWEEP_INTERVAL;
            }
            match self.reconcile().await {
                Ok(()) => health.set("pipelines-controller", true, "running"),
                Err(e) => {
                    tracing::warn!(error = %e, "pipeline controller");
                    health.set("pipelines-controller", false, format!("reconcile failed: {e}"));
                }
            }
            if let Err(e) = super::schedule::tick(&self).await {
                tracing::warn!(error = %e, "recurring runs");
            }
            let _ = tokio::time::timeout(Duration::from_secs(1), self.inner.wake.notified()).await;
        }
    }

    async fn reconcile(&self) -> Result<(), StoreError> {
        let runs = self
            .inner
            .store
            .call(|conn| crate::store::resources::list(conn, pstore::RUN, None))
            .await?;
        for run in runs {
            let state = run.status["state"].as_str().unwrap_or("PENDING").to_string();
            if TERMINAL.contains(&state.as_str()) {
                continue;
            }
            if self.start_backing_off(&run.name) {
                continue;
            }
            let token = {
                let mut active = self.inner.active.lock().unwrap_or_else(PoisonError::into_inner);
                if active.contains_key(&run.name) {
                    continue;
                }
                let token = CancellationToken::new();
                active.insert(run.name.clone(), token.clone());
                token
            };
            // Listed just before a delete: `run_deleted` found no driver to cancel.
            if self
                .inner
                .deleted
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .contains(&run.name)
            {
                token.cancel();
            }
            if run.spec["terminate_requested"].as_bool() == Some(true) {
                token.cancel();
            }
            let this = self.clone();
            tokio::spawn(async move {
                let (id, uid) = (run.name.clone(), run.uid.clone());
                // A panic ends only this driver: it is recorded on the run and the run
                // is driven again after the start backoff, or ends FAILED after
                // MAX_START_TRIES (the driver resumes from the stored status and the
                // steps it already has).
                let driven = AssertUnwindSafe(drive(this.inner.clone(), run, token))
                    .catch_unwind()
                    .await;
                let failed = match driven {
                    Ok(Ok(())) => None,
                    Ok(Err(StartError::Invalid(e))) => Some(format!("the run cannot start: {e}")),
                    Ok(Err(StartError::Transient(e))) => {
                        tracing::warn!(run = %id, error = %e, "pipeline run driver could not start");
                        let tries = this.start_failed(&id);
                        (tries >= MAX_START_TRIES)
                            .then(|| format!("the run could not start after {tries} tries: {e}"))
                    }
                    Err(payload) => {
                        let message = crate::controller::panic_message(&*payload);
                        let tries = this.start_failed(&id);
                        tracing::error!(run = %id, panic = %message, tries, "pipeline run driver panicked");
                        record_driver_panic(&this.inner, &uid, &message, tries).await;
                        (tries >= MAX_START_TRIES)
                            .then(|| format!("the run's driver panicked {tries} times; the last: {message}"))
                    }
                };
                if let Some(reason) = failed {
                    if let Err(e) = fail_run(&this.inner, &uid, &reason).await {
                        tracing::warn!(run = %id, error = %e, "recording a run that cannot start");
                    }
                    this.clear_start_failures(&id);
                }
                {
                    let mut active = this.inner.active.lock().unwrap_or_else(PoisonError::into_inner);
                    active.remove(&id);
                }
            });
        }
        Ok(())
    }

    /// Counts a failed start of a run's driver and sets when the next may be tried
    /// (2 s doubling to a minute); returns the failures so far.
    fn start_failed(&self, run_id: &str) -> u32 {
        let mut failures = self
            .inner
            .start_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let entry = failures
            .entry(run_id.to_string())
            .or_insert((0, tokio::time::Instant::now()));
        entry.0 = entry.0.saturating_add(1);
        let wait = Duration::from_secs(2u64.saturating_pow(entry.0).min(60));
        entry.1 = tokio::time::Instant::now() + wait;
        entry.0
    }

    fn clear_start_failures(&self, run_id: &str) {
        {
            let mut failures = self
                .inner
                .start_failures
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            failures.remove(run_id);
        }
    }

    /// Whether a run whose driver failed to start must still wait before another try.
    fn start_backing_off(&self, run_id: &str) -> bool {
        self.inner
            .start_failures
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(run_id)
            .is_some_and(|(_, next)| *next > tokio::time::Instant::now())
    }
}

/// How often steps and files of deleted runs are looked for, and the cache pruned.
const SWEEP_INTERVAL: Duration = Duration::from_secs(60);

/// How many times a run's driver may fail to start for a passing reason (the store or
/// the scheduler failing) before the run ends FAILED.
const MAX_START_TRIES: u32 = 8;

/// Why a run's driver did not start.
#[derive(Debug)]
enum StartError {
    /// The stored run can never run (its pipeline spec does not validate: stored by an
    /// older version, or written to the database by hand).
    Invalid(String),
    /// The store or the scheduler failed; a later try may work.
    Transient(String),
}

/// A `Warning` event `DriverPanicked` on the run, saying what panicked and what
/// happens next. A store error here is logged: the driver is retried regardless.
async fn record_driver_panic(inner: &Inner, uid: &str, message: &str, tries: u32) {
    let next = if tries >= MAX_START_TRIES {
        "the run ends FAILED".to_string()
    } else {
        format!("the run is driven again (try {tries} of {MAX_START_TRIES})")
    };
    let text = format!("the run's driver panicked: {message}; {next}");
    let uid = uid.to_string();
    let written = inner
        .store
        .call(move |conn| {
            crate::store::resources::record_event(conn, &uid, "Warning", "DriverPanicked", &text)
        })
        .await;
    if let Err(e) = written {
        tracing::warn!(error = %e, "recording a driver panic on its run");
    }
}

/// Ends a run FAILED with `reason`, and stops any step it still has, so that a run
/// that cannot proceed neither retries forever nor leaves processes behind.
async fn fail_run(inner: &Inner, uid: &str, reason: &str) -> Result<(), String> {
    if let Ok(steps) = inner.scheduler.list_by_owner(uid).await {
        for step in steps.iter().filter(|w| !w.phase.is_final()) {
            if let Err(e) = inner.scheduler.stop(&step.id).await {
                tracing::warn!(workload = %step.id, error = %e, "stopping a step of a failed run");
            }
        }
    }
    let owned = uid.to_string();
    let Some(run) = inner
        .store
        .call(move |conn| crate::store::resources::get_by_uid(conn, &owned))
        .await
        .map_err(|e| e.to_string())?
    else {
        return Ok(());
    };
    let mut status: RunStatus = serde_json::from_value(run.status.clone()).unwrap_or_default();
    if TERMINAL.contains(&status.state.as_str()) {
        return Ok(());
    }
    status.set_state("FAILED");
    status.error = Some(reason.to_string());
    status.finished_at = Some(now_rfc3339());
    let status = serde_json::to_value(&status).map_err(|e| e.to_string())?;
    let uid = uid.to_string();
    inner
        .store
        .call(move |conn| crate::store::resources::update_status(conn, &uid, &status, None))
        .await
        .map_err(|e| e.to_string())?;
    Ok(())
}

/// The owner kind of pipeline steps' workloads, in the scheduler's queue and events.
pub const OWNER_KIND: &str = "PipelineRun";

/// How long task changes gather before the run's status is written again. The status
/// holds every task, so writing it per change would cost O(tasks) per change.
const FLUSH_INTERVAL: Duration = Duration::from_millis(100);

/// How often a waiting step looks at its workload without an event: the queue's
/// pending reason changes without a phase change.
const WAIT_TICK: Duration = Duration::from_secs(2);

/// Everything one run's driver shares between its tasks.
struct RunCtx {
    inner: Arc<Inner>,
    run_uid: String,
    run_id: String,
    run_name: String,
    namespace: String,
    spec: PipelineSpec,
    raw: Value,
    platform: BTreeMap<String, ir::PlatformExecutor>,
    enable_caching: Option<bool>,
    /// Bumped by `:retry`, so a retried run's attempts get new workload ids.
    generation: u64,
    /// Workload ids the scheduler already held for this run when the driver started:
    /// steps a previous daemon submitted, whatever the (batched) status says.
    known: BTreeSet<String>,
    status: Mutex<RunStatus>,
    /// Task changes not yet written.
    changed: Notify,
    cancel: CancellationToken,
}

#[derive(Debug, Clone)]
enum Outcome {
    Succeeded(Values),
    Skipped,
    Failed(String),
    /// Not started because an upstream task failed.
    NotRun,
}

impl RunCtx {
    fn record<F: FnOnce(&mut TaskRecord)>(&self, path: &str, f: F) {
        let mut status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        let rec = status
            .tasks
            .entry(path.to_string())
            .or_insert_with(|| TaskRecord {
                task_id: uuid::Uuid::new_v4().to_string(),
                create_time: now_rfc3339(),
                state: "PENDING".into(),
                ..Default::default()
            });
        f(rec);
    }

    fn existing(&self, path: &str) -> Option<TaskRecord> {
        self.status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .tasks
            .get(path)
            .cloned()
    }

    fn snapshot(&self) -> Value {
        let status = self.status.lock().unwrap_or_else(PoisonError::into_inner);
        serde_json::to_value(&*status).unwrap_or(Value::Null)
    }

    /// Writes the whole status now.
    async fn flush(&self) {
        let status = self.snapshot();
        let uid = self.run_uid.clone();
        let res = self
            .inner
            .store
            .call(move |conn| crate::store::resources::update_status(conn, &uid, &status, None))
            .await;
        match res {
            Ok(_) => {}
            // A deleted run's driver winds down; its status has nowhere to go.
            Err(e) if self.cancel.is_cancelled() => {
                tracing::debug!(run = %self.run_id, error = %e, "writing the status of a stopped run")
            }
            Err(e) => tracing::warn!(run = %self.run_id, error = %e, "writing run status"),
        }
    }

    /// Changes a task in memory; the run's flusher writes it within FLUSH_INTERVAL.
    /// Losing the last changes to a crash costs nothing that matters: steps are
    /// workloads with deterministic ids, so a restarted driver finds each step's
    /// workload (running or finished) in the scheduler and reads its outputs back, and
    /// everything else is derived again from the IR.
    async fn update<F: FnOnce(&mut TaskRecord)>(&self, path: &str, f: F) {
        self.record(path, f);
        self.changed.notify_one();
    }

    fn run_dir(&self) -> PathBuf {
        cleanup::run_dir(&self.inner.data_dir, &self.run_id)
    }

    /// The workload id of one attempt of one task: stable across daemon restarts, so a
    /// resubmission after a crash finds the workload already there and runs nothing.
    fn workload_id(&self, path: &str, attempt: u32) -> String {
        let digest = hex::encode(Sha256::digest(path.as_bytes()));
        format!(
            "kfp-{}-g{}-{}-a{attempt}",
            self.run_uid,
            self.generation,
            &digest[..16]
        )
    }
}

/// Writes the run's status after changes, at most once per FLUSH_INTERVAL.
async fn flusher(ctx: Arc<RunCtx>, stop: CancellationToken) {
    loop {
        tokio::select! {
            _ = ctx.changed.notified() => {}
            _ = stop.cancelled() => return,
        }
        ctx.flush().await;
        tokio::select! {
            _ = tokio::time::sleep(FLUSH_INTERVAL) => {}
            _ = stop.cancelled() => return,
        }
    }
}

async fn drive(
    inner: Arc<Inner>,
    run: crate::store::Resource,
    cancel: CancellationToken,
) -> Result<(), StartError> {
    let mut status: RunStatus = serde_json::from_value(run.status.clone()).unwrap_or_default();
    let pkg = ir::from_api(&run.spec["pipeline_spec"]).map_err(|e| StartError::Invalid(e.to_string()))?;
    let validated = ir::validate(&pkg).map_err(|e| StartError::Invalid(e.to_string()))?;
    let known = inner
        .scheduler
        .list_by_owner(&run.uid)
        .await
        .map_err(|e| StartError::Transient(e.to_string()))?
        .into_iter()
        .map(|w| w.id)
        .collect();
    status.set_state("RUNNING");
    if status.scheduled_at.is_none() {
        status.scheduled_at = Some(now_rfc3339());
    }
    let ctx = Arc::new(RunCtx {
        inner: inner.clone(),
        run_uid: run.uid.clone(),
        run_id: run.name.clone(),
        run_name: run.spec["display_name"].as_str().unwrap_or(&run.name).to_string(),
        namespace: run.namespace.clone(),
        raw: pkg.spec.clone(),
        spec: validated.spec,
        platform: validated.platform,
        enable_caching: run.spec["enable_caching"].as_bool(),
        generation: run.spec["retry_generation"].as_u64().unwrap_or(0),
        known,
        status: Mutex::new(status),
        changed: Notify::new(),
        cancel: cancel.clone(),
    });
    ctx.flush().await;
    let stop_flusher = CancellationToken::new();
    let flushing = tokio::spawn(flusher(ctx.clone(), stop_flusher.clone()));
    // Should this driver panic, its flusher ends with it.
    let _stop_flusher_on_unwind = stop_flusher.clone().drop_guard();
    if crate::controller::fault("panic-driver", "always")
        || crate::controller::fault_once("panic-driver", "once")
    {
        panic!("injected fault (HEARTH_FAULT_INJECT=panic-driver)");
    }

    let params = run.spec["runtime_config"]["parameters"]
        .as_object()
        .cloned()
        .unwrap_or_default();
    let mut inputs = Values::default();
    for (k, v) in params {
        inputs.parameters.insert(k, v);
    }
    let root = ctx.spec.root.clone();
    let outcome = match apply_defaults(&root, inputs) {
        Ok(inputs) => run_dag_component(ctx.clone(), root, "root".to_string(), inputs).await,
        Err(e) => Outcome::Failed(e),
    };
    // The final write comes after the flusher's last one, never before it.
    stop_flusher.cancel();
    let _ = flushing.await;
    let (state, error) = if cancel.is_cancelled() {
        ("CANCELED", Some("the run was terminated".to_string()))
    } else {
        match outcome {
            Outcome::Succeeded(_) | Outcome::Skipped => ("SUCCEEDED", None),
            Outcome::Failed(e) => ("FAILED", Some(e)),
            Outcome::NotRun => ("FAILED", Some("no task could run".to_string())),
        }
    };
    {
        let mut status = ctx.status.lock().unwrap_or_else(PoisonError::into_inner);
        status.set_state(state);
        status.error = error;
        status.finished_at = Some(now_rfc3339());
    }
    ctx.flush().await;
    Ok(())
}

/// Fills in defaults and coerces types from a component's input definitions.
fn apply_defaults(comp: &ComponentSpec, mut inputs: Values) -> Result<Values, String> {
    for (name, def) in &comp.input_definitions.parameters {
        match inputs.parameters.remove(name) {
            Some(v) if !v.is_null() => {
                let v = executor::coerce(v, &def.parameter_type).map_err(|e| format!("input {name}: {e}"))?;
                inputs.parameters.insert(name.clone(), v);
            }
            _ => {
                if let Some(d) = &def.default_value {
                    let v = executor::coerce(d.clone(), &def.parameter_type)
                        .map_err(|e| format!("input {name}: {e}"))?;
                    inputs.parameters.insert(name.clone(), v);
                } else if !def.is_optional && def.parameter_type != "TASK_FINAL_STATUS" {
                    return Err(format!("input parameter {name:?} has no value and no default"));
                }
            }
        }
    }
    Ok(inputs)
}

fn run_dag_component(
    ctx: Arc<RunCtx>,
    comp: ComponentSpec,
    path: String,
    inputs: Values,
) -> BoxFuture<'static, Outcome> {
    async move {
        let Some(dag) = comp.dag.clone() else {
            return Outcome::Failed(format!("{path} is not a DAG"));
        };
        let results = execute_dag(ctx.clone(), &dag, &path, &inputs).await;
        if ctx.cancel.is_cancelled() {
            return Outcome::Failed("canceled".into());
        }
        if let Some((name, err)) = results.iter().find_map(|(n, o)| match o {
            Outcome::Failed(e) => Some((n.clone(), e.clone())),
            _ => None,
        }) {
            return Outcome::Failed(format!("task {name} failed: {err}"));
        }
        match dag_outputs(&comp, &dag, &results) {
            Ok(v) => Outcome::Succeeded(v),
            Err(e) => Outcome::Failed(e),
        }
    }
    .boxed()
}

fn dag_outputs(
    comp: &ComponentSpec,
    dag: &Dag,
    results: &BTreeMap<String, Outcome>,
) -> Result<Values, String> {
    let mut out = Values::default();
    let value_of = |task: &str, key: &str| -> Option<Value> {
        match results.get(task) {
            Some(Outcome::Succeeded(v)) => v.parameters.get(key).cloned(),
            _ => None,
        }
    };
    for (k, o) in &dag.outputs.parameters {
        let selectors: Vec<&ir::ParameterSelector> = match (&o.value_from_parameter, &o.value_from_oneof) {
            (Some(s), _) => vec![s],
            (None, Some(one)) => one.parameter_selectors.iter().collect(),
            (None, None) => vec![],
        };
        let v = selectors
            .iter()
            .find_map(|s| value_of(&s.producer_subtask, &s.output_parameter_key));
        match v {
            Some(v) => {
                out.parameters.insert(k.clone(), v);
            }
            None => {
                let optional = comp
                    .output_definitions
                    .parameters
                    .get(k)
                    .is_some_and(|d| d.is_optional);
                if !optional && o.value_from_oneof.is_some() {
                    return Err(format!("no branch of the oneOf for output {k} ran"));
                }
            }
        }
    }
    for (k, o) in &dag.outputs.artifacts {
        let mut found = None;
        for s in &o.artifact_selectors {
            if let Some(Outcome::Succeeded(v)) = results.get(&s.producer_subtask) {
                if let Some(a) = v.artifacts.get(&s.output_artifact_key) {
                    found = Some(a.clone());
                    break;
                }
            }
        }
        if let Some(a) = found {
            out.artifacts.insert(k.clone(), a);
        }
    }
    Ok(out)
}

async fn execute_dag(ctx: Arc<RunCtx>, dag: &Dag, path: &str, inputs: &Values) -> BTreeMap<String, Outcome> {
    let mut results: BTreeMap<String, Outcome> = BTreeMap::new();
    let mut pending: BTreeSet<String> = dag.tasks.keys().cloned().collect();
    let mut running = FuturesUnordered::new();
    loop {
        let ready: Vec<String> = pending
            .iter()
            .filter(|n| dag.tasks[*n].upstream().iter().all(|u| results.contains_key(u)))
            .cloned()
            .collect();
        for name in ready {
            pending.remove(&name);
            let task = dag.tasks[&name].clone();
            let upstream_failed = task
                .upstream()
                .iter()
                .any(|u| matches!(results.get(u), Some(Outcome::Failed(_) | Outcome::NotRun)));
            let tpath = format!("{path}/{name}");
            if (upstream_failed && !task.trigger_policy.runs_after_failure()) || ctx.cancel.is_cancelled() {
                let reason = if ctx.cancel.is_cancelled() {
                    "the run was terminated"
                } else {
                    "an upstream task failed"
                };
                ctx.update(&tpath, |r| {
                    r.name = name.clone();
                    r.display_name = task.task_info.name.clone();
                    r.parent = Some(path.to_string());
                    r.state = if ctx.cancel.is_cancelled() {
                        "CANCELED"
                    } else {
                        "SKIPPED"
                    }
                    .into();
                    r.error = Some(reason.into());
                })
                .await;
                results.insert(name, Outcome::NotRun);
                continue;
            }
            let snapshot = results.clone();
            let ctx2 = ctx.clone();
            let inputs2 = inputs.clone();
            let parent = path.to_string();
            running.push(async move {
                let out = run_task(ctx2, &parent, &name, &task, &inputs2, &snapshot).await;
                (name, out)
            });
        }
        match running.next().await {
            Some((name, out)) => {
                results.insert(name, out);
            }
            None => break,
        }
    }
    results
}

/// A `PipelineTaskFinalStatus` in proto3 JSON, as KFP's driver writes it: `error` is
/// the empty `google.rpc.Status` (`{}`) after a success, so the SDK's
/// `error_code`/`error_message` are `None`; after a failure, code 2 (`UNKNOWN`; 1,
/// `CANCELLED`, for a terminated run) and the message.
fn final_status(producer: &str, results: &BTreeMap<String, Outcome>, ctx: &RunCtx) -> Value {
    let failure = match results.get(producer) {
        Some(Outcome::Succeeded(_)) | Some(Outcome::Skipped) => None,
        Some(Outcome::Failed(e)) => Some(e.clone()),
        Some(Outcome::NotRun) | None => Some("the task did not run: an upstream task failed".to_string()),
    };
    let (state, error) = match failure {
        None => ("SUCCEEDED", serde_json::json!({})),
        Some(message) if ctx.cancel.is_cancelled() => {
            ("CANCELLED", serde_json::json!({"code": 1, "message": message}))
        }
        Some(message) => ("FAILED", serde_json::json!({"code": 2, "message": message})),
    };
    serde_json::json!({
        "state": state,
        "error": error,
        "pipelineJobResourceName": ctx.run_id,
        "pipelineTaskName": producer,
    })
}

fn resolve_inputs(
    ctx: &RunCtx,
    task: &Task,
    dag_inputs: &Values,
    results: &BTreeMap<String, Outcome>,
) -> Result<Values, String> {
    let mut out = Values::default();
    for (name, p) in &task.inputs.parameters {
        let mut v = if let Some(src) = &p.component_input_parameter {
            dag_inputs.parameters.get(src).cloned()
        } else if let Some(t) = &p.task_output_parameter {
            match results.get(&t.producer_task) {
                Some(Outcome::Succeeded(v)) => v.parameters.get(&t.output_parameter_key).cloned(),
                _ => None,
            }
        } else if let Some(c) = &p.runtime_value {
            Some(c.constant.clone())
        } else {
            p.task_final_status
                .as_ref()
                .map(|f| final_status(&f.producer_task, results, ctx))
        };
        if let (Some(sel), Some(val)) = (&p.parameter_expression_selector, v.clone()) {
            let e = cel::parse(sel)?;
            let input = match val {
                Value::String(s) => Value::String(s),
                other => Value::String(other.to_string()),
            };
            v = Some(cel::eval(&e, &Map::new(), &input)?);
        }
        if let Some(v) = v {
            out.parameters.insert(name.clone(), v);
        }
    }
    for (name, a) in &task.inputs.artifacts {
        let v = if let Some(src) = &a.component_input_artifact {
            dag_inputs.artifacts.get(src).cloned()
        } else if let Some(t) = &a.task_output_artifact {
            match results.get(&t.producer_task) {
                Some(Outcome::Succeeded(v)) => v.artifacts.get(&t.output_artifact_key).cloned(),
                _ => None,
            }
        } else {
            None
        };
        if let Some(v) = v {
            out.artifacts.insert(name.clone(), v);
        }
    }
    Ok(out)
}

async fn run_task(
    ctx: Arc<RunCtx>,
    parent: &str,
    name: &str,
    task: &Task,
    dag_inputs: &Values,
    results: &BTreeMap<String, Outcome>,
) -> Outcome {
    let path = format!("{parent}/{name}");
    if let Some(rec) = ctx.existing(&path) {
        match rec.state.as_str() {
            "SUCCEEDED" if rec.kind != "dag" && rec.kind != "loop" => return Outcome::Succeeded(rec.outputs),
            "SKIPPED" if rec.error.is_none() => return Outcome::Skipped,
            _ => {}
        }
    }
    let mut inputs = match resolve_inputs(&ctx, task, dag_inputs, results) {
        Ok(i) => i,
        Err(e) => return fail(&ctx, &path, name, task, parent, e).await,
    };
    if let Some(cond) = &task.trigger_policy.condition {
        match cel::condition(cond, &inputs.parameters) {
            Ok(true) => {}
            Ok(false) => {
                ctx.update(&path, |r| {
                    describe(r, name, task, parent, "task");
                    r.state = "SKIPPED".into();
                    r.end_time = Some(now_rfc3339());
                })
                .await;
                return Outcome::Skipped;
            }
            Err(e) => {
                return fail(
                    &ctx,
                    &path,
                    name,
                    task,
                    parent,
                    format!("condition {cond:?}: {e}"),
                )
                .await
            }
        }
    }
    let Some(comp) = ctx.spec.component(&task.component_ref.name).cloned() else {
        return fail(&ctx, &path, name, task, parent, "unknown component".into()).await;
    };
    if task.parameter_iterator.is_some() || task.artifact_iterator.is_some() {
        return run_loop(ctx, &path, name, task, parent, comp, inputs).await;
    }
    inputs = match apply_defaults(&comp, inputs) {
        Ok(i) => i,
        Err(e) => return fail(&ctx, &path, name, task, parent, e).await,
    };
    run_component(ctx, &path, name, task, parent, comp, inputs).await
}

fn describe(r: &mut TaskRecord, name: &str, task: &Task, parent: &str, kind: &str) {
    r.name = name.to_string();
    r.display_name = if task.task_info.name.is_empty() {
        name.to_string()
    } else {
        task.task_info.name.clone()
    };
    r.parent = Some(parent.to_string());
    if r.kind.is_empty() {
        r.kind = kind.to_string();
    }
}

async fn fail(ctx: &RunCtx, path: &str, name: &str, task: &Task, parent: &str, error: String) -> Outcome {
    let state = if ctx.cancel.is_cancelled() {
        "CANCELED"
    } else {
        "FAILED"
    };
    ctx.update(path, |r| {
        describe(r, name, task, parent, "task");
        r.state = state.into();
        r.error = Some(error.clone());
        r.end_time = Some(now_rfc3339());
    })
    .await;
    Outcome::Failed(error)
}

fn run_component(
    ctx: Arc<RunCtx>,
    path: &str,
    name: &str,
    task: &Task,
    parent: &str,
    comp: ComponentSpec,
    inputs: Values,
) -> BoxFuture<'static, Outcome> {
    let (path, name, task, parent) = (
        path.to_string(),
        name.to_string(),
        task.clone(),
        parent.to_string(),
    );
    async move {
        if comp.dag.is_some() {
            ctx.update(&path, |r| {
                describe(r, &name, &task, &parent, "dag");
                r.state = "RUNNING".into();
                r.start_time.get_or_insert_with(now_rfc3339);
                r.inputs = inputs.clone();
            })
            .await;
            let out = run_dag_component(ctx.clone(), comp, path.clone(), inputs).await;
            finish(&ctx, &path, &out).await;
            return out;
        }
        let label = comp.executor_label.clone().unwrap_or_default();
        let Some(executor) = ctx.spec.executor(&label).cloned() else {
            return fail(
                &ctx,
                &path,
                &name,
                &task,
                &parent,
                format!("executor {label} missing"),
            )
            .await;
        };
        if let Some(importer) = executor.importer {
            let out = import(&ctx, &comp, &importer, &inputs);
            ctx.update(&path, |r| {
                describe(r, &name, &task, &parent, "importer");
                r.inputs = inputs.clone();
            })
            .await;
            let out = match out {
                Ok(v) => Outcome::Succeeded(v),
                Err(e) => Outcome::Failed(e),
            };
            finish(&ctx, &path, &out).await;
            return out;
        }
        let Some(container) = executor.container else {
            return fail(
                &ctx,
                &path,
                &name,
                &task,
                &parent,
                "executor has no container".into(),
            )
            .await;
        };
        run_container(ctx, path, name, task, parent, comp, label, container, inputs).await
    }
    .boxed()
}

async fn finish(ctx: &RunCtx, path: &str, out: &Outcome) {
    let cancelled = ctx.cancel.is_cancelled();
    ctx.update(path, |r| {
        match out {
            Outcome::Succeeded(v) => {
                r.state = "SUCCEEDED".into();
                r.outputs = v.clone();
            }
            Outcome::Skipped => r.state = "SKIPPED".into(),
            Outcome::Failed(e) => {
                r.state = if cancelled { "CANCELED" } else { "FAILED" }.into();
                r.error = Some(e.clone());
            }
            Outcome::NotRun => r.state = "SKIPPED".into(),
        }
        r.end_time = Some(now_rfc3339());
    })
    .await;
}

fn import(
    ctx: &RunCtx,
    comp: &ComponentSpec,
    importer: &ir::Importer,
    inputs: &Values,
) -> Result<Values, String> {
    let uri = match (
        &importer.artifact_uri.constant,
        &importer.artifact_uri.runtime_parameter,
    ) {
        (Some(Value::String(s)), _) => s.clone(),
        (_, Some(p)) => match inputs.parameters.get(p) {
            Some(Value::String(s)) => s.clone(),
            other => return Err(format!("importer URI parameter {p} is {other:?}")),
        },
        other => return Err(format!("importer URI {other:?} is not a string")),
    };
    let local = uri.strip_prefix("file://").unwrap_or(&uri);
    if local.contains("://") {
        return Err(format!("importer URI {uri}: Hearth imports local files only"));
    }
    // Checked as the namespace's user, as the steps that read it will run.
    let run_as = crate::runtime::identity::global()
        .for_workload(&ctx.namespace, None)
        .map_err(|e| e.to_string())?;
    let path = std::path::PathBuf::from(local);
    let visible = crate::runtime::identity::as_user(&run_as, move || std::fs::metadata(&path).is_ok())
        .map_err(|e| format!("importer: {e}"))?;
    if !visible {
        return Err(format!(
            "importer: {local} does not exist on this host or {} may not read it",
            run_as.user
        ));
    }
    let mut metadata = Map::new();
    if let Some(Value::Object(m)) = &importer.metadata {
        for (k, v) in m {
            // Metadata values may themselves be placeholders of the importer's inputs.
            let v = match v {
                Value::String(s) if s.starts_with("{{$.inputs.parameters[") => {
                    let key = s
                        .trim_start_matches("{{$.inputs.parameters['")
                        .trim_end_matches("']}}");
                    inputs.parameters.get(key).cloned().unwrap_or(Value::Null)
                }
                other => other.clone(),
            };
            metadata.insert(k.clone(), v);
        }
    }
    let _ = ctx;
    let key = comp
        .output_definitions
        .artifacts
        .keys()
        .next()
        .cloned()
        .unwrap_or_else(|| "artifact".into());
    let mut out = Values::default();
    out.artifacts.insert(
        key.clone(),
        vec![Artifact {
            name: key,
            uri: local.to_string(),
            metadata,
            artifact_type: importer.type_schema.clone(),
        }],
    );
    Ok(out)
}

/// Why a loop over `count` items is refused (see `ir::MAX_LOOP_ITEMS`): checked before
/// one task per item is made, since the list may come from an upstream task's output.
fn too_many_items(field: &str, count: usize) -> String {
    format!(
        "{field}: the loop's list has {count} items; a ParallelFor may have at most {}",
        ir::MAX_LOOP_ITEMS
    )
}

async fn run_loop(
    ctx: Arc<RunCtx>,
    path: &str,
    name: &str,
    task: &Task,
    parent: &str,
    comp: ComponentSpec,
    inputs: Values,
) -> Outcome {
    // Items: a raw JSON list, a list parameter (or its JSON text), or an artifact list.
    let items: Vec<Values> = if let Some(it) = &task.parameter_iterator {
        let list = match (&it.items.raw, &it.items.input_parameter) {
            (Some(raw), _) => serde_json::from_str::<Value>(raw).ok(),
            (None, Some(p)) => match inputs.parameters.get(p) {
                Some(Value::String(s)) => serde_json::from_str::<Value>(s).ok(),
                other => other.cloned(),
            },
            (None, None) => None,
        };
        let Some(Value::Array(list)) = list else {
            return fail(
                &ctx,
                path,
                name,
                task,
                parent,
                "the loop's items are not a list".into(),
            )
            .await;
        };
        if list.len() > ir::MAX_LOOP_ITEMS {
            let reason = too_many_items("parameterIterator.items", list.len());
            return fail(&ctx, path, name, task, parent, reason).await;
        }
        list.into_iter()
            .map(|item| {
                let mut v = inputs.clone();
                v.parameters.insert(it.item_input.clone(), item);
                v
            })
            .collect()
    } else if let Some(it) = &task.artifact_iterator {
        let key = it.items.input_artifact.clone().unwrap_or_default();
        let list = inputs.artifacts.get(&key).cloned().unwrap_or_default();
        if list.len() > ir::MAX_LOOP_ITEMS {
            let reason = too_many_items("artifactIterator.items", list.len());
            return fail(&ctx, path, name, task, parent, reason).await;
        }
        list.into_iter()
            .map(|a| {
                let mut v = inputs.clone();
                v.artifacts.insert(it.item_input.clone(), vec![a]);
                v
            })
            .collect()
    } else {
        Vec::new()
    };
    ctx.update(path, |r| {
        describe(r, name, task, parent, "loop");
        r.state = "RUNNING".into();
        r.start_time.get_or_insert_with(now_rfc3339);
    })
    .await;
    let limit = match task.iterator_policy.parallelism_limit {
        0 => items.len().max(1),
        n => n as usize,
    };
    let gate = Arc::new(Semaphore::new(limit));
    let mut iterations = FuturesUnordered::new();
    for (i, item_inputs) in items.into_iter().enumerate() {
        let (ctx, comp, gate) = (ctx.clone(), comp.clone(), gate.clone());
        let ipath = format!("{path}/{i}");
        let task = task.clone();
        iterations.push(async move {
            let _permit = gate.acquire_owned().await;
            let out = match apply_defaults(&comp, item_inputs) {
                Ok(inputs) => {
                    run_component(
                        ctx,
                        &ipath,
                        &i.to_string(),
                        &task,
                        &ipath_parent(&ipath),
                        comp,
                        inputs,
                    )
                    .await
                }
                Err(e) => Outcome::Failed(e),
            };
            (i, out)
        });
    }
    let mut outs: BTreeMap<usize, Outcome> = BTreeMap::new();
    while let Some((i, out)) = iterations.next().await {
        outs.insert(i, out);
    }
    // Collected outputs: each output becomes the list of the iterations' values.
    let mut collected = Values::default();
    let mut error = None;
    for out in outs.values() {
        match out {
            Outcome::Succeeded(v) => {
                for (k, val) in &v.parameters {
                    let entry = collected
                        .parameters
                        .entry(k.clone())
                        .or_insert_with(|| Value::Array(vec![]));
                    if let Value::Array(a) = entry {
                        a.push(val.clone());
                    }
                }
                for (k, arts) in &v.artifacts {
                    collected
                        .artifacts
                        .entry(k.clone())
                        .or_default()
                        .extend(arts.iter().cloned());
                }
            }
            Outcome::Failed(e) => error = Some(e.clone()),
            Outcome::Skipped | Outcome::NotRun => {}
        }
    }
    let out = match error {
        Some(e) => Outcome::Failed(e),
        None => Outcome::Succeeded(collected),
    };
    finish(&ctx, path, &out).await;
    out
}

fn ipath_parent(ipath: &str) -> String {
    ipath
        .rsplit_once('/')
        .map(|(p, _)| p.to_string())
        .unwrap_or_default()
}

/// KFP's cache key: the component's interface and container, and the inputs.
fn cache_key(ctx: &RunCtx, comp_name: &str, label: &str, inputs: &Values) -> String {
    let body = serde_json::json!({
        "component": ctx.raw["components"][comp_name],
        "executor": ctx.raw["deploymentSpec"]["executors"][label],
        "parameters": inputs.parameters,
        "artifacts": inputs.artifacts.iter().map(|(k, v)| (k.clone(), v.iter().map(|a| a.uri.clone()).collect::<Vec<_>>())).collect::<BTreeMap<_, _>>(),
    });
    hex::encode(Sha256::digest(body.to_string().as_bytes()))
}

/// A resource value from the IR, with `{{$.inputs.parameters['x']}}` resolved (the
/// compiler emits that when a request comes from a pipeline parameter).
fn resource_text(raw: Option<&Value>, inputs: &Values, what: &str) -> Result<Option<String>, String> {
    Ok(match raw {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.starts_with("{{$.inputs.parameters[") => {
            let key = s
                .trim_start_matches("{{$.inputs.parameters['")
                .trim_end_matches("']}}");
            match inputs.parameters.get(key) {
                Some(Value::String(s)) => Some(s.clone()),
                Some(Value::Null) | None => return Err(format!("{what} parameter {key} has no value")),
                Some(other) => Some(other.to_string()),
            }
        }
        Some(Value::String(s)) => Some(s.clone()),
        Some(other) => Some(other.to_string()),
    })
}

/// `cpuLimit`/`memoryLimit`/`accelerator` count (or their `resource*` string forms,
/// requests when no limit is given) as the scheduler counts them.
fn resource_request(resources: Option<&Value>, inputs: &Values) -> Result<ResourceRequest, String> {
    let Some(r) = resources else {
        return Ok(ResourceRequest::default());
    };
    let first = |keys: &[&'static str]| -> Option<(&'static str, &Value)> {
        keys.iter()
            .find_map(|k| r.get(*k).filter(|v| !v.is_null()).map(|v| (*k, v)))
    };
    let cpu_millis = match first(&["resourceCpuLimit", "cpuLimit", "resourceCpuRequest", "cpuRequest"]) {
        None => 0,
        Some((key, v)) => {
            let field = format!("resources.{key}");
            match resource_text(Some(v), inputs, &field)? {
                None => 0,
                Some(text) => {
                    crate::model::quantity::cpu_millis(text.trim(), &field).map_err(|e| e.to_string())?
                }
            }
        }
    };
    let memory_bytes = match first(&[
        "resourceMemoryLimit",
        "memoryLimit",
        "resourceMemoryRequest",
        "memoryRequest",
    ]) {
        None => 0,
        Some((key, v)) => {
            let field = format!("resources.{key}");
            match (key, v) {
                // The numeric fields are in GB (pipeline_spec.proto).
                ("memoryLimit" | "memoryRequest", Value::Number(n)) => {
                    (n.as_f64().unwrap_or(0.0) * 1e9).ceil().max(0.0) as u64
                }
                _ => match resource_text(Some(v), inputs, &field)? {
                    None => 0,
                    Some(text) => {
                        crate::model::quantity::bytes(text.trim(), &field).map_err(|e| e.to_string())?
                    }
                },
            }
        }
    };
    let gpus = match r.get("accelerator") {
        None => 0,
        Some(acc) => {
            let raw = acc.get("resourceCount").or_else(|| acc.get("count"));
            match resource_text(raw, inputs, "accelerator count")? {
                None => 0,
                Some(text) => match text.trim().parse::<f64>() {
                    // The SDK writes counts as text of a whole number ("1").
                    Ok(f) if f.fract() == 0.0 && (0.0..=f64::from(MAX_GPUS)).contains(&f) => f as u32,
                    _ => {
                        return Err(format!(
                            "accelerator count {text:?} must be a whole number from 0 to {MAX_GPUS}"
                        ))
                    }
                },
            }
        }
    };
    Ok(ResourceRequest {
        cpu_millis,
        memory_bytes,
        gpus,
    })
}

/// The most GPUs one step may ask for; the scheduler refuses what the node lacks.
const MAX_GPUS: u32 = 1024;

/// Why an attempt did not produce outputs.
enum AttemptError {
    /// The step ran and failed: its retry policy applies.
    Failed(String),
    /// The step can never run (a request the node cannot satisfy, an unusable
    /// command): retrying would fail the same way.
    Final(String),
}

#[allow(clippy::too_many_arguments)]
async fn run_container(
    ctx: Arc<RunCtx>,
    path: String,
    name: String,
    task: Task,
    parent: String,
    comp: ComponentSpec,
    label: String,
    container: ir::Container,
    inputs: Values,
) -> Outcome {
    let caching = task.caching_options.enable_cache && ctx.enable_caching != Some(false);
    let key = cache_key(&ctx, &task.component_ref.name, &label, &inputs);
    ctx.update(&path, |r| {
        describe(r, &name, &task, &parent, "container");
        r.inputs = inputs.clone();
    })
    .await;
    // A step a previous daemon already submitted is adopted, never answered from the
    // cache (which its own success may have filled).
    let submitted_before = ctx.known.contains(&ctx.workload_id(&path, 1));
    if caching && !submitted_before {
        if let Ok(Some(v)) = pstore::cache_get(&ctx.inner.store, &ctx.namespace, &key).await {
            let out = Outcome::Succeeded(v);
            ctx.update(&path, |r| r.cached = true).await;
            finish(&ctx, &path, &out).await;
            return out;
        }
    }
    let resources = match resource_request(container.resources.as_ref(), &inputs) {
        Ok(r) => r,
        Err(e) => return fail(&ctx, &path, &name, &task, &parent, e).await,
    };
    let retry = task.retry_policy.clone().unwrap_or_default();
    // Start at the latest attempt the scheduler knows of (the status may lag behind it).
    let mut attempt = ctx.existing(&path).map(|r| r.attempts).unwrap_or(0).max(1);
    while ctx.known.contains(&ctx.workload_id(&path, attempt + 1)) {
        attempt += 1;
    }
    loop {
        let result = attempt_container(
            &ctx, &path, &comp, &label, &container, &inputs, attempt, resources,
        )
        .await;
        match result {
            Ok(values) => {
                if caching {
                    if let Err(e) = pstore::cache_put(&ctx.inner.store, &ctx.namespace, &key, &values).await {
                        tracing::warn!(error = %e, "writing the cache entry");
                    }
                }
                let out = Outcome::Succeeded(values);
                finish(&ctx, &path, &out).await;
                return out;
            }
            Err(AttemptError::Final(e)) => return fail(&ctx, &path, &name, &task, &parent, e).await,
            Err(AttemptError::Failed(e)) if ctx.cancel.is_cancelled() => {
                return fail(&ctx, &path, &name, &task, &parent, e).await
            }
            Err(AttemptError::Failed(e)) if attempt <= retry.max_retry_count => {
                let wait = retry_wait(&retry, attempt);
                tracing::info!(task = %path, attempt, error = %e, "step failed; retrying");
                ctx.update(&path, |r| {
                    r.error = Some(format!("attempt {attempt}: {e}"));
                    r.state = "PENDING".into();
                })
                .await;
                // A next attempt a previous daemon already submitted waited out its
                // backoff then.
                if !ctx.known.contains(&ctx.workload_id(&path, attempt + 1)) {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = ctx.cancel.cancelled() => {}
                    }
                }
                attempt += 1;
            }
            Err(AttemptError::Failed(e)) => return fail(&ctx, &path, &name, &task, &parent, e).await,
        }
    }
}

/// How long a step waits before attempt `attempt + 1`: `backoffDuration` (default
/// 0s) times `backoffFactor` (default 2) to the power `attempt - 1`, at most
/// `backoffMaxDuration` (default 3600s), as KFP's SDK documents `set_retry`. Computed
/// without a panicking operation whatever the stored policy holds: validation bounds
/// new policies, but a run stored before it may carry any value.
fn retry_wait(retry: &ir::RetryPolicy, attempt: u32) -> Duration {
    let base = retry
        .backoff_duration
        .as_deref()
        .and_then(protojson::parse_duration)
        .unwrap_or_default();
    let cap = retry
        .backoff_max_duration
        .as_deref()
        .and_then(protojson::parse_duration)
        .unwrap_or(Duration::from_secs(3600));
    let factor = retry
        .backoff_factor
        .filter(|f| f.is_finite())
        .unwrap_or(2.0)
        .clamp(1.0, ir::MAX_BACKOFF_FACTOR);
    let exponent = i32::try_from(attempt.saturating_sub(1)).unwrap_or(i32::MAX);
    let secs = base.as_secs_f64() * factor.powi(exponent);
    Duration::try_from_secs_f64(secs).map_or(cap, |d| d.min(cap))
}

#[allow(clippy::too_many_arguments)]
async fn attempt_container(
    ctx: &Arc<RunCtx>,
    path: &str,
    comp: &ComponentSpec,
    label: &str,
    container: &ir::Container,
    inputs: &Values,
    attempt: u32,
    resources: ResourceRequest,
) -> Result<Values, AttemptError> {
    use AttemptError::{Failed, Final};
    let rel: PathBuf = path.split('/').map(executor::sanitize).collect();
    let attempt_dir = match ctx.generation {
        0 => format!("attempt-{attempt}"),
        g => format!("retry-{g}-attempt-{attempt}"),
    };
    let paths = StepPaths {
        dir: ctx.run_dir().join(&rel).join(attempt_dir),
        artifact_root: cleanup::artifact_dir(&ctx.inner.data_dir, &ctx.namespace, &ctx.run_id).join(&rel),
    };
    let planned = executor::output_artifacts(comp, &paths);
    let id = ctx.workload_id(path, attempt);
    let scheduler = &ctx.inner.scheduler;

    // Submitted by this driver or a previous daemon: wait for it, never start it again.
    let existing = scheduler.get(&id).await.map_err(|e| Failed(e.to_string()))?;
    if existing.is_none() {
        if ctx.cancel.is_cancelled() {
            return Err(Failed("the run was terminated".into()));
        }
        let workload = prepare_step(
            ctx, path, comp, container, inputs, &paths, &planned, &id, label, resources,
        )?;
        let dir = paths.dir.display().to_string();
        ctx.update(path, |r| {
            r.state = "PENDING".into();
            r.gpus = resources.gpus;
            r.attempts = attempt;
            r.workload = Some(id.clone());
            r.dir = Some(dir);
            r.pending_reason = None;
        })
        .await;
        match scheduler
            .submit(WorkloadRequest {
                workload,
                priority: PriorityClass::Batch,
            })
            .await
        {
            Ok(_) => {}
            Err(SchedulerError::Unsatisfiable(m)) => return Err(Final(m)),
            Err(SchedulerError::Invalid(m)) => return Err(Final(m)),
            Err(
                e @ (SchedulerError::NotFound(_) | SchedulerError::Store(_) | SchedulerError::Runtime(_)),
            ) => return Err(Failed(e.to_string())),
        }
    } else {
        let dir = paths.dir.display().to_string();
        ctx.update(path, |r| {
            r.gpus = resources.gpus;
            r.attempts = attempt;
            r.workload = Some(id.clone());
            r.dir = Some(dir);
        })
        .await;
    }
    let record = wait_workload(ctx, path, &id).await.map_err(Failed)?;
    match record.phase {
        WorkloadPhase::Succeeded => {
            // Read as the step's user: a file it wrote may be a symlink to one only root reads.
            let run_as = crate::runtime::identity::global()
                .for_workload(&ctx.namespace, None)
                .map_err(|e| Failed(e.to_string()))?;
            let (comp, planned) = (comp.clone(), planned.clone());
            let paths = StepPaths {
                dir: paths.dir.clone(),
                artifact_root: paths.artifact_root.clone(),
            };
            tokio::task::spawn_blocking(move || {
                crate::runtime::identity::as_user(&run_as, move || {
                    executor::collect_outputs(&comp, &planned, &paths)
                })
            })
            .await
            .map_err(|e| Failed(e.to_string()))?
            .map_err(|e| Failed(format!("reading the step's outputs: {e}")))?
            .map_err(Failed)
        }
        WorkloadPhase::Stopped if ctx.cancel.is_cancelled() => Err(Failed("the run was terminated".into())),
        WorkloadPhase::Queued
        | WorkloadPhase::Starting
        | WorkloadPhase::Running
        | WorkloadPhase::Failed
        | WorkloadPhase::Stopped => Err(Failed(describe_exit(&record, ctx, label))),
    }
}

fn describe_exit(record: &WorkloadRecord, ctx: &RunCtx, label: &str) -> String {
    let Some(exit) = &record.exit else {
        return format!("the step's workload ended {}", record.phase.as_str());
    };
    match (exit.reason.as_str(), exit.exit_code, exit.signal) {
        ("DeadlineExceeded", _, _) => format!(
            "the step ran past activeDeadlineSeconds ({}s)",
            ctx.platform
                .get(label)
                .and_then(|p| p.active_deadline_seconds)
                .unwrap_or_default()
        ),
        (_, Some(code), _) if code != 0 => format!("the step exited with code {code}"),
        (_, _, Some(signal)) => format!("the step was killed by signal {signal}"),
        (reason, _, _) if exit.message.is_empty() => format!("the step ended: {reason}"),
        (reason, _, _) => format!("the step ended ({reason}): {}", exit.message),
    }
}

/// The step's directory, the executor input and the workload that runs it.
#[allow(clippy::too_many_arguments)]
fn prepare_step(
    ctx: &RunCtx,
    path: &str,
    comp: &ComponentSpec,
    container: &ir::Container,
    inputs: &Values,
    paths: &StepPaths,
    planned: &BTreeMap<String, Vec<Artifact>>,
    id: &str,
    label: &str,
    resources: ResourceRequest,
) -> Result<Workload, AttemptError> {
    use AttemptError::{Failed, Final};
    let _ = std::fs::remove_dir_all(&paths.dir);
    std::fs::create_dir_all(paths.dir.join("outputs")).map_err(|e| Failed(format!("step dir: {e}")))?;
    // The step runs as its namespace's user: its directories are handed over to it.
    let identities = crate::runtime::identity::global();
    let run_as = identities
        .for_workload(&ctx.namespace, None)
        .map_err(|e| Failed(e.to_string()))?;
    let runs = ctx.inner.data_dir.join("pipelines").join("runs");
    identities
        .hand_over(&run_as, &runs, &paths.dir.join("outputs"))
        .map_err(|e| Failed(format!("step dir: {e}")))?;
    let artifacts = ctx.inner.data_dir.join("artifacts");
    for list in planned.values() {
        for a in list {
            if let Some(parent) = std::path::Path::new(&a.uri).parent() {
                std::fs::create_dir_all(parent).map_err(|e| Failed(format!("artifact dir: {e}")))?;
                identities
                    .hand_over(&run_as, &artifacts, parent)
                    .map_err(|e| Failed(format!("artifact dir: {e}")))?;
            }
        }
    }
    let ei = executor::executor_input(comp, inputs, planned, paths);
    let task_id = ctx.existing(path).map(|r| r.task_id).unwrap_or_default();
    let pctx = PlaceholderContext {
        executor_input: &ei,
        run_id: &ctx.run_id,
        run_name: &ctx.run_name,
        task_name: path.rsplit('/').next().unwrap_or(path),
        task_id: &task_id,
    };
    let mut argv = executor::resolve_args(&container.command, &pctx).map_err(Final)?;
    argv.extend(executor::resolve_args(&container.args, &pctx).map_err(Final)?);
    if argv.is_empty() {
        return Err(Final("the step has no command".into()));
    }

    let mut env = Vec::new();
    let entries = ctx.inner.cfg.step_path_entries();
    if !entries.is_empty() {
        // The workload's PATH replaces the runtime's, so it carries the runtime's
        // prefix and the daemon's PATH behind the step's own entries.
        let mut path_var = entries;
        if let Some(prefix) = &ctx.inner.path_prefix {
            path_var.extend(std::env::split_paths(prefix));
        }
        if let Some(p) = std::env::var_os("PATH") {
            path_var.extend(std::env::split_paths(&p));
        }
        if let Ok(joined) = std::env::join_paths(path_var) {
            env.push(("PATH".to_string(), joined.to_string_lossy().into_owned()));
        }
    }
    if let Some(venv) = &ctx.inner.cfg.step_venv {
        env.push(("VIRTUAL_ENV".to_string(), venv.display().to_string()));
    }
    env.extend([
        ("HEARTH_RUN_ID".to_string(), ctx.run_id.clone()),
        ("HEARTH_TASK".to_string(), path.to_string()),
        ("PIP_DISABLE_PIP_VERSION_CHECK".to_string(), "1".to_string()),
        ("PIP_NO_INPUT".to_string(), "1".to_string()),
    ]);
    for e in &container.env {
        env.retain(|(k, _)| k != &e.name);
        env.push((e.name.clone(), e.value.clone()));
    }
    let attempt = id
        .rsplit_once("-a")
        .map(|(_, a)| a.to_string())
        .unwrap_or_default();
    Ok(Workload {
        id: id.to_string(),
        owner: Owner {
            kind: OWNER_KIND.into(),
            namespace: ctx.namespace.clone(),
            name: ctx.run_id.clone(),
            uid: ctx.run_uid.clone(),
        },
        labels: [
            ("pipeline-run".to_string(), ctx.run_id.clone()),
            ("task".to_string(), path.to_string()),
            ("attempt".to_string(), attempt),
        ]
        .into(),
        image: Some(container.image.clone()).filter(|i| !i.is_empty()),
        command: argv,
        env,
        working_dir: Some(paths.dir.clone()),
        mounts: step_mounts(
            &ctx.inner.data_dir,
            &ctx.namespace,
            &ctx.run_id,
            &paths.dir,
            inputs,
        ),
        ports: Vec::new(),
        resources,
        gpu_uuids: Vec::new(),
        active_deadline_seconds: ctx.platform.get(label).and_then(|p| p.active_deadline_seconds),
        termination_grace_seconds: 5,
        security_context: None,
    })
}

/// What a step in a container must see, each at its host path (the executor input,
/// argv and artifact URIs name host paths: `artifact.path == artifact.uri`): its own
/// directory (executor output, parameter output files), its run's artifacts, and
/// read-only any input artifact from elsewhere (a cached or imported one). The process
/// runtime sees the host as it is and ignores them.
fn step_mounts(
    data_dir: &std::path::Path,
    namespace: &str,
    run_id: &str,
    step_dir: &std::path::Path,
    inputs: &Values,
) -> Vec<crate::runtime::Mount> {
    use crate::runtime::Mount;
    let run_artifacts = super::cleanup::artifact_dir(data_dir, namespace, run_id);
    let _ = std::fs::create_dir_all(&run_artifacts);
    let mut mounts = vec![
        Mount {
            source: step_dir.to_path_buf(),
            target: step_dir.to_path_buf(),
            read_only: false,
        },
        Mount {
            source: run_artifacts.clone(),
            target: run_artifacts.clone(),
            read_only: false,
        },
    ];
    for artifact in inputs.artifacts.values().flatten() {
        let path = std::path::Path::new(&artifact.uri);
        if path.is_absolute() && !path.starts_with(&run_artifacts) && path.exists() {
            mounts.push(Mount {
                source: path.to_path_buf(),
                target: path.to_path_buf(),
                read_only: true,
            });
        }
    }
    mounts
}

/// Removes a step's waiter when the wait ends, however it ends.
struct Waiter<'a> {
    inner: &'a Inner,
    id: String,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        {
            let mut waiters = self.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            waiters.remove(&self.id);
        }
    }
}

/// Waits until the step's workload ends, woken by the scheduler's events, and shows
/// its queue state on the task meanwhile: PENDING with the scheduler's reason while it
/// waits for CPU, memory or GPUs, RUNNING once admitted. A terminated run stops it.
async fn wait_workload(ctx: &RunCtx, path: &str, id: &str) -> Result<WorkloadRecord, String> {
    let notify = Arc::new(Notify::new());
    {
        let mut waiters = ctx.inner.waiters.lock().unwrap_or_else(PoisonError::into_inner);
        waiters.insert(id.to_string(), notify.clone());
    }
    let _waiter = Waiter {
        inner: &ctx.inner,
        id: id.to_string(),
    };
    let mut stopping = false;
    let mut shown: Option<(WorkloadPhase, Option<String>)> = None;
    loop {
        let record = ctx
            .inner
            .scheduler
            .get(id)
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| format!("the scheduler lost workload {id}"))?;
        if record.phase.is_final() {
            return Ok(record);
        }
        let seen = (record.phase, record.pending_reason.clone());
        if shown.as_ref() != Some(&seen) {
            let (phase, reason) = seen.clone();
            let gpu_uuids = record.gpu_uuids.clone();
            let started = record.started_at.clone();
            ctx.update(path, |r| match phase {
                WorkloadPhase::Queued => {
                    r.state = "PENDING".into();
                    r.pending_reason = reason;
                }
                WorkloadPhase::Starting
                | WorkloadPhase::Running
                | WorkloadPhase::Succeeded
                | WorkloadPhase::Failed
                | WorkloadPhase::Stopped => {
                    r.state = "RUNNING".into();
                    r.pending_reason = None;
                    r.gpu_uuids = gpu_uuids;
                    if r.start_time.is_none() {
                        r.start_time = Some(started.unwrap_or_else(now_rfc3339));
                    }
                }
            })
            .await;
            shown = Some(seen);
        }
        if ctx.cancel.is_cancelled() && !stopping {
            stopping = true;
            match ctx.inner.scheduler.stop(id).await {
                Ok(()) | Err(SchedulerError::NotFound(_)) => {}
                Err(e) => {
                    // Refused while the step was starting: ask again after a tick.
                    tracing::warn!(workload = %id, error = %e, "stopping a step");
                    stopping = false;
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
            }
            continue;
        }
        tokio::select! {
            _ = notify.notified() => {}
            _ = ctx.cancel.cancelled(), if !stopping => {}
            _ = tokio::time::sleep(WAIT_TICK) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_waits_grow_by_the_factor_up_to_the_cap_whatever_is_stored() {
        let policy = |d: &str, f: Option<f64>, m: Option<&str>| ir::RetryPolicy {
            max_retry_count: 3,
            backoff_duration: Some(d.to_string()),
            backoff_factor: f,
            backoff_max_duration: m.map(str::to_string),
        };
        let p = policy("2s", Some(3.0), Some("60s"));
        assert_eq!(retry_wait(&p, 1), Duration::from_secs(2));
        assert_eq!(retry_wait(&p, 2), Duration::from_secs(6));
        assert_eq!(retry_wait(&p, 3), Duration::from_secs(18));
        assert_eq!(retry_wait(&p, 5), Duration::from_secs(60));
        assert_eq!(retry_wait(&p, u32::MAX), Duration::from_secs(60));
        // Values only an older version could have stored: never a panic.
        for (d, f) in [
            ("1e300s", Some(2.0)),
            ("NaN s", Some(f64::NAN)),
            ("-1s", Some(f64::INFINITY)),
            ("5s", Some(1e300)),
        ] {
            let w = retry_wait(&policy(d, f, None), u32::MAX);
            assert!(w <= Duration::from_secs(3600), "{d}: {w:?}");
        }
    }
}
