//! Admission of workloads onto this node: CPU, memory and GPUs, by priority class and
//! then first come, first served. The queue is durable (the `workloads` table): a
//! restarted daemon re-adopts what runs, records what ended while it was away, and
//! goes on admitting. All other areas start work only through `Scheduler::submit`.

pub mod admission;

use std::collections::{BTreeMap, HashSet};
use std::panic::AssertUnwindSafe;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use futures_util::FutureExt;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;
use utoipa::ToSchema;

use crate::gpu::ledger::Ledger;
use crate::gpu::GpuProbe;
use crate::runtime::{ExitInfo, Owner, RunState, Runtime, RuntimeError, Workload};
use crate::store::{now_rfc3339, workloads, Store, StoreError};
use admission::{Capacity, Decision, Running, Waiting};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
pub enum PriorityClass {
    Batch,
    Notebook,
    Serving,
}

impl PriorityClass {
    pub fn rank(self) -> i64 {
        match self {
            PriorityClass::Batch => 1,
            PriorityClass::Notebook => 2,
            PriorityClass::Serving => 3,
        }
    }

    pub fn from_rank(rank: i64) -> PriorityClass {
        match rank {
            3 => PriorityClass::Serving,
            2 => PriorityClass::Notebook,
            _ => PriorityClass::Batch,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub enum WorkloadPhase {
    Queued,
    /// Admitted, GPUs claimed, the runtime is starting it.
    Starting,
    Running,
    Succeeded,
    Failed,
    Stopped,
}

impl WorkloadPhase {
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadPhase::Queued => "Queued",
            WorkloadPhase::Starting => "Starting",
            WorkloadPhase::Running => "Running",
            WorkloadPhase::Succeeded => "Succeeded",
            WorkloadPhase::Failed => "Failed",
            WorkloadPhase::Stopped => "Stopped",
        }
    }

    pub fn parse(s: &str) -> Option<WorkloadPhase> {
        Some(match s {
            "Queued" => WorkloadPhase::Queued,
            "Starting" => WorkloadPhase::Starting,
            "Running" => WorkloadPhase::Running,
            "Succeeded" => WorkloadPhase::Succeeded,
            "Failed" => WorkloadPhase::Failed,
            "Stopped" => WorkloadPhase::Stopped,
            _ => return None,
        })
    }

    pub fn is_final(self) -> bool {
        matches!(
            self,
            WorkloadPhase::Succeeded | WorkloadPhase::Failed | WorkloadPhase::Stopped
        )
    }

    /// Holding node resources (GPUs, CPU, memory).
    pub fn is_active(self) -> bool {
        matches!(self, WorkloadPhase::Starting | WorkloadPhase::Running)
    }
}

pub struct WorkloadRequest {
    pub workload: Workload,
    pub priority: PriorityClass,
}

/// A workload's log files, oldest first, and whether the workload has ended.
#[derive(Debug, Clone, Default)]
pub struct WorkloadLog {
    pub files: Vec<PathBuf>,
    pub finished: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadRecord {
    pub id: String,
    pub owner: Owner,
    pub priority: PriorityClass,
    /// Position in FIFO order (global, increasing).
    pub seq: i64,
    pub phase: WorkloadPhase,
    /// The workload as submitted, with `gpu_uuids` once admitted.
    pub workload: Workload,
    pub pending_reason: Option<String>,
    pub gpu_uuids: Vec<String>,
    pub exit: Option<ExitInfo>,
    pub created_at: String,
    pub started_at: Option<String>,
    pub finished_at: Option<String>,
}

#[derive(Debug, Clone)]
pub struct WorkloadEvent {
    pub id: String,
    pub owner_kind: String,
    pub owner_uid: String,
    pub phase: WorkloadPhase,
}

#[derive(Debug, thiserror::Error)]
pub enum SchedulerError {
    #[error("{0}")]
    Unsatisfiable(String),
    #[error("invalid workload: {0}")]
    Invalid(String),
    #[error("workload {0} not found")]
    NotFound(String),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
}

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SchedulerConfig {
    /// CPU kept back for the system, in thousandths of a core.
    pub reserved_cpu_millis: u64,
    /// Memory kept back for the system, in bytes.
    pub reserved_memory_bytes: u64,
    /// GPUs a namespace may hold at once; 0 means no quota.
    pub namespace_gpu_quota: u32,
    /// Per-namespace GPU quotas, overriding `namespace_gpu_quota`.
    pub gpu_quota: BTreeMap<String, u32>,
}

/// A summary of the queue, for `/hearth/v1/queue` and the systemd status.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueEntry {
    pub id: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub priority: PriorityClass,
    pub phase: WorkloadPhase,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub cpu_millis: u64,
    pub memory_bytes: u64,
    pub gpus: u32,
    pub gpu_uuids: Vec<String>,
    pub created_at: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub started_at: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct QueueSummary {
    pub cpu_millis_capacity: u64,
    pub memory_bytes_capacity: u64,
    pub gpus_total: u32,
    pub gpus_in_use: u32,
    pub gpus_simulated: bool,
    pub running: usize,
    pub queued: usize,
    /// Running first, then waiting in admission order.
    pub items: Vec<QueueEntry>,
}

#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    runtime: Arc<dyn Runtime>,
    gpus: GpuProbe,
    time_slicing: u32,
    config: SchedulerConfig,
    capacity: Capacity,
    /// Events behind an `Arc`: the channel allocates and writes all 4096 slots up
    /// front, and a slot holding the event inline (104 bytes) made the empty channel
    /// 416 KiB of an idle daemon's RSS; a pointer slot is a third of that.
    events: broadcast::Sender<Arc<WorkloadEvent>>,
    pass: tokio::sync::Mutex<()>,
    watching: Mutex<HashSet<String>>,
    tasks: tokio::runtime::Handle,
}

fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 200
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b == b'_')
        && !id.starts_with('.')
}

