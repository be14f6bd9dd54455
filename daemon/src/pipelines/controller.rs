//! The run controller. A level-triggered loop finds runs that are not finished and
//! drives each one: it walks the IR's DAG, runs every container task as a process with
//! the KFP executor contract, and writes every task's state and outputs to the store as
//! it goes. A restarted daemon drives the same runs again: a task recorded as finished
//! is never run again (its outputs are read back), and a step that was still running
//! when the daemon died is waited for (its wrapper writes the exit code to a file), so
//! nothing runs twice unless its retry policy says so.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
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
use super::executor::{self, Artifact, PlaceholderContext, StepPaths, Values};
use super::ir::{self, ComponentSpec, Dag, PipelineSpec, Task};
use super::store as pstore;
use crate::config::PipelinesConfig;
use crate::gpu::GpuProbe;
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
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dir: Option<String>,
    #[serde(default)]
    pub gpus: u32,
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

/// GPUs handed to steps. Stands in for the workload scheduler's GPU ledger: a step
/// that asks for more GPUs than are free waits (its task stays PENDING) until a step
/// gives them back.
struct GpuLedger {
    free: Mutex<Vec<String>>,
    total: usize,
    released: Notify,
}

impl GpuLedger {
    fn new(gpus: &GpuProbe) -> GpuLedger {
        let uuids: Vec<String> = gpus.snapshot().devices.iter().map(|d| d.uuid.clone()).collect();
        GpuLedger {
            total: uuids.len(),
            free: Mutex::new(uuids),
            released: Notify::new(),
        }
    }

    async fn acquire(&self, n: u32, cancel: &CancellationToken) -> Result<Vec<String>, String> {
        let n = n as usize;
        if n > self.total {
            return Err(format!(
                "the step asks for {n} GPU(s); this host has {}",
                self.total
            ));
        }
        loop {
            let notified = self.released.notified();
            {
                let mut free = self.free.lock().map_err(|_| "GPU ledger poisoned".to_string())?;
                if free.len() >= n {
                    return Ok(free.drain(..n).collect());
                }
            }
            tokio::select! {
                _ = notified => {}
                _ = cancel.cancelled() => return Err("canceled while waiting for GPUs".into()),
            }
        }
    }

    fn release(&self, uuids: Vec<String>) {
        if uuids.is_empty() {
            return;
        }
        if let Ok(mut free) = self.free.lock() {
            free.extend(uuids);
        }
        self.released.notify_waiters();
    }
}

pub struct Inner {
    pub store: Store,
    pub data_dir: PathBuf,
    pub cfg: PipelinesConfig,
    active: Mutex<HashMap<String, CancellationToken>>,
    wake: Notify,
    gpus: GpuLedger,
}

#[derive(Clone)]
pub struct Controller {
    pub inner: Arc<Inner>,
}

impl Controller {
    pub fn new(store: Store, data_dir: PathBuf, cfg: PipelinesConfig, gpus: &GpuProbe) -> Controller {
        Controller {
            inner: Arc::new(Inner {
                store,
                data_dir,
                cfg,
                active: Mutex::new(HashMap::new()),
                wake: Notify::new(),
                gpus: GpuLedger::new(gpus),
            }),
        }
    }

    pub fn wake(&self) {
        self.inner.wake.notify_one();
    }

    /// Stops a run's steps now; the run's driver records CANCELED.
    pub fn cancel(&self, run_id: &str) {
        if let Ok(active) = self.inner.active.lock() {
            if let Some(token) = active.get(run_id) {
                token.cancel();
            }
        }
        self.wake();
    }

    /// The reconcile loop: runs forever, woken by new runs or every second.
    pub async fn run(self) {
        loop {
            if let Err(e) = self.reconcile().await {
                tracing::warn!(error = %e, "pipeline controller");
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
            let token = {
                let Ok(mut active) = self.inner.active.lock() else {
                    continue;
                };
                if active.contains_key(&run.name) {
                    continue;
                }
                let token = CancellationToken::new();
                active.insert(run.name.clone(), token.clone());
                token
            };
            if run.spec["terminate_requested"].as_bool() == Some(true) {
                token.cancel();
            }
            let this = self.clone();
            tokio::spawn(async move {
                let id = run.name.clone();
                if let Err(e) = drive(this.inner.clone(), run, token).await {
                    tracing::warn!(run = %id, error = %e, "pipeline run driver");
                }
                if let Ok(mut active) = this.inner.active.lock() {
                    active.remove(&id);
                }
            });
        }
        Ok(())
    }
}

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
    status: Mutex<RunStatus>,
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
    fn record<F: FnOnce(&mut TaskRecord)>(&self, path: &str, f: F) -> Value {
        let mut status = match self.status.lock() {
            Ok(s) => s,
            Err(p) => p.into_inner(),
        };
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
        serde_json::to_value(&*status).unwrap_or(Value::Null)
    }

    fn existing(&self, path: &str) -> Option<TaskRecord> {
        self.status.lock().ok()?.tasks.get(path).cloned()
    }

    async fn persist(&self, status: Value) {
        let uid = self.run_uid.clone();
        let res = self
            .inner
            .store
            .call(move |conn| crate::store::resources::update_status(conn, &uid, &status, None))
            .await;
        if let Err(e) = res {
            tracing::warn!(run = %self.run_id, error = %e, "writing run status");
        }
    }

    async fn update<F: FnOnce(&mut TaskRecord)>(&self, path: &str, f: F) {
        let status = self.record(path, f);
        self.persist(status).await;
    }

    fn run_dir(&self) -> PathBuf {
        self.inner
            .data_dir
            .join("pipelines")
            .join("runs")
            .join(&self.run_id)
    }
}

async fn drive(
    inner: Arc<Inner>,
    run: crate::store::Resource,
    cancel: CancellationToken,
) -> Result<(), String> {
    let mut status: RunStatus = serde_json::from_value(run.status.clone()).unwrap_or_default();
    let pkg = ir::from_api(&run.spec["pipeline_spec"]).map_err(|e| e.to_string())?;
    let validated = ir::validate(&pkg).map_err(|e| e.to_string())?;
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
        status: Mutex::new(status.clone()),
        cancel: cancel.clone(),
    });
    ctx.persist(serde_json::to_value(&status).unwrap_or(Value::Null))
        .await;

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
    let mut status = match ctx.status.lock() {
        Ok(s) => s.clone(),
        Err(p) => p.into_inner().clone(),
    };
    let (state, error) = if cancel.is_cancelled() {
        ("CANCELED", Some("the run was terminated".to_string()))
    } else {
        match outcome {
            Outcome::Succeeded(_) | Outcome::Skipped => ("SUCCEEDED", None),
            Outcome::Failed(e) => ("FAILED", Some(e)),
            Outcome::NotRun => ("FAILED", Some("no task could run".to_string())),
        }
    };
    status.set_state(state);
    status.error = error;
    status.finished_at = Some(now_rfc3339());
    ctx.persist(serde_json::to_value(&status).unwrap_or(Value::Null))
        .await;
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