fn phase_for(exit: &ExitInfo) -> WorkloadPhase {
    if exit.succeeded() {
        WorkloadPhase::Succeeded
    } else if exit.reason == "Stopped" {
        WorkloadPhase::Stopped
    } else {
        WorkloadPhase::Failed
    }
}

impl Scheduler {
    pub fn new(
        store: Store,
        runtime: Arc<dyn Runtime>,
        gpus: GpuProbe,
        time_slicing: u32,
        config: SchedulerConfig,
        tasks: tokio::runtime::Handle,
    ) -> Scheduler {
        let (events, _) = broadcast::channel(4096);
        // The node's size, read once: admission passes run on the async threads.
        let (memory, _) = crate::node::memory();
        let capacity = Capacity {
            cpu_millis: (crate::node::cpu_count() as u64)
                .saturating_mul(1000)
                .saturating_sub(config.reserved_cpu_millis),
            memory_bytes: memory.saturating_sub(config.reserved_memory_bytes),
        };
        Scheduler {
            inner: Arc::new(Inner {
                capacity,
                store,
                runtime,
                gpus,
                time_slicing,
                config,
                events,
                pass: tokio::sync::Mutex::new(()),
                watching: Mutex::new(HashSet::new()),
                tasks,
            }),
        }
    }

    pub fn runtime(&self) -> &Arc<dyn Runtime> {
        &self.inner.runtime
    }

    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WorkloadEvent>> {
        self.inner.events.subscribe()
    }

    fn emit(&self, record_id: &str, owner: &Owner, phase: WorkloadPhase) {
        let _ = self.inner.events.send(Arc::new(WorkloadEvent {
            id: record_id.into(),
            owner_kind: owner.kind.clone(),
            owner_uid: owner.uid.clone(),
            phase,
        }));
    }

    fn capacity(&self) -> Capacity {
        self.inner.capacity.clone()
    }

    fn gpu_uuids(&self) -> Vec<String> {
        self.inner
            .gpus
            .snapshot()
            .devices
            .into_iter()
            .map(|d| d.uuid)
            .collect()
    }