fn final_status(producer: &str, results: &BTreeMap<String, Outcome>, ctx: &RunCtx) -> Value {
    let (state, msg) = match results.get(producer) {
        Some(Outcome::Succeeded(_)) | Some(Outcome::Skipped) => ("SUCCEEDED", String::new()),
        Some(Outcome::Failed(e)) => ("FAILED", e.clone()),
        Some(Outcome::NotRun) | None => ("FAILED", "did not run".to_string()),
    };
    serde_json::json!({
        "state": state,
        "error": {"code": if state == "FAILED" { 2 } else { 0 }, "message": msg},
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
    if !std::path::Path::new(local).exists() {
        return Err(format!("importer: {local} does not exist on this host"));
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

fn gpu_request(resources: Option<&Value>, inputs: &Values) -> Result<u32, String> {
    let Some(acc) = resources.and_then(|r| r.get("accelerator")) else {
        return Ok(0);
    };
    let raw = acc
        .get("resourceCount")
        .or_else(|| acc.get("count"))
        .cloned()
        .unwrap_or(Value::Null);
    let text = match raw {
        Value::String(s) if s.starts_with("{{$.inputs.parameters[") => {
            let key = s
                .trim_start_matches("{{$.inputs.parameters['")
                .trim_end_matches("']}}");
            match inputs.parameters.get(key) {
                Some(Value::String(s)) => s.clone(),
                Some(other) => other.to_string(),
                None => return Err(format!("accelerator count parameter {key} has no value")),
            }
        }
        Value::String(s) => s,
        Value::Number(n) => n.to_string(),
        Value::Null => return Ok(0),
        other => other.to_string(),
    };
    text.trim()
        .parse::<f64>()
        .map(|f| f as u32)
        .map_err(|_| format!("accelerator count {text:?} is not a number"))
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
    if caching {
        if let Ok(Some(v)) = pstore::cache_get(&ctx.inner.store, &ctx.namespace, &key).await {
            let out = Outcome::Succeeded(v);
            ctx.update(&path, |r| r.cached = true).await;
            finish(&ctx, &path, &out).await;
            return out;
        }
    }
    let gpus = match gpu_request(container.resources.as_ref(), &inputs) {
        Ok(n) => n,
        Err(e) => return fail(&ctx, &path, &name, &task, &parent, e).await,
    };
    let retry = task.retry_policy.clone().unwrap_or_default();
    let mut attempt = ctx.existing(&path).map(|r| r.attempts).unwrap_or(0).max(1);
    loop {
        let result = attempt_container(&ctx, &path, &comp, &label, &container, &inputs, attempt, gpus).await;
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
            Err(e) if ctx.cancel.is_cancelled() => return fail(&ctx, &path, &name, &task, &parent, e).await,
            Err(e) if attempt <= retry.max_retry_count => {
                let base = retry
                    .backoff_duration
                    .as_deref()
                    .and_then(ir::parse_duration)
                    .unwrap_or_default();
                let factor = retry.backoff_factor.unwrap_or(2.0).max(1.0);
                let cap = retry
                    .backoff_max_duration
                    .as_deref()
                    .and_then(ir::parse_duration)
                    .unwrap_or(Duration::from_secs(3600));
                let wait = base.mul_f64(factor.powi(attempt as i32 - 1)).min(cap);
                tracing::info!(task = %path, attempt, error = %e, "step failed; retrying");
                ctx.update(&path, |r| {
                    r.error = Some(format!("attempt {attempt}: {e}"));
                    r.state = "PENDING".into();
                    r.pid = None;
                })
                .await;
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = ctx.cancel.cancelled() => {}
                }
                attempt += 1;
            }
            Err(e) => return fail(&ctx, &path, &name, &task, &parent, e).await,
        }
    }
}

fn pid_alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn read_exit(paths: &StepPaths) -> Option<i32> {
    std::fs::read_to_string(paths.exit_file())
        .ok()?
        .trim()
        .parse()
        .ok()
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
    gpus: u32,
) -> Result<Values, String> {
    let rel: PathBuf = path.split('/').map(executor::sanitize).collect();
    let paths = StepPaths {
        dir: ctx.run_dir().join(&rel).join(format!("attempt-{attempt}")),
        artifact_root: ctx
            .inner
            .data_dir
            .join("artifacts")
            .join(executor::sanitize(&ctx.namespace))
            .join(&ctx.run_id)
            .join(&rel),
    };
    let planned = executor::output_artifacts(comp, &paths);

    // A step that was running when the daemon died: wait for it instead of rerunning.
    if let Some(rec) = ctx.existing(path) {
        if rec.state == "RUNNING" && rec.attempts == attempt {
            if let Some(pid) = rec.pid {
                while read_exit(&paths).is_none() && pid_alive(pid) && !ctx.cancel.is_cancelled() {
                    tokio::time::sleep(Duration::from_millis(200)).await;
                }
                if ctx.cancel.is_cancelled() {
                    let _ = nix::sys::signal::killpg(
                        nix::unistd::Pid::from_raw(pid),
                        nix::sys::signal::Signal::SIGKILL,
                    );
                    return Err("the run was terminated".into());
                }
                if let Some(code) = read_exit(&paths) {
                    tracing::info!(task = %path, code, "adopted a step that finished while the daemon was down");
                    return if code == 0 {
                        executor::collect_outputs(comp, &planned, &paths)
                    } else {
                        Err(format!("the step exited with code {code}"))
                    };
                }
            }
        }
    }
    let _ = std::fs::remove_dir_all(&paths.dir);
    std::fs::create_dir_all(paths.dir.join("outputs")).map_err(|e| format!("step dir: {e}"))?;
    for list in planned.values() {
        for a in list {
            if let Some(parent) = std::path::Path::new(&a.uri).parent() {
                std::fs::create_dir_all(parent).map_err(|e| format!("artifact dir: {e}"))?;
            }
        }
    }
    let ei = executor::executor_input(comp, inputs, &planned, &paths);
    let task_id = ctx.existing(path).map(|r| r.task_id).unwrap_or_default();
    let pctx = PlaceholderContext {
        executor_input: &ei,
        run_id: &ctx.run_id,
        run_name: &ctx.run_name,
        task_name: path.rsplit('/').next().unwrap_or(path),
        task_id: &task_id,
    };
    let mut argv = executor::resolve_args(&container.command, &pctx)?;
    argv.extend(executor::resolve_args(&container.args, &pctx)?);
    if argv.is_empty() {
        return Err("the step has no command".into());
    }

    ctx.update(path, |r| {
        r.state = "PENDING".into();
        r.gpus = gpus;
        r.attempts = attempt;
    })
    .await;
    let uuids = ctx.inner.gpus.acquire(gpus, &ctx.cancel).await?;
    let result = spawn_and_wait(ctx, path, container, &argv, &paths, &uuids, attempt, label).await;
    ctx.inner.gpus.release(uuids);
    let code = result?;
    if code != 0 {
        return Err(format!("the step exited with code {code}"));
    }
    executor::collect_outputs(comp, &planned, &paths)
}

#[allow(clippy::too_many_arguments)]
async fn spawn_and_wait(
    ctx: &Arc<RunCtx>,
    path: &str,
    container: &ir::Container,
    argv: &[String],
    paths: &StepPaths,
    gpu_uuids: &[String],
    attempt: u32,
    label: &str,
) -> Result<i32, String> {
    let log = std::fs::File::create(paths.log()).map_err(|e| format!("log file: {e}"))?;
    let log2 = log.try_clone().map_err(|e| format!("log file: {e}"))?;
    // The wrapper records the exit code in a file so that a restarted daemon can adopt
    // a step that finished while it was down.
    let mut cmd = tokio::process::Command::new("/bin/sh");
    cmd.arg("-c")
        .arg("\"$@\"; rc=$?; echo $rc > \"$HEARTH_EXIT_FILE.tmp\" && mv \"$HEARTH_EXIT_FILE.tmp\" \"$HEARTH_EXIT_FILE\"; exit $rc")
        .arg("hearth-step")
        .args(argv)
        .current_dir(&paths.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(log2)
        .process_group(0)
        .kill_on_drop(false);
    let mut path_var = ctx.inner.cfg.step_path_entries();
    if let Some(p) = std::env::var_os("PATH") {
        path_var.extend(std::env::split_paths(&p));
    }
    if let Ok(joined) = std::env::join_paths(path_var) {
        cmd.env("PATH", joined);
    }
    if let Some(venv) = &ctx.inner.cfg.step_venv {
        cmd.env("VIRTUAL_ENV", venv);
    }
    cmd.env("HEARTH_EXIT_FILE", paths.exit_file())
        .env("HEARTH_RUN_ID", &ctx.run_id)
        .env("HEARTH_TASK", path)
        .env("PIP_DISABLE_PIP_VERSION_CHECK", "1")
        .env("PIP_NO_INPUT", "1")
        .env("CUDA_VISIBLE_DEVICES", gpu_uuids.join(","));
    for e in &container.env {
        cmd.env(&e.name, &e.value);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {:?}: {e}", argv[0]))?;
    let pid = child.id().map(|p| p as i32);
    let dir = paths.dir.display().to_string();
    ctx.update(path, |r| {
        r.state = "RUNNING".into();
        r.pid = pid;
        r.attempts = attempt;
        r.dir = Some(dir);
        r.start_time.get_or_insert_with(now_rfc3339);
    })
    .await;
    let deadline = ctx.platform.get(label).and_then(|p| p.active_deadline_seconds);
    let timeout = async {
        match deadline {
            Some(s) => tokio::time::sleep(Duration::from_secs(s)).await,
            None => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        status = child.wait() => {
            let status = status.map_err(|e| format!("waiting for the step: {e}"))?;
            Ok(status.code().unwrap_or(-1))
        }
        _ = ctx.cancel.cancelled() => {
            stop_group(pid, &mut child).await;
            Err("the run was terminated".into())
        }
        _ = timeout => {
            stop_group(pid, &mut child).await;
            Err(format!("the step ran past activeDeadlineSeconds ({}s)", deadline.unwrap_or_default()))
        }
    }
}

/// SIGTERM to the step's process group, SIGKILL after a grace period.
async fn stop_group(pid: Option<i32>, child: &mut tokio::process::Child) {
    use nix::sys::signal::{killpg, Signal};
    let Some(pid) = pid else { return };
    let pgid = nix::unistd::Pid::from_raw(pid);
    let _ = killpg(pgid, Signal::SIGTERM);
    if tokio::time::timeout(Duration::from_secs(5), child.wait())
        .await
        .is_err()
    {
        let _ = killpg(pgid, Signal::SIGKILL);
        let _ = child.wait().await;
    }
    // Children that ignored SIGTERM but outlived the leader.
    let _ = killpg(pgid, Signal::SIGKILL);
}