    fn quota(&self, namespace: &str) -> Option<u32> {
        match self.inner.config.gpu_quota.get(namespace) {
            Some(q) => Some(*q),
            None => {
                (self.inner.config.namespace_gpu_quota > 0).then_some(self.inner.config.namespace_gpu_quota)
            }
        }
    }

    /// Refuses requests that could never start on this node, instead of queueing them
    /// forever.
    pub fn check_satisfiable(
        &self,
        want: &crate::runtime::ResourceRequest,
        namespace: &str,
    ) -> Result<(), SchedulerError> {
        let capacity = self.capacity();
        let devices = self.gpu_uuids();
        if want.gpus as usize > devices.len() {
            return Err(SchedulerError::Unsatisfiable(format!(
                "requests {} GPUs but this node has {}; it could never start",
                want.gpus,
                devices.len()
            )));
        }
        if want.cpu_millis > capacity.cpu_millis {
            return Err(SchedulerError::Unsatisfiable(format!(
                "requests {} millicores of CPU but this node offers {}; it could never start",
                want.cpu_millis, capacity.cpu_millis
            )));
        }
        if want.memory_bytes > capacity.memory_bytes {
            return Err(SchedulerError::Unsatisfiable(format!(
                "requests {} bytes of memory but this node offers {}; it could never start",
                want.memory_bytes, capacity.memory_bytes
            )));
        }
        if let Some(quota) = (want.gpus > 0).then(|| self.quota(namespace)).flatten() {
            if want.gpus > quota {
                return Err(SchedulerError::Unsatisfiable(format!(
                    "requests {} GPUs but namespace {namespace} has a GPU quota of {quota}",
                    want.gpus
                )));
            }
        }
        Ok(())
    }

    /// Queues a workload durably and admits what fits. Idempotent on the workload id.
    pub async fn submit(&self, request: WorkloadRequest) -> Result<WorkloadRecord, SchedulerError> {
        let workload = request.workload;
        if !valid_id(&workload.id) {
            return Err(SchedulerError::Invalid(format!(
                "workload id {:?} is not path-safe",
                workload.id
            )));
        }
        if workload.command.is_empty() && !self.inner.runtime.capabilities().runs_images {
            return Err(SchedulerError::Invalid("the workload has no command".into()));
        }
        self.check_satisfiable(&workload.resources, &workload.owner.namespace)?;
        let priority = request.priority;
        let (record, created) = self
            .inner
            .store
            .call(move |conn| workloads::insert(conn, &workload, priority))
            .await?;
        if created {
            self.emit(&record.id, &record.owner, WorkloadPhase::Queued);
            self.admit().await?;
        }
        let id = record.id.clone();
        Ok(self.get(&id).await?.unwrap_or(record))
    }

    pub async fn get(&self, id: &str) -> Result<Option<WorkloadRecord>, SchedulerError> {
        let id = id.to_string();
        Ok(self
            .inner
            .store
            .call(move |conn| workloads::get(conn, &id))
            .await?)
    }

    pub async fn list_by_owner(&self, owner_uid: &str) -> Result<Vec<WorkloadRecord>, SchedulerError> {
        let uid = owner_uid.to_string();
        let mut records = self
            .inner
            .store
            .call(move |conn| workloads::by_owner(conn, &uid))
            .await?;
        records.sort_by_key(|r| r.seq);
        Ok(records)
    }

    pub async fn log_files(&self, id: &str) -> Result<Vec<PathBuf>, SchedulerError> {
        Ok(self.inner.runtime.logs(id).await?.files)
    }

    /// Where a workload's output is (nothing yet while it is queued), and whether more
    /// may come.
    pub async fn log_of(&self, record: &WorkloadRecord) -> WorkloadLog {
        let files = match record.phase {
            WorkloadPhase::Queued => Vec::new(),
            _ => self.log_files(&record.id).await.unwrap_or_default(),
        };
        WorkloadLog {
            files,
            finished: record.phase.is_final(),
        }
    }

    /// Deletes an ended workload: its files (logs included), then its row. A crash in
    /// between leaves the row, and the next call finishes the job.
    pub async fn purge(&self, id: &str) -> Result<(), SchedulerError> {
        let Some(record) = self.get(id).await? else {
            return Ok(());
        };
        if !record.phase.is_final() {
            return Err(RuntimeError::StillRunning(id.to_string()).into());
        }
        self.inner.runtime.remove(id).await?;
        let owned = id.to_string();
        self.inner
            .store
            .call(move |conn| workloads::delete_ended(conn, &owned))
            .await?;
        Ok(())
    }

    /// Collects the workloads whose owner is gone (a deleted Job, pipeline run or
    /// InferenceService): running ones are stopped, ended ones purged (nothing can show
    /// their log any more). A row that fails is reported and left for the next pass;
    /// the pass goes on. Returns how many were purged.
    pub async fn collect_garbage(&self) -> Result<usize, SchedulerError> {
        let orphans = self.inner.store.call(|conn| workloads::orphans(conn)).await?;
        let (mut purged, mut stopped) = (0, 0);
        for (id, phase) in &orphans {
            let outcome = match phase {
                Some(phase) if phase.is_final() => self.purge(id).await.map(|()| purged += 1),
                Some(_) => self.stop(id).await.map(|()| stopped += 1),
                None => {
                    tracing::warn!(workload = %id, "a workload of a deleted owner has an unknown phase; leaving it");
                    Ok(())
                }
            };
            if let Err(e) = outcome {
                tracing::warn!(workload = %id, error = %e, "collecting a workload of a deleted owner");
            }
        }
        if stopped > 0 {
            tracing::info!(count = stopped, "stopping workloads of deleted owners");
        }
        if purged > 0 {
            tracing::info!(count = purged, "removed ended workloads of deleted owners");
        }
        Ok(purged)
    }

    /// Removes a queued workload, or asks the runtime to stop a starting or running one.
    /// The runtime records the request, so a workload still starting never runs (or is
    /// stopped as soon as it does); its watcher records the end, and only then are its
    /// GPUs, CPU and memory free again.
    pub async fn stop(&self, id: &str) -> Result<(), SchedulerError> {
        let Some(record) = self.get(id).await? else {
            return Err(SchedulerError::NotFound(id.to_string()));
        };
        if record.phase == WorkloadPhase::Queued {
            let exit = ExitInfo {
                exit_code: None,
                signal: None,
                reason: "Stopped".into(),
                message: "stopped before it started".into(),
                started_at: None,
                finished_at: now_rfc3339(),
            };
            let owned = record.id.clone();
            let ended = self
                .inner
                .store
                .call(move |conn| workloads::stop_queued(conn, &owned, &exit))
                .await?;
            if ended {
                self.emit(&record.id, &record.owner, WorkloadPhase::Stopped);
                // Its place in the queue may have held others back.
                return self.admit().await;
            }
            // Admitted in the meantime: the runtime stops it below.
        }
        match self.get(id).await?.map(|r| r.phase) {
            Some(WorkloadPhase::Starting | WorkloadPhase::Running) => {
                self.inner.runtime.stop(id).await?;
            }
            Some(
                WorkloadPhase::Queued
                | WorkloadPhase::Succeeded
                | WorkloadPhase::Failed
                | WorkloadPhase::Stopped,
            )
            | None => {}
        }
        Ok(())
    }

    /// Start-up: reconcile every unfinished workload with the runtime, then admit.
    pub async fn recover(&self) -> Result<(), SchedulerError> {
        let unfinished = self.inner.store.call(|conn| workloads::unfinished(conn)).await?;
        for record in unfinished {
            self.resume(record).await?;
        }
        // Workloads the runtime holds that the queue does not know (a data dir restored
        // from elsewhere): report them rather than guess at their owners.
        let known: HashSet<String> = self.inner.store.call(|conn| workloads::all_ids(conn)).await?;
        let held = match self.inner.runtime.list(None).await {
            Ok(ids) => ids,
            // Not reachable now: nothing to compare; the watchers wait for it.
            Err(RuntimeError::Unavailable { .. }) => Vec::new(),
            Err(e) => return Err(e.into()),
        };
        for id in held {
            if !known.contains(&id) {
                tracing::warn!(workload = %id, "the runtime holds a workload the queue does not know; leaving it alone");
            }
        }
        self.admit().await
    }

    /// One admission pass over the whole queue. Serialized, so two passes never hand
    /// out the same GPU.
    pub async fn admit(&self) -> Result<(), SchedulerError> {
        let guard = self.inner.pass.lock().await;
        let unfinished = self.inner.store.call(|conn| workloads::unfinished(conn)).await?;
        let mut running = Vec::new();
        let mut allocations = Vec::new();
        let mut waiting = Vec::new();
        let mut queued = BTreeMap::new();
        for record in unfinished {
            if record.phase.is_active() {
                allocations.extend(record.gpu_uuids.iter().cloned());
                running.push(Running {
                    namespace: record.owner.namespace.clone(),
                    request: record.workload.resources,
                });
            } else {
                waiting.push(Waiting {
                    id: record.id.clone(),
                    namespace: record.owner.namespace.clone(),
                    request: record.workload.resources,
                });
                queued.insert(record.id.clone(), record);
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        // A backend that cannot be reached takes nothing: every waiting workload says
        // why, and the runtime watch admits again once it answers.
        if let Err(why) = self.inner.runtime.availability() {
            let reason = format!("RuntimeUnavailable: {why}");
            let changed: Vec<String> = queued
                .values()
                .filter(|r| r.pending_reason.as_deref() != Some(reason.as_str()))
                .map(|r| r.id.clone())
                .collect();
            if !changed.is_empty() {
                self.inner
                    .store
                    .call(move |conn| {
                        let tx = conn.transaction()?;
                        for id in &changed {
                            workloads::set_pending_reason(&tx, id, Some(&reason))?;
                        }
                        tx.commit()?;
                        Ok(())
                    })
                    .await?;
            }
            drop(guard);
            return Ok(());
        }
        let devices = self.gpu_uuids();
        let ledger = Ledger::new(
            devices.iter().map(String::as_str),
            self.inner.time_slicing,
            allocations.iter().map(String::as_str),
        );
        let decisions = admission::plan(&self.capacity(), ledger, &running, &waiting, &|ns| self.quota(ns));

        let mut admitted = Vec::new();
        let mut reasons = Vec::new();
        for decision in decisions {
            match decision {
                Decision::Admit { id, gpu_uuids } => {
                    if let Some(mut record) = queued.remove(&id) {
                        record.workload.gpu_uuids = gpu_uuids.clone();
                        record.gpu_uuids = gpu_uuids;
                        admitted.push(record);
                    }
                }
                Decision::Wait { id, reason } => {
                    if queued
                        .get(&id)
                        .is_some_and(|r| r.pending_reason.as_deref() != Some(reason.as_str()))
                    {
                        reasons.push((id, reason));
                    }
                }
            }
        }
        let claims: Vec<(String, Vec<String>, Workload)> = admitted
            .iter()
            .map(|r| (r.id.clone(), r.gpu_uuids.clone(), r.workload.clone()))
            .collect();
        let claimed = self
            .inner
            .store
            .call(move |conn| {
                let tx = conn.transaction()?;
                let mut claimed = HashSet::new();
                for (id, gpus, workload) in &claims {
                    if workloads::mark_starting(&tx, id, gpus, workload)? {
                        claimed.insert(id.clone());
                    }
                }
                for (id, reason) in &reasons {
                    workloads::set_pending_reason(&tx, id, Some(reason))?;
                }
                tx.commit()?;
                Ok(claimed)
            })
            .await?;
        drop(guard);
        for mut record in admitted {
            if claimed.contains(&record.id) {
                record.phase = WorkloadPhase::Starting;
                self.launch(record);
            }
        }
        Ok(())
    }

    /// Takes an unfinished workload up from its stored phase, as at start-up: one still
    /// starting is launched (the runtime's claim makes that safe to repeat), a running
    /// one is watched, or its end recorded if it ended unseen.
    async fn resume(&self, record: WorkloadRecord) -> Result<(), SchedulerError> {
        match record.phase {
            WorkloadPhase::Starting => self.launch(record),
            WorkloadPhase::Running => match self.inner.runtime.status(&record.id).await {
                Ok(RunState::Running { .. }) => self.watch(&record.id, &record.owner),
                // It may still run: its watcher retries until the backend answers.
                Err(RuntimeError::Unavailable { .. }) => self.watch(&record.id, &record.owner),
                Ok(RunState::Exited(exit)) => self.finish(&record.id, &record.owner, exit).await?,
                Err(RuntimeError::NotFound(_)) => {
                    let exit = ExitInfo {
                        exit_code: None,
                        signal: None,
                        reason: "Lost".into(),
                        message: "the runtime has no record of this workload".into(),
                        started_at: record.started_at.clone(),
                        finished_at: now_rfc3339(),
                    };
                    self.finish(&record.id, &record.owner, exit).await?;
                }
                Err(e) => return Err(e.into()),
            },
            WorkloadPhase::Queued
            | WorkloadPhase::Succeeded
            | WorkloadPhase::Failed
            | WorkloadPhase::Stopped => {}
        }
        Ok(())
    }

    /// Runs a task that owns a workload's progress (its launch, or the wait for its end).
    /// Should it panic, the workload is taken up again from its stored phase (`resume`)
    /// after a backoff, so that its end is still recorded and its resources released,
    /// never held by a task that is gone.
    fn spawn_supervised<F>(&self, id: &str, what: &'static str, task: F)
    where
        F: std::future::Future<Output = ()> + Send + 'static,
    {
        let this = self.clone();
        let id = id.to_string();
        self.inner.tasks.spawn(async move {
            let Err(payload) = AssertUnwindSafe(task).catch_unwind().await else {
                return;
            };
            let message = crate::controller::panic_message(&*payload);
            tracing::error!(workload = %id, panic = %message, "the {what} of a workload panicked; taking it up again");
            // The panicked watcher no longer watches.
            this.inner.watching.lock().unwrap_or_else(PoisonError::into_inner).remove(&id);
            let mut attempts = 0u32;
            loop {
                attempts = attempts.saturating_add(1);
                tokio::time::sleep(crate::controller::retry_backoff(attempts)).await;
                let resumed = match this.get(&id).await {
                    Ok(Some(record)) if !record.phase.is_final() => this.resume(record).await,
                    Ok(_) => Ok(()),
                    Err(e) => Err(e),
                };
                match resumed {
                    Ok(()) => return,
                    Err(e) => tracing::warn!(workload = %id, error = %e, "taking up a workload again; retrying"),
                }
            }
        });
    }

    fn launch(&self, record: WorkloadRecord) {
        let this = self.clone();
        let id = record.id.clone();
        self.spawn_supervised(&id, "launch", async move {
            let owner = record.owner.clone();
            let mut attempts = 0u32;
            let outcome = loop {
                match this.inner.runtime.start(&record.workload).await {
                    // Nothing was made: try again once the backend answers (its
                    // resources stay held meanwhile, as for any starting workload).
                    Err(e @ RuntimeError::Unavailable { .. }) => {
                        attempts = attempts.saturating_add(1);
                        tracing::warn!(workload = %record.id, error = %e, "starting a workload; retrying");
                        tokio::time::sleep(crate::controller::retry_backoff(attempts)).await;
                    }
                    other => break other,
                }
            };
            let result = match outcome {
                Ok(RunState::Running { started_at, .. }) => {
                    let id = record.id.clone();
                    let marked = this
                        .inner
                        .store
                        .call(move |conn| workloads::mark_running(conn, &id, &started_at))
                        .await;
                    this.emit(&record.id, &owner, WorkloadPhase::Running);
                    this.watch(&record.id, &owner);
                    marked.map_err(SchedulerError::from)
                }
                Ok(RunState::Exited(exit)) => this.finish(&record.id, &owner, exit).await,
                Err(e) => {
                    let exit = ExitInfo {
                        exit_code: None,
                        signal: None,
                        reason: "StartError".into(),
                        message: e.to_string(),
                        started_at: None,
                        finished_at: now_rfc3339(),
                    };
                    this.finish(&record.id, &owner, exit).await
                }
            };
            if let Err(e) = result {
                tracing::error!(workload = %record.id, error = %e, "recording the start of a workload");
            }
        });
    }

    fn watch(&self, id: &str, owner: &Owner) {
        let fresh = self
            .inner
            .watching
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id.to_string());
        if !fresh {
            return;
        }
        let this = self.clone();
        let (id, owner) = (id.to_string(), owner.clone());
        self.spawn_supervised(&id.clone(), "watcher", async move {
            let exit = loop {
                match this.inner.runtime.wait(&id).await {
                    Ok(exit) => break exit,
                    // No shim ever claimed it: nothing of it can be running.
                    Err(e @ RuntimeError::NotFound(_)) => {
                        break ExitInfo {
                            exit_code: None,
                            signal: None,
                            reason: "Lost".into(),
                            message: e.to_string(),
                            started_at: None,
                            finished_at: now_rfc3339(),
                        }
                    }
                    // It may still run: its resources stay held until the runtime knows.
                    Err(e) => {
                        tracing::warn!(workload = %id, error = %e, "watching a workload; trying again");
                        tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                    }
                }
            };
            if crate::controller::fault_once("panic-watcher", "once") {
                panic!("injected fault (HEARTH_FAULT_INJECT=panic-watcher:once)");
            }
            this.inner
                .watching
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(&id);
            if let Err(e) = this.finish(&id, &owner, exit).await {
                tracing::error!(workload = %id, error = %e, "recording the end of a workload");
            }
        });
    }

    async fn finish(&self, id: &str, owner: &Owner, exit: ExitInfo) -> Result<(), SchedulerError> {
        let phase = phase_for(&exit);
        let owned = id.to_string();
        let changed = self
            .inner
            .store
            .call(move |conn| workloads::mark_finished(conn, &owned, phase, &exit))
            .await?;
        if changed {
            if let Err(e) = self.inner.runtime.forget(id).await {
                tracing::warn!(workload = %id, error = %e, "runtime cleanup");
            }
            self.emit(id, owner, phase);
            // Resources came free.
            Box::pin(self.admit()).await?;
        }
        Ok(())
    }

    pub async fn summary(&self) -> Result<QueueSummary, SchedulerError> {
        let unfinished = self.inner.store.call(|conn| workloads::unfinished(conn)).await?;
        let inventory = self.inner.gpus.snapshot();
        let capacity = self.capacity();
        let mut items: Vec<QueueEntry> = unfinished
            .into_iter()
            .map(|r| QueueEntry {
                id: r.id,
                kind: r.owner.kind,
                namespace: r.owner.namespace,
                name: r.owner.name,
                priority: r.priority,
                phase: r.phase,
                reason: r.pending_reason,
                cpu_millis: r.workload.resources.cpu_millis,
                memory_bytes: r.workload.resources.memory_bytes,
                gpus: r.workload.resources.gpus,
                gpu_uuids: r.gpu_uuids,
                created_at: r.created_at,
                started_at: r.started_at,
            })
            .collect();
        items.sort_by_key(|e| !e.phase.is_active());
        let ledger = Ledger::new(
            inventory.devices.iter().map(|d| d.uuid.as_str()),
            self.inner.time_slicing,
            items
                .iter()
                .filter(|e| e.phase.is_active())
                .flat_map(|e| e.gpu_uuids.iter().map(String::as_str)),
        );
        Ok(QueueSummary {
            cpu_millis_capacity: capacity.cpu_millis,
            memory_bytes_capacity: capacity.memory_bytes,
            gpus_total: inventory.count() as u32,
            gpus_in_use: ledger.busy_gpus() as u32,
            gpus_simulated: inventory.simulated,
            running: items.iter().filter(|e| e.phase.is_active()).count(),
            queued: items.iter().filter(|e| e.phase == WorkloadPhase::Queued).count(),
            items,
        })
    }
}
